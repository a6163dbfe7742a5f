"""The Gaussian warm start on a shipped model: statistics of the training images, t_skip chosen on a probe, then
accuracy on held-out draws beside the same sampler from T (issue 21).

    python benchmarks/warmstart_fmnist.py --model fmnist-vp --data-dir .data/fmnist            # a GPU: full size
    python benchmarks/warmstart_fmnist.py --model fmnist-vp --probe 16 --n 32 --ref gddim-3m-c@100 --nfe 5  # CPU
    ... --grid uniform --option lower_order_final=true --fd 10000   # a grid kind, sampler options; FD from T and warm
    ... --grid auto   # times tuned (cosi.tune_grid) from T, and from t_skip after the warm start (t_skip chosen on
                      # the sampler's own grid kind); the probe of --probe draws for both searches

``--fd N``: the FD (shipped classifier, N samples against the test split, seed 0) of the sampler from T and from the
chosen t_skip, beside the accuracy.

The statistics (mean and full covariance of the 60k training images, float64) take one pass over the data; their
cost is printed. Held-out draws: prior_draws of --seed (0, the accuracy stage's, by default), against --ref from the
same draws.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import cosi
import cosi.evaluation.autogrid as ag
import cosi.evaluation.warmstart as ws
from cosi.data import load_fashion_mnist
from cosi.evaluation.accuracy import Reference, errors, prior_draws, reference_solution
from cosi.evaluation.rows import read_rows


REFS = Path(__file__).parent / "results" / "study" / "accuracy_refs"  # references kept between runs (not committed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fmnist-vp")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sampler", action="append")
    ap.add_argument("--nfe", type=int, action="append")
    ap.add_argument("--probe", type=int, default=ws.PROBE)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0, help="the held-out draws: prior_draws of this seed (the frontier's "
                                                          "seeds 0 and 1)")
    ap.add_argument("--ref", default="gddim-2m@2000")
    ap.add_argument("--stats", default="data", choices=["data", "shipped"],
                    help="the Gaussian statistics: of the training images in --data-dir, or the shipped ones")
    ap.add_argument("--grid", default=None, help="a grid kind (default: the sampler's own)")
    ap.add_argument("--option", action="append", default=[], help="sampler option key=value (JSON value)")
    ap.add_argument("--fd", type=int, default=0, metavar="N", help="also the FD from T and warm, N samples (10000)")
    ap.add_argument("--out", default=None, help="append JSON rows here; a cell already there is skipped")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as the accuracy stage
    m = cosi.load_model(args.model, device=dev)
    t0 = time.perf_counter()
    if args.stats == "shipped":
        stats = ws.GaussianStats.shipped("fashion-mnist-train")
    else:
        x = load_fashion_mnist(args.data_dir, "train").images
        x = (x.float() / 127.5 - 1) if x.dtype == torch.uint8 else x.float()
        stats = ws.GaussianStats.from_data(x)
    stats_s = time.perf_counter() - t0
    print(f"statistics ({args.stats}): {stats_s:.1f} s", flush=True)
    ws.PROBE = ag.PROBE = args.probe
    ref = Reference.parse(args.ref)
    if args.probe != 64:  # a small probe judges against the same reference as the held-out draws
        ws.reference = ag.reference = lambda process, nfe: (ref.sampler, ref.nfe)
    z = prior_draws(m.process, m.data_shape, args.n, args.seed, m.device)
    x_ref = reference_solution(m.eps_model, m.process, m.data_shape, args.n, args.seed, ref, device=m.device,
                               self_check=False, batch_size=256, cache_dir=REFS, name=args.model)["x"]
    opts = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    if args.grid:
        opts["grid"] = args.grid
    fd = fd_of(m, args.data_dir, args.fd) if args.fd else None
    done = {_cell(r) for r in (read_rows(args.out) if args.out and Path(args.out).exists() else [])}
    for s in args.sampler or ["gddim-2m"]:
        for nfe in args.nfe or [5, 10]:
            if _cell({"model": args.model, "sampler": s, "nfe": nfe, "options": opts, "n": args.n,
                      "seed": args.seed, "fd_n": args.fd}) in done:  # resumable: a row already in --out is kept
                continue
            auto = opts.get("grid") == "auto"  # tuned times: from T (autogrid), and from t_skip after the warm start
            rest = {k: v for k, v in opts.items() if k != "grid"}
            if auto:
                from_T = ag.choose_grid(m.eps_model, m.process, s, nfe, m.data_shape, device=m.device, **rest)
                times_T = from_T["grid"]
            else:
                times_T = opts.get("grid")
            base = errors(torch.cat([cosi.sample(m.eps_model, m.process, s, nfe, z_T=b, grid=times_T, **rest).x
                                     for b in z.split(256)]), x_ref)
            rec = ws.choose_skip(m.eps_model, m.process, s, nfe, stats, device=m.device, grid=None if auto
                                 else opts.get("grid"), **rest)  # with auto: t_skip on the sampler's own grid kind
            if auto:
                tuned = ws.tune_grid_from_skip(m.eps_model, m.process, s, nfe, stats, rec["v"], device=m.device, **rest)
                times = tuned["grid"]
            else:  # the grid kind laid on [t_min, t_skip]; v = 0: the run from T (times None)
                times = ws.skip_grid(m.process, s, nfe, rec["v"], opts.get("grid")) if rec["v"] > 0 else None
            warm = base if times is None else errors(torch.cat([
                ws.sample_on_times(m.eps_model, m.process, s, nfe, b, stats, times, **rest).x for b in z.split(256)]),
                x_ref)
            row = {"model": args.model, "sampler": s, "nfe": nfe, "options": opts, "n": args.n, "seed": args.seed,
                   "reference": str(ref),
                   "probe": args.probe, "v": rec["v"], "t_skip": rec["t_skip"], "proxy": rec["proxy"],
                   "from_T": base, "warm": warm, "choose_calls": rec["calls"], "choose_seconds": rec["seconds"],
                   "stats_seconds": round(stats_s, 1), "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}
            if auto:
                row.update(grid_from_T=times_T.tolist(), grid_warm=times.tolist(),
                           tuning_calls=from_T["calls"] + tuned["calls"],
                           tuning_seconds=round(from_T["seconds"] + tuned["seconds"], 1))
            if fd is not None:
                row["fd_n"] = args.fd
                row["fd_from_T"] = fd(s, nfe, {**rest, "grid": times_T})
                row["fd_warm"] = row["fd_from_T"] if times is None else fd(
                    s, nfe, {**rest, "grid": times}, lambda z_T: ws.gaussian_flow(stats, m.process, z_T, float(times[0])))
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


def _cell(r: dict) -> str:
    """What identifies a row: model, sampler, NFE, options, draws, seed and whether (and with how many samples) it
    has the FD (rows before ``fd_n`` have 10k where they have one)."""
    fd = r.get("fd_n", 10_000 if "fd_warm" in r else 0)
    return json.dumps([r["model"], r["sampler"], r["nfe"], r.get("options", {}), r["n"], r.get("seed", 0), fd],
                      sort_keys=True)


def fd_of(m, data_dir, n):
    """fd(sampler, nfe, options, first_state=None): the FD of n samples (seed 0) against the test split, in the
    shipped classifier's features (as the study's FD stages)."""
    from cosi.evaluation.evaluate import feature_space, model_fd, reference_stats

    features, kind, ref_name = feature_space("classifier", m.data_shape, m.device)
    ref = reference_stats(features, kind, ref_name, ref_dir=data_dir)
    return lambda s, nfe, opts, first=None: round(model_fd(m, features, ref, s, nfe, n, 1000, first_state=first,
                                                           **opts)["fd"], 4)


if __name__ == "__main__":
    main()

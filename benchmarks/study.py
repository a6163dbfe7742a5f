"""The GPU study of issues 4 and 8, in priority order, resumable across device sessions.

    python benchmarks/study.py --out benchmarks/results/study --minutes 20 [--n 10000] [--stage NAME ...]

Stages (each appends JSON lines to OUT/<stage>.jsonl and skips what is already there, so the
same command continues in the next session where this one stopped):

  speed      `cosi bench speed` for every sampler: NFE 20 and 50, batch 64 and 256, whole-sampler CUDA
             graphs first, then the other modes (eager; graph with a compiled network; compiled network)
  psld       FD vs NFE {10, 20, 50, 100, 200} for every PSLD sampler (the paper's Table 2 and more)
  vp         the same for every VP sampler, DPM-Solver++ and UniPC included
  lam        FD vs λ (−6 … 4) for lambda-ddim-2 / csps-d (PSLD) and lambda-ddim-1 (VP), plus lam=auto
  seeds      a second seed for the rows of psld and vp at NFE 20 and 50 (the FD's sampling noise)

FD and KID: the shipped classifier's features, --n samples against the 10k Fashion-MNIST test images;
network in bf16 with torch.compile (CUDA graphs), state in float32. The 1000-step references the
study is judged against come from benchmarks/fmnist_fd.py (benchmarks/results/fmnist_fd.jsonl).
`benchmarks/render.py` turns the results into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cosi.evaluate import feature_space, reference_images, reference_stats
from cosi.integrators import SAMPLERS
from cosi.models.checkpoint import load
from cosi.sweep import make_cells, run_sweep

NFES = [10, 20, 50, 100, 200]
STAGES = ["speed", "psld", "vp", "lam", "seeds"]


def samplers_of(process: str) -> list[str]:
    return [n for n, s in SAMPLERS.items() if process in s.processes and n != "conjugate"]


def sweeps(stage: str) -> list[tuple[str, list[dict]]]:
    """(model, cells) pairs of a stage."""
    if stage == "psld":
        return [("fmnist-psld", make_cells(samplers_of("psld"), NFES))]
    if stage == "vp":
        return [("fmnist-vp", make_cells(samplers_of("vp"), NFES))]
    if stage == "lam":
        lams = [-6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, "auto"]
        return [("fmnist-psld", make_cells(["lambda-ddim-2", "csps-d"], [10, 20, 50, 100], lams=lams)),
                ("fmnist-vp", make_cells(["lambda-ddim-1"], [10, 20, 50, 100], lams=lams))]
    if stage == "seeds":
        return [("fmnist-psld", make_cells(samplers_of("psld"), [20, 50], seeds=[1])),
                ("fmnist-vp", make_cells(samplers_of("vp"), [20, 50], seeds=[1]))]
    raise ValueError(stage)


TARGETS = ["csps-d", "csps-s", "lambda-ddim-2", "em"]  # issue 8's overhead target: <= 1.02 at batch 256, NFE 50


def speed_plan() -> list[tuple]:
    """(mode, compile mode, graph, samplers or None for all, batch sizes, NFEs) in priority order."""
    return [("graph", None, True, None, (256, 64), (50, 20)),
            ("eager", None, False, TARGETS, (256,), (50,)),
            ("graph+compile", "default", True, TARGETS, (256,), (50,)),
            ("compiled", "reduce-overhead", False, TARGETS, (256,), (50,)),
            ("eager", None, False, None, (256, 64), (50, 20))]


def speed(out: Path, minutes_left: float, device: str, dtype) -> None:
    """`cosi bench speed` in process, mode by mode; one JSON line per (model, mode, sampler, NFE, batch)."""
    from cosi.benchmark import speed as time_sampler
    from cosi.integrators.plan import release_graphs

    key = lambda r: (r["model"], r["mode"], r["sampler"], r["nfe"], r["batch_size"])  # noqa: E731
    done = {key(r) for r in map(json.loads, out.read_text().splitlines())} if out.is_file() else set()
    t0 = time.monotonic()
    for mode, compile_mode, graph, names, batch_sizes, nfes in speed_plan():
        if device == "cpu" and (graph or compile_mode):
            continue  # CUDA graphs and compiled networks are timed on a GPU
        for model_name in ("fmnist-psld", "fmnist-vp"):
            model = None
            for b in batch_sizes:
                for nfe in nfes:
                    for s in names or samplers_of(model_name.split("-")[1]):
                        if time.monotonic() - t0 > 60 * minutes_left:
                            return
                        if (model_name, mode, s, nfe, b) in done or SAMPLERS[s].build is None \
                                or model_name.split("-")[1] not in SAMPLERS[s].processes:
                            continue
                        if model is None:
                            model = load(model_name, device=device, dtype=dtype)
                            if compile_mode:
                                model.compile(compile_mode)
                        try:
                            r = time_sampler(model, s, nfe, b, repeats=3, graph=graph)
                        except ValueError as e:  # an NFE this sampler cannot meet
                            r = {"sampler": s, "nfe": nfe, "batch_size": b, "error": str(e)}
                        row = {"model": model_name, "mode": mode, **r}
                        with out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"speed {model_name} {mode} b={b} nfe={nfe} {s}: "
                              f"{row.get('ratio', float('nan')):.3f}", flush=True)
            release_graphs()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/study"))
    ap.add_argument("--stage", action="append", choices=STAGES, help="default: all, in order")
    ap.add_argument("--minutes", type=float, default=20.0, help="start no new cell after this wall time")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--graph", action="store_true", help="FD stages: each sampler as one CUDA graph")
    args = ap.parse_args()
    t0 = time.monotonic()
    left = lambda: args.minutes - (time.monotonic() - t0) / 60  # noqa: E731
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    hw = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    stages = args.stage or STAGES
    if "speed" in stages:
        speed(args.out / "speed.jsonl", left(), dev, dtype)
        stages = [s for s in stages if s != "speed"]
    if not stages or left() <= 0:
        print(f"study: {(time.monotonic() - t0) / 60:.1f} min on {hw}", flush=True)
        return
    features, kind, ref_name = feature_space("classifier", (1, 28, 28), dev)
    ref = reference_stats(features, kind, ref_name, ref_dir=args.data_dir)
    ref_features = features.image_features(reference_images(ref_name, args.data_dir))  # for the KID
    compiled = not args.no_compile and dev == "cuda"
    extra = {"features": kind, "device": hw, "dtype": str(dtype).removeprefix("torch."), "compiled": compiled,
             "graph": args.graph}
    models = {}
    for stage in stages:
        if left() <= 0:
            break
        for name, cells in sweeps(stage):
            if left() <= 0:
                break
            if name not in models:
                models[name] = load(name, device=dev, dtype=dtype)
                if compiled:
                    models[name].compile("default" if args.graph else None)
            run_sweep(models[name], name, features, ref, cells, args.out / f"{stage}.jsonl", n=args.n,
                      batch_size=args.batch_size, minutes=left(), extra=extra, ref_features=ref_features,
                      graph=args.graph, log=lambda s: print(s, flush=True))
    print(f"study: {(time.monotonic() - t0) / 60:.1f} min on {hw}", flush=True)


if __name__ == "__main__":
    main()

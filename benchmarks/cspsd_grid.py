"""csps-d on fmnist-psld on power grids t = t_min + (T − t_min)·u^ρ between the uniform (ρ = 1) and the quadratic
(ρ = 2, the default) one (issue 19): the RMSE at NFE 2000 against gddim-2m@2000 from the same prior draws, and the
FD at NFE 20, 50, 100. Whether some ρ keeps the quadratic grid's FD and reaches the uniform grid's accuracy (0.0076
at NFE 2000, where the quadratic grid has 0.0114; docs/benchmarks.md, "csps-d's grid on fmnist-psld").

    python benchmarks/cspsd_grid.py --data-dir .data/fmnist --out benchmarks/results/cspsd_grid.jsonl   # a GPU
    python benchmarks/cspsd_grid.py --nfe 20 --ref-nfe 40 --n 2 --fd 0                                  # plumbing

One JSON line per (ρ, measure); a cell already in --out is skipped. Projection on and λ = −3 (the defaults); the
accuracy in float32 with TF32 off, as the accuracy stage; the FD of --fd samples (10k), seed 0, in the shipped
classifier's features against the test split, float32 network, eager.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import cosi
from cosi.evaluation.accuracy import Reference, errors, prior_draws, reference_solution
from cosi.evaluation.autogrid import grid_steps
from cosi.evaluation.rows import read_rows


REFS = Path(__file__).parent / "results" / "study" / "accuracy_refs"  # references kept between runs (not committed)


def power_grid(process, steps: int, rho: float):
    """``steps`` steps from T to t_min at t = t_min + (T − t_min)·u^ρ, u evenly from 1 to 0 (ρ = 2: quadratic)."""
    u = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    ts = process.t_min + (process.T - process.t_min) * u**rho
    ts[0], ts[-1] = process.T, process.t_min
    return ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rho", type=float, action="append", help="default: 1.75, 1.5, 1.25 (the accuracy stage has 2 "
                    "and 1 on the same draws); the FD also at 2, the baseline measured the same way")
    ap.add_argument("--n", type=int, default=256, help="prior draws of the accuracy (seed 0)")
    ap.add_argument("--nfe", type=int, default=2000)
    ap.add_argument("--ref-nfe", type=int, default=2000, help="calls of the reference, gddim-2m")
    ap.add_argument("--fd", type=int, default=10_000, help="samples of each FD (0: no FD)")
    ap.add_argument("--fd-nfe", type=int, action="append", help="default: 20, 50, 100")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    m = cosi.load_model("fmnist-psld", device=dev)
    p, s = m.process, "csps-d"
    rhos = args.rho or [1.75, 1.5, 1.25]
    done = {(r["rho"], r["nfe"], r.get("n"), r.get("fd_n")) for r in
            (read_rows(args.out) if args.out and Path(args.out).exists() else [])}
    hw = torch.cuda.get_device_name() if dev == "cuda" else "cpu"

    def write(row):
        row = {"model": "fmnist-psld", "sampler": s, "device": hw, "torch": torch.__version__, **row}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")

    left = [rho for rho in rhos if (rho, args.nfe, args.n, None) not in done]
    if left:
        z = prior_draws(p, m.data_shape, args.n, 0, dev)
        x_ref = reference_solution(m.eps_model, p, m.data_shape, args.n, 0, Reference("gddim-2m", args.ref_nfe),
                                   device=dev, self_check=False, batch_size=256, cache_dir=REFS,
                                   name="fmnist-psld")["x"]
        for rho in left:
            t0 = time.perf_counter()
            grid = power_grid(p, grid_steps(s, p, args.nfe), rho)
            x = torch.cat([cosi.sample(m.eps_model, p, s, args.nfe, z_T=b, grid=grid).x for b in z.split(256)])
            write({"rho": rho, "nfe": args.nfe, "n": args.n, **errors(x, x_ref),
                   "reference": f"gddim-2m@{args.ref_nfe}", "seconds": round(time.perf_counter() - t0, 1)})
    if args.fd:
        from cosi.evaluation.evaluate import feature_space, model_fd, reference_stats

        features, kind, ref_name = feature_space("classifier", m.data_shape, dev)
        ref = reference_stats(features, kind, ref_name, ref_dir=args.data_dir)
        for nfe in args.fd_nfe or [20, 50, 100]:
            for rho in sorted({2.0, *rhos}, reverse=True):
                if (rho, nfe, None, args.fd) in done:
                    continue
                r = model_fd(m, features, ref, s, nfe, args.fd, 1000, grid=power_grid(p, grid_steps(s, p, nfe), rho))
                write({"rho": rho, "nfe": nfe, "fd": round(r["fd"], 4), "fd_n": args.fd, "seconds": r["seconds"]})


if __name__ == "__main__":
    main()

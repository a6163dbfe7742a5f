"""csps-d at high NFE on fmnist-psld with two λ (issue 19's 0.01 target at NFE 2000), on the CPU: 16 prior draws
(seed 0) against gddim-2m@1000 from the same draws, projection on, default grid.

    PYTHONPATH=src python benchmarks/cspsd_high_nfe_cpu.py > benchmarks/results/cspsd_high_nfe_cpu.jsonl

One JSON line per (NFE, λ): RMSE, median per-draw RMSE, max |x|, every draw's RMSE, seconds (about 15 minutes per
NFE-2000 row on one thread)."""

from __future__ import annotations

import json
import time

import torch

import cosi
from cosi.evaluation.accuracy import Reference, errors, prior_draws, reference_solution
from cosi.models.checkpoint import load


def main() -> None:
    m = load("fmnist-psld", device="cpu")
    p, n = m.process, 16
    ref = reference_solution(m.eps_model, p, m.data_shape, n, 0, Reference.parse("gddim-2m@1000"),
                             self_check=False)["x"]
    z = prior_draws(p, m.data_shape, n, 0)
    for nfe in (500, 2000):
        for lam in (-3.0, 4.0):
            t0 = time.time()
            x = cosi.sample(m.eps_model, p, "csps-d", nfe, z_T=z, lam=lam).x
            print(json.dumps({"nfe": nfe, "lam": lam, **errors(x, ref),
                              "per_draw": ((x - ref) ** 2).flatten(1).mean(1).sqrt().tolist(),
                              "s": time.time() - t0}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

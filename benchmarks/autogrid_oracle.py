"""grid="auto" on the exact-score oracle: the tuned grid against the default, on held-out draws.

    PYTHONPATH=src python benchmarks/autogrid_oracle.py     # a few minutes on a 2-core CPU

A Gaussian mixture in 16 dimensions (4 components, std 0.1-0.3, GaussianMixture.random seed 0) for VP and PSLD;
cosi.tune_grid on its probe (64 draws, reference gddim-2m@max(500, 4 NFE)); then both grids on 64 other draws
(prior_draws seed 7) against gddim-2m@1000 from them: RMSE over all entries and the median per-draw RMSE.
"""

from __future__ import annotations

import cosi
from cosi.evaluation.accuracy import Reference, errors, prior_draws, reference_solution
from cosi.evaluation.oracle import GaussianMixture

CASES = [("vp", "gddim-2m", 5), ("vp", "gddim-3m-c", 6), ("vp", "gddim-2m", 10), ("psld", "gddim-2m", 5),
         ("psld", "gddim-3m-c", 6), ("psld", "gddim-2m", 10)]


def main() -> None:
    print("| process | sampler | NFE | start (best named grid on the probe) | probe RMSE, default → tuned | "
          "held-out RMSE, default → tuned | held-out median, default → tuned | tuning calls (probe of 64) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for proc, s, nfe in CASES:
        p = cosi.make_process(proc)
        gmm = GaussianMixture.random(d=16, components=4, seed=0, std_range=(0.1, 0.3))
        eps = gmm.eps_model(p)
        r = cosi.tune_grid(eps, p, s, nfe, (16,))
        z = prior_draws(p, (16,), 64, 7)
        ref = reference_solution(eps, p, (16,), 64, 7, Reference("gddim-2m", 1000), self_check=False)["x"]
        d, a = (errors(cosi.sample(eps, p, s, nfe, z_T=z, grid=g).x, ref) for g in (None, r["grid"]))
        print(f"| {proc} | {s} | {nfe} | {r['start_kind']} | {r['proxy_start']:.3g} → {r['proxy']:.3g} "
              f"| {d['rmse']:.3g} → {a['rmse']:.3g} | "
              f"{d['rmse_median']:.3g} → {a['rmse_median']:.3g} | {r['calls']} | {r['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()

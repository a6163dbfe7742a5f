"""Stochastic presets by exact Gaussian moment propagation (cosi.evaluation.moments, docs/integrators.md).

    PYTHONPATH=src python benchmarks/moments_table.py            # cov error at NFE 10..100: eta = 1 and the default
    PYTHONPATH=src python benchmarks/moments_table.py --edges    # the largest stable eta per NFE (the schedule's data)

Data: x0 ~ N(MU0, diag S0) of cosi.evaluation.moments (variances 0.01, 0.1, 1), exact ε, z_T from the exact
marginal, default grid. "Stable": covariance error below STABLE_COV_ERROR (the largest data variance)."""

from __future__ import annotations

import sys
import warnings

import torch

from cosi.core.integrators import SAMPLERS, nearest_nfe
from cosi.core.integrators.eta import STABLE_COV_ERROR
from cosi.evaluation.moments import moment_errors

PRESETS = [n for n, s in SAMPLERS.items() if s.stochastic and s.build is not None and n != "ddim"]
NFES = (10, 20, 30, 50, 100)
EDGE_NFES = (10, 12, 15, 17, 20, 22, 25, 27, 30, 35, 40, 45, 50, 60, 70, 85, 100)


def cov_error(name, process, nfe, **options) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return moment_errors(name, process, nfe, allow_unstable=True, **options)["cov"]


def largest_stable_eta(name, process, nfe, step=0.05) -> float | None:
    """The largest η on a grid of ``step`` whose covariance error is below the bound (bisection; None when
    even η = 0 is unstable)."""
    ok = lambda eta: cov_error(name, process, nfe, eta=eta) < STABLE_COV_ERROR  # noqa: E731
    if ok(1.0):
        return 1.0
    if not ok(0.0):
        return None
    lo, hi = 0, round(1 / step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid * step) else (lo, mid)
    return lo * step


def edges() -> None:
    for p in ("psld", "cld"):
        for name in PRESETS:
            if not SAMPLERS[name].accepts(p) or "eta" not in SAMPLERS[name].options:
                continue
            row = {}
            for n in EDGE_NFES:
                m = nearest_nfe(name, n, p, at_least=True)
                if m not in row:
                    row[m] = largest_stable_eta(name, p, m)
            print(f"({name!r}, {p!r}): {row},", flush=True)


def table() -> None:
    print(f"| preset | process | {' | '.join(f'NFE {n}' for n in NFES)} |")
    print("|---|---|" + "---|" * len(NFES))
    for p in ("psld", "cld"):
        for name in PRESETS:
            if not SAMPLERS[name].accepts(p):
                continue
            cells = []
            for n in NFES:
                m = nearest_nfe(name, n, p, at_least=True)
                one = cov_error(name, p, m, eta=1.0) if "eta" in SAMPLERS[name].options else None
                default = cov_error(name, p, m)
                tag = "" if m == n else f" (NFE {m})"
                cells.append(f"{default:.2g}" + ("" if one is None else f" / {one:.2g}") + tag)
            print(f"| {name} | {p} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    edges() if "--edges" in sys.argv else table()

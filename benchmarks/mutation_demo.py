"""Issue 19's mutation demonstration: scale csps-s's O-step noise by 1.1 and compare the exact output covariance
error with the unmutated plan's (exact Gaussian moment propagation, float64; tests/test_stochastic.py asserts it).

    PYTHONPATH=src python benchmarks/mutation_demo.py [--out benchmarks/results/mutation.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cosi
from cosi.core.integrators import build_plan
from cosi.evaluation.moments import MU0, S0, propagate, target_law


def cov_error(plan, p) -> float:
    _, cov = propagate(plan, p, MU0, S0)
    return float((cov - target_law(plan, p, MU0, S0)[1]).flatten(1).norm(dim=-1).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/mutation.json"))
    args = ap.parse_args()
    p = cosi.make_process("psld")
    rows = []
    for nfe in (100, 200, 400):
        plan = build_plan("csps-s", p, nfe)
        mutated = type(plan)(plan.k, list(plan.ops), list(plan.chunks))
        o = next(i for i, c in enumerate(plan.chunks) if c[2] is not None)
        Cz, Ce, Cn, Cr = plan.chunks[o]
        mutated.chunks[o] = (Cz, Ce, 1.1 * Cn, Cr)
        rows.append({"sampler": "csps-s", "process": "psld", "nfe": nfe, "cov_error": cov_error(plan, p),
                     "cov_error_mutated": cov_error(mutated, p), "mutation": "O-step noise x 1.1"})
        print(rows[-1])
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()

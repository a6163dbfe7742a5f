"""Endpoint error vs NFE on the exact oracle for VE/EDM and rectified flow: gddim-2m, DDIM-equivalent
(gddim, η = 0), Euler and Heun, each on its process's default grid (EDM: logsnr; RF: quadratic) unless
--grid is given. The error is the RMS distance of the final state to a DOP853 solution of the
probability-flow ODE (rtol = atol = 1e-10) from the same z_T.

    PYTHONPATH=src python benchmarks/oracle_edm_rf.py [--grid edm] [--n 16] [--d 8]
"""

from __future__ import annotations

import argparse

import torch

import cosi
from cosi.evaluation.distances import endpoint_error
from cosi.evaluation.oracle import GaussianMixture, reference_solution

SAMPLERS = (("gddim-2m", 1), ("gddim", 1), ("euler", 1), ("heun", 2))
NFES = (5, 10, 20, 50)


def nfe_for(sampler: str, per_step: int, nfe: int) -> int:
    return cosi.nearest_nfe(sampler, nfe, "edm") if per_step > 1 else nfe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", default=None)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--processes", nargs="+", default=["edm", "rf"])
    a = ap.parse_args()
    torch.set_num_threads(2)
    print("| process | grid | sampler | " + " | ".join(f"NFE {n}" for n in NFES) + " |")
    print("|---|---|---|" + "---|" * len(NFES))
    for name in a.processes:
        p = cosi.make_process(name)
        gmm = GaussianMixture.random(d=a.d, components=4, seed=0, std_range=(0.1, 0.3))
        z_T = gmm.sample_state(p, p.T, a.n, torch.Generator().manual_seed(0))
        ref = reference_solution(gmm, p, z_T)
        eps = gmm.eps_model(p)
        for s, per_step in SAMPLERS:
            row = []
            for nfe in NFES:
                k = nfe_for(s, per_step, nfe)
                err = endpoint_error(cosi.sample(eps, p, s, k, z_T=z_T, grid=a.grid).z, ref)
                row.append(f"{err:.2e}" + (f" ({k})" if k != nfe else ""))
            label = "ddim-equivalent (gddim η=0)" if s == "gddim" else s
            print(f"| {name} | {a.grid or 'default'} | {label} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()

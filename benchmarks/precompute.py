"""Coefficient precomputation: our vectorized float64 tables for a 1000-step grid against
one step of the official approach (an ODE solve per step for A_t and Φ), in one run.

    python benchmarks/precompute.py [--steps 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.integrate import solve_ivp

import cosi
from cosi.core.grids import time_grid
from cosi.core.integrators import _cached_plan, build_plan
from cosi.core.integrators.coefficients import score_coef


def ode_solve_one_step(process, B, t: float, s: float, t_ref: float):
    """One step the way the official code does it: integrate dA/dt = A(B − βF) and
    dΦ/dt = ½β A D L⁻ᵀ from t_ref to t and to s with an adaptive ODE solver."""
    k = process.k
    F = process.F_.numpy()

    def rhs(u, y):
        A = y[: k * k].reshape(k, k)
        dA = A @ (B - float(process.beta(u)) * F)
        dPhi = A @ score_coef(process, torch.tensor(u, dtype=torch.float64)).numpy()
        return np.concatenate([dA.ravel(), dPhi.ravel()])

    y0 = np.concatenate([np.eye(k).ravel(), np.zeros(k * k)])
    for end in (t, s):
        solve_ivp(rhs, (t_ref, end), y0, rtol=1e-8, atol=1e-10)


def median_ms(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"{'process':8s} {'sampler':14s} {'ours: whole grid (ms)':>22s} {'ODE solve: one step (ms)':>25s} "
          f"{'ratio (grid / step)':>20s}")
    for pname in ("vp", "cld", "psld"):
        p = cosi.make_process(pname)
        B = 0.5 * np.ones((p.k, p.k))

        def ours():
            _cached_plan.cache_clear()
            build_plan("lambda-ddim-2", p, args.steps, lam=0.5)

        ts = time_grid(p, args.steps, "quadratic")
        t, s = float(ts[args.steps // 2]), float(ts[args.steps // 2 + 1])
        grid_ms = median_ms(ours, args.repeats)
        step_ms = median_ms(lambda: ode_solve_one_step(p, B, t, s, float(ts[-1])), args.repeats)
        print(f"{pname:8s} {'lambda-ddim-2':14s} {grid_ms:22.1f} {step_ms:25.1f} {grid_ms / step_ms:20.2f}")


if __name__ == "__main__":
    main()

"""Pieces every sampler shares: grids with an optional final denoising call, and the
plan of a sampler that makes one network call per step."""

from __future__ import annotations

import torch
from torch import Tensor

from ..grids import time_grid
from ..processes import LinearProcess, f64
from .coefficients import eye
from .plan import Plan


class NFEError(ValueError):
    """The requested number of network calls cannot be met exactly."""


def steps_for(nfe: int, calls_per_step: int, first_step_extra: int, denoise: bool, name: str) -> int:
    """Number of grid steps that uses exactly ``nfe`` calls, or a clear error.

    A sampler makes ``first_step_extra + calls_per_step * steps`` calls, plus one for the
    final denoising step.
    """
    if not isinstance(nfe, int) or isinstance(nfe, bool):
        raise NFEError(f"nfe must be an integer, got {nfe!r}")
    need = first_step_extra + calls_per_step + int(denoise)
    if nfe < need:
        what = " including the final denoising call" if denoise else ""
        raise NFEError(f"nfe={nfe} is below the {need} network call{'s' if need > 1 else ''} {name} needs for its first "
                       f"step{what}; use nfe >= {need}")
    rest = nfe - first_step_extra - int(denoise)
    if rest % calls_per_step:
        lo = first_step_extra + int(denoise) + calls_per_step * (rest // calls_per_step)
        raise NFEError(f"{name} makes {calls_per_step} network calls per step"
                       f"{f' plus {first_step_extra} at the start' if first_step_extra else ''}"
                       f"{' plus 1 to denoise' if denoise else ''}: nfe={nfe} cannot be met exactly; "
                       f"use nfe={lo} or nfe={lo + calls_per_step}")
    return rest // calls_per_step


def grid_for(process: LinearProcess, steps: int, grid) -> Tensor:
    """A grid by name, or a user's decreasing sequence of times (T ... t_min)."""
    if isinstance(grid, str):
        return time_grid(process, steps, grid)
    ts = torch.as_tensor(grid, dtype=f64).flatten()
    if ts.numel() != steps + 1:
        raise NFEError(f"the given grid has {ts.numel()} times, i.e. {ts.numel() - 1} steps, but the "
                       f"requested nfe needs {steps} steps ({steps + 1} times)")
    if not bool((ts[1:] < ts[:-1]).all()) or ts[-1] <= 0:
        raise ValueError("a custom grid must be strictly decreasing (from T to t_min) and positive")
    return ts


def add_denoise(plan: Plan, process: LinearProcess, t: float) -> None:
    """Final denoising call at t (Tweedie): x̂₀ = [z − L_t ε]_x / Ψ_xx(t, 0); m is kept."""
    m = process.marginal(torch.tensor(t, dtype=f64))
    k = process.k
    Cz, Ce = eye(k), torch.zeros(k, k, dtype=f64)
    Cz[0, 0] = 1.0 / m.psi[0]
    Ce[0] = -m.L[0] / m.psi[0]
    plan.eval(t, at="t_min")
    plan.lin(t, plan.coeffs(Cz, Ce), label="denoise (Tweedie)", step=plan.steps)


def single_call_plan(process: LinearProcess, ts: Tensor, coeffs, denoise: bool, label: str = "step t→s") -> Plan:
    """One network call at the start of each step, then z ← Cz z + Cε ε + Cξ ξ (``label``: that update in
    words, for :meth:`Plan.explain`).

    ``coeffs`` is (Cz, Ce, Cn) with each (steps, k, k) or Cn None.
    """
    plan = Plan(process.k)
    chunk = plan.coeffs(*coeffs)
    times = ts.tolist()
    for i in range(len(times) - 1):
        plan.eval(times[i], at="t")
        plan.lin(times[i + 1], chunk, i, label=label, step=i)
    if denoise:
        add_denoise(plan, process, times[-1])
    return plan

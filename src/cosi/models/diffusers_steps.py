"""Coefficients of single steps between arbitrary pairs of times, for diffusers' timestep rules.

diffusers' DDIM rule steps timestep τ to τ − N // K, which need not be the next timestep the
scheduler evaluates at, so a run is not always one cosi grid. The functions here give the
coefficients of each step t_from[i] → t_to[i] from cosi's own integrators, with no formula of
their own: :func:`conjugate_steps` runs :func:`cosi.core.integrators.conjugate.conjugate` on each
chain of consecutive steps, and :func:`denoise_coefficients` reads the final denoising update of
:func:`cosi.core.integrators.base.add_denoise`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..core.integrators.base import add_denoise
from ..core.integrators.coefficients import eye
from ..core.integrators.conjugate import conjugate
from ..core.integrators.plan import Plan
from ..core.processes import LinearProcess, f64

__all__ = ["conjugate_steps", "denoise_coefficients"]


def _chains(t_from: Tensor, t_to: Tensor) -> list[tuple[int, int]]:
    """[start, stop) index ranges of maximal runs of proper steps (t_to < t_from) that share end points
    (t_to[i] = t_from[i + 1]): each is one decreasing grid."""
    out, start = [], None
    for i in range(t_from.numel()):
        if t_to[i] == t_from[i]:  # the identity step: no chain
            if start is not None:
                out.append((start, i))
            start = None
            continue
        if start is None:
            start = i
        elif t_from[i] != t_to[i - 1]:
            out.append((start, i))
            start = i
    if start is not None:
        out.append((start, t_from.numel()))
    return out


def conjugate_steps(process: LinearProcess, t_from, t_to, B=0.0) -> tuple[Tensor, Tensor]:
    """(C_z, C_ε), float64 (K, k, k), of the conjugate integrator (math.md §2, constant B) for the
    steps t_from[i] → t_to[i] (t_to ≤ t_from; t_to = t_from is the identity):

        z_s = A_s⁻¹ A_t (I + h B) z_t + A_s⁻¹ (Φ_s − Φ_t) ε_t,   h = s − t,

    computed by ``cosi.core.integrators.conjugate.conjugate`` on each chain of steps that share end
    points (its Φ integrals are split at a tabulated process's knots, where β jumps). The steps need
    not share end points (diffusers' DDIM timestep rule)."""
    t_from = torch.as_tensor(t_from, dtype=f64).flatten()
    t_to = torch.as_tensor(t_to, dtype=f64).flatten()
    if t_from.shape != t_to.shape:
        raise ValueError("t_from and t_to must have the same length")
    if bool((t_to > t_from).any()) or bool((t_to <= 0).any()):
        raise ValueError("each step must go down in time (t_to <= t_from) and stay at t > 0")
    k = process.k
    Cz = eye(k).repeat(t_from.numel(), 1, 1)
    Ce = torch.zeros(t_from.numel(), k, k, dtype=f64)
    for a, b in _chains(t_from, t_to):
        ts = torch.cat([t_from[a:b], t_to[b - 1:b]])
        Cz[a:b], Ce[a:b], _ = conjugate(process, ts, B)
    return Cz, Ce


def denoise_coefficients(process: LinearProcess, t) -> tuple[Tensor, Tensor]:
    """(C_z, C_ε), float64 (K, k, k), of cosi's final denoising step at each time t (Tweedie,
    ``denoise=True``; x̂₀ = (z − σ_t ε)/α_t on VP, i.e. DDIM's step to ᾱ = 1): the update that
    :func:`cosi.core.integrators.base.add_denoise` appends to a plan."""
    rows = []
    for u in torch.as_tensor(t, dtype=f64).flatten().tolist():
        plan = Plan(process.k)
        add_denoise(plan, process, u)
        rows.append(plan.chunks[plan.ops[-1].chunk][:2])
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])

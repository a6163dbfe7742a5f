"""Exact moment propagation through a sampler's plan on Gaussian data (math.md §7, "Exact Gaussian moments").

For data x₀ ~ N(μ₀, S₀) every marginal of a linear process is Gaussian, z_t ~ N(m_t, P_t) per data coordinate,

    m_t = ψ_t μ₀,    P_t = ψ_t S₀ ψ_tᵀ + Σ_t,

and the exact ε is affine in z:  E[ε | z_t = z] = A_t (z − m_t),  A_t = L_tᵀ P_t⁻¹.  Every cosi plan is then
affine too, so its output law is a Gaussian computed exactly, in float64, with no Monte Carlo. The state
propagated here is the joint Gaussian of y = (z, ε, r) per data coordinate (3k numbers): ε is carried as a
variable because reduced splitting schemes reuse an ε computed at an earlier state, and r is the register of
multistep samplers (gddim-2m). The operations act as

    Eval at t:     ε ← A_t z − A_t m_t                      (then ε ← P_z z + P_ε ε, the projection, if any)
    Lin:           z ← C_z z + C_ε ε + C_r r + C_ξ ξ,   r ← S_z z + S_ε ε   (the save reads the old z, ε)

each an affine map y ← T y + c (+ noise of covariance C_ξ C_ξᵀ on z), applied to (mean, cov).

Data coordinates are independent when S₀ is diagonal (a full S₀ reduces to this in its eigenbasis: every plan
acts the same on each coordinate and its noise is isotropic across coordinates), so ``mu0`` and ``S0`` are
per-coordinate vectors (or scalars) and the laws come back per coordinate: mean (d, k), cov (d, k, k).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..core.integrators import build_plan
from ..core.integrators.base import add_denoise
from ..core.integrators.plan import Eval, Lin, Plan
from ..core.processes import LinearProcess, f64, make_process


def _per_coordinate(mu0, S0) -> tuple[Tensor, Tensor]:
    mu0 = torch.as_tensor(mu0, dtype=f64).flatten()
    S0 = torch.as_tensor(S0, dtype=f64).flatten()
    d = max(len(mu0), len(S0))
    return mu0.expand(d).clone(), S0.expand(d).clone()


def gaussian_marginal(process: LinearProcess, mu0, S0, t) -> tuple[Tensor, Tensor]:
    """The exact law of z_t for x₀ ~ N(μ₀, diag S₀) at times t of any shape (...): m_t (..., d, k) and
    P_t (..., d, k, k)."""
    mu0, S0 = _per_coordinate(mu0, S0)
    m = process.marginal(torch.as_tensor(t, dtype=f64))
    psi = m.psi[..., None, :]  # (..., 1, k)
    outer = psi[..., :, None] * psi[..., None, :]
    return mu0[:, None] * psi, S0[:, None, None] * outer + m.cov[..., None, :, :]


def exact_eps(process: LinearProcess, mu0, S0, t) -> tuple[Tensor, Tensor]:
    """(A, a) with E[ε | z_t = z] = A z + a per coordinate at times t (...): A = L_tᵀ P_t⁻¹ (..., d, k, k),
    a = −A m_t (..., d, k)."""
    mean, P = gaussian_marginal(process, mu0, S0, t)
    L = process.marginal(torch.as_tensor(t, dtype=f64)).L[..., None, :, :]
    A = torch.linalg.solve(P, L.expand_as(P)).transpose(-1, -2)  # P symmetric: (P⁻¹ L)ᵀ = Lᵀ P⁻¹
    return A, -(A @ mean[..., None])[..., 0]


def gaussian_eps_model(process: LinearProcess, mu0, S0):
    """The exact eps_model(z, t) of Gaussian data (for Monte-Carlo checks): z of shape (B, k·d)."""
    mu0, S0 = _per_coordinate(mu0, S0)
    k, d = process.k, len(mu0)

    def eps(z: Tensor, t: Tensor) -> Tensor:
        A, a = (c.to(z.device) for c in exact_eps(process, mu0, S0, float(t[0])))  # float64, on z's device
        zz = z.to(f64).unflatten(1, (k, d)).transpose(1, 2)  # (B, d, k)
        out = (A @ zz[..., None])[..., 0] + a
        return out.transpose(1, 2).flatten(1).to(z.dtype)

    return eps


def propagate(plan: Plan, process: LinearProcess, mu0, S0, z_T_mean: Tensor | None = None,
              z_T_cov: Tensor | None = None, *, t_start: float | None = None) -> tuple[Tensor, Tensor]:
    """The exact law (mean (d, k), cov (d, k, k)) of the final state of ``plan`` run with the exact ε of
    x₀ ~ N(μ₀, diag S₀), from z_T ~ N(z_T_mean, z_T_cov) (default: the exact marginal at the plan's first
    time, so that every error is the integrator's)."""
    mu0, S0 = _per_coordinate(mu0, S0)
    k, d = process.k, len(mu0)
    if z_T_mean is None or z_T_cov is None:
        t0 = t_start if t_start is not None else next(op.t for op in plan.ops if isinstance(op, Eval))
        m_T, P_T = gaussian_marginal(process, mu0, S0, t0)
        z_T_mean = m_T if z_T_mean is None else z_T_mean
        z_T_cov = P_T if z_T_cov is None else z_T_cov
    lins = [op for op in plan.ops if isinstance(op, Lin)]
    n_reg = max([1] + [op.slot + 1 for op in lins if op.save is not None] + [int(op.uses_reg) for op in lins])
    Z, E = slice(0, k), slice(k, 2 * k)
    R = [slice((2 + j) * k, (3 + j) * k) for j in range(n_reg)]  # the registers r_0, r_1, …
    n = (2 + n_reg) * k
    mean = torch.zeros(d, n, dtype=f64)
    cov = torch.zeros(d, n, n, dtype=f64)
    mean[:, Z] = torch.as_tensor(z_T_mean, dtype=f64).expand(d, k)
    cov[:, Z, Z] = torch.as_tensor(z_T_cov, dtype=f64).expand(d, k, k)

    def affine(T: Tensor, c: Tensor | None = None, noise: Tensor | None = None):
        nonlocal mean, cov
        mean = (T @ mean[..., None])[..., 0] + (0 if c is None else c)
        cov = T @ cov @ T.transpose(-1, -2)
        if noise is not None:
            cov = cov.clone()
            cov[:, Z, Z] += noise
        cov = 0.5 * (cov + cov.transpose(-1, -2))

    calls = [op.t for op in plan.ops if isinstance(op, Eval)]
    As, as_ = exact_eps(process, mu0, S0, torch.tensor(calls, dtype=f64)) if calls else (None, None)
    n_call = 0
    for op in plan.ops:
        T = torch.eye(n, dtype=f64).repeat(d, 1, 1)
        if isinstance(op, Eval):
            A, a = As[n_call], as_[n_call]
            n_call += 1
            T[:, E, E] = 0
            T[:, E, Z] = A
            c = torch.zeros(d, n, dtype=f64)
            c[:, E] = a
            affine(T, c)
            if op.project is not None:
                P_z, P_e = (plan.chunks[op.project[0]][i][op.project[1]] for i in (0, 1))
                T = torch.eye(n, dtype=f64).repeat(d, 1, 1)
                T[:, E, Z], T[:, E, E] = P_z, P_e
                affine(T)
            continue
        Cz, Ce, Cn, Cr = plan.chunks[op.chunk]
        Cz, Ce, Cn = (None if c is None else c[op.row] for c in (Cz, Ce, Cn))
        Cr = None if Cr is None else tuple(c[op.row] for c in Cr) if isinstance(Cr, tuple) else Cr[op.row]
        T[:, Z, Z] = Cz
        T[:, Z, E] = Ce if Ce is not None else 0
        for j, C in enumerate(() if Cr is None else Cr if isinstance(Cr, tuple) else (Cr,)):
            T[:, Z, R[j]] = C
        if op.save is not None:
            Sz, Se = (plan.chunks[op.save][i][op.row] for i in (0, 1))
            r = R[op.slot]
            T[:, r, Z], T[:, r, E], T[:, r, r] = Sz, Se, 0
        affine(T, noise=None if Cn is None else Cn @ Cn.T)
    return mean[:, Z], cov[:, Z, Z]


def target_law(plan: Plan, process: LinearProcess, mu0, S0, denoise: bool = False) -> tuple[Tensor, Tensor]:
    """The law the plan's output should have: the exact marginal at its last time (t_min), or, after a final
    denoising call, that marginal mapped by the exact denoising step (x̂₀ = E[x₀ | z], m kept)."""
    t_end = plan.ops[-1].t
    mean, cov = gaussian_marginal(process, mu0, S0, t_end)
    if not denoise:
        return mean, cov
    tail = Plan(process.k)
    add_denoise(tail, process, t_end)
    return propagate(tail, process, mu0, S0, mean, cov)


# Gaussian test data: three coordinates, from sharp (variance 0.01) to the data scale (variance 1), off-centre.
MU0 = (0.5, -0.3, 0.0)
S0 = (0.01, 0.1, 1.0)


def moment_errors(sampler: str, process, nfe: int, *, mu0=MU0, S0=S0, grid=None, denoise: bool = False,
                  project: bool = True, **options) -> dict:
    """Errors of the exact output law of ``sampler`` at ``nfe`` calls on Gaussian data, against the exact
    marginal at t_min (or the exact denoised law): ``mean`` = max over coordinates of |Δmean|₂, ``cov`` = max
    over coordinates of the Frobenius norm of Δcov (both of the full k-block state), ``cov_x`` = max |Δvar| of
    the data block."""
    process = make_process(process) if isinstance(process, str) else process
    plan = build_plan(sampler, process, nfe, grid=grid, denoise=denoise, project=project, **options)
    mean, cov = propagate(plan, process, mu0, S0)
    m_ref, P_ref = target_law(plan, process, mu0, S0, denoise)
    dm = (mean - m_ref).norm(dim=-1).max()
    dc = (cov - P_ref).flatten(1).norm(dim=-1).max()
    dx = (cov[:, 0, 0] - P_ref[:, 0, 0]).abs().max()
    as_float = lambda v: float(v) if torch.isfinite(v) else math.inf  # noqa: E731
    return {"mean": as_float(dm), "cov": as_float(dc), "cov_x": as_float(dx)}


__all__ = ["gaussian_marginal", "exact_eps", "gaussian_eps_model", "propagate", "target_law", "moment_errors"]

"""Float64 coefficient tables shared by the integrators (math.md §2, §3).

Everything here is vectorized over a time grid and computed once per grid; the
integrators cache the resulting plans.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..processes import LinearProcess, f64



def quad_nodes(intervals: int) -> int:
    """Gauss–Legendre nodes per interval: 16 on coarse grids, fewer on fine ones (relative
    error < 1e-9 against adaptive quadrature in every case tested, tests/test_coefficients.py)."""
    return 16 if intervals <= 64 else 8 if intervals <= 256 else 6


def eye(k: int) -> Tensor:
    return torch.eye(k, dtype=f64)


def integrate(f, lo: Tensor, hi: Tensor, nodes: int | None = None) -> Tensor:
    """∫_lo^hi f(u) du per interval, for lo, hi of shape (n,) with 0 < lo.

    Gauss–Legendre in v = log u: near u = 0 the integrands here grow like u^{-1/2} (VP,
    PSLD: the data block's variance vanishes) or u^{-1} (CLD's conditional momentum
    variance), and f(e^v)·e^v is smooth in both cases. ``f`` maps a tensor of times (n, q)
    to matrices (n, q, k, k).
    """
    x, w = np.polynomial.legendre.leggauss(nodes or quad_nodes(len(lo)))
    x, w = torch.tensor(x, dtype=f64), torch.tensor(w, dtype=f64)
    a, b = lo.log(), hi.log()
    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    u = torch.exp(mid[:, None] + half[:, None] * x)  # (n, q)
    vals = f(u)  # (n, q, k, k)
    weights = (half[:, None] * w * u)[..., None, None]
    return (vals * weights).sum(1)


def score_coef(process: LinearProcess, u: Tensor) -> Tensor:
    """½ β(u) D L_u^{-T}: the map from ε to the probability-flow drift's score term."""
    m = process.marginal(u)
    return 0.5 * process.beta(u)[..., None, None] * process.D_ @ m.L_invT


def conjugate_A(process: LinearProcess, B: Tensor, t: Tensor, t_ref: float) -> Tensor:
    """A_t solving dA/dt = A (B − β(t) F), A(t_ref) = I (math.md §2), shape (..., k, k).

    Exact: with constant β, A_t = expm((t − t_ref)(B − βF)); when B and F commute,
    A_t = expm((t − t_ref) B − (b(t) − b(t_ref)) F).
    """
    F = process.F_
    dt = (t - t_ref)[..., None, None]
    if process.constant_beta:
        return torch.linalg.matrix_exp(dt * (B - process.beta_0 * F))
    if torch.allclose(B @ F, F @ B, atol=1e-14):
        db = (process.b(t) - process.b(t_ref))[..., None, None]
        return torch.linalg.matrix_exp(dt * B - db * F)
    raise NotImplementedError(
        "conjugate integrators with a time-varying β need B to commute with F "
        "(e.g. B = λI, or any B when k = 1); use a constant-β process or such a B"
    )


def phi_increments(process: LinearProcess, B: Tensor, ts: Tensor, t_ref: float) -> Tensor:
    """Φ_{t_{i+1}} − Φ_{t_i} for a decreasing grid ts, where Φ′(u) = ½β(u) A_u D L_u^{-T}.

    A process whose β jumps (a tabulated schedule with ``knots``) is integrated piecewise
    between its knots, where the integrand is smooth.
    """
    lo, hi = ts[1:], ts[:-1]

    def dphi(u):
        return conjugate_A(process, B, u, t_ref) @ score_coef(process, u)

    knots = getattr(process, "knots", None)
    if knots is None:
        return -integrate(dphi, lo, hi)
    inner = knots[(knots > ts[-1]) & (knots < ts[0])].to(f64)
    pts = torch.unique(torch.cat([ts, inner]))  # sorted ascending
    pieces = integrate(dphi, pts[:-1], pts[1:])
    cum = torch.cat([torch.zeros_like(pieces[:1]), pieces.cumsum(0)])
    return -(cum[torch.searchsorted(pts, hi)] - cum[torch.searchsorted(pts, lo)])


def data_prediction_weights(process: LinearProcess, t: Tensor) -> Tensor:
    """w_t = ψ_tᵀ Σ_t⁻¹ / (ψ_tᵀ Σ_t⁻¹ ψ_t), shape (..., 1, k): the data prediction from a state and its ε is
    x̂₀ = w_t (z − L_t ε), the generalized-least-squares estimate of x₀ from z − L_t ε ≈ ψ_t x₀ (w_t ψ_t = 1;
    k = 1: w = 1/ψ)."""
    m = process.marginal(t)
    prec_psi = torch.linalg.solve(m.cov, m.psi[..., None])  # Σ_t⁻¹ ψ_t, (..., k, 1)
    return prec_psi.transpose(-1, -2) / (m.psi[..., None, :] @ prec_psi)


def consistency_projection(process: LinearProcess, t: Tensor) -> tuple[Tensor, Tensor]:
    """(P_z, P_ε), each (..., k, k), of the consistency projection of ε (docs/integrators.md):

        ε̃ = L_t⁻¹ (z − ψ_t x̂₀),   x̂₀ = w_t (z − L_t ε),   i.e.   ε̃ = P_z z + P_ε ε,
        P_z = L_t⁻¹ (I − ψ_t w_t),   P_ε = L_t⁻¹ ψ_t w_t L_t.

    An exact ε has z − L_t ε = ψ_t E[x₀ | z], so ε̃ = ε; for k = 1, P_z = 0 and P_ε = 1. A learned ε of a
    two-block process is not consistent in this sense, and the ε-form ODE amplifies the difference."""
    m = process.marginal(t)
    w = data_prediction_weights(process, t)
    L_inv = m.L_invT.transpose(-1, -2)
    psi_w = m.psi[..., None] @ w  # ψ_t w_t, (..., k, k)
    I = torch.eye(process.k, dtype=f64)
    return L_inv @ (I - psi_w), L_inv @ psi_w @ m.L


def as_matrix(B, k: int, name: str = "B") -> Tensor:
    """A user's B (scalar, k×k nested list, array or tensor) as a float64 k×k tensor."""
    M = torch.as_tensor(B, dtype=f64)
    if M.dim() == 0:
        M = M * eye(k)
    if M.shape != (k, k):
        raise ValueError(f"{name} must be a scalar or a {k}x{k} matrix for this process, got shape "
                         f"{tuple(M.shape)}")
    if not torch.isfinite(M).all():
        raise ValueError(f"{name} must be finite, got {M.tolist()}")
    return M

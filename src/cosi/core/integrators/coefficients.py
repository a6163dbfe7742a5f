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

"""Float64 coefficient tables shared by the integrators (math.md §2, §3).

Everything here is vectorized over a time grid and computed once per grid; the
integrators cache the resulting plans.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..processes import LinearProcess, as_time, f64


# Gauss–Legendre nodes per interval of the Φ integrals, by grid size: a fine grid's intervals are
# short in log u, so fewer nodes keep the same accuracy at less cost; (at most this many intervals,
# nodes). Measured (tests/test_coefficients.py, B = 0.5 I, every process, 5 … 1000 steps): within 1e-9
# relative of the same rule at four times the nodes, and of scipy's adaptive quadrature on interior
# intervals (at the singular t_min end scipy's quad_vec is the less accurate of the two).
QUAD_NODES = ((64, 16), (256, 8))
QUAD_NODES_FINE = 6  # more than 256 intervals


def quad_nodes(intervals: int) -> int:
    """Gauss–Legendre nodes per interval for a grid of ``intervals`` steps (see QUAD_NODES)."""
    for most, nodes in QUAD_NODES:
        if intervals <= most:
            return nodes
    return QUAD_NODES_FINE


def eye(k: int) -> Tensor:
    return torch.eye(k, dtype=f64)


def integrate(f, lo: Tensor, hi: Tensor, nodes: int | None = None, process: LinearProcess | None = None) -> Tensor:
    """∫_lo^hi f(u) du per interval, for lo, hi of shape (n,) with 0 < lo.

    Gauss–Legendre in v = log u: near u = 0 the integrands here grow like u^{-1/2} (VP,
    PSLD: the data block's variance vanishes) or u^{-1} (CLD's conditional momentum
    variance), and f(e^v)·e^v is smooth in both cases. Given a ``process`` whose log-SNR λ has a
    closed-form inverse, in v = −λ/2 = log(σ/ψ) instead: that also resolves an end where ψ → 0
    (rectified flow at t → 1, where the integrands grow like (1 − u)^{-2}); for B = 0 the
    integrand in v is exactly ψ_ref e^v. ``f`` maps a tensor of times (n, q) to matrices (n, q, k, k).
    """
    x, w = np.polynomial.legendre.leggauss(nodes or quad_nodes(len(lo)))
    x, w = torch.tensor(x, dtype=f64), torch.tensor(w, dtype=f64)
    snr = process is not None and process.log_snr_closed_form
    a, b = (-0.5 * process.log_snr(lo), -0.5 * process.log_snr(hi)) if snr else (lo.log(), hi.log())
    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    v = mid[:, None] + half[:, None] * x  # (n, q)
    if snr:
        u = process.log_snr_inverse(-2 * v)
        du_dv = -2 / process.log_snr_derivative(u)
    else:
        u = torch.exp(v)
        du_dv = u
    vals = f(u)  # (n, q, k, k)
    weights = (half[:, None] * w * du_dv)[..., None, None]
    return (vals * weights).sum(1)


def score_coef(process: LinearProcess, u: Tensor) -> Tensor:
    """½ g²(u) L_u^{-T} (= ½ β(u) D L_u^{-T}): the map from ε to the probability-flow drift's score term."""
    g2 = process.drift_matrices(u)[1]
    return 0.5 * g2 @ process.marginal(u).L_invT


def conjugate_A(process: LinearProcess, B: Tensor, t: Tensor, t_ref: float) -> Tensor:
    """A_t solving dA/dt = A (B − f(t)), f = βF, A(t_ref) = I (math.md §2), shape (..., k, k).

    Exact: with a constant drift f, A_t = expm((t − t_ref)(B − f)); when B commutes with every f(u),
    A_t = expm((t − t_ref) B − ∫_{t_ref}^t f(u) du) (``drift_integral``).
    """
    dt = (t - t_ref)[..., None, None]
    f_ref = process.drift_matrices(as_time(t_ref))[0]
    if process.constant_beta:
        return torch.linalg.matrix_exp(dt * (B - f_ref))
    if torch.allclose(B @ f_ref, f_ref @ B, atol=1e-14):
        return torch.linalg.matrix_exp(dt * B - process.drift_integral(t, as_time(t_ref)))
    raise NotImplementedError(
        "conjugate integrators with a time-varying drift need B to commute with F "
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
        return -integrate(dphi, lo, hi, process=process)
    inner = knots[(knots > ts[-1]) & (knots < ts[0])].to(f64)
    pts = torch.unique(torch.cat([ts, inner]))  # sorted ascending
    pieces = integrate(dphi, pts[:-1], pts[1:], process=process)
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

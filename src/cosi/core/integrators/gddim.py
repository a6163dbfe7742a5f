"""Data-prediction steps for every linear process: DDIM generalized to (x, m) (gDDIM).

For data concentrated at one point x₀ the score is linear, s(z, u) = −Σ_u⁻¹ (z − ψ_u x₀)
(ψ_u = Ψ(u, 0)[:, 0], Σ_u the perturbation covariance), and the reverse-time family of
math.md §1,

    dz = β [F z + ½(1 + η²) D Σ_u⁻¹ (z − ψ_u x₀)] du + η sqrt(β) G dw̄,

is a linear SDE that can be solved exactly. In whitened coordinates W = L_u⁻¹ (z − ψ_u x₀)
it reads dW/du = A(u) W du + noise with

    A = N − K + ½(1 + η²) P,   N = β L⁻¹ F L,   P = β L⁻¹ D L⁻ᵀ,   K = L⁻¹ L′

(K lower triangular with K + Kᵀ = L⁻¹ Σ′ L⁻ᵀ, Σ′ = β (F Σ + Σ Fᵀ + D)). The symmetric part
of A is ½ η² P, so for η = 0 the flow U(s, t) = 𝒯exp ∫_t^s A du of W is a rotation and for
η > 0 a contraction whose deficit is made up by the noise. The step t → s is therefore

    x̂₀ = w_t (z_t − L_t ε),   w_t = ψ_tᵀ Σ_t⁻¹ / (ψ_tᵀ Σ_t⁻¹ ψ_t)   (the data prediction)
    z_s = ψ_s x̂₀ + L_s U L_t⁻¹ (z_t − ψ_t x̂₀) + L_s (I − U Uᵀ)^{1/2} ξ,

exact for point-mass data (x̂₀ frozen over the step, as DDIM freezes it) and first order in
general. On VP (k = 1) U = (SNR_t / SNR_s)^{η²/2}: η = 0 is DDIM exactly, η = 1 is the
DDPM posterior step. For k = 2 the rotation U is what distinguishes this step from the
ε-frozen exponential integrator (``conjugate`` with B = 0), which is exact for point-mass
data only on VP. ``U`` is a product of fourth-order Magnus steps uniform in log u (where A ∝ 1/u near t_min is
smooth), in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes import LinearProcess, f64, sqrtm_psd
from .base import add_denoise, grid_for, steps_for
from .coefficients import data_prediction_weights
from .plan import Plan


def whitened_generator(process: LinearProcess, u: Tensor, eta: float) -> Tensor:
    """A(u) = N − K + ½(1 + η²) P of the whitened residual W = L_u⁻¹ (z − ψ_u x₀), (..., k, k)."""
    m = process.marginal(u)
    beta = process.beta(u)[..., None, None]
    F, D = process.F_, process.D_
    L_inv = m.L_invT.transpose(-1, -2)
    dSigma = beta * (F @ m.cov + m.cov @ F.T + D)
    S = L_inv @ dSigma @ m.L_invT
    K = torch.tril(S, -1) + 0.5 * torch.diag_embed(torch.diagonal(S, dim1=-2, dim2=-1))
    N = beta * L_inv @ F @ m.L
    P = beta * L_inv @ D @ m.L_invT
    return N - K + 0.5 * (1 + eta**2) * P


def whitened_flow(process: LinearProcess, ts: Tensor, eta: float, substeps: int | None = None,
                  forcing=None):
    """U(t_{i+1}, t_i) for a decreasing grid ts: the flow of W over each step, (steps, k, k).

    Fourth-order Magnus steps in v = log u (dW/dv = u A(u) W), ``substeps`` per grid step (by
    default about 1024 in all: 16 against 128 differ by < 4e-7 at 10 steps on PSLD and CLD).
    With ``forcing`` (u -> f(u), shape (..., k)) it solves dW/du = A W + f(u) c for a constant c
    instead and returns (U, Q), W_s = U W_t + Q c: the flow of the augmented system [[A, f], [0, 0]]."""
    substeps = substeps or max(4, 1024 // (len(ts) - 1))
    v_t, v_s = torch.log(ts[:-1]), torch.log(ts[1:])
    h = (v_s - v_t) / substeps  # negative: time runs backward
    c = torch.tensor([0.5 - 3**0.5 / 6, 0.5 + 3**0.5 / 6], dtype=f64)
    starts = v_t[:, None] + h[:, None] * torch.arange(substeps, dtype=f64)  # (steps, substeps)
    u = torch.exp(starts[..., None] + h[:, None, None] * c)  # the two Gauss nodes of each sub-step
    A = whitened_generator(process, u, eta)
    if forcing is not None:
        k = A.shape[-1]
        A = torch.cat([torch.cat([A, forcing(u)[..., None]], -1), torch.zeros(*A.shape[:-2], 1, k + 1, dtype=f64)], -2)
    A = u[..., None, None] * A  # (steps, substeps, 2, k', k')
    A1, A2 = A[:, :, 0], A[:, :, 1]
    hh = h[:, None, None, None]
    omega = 0.5 * hh * (A1 + A2) - (3**0.5 / 12) * hh**2 * (A1 @ A2 - A2 @ A1)
    E = torch.linalg.matrix_exp(omega)
    U = E[:, 0]
    for j in range(1, substeps):
        U = E[:, j] @ U
    if forcing is None:
        return U
    return U[:, :-1, :-1], U[:, :-1, -1]


def _step(process: LinearProcess, ts: Tensor, eta: float):
    """The pieces of the step t → s shared by the one-step and the multistep forms."""
    mt, ms = process.marginal(ts[:-1]), process.marginal(ts[1:])
    w = data_prediction_weights(process, ts[:-1])  # (steps, 1, k)
    U = whitened_flow(process, ts, eta)
    Phi = ms.L @ U @ mt.L_invT.transpose(-1, -2)  # L_s U L_t⁻¹
    I = torch.eye(process.k, dtype=f64)
    noise = None if eta == 0 else ms.L @ sqrtm_psd(I - U @ U.transpose(-1, -2))
    return mt, ms, w, Phi, noise


def gddim(process: LinearProcess, ts: Tensor, eta: float = 0.0):
    """Data-prediction (gDDIM) step with noise scale η ≥ 0, exact for point-mass data.
    Order 1, 1 NFE per step; η = 0 deterministic, η = 1 the reverse SDE's own noise.

    x̂₀ = w_t (z_t − L_t ε);  z_s = ψ_s x̂₀ + L_s U L_t⁻¹ (z_t − ψ_t x̂₀) + L_s (I − U Uᵀ)^{1/2} ξ
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    mt, ms, w, Phi, noise = _step(process, ts, eta)
    c = ms.psi[..., None] - Phi @ mt.psi[..., None]  # ψ_s − Φ ψ_t
    return Phi + c @ w, -c @ w @ mt.L, noise


def gddim_s(process: LinearProcess, ts: Tensor, eta: float = 1.0):
    """The data-prediction step with the reverse SDE's noise (η = 1 by default). Weak order 1,
    1 NFE per step; see :func:`gddim`."""
    return gddim(process, ts, eta)


TIME_VARIABLES = ("t", "logsnr")


def time_variable(process: LinearProcess, u: Tensor, tau: str) -> tuple[Tensor, Tensor]:
    """(τ(u), dτ/du) of the variable in which the multistep form holds x̂₀ linear: 't', or
    'logsnr' = ½ log(ψ_x² / Σ_xx), the data block's log signal-to-noise ratio (VP: log α/σ)."""
    if tau == "t":
        return u, torch.ones_like(u)
    if tau != "logsnr":
        raise ValueError(f"tau must be one of {TIME_VARIABLES}, got {tau!r}")
    m = process.marginal(u)
    beta = process.beta(u)
    F, D = process.F_, process.D_
    psi_x, var_x = m.psi[..., 0], m.cov[..., 0, 0]
    dpsi_x = beta * (m.psi @ F.T)[..., 0]
    dvar_x = beta * (F @ m.cov + m.cov @ F.T + D)[..., 0, 0]
    return 0.5 * torch.log(psi_x**2 / var_x), dpsi_x / psi_x - 0.5 * dvar_x / var_x


def gddim_2m_plan(process: LinearProcess, nfe: int, grid, denoise: bool, *, eta: float = 0.0,
                  tau: str = "t", name: str = "gddim-2m") -> Plan:
    """Two-step data prediction: x̂₀ held linear in τ through the last two predictions and
    integrated exactly with the point-mass flow. Order 2, 1 NFE per step (the first step is
    :func:`gddim`'s).

    With W = L⁻¹ (z − ψ x̂₀(u)) and x̂₀(u) = x̂₀_t + (τ(u) − τ_t) D₁, D₁ = (x̂₀_t − x̂₀_p)/(τ_t − τ_p),
    W_s = U W_t + Q D₁ with Q = ∫_t^s U(s, u) (−L_u⁻¹ ψ_u τ′(u)) du, so

        z_s = ψ_s x̂₀_t + Φ (z_t − ψ_t x̂₀_t) + [ψ_s (τ_s − τ_t) + L_s Q] D₁ + L_s (I − U Uᵀ)^{1/2} ξ.

    x̂₀_p comes from the register r = z_p − L_p ε_p saved at the previous step.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    steps = steps_for(nfe, 1, 0, denoise, name)
    ts = grid_for(process, steps, grid)
    mt, ms, w, Phi, noise = _step(process, ts, eta)
    psi_t, psi_s = mt.psi[..., None], ms.psi[..., None]

    def forcing(u):
        m = process.marginal(u)
        return -(m.L_invT.transpose(-1, -2) @ m.psi[..., None])[..., 0] * time_variable(process, u, tau)[1][..., None]

    _, Q = whitened_flow(process, ts, eta, forcing=forcing)
    tau_ts = time_variable(process, ts, tau)[0]
    G = psi_s * (tau_ts[1:] - tau_ts[:-1])[:, None, None] + ms.L @ Q[..., None]  # (steps, k, 1)
    c1 = psi_s - Phi @ psi_t
    plan = Plan(process.k)
    first = plan.coeffs(Phi + c1 @ w, -c1 @ w @ mt.L, noise)
    d_tau = torch.ones_like(tau_ts[:-1])
    d_tau[1:] = tau_ts[1:-1] - tau_ts[:-2]
    g = G / d_tau[:, None, None]
    c2 = c1 + g
    w_prev = torch.cat([torch.zeros_like(w[:1]), w[:-1]])
    multi = plan.coeffs(Phi + c2 @ w, -c2 @ w @ mt.L, noise, -g @ w_prev)
    save = plan.coeffs(torch.eye(process.k, dtype=f64).expand_as(mt.L), -mt.L)
    times = ts.tolist()
    for i in range(steps):
        plan.eval(times[i], at="t")
        saves = i < steps - 1
        plan.lin(times[i + 1], first if i == 0 else multi, i, save=save if saves else None, step=i,
                 label=("gddim step t→s" if i == 0 else "2-step t→s (x̂₀ linear in τ through x̂₀_p)")
                 + (" · r ← z − L ε" if saves else ""))
    if denoise:
        add_denoise(plan, process, times[-1])
    return plan

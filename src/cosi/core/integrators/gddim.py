"""Data-prediction steps for every linear process: DDIM generalized to (x, m) (gDDIM).

Symbols beyond math.md are listed in docs/integrators.md ("Symbols"). With the forward drift
(f, g²) = (βF, βD) of :meth:`LinearProcess.drift_matrices`: for data concentrated at one point x₀
the score is linear, s(z, u) = −Σ_u⁻¹ (z − ψ_u x₀) (ψ_u = Ψ(u, 0)[:, 0], Σ_u the perturbation
covariance), and the reverse-time family of math.md §1,

    dz = [f z + ½(1 + η²) g² Σ_u⁻¹ (z − ψ_u x₀)] du + η g dw̄,

is a linear SDE that can be solved exactly. In whitened coordinates W = L_u⁻¹ (z − ψ_u x₀)
it reads dW/du = Ω(u) W du + noise with the whitened generator

    Ω = Ω_f − Ω_L + ½(1 + η²) Ω_g,   Ω_f = L⁻¹ f L,   Ω_g = L⁻¹ g² L⁻ᵀ,   Ω_L = L⁻¹ L′

(Ω_L lower triangular with Ω_L + Ω_Lᵀ = L⁻¹ Σ′ L⁻ᵀ, Σ′ = f Σ + Σ fᵀ + g²). The symmetric part
of Ω is ½ η² Ω_g, so for η = 0 the flow U(s, t) = 𝒯exp ∫_t^s Ω du of W is a rotation and for
η > 0 a contraction whose deficit is made up by the noise. The step t → s is therefore

    x̂₀ = w_t (z_t − L_t ε),   w_t = ψ_tᵀ Σ_t⁻¹ / (ψ_tᵀ Σ_t⁻¹ ψ_t)   (the data prediction)
    z_s = ψ_s x̂₀ + R (z_t − ψ_t x̂₀) + L_s (I − U Uᵀ)^{1/2} ξ,      R = L_s U L_t⁻¹,

exact for point-mass data (x̂₀ frozen over the step, as DDIM freezes it) and first order in
general. On a variance-preserving process (k = 1) U = (SNR_t / SNR_s)^{η²/2}: η = 0 is DDIM
exactly, η = 1 is the DDPM posterior step; :func:`ddim` is this step there. For k = 2 the rotation
U is what distinguishes this step from the ε-frozen exponential integrator (``conjugate`` with
B = 0), which is exact for point-mass data only on VP. ``U`` is a product of fourth-order Magnus
steps uniform in log u (where Ω ∝ 1/u near t_min is smooth), in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes import LinearProcess, f64, sqrtm_psd
from .base import add_denoise, grid_for, steps_for
from .coefficients import data_prediction_weights
from .plan import Plan


# Magnus sub-steps per grid, in all (at least MIN_MAGNUS_SUBSTEPS per grid step): U is smooth in
# log u, and fourth-order Magnus at 16 against 128 sub-steps per step differs by < 4e-7 at 10 steps on
# PSLD and CLD; 1024 in all keeps U's error far below any sampler's while costing ~10 ms per grid.
MAGNUS_SUBSTEPS = 1024
MIN_MAGNUS_SUBSTEPS = 4


def whitened_generator(process: LinearProcess, u: Tensor, eta: float) -> Tensor:
    """Ω(u) = Ω_f − Ω_L + ½(1 + η²) Ω_g of the whitened residual W = L_u⁻¹ (z − ψ_u x₀), (..., k, k)."""
    m = process.marginal(u)
    f, g2 = process.drift_matrices(u)
    L_inv = m.L_invT.transpose(-1, -2)
    dSigma = f @ m.cov + m.cov @ f.transpose(-1, -2) + g2
    S = L_inv @ dSigma @ m.L_invT  # = Ω_L + Ω_Lᵀ
    Om_L = torch.tril(S, -1) + 0.5 * torch.diag_embed(torch.diagonal(S, dim1=-2, dim2=-1))
    Om_f = L_inv @ f @ m.L
    Om_g = L_inv @ g2 @ m.L_invT
    return Om_f - Om_L + 0.5 * (1 + eta**2) * Om_g


def whitened_flow(process: LinearProcess, ts: Tensor, eta: float, substeps: int | None = None,
                  forcing=None):
    """U(t_{i+1}, t_i) for a decreasing grid ts: the flow of W over each step, (steps, k, k).

    Fourth-order Magnus steps in v = log u (dW/dv = u Ω(u) W), ``substeps`` per grid step (by
    default MAGNUS_SUBSTEPS in all). With ``forcing`` (u -> c(u), shape (..., k)) it solves
    dW/du = Ω W + c(u) δ for a constant δ instead and returns (U, Y), W_s = U W_t + Y δ: the flow of
    the augmented system [[Ω, c], [0, 0]]."""
    substeps = substeps or max(MIN_MAGNUS_SUBSTEPS, MAGNUS_SUBSTEPS // (len(ts) - 1))
    v_t, v_s = torch.log(ts[:-1]), torch.log(ts[1:])
    h = (v_s - v_t) / substeps  # negative: time runs backward
    c = torch.tensor([0.5 - 3**0.5 / 6, 0.5 + 3**0.5 / 6], dtype=f64)
    starts = v_t[:, None] + h[:, None] * torch.arange(substeps, dtype=f64)  # (steps, substeps)
    u = torch.exp(starts[..., None] + h[:, None, None] * c)  # the two Gauss nodes of each sub-step
    Om = whitened_generator(process, u, eta)
    if forcing is not None:
        k = Om.shape[-1]
        Om = torch.cat([torch.cat([Om, forcing(u)[..., None]], -1),
                        torch.zeros(*Om.shape[:-2], 1, k + 1, dtype=f64)], -2)
    Om = u[..., None, None] * Om  # (steps, substeps, 2, k', k')
    Om1, Om2 = Om[:, :, 0], Om[:, :, 1]
    hh = h[:, None, None, None]
    Theta = 0.5 * hh * (Om1 + Om2) - (3**0.5 / 12) * hh**2 * (Om1 @ Om2 - Om2 @ Om1)  # the Magnus exponent
    E = torch.linalg.matrix_exp(Theta)
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
    R = ms.L @ U @ mt.L_invT.transpose(-1, -2)  # L_s U L_t⁻¹: the residual map
    I = torch.eye(process.k, dtype=f64)
    noise = None if eta == 0 else ms.L @ sqrtm_psd(I - U @ U.transpose(-1, -2))
    return mt, ms, w, R, noise


def gddim(process: LinearProcess, ts: Tensor, eta: float = 0.0):
    """Data-prediction (gDDIM) step with noise scale η ≥ 0, exact for point-mass data.
    Order 1, 1 NFE per step; η = 0 deterministic, η = 1 the reverse SDE's own noise.

    x̂₀ = w_t (z_t − L_t ε);  z_s = ψ_s x̂₀ + L_s U L_t⁻¹ (z_t − ψ_t x̂₀) + L_s (I − U Uᵀ)^{1/2} ξ
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    mt, ms, w, R, noise = _step(process, ts, eta)
    c = ms.psi[..., None] - R @ mt.psi[..., None]  # ψ_s − R ψ_t
    return R + c @ w, -c @ w @ mt.L, noise


def ddim(process: LinearProcess, ts: Tensor, eta: float = 0.0):
    """DDIM (Song et al. 2021) on a variance-preserving process: :func:`gddim`'s step, with η of
    math.md §1 (η = 0: deterministic DDIM; η = 1: the DDPM posterior, Song's η_DDIM = 1). Between,
    Song's η_DDIM of the same step is η_DDIM² = (1 − r^{η²}) / (1 − r), r = SNR_t / SNR_s (docs/integrators.md).
    Order 1, 1 NFE per step."""
    if not process.variance_preserving:
        raise ValueError(f"ddim needs a variance-preserving one-block process; this is {process.name} "
                         f"(k={process.k}); use gddim")
    return gddim(process, ts, eta)


def gddim_s(process: LinearProcess, ts: Tensor, eta: float = 1.0):
    """The data-prediction step with the reverse SDE's noise (η = 1 by default). Weak order 1,
    1 NFE per step; see :func:`gddim`."""
    return gddim(process, ts, eta)


TIME_VARIABLES = ("t", "logsnr")


def time_variable(process: LinearProcess, u: Tensor, tau: str) -> tuple[Tensor, Tensor]:
    """(τ(u), dτ/du) of the variable in which the multistep form holds x̂₀ linear: 't', or
    'logsnr' = λ(u) = log(ψ_x² / Σ_xx), the data block's log-SNR of :meth:`LinearProcess.log_snr`
    (the grids' λ; x̂₀ linear in τ is unchanged by an affine change of τ)."""
    if tau == "t":
        return u, torch.ones_like(u)
    if tau != "logsnr":
        raise ValueError(f"tau must be one of {TIME_VARIABLES}, got {tau!r}")
    return process.log_snr(u), process.log_snr_derivative(u)


def gddim_2m_plan(process: LinearProcess, nfe: int, grid, denoise: bool, *, eta: float = 0.0,
                  tau: str = "t", name: str = "gddim-2m") -> Plan:
    """Two-step data prediction: x̂₀ held linear in τ through the last two predictions and
    integrated exactly with the point-mass flow. Order 2, 1 NFE per step (the first step is
    :func:`gddim`'s).

    With W = L⁻¹ (z − ψ x̂₀(u)) and x̂₀(u) = x̂₀_t + (τ(u) − τ_t) δ, δ = (x̂₀_t − x̂₀_p)/(τ_t − τ_p),
    W_s = U W_t + Y δ with Y = ∫_t^s U(s, u) (−L_u⁻¹ ψ_u τ′(u)) du, so

        z_s = ψ_s x̂₀_t + R (z_t − ψ_t x̂₀_t) + [ψ_s (τ_s − τ_t) + L_s Y] δ + L_s (I − U Uᵀ)^{1/2} ξ.

    x̂₀_p comes from the register r = z_p − L_p ε_p saved at the previous step.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    steps = steps_for(nfe, 1, 0, denoise, name)
    ts = grid_for(process, steps, grid)
    mt, ms, w, R, noise = _step(process, ts, eta)
    psi_t, psi_s = mt.psi[..., None], ms.psi[..., None]

    def forcing(u):
        m = process.marginal(u)
        return -(m.L_invT.transpose(-1, -2) @ m.psi[..., None])[..., 0] * time_variable(process, u, tau)[1][..., None]

    _, Y = whitened_flow(process, ts, eta, forcing=forcing)
    tau_ts = time_variable(process, ts, tau)[0]
    C_delta = psi_s * (tau_ts[1:] - tau_ts[:-1])[:, None, None] + ms.L @ Y[..., None]  # (steps, k, 1): δ's coefficient
    c1 = psi_s - R @ psi_t
    plan = Plan(process.k)
    first = plan.coeffs(R + c1 @ w, -c1 @ w @ mt.L, noise)
    d_tau = torch.ones_like(tau_ts[:-1])
    d_tau[1:] = tau_ts[1:-1] - tau_ts[:-2]
    g = C_delta / d_tau[:, None, None]
    c2 = c1 + g
    w_prev = torch.cat([torch.zeros_like(w[:1]), w[:-1]])
    multi = plan.coeffs(R + c2 @ w, -c2 @ w @ mt.L, noise, -g @ w_prev)
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

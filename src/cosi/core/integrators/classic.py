"""Baselines on the reverse-time family of math.md §1 (step t → s, h = s − t < 0):

    dz = β(t) [F z + ½(1 + η²) D L_t⁻ᵀ ε_θ(z, t)] dt + η sqrt(β(t)) G dw̄
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes import LinearProcess, sqrtm_psd
from .coefficients import eye


def _step_parts(process: LinearProcess, ts: Tensor):
    t, s = ts[:-1], ts[1:]
    h = (s - t)[:, None, None]
    beta = process.beta(t)[:, None, None]
    DLinvT = process.D_ @ process.marginal(t).L_invT
    return h, beta, DLinvT


def euler(process: LinearProcess, ts: Tensor):
    """Euler on the probability-flow ODE (η = 0). Order 1, 1 NFE per step.

    z_s = z_t + h β_t [F z_t + ½ D L_t⁻ᵀ ε_t]
    """
    h, beta, DLinvT = _step_parts(process, ts)
    return eye(process.k) + h * beta * process.F_, 0.5 * h * beta * DLinvT, None


def em(process: LinearProcess, ts: Tensor, eta: float = 1.0):
    """Euler–Maruyama on the reverse SDE with noise scale η (η = 1: the reverse SDE).
    Weak order 1, 1 NFE per step.

    z_s = z_t + h β_t [F z_t + ½(1 + η²) D L_t⁻ᵀ ε_t] + η sqrt(|h| β_t) G ξ
    """
    h, beta, DLinvT = _step_parts(process, ts)
    Cz = eye(process.k) + h * beta * process.F_
    Ce = 0.5 * (1 + eta**2) * h * beta * DLinvT
    Cn = eta * (h.abs() * beta).sqrt() * sqrtm_psd(process.D_)
    return Cz, Ce, Cn


def ddim(process: LinearProcess, ts: Tensor, eta: float = 0.0):
    """DDIM (Song et al. 2021) on VP, with α_t = e^{−b(t)/2}, σ_t² = 1 − α_t². 1 NFE per step.

    x̂₀ = (x_t − σ_t ε)/α_t;  c = η (σ_s/σ_t) sqrt(1 − α_t²/α_s²);
    x_s = α_s x̂₀ + sqrt(σ_s² − c²) ε + c ξ.   η = 0 is deterministic (order 1).
    """
    if process.name != "vp":
        raise ValueError(f"ddim is defined for VP only, not {process.name}; use 'gddim' (its generalization "
                         "to every process, exact for point-mass data) or 'gddim-2m'")
    mt, ms = process.marginal(ts[:-1]), process.marginal(ts[1:])
    a_t, a_s = mt.psi[:, 0], ms.psi[:, 0]
    s_t, s_s = mt.L[:, 0, 0], ms.L[:, 0, 0]
    c = eta * (s_s / s_t) * torch.sqrt((1 - (a_t / a_s) ** 2).clamp_min(0))
    Cz = (a_s / a_t).view(-1, 1, 1)
    Ce = (torch.sqrt((s_s**2 - c**2).clamp_min(0)) - a_s * s_t / a_t).view(-1, 1, 1)
    Cn = c.view(-1, 1, 1) if eta > 0 else None
    return Cz, Ce, Cn

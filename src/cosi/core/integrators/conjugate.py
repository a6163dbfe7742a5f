"""Conjugate integrators (math.md §2).

With a constant k×k matrix B, A_t solving dA/dt = A (B − β(t) F), A(t_ref) = I, and
Φ′(t) = ½ β(t) A_t D L_t⁻ᵀ, the conjugate variable ẑ = A_t z obeys

    dẑ/dt = A_t B A_t⁻¹ ẑ + Φ′(t) ε_θ(A_t⁻¹ ẑ, t),

and the conjugate integrator is Euler's method on ẑ (step t → s, h = s − t):

    ẑ_s = ẑ_t + h A_t B A_t⁻¹ ẑ_t + (Φ_s − Φ_t) ε_θ(z_t, t),    z_s = A_s⁻¹ ẑ_s,

i.e. z_s = A_s⁻¹ A_t (I + h B) z_t + A_s⁻¹ (Φ_s − Φ_t) ε_t. B = 0 is the exponential
integrator (DDIM on VP, gDDIM/DEIS-1 on CLD); λ-DDIM-I takes B = λ I, λ-DDIM-II B = λ 𝟙.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes import LinearProcess, f64
from .coefficients import as_matrix, conjugate_A, eye, phi_increments


def conjugate(process: LinearProcess, ts: Tensor, B=0.0):
    """Conjugate integrator with constant B. Order 1, 1 NFE per step (t_ref = t_min)."""
    B = as_matrix(B, process.k)
    t_ref = float(ts[-1])
    A = conjugate_A(process, B, ts, t_ref)
    A_inv_s = torch.linalg.inv(A[1:])
    h = (ts[1:] - ts[:-1])[:, None, None]
    Cz = A_inv_s @ A[:-1] @ (eye(process.k) + h * B)
    Ce = A_inv_s @ phi_increments(process, B, ts, t_ref)
    return Cz, Ce, None


def lambda_ddim_1(process: LinearProcess, ts: Tensor, lam: float = 0.0):
    """λ-DDIM-I: the conjugate integrator with B = λ I. Order 1, 1 NFE per step."""
    return conjugate(process, ts, B=float(lam) * eye(process.k))


def lambda_ddim_2(process: LinearProcess, ts: Tensor, lam: float = 0.0):
    """λ-DDIM-II: the conjugate integrator with B = λ 𝟙 (all-ones). Order 1, 1 NFE per step."""
    return conjugate(process, ts, B=float(lam) * torch.ones(process.k, process.k, dtype=f64))

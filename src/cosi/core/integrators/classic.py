"""Baselines on the reverse-time family of math.md §1 (step t → s, h = s − t < 0), written with the
process's drift (f, g²) = (βF, βD) of :meth:`LinearProcess.drift_matrices`:

    dz = [f(t) z + ½(1 + η²) g²(t) L_t⁻ᵀ ε_θ(z, t)] dt + η g(t) dw̄

(DDIM is the data-prediction step of :mod:`.gddim` on a variance-preserving process.)
"""

from __future__ import annotations

from torch import Tensor

from ..processes import LinearProcess, sqrtm_psd
from .base import add_denoise, grid_for, steps_for
from .coefficients import eye
from .plan import Plan


def _step_parts(process: LinearProcess, ts: Tensor):
    t, s = ts[:-1], ts[1:]
    h = (s - t)[:, None, None]
    f, g2 = process.drift_matrices(t)
    return h, f, g2, g2 @ process.marginal(t).L_invT


def euler(process: LinearProcess, ts: Tensor):
    """Euler on the probability-flow ODE (η = 0). Order 1, 1 NFE per step.

    z_s = z_t + h [f_t z_t + ½ g²_t L_t⁻ᵀ ε_t]
    """
    h, f, _, g2LinvT = _step_parts(process, ts)
    return eye(process.k) + h * f, 0.5 * h * g2LinvT, None


def em(process: LinearProcess, ts: Tensor, eta: float = 1.0):
    """Euler–Maruyama on the reverse SDE with noise scale η (η = 1: the reverse SDE).
    Weak order 1, 1 NFE per step.

    z_s = z_t + h [f_t z_t + ½(1 + η²) g²_t L_t⁻ᵀ ε_t] + η (|h| g²_t)^{1/2} ξ
    """
    h, f, g2, g2LinvT = _step_parts(process, ts)
    Cz = eye(process.k) + h * f
    Ce = 0.5 * (1 + eta**2) * h * g2LinvT
    Cn = eta * sqrtm_psd(h.abs() * g2)
    return Cz, Ce, Cn


def heun_plan(process: LinearProcess, nfe: int, grid, denoise: bool, *, name: str = "heun") -> Plan:
    """Heun's method on the probability-flow ODE (EDM's Algorithm 1 without churn; the last step is
    Heun's too, since t_min > 0). Order 2, 2 NFE per step. With d(z, u) = f_u z + S_u ε(z, u),
    S_u = ½ g²_u L_u⁻ᵀ:

        z̃ = z_t + h d(z_t, t),    z_s = z_t + ½ h [d(z_t, t) + d(z̃, s)]

    The second update reads the register r = (I + ½ h f_t) z_t + ½ h S_t ε_t saved by the first:
    z_s = r + ½ h (f_s z̃ + S_s ε(z̃, s)).
    """
    steps = steps_for(nfe, 2, 0, denoise, name)
    ts = grid_for(process, steps, grid)
    h = (ts[1:] - ts[:-1])[:, None, None]
    f_t, g2_t = process.drift_matrices(ts[:-1])
    f_s, g2_s = process.drift_matrices(ts[1:])
    S_t = 0.5 * g2_t @ process.marginal(ts[:-1]).L_invT
    S_s = 0.5 * g2_s @ process.marginal(ts[1:]).L_invT
    I = eye(process.k).expand_as(f_t)
    plan = Plan(process.k)
    predictor = plan.coeffs(I + h * f_t, h * S_t)
    save = plan.coeffs(I + 0.5 * h * f_t, 0.5 * h * S_t)
    corrector = plan.coeffs(0.5 * h * f_s, 0.5 * h * S_s, None, I)
    times = ts.tolist()
    for i in range(steps):
        plan.eval(times[i])
        plan.lin(times[i + 1], predictor, i, save=save)
        plan.eval(times[i + 1])
        plan.lin(times[i + 1], corrector, i)
    if denoise:
        add_denoise(plan, process, times[-1])
    return plan

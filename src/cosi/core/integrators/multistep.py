"""Multistep data prediction of any order for every linear process, with an optional
corrector that costs no network call (UniPC's UniC, generalized to block processes).

gddim-2m (:func:`cosi.core.integrators.gddim.gddim_2m_plan`) holds x̂₀ linear in τ over a step
and integrates the point-mass flow exactly. Here x̂₀ is the polynomial in τ through the last q
predictions x̂₀_j = w_j (z_j − L_j ε_j), written around the step's start t,

    x̂₀(u) = Σ_m (τ(u) − τ_t)^m M_m,   M_m = Σ_j a_jm x̂₀_j   (a = the inverse Vandermonde of the τ_j − τ_t),

and W = L⁻¹ (z − ψ x̂₀(u)) obeys dW/du = A W − L⁻¹ ψ Σ_{m≥1} m (τ − τ_t)^{m−1} τ′ M_m, so

    z_s = Φ z_t + Σ_j b_j x̂₀_j + L_s (I − U Uᵀ)^{1/2} ξ,
    b_j = (ψ_s − Φ ψ_t) a_j0 + Σ_{m≥1} G_m a_jm,   G_m = ψ_s (τ_s − τ_t)^m + L_s Q_m,
    Q_m = ∫_t^s U(s, u) (−L_u⁻¹ ψ_u m (τ(u) − τ_t)^{m−1} τ′(u)) du,

with Φ = L_s U L_t⁻¹ as in gddim; each Q_m is the forcing column of an augmented whitened flow
(:func:`cosi.core.integrators.gddim.whitened_flow`). Exact for x̂₀ a polynomial of degree < q in τ;
order q, 1 NFE per step. The first steps use the predictions there are (order 1, 2, …).

Corrector (``corrector=True``): after the call at s (made at the predicted state) the step t → s
is redone with the polynomial through x̂₀_s too (degree q, order q + 1 — UniPC's claim),

    z_s ← z_s + Σ_j (b_j^c − b_j) x̂₀_j        (Φ z_t cancels: the same start),

and the next step starts from the corrected state with the prediction x̂₀_s of the call (UniPC's
choice). No call is added, and there is none after the last step.

Predictions of earlier steps live in registers r_j = z_j − L_j ε_j (ring buffer, slot j mod S).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes import LinearProcess, f64
from .base import add_denoise, grid_for, steps_for
from .gddim import _step, time_variable, whitened_flow
from .plan import Plan


def forced_flows(process: LinearProcess, ts: Tensor, eta: float, tau: str, degree: int) -> list[Tensor]:
    """[Q_1, …, Q_degree], each (steps, k): the whitened flow's response to x̂₀(u) = (τ(u) − τ_t)^m
    over every step t → s of ``ts`` (see the module docstring)."""
    tau_t = time_variable(process, ts[:-1], tau)[0][:, None, None]  # the step's start, broadcast over nodes

    def column(m):
        def forcing(u):
            mu = process.marginal(u)
            tau_u, dtau = time_variable(process, u, tau)
            weight = m * (tau_u - tau_t) ** (m - 1) * dtau
            return -(mu.L_invT.transpose(-1, -2) @ mu.psi[..., None])[..., 0] * weight[..., None]
        return forcing

    return [whitened_flow(process, ts, eta, forcing=column(m))[1] for m in range(1, degree + 1)]


def interpolation_weights(taus: Tensor, nodes: list[int], i: int) -> Tensor:
    """a (len(nodes), len(nodes)): x̂₀(τ) = Σ_m (τ − τ_i)^m Σ_j a[j, m] x̂₀_j is the polynomial through
    the predictions at the grid points ``nodes`` (τ values ``taus``)."""
    d = taus[nodes] - taus[i]
    V = d[:, None] ** torch.arange(len(nodes), dtype=f64)  # V[j, m] = (τ_j − τ_i)^m
    return torch.linalg.inv(V).T


def multistep_plan(process: LinearProcess, nfe: int, grid, denoise: bool, *, order: int = 3,
                   corrector: bool = False, eta: float = 0.0, tau: str = "t", lower_order_final: bool = False,
                   name: str = "gddim-3m") -> Plan:
    """Multistep data prediction of order ``order`` (x̂₀ a polynomial in τ through the last ``order``
    calls, integrated exactly with the point-mass flow), with UniPC's corrector if ``corrector``
    (order + 1, no extra call). 1 NFE per step; the first steps use lower order, and with
    ``lower_order_final`` so do the last ones (order ≤ steps left, as DPM-Solver++).

        z_s = Φ z_t + Σ_j b_j x̂₀_j + L_s (I − U Uᵀ)^{1/2} ξ   (module docstring)
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    steps = steps_for(nfe, 1, 0, denoise, name)
    ts = grid_for(process, steps, grid)
    mt, ms, w, Phi, noise = _step(process, ts, eta)
    taus = time_variable(process, ts, tau)[0]
    h = taus[1:] - taus[:-1]
    c1 = ms.psi[..., None] - Phi @ mt.psi[..., None]  # (steps, k, 1)
    Q = forced_flows(process, ts, eta, tau, order if corrector else order - 1)
    G = [ms.psi[..., None] * h[:, None, None] ** m + ms.L @ q[..., None] for m, q in enumerate(Q, 1)]
    k = process.k
    I = torch.eye(k, dtype=f64)
    slots = order if corrector else max(order - 1, 1)

    def orders(i):
        q = min(order, i + 1)
        return min(q, steps - i) if lower_order_final else q

    def b(i, nodes):  # {point j: b_j (k, 1)} of step i with the polynomial through ``nodes``
        a = interpolation_weights(taus, nodes, i)
        return {j: c1[i] * a[n, 0] + sum(G[m - 1][i] * a[n, m] for m in range(1, len(nodes)))
                for n, j in enumerate(nodes)}

    def registers(coef, filled, here):  # C_r of the registers read, from {point j: b_j}; ``here`` stays out
        if all(j == here for j in coef):
            return None
        Cr = [torch.zeros(k, k, dtype=f64) for _ in range(min(filled, slots))]
        for j, bj in coef.items():
            if j != here:
                Cr[j % slots] = Cr[j % slots] + bj @ w[j]
        return Cr

    def save(i):  # r_i = z_i − L_i ε_i, kept while a later step reads it
        return plan.coeffs(I, -mt.L[i]) if (order > 1 or corrector) and i < steps - 1 else None

    plan = Plan(k)
    times = ts.tolist()
    nodes, coef = [], {}  # the previous step's, for its corrector
    for i in range(steps):
        plan.eval(times[i], at="t")
        if corrector and i > 0:  # redo step i − 1 through the prediction just made (no call)
            new = b(i - 1, [i] + nodes)
            delta = {j: new[j] - coef.get(j, 0) for j in new}
            bs = delta[i] @ w[i]
            corr = plan.coeffs(I + bs, -bs @ mt.L[i], None, registers(delta, i, i))
            plan.lin(times[i], corr, save=plan.coeffs(I, -mt.L[i]), slot=i % slots,
                     label="corrector: the last step again, x̂₀ through the new call")
        nodes = list(range(i, i - orders(i), -1))
        coef = b(i, nodes)
        Cn = None if noise is None else noise[i]
        if corrector and i > 0:  # x̂₀_i from its register (the call's own prediction)
            plan.lin(times[i + 1], plan.coeffs(Phi[i], None, Cn, registers(coef, i + 1, None)),
                     label=f"{len(nodes)}-point x̂₀ step t→s", step=i)
        else:
            bi = coef[i] @ w[i]
            upd = plan.coeffs(Phi[i] + bi, -bi @ mt.L[i], Cn, registers(coef, i, i))
            plan.lin(times[i + 1], upd, save=save(i), slot=i % slots, label=f"{len(nodes)}-point x̂₀ step t→s",
                     step=i)
    if denoise:
        add_denoise(plan, process, times[-1])
    return plan

"""Splitting presets as the paper's algorithms: the plan computes what a hand-written loop of the preset's
equations computes (float64, scipy's matrix exponential and Gauss–Legendre quadrature in t, nothing of cosi's integrator
code), its explain() names the sub-flows and calls in order, and the per-step callback fires once per step."""

import numpy as np
import pytest
import torch
from scipy.linalg import expm

import cosi
from cosi.core.integrators import build_plan
from cosi.core.processes import f64
from cosi.evaluation.oracle import GaussianMixture

PSLD = cosi.make_process("psld")
F, D, BETA = PSLD.F_.numpy(), PSLD.D_.numpy(), float(PSLD.beta_0)
PI = {"x": np.diag([1.0, 0.0]), "m": np.diag([0.0, 1.0])}


def GRID(steps):
    """A uniform grid from T to 0.5: far from the t^(−1/2) singularity at 0, where Gauss–Legendre in t is
    exact to rounding (cosi integrates in log t), and the explicit kicks are stable on so few steps."""
    return np.linspace(1.0, 0.5, steps + 1).tolist()


def S(u):
    """S(u) = ½ D L_u⁻ᵀ for an array of times (L_u from the process: the integrator is under test here)."""
    L = PSLD.marginal(torch.as_tensor(np.atleast_1d(u), dtype=f64)).L.numpy()
    return 0.5 * D @ np.linalg.inv(L).swapaxes(1, 2)


def integral(f, a, b, nodes=64):
    """∫_a^b f(u) du by Gauss–Legendre in u (f takes an array of times); the intervals here stay a factor ≥ 1.5
    away from the t^(−1/2) singularity at 0, where 64 nodes reach rounding."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    mid, half = (a + b) / 2, (b - a) / 2
    return half * np.einsum("q,qij->ij", w, f(mid + half * x))


def blocks(C, z):
    """A 2×2 matrix applied to every coordinate of z = (x, m)."""
    x, m = np.split(z, 2, axis=1)
    return np.concatenate([C[0, 0] * x + C[0, 1] * m, C[1, 0] * x + C[1, 1] * m], axis=1)


def euler(z, eps, a, b, block, F_flow, c=1.0):
    """z_b = z + (b − a) β [F_flow z + c Π S(a) ε]: S at the sub-flow's start."""
    return z + blocks((b - a) * BETA * F_flow, z) + blocks((b - a) * c * BETA * PI[block] @ S(a)[0], eps)


def conjugate(z, eps, a, b, block, F_flow, lam, c=1.0):
    """math.md §2 on the sub-flow alone, B = λΠ: z_b = A_b⁻¹ (I + (b − a) λΠ) z + A_b⁻¹ ∫_a^b A_u β c Π S(u) du ε,
    A_u = expm((u − a)(λΠ − β F_flow))."""
    Pi = PI[block]
    Omega = lam * Pi - BETA * F_flow
    A_b_inv = expm(-(b - a) * Omega)
    phi = integral(lambda u: expm((u - a)[:, None, None] * Omega) @ (BETA * c * Pi @ S(u)), a, b)
    return blocks(A_b_inv @ (np.eye(2) + (b - a) * lam * Pi), z) + blocks(A_b_inv @ phi, eps)


def ou(z, xi, a, b, etas):
    """O with F_O = diag F, backward from a to b, Δb = β (a − b): per block, mean e^{−Δb f} and variance
    η² D_ii (1 − e^{−2Δb f}) / (2f), f = F_ii (a one-dimensional Ornstein–Uhlenbeck transition)."""
    db, f = BETA * (a - b), np.diag(F)
    var = np.array(etas) ** 2 * np.diag(D) * (1 - np.exp(-2 * db * f)) / (2 * f)
    return blocks(np.diag(np.exp(-db * f)), z) + blocks(np.diag(np.sqrt(var)), xi)


def oracle(d=4, seed=2):
    eps = GaussianMixture.random(d=d, components=2, seed=seed).eps_model(PSLD)
    return lambda z, t: eps(torch.from_numpy(z), torch.full((len(z),), t, dtype=f64)).numpy(), eps


def test_csps_d_plan_is_the_hand_written_loop_of_its_equations():
    """csps-d, one step t → s = t + h: A[conjugate, λ](h/2); ε ← ε_θ(z, t + h/2); B[euler](h) with S(t);
    A[conjugate, λ](h/2); the first A of each step reuses the previous step's ε (one extra call at T)."""
    steps, lam = 6, -3.0
    eps_np, eps = oracle()
    z0 = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), dtype=f64)
    ts = GRID(steps)
    got = cosi.sample(eps, PSLD, "csps-d", steps + 1, z_T=z0, project=False, grid=ts).z.numpy()
    z = z0.numpy()
    e = eps_np(z, ts[0])
    for t, s in zip(ts[:-1], ts[1:]):
        h = s - t
        z = conjugate(z, e, t, t + h / 2, "x", PI["x"] @ F, lam)
        e = eps_np(z, t + h / 2)
        z = euler(z, e, t, t + h, "m", PI["m"] @ F)
        z = conjugate(z, e, t + h / 2, t + h, "x", PI["x"] @ F, lam)
    assert np.abs(got - z).max() < 1e-10, np.abs(got - z).max()


def test_csps_s_plan_is_the_hand_written_loop_of_its_equations():
    """csps-s (reduced OBAB), one step t → t + h: O(h) with noise ξ; B[euler](h/2) with S(t); A[conjugate, λ](h);
    ε ← ε_θ(z, t + h); B[euler](h/2) with S(t + h/2). Friction in O; the couplings in A and B; ε terms scaled by
    1 + η² (B) and 1 + η_x² (A)."""
    steps, eta, eta_x, lam = 6, 0.7, 0.4, 0.5
    ts = GRID(steps)
    eps_np, eps = oracle(seed=3)
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(4, 8, generator=gen, dtype=f64)
    xis = torch.randn(steps, 4, 8, generator=gen, dtype=f64)
    got = cosi.sample(eps, PSLD, "csps-s", steps + 1, z_T=z0, project=False, eta=eta, eta_x=eta_x, lam=lam,
                      grid=ts, noise=lambda i, z: xis[i]).z.numpy()
    F_c = F - np.diag(np.diag(F))  # what A and B keep: the couplings F₁₂ m and F₂₁ x
    z = z0.numpy()
    e = eps_np(z, ts[0])
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        h = s - t
        z = ou(z, xis[i].numpy(), t, t + h, (eta_x, eta))
        z = euler(z, e, t, t + h / 2, "m", PI["m"] @ F_c, 1 + eta**2)
        z = conjugate(z, e, t, t + h, "x", PI["x"] @ F_c, lam, 1 + eta_x**2)
        e = eps_np(z, t + h)
        z = euler(z, e, t + h / 2, t + h, "m", PI["m"] @ F_c, 1 + eta**2)
    assert np.abs(got - z).max() < 1e-10, np.abs(got - z).max()


def test_explain_of_csps_d_names_its_sub_flows_and_calls_in_order():
    lines = build_plan("csps-d", PSLD, 11).explain().splitlines()
    step = ("A[conjugate, λ=-3] t→t+h/2 · ε(z, t+h/2) → projected · B[euler, S(t)] t→t+h · "
            "A[conjugate, λ=-3] t+h/2→t+h")
    assert lines == [f"step 0: ε(z, T) → projected · {step}", f"steps 1–9 (×9): {step}"]
    with_denoise = build_plan("csps-d", PSLD, 11, denoise=True, project=False).explain().splitlines()
    assert with_denoise[-1] == "step 9: ε(z, t_min) · denoise (Tweedie)"


def test_plan_ops_print_their_labels():
    plan = build_plan("gddim-2m", PSLD, 5)
    assert "2-step t→s" in repr(plan.ops[3]) and "chunk" in repr(plan.ops[3])
    assert not any(repr(op).startswith("Lin(") for op in plan.ops)
    assert str(plan.ops[0]) == "ε(z, t)"


@pytest.mark.parametrize("sampler, nfe, steps", [("csps-d", 11, 10), ("gddim-2m", 8, 8), ("roba", 6, 6)])
def test_the_callback_fires_once_per_step(sampler, nfe, steps):
    eps = GaussianMixture.random(d=4, components=2, seed=0).eps_model(PSLD)
    seen = []
    cosi.sample(eps, PSLD, sampler, nfe, shape=(3, 4), generator=torch.Generator().manual_seed(0), dtype=f64,
                callback=seen.append)
    ts = build_plan(sampler, PSLD, nfe).ops[-1].t
    assert [c["i"] for c in seen] == list(range(steps))
    assert seen[-1]["t"] == ts and seen[-1]["calls"] == nfe
    assert all(c["x0_hat"].shape == (3, 4) and c["z"].shape == (3, 8) for c in seen)
    seen.clear()
    cosi.sample(eps, PSLD, sampler, nfe + 1, shape=(3, 4), denoise=True, callback=seen.append)
    assert [c["i"] for c in seen] == list(range(steps + 1))  # the final denoising is one more step


def test_x0_hat_of_the_callback_approaches_the_data():
    """On a narrow two-point-like mixture the data prediction of the exact ε starts between the points and ends
    on one of them."""
    gmm = GaussianMixture.random(d=4, components=2, seed=0, std_range=(0.002, 0.004))
    eps = gmm.eps_model(PSLD)
    seen = []
    cosi.sample(eps, PSLD, "csps-d", 31, shape=(16, 4), generator=torch.Generator().manual_seed(0), dtype=f64,
                callback=lambda c: seen.append(c["x0_hat"]))
    means = gmm.means.reshape(2, -1)
    nearest = [torch.cdist(x0, means).min(1).values.max() for x0 in seen]
    assert nearest[-1] < 0.02 < nearest[0], nearest


def test_cosi_samplers_explain_prints_the_equations_and_the_plan():
    from typer.testing import CliRunner

    from cosi.cli.app import app

    r = CliRunner().invoke(app, ["samplers", "--explain", "csps-d", "--nfe", "6"])
    assert r.exit_code == 0, r.output
    assert "B[euler, S(t)] t→t+h:" in r.output and "m ← m + h β [F_B z + S_m(t) ε]" in r.output
    assert "λ = −3 is tuned to that choice" in r.output and "steps 1–4 (×4): A[conjugate, λ=-3]" in r.output

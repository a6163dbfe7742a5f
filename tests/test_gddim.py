"""The data-prediction step (gddim): DDIM on VP, exact for point-mass data on every process,
first order on the oracles, and its whitened flow."""

import pytest
import torch

import cosi
from cosi.core.grids import time_grid
from cosi.core.integrators.gddim import gddim, whitened_flow
from cosi.evaluation.oracle import GaussianMixture
from cosi.core.processes import f64

from conftest import mmd_and_floor, oracle_order


def song_ddim(p, ts, eta):
    """Song et al.'s DDIM step with their η_DDIM (the reference; cosi's ddim is gddim's step)."""
    mt, ms = p.marginal(ts[:-1]), p.marginal(ts[1:])
    a_t, a_s = mt.psi[:, 0], ms.psi[:, 0]
    s_t, s_s = mt.L[:, 0, 0], ms.L[:, 0, 0]
    c = eta * (s_s / s_t) * torch.sqrt((1 - (a_t / a_s) ** 2).clamp_min(0))
    Cz = (a_s / a_t).view(-1, 1, 1)
    Ce = (torch.sqrt((s_s**2 - c**2).clamp_min(0)) - a_s * s_t / a_t).view(-1, 1, 1)
    return Cz, Ce, (c.view(-1, 1, 1) if eta > 0 else None)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_gddim_equals_ddim_on_vp(eta):
    """η = 0 is DDIM; η = 1 is the DDPM posterior step, which DDIM's η = 1 also is."""
    p = cosi.make_process("vp")
    for steps in (10, 200):
        ts = time_grid(p, steps, "quadratic")
        for a, b in zip(gddim(p, ts, eta), song_ddim(p, ts, eta)):
            assert (a is None) == (b is None)
            if a is not None:
                assert (a - b).abs().max() < 1e-9


@pytest.mark.parametrize("pname", ["vp", "cld", "psld"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_gddim_is_exact_for_point_mass_data(pname, eta):
    """With data x₀ = const the exact ε is L_t⁻¹ (z − ψ_t x₀); ten coarse steps then carry the
    law N(ψ_T x₀, Σ_T) to N(ψ_min x₀, Σ_min) exactly (mean and covariance, propagated in closed
    form), which the ε-frozen exponential integrator does not do on CLD and PSLD."""
    p = cosi.make_process(pname)
    ts = time_grid(p, 10, "quadratic")
    x0 = 0.7

    def propagate(Cz, Ce, Cn):
        m = p.marginal(ts[0])
        mean, cov = m.psi * x0, m.cov.clone()
        for i in range(len(ts) - 1):
            mi = p.marginal(ts[i])
            L_inv = torch.linalg.inv(mi.L)
            A = Cz[i] + Ce[i] @ L_inv
            mean = A @ mean - Ce[i] @ L_inv @ (mi.psi * x0)
            cov = A @ cov @ A.T + (0 if Cn is None else Cn[i] @ Cn[i].T)
        end = p.marginal(ts[-1])
        return (mean - end.psi * x0).abs().max(), (cov - end.cov).abs().max()

    mean_err, cov_err = propagate(*gddim(p, ts, eta))
    assert mean_err < 1e-10 and cov_err < 1e-10
    if pname != "vp" and eta == 0:
        from cosi.core.integrators.conjugate import conjugate

        assert max(propagate(*conjugate(p, ts, B=0.0))) > 1e-3


@pytest.mark.parametrize("pname", ["cld", "psld"])
def test_whitened_flow_is_a_rotation_at_eta_zero_and_converges_at_fourth_order(pname):
    p = cosi.make_process(pname)
    ts = time_grid(p, 10, "quadratic")
    I = torch.eye(2, dtype=f64)
    U = whitened_flow(p, ts, 0.0, substeps=16)
    assert (U @ U.transpose(-1, -2) - I).abs().max() < 1e-12
    ref = whitened_flow(p, ts, 1.0, substeps=256)
    e8, e16 = ((whitened_flow(p, ts, 1.0, substeps=n) - ref).abs().max() for n in (8, 16))
    assert 10 < e8 / e16 < 24  # 2⁴ = 16
    assert (whitened_flow(p, ts, 1.0) - ref).abs().max() < 1e-8  # the default substeps


@pytest.mark.parametrize("pname", ["vp", "cld", "psld"])
@pytest.mark.parametrize("sampler,nfes,lo,hi", [("gddim", (100, 200, 400), 0.8, 1.35),
                                                ("gddim-2m", (50, 100, 200), 1.7, 2.5)])
def test_converges_to_the_probability_flow_solution_at_its_order(pname, sampler, nfes, lo, hi):
    """gddim at first order, gddim-2m at second order."""
    order, errs = oracle_order(cosi.make_process(pname), sampler, nfes)
    assert lo < order < hi, (errs, order)


@pytest.mark.parametrize("pname", ["cld", "psld"])
def test_gddim_s_reaches_the_mmd_floor(pname):
    p = cosi.make_process(pname)
    coarse, fine = (mmd_and_floor(p, "gddim-s", nfe) for nfe in (3, 400))
    assert fine["mmd"] < fine["mmd_floor"] + 4 * fine["mmd_floor_std"] < coarse["mmd"], (coarse, fine)


# ---- the two-step form ---------------------------------------------------------------------------


def point_mass_eps(process, x0: float):
    """The exact ε of data concentrated at x₀: L_t⁻¹ (z − ψ_t x₀), per data coordinate."""
    def eps(z, t):
        m = process.marginal(t.to(f64)[:1])
        blocks = z.unflatten(1, (process.k, -1)) - m.psi[0][:, None] * x0
        return torch.linalg.solve(m.L[0], blocks).flatten(1)
    return eps


@pytest.mark.parametrize("tau", ["t", "logsnr"])
def test_gddim_2m_on_vp_is_the_exact_integral_of_a_linear_data_prediction(tau):
    """VP, τ = log-SNR λ: x_s = (σ_s/σ_t) x_t + α_s (1 − e^{−h}) x̂₀_t + α_s (h − 1 + e^{−h}) D₁
    with h = λ_s − λ_t, D₁ = (x̂₀_t − x̂₀_p)/(λ_t − λ_p); τ = t: the same with the integral by
    quadrature. The loop below runs it by hand from the same start; the runner must agree."""
    from scipy.integrate import quad

    p = cosi.make_process("vp")
    n = 8
    ts = time_grid(p, n, "quadratic")
    m = p.marginal(ts)
    a, sg = m.psi[:, 0], m.L[:, 0, 0]
    lam = torch.log(a / sg)
    gmm = GaussianMixture.random(d=4, components=2, seed=2)
    eps = gmm.eps_model(p)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=f64)
    got = cosi.sample(eps, p, "gddim-2m", n, z_T=z, tau=tau, grid="quadratic").z
    prev = None
    for i in range(n):
        e = eps(z, torch.full((5,), float(ts[i]), dtype=f64))
        x0 = (z - sg[i] * e) / a[i]
        h = float(lam[i + 1] - lam[i])
        if tau == "logsnr":
            c0, c1 = 1 - torch.exp(torch.tensor(-h)), h - 1 + torch.exp(torch.tensor(-h))
            d1 = 0 if prev is None else (x0 - prev) / (lam[i] - lam[i - 1])
            z_new = sg[i + 1] / sg[i] * z + a[i + 1] * (c0 * x0 + c1 * d1)
        else:  # x_s = (σ_s/σ_t) x_t + σ_s ∫_t^s (d e^λ/du) x̂₀(u) du with x̂₀ linear in u; by parts
            E = lambda u: float(p.marginal(u).psi[0] / p.marginal(u).L[0, 0])  # noqa: E731  e^λ = α/σ
            s_, t_ = float(ts[i + 1]), float(ts[i])
            k0 = E(s_) - E(t_)
            k1 = E(s_) * (s_ - t_) - quad(E, t_, s_, epsabs=1e-14, epsrel=1e-12)[0]
            d1 = 0 if prev is None else (x0 - prev) / float(ts[i] - ts[i - 1])
            z_new = sg[i + 1] / sg[i] * z + sg[i + 1] * (k0 * x0 + k1 * d1)
        prev, z = x0, z_new
    assert (got - z).abs().max() < 1e-7, (got - z).abs().max()


@pytest.mark.parametrize("pname", ["vp", "cld", "psld"])
def test_gddim_2m_is_exact_for_point_mass_data(pname):
    """With exact ε of a point mass, x̂₀ is x₀ at every call, D₁ = 0, and the two-step form
    makes the one-step form's exact moves (which carry the law exactly, test above)."""
    p = cosi.make_process(pname)
    eps = point_mass_eps(p, 0.3)
    z_T = torch.randn(6, 3 * p.k, generator=torch.Generator().manual_seed(1), dtype=f64)
    a = cosi.sample(eps, p, "gddim", 12, z_T=z_T).z
    b = cosi.sample(eps, p, "gddim-2m", 12, z_T=z_T).z
    assert (a - b).abs().max() < 1e-8

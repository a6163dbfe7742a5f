"""VE/EDM and rectified flow as linear processes, capabilities instead of names, ddim = gddim on VP,
Heun, and one conversion from every prediction type to ε (math.md §8, docs/integrators.md)."""

import dataclasses
import math

import pytest
import torch

import cosi
from cosi.core.grids import time_grid
from cosi.core.integrators import build_plan
from cosi.core.integrators.gddim import ddim, gddim
from cosi.core.predictions import PREDICTIONS, as_eps_model, from_eps
from cosi.core.processes import f64, make_process
from cosi.evaluation.distances import endpoint_error
from cosi.evaluation.oracle import GaussianMixture, reference_solution

ONE_BLOCK = ["euler", "em", "heun", "gddim", "gddim-s", "gddim-2m", "conjugate", "lambda-ddim-1", "lambda-ddim-2"]


def test_edm_and_rf_marginals():
    t = torch.tensor([0.01, 0.5, 3.0, 80.0], dtype=f64)
    m = make_process("ve").marginal(t)
    assert torch.allclose(m.psi[:, 0], torch.ones(4, dtype=f64)) and torch.allclose(m.L[:, 0, 0], t, rtol=1e-12)
    t = torch.tensor([0.01, 0.5, 0.9], dtype=f64)
    m = make_process("rectified-flow").marginal(t)
    assert torch.allclose(m.psi[:, 0], 1 - t) and torch.allclose(m.L[:, 0, 0], t)


@pytest.mark.parametrize("name", ["vp", "edm", "rf", "psld"])
def test_drift_matrices_generate_the_marginals(name):
    """ψ′ = f ψ and Σ′ = f Σ + Σ fᵀ + g², by central differences."""
    p = make_process(name)
    t = torch.linspace(0.2, 0.8, 4, dtype=f64) * p.T
    h = 1e-5 * p.T  # central differences: O(h²) truncation, ~1e-8 absolute on PSLD's stiff drift
    mp, mm = p.marginal(t + h), p.marginal(t - h)
    m, (f, g2) = p.marginal(t), p.drift_matrices(t)
    dpsi, dcov = (mp.psi - mm.psi) / (2 * h), (mp.cov - mm.cov) / (2 * h)
    assert torch.allclose(dpsi, (f @ m.psi[..., None])[..., 0], rtol=1e-6, atol=1e-7)
    assert torch.allclose(dcov, f @ m.cov + m.cov @ f.transpose(-1, -2) + g2, rtol=1e-6, atol=1e-7)


def test_capabilities():
    assert make_process("vp").variance_preserving
    assert not any(make_process(n).variance_preserving for n in ("edm", "rf", "cld", "psld"))
    assert make_process("psld").constant_beta and not make_process("rf").constant_beta
    with pytest.raises(ValueError, match="needs T < 1"):
        make_process("rf", T=1.0)
    with pytest.raises(ValueError, match="unknown process"):
        make_process("vv")


def test_ddim_needs_variance_preserving_not_the_name_vp():
    with pytest.raises(ValueError, match=r"ddim needs a variance-preserving one-block process; this is cld \(k=2\); "
                                         "use gddim"):
        build_plan("ddim", make_process("cld"), 5)
    with pytest.raises(ValueError, match="this is edm"):
        build_plan("ddim", make_process("edm"), 5)
    from cosi.models.diffusers_adapter import vp_from_alphas_cumprod

    tab = vp_from_alphas_cumprod(torch.linspace(0.999, 0.01, 100, dtype=f64))
    renamed = dataclasses.replace(tab, name="my-schedule")
    assert tab.beta_0 is None and renamed.variance_preserving
    assert torch.equal(build_plan("ddim", renamed, 5, grid="quadratic").chunks[0][0],
                       build_plan("ddim", tab, 5, grid="quadratic").chunks[0][0])


@pytest.mark.parametrize("eta", [0.0, 0.3, 0.5, 1.0, 2.0])
def test_ddim_is_gddim_on_vp_and_song_ddim_at_the_matching_eta(eta):
    """ddim is gddim's step; in Song et al.'s form its noise is η_DDIM² = (1 − r^{η²})/(1 − r), r = SNR_t/SNR_s
    (η = 0 and η = 1 coincide with Song's η_DDIM)."""
    p = make_process("vp")
    ts = time_grid(p, 8, "quadratic")
    a = ddim(p, ts, eta)
    b = gddim(p, ts, eta)
    for x, y in zip(a, b):
        assert (x is None and y is None) or torch.equal(x, y)
    mt, ms = p.marginal(ts[:-1]), p.marginal(ts[1:])
    a_t, a_s, s_t, s_s = mt.psi[:, 0], ms.psi[:, 0], mt.L[:, 0, 0], ms.L[:, 0, 0]
    r = (a_t / s_t) ** 2 / (a_s / s_s) ** 2
    eta_song = torch.sqrt((1 - r ** (eta**2)) / (1 - r))
    if eta in (0.0, 1.0):
        assert torch.allclose(eta_song, torch.full_like(r, eta))
    c = eta_song * (s_s / s_t) * torch.sqrt(1 - (a_t / a_s) ** 2)  # Song et al. (2021), eq. 16
    Cz, Ce, Cn = a_s / a_t, torch.sqrt(s_s**2 - c**2) - a_s * s_t / a_t, c
    assert torch.allclose(a[0][:, 0, 0], Cz, rtol=1e-12)
    assert torch.allclose(a[1][:, 0, 0], Ce, rtol=1e-6, atol=1e-12)  # U by Magnus: ~1e-7
    if eta > 0:
        assert torch.allclose(a[2][:, 0, 0], Cn, rtol=1e-6)


# ---- convergence on the exact oracle ------------------------------------------------------------


@pytest.fixture(scope="module", params=["edm", "rf"])
def case(request):
    p = make_process(request.param)
    gmm = GaussianMixture.random(d=4, components=3, seed=0, std_range=(0.1, 0.3))
    z_T = gmm.sample_state(p, p.T, 4, torch.Generator().manual_seed(0))
    return p, gmm, z_T, reference_solution(gmm, p, z_T, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sampler,order,calls", [("euler", 1, 1), ("gddim", 1, 1), ("conjugate", 1, 1),
                                                 ("gddim-2m", 2, 1), ("heun", 2, 2)])
def test_convergence_order_on_edm_and_rf(case, sampler, order, calls):
    p, gmm, z_T, ref = case
    err = [endpoint_error(cosi.sample(gmm.eps_model(p), p, sampler, calls * n, z_T=z_T).z, ref) for n in (40, 80)]
    slope = math.log2(err[0] / err[1])
    assert slope > order - 0.35, (p.name, sampler, err, slope)


# ---- predictions ---------------------------------------------------------------------------------


def _wrapped(gmm, p, prediction):
    eps = gmm.eps_model(p)
    if prediction == "denoiser":
        def D(x, sigma):
            t = p.t_of_sigma(sigma.to(f64))
            psi = p.marginal(t).psi[:, 0].view(-1, 1)
            z = (psi * x.to(f64)).to(x.dtype)
            return from_eps(eps(z, t), z, t, p, "x0")
        return D
    return lambda z, t: from_eps(eps(z, t), z, t, p, prediction)


@pytest.mark.parametrize("name", ["vp", "edm", "rf"])
def test_every_prediction_gives_the_same_samples(name):
    p = make_process(name)
    gmm = GaussianMixture.random(d=4, components=3, seed=2, std_range=(0.1, 0.3))
    z_T = gmm.sample_state(p, p.T, 3, torch.Generator().manual_seed(1))
    samplers = ONE_BLOCK + (["ddim"] if p.variance_preserving else [])
    for s in samplers:
        nfe = 8 if s == "heun" else 6
        base = cosi.sample(gmm.eps_model(p), p, s, nfe, z_T=z_T, generator=torch.Generator().manual_seed(5)).z
        for pred in PREDICTIONS:
            model = as_eps_model(_wrapped(gmm, p, pred), p, pred)
            z = cosi.sample(model, p, s, nfe, z_T=z_T, generator=torch.Generator().manual_seed(5)).z
            assert torch.allclose(z, base, rtol=1e-9, atol=1e-9 * float(base.abs().max())), (name, s, pred)


def test_from_denoiser_with_edm_preconditioning():
    p = make_process("edm")
    gmm = GaussianMixture.random(d=4, components=3, seed=2, std_range=(0.1, 0.3))
    D = _wrapped(gmm, p, "denoiser")
    sd = 0.5

    def raw(x_in, c_noise):  # the network F_θ that EDM's preconditioning turns into D
        sigma = torch.exp(4 * c_noise.to(f64)).view(-1, 1)
        x = x_in.to(f64) * (sigma**2 + sd**2).sqrt()
        c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
        return (D(x, sigma.view(-1)) - c_skip * x) / c_out

    z_T = gmm.sample_state(p, p.T, 3, torch.Generator().manual_seed(1))
    a = cosi.sample(cosi.from_denoiser(D), "edm", "gddim-2m", 8, z_T=z_T).z
    b = cosi.sample(cosi.from_denoiser(raw, sigma_data=sd), "edm", "gddim-2m", 8, z_T=z_T).z
    c = cosi.sample(gmm.eps_model(p), p, "gddim-2m", 8, z_T=z_T).z
    assert torch.allclose(a, c, rtol=1e-10) and torch.allclose(b, c, rtol=1e-8)


def test_prediction_of_a_two_block_process_is_refused():
    with pytest.raises(ValueError, match="one-block"):
        as_eps_model(lambda z, t: z, "psld", "v")

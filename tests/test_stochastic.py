import torch

import cosi
from cosi.evaluation.distances import distribution_metrics
from cosi.evaluation.oracle import GaussianMixture


def _mmd_ratio(process, sampler, nfe, n=400, **opts):
    gmm = GaussianMixture.random(d=8, components=4, seed=1, std_range=(0.1, 0.3))
    g = torch.Generator().manual_seed(3)
    z_T = gmm.sample_state(process, process.T, n, g)
    x = cosi.sample(gmm.eps_model(process), process, sampler, nfe, z_T=z_T, generator=g, **opts).x
    m = distribution_metrics(gmm, x, process=process, t=process.t_min)
    return (m["mmd"] - m["mmd_floor"]) / m["mmd_floor_std"]  # in floor standard deviations


def test_em_reaches_the_mmd_noise_floor_at_large_nfe_and_not_at_small():
    p = cosi.make_process("psld")
    assert _mmd_ratio(p, "em", 800) < 3.0
    assert _mmd_ratio(p, "em", 4) > 10.0


def test_stochastic_ddim_reaches_the_floor_on_vp():
    p = cosi.make_process("vp")
    assert _mmd_ratio(p, "ddim", 800, eta=1.0) < 3.0
    assert _mmd_ratio(p, "ddim", 4, eta=1.0) > 10.0


def test_mmd2_to_mixture_is_unbiased_for_exact_samples_and_sees_a_bias():
    from cosi.evaluation.distances import mmd2_to_mixture

    gmm = GaussianMixture.random(d=8, seed=3)
    g = torch.Generator().manual_seed(0)
    exact = [mmd2_to_mixture(gmm.sample(2000, g), gmm) for _ in range(4)]
    for m2, se in exact:  # centred on 0 within a few standard errors
        assert abs(m2) < 4 * se + 1e-4
    shifted, se = mmd2_to_mixture(gmm.sample(2000, g) * 1.2, gmm)
    assert shifted > 10 * se

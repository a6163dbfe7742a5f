"""The public API: exact NFE, result fields, and clear errors."""

import math

import pytest
import torch

import cosi
from cosi.core.integrators.plan import ModelError
from cosi.evaluation.oracle import GaussianMixture


@pytest.fixture
def psld_oracle():
    p = cosi.make_process("psld")
    return p, GaussianMixture.random(d=6, components=3, seed=0).eps_model(p)


class Counting:
    def __init__(self, f):
        self.f, self.calls = f, 0

    def __call__(self, z, t):
        self.calls += 1
        assert t.shape == (z.shape[0],)
        return self.f(z, t)


@pytest.mark.parametrize("sampler", ["euler", "em", "conjugate", "lambda-ddim-1", "lambda-ddim-2"])
@pytest.mark.parametrize("denoise", [False, True])
def test_exactly_nfe_calls_and_result_fields(psld_oracle, sampler, denoise):
    p, eps = psld_oracle
    model = Counting(eps)
    r = cosi.sample(model, p, sampler, 7, shape=(5, 6), generator=torch.Generator().manual_seed(0),
                    denoise=denoise)
    assert model.calls == r.nfe == 7
    assert r.z.shape == (5, 12) and r.x.shape == (5, 6)
    assert torch.equal(r.x, r.z[:, :6])


def test_image_shaped_states_keep_x_channels_first():
    p = cosi.make_process("psld")
    gmm = GaussianMixture.random(d=2 * 4 * 4, shape=(2, 4, 4), seed=0)
    r = cosi.sample(gmm.eps_model(p), p, "conjugate", 5, shape=(3, 2, 4, 4))
    assert r.z.shape == (3, 4, 4, 4) and torch.equal(r.x, r.z[:, :2])


def test_samplers_lists_every_sampler_with_a_description():
    assert {"euler", "em", "ddim", "conjugate", "lambda-ddim-1", "lambda-ddim-2"} <= set(cosi.samplers)
    assert all(isinstance(d, str) and d for d in cosi.samplers.values())
    assert "lambda-ddim-2" in repr(cosi.samplers)


def test_same_generator_seed_gives_the_same_samples(psld_oracle):
    p, eps = psld_oracle
    a = cosi.sample(eps, p, "em", 10, shape=(4, 6), generator=torch.Generator().manual_seed(1))
    b = cosi.sample(eps, p, "em", 10, shape=(4, 6), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.z, b.z)


def test_final_denoising_recovers_the_data_for_a_point_mass():
    """With data δ(x₀), Tweedie's denoiser at t_min returns x₀ exactly."""
    p = cosi.make_process("vp")
    gmm = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.full((1, 3), 0.3, dtype=torch.float64),
                          torch.full((1, 3), 1e-12, dtype=torch.float64), (3,))
    r = cosi.sample(gmm.eps_model(p), p, "conjugate", 10, shape=(4, 3), dtype=torch.float64, denoise=True)
    assert torch.allclose(r.x, torch.full_like(r.x, 0.3), atol=1e-5)


# ---- errors -----------------------------------------------------------------------------------


def test_unknown_sampler_suggests_close_names(psld_oracle):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match="unknown sampler 'eulr'.*did you mean euler"):
        cosi.sample(eps, p, "eulr", 10, shape=(2, 6))


def test_unknown_process(psld_oracle):
    _, eps = psld_oracle
    with pytest.raises(ValueError, match="unknown process 'sde'"):
        cosi.sample(eps, "sde", "euler", 10, shape=(2, 6))


def test_ddim_on_psld_is_refused(psld_oracle):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match="'ddim' is not defined for psld"):
        cosi.sample(eps, p, "ddim", 10, shape=(2, 6))


@pytest.mark.parametrize("nfe,msg", [(0, "nfe=0 is below"), (-3, "nfe=-3 is below"), (2.5, "must be an integer")])
def test_bad_nfe(psld_oracle, nfe, msg):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match=msg):
        cosi.sample(eps, p, "euler", nfe, shape=(2, 6))


def test_denoising_needs_a_second_call(psld_oracle):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match="nfe=1 is below the 2 network calls euler needs.*use nfe >= 2"):
        cosi.sample(eps, p, "euler", 1, shape=(2, 6), denoise=True)


def test_unknown_option(psld_oracle):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match="'euler' has no option"):
        cosi.sample(eps, p, "euler", 10, shape=(2, 6), lam=0.3)


def test_wrong_B_shape(psld_oracle):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match="B must be a scalar or a 2x2 matrix"):
        cosi.sample(eps, p, "conjugate", 10, shape=(2, 6), B=[[1.0, 0, 0]])


def test_z_T_of_wrong_shape_or_dtype(psld_oracle):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match=r"z_T has shape \(2, 5\); a psld state has shape \(B, 2\*C"):
        cosi.sample(eps, p, "euler", 10, z_T=torch.zeros(2, 5))
    with pytest.raises(TypeError, match="floating-point"):
        cosi.sample(eps, p, "euler", 10, z_T=torch.zeros(2, 12, dtype=torch.int64))
    with pytest.raises(ValueError, match="give z_T"):
        cosi.sample(eps, p, "euler", 10)


def test_model_returning_the_wrong_shape_names_the_call_and_t(psld_oracle):
    p, _ = psld_oracle
    with pytest.raises(ModelError, match=r"returned \(2, 6\) at network call 1 \(t=1\)"):
        cosi.sample(lambda z, t: z[:, :6], p, "euler", 10, shape=(2, 6))


def test_model_returning_nan_names_the_call_and_t(psld_oracle):
    p, eps = psld_oracle
    calls = {"n": 0}

    def bad(z, t):
        calls["n"] += 1
        out = eps(z, t)
        return out * math.nan if calls["n"] == 4 else out

    ts = cosi.core.grids.time_grid(p, 10, "quadratic")
    with pytest.raises(ModelError, match=rf"non-finite values at network call 4 of 10 \(t={float(ts[3]):.6g}\)"):
        cosi.sample(bad, p, "euler", 10, shape=(2, 6))


def test_custom_grid_must_match_the_nfe(psld_oracle):
    p, eps = psld_oracle
    with pytest.raises(ValueError, match="needs 10 steps"):
        cosi.sample(eps, p, "euler", 10, shape=(2, 6), grid=[1.0, 0.5, 0.001])
    r = cosi.sample(eps, p, "euler", 2, shape=(2, 6), grid=[1.0, 0.5, 0.001])
    assert r.nfe == 2

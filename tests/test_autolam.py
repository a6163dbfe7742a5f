"""lam="auto": the proxy-chosen λ performs like the optimum of a fine grid on the exact-score oracle."""

import pytest
import torch

import cosi
from cosi.evaluate import oracle_setup

FINE = [x / 2 for x in range(-16, 17)]  # -8 .. 8 in steps of 0.5


def endpoint_error(process, sampler, nfe, lam):
    gmm, z_T, ref = oracle_setup(process, d=32, n=64)
    x = cosi.sample(gmm.eps_model(process), process, sampler, nfe, z_T=z_T, lam=lam).z
    return float(((x - ref) ** 2).flatten(1).mean(1).sqrt().median())


@pytest.mark.parametrize("pname,sampler,nfe", [("psld", "lambda-ddim-2", 20), ("psld", "lambda-ddim-2", 50),
                                               ("psld", "csps-d", 20), ("vp", "lambda-ddim-1", 10)])
def test_auto_lambda_is_as_good_as_the_fine_grid_optimum(pname, sampler, nfe):
    p = cosi.make_process(pname)
    gmm, _, _ = oracle_setup(p, d=32, n=64)
    r = cosi.sample(gmm.eps_model(p), p, sampler, nfe, shape=(2, 32), lam="auto")
    assert r.nfe == nfe and r.tuning["calls"] > 0
    best = min(endpoint_error(p, sampler, nfe, lam) for lam in FINE)
    worst = max(endpoint_error(p, sampler, nfe, lam) for lam in (-4.0, 0.0, 4.0))
    auto = endpoint_error(p, sampler, nfe, r.tuning["lam"])
    assert auto <= 1.15 * best + 1e-6, (r.tuning["lam"], auto, best)
    assert worst > 1.5 * best  # λ matters here, so the check has teeth


def test_auto_lambda_is_cached_and_refused_for_samplers_without_lam():
    p = cosi.make_process("psld")
    gmm, _, _ = oracle_setup(p, d=32, n=64)
    eps = gmm.eps_model(p)
    a = cosi.sample(eps, p, "lambda-ddim-1", 20, shape=(2, 32), lam="auto").tuning
    b = cosi.sample(eps, p, "lambda-ddim-1", 20, shape=(3, 32), lam="auto").tuning
    assert a is b
    with pytest.raises(ValueError, match="has no lam option"):
        cosi.sample(eps, p, "euler", 20, shape=(2, 32), lam="auto")


def test_auto_lambda_cache_knows_a_model_by_its_instance_not_its_bound_method():
    from cosi.autolam import choose_lambda

    p = cosi.make_process("vp")
    gmm, _, _ = oracle_setup(p, d=32, n=64)

    class Model:
        def __init__(self, scale):
            self.f, self.scale = gmm.eps_model(p), scale

        def eps_model(self, z, t):
            return self.scale * self.f(z, t)

    a, b = Model(1.0), Model(0.5)
    ta = choose_lambda(a.eps_model, p, "lambda-ddim-1", 10, (32,))
    assert choose_lambda(a.eps_model, p, "lambda-ddim-1", 10, (32,)) is ta  # a new bound method, same model
    tb = choose_lambda(b.eps_model, p, "lambda-ddim-1", 10, (32,))
    assert tb is not ta and tb["calls"] > 0

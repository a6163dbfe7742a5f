"""Multistep data prediction of order 3 (gddim-3m) and UniPC's corrector (gddim-2m-c, gddim-3m-c):
the plans are the exact integrals of the interpolating polynomial, they reach their orders on the
oracles, and they make exactly the calls asked for."""

import numpy as np
import pytest
import torch

import cosi
from cosi.core.grids import time_grid
from cosi.core.integrators import build_plan
from cosi.core.integrators.multistep import multistep_plan
from cosi.core.processes import f64
from cosi.evaluation.oracle import GaussianMixture

from conftest import oracle_case, oracle_order
from test_gddim import point_mass_eps


def vp_by_hand(eps, p, ts, z, order, corrector, tau):
    """VP: x_s = (σ_s/σ_t) x_t + σ_s ∫_t^s (d e^λ/du) x̂₀(u) du with x̂₀ the Lagrange polynomial in τ
    through the last ``order`` predictions, integrals by quadrature; with the corrector, after each call
    the previous step is redone from its start through the new prediction too."""
    from scipy.integrate import quad

    m = p.marginal(ts)
    a, sg = m.psi[:, 0].numpy(), m.L[:, 0, 0].numpy()
    lam = np.log(a / sg)
    taus = lam if tau == "logsnr" else ts.numpy()

    def basis(nodes, j):  # ℓ_j as a polynomial in τ
        others = [x for x in nodes if x != nodes[j]]
        return np.poly1d(others, r=True) / np.prod([nodes[j] - x for x in others])

    def step(x, i, pts):  # pts: [(grid index, x̂₀)], the step i → i + 1
        nodes = [taus[j] for j, _ in pts]
        out = sg[i + 1] / sg[i] * x
        for j, (_, x0) in enumerate(pts):
            ell = basis(nodes, j)
            if tau == "logsnr":
                I = quad(lambda v: np.exp(v) * ell(v), lam[i], lam[i + 1], epsabs=1e-14, epsrel=1e-13)[0]
            else:  # by parts: ∫ E′ ℓ = [E ℓ] − ∫ E ℓ′, E = e^λ = α/σ
                E = lambda u: float(p.marginal(torch.tensor(u, dtype=f64)).psi[0]  # noqa: E731
                                    / p.marginal(torch.tensor(u, dtype=f64)).L[0, 0])
                t_, s_ = float(ts[i]), float(ts[i + 1])
                I = E(s_) * ell(s_) - E(t_) * ell(t_) - quad(lambda u: E(u) * ell.deriv()(u), t_, s_,
                                                               epsabs=1e-14, epsrel=1e-13)[0]
            out = out + sg[i + 1] * I * x0
        return out

    preds, last = [], None
    for i in range(len(ts) - 1):
        e = eps(z, torch.full((z.shape[0],), float(ts[i]), dtype=f64))
        x0 = (z - sg[i] * e) / a[i]
        if corrector and last is not None:
            start, pts = last
            z = step(start, i - 1, pts + [(i, x0)])
        preds.append((i, x0))
        pts = preds[-order:]
        last = (z, pts)
        z = step(z, i, pts)
    return z


@pytest.mark.parametrize("sampler,order,corrector,tau", [("gddim-3m", 3, False, "logsnr"), ("gddim-3m", 3, False, "t"),
                                                         ("gddim-2m-c", 2, True, "logsnr"),
                                                         ("gddim-3m-c", 3, True, "t")])
def test_multistep_on_vp_is_the_exact_integral_of_the_interpolating_data_prediction(sampler, order, corrector, tau):
    p = cosi.make_process("vp")
    n = 7
    ts = time_grid(p, n, "quadratic")
    eps = GaussianMixture.random(d=4, components=2, seed=2).eps_model(p)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=f64)
    got = cosi.sample(eps, p, sampler, n, z_T=z, tau=tau, grid="quadratic").z
    want = vp_by_hand(eps, p, ts, z, order, corrector, tau)
    assert (got - want).abs().max() < 1e-7, (got - want).abs().max()


@pytest.mark.parametrize("pname", ["vp", "psld"])
def test_order_two_is_gddim_2m(pname):
    p = cosi.make_process(pname)
    a = build_plan("gddim-2m", p, 6, grid="quadratic")
    b = multistep_plan(p, 6, "quadratic", False, order=2)
    gmm, z_T, _ = oracle_case(p, d=3, n=4)
    from cosi.core.integrators.plan import run_plan

    za, zb = (run_plan(x, gmm.eps_model(p), z_T)[0] for x in (a, b))
    assert (za - zb).abs().max() < 1e-9


@pytest.mark.parametrize("pname", ["cld", "psld"])
@pytest.mark.parametrize("sampler", ["gddim-3m", "gddim-3m-c"])
def test_multistep_is_exact_for_point_mass_data(pname, sampler):
    """x̂₀ = x₀ at every call: every polynomial is the constant, and the corrector changes nothing."""
    p = cosi.make_process(pname)
    eps = point_mass_eps(p, 0.3)
    z_T = torch.randn(6, 3 * p.k, generator=torch.Generator().manual_seed(1), dtype=f64)
    a = cosi.sample(eps, p, "gddim", 9, z_T=z_T).z
    b = cosi.sample(eps, p, sampler, 9, z_T=z_T).z
    assert (a - b).abs().max() < 1e-8


@pytest.mark.parametrize("sampler", ["gddim-3m", "gddim-2m-c", "gddim-3m-c"])
def test_makes_exactly_the_calls_asked_for(sampler):
    p = cosi.make_process("psld")
    for nfe in (1, 2, 3, 4, 7):
        for denoise in (False, True):
            if nfe > int(denoise):
                assert build_plan(sampler, p, nfe, denoise=denoise).nfe == nfe
    assert cosi.nearest_nfe(sampler, 7, "psld") == 7
    with pytest.raises(cosi.NFEError if hasattr(cosi, "NFEError") else ValueError):
        build_plan(sampler, p, 1, denoise=True)


ORDERS = [("gddim-3m", (20, 40, 80), 2.6, 3.6), ("gddim-2m-c", (20, 40, 80), 2.6, 3.6),
          ("gddim-3m-c", (20, 40, 80), 3.5, 4.8)]


@pytest.mark.parametrize("pname", ["vp", "cld", "psld"])
@pytest.mark.parametrize("sampler,nfes,lo,hi", ORDERS)
def test_converges_to_the_probability_flow_solution_at_its_order(pname, sampler, nfes, lo, hi):
    """gddim-3m and gddim-2m-c at third order, gddim-3m-c at fourth (the corrector adds one)."""
    order, errs = oracle_order(cosi.make_process(pname), sampler, nfes)
    assert lo < order < hi, (errs, order)

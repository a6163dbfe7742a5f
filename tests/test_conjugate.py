"""Conjugate integrators (math.md §2) against DDIM and the exact-score oracle."""

import numpy as np
import pytest
import scipy.integrate as si
import torch

import cosi
from cosi.core.grids import time_grid
from cosi.core.integrators import conjugate
from cosi.core.integrators.gddim import ddim as gddim_ddim
from cosi.core.integrators.coefficients import conjugate_A, integrate, phi_increments, score_coef
from cosi.evaluation.distances import convergence_order, endpoint_error
from cosi.core.processes import cld, f64, psld, vp

from conftest import oracle_case


def test_conjugate_B0_equals_ddim_on_vp():
    p = vp()
    ts = time_grid(p, 20, "uniform")
    (Cz1, Ce1, _), (Cz2, Ce2, _) = gddim_ddim(p, ts), conjugate.conjugate(p, ts, B=0.0)
    assert (Cz1 - Cz2).abs().max() < 1e-12 and (Ce1 - Ce2).abs().max() < 1e-12
    gmm, z_T, _ = oracle_case(p)
    eps = gmm.eps_model(p)
    a = cosi.sample(eps, p, "ddim", 20, z_T=z_T.float(), grid="uniform").z
    b = cosi.sample(eps, p, "conjugate", 20, z_T=z_T.float(), grid="uniform").z
    assert (a - b).abs().max() < 1e-6


def test_vp_A_is_inverse_alpha_and_phi_is_sigma_over_alpha():
    """On VP with B = 0: A_t = α_ref/α_t and Φ_s − Φ_t = α_ref (σ_s/α_s − σ_t/α_t)."""
    p = vp()
    ts = time_grid(p, 7, "quadratic")
    m = p.marginal(ts)
    alpha, sigma = m.psi[:, 0], m.L[:, 0, 0]
    B = torch.zeros(1, 1, dtype=f64)
    A = conjugate_A(p, B, ts, float(ts[-1]))[:, 0, 0]
    assert torch.allclose(A, alpha[-1] / alpha, rtol=1e-12)
    dphi = phi_increments(p, B, ts, float(ts[-1]))[:, 0, 0]
    ratio = sigma / alpha
    assert torch.allclose(dphi, alpha[-1] * (ratio[1:] - ratio[:-1]), rtol=1e-9)


@pytest.mark.parametrize("make", [vp, cld, psld])
@pytest.mark.parametrize("steps", [4, 300])
def test_phi_quadrature_matches_adaptive_quadrature(make, steps):
    p = make()
    B = 0.3 * torch.ones(p.k, p.k, dtype=f64)
    ts = time_grid(p, steps, "uniform")
    t_ref = float(ts[-1])
    ours = phi_increments(p, B, ts, t_ref)
    f = lambda u: (conjugate_A(p, B, torch.tensor(u, dtype=f64), t_ref)  # noqa: E731
                   @ score_coef(p, torch.tensor(u, dtype=f64))).numpy()
    g = lambda u: conjugate_A(p, B, u, t_ref) @ score_coef(p, u)  # noqa: E731
    for i in (0, steps - 1):
        # scipy's adaptive quadrature is limited by the integrand's rounding near t_min
        # (it warns of roundoff for CLD at ~1e-8); a 2000-piece refinement of our rule is not
        q = -si.quad_vec(f, float(ts[i + 1]), float(ts[i]), epsabs=1e-14, epsrel=1e-13)[0]
        assert np.abs(ours[i].numpy() - q).max() <= 1e-7 * max(1.0, np.abs(q).max())
        edges = torch.linspace(float(ts[i + 1]), float(ts[i]), 2001, dtype=f64)
        fine = -integrate(g, edges[:-1], edges[1:], 8).sum(0)
        assert (ours[i] - fine).abs().max() <= 1e-9 * max(1.0, float(fine.abs().max()))


def test_conjugate_with_commuting_B_on_time_varying_beta_is_exact_for_A():
    p = vp()
    ts = time_grid(p, 5, "uniform")
    B = torch.full((1, 1), 0.7, dtype=f64)
    A = conjugate_A(p, B, ts, float(ts[-1]))
    sol = si.solve_ivp(lambda t, a: a * (0.7 + 0.5 * float(p.beta(t))), (float(ts[-1]), 1.0), [1.0],
                       rtol=1e-12, atol=1e-14, dense_output=True)
    assert np.allclose(A[:, 0, 0].numpy(), sol.sol(ts.numpy())[0], rtol=1e-9)


ORDER_CASES = [
    ("vp", "euler", {}), ("vp", "conjugate", {}), ("vp", "lambda-ddim-1", {"lam": 0.5}),
    ("psld", "euler", {}), ("psld", "conjugate", {}), ("psld", "lambda-ddim-1", {"lam": 0.5}),
    ("psld", "lambda-ddim-2", {"lam": 0.2}),
]


@pytest.fixture(scope="module")
def cases():
    return {name: oracle_case(cosi.make_process(name)) for name in ("vp", "psld")}


@pytest.mark.parametrize("pname,sampler,opts", ORDER_CASES)
def test_first_order_convergence_to_the_reference_ode_solution(cases, pname, sampler, opts):
    p = cosi.make_process(pname)
    gmm, z_T, ref = cases[pname]
    eps = gmm.eps_model(p)
    nfes = [100, 200, 400]
    errs = []
    for n in nfes:
        z = cosi.sample(eps, p, sampler, n, z_T=z_T, **opts).z
        errs.append(float(((z - ref) ** 2).flatten(1).mean(1).sqrt().median()))
    order = convergence_order(nfes, errs)
    assert 0.8 < order < 1.35, (errs, order)
    assert errs[-1] < 0.05


def test_large_nfe_agrees_with_the_reference(cases):
    p = cosi.make_process("vp")
    gmm, z_T, ref = cases["vp"]
    z = cosi.sample(gmm.eps_model(p), p, "conjugate", 2000, z_T=z_T).z
    assert endpoint_error(z, ref) < 2e-3


def test_phi_is_integrated_piecewise_across_the_knots_of_a_tabulated_schedule():
    """A DDPM-style tabulated VP has a piecewise-constant β: Φ must be split at its knots."""
    from cosi.models.diffusers_adapter import vp_from_alphas_cumprod

    betas = torch.linspace(1e-4, 0.02, 50, dtype=f64)
    p = vp_from_alphas_cumprod(torch.cumprod(1 - betas, 0))
    ts = torch.linspace(1.0, p.t_min, 8, dtype=f64)
    B = torch.full((1, 1), 0.3, dtype=f64)
    ours = phi_increments(p, B, ts, float(ts[-1]))
    f = lambda u: float((conjugate_A(p, B, torch.tensor(u, dtype=f64), float(ts[-1]))  # noqa: E731
                         @ score_coef(p, torch.tensor(u, dtype=f64)))[0, 0])
    for i in range(7):
        a, b = float(ts[i + 1]), float(ts[i])
        inner = [float(k) for k in p.knots if a < k < b]
        q = -si.quad(f, a, b, points=inner or None, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
        assert abs(float(ours[i, 0, 0]) - q) <= 1e-9 * abs(q)

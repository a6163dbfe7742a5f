import math

import numpy as np
import pytest
import scipy.integrate as si
import scipy.linalg as sl
import torch

from cosi.core.processes import cld, make_process, psld, vp, f64


@pytest.mark.parametrize("make", [vp, cld, psld])
def test_van_loan_matches_adaptive_quadrature(make):
    p = make()
    F, D = p.F_.numpy(), p.D_.numpy()
    b = 3.7
    quad = si.quad_vec(lambda u: sl.expm(u * F) @ D @ sl.expm(u * F.T), 0, b, epsabs=1e-14, epsrel=1e-13)[0]
    ours = p.noise_cov(p.b_inverse(torch.tensor(b, dtype=f64)), 0.0).numpy()
    assert np.abs(ours - quad).max() < 1e-12


def test_psld_covariance_matches_closed_form():
    """Critically damped: F = λI + N with N nilpotent, so e^{uF} = e^{λu}(I + uN) and the
    covariance integral reduces to the moments ∫ u^n e^{2λu} du, computed here in closed form."""
    p = psld()
    F, D, S0 = p.F_.numpy(), p.D_.numpy(), p.Sigma0_.numpy()
    lam = np.trace(F) / 2
    N = F - lam * np.eye(2)
    assert np.abs(N @ N).max() < 1e-12
    b = 3.7
    a = 2 * lam
    m0 = (math.exp(a * b) - 1) / a
    m1 = (math.exp(a * b) * (a * b - 1) + 1) / a**2
    m2 = (math.exp(a * b) * (a * a * b * b - 2 * a * b + 2) - 2) / a**3
    integral = m0 * D + m1 * (N @ D + D @ N.T) + m2 * (N @ D @ N.T)
    E = math.exp(lam * b) * (np.eye(2) + b * N)
    closed = E @ S0 @ E.T + integral
    ours = p.marginal(torch.tensor(b / p.beta_0, dtype=f64)).cov.numpy()
    assert np.abs(ours - closed).max() < 1e-12


@pytest.mark.parametrize("make", [vp, cld, psld])
def test_covariance_solves_the_lyapunov_ode(make):
    p = make()
    F, D = p.F_.numpy(), p.D_.numpy()
    k = p.k

    def rhs(t, y):
        S = y.reshape(k, k)
        return (float(p.beta(t)) * (F @ S + S @ F.T + D)).ravel()

    sol = si.solve_ivp(rhs, (0, 0.7), p.Sigma0_.numpy().ravel(), method="DOP853", rtol=1e-12, atol=1e-14)
    assert np.abs(sol.y[:, -1].reshape(k, k) - p.marginal(0.7).cov.numpy()).max() < 1e-10


def test_stationary_laws():
    for p, target in [(psld(), np.diag([1, 0.25])), (cld(), np.diag([1, 0.25])), (vp(), np.eye(1))]:
        far = p.marginal(torch.tensor(10.0, dtype=f64)).cov.numpy()
        assert np.abs(far - target).max() < 1e-6, p


def test_cholesky_factors_and_inverse_transpose():
    p = psld()
    m = p.marginal(torch.tensor([1e-3, 0.1, 1.0], dtype=f64))
    assert torch.allclose(m.L @ m.L.transpose(-1, -2), m.cov, atol=1e-14)
    eye = torch.eye(2, dtype=f64).expand(3, 2, 2)
    assert torch.allclose(m.L_invT.transpose(-1, -2) @ m.L, eye, atol=1e-10)


def test_perturb_has_the_marginal_moments():
    p = psld()
    n = 200_000
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((n, 1), 0.7, dtype=f64)
    t = torch.full((n,), 0.3, dtype=f64)
    z = p.perturb(x0, t, torch.randn(n, 2, generator=g, dtype=f64))
    m = p.marginal(torch.tensor(0.3, dtype=f64))
    assert torch.allclose(z.mean(0), 0.7 * m.psi, atol=5e-3)
    assert torch.allclose(torch.cov(z.T), m.cov, atol=5e-3)


def test_perturb_keeps_the_input_dtype_and_layout():
    p = psld()
    x0 = torch.randn(4, 3, 8, 8)
    z = p.perturb(x0, torch.rand(4) * 0.9 + 0.05, torch.randn(4, 6, 8, 8))
    assert z.shape == (4, 6, 8, 8) and z.dtype == torch.float32


def test_psld_without_critical_damping_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"critical damping.*nu = Gamma \+ 2\*sqrt\(M_inv\) = 4.01"):
        psld(Gamma=0.01, nu=3.0)


@pytest.mark.parametrize("bad", [dict(t_min=1.0), dict(t_min=2.0), dict(t_min=0.0)])
def test_t_min_must_lie_below_T(bad):
    with pytest.raises(ValueError, match="0 < t_min < T"):
        vp(**bad)


def test_unknown_process_and_bad_parameters():
    with pytest.raises(ValueError, match="unknown process 'vpp'"):
        make_process("vpp")
    with pytest.raises(ValueError, match="bad parameters for process 'vp'"):
        make_process("vp", Gamma=1.0)
    with pytest.raises(ValueError, match="positive"):
        vp(beta_min=-1.0)


def test_config_round_trip():
    p = psld(beta=6.0, Gamma=0.0, nu=4.0, t_min=2e-3)
    assert make_process(**p.to_config()) == p

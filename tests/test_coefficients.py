"""The Gauss–Legendre Φ integrals of coefficients.integrate: the claim behind coefficients.QUAD_NODES.

At the node counts QUAD_NODES picks, the integral agrees with the same rule at four times the nodes (where it
has converged) to 1e-9 relative, on grids of 5 … 1000 steps of every process; and on interior intervals, away
from the t^(−1/2)…t^(−3/2) end at t_min where scipy's adaptive quadrature is the less accurate of the two, with
scipy.integrate.quad_vec."""

import pytest
import torch
from scipy.integrate import quad_vec

from cosi.core.grids import time_grid
from cosi.core.integrators.coefficients import conjugate_A, integrate, quad_nodes, score_coef
from cosi.core.processes import f64, make_process


def phi_integrand(p, ts):
    t_ref = float(ts[-1])
    B = 0.5 * torch.eye(p.k, dtype=f64)  # a λ-DDIM-I matrix: A_t is not trivial
    return lambda u: conjugate_A(p, B, u, t_ref) @ score_coef(p, u)


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", ["vp", "cld", "psld", "edm", "rf"])
@pytest.mark.parametrize("steps", [5, 64, 65, 256, 257, 1000])
@pytest.mark.parametrize("kind", ["uniform", "quadratic"])
def test_phi_integral_is_converged_at_the_chosen_node_count(name, steps, kind):
    p = make_process(name)
    ts = time_grid(p, steps, kind)
    dphi = phi_integrand(p, ts)
    lo, hi = ts[1:], ts[:-1]
    got = integrate(dphi, lo, hi, process=p)
    fine = integrate(dphi, lo, hi, nodes=4 * quad_nodes(steps), process=p)
    assert rel(got, fine) < 1e-9, (name, steps, kind)


@pytest.mark.parametrize("name", ["vp", "cld", "psld", "edm", "rf"])
def test_phi_integral_matches_adaptive_quadrature_inside_the_grid(name):
    p = make_process(name)
    ts = time_grid(p, 5, "quadratic")
    dphi = phi_integrand(p, ts)
    lo, hi = ts[1:], ts[:-1]
    got = integrate(dphi, lo, hi, process=p)
    for i in (0, 1, 2):  # from T inwards; the last interval ends at t_min
        ref, _ = quad_vec(lambda u: dphi(torch.tensor([u], dtype=f64))[0].numpy(), float(lo[i]), float(hi[i]),
                          epsabs=0, epsrel=1e-12)
        assert rel(got[i], torch.from_numpy(ref)) < 1e-9, (name, i)

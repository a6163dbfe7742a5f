"""The Gauss–Legendre Φ integrals of coefficients.integrate against scipy's adaptive quadrature: the
claim behind coefficients.QUAD_NODES (relative error < 1e-9 on grids of 5 … 1000 steps)."""

import pytest
import torch
from scipy.integrate import quad_vec

from cosi.core.grids import time_grid
from cosi.core.integrators.coefficients import conjugate_A, integrate, score_coef
from cosi.core.processes import f64, make_process


@pytest.mark.xfail(strict=False, reason="measured: 18 of 60 cases miss 1e-9 (all CLD cases, and the t_min interval "
                   "of uniform grids on PSLD/EDM; worst 2.2e-4 on CLD at 5 steps): QUAD_NODES is open")
@pytest.mark.parametrize("name", ["vp", "cld", "psld", "edm", "rf"])
@pytest.mark.parametrize("steps", [5, 64, 65, 256, 257, 1000])
@pytest.mark.parametrize("kind", ["uniform", "quadratic"])
def test_phi_integral_matches_adaptive_quadrature(name, steps, kind):
    p = make_process(name)
    ts = time_grid(p, steps, kind)
    t_ref = float(ts[-1])
    B = 0.5 * torch.eye(p.k, dtype=f64)  # a λ-DDIM-I matrix: A_t is not trivial

    def dphi(u):
        return conjugate_A(p, B, u, t_ref) @ score_coef(p, u)

    lo, hi = ts[1:], ts[:-1]
    got = integrate(dphi, lo, hi, process=p)
    for i in sorted({0, 1, steps // 2, steps - 2, steps - 1}):  # both stiff ends and the middle
        ref, _ = quad_vec(lambda u: dphi(torch.tensor([u], dtype=f64))[0].numpy(), float(lo[i]), float(hi[i]),
                          epsabs=0, epsrel=1e-12)
        ref = torch.from_numpy(ref)
        assert float((got[i] - ref).abs().max() / ref.abs().max()) < 1e-9, (name, steps, kind, i)

"""The consistency projection of ε (docs/integrators.md): ε̃ = L_t⁻¹ (z − ψ_t w_t (z − L_t ε)).

It is the identity for an exact ε, it removes an inconsistent component of a learned one, and with it every
deterministic ε-form sampler converges to the same ODE solution on an oracle whose ε is made inconsistent."""

import pytest
import torch

import cosi
from cosi.core.integrators import SAMPLERS, build_plan
from cosi.core.integrators.coefficients import consistency_projection, data_prediction_weights
from cosi.core.integrators.plan import Eval
from cosi.core.processes import apply_blocks, f64
from cosi.evaluation.oracle import GaussianMixture

from conftest import oracle_case

EPS_FORM_DETERMINISTIC = [n for n, s in SAMPLERS.items() if s.build is not None and s.eps_form
                          and not s.stochastic and s.accepts("psld")]


def project(process, z, t, eps):
    P_z, P_e = consistency_projection(process, torch.full((z.shape[0],), t, dtype=f64))
    return apply_blocks(P_z, z) + apply_blocks(P_e, eps)


@pytest.mark.parametrize("pname", ["psld", "cld"])
def test_projection_is_the_identity_on_exact_eps(pname):
    p = cosi.make_process(pname)
    gmm = GaussianMixture.random(d=8, components=4, seed=2)
    eps_model = gmm.eps_model(p)
    for t in (2e-3, 0.1, 0.5, 1.0):
        z = gmm.sample_state(p, t, 32, torch.Generator().manual_seed(1))
        tt = torch.full((32,), t, dtype=f64)
        eps = eps_model(z, tt)
        assert (project(p, z, t, eps) - eps).abs().max() < 1e-9 * max(1.0, float(eps.abs().max()))


def test_projection_is_the_identity_for_one_block():
    p = cosi.make_process("vp")
    P_z, P_e = consistency_projection(p, torch.tensor([0.01, 0.5, 1.0], dtype=f64))
    assert P_z.abs().max() < 1e-15 and (P_e - 1).abs().max() < 1e-12


def inconsistent(process, eps_model, scale=0.3):
    """An exact eps_model plus a component that moves z − L ε off the span of ψ_t: δ = L_t⁻¹ v_t a(z),
    with v_t ⟂ Σ_t⁻¹ψ_t (so w_t v_t = 0, and the data prediction is unchanged)."""

    def eps(z, t):
        tt = t.to(f64)
        m = process.marginal(tt)
        prec_psi = torch.linalg.solve(m.cov, m.psi[..., None])[..., 0]  # Σ⁻¹ψ, (B, k)
        v = torch.stack([-prec_psi[:, 1], prec_psi[:, 0]], -1)  # ⟂ Σ⁻¹ψ
        v = v / v.norm(dim=-1, keepdim=True)
        zb = z.to(f64).unflatten(1, (process.k, -1))
        a = scale * torch.tanh(zb[:, 0] + 0.5 * zb[:, 1])  # a smooth, state-dependent amount
        delta = v[:, :, None] * a[:, None]  # (B, k, d): − L⁻¹ of this is added to ε
        L_inv = m.L_invT.transpose(-1, -2)
        extra = torch.einsum("bij,bjd->bid", L_inv, delta).flatten(1, 2)
        return (eps_model(z, t).to(f64) - extra).to(z.dtype)

    return eps


def test_projection_removes_an_injected_inconsistent_component():
    p = cosi.make_process("psld")
    gmm = GaussianMixture.random(d=8, components=4, seed=2)
    exact = gmm.eps_model(p)
    bad = inconsistent(p, exact)
    z = gmm.sample_state(p, 0.3, 16, torch.Generator().manual_seed(0))
    t = torch.full((16,), 0.3, dtype=f64)
    assert (bad(z, t) - exact(z, t)).abs().max() > 1e-2
    assert (project(p, z, 0.3, bad(z, t)) - exact(z, t)).abs().max() < 1e-10
    w = data_prediction_weights(p, t)  # the injected part leaves the data prediction alone
    x0 = lambda e: torch.einsum("bij,bjd->bid", w, (z - apply_blocks(p.marginal(t).L, e)).unflatten(1, (2, -1)))  # noqa: E731
    assert (x0(bad(z, t)) - x0(exact(z, t))).abs().max() < 1e-10


def test_plans_of_eps_form_samplers_project_every_call_on_two_blocks_only():
    psld, vp = cosi.make_process("psld"), cosi.make_process("vp")
    plan = build_plan("csps-d", psld, 10)
    assert all(op.project is not None for op in plan.ops if isinstance(op, Eval))
    plain = build_plan("csps-d", psld, 10, project=False)
    assert all(op.project is None for op in plain.ops if isinstance(op, Eval))
    assert all(op.project is None for op in build_plan("euler", vp, 10).ops if isinstance(op, Eval))
    assert all(op.project is None for op in build_plan("gddim-2m", psld, 10).ops if isinstance(op, Eval))


@pytest.mark.parametrize("name", ["euler", "csps-d", "lambda-ddim-2", "rvv", "cse"])
def test_with_projection_samplers_converge_on_an_inconsistent_oracle(name):
    """On an inconsistent ε the projected sampler approaches the ODE solution of the projected model, which for
    this construction is the exact model's (the injected part is what the projection removes)."""
    p = cosi.make_process("psld")
    gmm, z_T, ref = oracle_case(p, d=4, n=8)
    bad = inconsistent(p, gmm.eps_model(p))
    errs = {}
    for project_eps in (True, False):
        for nfe in (100, 400):
            nfe = cosi.nearest_nfe(name, nfe, p)
            x = cosi.sample(bad, p, name, nfe, z_T=z_T, project=project_eps).z
            errs[project_eps, nfe] = float(((x - ref) ** 2).mean().sqrt())
    lo, hi = sorted({k[1] for k in errs})
    assert errs[True, hi] < 0.5 * errs[True, lo]  # converging, at least first order
    assert errs[True, hi] < 0.2 * errs[False, hi]  # the plain form stays off (a plateau)

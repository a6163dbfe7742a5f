"""Splitting and conjugate-splitting integrators (math.md §3) on the CLD and PSLD oracles."""

import pytest
import torch

import cosi
from cosi.core.integrators import PHASE_SPACE, SAMPLERS, build_plan
from cosi.core.integrators.plan import Lin
from cosi.evaluation.distances import convergence_order
from cosi.evaluation.oracle import GaussianMixture

from conftest import mmd_and_floor, oracle_case

SPLITTING = [n for n, s in SAMPLERS.items() if s.requires is PHASE_SPACE]
DETERMINISTIC = [n for n in SPLITTING if not SAMPLERS[n].stochastic]
STOCHASTIC = [n for n in SPLITTING if SAMPLERS[n].stochastic]
NAIVE = ["nse", "nvv", "oba", "bao", "obab", "baoab"]
SECOND_ORDER = ["csps-2m"]  # ε extrapolated before the call (splitting.py)


@pytest.fixture(scope="module")
def cases():
    return {name: oracle_case(cosi.make_process(name)) for name in ("cld", "psld")}


def median_error(z, ref):
    return float(((z - ref) ** 2).flatten(1).mean(1).sqrt().median())


@pytest.mark.parametrize("pname", ["psld", "cld"])
@pytest.mark.parametrize("name", [n for n in DETERMINISTIC + STOCHASTIC if n not in SECOND_ORDER])
def test_converges_to_the_probability_flow_solution_at_first_order(cases, pname, name):
    """Deterministic presets as they are; stochastic ones at eta = 0, where they integrate
    the probability-flow ODE."""
    p = cosi.make_process(pname)
    gmm, z_T, ref = cases[pname]
    opts = {"eta": 0.0} if SAMPLERS[name].stochastic else {}
    nfes, errs = [], []
    for n in (100, 200, 400):
        m = cosi.nearest_nfe(name, n, p, at_least=True)
        nfes.append(m)
        errs.append(median_error(cosi.sample(gmm.eps_model(p), p, name, m, z_T=z_T, **opts).z, ref))
    order = convergence_order(nfes, errs)
    assert 0.8 < order < 1.35, (errs, order)
    assert errs[-1] < 0.1


@pytest.mark.parametrize("pname", ["psld", "cld"])
@pytest.mark.parametrize("name", SECOND_ORDER)
def test_extrapolated_splitting_converges_at_second_order(cases, pname, name):
    """csps-2m: order 2 at λ = 0 (measured 1.96–1.98 from NFE 100 to 400); at λ ≠ 0 the conjugate sub-flows'
    (I + hλΠ) factor makes it first order, as the docstring says."""
    p = cosi.make_process(pname)
    gmm, z_T, ref = cases[pname]
    err = lambda n, **o: median_error(cosi.sample(gmm.eps_model(p), p, name, n, z_T=z_T, **o).z, ref)  # noqa: E731
    nfes = (101, 201, 401)
    errs = [err(n) for n in nfes]
    assert 1.8 < convergence_order(nfes, errs) < 2.3, errs
    assert errs[-1] < 1e-3
    lam = [err(n, lam=-1.0) for n in nfes]
    assert 0.8 < convergence_order(nfes, lam) < 1.35, lam


def hand_written_splitting(p, eps_model, z_T, steps, composition, fractions, methods, lam, extrapolate):
    """A reduced splitting scheme with its call at t + h/2, written out: every sub-flow's (C_z, C_ε) from kick_coeffs, ε
    before the step's call extrapolated to the call time through the last two calls (ε(T) in the first step)."""
    from cosi.core.grids import time_grid
    from cosi.core.integrators.splitting import kick_coeffs

    ts = time_grid(p, steps, "quadratic")
    t, h = ts[:-1], ts[1:] - ts[:-1]
    clocks, coeffs = {"A": t.clone(), "B": t.clone()}, []
    for ch, f in zip(composition.replace("*", ""), fractions):
        t_a = clocks[ch]
        clocks[ch] = t_a + f * h
        coeffs.append(kick_coeffs(p, ch, t_a, clocks[ch], method=methods[ch], eta=0.0, lam=lam, F_O=None))
    blocks = lambda C, z: torch.einsum("ij,bjd->bid", C, z.unflatten(1, (2, -1))).flatten(1)  # noqa: E731
    call = lambda z, s: eps_model(z, torch.full((z.shape[0],), float(s), dtype=z.dtype))  # noqa: E731
    z, before = z_T.clone(), composition.index("*")
    eps, c, eps_prev, c_prev = call(z_T, ts[0]), float(ts[0]), None, None
    for i in range(steps):
        c_next = float(t[i] + 0.5 * h[i])
        e = eps if not extrapolate or eps_prev is None else eps + (c_next - c) / (c - c_prev) * (eps - eps_prev)
        for k, (Cz, Ce) in enumerate(coeffs):
            if k == before:
                eps_prev, c_prev, c = eps, c, c_next
                eps = e = call(z, c)
            z = blocks(Cz[i], z) + blocks(Ce[i], e)
    return z


@pytest.mark.parametrize("pname", ["psld", "cld"])
def test_csps_2m_plan_is_the_hand_written_scheme(pname):
    """The plan (registers, the extra call at T, ρ per step) against the scheme written out; and csps-d the same
    way without extrapolation."""
    p = cosi.make_process(pname)
    eps = GaussianMixture.random(d=4, seed=0).eps_model(p)
    z_T = torch.randn(3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    conj = {"A": "conjugate", "B": "conjugate"}
    got = cosi.sample(eps, p, "csps-2m", 13, z_T=z_T, grid="quadratic").z
    want = hand_written_splitting(p, eps, z_T, 12, "AB*BA", (0.5,) * 4, conj, 0.0, True)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got = cosi.sample(eps, p, "csps-d", 13 if pname == "psld" else 12, z_T=z_T, grid="quadratic").z
    want = hand_written_splitting(p, eps, z_T, 12, "A*BA", (0.5, 1, 0.5), {"A": "conjugate", "B": "euler"},
                                  -3.0, False)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_extrapolation_needs_a_reduced_scheme_with_a_flow_before_the_call():
    from cosi.core.integrators.splitting import Scheme

    with pytest.raises(ValueError, match="extrapolate feeds the sub-flows before a reduced scheme's call"):
        Scheme("BAB", (0.5, 1, 0.5), "euler", "naive", extrapolate=True)
    with pytest.raises(ValueError, match="extrapolate feeds"):
        Scheme("*BA", (1, 1), "euler", "reduced", extrapolate=True)
    with pytest.raises(ValueError, match="symmetric composition of conjugate sub-flows"):  # measured: order 0.8–1.0
        Scheme("AB*BA", (0.5,) * 4, "euler", "reduced", extrapolate=True)
    with pytest.raises(ValueError, match="symmetric composition"):
        Scheme("AB*", (1, 1), "conjugate", "reduced", extrapolate=True)
    plan = build_plan("csps-2m", cosi.make_process("psld"), 13)
    assert plan.steps == 12 and "r₀ ← ε" in plan.explain()  # the per-step callback fires every step


@pytest.mark.parametrize("pname,name,opts", [("psld", n, {}) for n in ("oba", "roba", "robab", "coba", "csps-s", "sscs")]
                         + [("cld", n, {}) for n in ("robab", "csps-s")]
                         + [("psld", "csps-s", {"eta": 1.0, "eta_x": 0.0})])  # noise on the momentum only
def test_stochastic_presets_reach_the_mmd_floor(pname, name, opts):
    """At NFE ~800 the MMD to exact samples is within the floor's noise (mean + 4 std over
    8 pairs of exact sets); at NFE 10 it is far above (the test can fail). Per-block noise
    scales keep the marginals, so they reach the floor too."""
    p = cosi.make_process(pname)
    coarse, fine = (mmd_and_floor(p, name, cosi.nearest_nfe(name, nfe, p, at_least=True), **opts) for nfe in (10, 800))
    assert fine["mmd"] < fine["mmd_floor"] + 4 * fine["mmd_floor_std"] < coarse["mmd"], (coarse, fine)


def test_eta_x_scales_the_position_noise_alone():
    """eta_x = eta is the default plan; eta_x = 0 leaves the position's noise out of O and halves
    the position's score term relative to eta_x = 1, and changes nothing in B."""
    from cosi.core.integrators import build_plan

    p = cosi.make_process("psld")
    same = [build_plan("csps-s", p, 20, eta=1.0, **o) for o in ({}, {"eta_x": 1.0})]
    for a, b in zip(*(pl.chunks for pl in same)):
        assert all((u is None and v is None) or torch.equal(u, v) for u, v in zip(a, b))
    plan = build_plan("csps-s", p, 20, eta=1.0, eta_x=0.0)
    o_noise = plan.chunks[0][2]  # O comes first in OBA*B: its C_ξ
    assert o_noise[:, 0, 0].abs().max() < 1e-12 < o_noise[:, 1, 1].abs().min()  # x gets noise only through m
    a_kick = lambda pl: pl.chunks[2][1]  # noqa: E731  A's C_ε (O, B/2, A, call, B/2)
    torch.testing.assert_close(a_kick(plan), 0.5 * a_kick(same[0]), rtol=1e-12, atol=0)
    torch.testing.assert_close(plan.chunks[1][1], same[0].chunks[1][1], rtol=0, atol=0)  # B untouched
    with pytest.raises(ValueError, match="eta and eta_x must be >= 0"):
        build_plan("csps-s", p, 20, eta=1.0, eta_x=-1.0)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_presets_are_deterministic_at_eta_zero(name):
    p = cosi.make_process("psld")
    eps = GaussianMixture.random(d=4, seed=0).eps_model(p)
    z_T = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    n = cosi.nearest_nfe(name, 12, p, at_least=True)
    a = cosi.sample(eps, p, name, n, z_T=z_T, eta=0.0, generator=torch.Generator().manual_seed(1)).z
    b = cosi.sample(eps, p, name, n, z_T=z_T, eta=0.0, generator=torch.Generator().manual_seed(2)).z
    c = cosi.sample(eps, p, name, n, z_T=z_T, eta=1.0, generator=torch.Generator().manual_seed(1)).z
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("pname", ["psld", "cld"])
@pytest.mark.parametrize("name", [n for n in SPLITTING if n not in NAIVE])
def test_reduced_presets_make_one_call_per_step(pname, name):
    p = cosi.make_process(pname)
    for nfe in (10, 11, 30):
        plan = build_plan(name, p, nfe)
        steps = len({op.row for op in plan.ops if isinstance(op, Lin)})
        assert plan.nfe == nfe
        assert nfe - steps in (0, 1), (name, nfe, steps)  # +1: the call at T of Verlet-type schemes


def test_naive_velocity_verlet_on_psld_calls_before_every_sub_flow():
    p = cosi.make_process("psld")  # A uses eps on PSLD (D_xx = Gamma > 0): B, A, B -> 3 calls
    assert len({op.row for op in build_plan("nvv", p, 30).ops if isinstance(op, Lin)}) == 10
    p = cosi.make_process("cld")  # on CLD the position flow has no score term: 2 calls
    assert len({op.row for op in build_plan("nvv", p, 30).ops if isinstance(op, Lin)}) == 15


def test_unmeetable_nfe_is_refused_with_the_nearest_choices():
    p = cosi.make_process("psld")
    with pytest.raises(ValueError, match=r"nvv makes 3 network calls per step: nfe=20 cannot be met "
                                         r"exactly; use nfe=18 or nfe=21"):
        build_plan("nvv", p, 20)
    with pytest.raises(ValueError, match=r"nfe=1 is below the 2 network calls rvv needs"):
        build_plan("rvv", p, 1)


def test_splitting_on_vp_is_refused():
    with pytest.raises(ValueError, match="'rse' is not defined for vp"):
        build_plan("rse", cosi.make_process("vp"), 10)


def test_deterministic_presets_reject_eta():
    with pytest.raises(ValueError, match="has no option"):
        build_plan("rse", cosi.make_process("psld"), 10, eta=1.0)

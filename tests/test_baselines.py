"""DPM-Solver++ and UniPC through diffusers' schedulers on the VP oracle."""

import pytest
import torch

import cosi
from cosi.evaluation.peers import discrete_schedule, make_scheduler
from cosi.evaluation.evaluate import oracle_setup

pytest.importorskip("diffusers")


def _err(x, ref):
    return float(((x - ref) ** 2).flatten(1).mean(1).sqrt().median())


@pytest.mark.parametrize("nfe", [10, 37])
def test_first_order_dpm_solver_equals_cosi_ddim_on_its_timesteps(nfe):
    p = cosi.make_process("vp")
    gmm, z_T, _ = oracle_setup(p, d=32, n=64)
    sched = make_scheduler("dpm-solver++", p, solver_order=1)
    sched.set_timesteps(nfe)
    times, _ = discrete_schedule(p)
    grid = [float(times[int(n)]) for n in sched.timesteps] + [p.t_min]
    assert grid[0] == pytest.approx(p.T) and len(grid) == nfe + 1
    a = cosi.sample(gmm.eps_model(p), p, "dpm-solver++", nfe, z_T=z_T.float(), solver_order=1)
    b = cosi.sample(gmm.eps_model(p), p, "ddim", nfe, z_T=z_T.float(), grid=grid)
    assert a.nfe == nfe and (a.z - b.z).abs().max() < 1e-5


def test_discrete_schedule_reproduces_the_process_alphas():
    p = cosi.make_process("vp")
    times, betas = discrete_schedule(p)
    abar = torch.cumprod(1 - torch.tensor(betas, dtype=torch.float64), 0)
    want = p.marginal(torch.tensor(times, dtype=torch.float64)).psi[:, 0] ** 2
    assert torch.allclose(abar, want, rtol=1e-12) and times[0] == p.t_min and times[-1] == p.T


@pytest.mark.parametrize("name,opts", [("dpm-solver++", {"use_lu_lambdas": True}), ("unipc", {})])
def test_multistep_baselines_converge_faster_than_first_order(name, opts):
    p = cosi.make_process("vp")
    gmm, z_T, ref = oracle_setup(p, d=32, n=64)
    e50, e200 = (_err(cosi.sample(gmm.eps_model(p), p, name, k, z_T=z_T, **opts).z, ref) for k in (50, 200))
    assert e200 < e50 / 5  # first order would give a factor 4


def test_baselines_are_vp_only_and_take_their_own_timesteps():
    psld = cosi.make_process("psld")
    with pytest.raises(ValueError, match="needs a variance-preserving one-block process"):
        cosi.sample(lambda z, t: z, psld, "unipc", 10, shape=(2, 4))
    vp = cosi.make_process("vp")
    with pytest.raises(ValueError, match="takes its own timesteps"):
        cosi.sample(lambda z, t: z, vp, "unipc", 10, shape=(2, 4), grid="uniform")

import pytest
import torch

from cosi.core.grids import log_snr, time_grid
from cosi.core.processes import cld, make_process, psld, vp


@pytest.mark.parametrize("make", [vp, cld, psld, lambda: make_process("edm"), lambda: make_process("rf")])
@pytest.mark.parametrize("kind", ["uniform", "quadratic", "logsnr", "edm", "flow-shift"])
def test_grids_decrease_from_T_to_t_min(make, kind):
    p = make()
    ts = time_grid(p, 17, kind)
    assert len(ts) == 18 and ts[0] == p.T and ts[-1] == p.t_min
    assert bool((ts[1:] < ts[:-1]).all())


def test_logsnr_grid_is_uniform_in_log_snr():
    p = psld()
    lam = log_snr(p, time_grid(p, 10, "logsnr"))
    steps = lam[1:] - lam[:-1]
    assert torch.allclose(steps, steps.mean().expand_as(steps), rtol=1e-8)


def test_edm_grid_follows_rho_spacing():
    p = vp()
    ts = time_grid(p, 10, "edm")
    sigma = torch.sqrt(torch.expm1(p.b(ts)))
    r = sigma ** (1 / 7)
    assert torch.allclose(r[1:] - r[:-1], (r[1] - r[0]).expand(10), rtol=1e-8)


@pytest.mark.parametrize("name", ["vp", "cld", "psld", "edm", "rf"])
def test_edm_grid_is_rho_spaced_in_sigma_for_every_process(name):
    p = make_process(name)
    ts = time_grid(p, 10, "edm")
    assert ts[0] == p.T and ts[-1] == p.t_min and bool((ts[1:] < ts[:-1]).all())
    r = p.sigma_of_t(ts) ** (1 / 7)
    assert torch.allclose(r[1:] - r[:-1], (r[1] - r[0]).expand(10), rtol=1e-6)


def test_edm_grid_on_ve_is_karras_sigmas():
    p = make_process("edm")
    i = torch.arange(19, dtype=torch.float64)
    karras = (80 ** (1 / 7) + i / 18 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert torch.allclose(time_grid(p, 18, "edm"), karras, rtol=1e-12)


@pytest.mark.parametrize("name", ["vp", "edm", "rf", "psld"])
def test_log_snr_inverse_inverts_log_snr(name):
    p = make_process(name)
    ts = torch.linspace(p.t_min, p.T, 7, dtype=torch.float64)
    assert torch.allclose(p.log_snr_inverse(p.log_snr(ts)), ts, rtol=1e-9)


def test_flow_shift_grid():
    p = make_process("rf")
    ts = time_grid(p, 8, "flow-shift", shift=3.0)
    u = torch.linspace(1, 0, 9, dtype=torch.float64)
    assert torch.allclose(ts, p.t_min + (p.T - p.t_min) * 3 * u / (1 + 2 * u), rtol=1e-14)
    assert torch.allclose(time_grid(p, 8, "flow-shift", shift=1.0), time_grid(p, 8, "uniform"))


def test_unknown_grid():
    with pytest.raises(ValueError, match="unknown time grid"):
        time_grid(vp(), 5, "cosine")

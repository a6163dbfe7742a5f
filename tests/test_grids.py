import pytest
import torch

from cosi.core.grids import log_snr, time_grid
from cosi.core.processes import cld, psld, vp


@pytest.mark.parametrize("make", [vp, cld, psld])
@pytest.mark.parametrize("kind", ["uniform", "quadratic", "logsnr"])
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


def test_edm_grid_follows_rho_spacing_and_is_vp_only():
    p = vp()
    ts = time_grid(p, 10, "edm")
    sigma = torch.sqrt(torch.expm1(p.b(ts)))
    r = sigma ** (1 / 7)
    assert torch.allclose(r[1:] - r[:-1], (r[1] - r[0]).expand(10), rtol=1e-8)
    with pytest.raises(ValueError, match="VP only"):
        time_grid(psld(), 10, "edm")


def test_unknown_grid():
    with pytest.raises(ValueError, match="unknown time grid"):
        time_grid(vp(), 5, "cosine")

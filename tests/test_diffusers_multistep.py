"""CosiMultistepScheduler: cosi's gddim-2m as a drop-in diffusers scheduler (docs/interop_diffusers.md).

Offline: tiny randomly initialized UNets. A pipeline run through the scheduler is the same computation
as ``cosi.sample(DiffusersEpsModel(...), process, "gddim-2m", ...)`` on the scheduler's timesteps mapped
to t = (τ + 1)/N; agreement is relative to the largest entry of the reference (see test_diffusers.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import cosi  # noqa: E402
from cosi.models.diffusers_adapter import DiffusersEpsModel, timestep_to_time  # noqa: E402
from cosi.models.diffusers_scheduler import CosiMultistepScheduler  # noqa: E402
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=8,
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def rel(a, b) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def pipeline_images(unet, scheduler, K, generator):
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        return pipe(batch_size=2, generator=generator, num_inference_steps=K, output_type="np").images


def cosi_images(unet, scheduler, K, generator, **kw):
    """The same run through cosi.sample: the pipeline's initial noise, the scheduler's timesteps as a grid."""
    z_T = randn_tensor((2, 3, 8, 8), generator=generator, dtype=torch.float32)
    s = CosiMultistepScheduler.from_config(scheduler.config)
    s.set_timesteps(K)
    N = s.config.num_train_timesteps
    grid = timestep_to_time(s.timesteps, N)
    if not s.config.set_alpha_to_one:
        grid = torch.cat([grid, timestep_to_time(torch.zeros(1), N)]) if s.timesteps[-1] > 0 else grid
    nfe = K - int(len(grid) == K and not s.config.set_alpha_to_one)
    model = DiffusersEpsModel(unet, scheduler.config)
    noise = None if not s.config.eta else (lambda i, z: randn_tensor(z.shape, generator=generator, dtype=z.dtype))
    out = cosi.sample(model, model.process, "gddim-2m", nfe, z_T=z_T, grid=grid, denoise=s.config.set_alpha_to_one,
                      eta=s.config.eta, tau=s.config.tau, noise=noise, **kw)
    assert out.nfe == model.calls == nfe
    return (out.x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("prediction_type,spacing,one,tau", [
    ("epsilon", "linspace", True, "t"), ("v_prediction", "trailing", False, "t"),
    ("sample", "leading", False, "logsnr"), ("epsilon", "trailing", True, "logsnr"),
])
def test_pipeline_through_the_scheduler_equals_cosi_sample_gddim_2m(unet, prediction_type, spacing, one, tau):
    sched = CosiMultistepScheduler(prediction_type=prediction_type, timestep_spacing=spacing, set_alpha_to_one=one,
                                   tau=tau)
    out = pipeline_images(unet, sched, 8, torch.Generator().manual_seed(0))
    ref = cosi_images(unet, sched, 8, torch.Generator().manual_seed(0))
    assert np.abs(out - ref).max() < 1e-5  # images in [0, 1]


def test_stochastic_steps_use_per_sample_generators(unet):
    sched = CosiMultistepScheduler(eta=0.5)
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    out = pipeline_images(unet, sched, 6, gens(3, 4))
    assert np.abs(out - cosi_images(unet, sched, 6, gens(3, 4))).max() < 1e-5
    # sample j depends on its own generator only: seed 4 alone gives the second image of (3, 4)
    pipe = DDPMPipeline(unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad():
        alone = pipe(batch_size=1, generator=gens(4), num_inference_steps=6, output_type="np").images
    assert np.abs(alone[0] - out[1]).max() < 1e-6
    assert np.abs(out - pipeline_images(unet, CosiMultistepScheduler(), 6, gens(3, 4))).max() > 1e-3


def test_scheduler_interface_custom_timesteps_and_errors(unet, tmp_path):
    s = CosiMultistepScheduler.from_config(DDPMScheduler(beta_schedule="squaredcos_cap_v2").config, eta=0.0)
    assert s.config.beta_schedule == "squaredcos_cap_v2" and s.order == 1 and s.init_noise_sigma == 1.0
    s.save_config(tmp_path)
    assert CosiMultistepScheduler.from_pretrained(tmp_path).config.tau == "t"
    s.set_timesteps(10)
    assert s.timesteps.tolist() == np.linspace(0, 999, 10).round()[::-1].astype(int).tolist()
    c = CosiMultistepScheduler.from_config(s.config)
    c.set_timesteps(timesteps=s.timesteps.tolist())
    assert all(torch.equal(a[1], b[1]) for a, b in zip(s._packed, c._packed))
    x = torch.randn(2, 3, 8, 8)
    assert s.scale_model_input(x, s.timesteps[0]) is x
    noisy = s.add_noise(x, torch.zeros_like(x), torch.tensor([999, 0]))
    assert torch.allclose(noisy[1], s.alphas_cumprod[0].sqrt() * x[1])
    out = s.step(x, s.timesteps[0], x, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == x.shape
    with pytest.raises(ValueError, match="in order"):
        s.step(x, s.timesteps[3], x)
    with pytest.raises(ValueError, match="not one of"):
        s.step(x, 7, x)
    with pytest.raises(ValueError, match="eta"):
        s.step(x, s.timesteps[0], x, eta=0.5)
    with pytest.raises(ValueError, match="set_timesteps"):
        CosiMultistepScheduler().step(x, 999, x)
    with pytest.raises(ValueError, match="strictly decreasing"):
        c.set_timesteps(timesteps=[10, 20])

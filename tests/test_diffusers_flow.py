"""CosiFlowMatchScheduler: cosi's gddim-2m on rectified flow inside diffusers' flow pipeline (StableDiffusion3Pipeline
with a tiny random transformer and VAE, no text encoders: the prompt embeddings are passed in)."""

import pytest
import torch

import cosi

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")  # the SD3 pipeline module imports it

from cosi.models.diffusers_scheduler import CosiFlowMatchScheduler  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread


def tiny_pipeline(scheduler):
    from diffusers import AutoencoderKL, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
                                        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
                                        pooled_projection_dim=16, out_channels=4).eval()
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), latent_channels=4,
                        norm_num_groups=4, layers_per_block=1, sample_size=16, shift_factor=0.0,
                        scaling_factor=1.0).eval()
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=None,
                                    tokenizer=None, text_encoder_2=None, tokenizer_2=None, text_encoder_3=None,
                                    tokenizer_3=None)


def conditioning(b=2):
    g = torch.Generator().manual_seed(2)
    return torch.randn(b, 5, 16, generator=g), torch.randn(b, 16, generator=g)


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_the_pipeline_gives_cosi_sample_s_latents(shift):
    """SD3's pipeline stepping CosiFlowMatchScheduler ends where cosi.sample(gddim-2m, rf, denoise=True) on the
    transformer's velocity, from the same latents, on the scheduler's σ grid does (float32 network)."""
    sch = CosiFlowMatchScheduler(shift=shift)
    pipe = tiny_pipeline(sch)
    pe, pp = conditioning()
    lat = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = pipe(prompt_embeds=pe, pooled_prompt_embeds=pp, guidance_scale=1.0, num_inference_steps=6,
                   latents=lat.clone(), height=16, width=16, output_type="latent").images

        def velocity(z, t):
            return pipe.transformer(hidden_states=z, timestep=(t * 1000).float(), encoder_hidden_states=pe,
                                    pooled_projections=pp).sample

        res = cosi.sample(cosi.as_eps_model(velocity, "rf", "flow"), "rf", "gddim-2m", 6, z_T=lat, grid=sch.times,
                          denoise=True)
    assert res.nfe == 6 and sch.timesteps.shape == (6,)
    assert (res.x - out).abs().max() < 1e-4 * out.abs().max()
    other = CosiFlowMatchScheduler(shift=shift)
    other.set_timesteps(3)  # a different run differs: the comparison can fail
    with torch.no_grad():
        coarse = pipe(prompt_embeds=pe, pooled_prompt_embeds=pp, guidance_scale=1.0, num_inference_steps=3,
                      latents=lat.clone(), height=16, width=16, output_type="latent").images
    assert (coarse - out).abs().max() > 1e-2


def test_the_pipeline_decodes_images_and_the_sigmas_follow_flow_match_euler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sch = CosiFlowMatchScheduler(shift=3.0)
    pipe = tiny_pipeline(sch)
    pe, pp = conditioning(1)
    with torch.no_grad():
        img = pipe(prompt_embeds=pe, pooled_prompt_embeds=pp, guidance_scale=1.0, num_inference_steps=4, height=16,
                   width=16, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 16, 16) and torch.isfinite(img).all()
    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(8)
    sch.set_timesteps(8)
    # FlowMatchEuler's shifted σ, the first (σ = 1) clamped to rectified flow's T = 0.999
    assert torch.allclose(sch.timesteps[1:], ref.timesteps[1:], rtol=1e-5)
    assert sch.timesteps[0] == pytest.approx(999.0)


def test_dynamic_shifting_needs_mu_and_bad_sigmas_are_refused():
    sch = CosiFlowMatchScheduler(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match="needs mu"):
        sch.set_timesteps(4)
    sch.set_timesteps(4, mu=0.5)
    assert sch.timesteps.shape == (4,)
    with pytest.raises(ValueError, match="strictly decreasing"):
        CosiFlowMatchScheduler().set_timesteps(sigmas=[0.5, 0.7, 0.2])
    with pytest.raises(ValueError, match="set_timesteps"):
        CosiFlowMatchScheduler().step(torch.zeros(1, 4), 999.0, torch.zeros(1, 4))

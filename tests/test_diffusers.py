"""cosi with diffusers models: the VP adapter and the conjugate scheduler (docs/interop_diffusers.md).

Offline: every model is a tiny, randomly initialized diffusers module built from a config
in this file (no hub access). Agreement is measured relative to the largest entry of the
reference, ``rel(a, b) = max|a − b| / max(1, max|b|)``: an untrained UNet's x̂₀ = (z − σε)/α
reaches ~200 on the linear schedule, where float32 rounding alone is ~1e-5 absolute.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import cosi  # noqa: E402
from cosi.core.grids import time_grid  # noqa: E402
from cosi.core.integrators import conjugate  # noqa: E402
from cosi.core.integrators.gddim import ddim as gddim_ddim  # noqa: E402
from cosi.models.diffusers_adapter import (  # noqa: E402
    DiffusersEpsModel, TabulatedVP, alphas_cumprod_from_config, conjugate_steps, eps_model_from_pipeline,
    match_ddim, timestep_to_time, vp_from_scheduler_config,
)
from cosi.core.processes import f64, vp  # noqa: E402

from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DConditionModel, UNet2DModel  # noqa: E402

from cosi.models.diffusers_scheduler import CosiConjugateScheduler  # noqa: E402

SCHEDULES = {
    "linear": {},
    "scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012},
    "squaredcos_cap_v2": {},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.one_thread


def rel(a, b) -> float:
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def tiny_unet(seed=0, channels=3) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        norm_num_groups=8, layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def config(**kw) -> dict:
    """An explicit DDIM config (no '_use_default_values': from_config then keeps every key)."""
    s = DDIMScheduler(**kw)
    return {k: v for k, v in s.config.items() if not k.startswith("_")}


def ddim_loop(unet, sched, z, K, **unet_kw):
    sched.set_timesteps(K)
    with torch.no_grad():
        for t in sched.timesteps:
            z = sched.step(unet(z, t, **unet_kw).sample, t, z).prev_sample
    return z


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.fixture(scope="module")
def z_T():
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


# ---- the process ------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", list(SCHEDULES) + ["sigmoid"])
def test_schedule_and_process_match_diffusers(schedule):
    S = DDPMScheduler if schedule == "sigmoid" else DDIMScheduler
    sched = S(beta_schedule=schedule, num_train_timesteps=500, **SCHEDULES.get(schedule, {}))
    ac = alphas_cumprod_from_config(sched.config)
    assert torch.equal(ac, sched.alphas_cumprod.to(f64))  # bitwise: the table the model saw
    p = vp_from_scheduler_config(sched)
    assert isinstance(p, TabulatedVP) and p.name == "vp" and p.num_train_timesteps == 500
    n = torch.arange(500)
    m = p.marginal(timestep_to_time(n, 500))
    assert torch.allclose(m.psi[:, 0] ** 2, ac, rtol=1e-13, atol=0)  # α(t_n)² = ᾱ_n
    assert torch.allclose(m.psi[:, 0] ** 2 + m.L[:, 0, 0] ** 2, torch.ones(500, dtype=f64), atol=1e-14)
    # piecewise-constant β: one DDPM step = one piece, β = −N log(1 − β_n) ≈ N β_n
    beta = p.beta(timestep_to_time(n, 500) - 0.5 / 500)
    log_ac = torch.cat([torch.zeros(1, dtype=f64), ac.log()])
    assert torch.allclose(beta, 500 * (log_ac[:-1] - log_ac[1:]), rtol=1e-10)
    betas = sched.betas.to(f64)  # the same up to the float32 rounding of diffusers' cumprod
    assert torch.allclose(beta, -500 * torch.log1p(-betas), rtol=2e-3)
    t = torch.rand(1000, dtype=f64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(p.b_inverse(p.b(t)), t, atol=1e-12)
    assert p.t_min == 1 / 500 and p.T == 1.0
    assert p == vp_from_scheduler_config(sched.config) and hash(p) == hash(vp_from_scheduler_config(sched))
    assert p != vp()


def test_zero_terminal_snr_is_refused():
    with pytest.raises(ValueError, match="zero terminal SNR"):
        vp_from_scheduler_config(config(rescale_betas_zero_snr=True))
    with pytest.raises(ValueError, match="zero terminal SNR"):
        CosiConjugateScheduler(rescale_betas_zero_snr=True)


# ---- conjugate coefficients ---------------------------------------------------------------------


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_conjugate_steps_lam0_is_ddim_and_matches_closed_form(schedule):
    sched = DDIMScheduler(beta_schedule=schedule, **SCHEDULES[schedule])
    p = vp_from_scheduler_config(sched)
    for K in (5, 50):
        sched.set_timesteps(K)
        ts = timestep_to_time(sched.timesteps, 1000)
        Cz, Ce = conjugate_steps(p, ts[:-1], ts[1:], 0.0)
        Cz2, Ce2, _ = gddim_ddim(p, ts)
        assert (Cz / Cz2 - 1).abs().max() < 1e-13 and (Ce - Ce2).abs().max() < 1e-13
        # λ ≠ 0, closed form for k = 1 (math.md §2, A_u = e^{λ(u − t_ref)} α_ref/α_u):
        # C_z = e^{λΔ} (α_s/α_t)(1 − λΔ), C_ε = −α_s ∫_s^t e^{λ(u−s)} dρ(u), ρ = σ/α.
        lam = 0.7
        Cz, Ce = conjugate_steps(p, ts[:-1], ts[1:], lam)
        t, s = ts[:-1], ts[1:]
        mt, ms = p.marginal(t), p.marginal(s)
        d = t - s
        cz = torch.exp(lam * d) * ms.psi[:, 0] / mt.psi[:, 0] * (1 - lam * d)
        assert torch.allclose(Cz[:, 0, 0], cz, rtol=1e-12)
        # exact Stieltjes sum over a fine partition of each piece: ρ is smooth inside a piece
        for i in (0, len(t) - 1):
            u = torch.linspace(float(s[i]), float(t[i]), 20001, dtype=f64)
            u = torch.unique(torch.cat([u, p.knots[(p.knots > s[i]) & (p.knots < t[i])]]))
            rho = p.marginal(u).L[:, 0, 0] / p.marginal(u).psi[:, 0]
            mid = 0.5 * (u[1:] + u[:-1])
            # midpoint rule for ∫ e^{λ(u−s)} dρ: error O(h²) ~ 1e-9 here
            ref = -ms.psi[i, 0] * (torch.exp(lam * (mid - s[i])) * (rho[1:] - rho[:-1])).sum()
            assert abs(float(Ce[i, 0, 0] - ref)) < 1e-8 * abs(float(ref))


def test_conjugate_steps_equals_cosi_conjugate_where_no_knot_is_crossed():
    # a smooth process: the same numbers as cosi's conjugate()
    p = vp()
    ts = time_grid(p, 12, "quadratic")
    a, b, _ = conjugate.lambda_ddim_1(p, ts, 0.4)
    c, d = conjugate_steps(p, ts[:-1], ts[1:], 0.4)
    assert (a - c).abs().max() < 1e-14 and (b - d).abs().max() < 1e-14
    # the tabulated process on its own knots (every step one piece): again the same
    p = vp_from_scheduler_config(config(num_train_timesteps=100))
    ts = timestep_to_time(torch.arange(99, -1, -1), 100)
    a, b, _ = conjugate.lambda_ddim_1(p, ts, -0.5)
    c, d = conjugate_steps(p, ts[:-1], ts[1:], -0.5)
    assert (a / c - 1).abs().max() < 1e-12 and (b / d - 1).abs().max() < 1e-10


# ---- (a) cosi's ddim through the adapter = diffusers' DDIMScheduler ------------------------------


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("set_alpha_to_one,steps_offset,schedule",
                         [(True, 0, "linear"), (False, 0, "linear"), (False, 1, "scaled_linear"),
                          (True, 1, "squaredcos_cap_v2")])
def test_cosi_ddim_through_adapter_equals_diffusers_ddim(unet, z_T, prediction_type, set_alpha_to_one,
                                                         steps_offset, schedule):
    cfg = config(prediction_type=prediction_type, set_alpha_to_one=set_alpha_to_one, clip_sample=False,
                 steps_offset=steps_offset, beta_schedule=schedule, **SCHEDULES[schedule])
    ddim = DDIMScheduler.from_config(cfg)
    ref = ddim_loop(unet, ddim, z_T.clone(), 10)
    kw = match_ddim(ddim)
    # diffusers' last step: to ᾱ = 1 (cosi: final denoising call) or to ᾱ_0 (a step to t_0,
    # the identity — and one network call fewer — when the last timestep is 0)
    assert kw["denoise"] == set_alpha_to_one
    assert kw["nfe"] == (9 if (not set_alpha_to_one and steps_offset == 0) else 10)
    model = DiffusersEpsModel(unet, ddim.config)
    out = cosi.sample(model, model.process, "ddim", z_T=z_T.clone(), **kw)
    assert out.nfe == model.calls == kw["nfe"]
    assert rel(out.x, ref) < 1e-5
    out64 = cosi.sample(model, model.process, "ddim", z_T=z_T.to(f64), **kw)  # cosi in float64
    assert rel(out64.x.float(), ref) < 1e-5


def test_adapter_timesteps_and_conversions(unet, z_T):
    m = DiffusersEpsModel(unet, config(prediction_type="v_prediction"))
    t = timestep_to_time(torch.tensor([999, 500, 0]), 1000).float()  # float32 times
    assert m.timesteps(t).tolist() == [999.0, 500.0, 0.0]  # snapped to the trained integers
    assert m.timesteps(torch.tensor([0.5005], dtype=f64)).item() == pytest.approx(499.5)
    m.timestep_mode = "round"
    assert m.timesteps(torch.tensor([0.5007, 1e-5], dtype=f64)).tolist() == [500.0, 0.0]
    # v-prediction: ε = α v + σ z, the same ε as DDIMScheduler's pred_epsilon
    m.timestep_mode = "snap"
    ddim = DDIMScheduler.from_config(config(prediction_type="v_prediction", clip_sample=False))
    ddim.set_timesteps(10)
    tau = int(ddim.timesteps[3])
    with torch.no_grad():
        v = unet(z_T, tau).sample
    ac = ddim.alphas_cumprod[tau]
    eps_ref = ac**0.5 * v + (1 - ac) ** 0.5 * z_T
    eps = m(z_T, timestep_to_time(torch.full((2,), tau), 1000).float())
    assert rel(eps, eps_ref) < 1e-6
    with pytest.raises(ValueError, match="guidance_scale"):
        DiffusersEpsModel(unet, config(), guidance_scale=3.0)


# ---- (b) the scheduler with λ = 0 is DDIM ----------------------------------------------------------


@pytest.mark.parametrize("spacing,K", [("leading", 10), ("trailing", 10), ("linspace", 7), ("trailing", 7)])
@pytest.mark.parametrize("prediction_type,clip,threshold",
                         [("epsilon", True, False), ("v_prediction", False, False), ("sample", False, True)])
def test_scheduler_lam0_equals_ddim_loop(unet, z_T, spacing, K, prediction_type, clip, threshold):
    cfg = config(timestep_spacing=spacing, prediction_type=prediction_type, clip_sample=clip,
                 thresholding=threshold, sample_max_value=2.0, set_alpha_to_one=spacing != "trailing")
    ref = ddim_loop(unet, DDIMScheduler.from_config(cfg), z_T.clone(), K)
    ours = CosiConjugateScheduler.from_config(cfg, lam=0.0)
    out = ddim_loop(unet, ours, z_T.clone(), K)
    assert torch.equal(ours.timesteps, _timesteps(cfg, K))
    assert rel(out, ref) <= 1e-6  # measured: bitwise equal (0.0)
    lam = CosiConjugateScheduler.from_config(cfg, lam=0.5)
    assert rel(ddim_loop(unet, lam, z_T.clone(), K), ref) > 1e-3  # λ ≠ 0 is another integrator


def _timesteps(cfg, K):
    s = DDIMScheduler.from_config(cfg)
    s.set_timesteps(K)
    return s.timesteps


def test_scheduler_in_ddpm_pipeline(unet):
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())  # DDPM's config: clip_sample=True
    pipe.set_progress_bar_config(disable=True)

    def run(scheduler):
        pipe.scheduler = scheduler
        g = torch.Generator().manual_seed(0)
        images = pipe(batch_size=2, generator=g, num_inference_steps=10, output_type="pt").images
        return torch.as_tensor(np.asarray(images))  # older diffusers return numpy here

    base = pipe.scheduler.config
    ref = run(DDIMScheduler.from_config(base))
    out = run(CosiConjugateScheduler.from_config(base, lam=0.0))
    assert isinstance(pipe.scheduler, CosiConjugateScheduler) and pipe.scheduler.config.clip_sample
    assert (out - ref).abs().max() <= 1e-6  # images in [0, 1]; measured: bitwise equal
    assert (run(CosiConjugateScheduler.from_config(base, lam=0.3)) - ref).abs().max() > 1e-3


def test_scheduler_config_round_trip(tmp_path):
    s = CosiConjugateScheduler.from_config(DDPMScheduler(beta_schedule="squaredcos_cap_v2").config, lam=0.3)
    assert s.config.lam == 0.3 and s.config.beta_schedule == "squaredcos_cap_v2"
    s.save_config(tmp_path)
    s2 = CosiConjugateScheduler.from_pretrained(tmp_path)
    s3 = CosiConjugateScheduler.from_config(CosiConjugateScheduler.load_config(tmp_path))
    for other in (s2, s3):
        assert {k: v for k, v in other.config.items() if not k.startswith("_")} == \
            {k: v for k, v in s.config.items() if not k.startswith("_")}
    s.set_timesteps(8)
    s2.set_timesteps(8)
    assert torch.equal(s.conjugate_coefficients[0], s2.conjugate_coefficients[0])
    # and back to a diffusers scheduler: lam is just an extra key
    d = DDIMScheduler.from_config(s.config)
    assert d.config.beta_schedule == "squaredcos_cap_v2"
    assert s.init_noise_sigma == 1.0 and s.order == 1 and len(s) == 1000
    x = torch.randn(1, 3, 4, 4)
    assert s.scale_model_input(x, s.timesteps[0]) is x


def test_pipeline_with_our_scheduler_saves_and_loads(unet, tmp_path):
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    pipe.scheduler = CosiConjugateScheduler.from_config(pipe.scheduler.config, lam=0.3)
    pipe.save_pretrained(tmp_path)
    # model_index.json names ('cosi.models.diffusers_scheduler', 'CosiConjugateScheduler'); diffusers
    # loads it once that module is imported (it is, above)
    again = DDPMPipeline.from_pretrained(tmp_path)
    assert isinstance(again.scheduler, CosiConjugateScheduler) and again.scheduler.config.lam == 0.3


def test_scheduler_custom_timesteps_and_errors(unet, z_T):
    cfg = config(clip_sample=False)
    a = CosiConjugateScheduler.from_config(cfg, lam=0.3)
    a.set_timesteps(10)
    b = CosiConjugateScheduler.from_config(cfg, lam=0.3)
    b.set_timesteps(timesteps=a.timesteps.tolist())  # leading spacing: prev = next timestep
    assert torch.equal(a.conjugate_coefficients[1], b.conjugate_coefficients[1])
    with pytest.raises(ValueError, match="deterministic"):
        a.step(z_T, a.timesteps[0], z_T, eta=0.5)
    with pytest.raises(ValueError, match="not one of"):
        a.step(z_T, 7, z_T)
    with pytest.raises(ValueError, match="set_timesteps"):
        CosiConjugateScheduler().step(z_T, 999, z_T)
    out = a.step(z_T, a.timesteps[0], z_T, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == z_T.shape


# ---- (b) in a text-conditioned StableDiffusionPipeline with classifier-free guidance -------------


@pytest.fixture(scope="module")
def sd_pipe():
    transformers = pytest.importorskip("transformers")
    from diffusers import AutoencoderKL, StableDiffusionPipeline

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), norm_num_groups=8,
        layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16, attention_head_dim=2,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16), norm_num_groups=8, layers_per_block=1,
        latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()
    tokenizer = tiny_clip_tokenizer(transformers)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    )).eval()
    # Stable Diffusion 1.x's scheduler config (as DDIMScheduler.from_pretrained(...) gives it)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_clip_tokenizer(transformers):
    """A CLIP BPE tokenizer over single letters, built offline (no merges, no vocab download)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    try:  # transformers >= 5: vocab and merges in memory
        return transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    except TypeError:  # transformers 4.x: files
        import json
        import tempfile
        d = tempfile.mkdtemp()
        with open(f"{d}/vocab.json", "w") as f:
            json.dump(vocab, f)
        with open(f"{d}/merges.txt", "w") as f:
            f.write("#version: 0.2\n")
        return transformers.CLIPTokenizer(f"{d}/vocab.json", f"{d}/merges.txt", model_max_length=16)


def test_scheduler_in_stable_diffusion_pipeline_with_cfg(sd_pipe):
    pipe = sd_pipe
    base = pipe.scheduler.config
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ids = pipe.tokenizer("a red cat").input_ids
    assert len(set(ids)) > 3  # the tiny tokenizer really tokenizes

    def run(scheduler, steps=10):
        pipe.scheduler = scheduler
        return pipe("a red cat", height=16, width=16, num_inference_steps=steps, guidance_scale=5.0,
                    latents=latents.clone(), output_type="latent").images

    try:
        ref = run(DDIMScheduler.from_config(base))
        out = run(CosiConjugateScheduler.from_config(base, lam=0.0))
        assert rel(out, ref) <= 1e-6  # measured: bitwise equal
        out3 = run(CosiConjugateScheduler.from_config(base, lam=0.3))
        assert rel(out3, ref) > 1e-3

        # the same guided model through the adapter and cosi.sample('ddim') (CFG in the adapter)
        model = eps_model_from_pipeline(pipe, "a red cat", guidance_scale=5.0)
        assert model.guided and model.process == vp_from_scheduler_config(base)
        ddim = DDIMScheduler.from_config(base)
        ddim.set_timesteps(10)
        res = cosi.sample(model, model.process, "ddim", z_T=latents.clone(), **match_ddim(ddim))
        assert rel(res.x, ref) < 1e-5
        # and a decoded image from the pipeline with our scheduler
        pipe.scheduler = CosiConjugateScheduler.from_config(base, lam=0.3)
        img = pipe("a red cat", height=16, width=16, num_inference_steps=3, guidance_scale=5.0,
                   output_type="np").images
        assert img.shape == (1, 16, 16, 3) and np.isfinite(img).all()
    finally:
        pipe.scheduler = DDIMScheduler.from_config(base)


# ---- (c) λ ≠ 0 converges as the steps grow ----------------------------------------------------------


def smooth_in_time(unet: UNet2DModel) -> UNet2DModel:
    """An untrained UNet's sinusoidal time features of frequency ~1/timestep make ε oscillate
    in t (a trained one is smooth in t); drop those features so that the probability-flow
    ODE has a smooth right-hand side and a convergence test means something."""
    unet = copy.deepcopy(unet)
    with torch.no_grad():
        emb = unet.time_proj(torch.arange(1000.0))
        fast = (emb[1:] - emb[:-1]).abs().max(0).values > 0.05
        unet.time_embedding.linear_1.weight[:, fast] = 0.0
    return unet


def test_lambda_ddim_converges_to_the_1000_step_reference(unet, z_T):
    net = smooth_in_time(unet)
    # trailing spacing: every run starts at timestep 999 (t = 1) and ends at t_0 (ᾱ_0)
    cfg = config(timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)

    def run(lam, K):
        return ddim_loop(net, CosiConjugateScheduler.from_config(cfg, lam=lam), z_T.clone(), K)

    ref = run(0.0, 1000)
    scale = float(ref.abs().max())
    Ks = (10, 20, 50, 100)
    for lam in (0.3, -0.3):
        errs = [float((run(lam, K) - ref).abs().max()) / scale for K in Ks]
        assert all(b < a for a, b in zip(errs, errs[1:])), errs
        assert errs[-1] < errs[0] / 5, errs  # first order: ~10x from 10 to 100 steps
        assert errs[-1] < 0.01
    assert rel(run(0.3, 10), run(0.0, 10)) > 1e-3


def test_cosi_lambda_ddim_agrees_with_the_scheduler(unet, z_T):
    """cosi.sample('lambda-ddim-1') on the adapter's process is the same integrator; its
    quadrature does not split at the knots of β, hence a small (~1e-4) difference."""
    net = smooth_in_time(unet)
    cfg = config(timestep_spacing="trailing", set_alpha_to_one=False, clip_sample=False)
    s = CosiConjugateScheduler.from_config(cfg, lam=0.3)
    ref = ddim_loop(net, s, z_T.clone(), 10)
    grid = torch.cat([timestep_to_time(s.timesteps, 1000), timestep_to_time(torch.tensor([0]), 1000)])
    model = DiffusersEpsModel(net, cfg)
    out = cosi.sample(model, model.process, "lambda-ddim-1", 10, z_T=z_T.clone(), grid=grid, lam=0.3)
    assert rel(out.x, ref) < 1e-2
    cz, ce, _ = conjugate.lambda_ddim_1(model.process, grid, 0.3)
    assert torch.allclose(cz[:, 0, 0], s.conjugate_coefficients[0], rtol=1e-12)
    assert torch.allclose(ce[:, 0, 0], s.conjugate_coefficients[1], rtol=1e-2)
    assert math.isfinite(float(out.x.abs().max()))

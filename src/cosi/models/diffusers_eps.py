"""A diffusers UNet as a cosi eps-model (:class:`DiffusersEpsModel`).

The UNet is evaluated at timestep N t − 1 (snapped to the nearest integer when it is one up
to rounding; continuous in between), and its ``v_prediction`` (ε = α v + σ z) or ``sample``
(ε = (z − α x̂₀)/σ) output is converted to ε, with optional classifier-free guidance. Its
process is :func:`cosi.models.diffusers_schedule.vp_from_scheduler_config` of the model's
scheduler (docs/interop_diffusers.md).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from ..core.predictions import eps_from
from ..core.processes import f64
from .diffusers_schedule import config_get, scheduler_config, time_to_timestep, timestep_to_time, vp_from_scheduler_config

__all__ = ["DiffusersEpsModel", "eps_model_from_pipeline", "PREDICTION_TYPES", "prediction_to_eps"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def prediction_to_eps(prediction_type: str, raw: Tensor, z: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """ε from a VP model's raw output, z = α x₀ + σ ε (α, σ broadcastable to z): 'epsilon' as is,
    'v_prediction' (v = α ε − σ x₀) ε = α v + σ z, 'sample' (raw = x̂₀) ε = (z − α x̂₀)/σ — diffusers'
    names for cosi's one conversion, :func:`cosi.core.predictions.eps_from`."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    return eps_from(prediction_type, raw, z, alpha, sigma)


def _batch(x, B: int):
    """Expand a conditioning tensor of batch 1 to B; leave other values alone."""
    if isinstance(x, Tensor) and x.dim() > 0 and x.shape[0] == 1 and B > 1:
        return x.expand(B, *x.shape[1:])
    return x


class DiffusersEpsModel:
    """A diffusers UNet as a cosi eps-model ``eps_model(z, t)`` on :attr:`process`.

    Args:
        unet: ``UNet2DModel``, ``UNet2DConditionModel`` or any module called as
            ``unet(x, timesteps, **kwargs, return_dict=False)[0]``.
        scheduler: the model's diffusers scheduler or its config (num_train_timesteps,
            beta_schedule / trained_betas, beta_start, beta_end, prediction_type).
        prediction_type: overrides the config's: 'epsilon', 'v_prediction' or 'sample'.
        cond: keyword arguments of the (conditional) UNet call, e.g.
            ``{"encoder_hidden_states": text_emb}`` or ``{"class_labels": y}``; tensors of
            batch 1 are expanded to the state's batch.
        uncond: the same keys for the unconditional call (e.g. the empty prompt's
            embedding); needed when ``guidance_scale != 1``.
        guidance_scale: classifier-free guidance w: out = out_u + w (out_c − out_u), on the
            raw model output as diffusers' pipelines do (the conversion to ε is affine with
            weights summing to one, so guiding ε is the same). One batched call of 2B.
        encoder_hidden_states, negative_encoder_hidden_states: shorthands for
            ``cond["encoder_hidden_states"]`` and ``uncond["encoder_hidden_states"]``.
        timestep_mode: 'snap' (default): the UNet gets n = N t − 1, rounded when within
            ``snap_tol`` of an integer (so a grid of t_n feeds exact integer timesteps
            despite float32 times), fractional otherwise; 'continuous': never rounded;
            'round': always rounded to the nearest trained timestep (clamped to [0, N−1]).
        no_grad: run the UNet under ``torch.no_grad()`` (default True).
        **unet_kwargs: further keyword arguments for every UNet call (e.g.
            ``cross_attention_kwargs``), not duplicated for guidance.

    ``process`` is :func:`vp_from_scheduler_config` of the scheduler; pass it, with this
    model, to ``cosi.sample``. A UNet whose output has twice the input's channels (learned
    variance) contributes its first half.
    """

    def __init__(self, unet, scheduler, *, prediction_type: str | None = None,
                 cond: Mapping | None = None, uncond: Mapping | None = None,
                 guidance_scale: float = 1.0, encoder_hidden_states: Tensor | None = None,
                 negative_encoder_hidden_states: Tensor | None = None, timestep_mode: str = "snap",
                 snap_tol: float = 1e-3, no_grad: bool = True, **unet_kwargs):
        cfg = scheduler_config(scheduler)
        self.unet = unet
        self.process = vp_from_scheduler_config(cfg)
        self.num_train_timesteps = self.process.num_train_timesteps
        self.prediction_type = prediction_type or config_get(cfg, "prediction_type", "epsilon") or "epsilon"
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if timestep_mode not in ("snap", "continuous", "round"):
            raise ValueError(f"timestep_mode must be 'snap', 'continuous' or 'round', got {timestep_mode!r}")
        self.timestep_mode, self.snap_tol = timestep_mode, float(snap_tol)
        self.cond = dict(cond or {})
        self.uncond = dict(uncond or {}) if uncond is not None else None
        if encoder_hidden_states is not None:
            self.cond["encoder_hidden_states"] = encoder_hidden_states
        if negative_encoder_hidden_states is not None:
            self.uncond = {**(self.uncond or {}), "encoder_hidden_states": negative_encoder_hidden_states}
        self.guidance_scale = float(guidance_scale)
        if self.guided and self.uncond is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs the unconditional inputs: pass uncond= "
                             "or negative_encoder_hidden_states=")
        if self.guided and set(self.uncond) != set(self.cond):
            raise ValueError(f"cond and uncond must have the same keys for guidance, got {sorted(self.cond)} "
                             f"and {sorted(self.uncond)}")
        self.no_grad = bool(no_grad)
        self.unet_kwargs = unet_kwargs
        self.calls = 0

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def timesteps(self, t: Tensor) -> Tensor:
        """The (float64) UNet timesteps of continuous times t."""
        n = time_to_timestep(t.to(f64), self.num_train_timesteps)
        r = n.round()
        if self.timestep_mode == "round":
            return r.clamp(0, self.num_train_timesteps - 1)
        if self.timestep_mode == "snap":
            return torch.where((n - r).abs() <= self.snap_tol, r, n)
        return n

    def _unet(self, x: Tensor, n: Tensor, kwargs: dict) -> Tensor:
        dtype = getattr(self.unet, "dtype", x.dtype)
        x = x.to(dtype if isinstance(dtype, torch.dtype) else x.dtype)
        out = self.unet(x, n.to(torch.float32), **kwargs, **self.unet_kwargs, return_dict=False)
        return out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)

    def raw(self, z: Tensor, t: Tensor) -> Tensor:
        """The (guided) raw model output at continuous times t, in z's dtype."""
        B = z.shape[0]
        n = self.timesteps(t).to(z.device)
        if self.guided:
            kw = {}
            for key, c in self.cond.items():
                u = self.uncond[key]
                if isinstance(c, Tensor):
                    kw[key] = torch.cat([_batch(u, B), _batch(c, B)])
                elif c != u:
                    raise ValueError(f"non-tensor conditioning {key!r} differs between cond and uncond")
                else:
                    kw[key] = c
            out = self._unet(torch.cat([z, z]), torch.cat([n, n]), kw).to(z.dtype)
            out_u, out_c = out.chunk(2)
            out = out_u + self.guidance_scale * (out_c - out_u)
        else:
            kw = {key: _batch(c, B) for key, c in self.cond.items()}
            out = self._unet(z, n, kw).to(z.dtype)
        if out.shape[1] == 2 * z.shape[1] and out.shape[1] != z.shape[1]:
            out = out[:, : z.shape[1]]  # learned variance: keep the mean part
        return out

    def eps(self, raw: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Convert a raw model output at times t to ε (z = α x₀ + σ ε)."""
        if self.prediction_type == "epsilon":
            return raw
        n = self.timesteps(t)
        m = self.process.marginal(timestep_to_time(n, self.num_train_timesteps))
        shape = (-1,) + (1,) * (z.dim() - 1)
        a = m.psi[:, 0].to(device=z.device, dtype=z.dtype).view(shape)
        s = m.L[:, 0, 0].to(device=z.device, dtype=z.dtype).view(shape)
        return prediction_to_eps(self.prediction_type, raw, z, a, s)

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=z.device)
        if t.dim() == 0:
            t = t.expand(z.shape[0])
        ctx = torch.no_grad() if self.no_grad else _null()
        with ctx:
            out = self.eps(self.raw(z, t), z, t)
        self.calls += 1
        return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def eps_model_from_pipeline(pipe, prompt=None, *, guidance_scale: float = 1.0,
                            negative_prompt=None, **kwargs) -> DiffusersEpsModel:
    """A :class:`DiffusersEpsModel` from a loaded diffusers pipeline (``pipe.unet``,
    ``pipe.scheduler``); with a ``prompt``, its text embeddings come from
    ``pipe.encode_prompt`` (StableDiffusionPipeline and relatives)."""
    if prompt is None:
        return DiffusersEpsModel(pipe.unet, pipe.scheduler, guidance_scale=guidance_scale, **kwargs)
    device = getattr(pipe, "_execution_device", None) or pipe.unet.device
    cond, uncond = pipe.encode_prompt(prompt, device, 1, guidance_scale != 1.0,
                                      negative_prompt=negative_prompt)[:2]
    return DiffusersEpsModel(pipe.unet, pipe.scheduler, guidance_scale=guidance_scale,
                             encoder_hidden_states=cond,
                             negative_encoder_hidden_states=uncond if guidance_scale != 1.0 else None,
                             **kwargs)


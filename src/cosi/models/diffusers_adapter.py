"""Use diffusers models (UNet2DModel, UNet2DConditionModel) with cosi's samplers.

A diffusers model is trained on the *discrete* DDPM schedule: timesteps n = 0 … N−1 with
``alphas_cumprod[n] = ᾱ_n = Π_{i≤n} (1 − β_i)`` and inputs ``x_n = sqrt(ᾱ_n) x₀ + sqrt(1 − ᾱ_n) ε``.
cosi works in continuous time t ∈ (0, 1] on a VP process ``z_t = α_t x₀ + σ_t ε``. This
module fixes the map between the two (docs/interop_diffusers.md):

* **time**: timestep n ↔ t_n = (n + 1)/N, so n = N−1 is t = T = 1 and n = 0 is the
  process's t_min = 1/N; t = 0 is "ᾱ = 1" (clean data, diffusers' ``set_alpha_to_one``);
* **schedule**: :class:`TabulatedVP`, the VP process with b(t) = −log α_t² *piecewise
  linear* through the knots (0, 0) and (t_n, −log ᾱ_n). Its β(t) is piecewise constant,
  β = −N log(1 − β_n) on (t_{n−1}, t_n] (≈ N β_n: the usual discrete → continuous map), so
  α_{t_n}² = ᾱ_n exactly and the continuous process reproduces every DDPM transition
  q(x_n | x_{n−1}) exactly;
* **model**: :class:`DiffusersEpsModel` evaluates the UNet at timestep N t − 1 (snapped to
  the nearest integer when it is one up to rounding; continuous in between) and converts
  ``v_prediction`` (ε = α v + σ z) and ``sample`` (ε = (z − α x̂₀)/σ) outputs to ε, with
  optional classifier-free guidance.

The conjugate-integrator coefficients of a TabulatedVP are computed by
:func:`conjugate_steps`: cosi's own float64 machinery (``conjugate_A`` and
``phi_increments`` of math.md §2) with every integral split at the knots of β, where the
integrand jumps, so they are exact to ~1e−13 (B = 0 gives DDIM to 1e−14).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from ..core.integrators.coefficients import as_matrix, conjugate_A, eye, phi_increments
from ..core.processes import LinearProcess, as_time, f64

__all__ = [
    "TabulatedVP", "DiffusersEpsModel", "betas_from_config", "alphas_cumprod_from_config",
    "vp_from_alphas_cumprod", "vp_from_scheduler_config", "timestep_to_time", "time_to_timestep",
    "conjugate_steps", "denoise_coefficients", "match_ddim", "eps_model_from_pipeline",
]

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


# ---- the discrete schedule, exactly as diffusers builds it ---------------------------------


def _get(config, name, default=None):
    if isinstance(config, Mapping):
        return config.get(name, default)
    return getattr(config, name, default)


def scheduler_config(scheduler_or_config) -> Mapping:
    """The config mapping of a diffusers scheduler, or the mapping itself."""
    cfg = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(cfg, Mapping):
        raise TypeError("expected a diffusers scheduler or its config (a mapping with num_train_timesteps, "
                        f"beta_schedule, ...), got {type(scheduler_or_config).__name__}")
    return cfg


def _cosine_betas(n: int, max_beta: float = 0.999) -> Tensor:
    """diffusers' ``betas_for_alpha_bar(n)`` (GLIDE's squared-cosine schedule)."""
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)],
                        dtype=torch.float32)


def betas_from_config(config) -> Tensor:
    """The float32 β_n of a diffusers scheduler config, computed exactly as diffusers'
    DDPMScheduler/DDIMScheduler do (``trained_betas``, or ``beta_schedule`` in linear,
    scaled_linear, squaredcos_cap_v2, sigmoid)."""
    cfg = scheduler_config(config)
    n = int(_get(cfg, "num_train_timesteps", 1000))
    b0, b1 = float(_get(cfg, "beta_start", 0.0001)), float(_get(cfg, "beta_end", 0.02))
    trained = _get(cfg, "trained_betas")
    schedule = _get(cfg, "beta_schedule", "linear")
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float32)
    elif schedule == "linear":
        betas = torch.linspace(b0, b1, n, dtype=torch.float32)
    elif schedule == "scaled_linear":
        betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float32) ** 2
    elif schedule == "squaredcos_cap_v2":
        betas = _cosine_betas(n)
    elif schedule == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, n)) * (b1 - b0) + b0
    else:
        raise ValueError(f"beta_schedule {schedule!r} is not supported; use one of {SCHEDULES} or "
                         "trained_betas")
    if _get(cfg, "rescale_betas_zero_snr", False):
        raise ValueError("rescale_betas_zero_snr=True makes ᾱ_{N-1} = 0 (zero terminal SNR): the VP "
                         "process would need b(T) = ∞ and α_T = 0, which cosi's conjugate and DDIM "
                         "coefficients (α_s/α_t) cannot represent; use the model with "
                         "rescale_betas_zero_snr=False or a diffusers scheduler")
    return betas


def alphas_cumprod_from_config(config) -> Tensor:
    """ᾱ_n as diffusers computes it (float32 cumprod, the values the model was trained on),
    returned as float64."""
    return torch.cumprod(1.0 - betas_from_config(config), dim=0).to(f64)


# ---- the continuous-time process ------------------------------------------------------------


def timestep_to_time(n, num_train_timesteps: int) -> Tensor:
    """Discrete timestep n (int or float) -> continuous time t_n = (n + 1)/N, float64."""
    return (as_time(n) + 1.0) / num_train_timesteps


def time_to_timestep(t, num_train_timesteps: int) -> Tensor:
    """Continuous time t -> (fractional) timestep n = N t − 1, float64."""
    return as_time(t) * num_train_timesteps - 1.0


@dataclass(frozen=True, eq=False)
class TabulatedVP(LinearProcess):
    """VP process (F = −½, D = 1, Σ₀ = 0) with a tabulated, piecewise-linear b(t).

    Knots τ_j = j/N, j = 0 … N, with b(τ_0) = 0 and b(τ_{n+1}) = −log ᾱ_n: α_{t_n}² = ᾱ_n
    exactly at t_n = (n + 1)/N. On (τ_{j−1}, τ_j] β(t) = N (b(τ_j) − b(τ_{j−1})) is constant
    (= −N log(1 − β_n) for n = j − 1). Outside [0, 1] b is extended linearly with the end
    pieces' β. Everything cosi needs from a process (β, b, b⁻¹, marginals, key) is here, and it is
    variance-preserving (2F + D = 0, Σ₀ = 0), so every VP sampler of cosi runs on it whatever its name; build one with
    :func:`vp_from_alphas_cumprod` or :func:`vp_from_scheduler_config`.
    """

    b_knots: tuple = ()  # b(τ_j), j = 0 … N (b_knots[0] = 0)

    def __post_init__(self):
        super().__post_init__()
        bk = torch.tensor(self.b_knots, dtype=f64)
        n = bk.numel() - 1
        if n < 1 or float(bk[0]) != 0.0:
            raise ValueError("b_knots must start with b(0) = 0 and have N + 1 >= 2 entries")
        if not bool(torch.isfinite(bk).all()) or not bool((bk[1:] > bk[:-1]).all()):
            raise ValueError("ᾱ_n must be strictly decreasing in n and positive (β_n in (0, 1))")
        tau = torch.arange(n + 1, dtype=f64) / n
        object.__setattr__(self, "_tau", tau)
        object.__setattr__(self, "_bk", bk)
        object.__setattr__(self, "_beta", n * (bk[1:] - bk[:-1]))

    # identity: the table is part of the key (plan caches, equality)
    @property
    def key(self) -> tuple:
        return (self.name, "tabulated", self.b_knots, self.T, self.t_min)

    def __eq__(self, other):  # dataclass(eq=False) keeps the parent's methods; restate them
        return isinstance(other, LinearProcess) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    @property
    def constant_beta(self) -> bool:
        return False

    @property
    def num_train_timesteps(self) -> int:
        return len(self.b_knots) - 1

    @property
    def knots(self) -> Tensor:
        """The times where β(t) jumps: τ_j = j/N, j = 1 … N−1 (float64)."""
        return self._tau[1:-1].clone()

    @property
    def alphas_cumprod(self) -> Tensor:
        """ᾱ_n = α_{t_n}², n = 0 … N−1, float64."""
        return torch.exp(-self._bk[1:])

    def to_config(self) -> dict:
        return {"name": "vp", "tabulated": True, "alphas_cumprod": self.alphas_cumprod.tolist(),
                "t_min": self.t_min, "T": self.T, "t_train_min": self.t_train_min}

    def __repr__(self):
        return f"TabulatedVP(N={self.num_train_timesteps}, t_min={self.t_min:g}, T={self.T:g})"

    def _piece(self, t: Tensor) -> Tensor:
        """Index j (1 … N) of the piece (τ_{j−1}, τ_j] that holds t."""
        tau = self._tau.to(t.device)
        j = torch.searchsorted(tau, t.contiguous(), right=False)
        return j.clamp(1, tau.numel() - 1)

    def beta(self, t) -> Tensor:
        t = as_time(t)
        return self._beta.to(t.device)[self._piece(t) - 1]

    def b(self, t) -> Tensor:
        t = as_time(t)
        j = self._piece(t)
        tau, bk, beta = self._tau.to(t.device), self._bk.to(t.device), self._beta.to(t.device)
        return bk[j - 1] + beta[j - 1] * (t - tau[j - 1])

    def b_inverse(self, b) -> Tensor:
        b = as_time(b)
        bk = self._bk.to(b.device)
        j = torch.searchsorted(bk, b.contiguous(), right=False).clamp(1, bk.numel() - 1)
        tau, beta = self._tau.to(b.device), self._beta.to(b.device)
        return tau[j - 1] + (b - bk[j - 1]) / beta[j - 1]


def vp_from_alphas_cumprod(alphas_cumprod, *, t_min: float | None = None) -> TabulatedVP:
    """The continuous VP process of a discrete schedule ᾱ_0 > … > ᾱ_{N−1} > 0 (see
    :class:`TabulatedVP`); t_min defaults to t_0 = 1/N, the smallest trained timestep."""
    ac = torch.as_tensor(alphas_cumprod, dtype=f64).flatten()
    n = ac.numel()
    if n < 2:
        raise ValueError("need at least 2 timesteps")
    if not bool(((ac > 0) & (ac < 1)).all()):
        raise ValueError("every ᾱ_n must lie in (0, 1): zero terminal SNR (ᾱ = 0) cannot be a VP time")
    bk = torch.cat([torch.zeros(1, dtype=f64), -torch.log(ac)])
    t_min = 1.0 / n if t_min is None else float(t_min)
    return TabulatedVP("vp", ((-0.5,),), ((1.0,),), ((0.0,),), T=1.0, t_min=t_min, t_train_min=t_min,
                       params=(("num_train_timesteps", n),), b_knots=tuple(bk.tolist()))


def vp_from_scheduler_config(scheduler_or_config, *, t_min: float | None = None) -> TabulatedVP:
    """The :class:`TabulatedVP` of a diffusers scheduler (or its config)."""
    return vp_from_alphas_cumprod(alphas_cumprod_from_config(scheduler_or_config), t_min=t_min)


# ---- conjugate coefficients, split at the knots ---------------------------------------------


_STEPS_CACHE: "OrderedDict[tuple, tuple[Tensor, Tensor]]" = OrderedDict()


def conjugate_steps(process: LinearProcess, t_from, t_to, B=0.0) -> tuple[Tensor, Tensor]:
    """(C_z, C_ε), float64 (K, k, k), of the conjugate integrator (math.md §2, constant B)
    for the steps t_from[i] → t_to[i] (t_to ≤ t_from; t_to = t_from is the identity):

        z_s = A_s⁻¹ A_t (I + h B) z_t + A_s⁻¹ (Φ_s − Φ_t) ε_t,   h = s − t,

    the formula of ``cosi.core.integrators.conjugate.conjugate`` with A from ``conjugate_A`` and
    Φ from ``phi_increments``, on a grid refined at the process's ``knots`` (if it has any),
    so each quadrature interval sees a smooth integrand. The steps need not share end
    points (diffusers' DDIM timestep rule). On a process without knots and a single grid
    this equals ``conjugate(process, ts, B)``.
    """
    t_from = torch.as_tensor(t_from, dtype=f64).flatten()
    t_to = torch.as_tensor(t_to, dtype=f64).flatten()
    if t_from.shape != t_to.shape:
        raise ValueError("t_from and t_to must have the same length")
    if bool((t_to > t_from).any()) or bool((t_to <= 0).any()):
        raise ValueError("each step must go down in time (t_to <= t_from) and stay at t > 0")
    k = process.k
    Bm = as_matrix(B, k)
    key = (process.key, tuple(t_from.tolist()), tuple(t_to.tolist()), tuple(Bm.flatten().tolist()))
    if key in _STEPS_CACHE:
        _STEPS_CACHE.move_to_end(key)
        return tuple(c.clone() for c in _STEPS_CACHE[key])
    pts = torch.cat([t_from, t_to])
    knots = getattr(process, "knots", None)
    if knots is not None:
        lo, hi = float(pts.min()), float(pts.max())
        pts = torch.cat([pts, knots[(knots > lo) & (knots < hi)]])
    pts = torch.unique(pts).flip(0)  # strictly decreasing
    t_ref = float(pts[-1])
    A = conjugate_A(process, Bm, pts, t_ref)
    dphi = phi_increments(process, Bm, pts, t_ref) if pts.numel() > 1 else None
    i_from = torch.searchsorted(-pts, -t_from)
    i_to = torch.searchsorted(-pts, -t_to)
    zero = torch.zeros(k, k, dtype=f64)
    dPhi = torch.stack([dphi[a:b].sum(0) if b > a else zero
                        for a, b in zip(i_from.tolist(), i_to.tolist())] or [zero])[: t_from.numel()]
    A_inv_s = torch.linalg.inv(A[i_to])
    h = (t_to - t_from)[:, None, None]
    Cz = A_inv_s @ A[i_from] @ (eye(k) + h * Bm)
    Ce = A_inv_s @ dPhi
    _STEPS_CACHE[key] = (Cz, Ce)
    if len(_STEPS_CACHE) > 64:
        _STEPS_CACHE.popitem(last=False)
    return Cz.clone(), Ce.clone()


def denoise_coefficients(process: LinearProcess, t) -> tuple[Tensor, Tensor]:
    """(C_z, C_ε) of the final denoising step at t (Tweedie, cosi's ``denoise=True``):
    x̂₀ = (z − σ_t ε)/α_t on VP, i.e. DDIM's step to ᾱ = 1. Float64 (K, 1, 1)."""
    m = process.marginal(torch.as_tensor(t, dtype=f64).flatten())
    a, s = m.psi[:, 0], m.L[:, 0, 0]
    return (1.0 / a).view(-1, 1, 1), (-s / a).view(-1, 1, 1)


# ---- matching a diffusers DDIM run ----------------------------------------------------------


def match_ddim(scheduler) -> dict:
    """``cosi.sample`` keyword arguments (grid, nfe, denoise) that reproduce a diffusers
    ``DDIMScheduler`` (eta = 0) after its ``set_timesteps``, on the process of
    :func:`vp_from_scheduler_config`.

    diffusers steps timestep τ to τ − N // K (K = num_inference_steps) and, below 0, to
    ``final_alpha_cumprod``: ᾱ = 1 with ``set_alpha_to_one=True`` (cosi: the final
    denoising call at the last grid time, ``denoise=True``) or ᾱ_0 otherwise (cosi: a last
    step to t_0 = 1/N; if the last timestep is 0 itself, that step is the identity and its
    network call is dropped, so nfe is one less than diffusers' calls).
    """
    cfg = scheduler_config(scheduler)
    N = int(cfg["num_train_timesteps"])
    taus = [int(x) for x in scheduler.timesteps.tolist()]
    K = scheduler.num_inference_steps or len(taus)
    stride = N // K
    for a, b in zip(taus[:-1], taus[1:]):
        if a - stride != b:
            raise ValueError(f"the scheduler steps {a} -> {a - stride} but then evaluates at {b} "
                             "(diffusers' DDIM rule with this timestep_spacing); such a run is no "
                             "single cosi grid: use timestep_spacing='leading' or 'trailing' with "
                             "num_train_timesteps divisible by num_inference_steps")
    last = taus[-1] - stride
    if last >= 0:
        raise ValueError(f"the last DDIM step goes to timestep {last} >= 0, not to the end")
    times = [float(timestep_to_time(n, N)) for n in taus]
    one = bool(cfg.get("set_alpha_to_one", True))
    if one:
        return {"grid": torch.tensor(times, dtype=f64), "nfe": len(times), "denoise": True}
    if taus[-1] != 0:
        times.append(float(timestep_to_time(0, N)))
    return {"grid": torch.tensor(times, dtype=f64), "nfe": len(times) - 1, "denoise": False}


# ---- the eps-model -------------------------------------------------------------------------


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
        self.prediction_type = prediction_type or _get(cfg, "prediction_type", "epsilon") or "epsilon"
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be 'epsilon', 'v_prediction' or 'sample', got "
                             f"{self.prediction_type!r}")
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
        if self.prediction_type == "v_prediction":  # v = α ε − σ x₀
            return a * raw + s * z
        return (z - a * raw) / s  # 'sample': raw = x̂₀

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


"""A diffusers scheduler for cosi's conjugate integrators on VP (λ-DDIM-I, math.md §2).

    from diffusers import StableDiffusionPipeline
    from cosi.models.diffusers_scheduler import CosiConjugateScheduler

    pipe.scheduler = CosiConjugateScheduler.from_config(pipe.scheduler.config, lam=0.3)
    image = pipe(prompt, num_inference_steps=10).images[0]

The config is DDIMScheduler's (same defaults, same timesteps for every
``timestep_spacing``, same final-step conventions) plus ``lam``. Each step t → s is the
conjugate integrator with B = λ I on the VP process whose α_t² matches ``alphas_cumprod``
at t_n = (n + 1)/N (:class:`cosi.models.diffusers_schedule.TabulatedVP`):

    z_s = C_z z_t + C_ε ε_t,   C_z = A_s⁻¹ A_t (1 + λ (s − t)),   C_ε = A_s⁻¹ (Φ_s − Φ_t),

with float64 coefficients from cosi's conjugate machinery computed once per
``set_timesteps``. λ = 0 is DDIM (η = 0) exactly; λ ≠ 0 integrates the same
probability-flow ODE with a different first-order error. The model output is converted to
ε (and x̂₀) as DDIM does, including ``clip_sample`` / ``thresholding`` of x̂₀: the step
then acts on z' = α_t x̂₀ + σ_t ε, which for λ = 0 is DDIM's α_s x̂₀ + σ_s ε (ε re-derived
from the clipped x̂₀ with ``use_clipped_model_output=True``, as DDIM).
docs/interop_diffusers.md has the details.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

try:
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.utils.torch_utils import randn_tensor
    from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
    from diffusers.utils import BaseOutput
except ImportError as e:  # pragma: no cover - exercised only without diffusers
    raise ImportError("cosi.models.diffusers_scheduler needs diffusers: pip install 'cosi[diffusers]'") from e

from .diffusers_schedule import betas_from_config, timestep_to_time, vp_from_alphas_cumprod
from .diffusers_eps import PREDICTION_TYPES, prediction_to_eps
from .diffusers_steps import conjugate_steps, denoise_coefficients
from ..core.integrators import build_plan
from ..core.integrators.coefficients import data_prediction_weights
from ..core.integrators.plan import Eval, lin_update
from ..core.processes import f64

__all__ = ["CosiConjugateScheduler", "CosiMultistepScheduler", "CosiSchedulerOutput"]


@dataclass
class CosiSchedulerOutput(BaseOutput):
    """``prev_sample``: the state at the next (smaller) timestep; ``pred_original_sample``:
    x̂₀ of this step (after clipping / thresholding)."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class _VPScheduler(SchedulerMixin, ConfigMixin):
    """What both cosi schedulers share: the float32 ᾱ table (as diffusers), DDIM's timestep rules,
    the identity input scaling of VP, ``add_noise`` and ``get_velocity``."""

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    def _set_schedule(self) -> None:
        self.betas = betas_from_config(self.config)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)  # float32, as diffusers
        self.process = vp_from_alphas_cumprod(self.alphas_cumprod.to(f64))
        self.init_noise_sigma = 1.0
        self.num_inference_steps = None
        N = self.config.num_train_timesteps
        self.timesteps = torch.from_numpy(np.arange(0, N)[::-1].copy().astype(np.int64))

    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """The UNet takes the state itself (VP): identity."""
        return sample

    def _timesteps(self, num_inference_steps: int | None, timesteps) -> np.ndarray:
        """The given strictly decreasing custom ``timesteps``, or DDIM's for ``num_inference_steps``."""
        N = self.config.num_train_timesteps
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or timesteps, not both")
            taus = np.asarray(timesteps, dtype=np.int64)
            if taus.ndim != 1 or taus.size < 1 or (np.diff(taus) >= 0).any() or taus[0] >= N or taus[-1] < 0:
                raise ValueError(f"custom timesteps must be strictly decreasing integers in [0, {N - 1}]")
            return taus
        if num_inference_steps is None:
            raise ValueError("set_timesteps needs num_inference_steps (or timesteps)")
        if num_inference_steps > N:
            raise ValueError(f"`num_inference_steps`: {num_inference_steps} cannot be larger than "
                             f"`self.config.train_timesteps`: {N} as the unet model trained with this "
                             f"scheduler can only handle maximal {N} timesteps.")
        return self._ddim_timesteps(num_inference_steps)

    def _ddim_timesteps(self, K: int) -> np.ndarray:
        N, spacing = self.config.num_train_timesteps, self.config.timestep_spacing
        if spacing == "linspace":
            return np.linspace(0, N - 1, K).round()[::-1].copy().astype(np.int64)
        if spacing == "leading":
            ratio = N // K
            return (np.arange(0, K) * ratio).round()[::-1].copy().astype(np.int64) + self.config.steps_offset
        if spacing == "trailing":
            return np.round(np.arange(N, 0, -N / K)).astype(np.int64) - 1
        raise ValueError(f"timestep_spacing {spacing!r} is not supported; use 'leading', 'trailing' or 'linspace'")

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.IntTensor) -> torch.Tensor:
        """x_n = sqrt(ᾱ_n) x₀ + sqrt(1 − ᾱ_n) ε (for img2img-style pipelines)."""
        ac = self.alphas_cumprod.to(device=original_samples.device, dtype=original_samples.dtype)
        ac = ac[timesteps.to(original_samples.device)].flatten()
        shape = (-1,) + (1,) * (original_samples.dim() - 1)
        return ac.sqrt().view(shape) * original_samples + (1 - ac).sqrt().view(shape) * noise

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.IntTensor) -> torch.Tensor:
        """v = sqrt(ᾱ_n) ε − sqrt(1 − ᾱ_n) x₀."""
        ac = self.alphas_cumprod.to(device=sample.device, dtype=sample.dtype)
        ac = ac[timesteps.to(sample.device)].flatten()
        shape = (-1,) + (1,) * (sample.dim() - 1)
        return ac.sqrt().view(shape) * noise - (1 - ac).sqrt().view(shape) * sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class CosiConjugateScheduler(_VPScheduler):
    """λ-DDIM-I (cosi's conjugate integrator with B = λ I) as a diffusers scheduler.

    Args: those of ``diffusers.DDIMScheduler`` (``num_train_timesteps``, ``beta_start``,
    ``beta_end``, ``beta_schedule``, ``trained_betas``, ``clip_sample``,
    ``set_alpha_to_one``, ``steps_offset``, ``prediction_type``, ``thresholding``,
    ``dynamic_thresholding_ratio``, ``clip_sample_range``, ``sample_max_value``,
    ``timestep_spacing``; ``rescale_betas_zero_snr=True`` is refused) and

        lam (float, default 0): λ of B = λ I, in units of cosi's VP time t ∈ (0, 1]
            (timestep n ↔ t = (n + 1)/N). 0 reproduces DDIMScheduler (eta = 0).

    A step from timestep τ goes, like DDIM's, to τ − N // K (K = num_inference_steps; to the
    next custom timestep when ``set_timesteps(timesteps=[...])`` was used). Below timestep 0
    it goes to ``final_alpha_cumprod``: with ``set_alpha_to_one`` (ᾱ = 1, t = 0, outside
    cosi's time range) it is the final denoising step x̂₀ = (z − σ ε)/α for every λ (as DDIM
    and cosi's ``denoise=True``); otherwise a conjugate step to t_0 = 1/N.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        clip_sample: bool = True,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading",
        rescale_betas_zero_snr: bool = False,
        lam: float = 0.0,
    ):
        if prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon', 'sample' or 'v_prediction', got {prediction_type!r}")
        self._set_schedule()
        self.final_alpha_cumprod = torch.tensor(1.0) if set_alpha_to_one else self.alphas_cumprod[0]
        self._rows: dict[int, int] = {}
        self._coeffs = None  # float64 (K, 2): r₁, r₂ per step (see _set_coefficients)
        self._prev: list[int] = []
        self.conjugate_coefficients = None
        self._cast = {}

    # ---- diffusers interface -----------------------------------------------------------------

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device = None,
                      timesteps: list[int] | None = None):
        """DDIMScheduler's timesteps (or the given decreasing custom ``timesteps``) and the
        float64 conjugate coefficients of every step, computed once here."""
        N = self.config.num_train_timesteps
        taus = self._timesteps(num_inference_steps, timesteps)
        if timesteps is not None:
            num_inference_steps = int(taus.size)
            prev = np.append(taus[1:], -1)
        else:
            prev = taus - N // num_inference_steps  # DDIM's rule, whatever the spacing
        self.num_inference_steps = int(num_inference_steps)
        self.timesteps = torch.from_numpy(taus.copy()).to(device)
        self._set_coefficients(taus, prev)

    def _set_coefficients(self, taus: np.ndarray, prev: np.ndarray) -> None:
        N = self.config.num_train_timesteps
        p = self.process
        t = timestep_to_time(torch.as_tensor(taus), N)
        to_one = (prev < 0) & bool(self.config.set_alpha_to_one)
        s_idx = np.where(prev < 0, 0, prev)  # ᾱ_prev = ᾱ_0 when not set_alpha_to_one
        s = timestep_to_time(torch.as_tensor(s_idx), N)
        Cz = torch.empty(len(taus), dtype=f64)
        Ce = torch.empty(len(taus), dtype=f64)
        conj = torch.as_tensor(~to_one)
        if bool(conj.any()):
            cz, ce = conjugate_steps(p, t[conj], s[conj], B=float(self.config.lam))
            Cz[conj], Ce[conj] = cz[:, 0, 0], ce[:, 0, 0]
        if bool((~conj).any()):
            cz, ce = denoise_coefficients(p, t[~conj])
            Cz[~conj], Ce[~conj] = cz[:, 0, 0], ce[:, 0, 0]
        self.conjugate_coefficients = (Cz, Ce)  # float64: z_s = C_z z_t + C_ε ε_t per step
        # DDIM form: z_s = C_z (α_t x̂₀ + σ_t ε) + C_ε ε = (α_s r₁) x̂₀ + (σ_s r₂) ε, where
        # r₁ = C_z α_t / α_s = e^{λΔ}(1 − λΔ) (Δ = t − s) and r₂ = (C_z σ_t + C_ε)/σ_s are the
        # conjugate integrator's corrections to DDIM's weights: both are 1 for λ = 0.
        ma, ms = p.marginal(t), p.marginal(s)
        a_t, s_t = ma.psi[:, 0], ma.L[:, 0, 0]
        a_s = torch.where(torch.as_tensor(to_one), torch.ones_like(a_t), ms.psi[:, 0])
        s_s = torch.where(torch.as_tensor(to_one), torch.ones_like(s_t), ms.L[:, 0, 0])
        r1 = Cz * a_t / a_s
        r2 = torch.where(torch.as_tensor(to_one), torch.zeros_like(s_t), (Cz * s_t + Ce) / s_s)
        self._coeffs = torch.stack([r1, r2], 1)
        self._prev = [int(q) if q >= 0 else -1 for q in prev.tolist()]
        self._rows = {int(n): i for i, n in enumerate(taus.tolist())}
        self._cast = {}

    def _row(self, n: int, device, dtype) -> tuple[int, torch.Tensor]:
        if self._coeffs is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after "
                             "creating the scheduler")
        if n not in self._rows:
            raise ValueError(f"timestep {n} is not one of this scheduler's timesteps "
                             f"{list(self._rows)[:4]}...; call set_timesteps first and step through "
                             "scheduler.timesteps")
        key = (device, dtype)
        if key not in self._cast:
            self._cast[key] = self._coeffs.to(device=device, dtype=dtype)
        i = self._rows[n]
        return self._prev[i], self._cast[key][i]

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor, eta: float = 0.0,
             use_clipped_model_output: bool = False, generator: torch.Generator | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True):
        """One conjugate step from ``timestep`` to the previous one (deterministic).

        ``eta`` must be 0 (the conjugate integrator solves the probability-flow ODE);
        ``use_clipped_model_output`` re-derives ε from the clipped x̂₀ (as DDIM);
        ``generator`` and ``variance_noise`` are accepted for pipeline compatibility and unused.
        Returns :class:`CosiSchedulerOutput` or ``(prev_sample, pred_original_sample)``.
        """
        if eta:
            raise ValueError(f"CosiConjugateScheduler is deterministic (eta = 0), got eta={eta}; use "
                             "DDIMScheduler for eta > 0")
        n = int(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
        dtype = sample.dtype if sample.dtype in (torch.float32, torch.float64) else torch.float32
        z = sample.to(dtype)
        out = model_output.to(dtype)
        prev_n, (r1, r2) = self._row(n, sample.device, dtype)
        # x̂₀ and ε as DDIMScheduler computes them, from the float32 ᾱ table
        ac = self.alphas_cumprod[n]
        ac_prev = self.alphas_cumprod[prev_n] if prev_n >= 0 else self.final_alpha_cumprod
        a, s = ac**0.5, (1 - ac) ** 0.5
        pt = self.config.prediction_type
        if pt == "epsilon":
            x0, eps = (z - s * out) / a, out
        elif pt == "sample":
            x0, eps = out, (z - a * out) / s
        elif pt == "v_prediction":
            x0, eps = a * z - s * out, a * out + s * z
        else:
            raise ValueError(f"prediction_type given as {pt} must be one of `epsilon`, `sample`, or `v_prediction`")
        if self.config.thresholding:
            x0 = self._threshold_sample(x0)
        elif self.config.clip_sample:
            x0 = x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        if use_clipped_model_output and (self.config.thresholding or self.config.clip_sample):
            eps = (z - a * x0) / s
        # z_s = C_z z' + C_ε ε with z' = α_t x̂₀ + σ_t ε (= z_t unless x̂₀ was clipped; then
        # λ = 0 is DDIM's α_s x̂₀ + σ_s ε), written with DDIM's weights times r₁, r₂.
        a_prev = (ac_prev**0.5).to(device=sample.device, dtype=dtype)
        s_prev = ((1 - ac_prev) ** 0.5).to(device=sample.device, dtype=dtype)
        prev = ((a_prev * r1) * x0 + (s_prev * r2) * eps).to(sample.dtype)
        x0 = x0.to(sample.dtype)
        if not return_dict:
            return prev, x0
        return CosiSchedulerOutput(prev_sample=prev, pred_original_sample=x0)

    # Dynamic thresholding of x̂₀ (Imagen), as diffusers' DDIMScheduler._threshold_sample.
    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        dtype = sample.dtype
        batch_size, channels, *rest = sample.shape
        if dtype not in (torch.float32, torch.float64):
            sample = sample.float()
        sample = sample.reshape(batch_size, channels * int(np.prod(rest)))
        q = torch.quantile(sample.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        q = torch.clamp(q, min=1, max=self.config.sample_max_value).unsqueeze(1)
        sample = torch.clamp(sample, -q, q) / q
        return sample.reshape(batch_size, channels, *rest).to(dtype)


class CosiMultistepScheduler(_VPScheduler):
    """cosi's gddim-2m (two-step data prediction, order 2, one network call per step) as a diffusers
    scheduler: x̂₀ held linear in τ through the last two predictions and integrated exactly with the
    point-mass flow (``cosi.core.integrators.gddim.gddim_2m_plan``). On VP with ``tau='logsnr'`` it is
    DPM-Solver++(2M)'s idea; the default ``tau='t'`` holds x̂₀ linear in cosi's time t instead.

    Args: the schedule of ``diffusers.DDIMScheduler`` (``num_train_timesteps``, ``beta_start``,
    ``beta_end``, ``beta_schedule``, ``trained_betas``, ``prediction_type`` in 'epsilon',
    'v_prediction', 'sample', ``timestep_spacing`` in 'linspace', 'leading', 'trailing', ``steps_offset``,
    ``set_alpha_to_one``; ``rescale_betas_zero_snr=True`` is refused) and

        eta (float, default 0): gddim's noise scale η ≥ 0 (0: the probability-flow ODE; η > 0 draws
            noise from the ``generator`` given to ``step``, per sample for a list of generators).
        tau ('t' or 'logsnr'): the variable in which x̂₀ is held linear.

    Timesteps τ_0 > … > τ_{K−1} map to cosi times t_i = (τ_i + 1)/N (docs/interop_diffusers.md). The
    i-th ``step`` goes from t_i to t_{i+1}: the first step is gddim's (first order, no history), the
    others gddim-2m's. The last call: with ``set_alpha_to_one`` (default) the final denoising step
    x̂₀ = (z − σ ε)/α at t_{K−1} (cosi's ``denoise=True``); otherwise a step to t_0 = 1/N (timestep 0),
    or the identity if τ_{K−1} is 0 already. The float64 coefficients are the plan that
    ``cosi.sample(..., "gddim-2m", nfe=K, grid=[t_i], denoise=...)`` runs, built once in ``set_timesteps``;
    ``step`` applies one row of it.
    """

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        timestep_spacing: Literal["leading", "trailing", "linspace"] = "linspace",
        steps_offset: int = 0,
        set_alpha_to_one: bool = True,
        rescale_betas_zero_snr: bool = False,
        eta: float = 0.0,
        tau: Literal["t", "logsnr"] = "t",
    ):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self._set_schedule()
        self.plan = None
        self._rows: dict[int, int] = {}
        self._cast = {}
        self._reg = None  # the multistep history: cosi's register r = z_p − σ_p ε_p of the last step
        self._last = None

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device = None,
                      timesteps: list[int] | None = None):
        """DDIMScheduler's timesteps for ``num_inference_steps`` (or the custom strictly decreasing
        ``timesteps``), and cosi's float64 gddim-2m plan on their times, built once here."""
        N = self.config.num_train_timesteps
        taus = self._timesteps(num_inference_steps, timesteps)
        K = int(taus.size)
        grid = timestep_to_time(torch.as_tensor(taus), N)
        identity_last = False
        if self.config.set_alpha_to_one:
            nfe, denoise = K, True
        elif taus[-1] > 0:
            grid, nfe, denoise = torch.cat([grid, timestep_to_time(torch.zeros(1), N)]), K, False
        else:  # the last timestep is t_0 already: its step is the identity (as DDIM's)
            nfe, denoise, identity_last = K - 1, False, True
        plan = build_plan("gddim-2m", self.process, nfe, grid=grid, denoise=denoise, eta=float(self.config.eta),
                          tau=self.config.tau)
        self._load_plan(plan, grid[:K], [int(n) for n in taus.tolist()], identity_last)
        self.num_inference_steps = K
        self.timesteps = torch.from_numpy(taus.copy()).to(device)

    def _load_plan(self, plan, times: torch.Tensor, keys: list, identity_last: bool = False) -> None:
        """Row i of the scheduler: the linear update after the plan's i-th network call, at times[i], looked up
        by the timestep key keys[i]."""
        self.plan = plan
        ops = plan.ops
        lins = [ops[j + 1] for j, op in enumerate(ops) if isinstance(op, Eval)]
        packed = []
        for lin in lins:  # [C_z | C_ε | C_r | C_ξ], the order of lin_update's parts in step
            Cz, Ce, Cn, Cr = plan.chunks[lin.chunk]
            C = torch.cat([c[lin.row] for c in (Cz, Ce, Cr, Cn) if c is not None], -1)
            S = None if lin.save is None else torch.cat(plan.chunks[lin.save][:2], -1)[lin.row]
            packed.append((lin, C, S))
        m = self.process.marginal(times)
        w = data_prediction_weights(self.process, times)  # x̂₀ = w (z − L ε): pred_original_sample
        self._tables = {
            "alpha": m.psi[:, 0], "sigma": m.L[:, 0, 0],
            "x0": torch.cat([w, -w @ m.L], -1)[:, 0],  # (K, 2): x̂₀ = [w | −w L] (z, ε)
        }
        self._packed = packed + ([None] if identity_last else [])
        self._rows = {k: i for i, k in enumerate(keys)}
        self._cast = {}
        self._reg, self._last = None, None

    def _key(self, timestep):
        """The row key of a timestep (DDPM timesteps are integers)."""
        return int(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)

    def _eps(self, model_output: torch.Tensor, z: torch.Tensor, alpha, sigma) -> torch.Tensor:
        return prediction_to_eps(self.config.prediction_type, model_output, z, alpha, sigma)

    def _on(self, device, dtype) -> list:
        key = (device, dtype)
        if key not in self._cast:
            to = lambda c: None if c is None else c.to(device=device, dtype=dtype)  # noqa: E731
            tab = {k: to(v) for k, v in self._tables.items()}
            self._cast[key] = [(None if p is None else (p[0], to(p[1]), to(p[2])), tab["alpha"][i], tab["sigma"][i],
                                tab["x0"][i]) for i, p in enumerate(self._packed)]
        return self._cast[key]

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor,
             generator: torch.Generator | list[torch.Generator] | None = None,
             variance_noise: torch.Tensor | None = None, return_dict: bool = True, eta: float | None = None):
        """One gddim-2m step from ``timestep`` to the next of ``self.timesteps`` (call them in order).

        ``generator`` (one, or a list with one per sample) or ``variance_noise`` supply the noise when
        the config's ``eta`` > 0; ``eta``, if given, must equal the config's (the coefficients depend
        on it). Returns :class:`CosiSchedulerOutput` or ``(prev_sample, pred_original_sample)``."""
        if self.plan is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after "
                             "creating the scheduler")
        if eta is not None and eta != self.config.eta:
            raise ValueError(f"eta={eta} differs from the scheduler's eta={self.config.eta}: the coefficients "
                             "are built for it; set it in the config (CosiMultistepScheduler.from_config(..., eta=))")
        n = self._key(timestep)
        if n not in self._rows:
            raise ValueError(f"timestep {n} is not one of this scheduler's timesteps {list(self._rows)[:4]}...; "
                             "call set_timesteps first and step through scheduler.timesteps")
        i = self._rows[n]
        if i > 0 and self._last != i - 1:
            raise ValueError(f"timestep {n} is step {i} of the multistep run but the previous step was "
                             f"{self._last}: step through scheduler.timesteps in order, from the first")
        dtype = sample.dtype if sample.dtype in (torch.float32, torch.float64) else torch.float32
        row, a, s, x0w = self._on(sample.device, dtype)[i]
        z = sample.to(dtype)
        eps = self._eps(model_output.to(dtype), z, a, s)
        x0 = lin_update(x0w[None], z, eps)
        if row is None:  # the identity last step
            prev = z
        else:
            lin, C, S = row
            parts = [z, eps]
            if lin.uses_reg:
                parts.append(self._reg)
            if lin.noisy:
                xi = variance_noise if variance_noise is not None else randn_tensor(
                    z.shape, generator=generator, device=z.device, dtype=z.dtype)
                parts.append(xi.to(dtype))
            if S is not None:
                self._reg = lin_update(S, z, eps)
            prev = lin_update(C, *parts)
        self._last = i
        prev, x0 = prev.to(sample.dtype), x0.to(sample.dtype)
        if not return_dict:
            return prev, x0
        return CosiSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class CosiFlowMatchScheduler(SchedulerMixin, ConfigMixin):
    """cosi's gddim-2m on rectified flow as a drop-in for diffusers' ``FlowMatchEulerDiscreteScheduler`` in the
    flow pipelines (StableDiffusion3Pipeline, FluxPipeline, …).

    The process is rectified flow, x_σ = (1 − σ) x₀ + σ ε with σ = t (``cosi.make_process("rf")``, T = 0.999),
    and the model predicts the velocity v = dx/dσ = ε − x₀, so ε = x + (1 − σ) v (``cosi.core.predictions``,
    'flow').
    ``set_timesteps`` takes FlowMatchEulerDiscreteScheduler's arguments and gives its σ: ``num_inference_steps`` (σ
    linear from 1 to its σ_min, 1/N shifted under a static shift), or ``sigmas`` (decreasing, in (0, 1]), or ``timesteps`` (σ·N); then the shift σ ← sσ/(1 + (s − 1)σ)
    with the config's ``shift``, or with ``use_dynamic_shifting`` the pipeline's ``mu``: σ ← e^μ/(e^μ + 1/σ − 1).
    σ above T is clamped to T. The K calls are ``cosi.sample(v_model, "rf", "gddim-2m", nfe=K, grid=σ,
    denoise=True)``: K − 1 steps (the first gddim's, then gddim-2m's, x̂₀ linear in ``tau``) and a last call whose
    step is x̂₀ (σ = 0, where FlowMatchEuler also ends). ``timesteps`` are σ·N, what the pipeline feeds the model.
    """

    order = 1
    _compatibles = ["FlowMatchEulerDiscreteScheduler"]

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float | None = 0.5, max_shift: float | None = 1.15, base_image_seq_len: int | None = 256,
                 max_image_seq_len: int | None = 4096, tau: Literal["t", "logsnr"] = "t"):
        from ..core.processes import make_process

        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        self.process = make_process("rf")
        self.plan = None
        self._rows: dict = {}
        self._cast = {}
        self._reg = None
        self._last = None
        self.timesteps = None
        self.num_inference_steps = None
        self.init_noise_sigma = 1.0

    def _sigmas(self, num_inference_steps, sigmas, mu, timesteps) -> np.ndarray:
        N = self.config.num_train_timesteps
        if sigmas is None:
            if timesteps is not None:
                sigmas = np.asarray(timesteps, dtype=np.float64) / N
            else:
                if not num_inference_steps or num_inference_steps < 1:
                    raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
                low = 1.0 / N  # FlowMatchEulerDiscreteScheduler's σ_min: the shifted 1/N under a static shift
                if not self.config.use_dynamic_shifting:
                    low = self.config.shift * low / (1 + (self.config.shift - 1) * low)
                sigmas = np.linspace(1.0, low, num_inference_steps)
        sigmas = np.asarray(sigmas, dtype=np.float64)
        if self.config.use_dynamic_shifting:
            if mu is None:
                raise ValueError("use_dynamic_shifting needs mu in set_timesteps (the pipeline computes it from the "
                                 "image's sequence length)")
            sigmas = math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
        else:
            s = self.config.shift
            sigmas = s * sigmas / (1 + (s - 1) * sigmas)
        if sigmas.ndim != 1 or sigmas.size < 1 or not np.all(np.diff(sigmas) < 0) or sigmas[-1] <= 0 or sigmas[0] > 1:
            raise ValueError("sigmas must be strictly decreasing in (0, 1]; got "
                             f"{np.array2string(sigmas[:4], precision=4)}...")
        return sigmas

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device = None,
                      sigmas: list[float] | None = None, mu: float | None = None,
                      timesteps: list[float] | None = None):
        """σ as FlowMatchEulerDiscreteScheduler chooses them, and cosi's float64 gddim-2m plan on their times."""
        sig = self._sigmas(num_inference_steps, sigmas, mu, timesteps)
        times = torch.as_tensor(np.minimum(sig, self.process.T), dtype=f64)
        if times.numel() > 1 and not bool((times[1:] < times[:-1]).all()):
            raise ValueError(f"after clamping σ to T = {self.process.T}, two timesteps coincide: give sigmas with at "
                             "most one at or above T")
        if float(times[-1]) < self.process.t_min:
            raise ValueError(f"the smallest sigma {float(times[-1]):.3g} is below rectified flow's t_min = "
                             f"{self.process.t_min}: the last call's x̂₀ is where the run ends")
        K = int(times.numel())
        plan = build_plan("gddim-2m", self.process, K, grid=times, denoise=True, tau=self.config.tau)
        ts = (times * self.config.num_train_timesteps).to(torch.float32)
        self._load_plan(plan, times, [float(v) for v in ts.tolist()])
        self.times = times  # float64: the grid cosi.sample runs with the same plan
        self.num_inference_steps = K
        self.timesteps = ts.to(device)
        self.sigmas = torch.cat([times, times.new_zeros(1)]).to(torch.float32)

    def _key(self, timestep):
        return float(torch.as_tensor(timestep, dtype=torch.float32).flatten()[0].item())

    def _eps(self, model_output: torch.Tensor, z: torch.Tensor, alpha, sigma) -> torch.Tensor:
        from ..core.predictions import eps_from

        return eps_from("flow", model_output, z, alpha, sigma, -1.0, 1.0)

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def scale_noise(self, sample: torch.Tensor, timestep, noise: torch.Tensor) -> torch.Tensor:
        """x_σ = (1 − σ) x₀ + σ ε (image-to-image pipelines)."""
        sigma = torch.as_tensor(timestep, dtype=torch.float64) / self.config.num_train_timesteps
        sigma = sigma.to(sample.device).reshape(-1, *[1] * (sample.ndim - 1))
        return ((1 - sigma) * sample.double() + sigma * noise.double()).to(sample.dtype)

    _load_plan = CosiMultistepScheduler._load_plan
    _on = CosiMultistepScheduler._on

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, generator=None,
             return_dict: bool = True, **unused):
        """One gddim-2m step from ``timestep`` to the next of ``self.timesteps`` (call them in order); the
        model output is the flow velocity. Returns :class:`CosiSchedulerOutput` or ``(prev_sample,
        pred_original_sample)``. FlowMatchEuler's ``s_churn`` and friends do not apply (``unused``)."""
        if self.plan is None:
            raise ValueError("Number of inference steps is 'None', you need to run 'set_timesteps' after "
                             "creating the scheduler")
        return CosiMultistepScheduler.step(self, model_output, timestep, sample, return_dict=return_dict)

    def __len__(self) -> int:
        return self.config.num_train_timesteps

"""diffusers' discrete DDPM schedules as cosi processes, and the map between their timesteps and cosi's time.

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
* **DDIM runs**: :func:`match_ddim` gives the cosi grid of a diffusers DDIMScheduler run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor

from ..core.processes import LinearProcess, as_time, f64

__all__ = [
    "TabulatedVP", "betas_from_config", "config_get", "alphas_cumprod_from_config", "scheduler_config",
    "vp_from_alphas_cumprod", "vp_from_scheduler_config", "timestep_to_time", "time_to_timestep", "match_ddim",
]

SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")


# ---- the discrete schedule, exactly as diffusers builds it ---------------------------------


def config_get(config, name, default=None):
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
    n = int(config_get(cfg, "num_train_timesteps", 1000))
    b0, b1 = float(config_get(cfg, "beta_start", 0.0001)), float(config_get(cfg, "beta_end", 0.02))
    trained = config_get(cfg, "trained_betas")
    schedule = config_get(cfg, "beta_schedule", "linear")
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
    if config_get(cfg, "rescale_betas_zero_snr", False):
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

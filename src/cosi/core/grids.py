"""Time grids from T down to t_min (math.md §5), as float64 tensors of n + 1 points.

- ``uniform``: uniform in t (the official PSLD default);
- ``quadratic``: t = t_min + (T − t_min) u², u uniform: denser near t_min, where the
  PSLD probability-flow ODE is stiff;
- ``logsnr``: uniform in the data block's log-SNR ℓ(t) = log(ψ_x(t)² / Σ_t,xx)
  (:meth:`LinearProcess.log_snr`, the one definition cosi uses);
- ``edm``: Karras et al.'s ρ-grid (ρ = 7) in EDM's σ(t) = exp(−λ/2) (VP: sqrt(e^{b} − 1); VE/EDM:
  σ = t), for every process (σ(t) is increasing wherever λ is decreasing);
- ``flow-shift``: the shifted grid of flow models (SD3, Flux): t = t_min + (T − t_min) s u / (1 + (s − 1) u),
  u uniform, shift s (default 3; s = 1 is ``uniform``): denser near T.

Each grid asks the process for capabilities (``log_snr_inverse``, ``sigma_of_t``, ``t_of_sigma``),
which are closed form where one exists and bisection otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .processes import LinearProcess, as_time, f64

GRIDS = ("uniform", "quadratic", "logsnr", "edm", "flow-shift")

EDM_RHO = 7.0  # Karras et al. 2022, §3: ρ = 7 balances the truncation error over σ
FLOW_SHIFT = 3.0  # the shift of SD3 (Esser et al. 2024) at 1024²: its scheduler config's default


def log_snr(process: LinearProcess, t) -> Tensor:
    """log SNR of the data block: log(ψ_x(t)² / Σ_t,xx); decreasing in t."""
    return process.log_snr(as_time(t))


def logsnr_fraction(process: LinearProcess, t) -> Tensor:
    """v(t) = (ℓ(t) − ℓ(T)) / (ℓ(t_min) − ℓ(T)): how far t lies along the log-SNR range from T (0) to t_min (1)."""
    lo, hi = log_snr(process, process.T), log_snr(process, process.t_min)
    return (log_snr(process, t) - lo) / (hi - lo)


def time_at_logsnr_fraction(process: LinearProcess, v) -> Tensor:
    """The inverse of :func:`logsnr_fraction`: the times at fractions v of the log-SNR range."""
    lo, hi = log_snr(process, process.T), log_snr(process, process.t_min)
    return process.log_snr_inverse(lo + (hi - lo) * torch.as_tensor(v, dtype=f64))


def time_grid(process: LinearProcess, n: int, kind: str = "uniform", *, rho: float = EDM_RHO,
              shift: float = FLOW_SHIFT, t_min: float | None = None, T: float | None = None) -> Tensor:
    """n steps from T to t_min: a decreasing float64 tensor of n + 1 times."""
    if n < 1:
        raise ValueError(f"a time grid needs at least one step, got n={n}")
    T = process.T if T is None else T
    t_min = process.t_min if t_min is None else t_min
    u = torch.linspace(1.0, 0.0, n + 1, dtype=f64)
    if kind == "uniform":
        ts = t_min + (T - t_min) * u
    elif kind == "quadratic":
        ts = t_min + (T - t_min) * u**2
    elif kind == "logsnr":
        lo, hi = log_snr(process, T), log_snr(process, t_min)
        ts = process.log_snr_inverse(lo + (hi - lo) * (1 - u))
    elif kind == "edm":
        s_max, s_min = process.sigma_of_t(as_time(T)), process.sigma_of_t(as_time(t_min))
        s = (s_max ** (1 / rho) + (1 - u) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        ts = process.t_of_sigma(s)
    elif kind == "flow-shift":
        if shift <= 0:
            raise ValueError(f"the flow-shift grid needs shift > 0, got {shift}")
        ts = t_min + (T - t_min) * shift * u / (1 + (shift - 1) * u)
    else:
        raise ValueError(f"unknown time grid {kind!r}; choose one of {GRIDS}")
    ts[0], ts[-1] = T, t_min  # exact end points
    return ts

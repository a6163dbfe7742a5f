"""Time grids from T down to t_min (math.md §5), as float64 tensors of n + 1 points.

- ``uniform``: uniform in t (the official PSLD default);
- ``quadratic``: t = t_min + (T − t_min) u², u uniform: denser near t_min, where the
  PSLD probability-flow ODE is stiff;
- ``logsnr``: uniform in the data block's log-SNR, log(Ψ_xx(t,0)² / Σ_t,xx);
- ``edm``: Karras et al.'s ρ-grid in σ = sqrt(e^{b(t)} − 1) (VP only).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .processes import LinearProcess, as_time, f64

GRIDS = ("uniform", "quadratic", "logsnr", "edm")


def log_snr(process: LinearProcess, t) -> Tensor:
    """log SNR of the data block: log(Ψ_xx(t, 0)² / Σ_t,xx); decreasing in t."""
    m = process.marginal(t)
    return torch.log(m.psi[..., 0] ** 2 / m.cov[..., 0, 0])


def _invert_decreasing(f, y: Tensor, lo: float, hi: float, iters: int = 52) -> Tensor:
    """Solve f(t) = y for a decreasing f on [lo, hi] by vectorized bisection (float64)."""
    a = torch.full_like(y, lo)
    b = torch.full_like(y, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        right = f(mid) > y  # still above the target: the root is to the right
        a = torch.where(right, mid, a)
        b = torch.where(right, b, mid)
    return 0.5 * (a + b)


def time_grid(process: LinearProcess, n: int, kind: str = "uniform", *, rho: float = 7.0,
              t_min: float | None = None, T: float | None = None) -> Tensor:
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
        target = lo + (hi - lo) * (1 - u)
        if process.name == "vp":  # log-SNR = −log(e^{b} − 1)
            ts = process.b_inverse(torch.log1p(torch.exp(-target)))
        else:
            ts = _invert_decreasing(lambda t: log_snr(process, t), target, t_min, T)
    elif kind == "edm":
        if process.name != "vp":
            raise ValueError(f"the EDM rho-grid is defined for VP only, not {process.name}; "
                             "use grid='quadratic' or 'logsnr'")
        sig = lambda t: torch.sqrt(torch.expm1(process.b(t)))  # noqa: E731
        s_max, s_min = sig(as_time(T)), sig(as_time(t_min))
        s = (s_max ** (1 / rho) + (1 - u) * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        ts = process.b_inverse(torch.log1p(s**2))
    else:
        raise ValueError(f"unknown time grid {kind!r}; choose one of {GRIDS}")
    ts[0], ts[-1] = T, t_min  # exact end points
    return ts

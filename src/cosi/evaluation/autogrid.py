"""``grid="auto"``: a sampler's N times tuned for one model, by accuracy on a probe (issue 21).

In the spirit of GITS, Align-Your-Steps and LD3: the time grid is a free choice of the sampler, and the best one
depends on the model and the sampler. cosi tunes it by accuracy, as ``lam="auto"`` does
(:mod:`cosi.evaluation.autolam`): the RMSE of the data block against a reference solution of the model's
probability-flow ODE (gddim-2m at max(500, 4·NFE) calls) from ``PROBE`` fixed prior draws. Unlike λ's proxy
(the median per draw, over 16 draws) it is the RMSE over all draws, on 64: tuned on the median of 16, the times
served the bulk of the draws and lost the hard ones (held-out RMSE rose on the oracle).

The grid is written in the log-SNR coordinate normalized to [0, 1],

    v(t) = (ℓ(t) − ℓ(T)) / (ℓ(t_min) − ℓ(T)),   0 = v_0 < v_1 < … < v_N = 1,

so that every interior time moves within its neighbours whatever the process. The search starts from the best on
the probe of the named grids ``STARTS`` and the sampler's default (or from the grid given): on the learned models
the uniform grid beats the quadratic default at low NFE, on the oracle the reverse (docs/integrators.md, "Default
time grids"). It then moves one interior point at a time to a fraction ±½, ±¼ of
the gap towards a neighbour, keeping a move that lowers the proxy; a sweep visits every interior point, and the
fractions halve after a sweep without improvement (``SWEEPS`` sweeps at most). The result can only improve on its
start on the probe; whether it generalizes is measured on other draws (docs/benchmarks.md).

A run may begin below T (:class:`Begin`: the Gaussian warm start's state at t_skip); the grid is then tuned on
[t_min, t_skip] with its first time fixed, against the same reference from T.

Cost: the reference (once per model and probe, shared with ``lam="auto"``), and NFE calls on the probe per try:
one per named grid, then at most ``SWEEPS`` × (N − 1) × 4 tries. The choice is cached per (model, process, sampler,
NFE, options) while the model lives, and its record (times, proxy before and after, calls, seconds) is returned.
"""

from __future__ import annotations

import math
import time
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..core.grids import logsnr_fraction, time_at_logsnr_fraction, time_grid
from ..core.integrators import get_sampler
from ..core.integrators.base import steps_for
from ..core.processes import f64
from ..core.sampling import sample
from .accuracy import Reference, errors, prior_draws, reference_solution
from .autolam import PROBE_SEED, reference
from .cache import ModelCache, model_key

PROBE = 64  # prior draws the grid is tuned on
SWEEPS = 4
MOVES = (0.5, 0.25)  # fractions of the gap to a neighbour tried in the first sweep; halved when a sweep stalls
CACHE_SIZE = 64
_CACHE = ModelCache(CACHE_SIZE)
STARTS = ("uniform", "quadratic", "logsnr")  # the named grids the search may start from
SEARCH = "best named grid, then log-SNR coordinates, one point at a time, fractions ±1/2, ±1/4 halving, 4 sweeps"


def grid_steps(sampler: str, process, nfe: int, denoise: bool = False) -> int:
    """The number of grid steps ``sampler`` takes for exactly ``nfe`` calls on ``process``."""
    spec = get_sampler(sampler)
    per_step, extra = spec.calls(process)
    return steps_for(nfe, per_step, extra, denoise, sampler)


class Begin(NamedTuple):
    """A run that begins below T: at time ``t``, from ``state(z_T)`` (computed without the network, e.g. the
    Gaussian warm start's flow), with ``key`` what identifies that map in a cache key."""

    t: float
    state: Callable[[Tensor], Tensor]
    key: tuple


def _to_t(process, v, t0: float):
    ts = time_at_logsnr_fraction(process, v)
    ts[0], ts[-1] = t0, process.t_min
    return ts


def choose_grid(eps_model, process, sampler: str, nfe: int, data_shape, *, start=None, denoise: bool = False,
                device=None, dtype=torch.float32, ref_nfe: int | None = None, sweeps: int = SWEEPS,
                begin: Begin | None = None, **options) -> dict:
    """The tuned grid of ``sampler`` at ``nfe`` calls on this eps_model. Returns {"grid": decreasing float64
    times, "start": the grid the moves started from, "start_kind": its name, "named": the probe RMSE of each named
    grid tried, "proxy": the tuned grid's RMSE on the probe, "proxy_start": the default (or given) grid's, "calls"
    (network calls on the probe, the reference's included when computed now), "probe", "reference",
    "seconds", "search"}.

    ``begin``: the runs start at ``begin.t`` from ``begin.state(z_T)`` instead of at T (the named grids are laid on
    [t_min, begin.t], and the first time stays there); the reference still solves the ODE from T with the
    network, so the tuning judges the whole run, the start included."""
    spec = get_sampler(sampler)
    if spec.build is None:
        raise ValueError(f"sampler {sampler!r} runs in another library and takes its own timesteps: grid='auto' "
                         "applies to cosi's own samplers")
    if options.get("lam") == "auto":
        raise ValueError("grid='auto' with lam='auto': give λ (e.g. tune it first with cosi.tune_lambda)")
    options = dict(options)
    for k in ("eta", "eta_x"):  # the η = 0 version of a stochastic sampler
        if k in spec.options:
            options[k] = 0.0
    named = start in (None, "auto")
    start = spec.grid(process) if named else start
    t0_run = process.T if begin is None else float(begin.t)
    key = (*model_key(eps_model), process.key, sampler, nfe, str(start), bool(denoise),
           tuple(sorted((k, str(v)) for k, v in options.items())), tuple(data_shape), sweeps,
           None if begin is None else (t0_run, begin.key))
    cached = _CACHE.get(eps_model, key)
    if cached is not None:
        return cached
    t0 = time.perf_counter()
    steps = grid_steps(sampler, process, nfe, denoise)
    ts0 = start if not isinstance(start, str) else time_grid(process, steps, start, T=t0_run)
    ts0 = torch.as_tensor(ts0, dtype=f64)
    if abs(float(ts0[0]) - t0_run) > 1e-9 * process.T:
        raise ValueError(f"the grid given starts at {float(ts0[0]):.6g}, the run at {t0_run:.6g}: give times from "
                         "the run's start")
    z_T = prior_draws(process, data_shape, PROBE, PROBE_SEED, device, dtype)
    z_start = z_T if begin is None else begin.state(z_T)
    ref_name, default_nfe = reference(process, nfe)
    ref = Reference(ref_name, ref_nfe or default_nfe)
    solved = reference_solution(eps_model, process, data_shape, PROBE, PROBE_SEED, ref, device=device, dtype=dtype,
                                self_check=False, batch_size=PROBE)
    calls, x_ref = solved["calls"], solved["x"]

    def proxy(v) -> float:
        nonlocal calls
        calls += nfe
        x = sample(eps_model, process, sampler, nfe, z_T=z_start, grid=_to_t(process, v, t0_run), denoise=denoise,
                   **options).x
        err = errors(x, x_ref)["rmse"]
        return err if math.isfinite(err) else math.inf

    v_start = 0.0 if begin is None else float(logsnr_fraction(process, torch.tensor(t0_run, dtype=f64)))

    def fraction(ts):
        v = logsnr_fraction(process, torch.as_tensor(ts, dtype=f64))
        v[0], v[-1] = v_start, 1.0
        return v

    v = fraction(ts0)
    best = first = proxy(v)
    tried = {str(start) if isinstance(start, str) else "given": first}
    if named:  # the best named grid on the probe is where the search starts
        for kind in (k for k in STARTS if k != start):
            ts = time_grid(process, steps, kind, T=t0_run)
            w = fraction(ts)
            tried[kind] = e = proxy(w)
            if e < best:
                best, v, ts0, start = e, w, ts, kind
    moves = MOVES
    for _ in range(sweeps):
        improved = False
        for i in range(1, steps):
            for frac in moves:
                for side in (-1, 1):
                    w = v.clone()
                    gap = (v[i + 1] - v[i]) if side > 0 else (v[i] - v[i - 1])
                    w[i] = v[i] + side * frac * gap
                    e = proxy(w)
                    if e < best:
                        best, v, improved = e, w, True
        if not improved:
            moves = tuple(m / 2 for m in moves)
    out = {"grid": _to_t(process, v, t0_run), "start": ts0,
           "start_kind": str(start) if isinstance(start, str) else "given", "named": tried, "proxy": best,
           "proxy_start": first, "calls": calls, "probe": PROBE, "reference": f"RMSE vs {ref}",
           "seconds": round(time.perf_counter() - t0, 2), "search": SEARCH}
    _CACHE.put(eps_model, key, out)
    return out


def resolve(eps_model, process, sampler: str, nfe: int, data_shape, options: dict, *, device=None
            ) -> tuple[dict, dict | None]:
    """``options`` with ``grid="auto"`` replaced by the tuned times, and the search's record (None when the grid
    was given)."""
    if not (isinstance(options.get("grid"), str) and options["grid"] == "auto"):
        return options, None
    rest = {k: v for k, v in options.items() if k not in ("grid", "denoise")}
    tuning = choose_grid(eps_model, process, sampler, nfe, data_shape, denoise=options.get("denoise", False),
                         device=device, **rest)
    return {**options, "grid": tuning["grid"]}, tuning


__all__ = ["choose_grid", "resolve", "grid_steps", "Begin", "PROBE", "SWEEPS", "MOVES", "STARTS"]

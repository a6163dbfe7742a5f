"""An analytic Gaussian warm start: the first part of the trajectory in closed form, with no network call (issue 21).

At high noise the learned score is close to the score of a Gaussian fit to the data (the seed's related work).
For data x₀ ~ N(μ, S) every marginal of a linear process is Gaussian and its exact ε is affine in z, so the
probability-flow ODE from T down to a time t_skip is a linear ODE that cosi solves to float64 accuracy without the
network. In the eigenbasis S = U diag(λ) Uᵀ every data coordinate evolves alone (the process acts on each the
same way), so

    z̃ = (I_k ⊗ Uᵀ) z,   z̃_c(t_skip) = flow of the k-block Gaussian ODE with data mean (Uᵀμ)_c, variance λ_c,

computed by gddim-3m-c (order 4) with ``FLOW_STEPS`` steps on the exact Gaussian ε
(:func:`cosi.evaluation.moments.gaussian_eps_model`), then mapped back. The sampler then spends all its NFE
calls on [t_min, t_skip] on its own grid kind.

``t_skip`` is written as the fraction v of the log-SNR range skipped,
v(t) = (ℓ(t) − ℓ(T)) / (ℓ(t_min) − ℓ(T))
(0: no warm start). ``choose_skip`` picks it from ``SKIPS`` by the accuracy proxy of ``lam="auto"``
(RMSE against gddim-2m at max(500, 4·NFE) calls from 64 probe draws, which start at T and see the whole
trajectory with the network), and keeps v = 0 unless a skip does better.

``GaussianStats`` holds μ and S's eigen-decomposition (full, in float64), from data (``from_data``), saved and
loaded as safetensors beside a model (``save``/``load``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..core.grids import time_at_logsnr_fraction, time_grid
from ..core.processes import LinearProcess, f64
from ..core.sampling import sample
from .accuracy import Reference, errors, prior_draws, reference_solution
from .autogrid import PROBE, Begin, choose_grid, grid_steps
from .autolam import PROBE_SEED, reference
from .cache import ModelCache, model_key
from .moments import gaussian_eps_model

FLOW_STEPS = 64  # gddim-3m-c steps of the Gaussian flow from T to t_skip (order 4: converged to ~1e-7 here)
SKIPS = tuple(round(0.05 * i, 2) for i in range(11))  # fractions of the log-SNR range tried: 0, 0.05, …, 0.5
_CACHE = ModelCache(64)


@dataclass
class GaussianStats:
    """μ (D,), the eigenvalues λ (D,) and eigenvectors U (D, D) of the data covariance; data shape."""

    mean: Tensor
    eigvals: Tensor
    eigvecs: Tensor
    shape: tuple

    @classmethod
    def from_data(cls, x: Tensor, batch: int = 4096) -> "GaussianStats":
        """From samples x (N, *shape) in the model's data range; float64 sums, streamed over batches."""
        shape = tuple(x.shape[1:])
        n, s1, s2 = 0, None, None
        for b in x.split(batch):
            f = b.flatten(1).to(f64)
            s1 = f.sum(0) if s1 is None else s1 + f.sum(0)
            s2 = f.T @ f if s2 is None else s2 + f.T @ f
            n += f.shape[0]
        if n < 2:
            raise ValueError("a Gaussian fit needs at least two samples")
        mean = s1 / n
        cov = (s2 - n * torch.outer(mean, mean)) / (n - 1)
        lam, U = torch.linalg.eigh(0.5 * (cov + cov.T))
        return cls(mean, lam.clamp_min(0.0), U, shape)

    def fingerprint(self) -> tuple:
        """What identifies the statistics in a cache key (a new fit of other data differs here)."""
        return (self.shape, float(self.mean.sum()), float(self.eigvals.sum()), float(self.eigvecs[:, -1].abs().sum()))

    def save(self, path, eigvecs_dtype=f64) -> None:
        """As safetensors; ``eigvecs_dtype=torch.float32`` halves the file (orthogonal to ~1e-7)."""
        from safetensors.torch import save_file

        save_file({"mean": self.mean, "eigvals": self.eigvals, "eigvecs": self.eigvecs.to(eigvecs_dtype).contiguous(),
                   "shape": torch.tensor(self.shape)}, str(path))

    @classmethod
    def load(cls, path) -> "GaussianStats":
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no Gaussian statistics at {path}: compute them with "
                             "GaussianStats.from_data(x).save(path)")
        t = load_file(str(path))
        return cls(t["mean"].to(f64), t["eigvals"].to(f64), t["eigvecs"].to(f64),
                   tuple(int(v) for v in t["shape"].tolist()))

    @classmethod
    def shipped(cls, dataset: str) -> "GaussianStats":
        """The statistics shipped beside cosi's models for ``dataset`` (a model config's "dataset")."""
        from ..models.checkpoint import WEIGHTS_DIR

        path = WEIGHTS_DIR / f"{dataset}.gauss.safetensors"
        if not path.is_file():
            raise ValueError(f"no Gaussian statistics are shipped for dataset {dataset!r}; give a file made by "
                             "GaussianStats.from_data(x).save(path)")
        return cls.load(path)


def skip_time(process: LinearProcess, v: float) -> float:
    """The time t_skip at the fraction v of the log-SNR range from T (v = 0: T)."""
    return process.T if v <= 0 else float(time_at_logsnr_fraction(process, float(v)))


def gaussian_flow(stats: GaussianStats, process: LinearProcess, z_T: Tensor, t_skip: float) -> Tensor:
    """The exact probability-flow ODE of N(μ, S) data from T to ``t_skip``, applied to states z_T (B, k·C, …)."""
    if t_skip >= process.T:
        return z_T
    k, B = process.k, z_T.shape[0]
    U = stats.eigvecs.to(z_T.device)
    zf = z_T.to(f64).reshape(B, k, -1)  # (B, k, D)
    if zf.shape[-1] != U.shape[0]:
        raise ValueError(f"the Gaussian statistics are of {U.shape[0]} values per sample, the state's blocks of "
                         f"{zf.shape[-1]}: compute them from data of the model's shape")
    zt = zf @ U  # each block in the eigenbasis
    eps = gaussian_eps_model(process, (stats.mean.to(z_T.device) @ U).cpu(), stats.eigvals.cpu())
    grid = time_grid(process, FLOW_STEPS, "logsnr", t_min=t_skip)
    out = sample(eps, process, "gddim-3m-c", FLOW_STEPS, z_T=zt.reshape(B, -1), grid=grid).z  # the state stays on
    # z_T's device; the d×k×k coefficients of the Gaussian ε are made on the CPU and copied over at each call
    out = out.reshape(B, k, -1) @ U.T
    return out.reshape(z_T.shape).to(z_T.dtype)


def skip_grid(process: LinearProcess, sampler: str, nfe: int, v: float, grid=None, denoise: bool = False):
    """The sampler's grid kind (``grid``, default its own) laid on [t_min, t_skip] for exactly ``nfe`` calls."""
    from ..core.integrators import get_sampler

    kind = grid if isinstance(grid, str) else get_sampler(sampler).grid(process)
    return time_grid(process, grid_steps(sampler, process, nfe, denoise), kind, T=skip_time(process, v))


def check_grid(grid, option: str = "grid") -> None:
    """The warm start lays a grid kind on [t_min, t_skip], or tunes the times there ('auto'): refuse given times
    (``option``: the name the caller gave it, 'grid' or '--grid')."""
    if grid is None or isinstance(grid, str):
        return
    raise ValueError(f"the warm start lays the sampler's grid kind on [t_min, t_skip]: give {option} as a name "
                     "(uniform, quadratic, logsnr, ...), 'auto' (tuned from t_skip), or leave it out, not times")


def start_at_skip(process: LinearProcess, sampler: str, nfe: int, stats: GaussianStats, v: float, grid=None,
                  denoise: bool = False):
    """(times, first_state) of a warm-started run: the sampler's grid kind (``grid``, default its own) laid on
    [t_min, t_skip] for exactly ``nfe`` calls, and the map z_T ↦ the Gaussian flow's state at t_skip; (None, None)
    for v = 0, a start at T. The one place both :func:`sample_from_skip` and ``cosi sample --warm-start`` get them
    (``grid="auto"``: :func:`tune_grid_from_skip` first, then these times from its record)."""
    check_grid(grid)
    if grid == "auto":
        raise ValueError("grid='auto' with the warm start: tune the times with tune_grid_from_skip, then start at "
                         "their first time")
    if v <= 0:
        return None, None
    ts = skip_grid(process, sampler, nfe, v, grid, denoise)
    t_skip = float(ts[0])
    return ts, lambda z_T: gaussian_flow(stats, process, z_T, t_skip)


def sample_from_skip(eps_model, process: LinearProcess, sampler: str, nfe: int, z_T: Tensor, stats: GaussianStats,
                     v: float, grid=None, **options):
    """``sampler`` with ``nfe`` calls from the Gaussian flow's state at the skip fraction ``v``
    (:func:`start_at_skip`)."""
    ts, first_state = start_at_skip(process, sampler, nfe, stats, v, grid, options.get("denoise", False))
    if ts is None:
        return sample(eps_model, process, sampler, nfe, z_T=z_T, grid=grid, **options)
    return sample(eps_model, process, sampler, nfe, z_T=first_state(z_T), grid=ts, **options)


def sample_on_times(eps_model, process: LinearProcess, sampler: str, nfe: int, z_T: Tensor, stats: GaussianStats,
                    times, **options):
    """``sampler`` on the given ``times`` (from t_skip = times[0]), started from the Gaussian flow's state there (z_T
    itself where t_skip = T): a warm-started run whose times were tuned (:func:`tune_grid_from_skip`)."""
    t_skip = float(times[0])
    return sample(eps_model, process, sampler, nfe, z_T=gaussian_flow(stats, process, z_T, t_skip), grid=times,
                  **options)


def tune_grid_from_skip(eps_model, process: LinearProcess, sampler: str, nfe: int, stats: GaussianStats, v: float, *,
                       denoise: bool = False, device=None, **options) -> dict:
    """``grid="auto"`` after the warm start: the sampler's times on [t_min, t_skip] tuned by
    :func:`cosi.evaluation.autogrid.choose_grid` for runs that begin at t_skip from the Gaussian flow's state (the
    reference still solves the ODE from T with the network). Its record, as choose_grid's; v = 0: the tuning from
    T."""
    ts, first_state = start_at_skip(process, sampler, nfe, stats, v, None, denoise)
    begin = None if ts is None else Begin(float(ts[0]), first_state, ("gaussian", stats.fingerprint()))
    return choose_grid(eps_model, process, sampler, nfe, stats.shape, denoise=denoise, device=device, begin=begin,
                       **options)


def choose_skip(eps_model, process: LinearProcess, sampler: str, nfe: int, stats: GaussianStats, *, grid=None,
                device=None, dtype=torch.float32, skips=SKIPS, **options) -> dict:
    """The skip fraction v (from ``skips``) of lowest probe RMSE; {"v", "t_skip", "proxy": v -> RMSE, "calls",
    "probe", "reference", "seconds"}. Cached per model while it lives."""
    key = (*model_key(eps_model), process.key, sampler, nfe, str(grid), tuple(skips),
           tuple(sorted((k, str(v)) for k, v in options.items())), stats.fingerprint())
    hit = _CACHE.get(eps_model, key)
    if hit is not None:
        return hit
    t0 = time.perf_counter()
    z = prior_draws(process, stats.shape, PROBE, PROBE_SEED, device, dtype)
    name, ref_nfe = reference(process, nfe)
    ref = Reference(name, ref_nfe)
    solved = reference_solution(eps_model, process, stats.shape, PROBE, PROBE_SEED, ref, device=device, dtype=dtype,
                                self_check=False, batch_size=PROBE)
    calls, proxy = solved["calls"], {}
    for v in skips:
        x = sample_from_skip(eps_model, process, sampler, nfe, z, stats, v, grid=grid, **options).x
        proxy[v] = errors(x, solved["x"])["rmse"]
        calls += nfe
    best = min(proxy, key=proxy.get)
    out = {"v": best, "t_skip": skip_time(process, best), "proxy": proxy, "calls": calls, "probe": PROBE,
           "reference": f"RMSE vs {ref}", "seconds": round(time.perf_counter() - t0, 2)}
    _CACHE.put(eps_model, key, out)
    return out


def resolve_skip(eps_model, process: LinearProcess, sampler: str, nfe: int, stats: GaussianStats, skip="auto", *,
                 grid=None, device=None, **options) -> tuple[float, dict | None]:
    """(v, the search's record or None): ``skip`` given as a fraction in [0, 1), or "auto" (:func:`choose_skip`)."""
    if isinstance(skip, str) and skip == "auto":
        record = choose_skip(eps_model, process, sampler, nfe, stats, grid=grid, device=device, **options)
        return record["v"], record
    try:
        v = float(skip)
    except (TypeError, ValueError):
        v = -1.0
    if not 0 <= v < 1:
        raise ValueError(f"skip {skip!r}: give the fraction of the log-SNR range skipped, in [0, 1) (e.g. 0.2), "
                         "or 'auto'")
    return v, None


__all__ = ["GaussianStats", "gaussian_flow", "check_grid", "start_at_skip", "sample_from_skip", "sample_on_times",
           "choose_skip", "tune_grid_from_skip", "resolve_skip", "skip_time", "skip_grid", "SKIPS", "FLOW_STEPS"]

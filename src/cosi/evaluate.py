"""Measuring samplers on the exact-score oracle: endpoint error against the reference
ODE solution from the same prior sample, and distribution distances with their floors."""

from __future__ import annotations

from functools import lru_cache

import torch

from .api import sample
from .integrators import get_sampler
from .oracle import GaussianMixture, distribution_metrics, endpoint_error, reference_solution
from .processes import LinearProcess, f64, make_process


@lru_cache(maxsize=16)
def oracle_setup(process: LinearProcess, d: int = 32, n: int = 64, seed: int = 0,
                 gmm_seed: int = 0, reference: bool = True):
    """(gmm, z_T, reference endpoint or None) for a process; cached across calls."""
    gmm = GaussianMixture.random(d=d, seed=gmm_seed)
    g = torch.Generator().manual_seed(seed)
    z_T = gmm.sample_state(process, process.T, n, g)
    ref = reference_solution(gmm, process, z_T) if reference else None
    return gmm, z_T, ref


def oracle_benchmark(process, sampler: str, nfe: int, *, d: int = 32, n: int = 64, seed: int = 0,
                     n_dist: int = 1000, gmm_seed: int = 0, grid=None, denoise: bool = False,
                     **options) -> dict:
    """Endpoint error (deterministic samplers; RMS over all entries and the median of the
    per-sample RMS, which is robust to the rare trajectory that crosses to another mixture
    component) and MMD / sliced Wasserstein with their floors (every sampler)."""
    process = make_process(process) if isinstance(process, str) else process
    spec = get_sampler(sampler)
    gmm, z_T, ref = oracle_setup(process, d, n, seed, gmm_seed, reference=not spec.stochastic)
    eps = gmm.eps_model(process)
    out = {"process": process.name, "sampler": sampler, "nfe": nfe, "d": d,
           "grid": grid or spec.grid(process), "denoise": denoise, **options}
    if not spec.stochastic and not denoise:
        r = sample(eps, process, sampler, nfe, z_T=z_T, grid=grid, denoise=denoise, **options)
        per = ((r.z - ref) ** 2).flatten(1).mean(1).sqrt()
        out["endpoint_error"] = endpoint_error(r.z, ref)
        out["endpoint_error_median"] = float(per.median())
    g = torch.Generator().manual_seed(seed + 1)
    # start from the exact marginal at T, so that only the integrator's error remains
    z0 = gmm.sample_state(process, process.T, n_dist, g)
    r = sample(eps, process, sampler, nfe, z_T=z0, generator=g, grid=grid, denoise=denoise, **options)
    out.update(distribution_metrics(gmm, r.x, process=process, t=0.0 if denoise else process.t_min))
    out["calls"] = r.nfe
    return out


# ---- learned models: FD in a feature space ------------------------------------------------------


def model_batches(model, sampler: str, nfe: int, n: int, batch_size: int, *, seed: int = 0, device=None,
                  grid=None, denoise: bool = False, **options):
    """Yield the data blocks of ``n`` samples of a :class:`DiffusionModel`, ``batch_size`` at a
    time; batch b draws its prior and noise from a generator seeded with (seed, b)."""
    device = torch.device(device or model.device)
    for b, start in enumerate(range(0, n, batch_size)):
        g = torch.Generator(device).manual_seed(1_000_003 * seed + b)
        m = min(batch_size, n - start)
        yield sample(model.eps_model, model.process, sampler, nfe, shape=(m, *model.data_shape), generator=g,
                     device=device, grid=grid, denoise=denoise, **options).x


def model_fd(model, features, ref_stats, sampler: str, nfe: int, n: int = 10_000, batch_size: int = 1000, *,
             seed: int = 0, keep: int = 0, **options) -> dict:
    """FD between ``n`` samples of ``model`` and ``ref_stats`` in the space of ``features``
    (e.g. :class:`cosi.metrics.ClassifierFeatures`). Returns a dict with fd, the wall time, images/s
    and, if ``keep`` > 0, the first ``keep`` samples under "samples"."""
    import time

    from .metrics import fd

    kept = []

    def tap(batches):
        for x in batches:
            if sum(map(len, kept)) < keep:
                kept.append(x[:keep].cpu())
            yield x

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    stats = features.stats(tap(model_batches(model, sampler, nfe, n, batch_size, seed=seed, **options)))
    secs = time.perf_counter() - t0
    out = {"sampler": sampler, "nfe": nfe, "n": n, "seed": seed, **options, "fd": fd(stats, ref_stats),
           "seconds": round(secs, 2), "images_per_s": round(n / secs, 1)}
    if keep:
        out["samples"] = torch.cat(kept)[:keep]
    return out

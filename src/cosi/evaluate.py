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

"""Distances between sample sets, and to the oracle's mixture: the numbers that say how far a
sampler's output is from the data (math.md §4). Generic (MMD, sliced Wasserstein, Fréchet
distance of samples, endpoint error, convergence order) except :func:`mmd2_to_mixture` and
:func:`distribution_metrics`, which take a :class:`~cosi.evaluation.oracle.GaussianMixture`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..core.processes import LinearProcess, f64
from .metrics import frechet_distance
from .oracle import GaussianMixture



def endpoint_error(x: Tensor, x_ref: Tensor) -> float:
    """Root-mean-square difference over all entries (same prior sample, same t_end)."""
    return float(torch.sqrt(((x.to(f64) - x_ref.to(f64)) ** 2).mean()))


MMD_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0)
# Kernels as narrow as the mixture's components (std 0.05–0.25 per coordinate): the wide family
# above sees a stochastic sampler's bias only far above its noise, these see it near the floor.
MMD_FINE_BANDWIDTHS = (0.05, 0.1)


def mmd(x: Tensor, y: Tensor, bandwidths=MMD_BANDWIDTHS) -> float:
    """Maximum mean discrepancy (biased V-statistic, so ≥ 0) with the fixed kernel family
    Σ_h exp(−‖x − y‖² / (2 h² d)), d the dimension."""
    x = x.reshape(len(x), -1).to(f64)
    y = y.reshape(len(y), -1).to(f64)
    d = x.shape[1]
    xx, yy, xy = torch.cdist(x, x) ** 2, torch.cdist(y, y) ** 2, torch.cdist(x, y) ** 2
    total = 0.0
    for h in bandwidths:
        g = lambda m: torch.exp(-m / (2 * h * h * d)).mean()  # noqa: E731
        total = total + g(xx) + g(yy) - 2 * g(xy)
    return float(torch.sqrt(torch.clamp(torch.as_tensor(total), min=0)))


def mmd2_to_mixture(x: Tensor, gmm: GaussianMixture, bandwidths=MMD_BANDWIDTHS,
                    chunk: int = 2048) -> tuple[float, float]:
    """Unbiased MMD² between samples x and the mixture itself, with mmd's kernels: the
    sample-sample term is a U-statistic, the sample-data and data-data terms are exact
    Gaussian integrals, so no reference sample adds noise. Returns (MMD², its standard
    error from the first-order U-statistic variance). MMD² can be slightly negative."""
    x = x.reshape(len(x), -1).to(f64)
    n, d = x.shape
    if n < 2:
        raise ValueError("mmd2_to_mixture needs at least 2 samples")
    h1 = torch.zeros(n, dtype=f64)  # per-sample kernel mean over the other samples minus over the data
    total = 0.0
    for h in bandwidths:
        s2 = h * h * d
        row = torch.zeros(n, dtype=f64)
        for i in range(0, n, chunk):
            row[i:i + chunk] = torch.exp(-torch.cdist(x[i:i + chunk], x) ** 2 / (2 * s2)).sum(1) - 1.0
        row /= n - 1
        cross = gmm.kernel_mean(x, s2)
        total += float(row.mean() - 2 * cross.mean()) + gmm.kernel_self_mean(s2)
        h1 += row - cross
    return total, float(2 * h1.std() / math.sqrt(n))


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance over ``n_proj`` fixed random directions."""
    x = x.reshape(len(x), -1).to(f64)
    y = y.reshape(len(y), -1).to(f64)
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(x.shape[1], n_proj, generator=g, dtype=f64)
    P = P / P.norm(dim=0, keepdim=True)
    px, py = (x @ P).sort(0).values, (y @ P).sort(0).values
    if len(px) != len(py):
        q = torch.linspace(0, 1, max(len(px), len(py)), dtype=f64)
        px, py = _quantiles(px, q), _quantiles(py, q)
    return float(torch.sqrt(((px - py) ** 2).mean()))


def sample_fd(x: Tensor, y: Tensor) -> float:
    """Fréchet distance between the Gaussians fitted to two sample sets, in raw space
    (:func:`cosi.evaluation.metrics.frechet_distance` of their means and covariances)."""
    x = x.reshape(len(x), -1).to(f64)
    y = y.reshape(len(y), -1).to(f64)
    cov = lambda v: torch.cov(v.T).reshape(v.shape[1], -1)  # noqa: E731
    return frechet_distance(x.mean(0), cov(x), y.mean(0), cov(y))


def _quantiles(sorted_x: Tensor, q: Tensor) -> Tensor:
    n = len(sorted_x)
    pos = q * (n - 1)
    lo = pos.floor().long().clamp(max=n - 1)
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo)[:, None]
    return sorted_x[lo] * (1 - w) + sorted_x[hi] * w


def distribution_metrics(gmm: GaussianMixture, x: Tensor, seed: int = 12345,
                         process: LinearProcess | None = None, t: float = 0.0,
                         floor_pairs: int = 8) -> dict:
    """MMD, sliced Wasserstein and Fréchet distance of samples x against fresh exact samples
    of the data block at time t (t = 0: the data; a sampler that stops at t_min is compared
    with x_{t_min}). Each comes with its noise floor: the mean (``*_floor``) and standard
    deviation (``*_floor_std``) of the same distance between independent exact sets of x's
    size, over ``floor_pairs`` pairs. The mixture weights' multinomial noise makes these
    distances heavy-tailed: differences within a few floor_std are noise."""
    n = len(x)
    g = torch.Generator().manual_seed(seed)
    if t > 0 and process is None:
        raise ValueError("give the process to compare with its marginal at t > 0")
    draw = lambda: gmm.sample_marginal(process, t, n, g)  # noqa: E731
    metrics = {"mmd": mmd, "sw": sliced_wasserstein, "fd": sample_fd}
    ref = draw()
    out = {name: f(x, ref) for name, f in metrics.items()}
    floors = {name: [] for name in metrics}
    for _ in range(floor_pairs):
        a, b = draw(), draw()
        for name, f in metrics.items():
            floors[name].append(f(a, b))
    for name, v in floors.items():
        v = torch.tensor(v, dtype=f64)
        out[f"{name}_floor"] = float(v.mean())
        out[f"{name}_floor_std"] = float(v.std()) if len(v) > 1 else float("nan")
    out["n"] = n
    return out


def convergence_order(nfes, errors) -> float:
    """Least-squares slope of −log(error) against log(NFE)."""
    lx, ly = np.log(np.asarray(nfes, float)), np.log(np.asarray(errors, float))
    return float(-np.polyfit(lx, ly, 1)[0])

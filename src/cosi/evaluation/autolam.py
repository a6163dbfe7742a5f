"""λ chosen automatically: ``lam="auto"`` for every sampler with a λ option.

The paper picks λ (B = λI or λ𝟙 of a conjugate integrator) by a grid search over FID. cosi
picks it per (model, process, sampler, NFE, grid, options) by the same search over one of two
objectives, each evaluated from one fixed set of prior draws (counter-based seeds, so every
batch and every process picks the same λ, and every λ sees the same noise):

* the FD objective (:class:`FDObjective`, when reference data is at hand): the Fréchet distance
  of a probe of ``probe`` samples (default 2000) to reference statistics in a feature space.
  Use a reference other than the one the results are judged against (the study tunes on the
  Fashion-MNIST train split and reports FD against the test split).
* the accuracy proxy (the default, no data needed): the accuracy of :mod:`cosi.evaluation.accuracy`,

    λ* = argmin_λ  RMSE(x(λ), x^ref)   (per pixel of the data block, over the probe),

  where x(λ) is the sampler's output at the requested NFE with η = 0 and x^ref a high-accuracy
  solution of the probability-flow ODE from the same prior draws (:func:`reference`), over a probe
  of ``PROBE`` (16) draws. It finds the λ that solves the ODE
  best, which need not be the λ of the best samples: on the learned VP model λ ≈ 0.4 gives a
  third lower FD than the accurate λ ≈ 0 at 50 NFE (docs/benchmarks.md).

The search is a coarse grid ``COARSE`` of step 1 (extended outwards,
one step at a time, while the optimum sits on its edge), then a grid of step 0.25 between the
coarse optimum's neighbours (on the learned PSLD model FD changes several-fold between λ 0.25
apart: docs/benchmarks.md), then one parabolic refinement through the best fine point and its
neighbours.

Cost: NFE calls on the probe for each of the 9 coarse points, any extension points, the 6 fine
points and the refined point, about 16·NFE calls. The accuracy proxy adds its reference
(max(500, 4·NFE) calls, once per model) on a probe of 16: for a 10k-sample run at 50 NFE, about
0.3 % of its network work. The FD objective's probe of 2000 makes it 16 × 2000 = 32 000 samples'
worth, about 3 runs of 10k samples at the same NFE: worth it for a long run, or once per
(model, sampler, NFE) whose λ is then written down. A stochastic sampler (η > 0) takes the
λ of its η = 0 version. The choice is cached per model while the model lives (the last
``CACHE_SIZE`` searches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..core.sampling import sample
from ..core.integrators import get_sampler
from .accuracy import Reference, errors, prior_draws, reference_solution
from .cache import ModelCache, model_key

PROBE = 16
PROBE_SEED = 0x5EED
COARSE = (-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0)
LIMIT = 12.0  # the grid is extended past an edge optimum up to |λ| = LIMIT
FINE, FINE_POINTS = 0.25, 3  # then a grid of step FINE, FINE_POINTS either side of the coarse optimum
SEARCH = "coarse 1, fine 0.25 ±0.75, parabola"  # recorded with each tuned row: a changed search is a new measurement
CACHE_SIZE = 64  # searches remembered, least recently used dropped first
_CACHE = ModelCache(CACHE_SIZE)


@dataclass(frozen=True)
class FDObjective:
    """λ by the FD of ``probe`` samples to ``ref_stats`` in ``features``' space (e.g.
    :class:`cosi.evaluation.metrics.ClassifierFeatures` and the statistics of a held-out image set);
    ``name`` identifies the pair in caches and result rows. Sampled in chunks of ``batch_size``."""

    features: Any
    ref_stats: Any
    name: str
    probe: int = 2000
    batch_size: int = 2000

    def __call__(self, chunks) -> float:
        from .metrics import fd

        return fd(self.features.stats(chunks), self.ref_stats)

    @classmethod
    def held_out(cls, features, kind: str, ref: str, **kw) -> "FDObjective":
        """Against the statistics of a reference as :func:`cosi.evaluation.evaluate.reference_stats` names it
        (e.g. 'fmnist-train' when results are judged against 'fmnist'); ``kw``: its ``ref_dir``,
        ``cache``, ``channels``, and this class's ``probe`` and ``batch_size``."""
        from .evaluate import reference_stats

        own = {k: kw.pop(k) for k in ("probe", "batch_size") if k in kw}
        return cls(features, reference_stats(features, kind, ref, **kw), f"{kind}/{ref}", **own)


def reference(process, nfe: int) -> tuple[str, int]:
    """The reference solution of the proxy, (sampler, calls): gddim-2m (second order, exact for
    point-mass data) at max(500, 4·NFE) calls on every process. (csps-d, the reference on CLD/PSLD
    before gddim-2m existed, still had an FD of 2.66 at 200 calls on the learned PSLD model, where
    gddim and gddim-2m sit near 1.0 from 50 calls on: docs/benchmarks.md.)"""
    return "gddim-2m", max(500, 4 * nfe)


def judged_by(process, nfe: int, objective: FDObjective | None = None) -> str:
    """What λ is judged against, as result rows record it: the objective's reference data, or the
    accuracy proxy's reference solution."""
    return f"FD vs {objective.name} ({objective.probe} samples)" if objective else "RMSE vs {}@{}".format(
        *reference(process, nfe))


def _key(eps_model, process, sampler, nfe, grid, denoise, options, data_shape, objective=None):
    frozen = tuple(sorted((k, str(v)) for k, v in options.items()))
    return (*model_key(eps_model), process.key, sampler, nfe, str(grid), bool(denoise), frozen, tuple(data_shape),
            objective and (objective.name, objective.probe))


def choose_lambda(eps_model, process, sampler: str, nfe: int, data_shape, *, grid=None, denoise: bool = False,
                  device=None, dtype=torch.float32, ref_nfe: int | None = None, objective: FDObjective | None = None,
                  **options) -> dict:
    """λ for ``sampler`` at ``nfe`` on this eps_model, by ``objective`` (None: the accuracy proxy);
    returns {"lam", "proxy" (λ -> objective), "calls" (network calls made, each on a batch of
    "probe"), "probe", "reference" (what λ was judged against), "search"}."""
    spec = get_sampler(sampler)
    if "lam" not in spec.options:
        raise ValueError(f"sampler {sampler!r} has no lam option; samplers with one: "
                         f"{', '.join(n for n in _with_lam())}")
    options = {k: v for k, v in options.items() if k != "lam"}
    for k in ("eta", "eta_x"):  # the η = 0 version of a stochastic sampler
        if k in spec.options:
            options[k] = 0.0
    key = _key(eps_model, process, sampler, nfe, grid, denoise, options, data_shape, objective)
    cached = _CACHE.get(eps_model, key)
    if cached is not None:
        return cached
    probe = objective.probe if objective else PROBE
    z_T = prior_draws(process, data_shape, probe, PROBE_SEED, device, dtype)
    calls, proxy = 0, {}
    if objective is not None:
        against = judged_by(process, nfe, objective)
    else:
        ref_name, default_nfe = reference(process, nfe)
        ref = Reference(ref_name, ref_nfe or default_nfe)
        against = f"RMSE vs {ref}"
        solved = reference_solution(eps_model, process, data_shape, probe, PROBE_SEED, ref, device=device,
                                    dtype=dtype, self_check=False, batch_size=probe)
        calls, x_ref = solved["calls"], solved["x"]

    def error(lam: float) -> float:
        nonlocal calls
        run = lambda z: sample(eps_model, process, sampler, nfe, z_T=z, grid=grid, denoise=denoise,  # noqa: E731
                               lam=lam, **options).x
        if objective is None:
            err = errors(run(z_T), x_ref)["rmse_median"]  # robust to the rare trajectory that crosses to another mode
        else:
            xs = [run(z) for z in z_T.split(objective.batch_size)]
            err = objective(xs) if all(bool(torch.isfinite(x).all()) for x in xs) else math.inf
        calls += nfe
        proxy[lam] = err if math.isfinite(err) else math.inf  # a diverged run scores inf
        return proxy[lam]

    lams = list(COARSE)
    errs = [error(lam) for lam in lams]
    while True:  # an optimum at the edge of the grid: walk outwards while the error falls
        i = min(range(len(lams)), key=errs.__getitem__)
        if 0 < i < len(lams) - 1 or abs(lams[i]) >= LIMIT:
            break
        step = lams[1] - lams[0]
        lam = lams[0] - step if i == 0 else lams[-1] + step
        pos = 0 if i == 0 else len(lams)
        lams.insert(pos, lam)
        errs.insert(pos, error(lam))
    centre = lams[i]  # the fine grid between the coarse optimum's neighbours
    fine = [centre + FINE * k for k in range(-FINE_POINTS, FINE_POINTS + 1)]
    errs = [proxy[lam] if lam in proxy else error(lam) for lam in fine]
    i = min(range(len(fine)), key=errs.__getitem__)
    if 0 < i < len(fine) - 1:  # the vertex of the parabola through the best point and its neighbours
        (a, fa), (b, fb), (c, fc) = [(fine[j], errs[j]) for j in (i - 1, i, i + 1)]
        den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
        if den != 0 and all(map(lambda v: v < float("inf"), (fa, fb, fc))):
            lam = b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
            if a < lam < c and round(lam, 4) not in proxy:
                error(round(lam, 4))
    best = min(proxy, key=proxy.get)
    out = {"lam": best, "proxy": proxy, "calls": calls, "probe": probe, "reference": against, "search": SEARCH}
    _CACHE.put(eps_model, key, out)
    return out


def resolve(eps_model, process, sampler: str, nfe: int, data_shape, options: dict, *, objective=None,
            device=None) -> tuple[dict, dict | None]:
    """``options`` with ``lam="auto"`` replaced by the chosen λ, and the search's record (None when λ was
    given): the one place every caller (``cosi.sample``, generation to a folder, sweeps) resolves it."""
    if options.get("lam") != "auto":
        return options, None
    rest = {k: v for k, v in options.items() if k not in ("lam", "grid", "denoise")}
    tuning = choose_lambda(eps_model, process, sampler, nfe, data_shape, grid=options.get("grid"),
                           denoise=options.get("denoise", False), device=device, objective=objective, **rest)
    return {**options, "lam": tuning["lam"]}, tuning


def _with_lam():
    from ..core.integrators import SAMPLERS

    return [n for n, s in SAMPLERS.items() if "lam" in s.options]

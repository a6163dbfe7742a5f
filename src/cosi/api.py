"""The public API: the sampling core, and the layers above it that one call may need.

``cosi.sample`` is :func:`cosi.core.sampling.sample` plus one step the core does not take:
``lam="auto"`` first picks λ by a search (:mod:`cosi.evaluation.autolam`) and then samples with it.
That search runs the core's sampler many times, so it lives above the core and reaches it through
this module alone; the core never imports evaluation, models, training or the CLI.
"""

from __future__ import annotations

from typing import Callable

import torch

from .core.integrators import nearest_nfe
from .core.predictions import as_eps_model, from_denoiser
from .core.processes import LinearProcess, make_process
from .core.sampling import SampleResult, samplers
from .core.sampling import sample as core_sample
from .evaluation import peers

peers.register()  # the diffusers peers become samplers by name (they live above the core)

__all__ = ["sample", "samplers", "SampleResult", "load_model", "nearest_nfe", "tune_lambda", "tune_grid",
           "as_eps_model", "from_denoiser"]


def tune_lambda(eps_model: Callable, process, sampler: str, nfe: int, data_shape, *, objective=None,
                **options) -> dict:
    """λ for ``sampler`` at ``nfe`` on this model, by ``objective`` (a
    :class:`cosi.evaluation.autolam.FDObjective`) or, without one, by the accuracy proxy. Returns the
    search's record: {"lam", "proxy", "calls", "probe", "reference", "search"}."""
    from .evaluation.autolam import choose_lambda

    return choose_lambda(eps_model, make_process(process), sampler, nfe, data_shape, objective=objective, **options)


def tune_grid(eps_model: Callable, process, sampler: str, nfe: int, data_shape, **options) -> dict:
    """The N times of ``sampler``'s grid at ``nfe`` tuned for this model by the accuracy proxy
    (:mod:`cosi.evaluation.autogrid`). Returns the search's record: {"grid", "start", "proxy", "proxy_start",
    "calls", "probe", "reference", "seconds", "search"}."""
    from .evaluation.autogrid import choose_grid

    return choose_grid(eps_model, make_process(process), sampler, nfe, data_shape, **options)


def sample(eps_model: Callable, process, sampler: str, nfe: int, z_T=None, shape=None, generator=None, *,
           lam_objective=None, warm_start=None, skip="auto", **kw) -> SampleResult:
    """:func:`cosi.core.sampling.sample` (its arguments and exact-NFE contract), and two searches on a fixed
    probe of prior draws before sampling: ``lam="auto"``, λ picked by :func:`tune_lambda` (by
    ``lam_objective`` or, without one, the accuracy proxy), and ``grid="auto"``, the times picked by
    :func:`tune_grid` (after λ). The searches' records are ``result.tuning`` (λ's, or with ``grid="auto"``
    {"lam": ..., "grid": ...}); their calls are apart from ``result.nfe``, which counts the calls made on
    this batch.

    ``warm_start``: a :class:`cosi.evaluation.warmstart.GaussianStats` of the data; the trajectory from T to
    t_skip is then the closed-form flow of that Gaussian (no network call) and the sampler's ``nfe`` calls all
    go to [t_min, t_skip]. ``skip``: the fraction of the log-SNR range skipped, or "auto" (chosen by accuracy on
    a probe, :func:`cosi.evaluation.warmstart.choose_skip`; its record joins ``result.tuning``). With
    ``grid="auto"`` the skip is chosen on the sampler's own grid kind, and then the times on [t_min, t_skip] are
    tuned for runs that start there (:func:`cosi.evaluation.warmstart.tune_grid_from_skip`; ``result.tuning`` is
    {"lam", "skip", "grid"})."""
    process = make_process(process) if isinstance(process, str) else process
    if warm_start is not None:  # before any tuning: a refused combination costs nothing
        from .evaluation.warmstart import check_grid

        check_grid(kw.get("grid"))
        if kw.get("graph") or kw.get("callback") is not None:
            raise ValueError("warm_start runs eagerly and without a callback")
    tuning = None
    auto_lam, auto_grid = kw.get("lam") == "auto", isinstance(kw.get("grid"), str) and kw["grid"] == "auto"
    auto_grid_here = auto_grid and warm_start is None  # with a warm start the times are tuned from t_skip
    if auto_lam or auto_grid:
        if not isinstance(process, LinearProcess):
            raise TypeError(f"process must be a LinearProcess or a name, got {process!r}")
        if z_T is None and shape is None:
            raise ValueError("give z_T (the initial state) or shape (the data shape, e.g. (B, C, H, W))")
        state = z_T.shape if z_T is not None else process.state_shape(tuple(shape))
        data_shape = (state[1] // process.k, *state[2:])
        device = z_T.device if z_T is not None else kw.get("device")
        own = lambda: {k: v for k, v in kw.items()  # noqa: E731
                       if k not in ("device", "dtype", "progress", "callback", "noise", "graph")}
    if auto_lam:
        from .evaluation.autolam import resolve

        lam_own = {k: v for k, v in own().items() if not (k == "grid" and auto_grid)}
        resolved, tuning = resolve(eps_model, process, sampler, nfe, data_shape, lam_own, objective=lam_objective,
                                   device=device)
        kw = {**kw, "lam": resolved["lam"]}
    if auto_grid_here:
        from .evaluation.autogrid import resolve as resolve_grid

        resolved, grid_tuning = resolve_grid(eps_model, process, sampler, nfe, data_shape, own(), device=device)
        kw = {**kw, "grid": resolved["grid"]}
        tuning = {"lam": tuning, "grid": grid_tuning} if auto_lam else grid_tuning
    if warm_start is not None:
        return _warm_started(eps_model, process, sampler, nfe, z_T, shape, generator, warm_start, skip, tuning, kw)
    res = core_sample(eps_model, process, sampler, nfe, z_T, shape, generator, **kw)
    res.tuning = tuning
    return res


def _warm_started(eps_model, process, sampler, nfe, z_T, shape, generator, stats, skip, tuning, kw) -> SampleResult:
    from .evaluation.warmstart import resolve_skip, sample_from_skip, sample_on_times, tune_grid_from_skip

    if z_T is None:
        if shape is None:
            raise ValueError("give z_T (the initial state) or shape (the data shape, e.g. (B, C, H, W))")
        dev = generator.device if generator is not None else kw.get("device")
        z_T = process.prior_sample(process.state_shape(tuple(shape)), generator=generator, device=dev,
                                   dtype=kw.get("dtype", torch.float32))
    opts = {k: v for k, v in kw.items() if k not in ("device", "dtype", "progress")}
    if isinstance(opts.get("grid"), str) and opts["grid"] == "auto":  # t_skip on the sampler's own grid kind, then
        del opts["grid"]  # its times on [t_min, t_skip] tuned for runs that start there
        skip, record = resolve_skip(eps_model, process, sampler, nfe, stats, skip, device=z_T.device, **opts)
        found = tune_grid_from_skip(eps_model, process, sampler, nfe, stats, skip, device=z_T.device, **opts)
        res = sample_on_times(eps_model, process, sampler, nfe, z_T, stats, found["grid"], generator=generator,
                              **opts)
        res.tuning = {"lam": tuning, "skip": record, "grid": found}
        return res
    skip, record = resolve_skip(eps_model, process, sampler, nfe, stats, skip, device=z_T.device, **opts)
    res = sample_from_skip(eps_model, process, sampler, nfe, z_T, stats, skip, generator=generator, **opts)
    res.tuning = {"lam": tuning, "skip": record} if tuning is not None else record
    return res


def load_model(name_or_path, device="cpu", dtype=torch.float32):
    """A shipped model by name ('fmnist-psld', 'fmnist-vp', 'fmnist-classifier') or a
    ``.safetensors``/``.json`` pair by path: a :class:`cosi.models.checkpoint.DiffusionModel`
    (``model.eps_model``, ``model.process``, ``model.data_shape``) or the classifier."""
    from .core.devices import pick_device
    from .models.checkpoint import load

    return load(name_or_path, device=pick_device(device), dtype=dtype)

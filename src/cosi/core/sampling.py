"""The sampling core's entry point: ``sample`` runs a named sampler with exactly ``nfe`` network calls.

Nothing here tunes anything: ``lam="auto"`` is resolved one layer up, by :func:`cosi.api.sample`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .integrators import SAMPLERS, build_plan, check_sampler, get_sampler
from .integrators.plan import run_plan
from .noise import CounterNoise
from .processes import LinearProcess, make_process


@dataclass
class SampleResult:
    """``x``: the data block (B, C, ...); ``z``: the full final state (B, k*C, ...);
    ``nfe``: network calls made by the sampler on this batch; ``tuning``: what ``lam="auto"`` chose
    and cost (``tuning["calls"]``, on its own probe batch, apart from ``nfe``; :mod:`cosi.evaluation.autolam`)."""

    x: Tensor
    z: Tensor
    nfe: int
    tuning: dict | None = None  # lam="auto": the chosen λ, its proxy errors and the calls it cost


def sample(eps_model: Callable, process, sampler: str, nfe: int, z_T: Tensor | None = None,
           shape=None, generator: torch.Generator | None = None, *, grid=None,
           denoise: bool = False, device=None, dtype=torch.float32, progress: bool = False,
           callback: Callable | None = None, noise: Callable | None = None, graph: bool = False,
           project: bool = True, allow_unstable: bool = False, **options) -> SampleResult:
    """Sample from a diffusion model with exactly ``nfe`` network calls.

    Args:
        eps_model: ``eps_model(z, t)`` with ``z`` of shape (B, k*C, *spatial) or (B, k*d),
            blocks stacked along dim 1 (x first, then m), and ``t`` of shape (B,); returns
            ε of ``z``'s shape, where z_t = μ_t + L_t ε (math.md §1).
        process: a :class:`LinearProcess` or a name ('vp', 'cld', 'psld').
        sampler: a name from ``cosi.samplers``.
        nfe: the number of network calls; refused clearly if the sampler cannot meet it.
        z_T: the initial state at T; drawn from the prior N(0, Σ_T) when None.
        shape: the data shape (B, C, *spatial) or (B, d), needed when ``z_T`` is None.
        generator: torch generator for the prior and the sampler's noise.
        grid: a grid name ('uniform', 'quadratic', 'logsnr', 'edm') or a decreasing
            sequence of times; default: the sampler's measured choice for the process.
        denoise: end with a final denoising call at t_min (counted in ``nfe``).
        callback: ``callback(info)`` once per grid step (k-diffusion's convention), after the step's last
            update: ``info = {"i": step index 0 … steps − 1, "t": the time reached, "z": the state,
            "x0_hat": w_t (z_call − L_t ε), the data prediction of the latest network call (the data block's
            shape), "calls": network calls made so far}``; with ``denoise`` the final denoising is one more
            step (i = steps). Not with ``graph=True``.
        noise: optional ``noise(i, z) -> ξ`` for the i-th noisy update (e.g. per-sample
            seeded noise); overrides ``generator`` for the sampler's noise.
        graph: (CUDA) capture the whole sampler — network calls, updates (compiled into one
            kernel each) and noise — as one CUDA graph per state shape on first use, then replay
            it; the sampler's overhead beside the network all but vanishes. The network must not
            itself be captured: a model whose forward replays its own CUDA graphs declares it
            with a true ``captures_itself`` attribute (on ``eps_model`` or, for a bound method,
            on its owner), and graph=True refuses it. The noise comes from
            ``noise`` if it is a :class:`cosi.core.noise.CounterNoise`, else from counter-based normals
            keyed by draws of ``generator``.
        project: on a k ≥ 2 process (CLD, PSLD), follow each network call of an ε-form sampler by the
            consistency projection of ε (docs/integrators.md): the identity for an exact ε, and what
            makes the ε-form samplers converge on a learned one. False: the paper's plain ε-form.
        allow_unstable: run a sampler below its measured stable range on the process (refused otherwise,
            naming the range: :mod:`cosi.core.integrators.stability`).
        **options: the sampler's own options (``eta``, ``lam``, ``B``, ...).
    """
    if isinstance(process, str):
        process = make_process(process)
    if not isinstance(process, LinearProcess):
        raise TypeError(f"process must be a LinearProcess or one of 'vp', 'cld', 'psld', got {process!r}")
    spec, plan = check(process, sampler, nfe, grid=grid, denoise=denoise, project=project,
                       allow_unstable=allow_unstable, **options)
    if z_T is None:
        if shape is None:
            raise ValueError("give z_T (the initial state) or shape (the data shape, e.g. (B, C, H, W))")
        state = process.state_shape(tuple(shape))
        gen_dev = generator.device if generator is not None else device
        z_T = process.prior_sample(state, generator=generator, device=gen_dev, dtype=dtype)
        z_T = z_T.to(device or z_T.device)
    else:
        _check_state(z_T, process)
    if spec.run is not None:
        if graph:
            raise ValueError(f"sampler {sampler!r} is run step by step by diffusers; graph=True applies to "
                             "cosi's own samplers")
        z, calls = spec.run(eps_model, process, nfe, z_T, **options)
    else:
        if graph and plan.stochastic and not isinstance(noise, CounterNoise):
            gen_dev = generator.device if generator is not None else z_T.device
            keys = torch.randint(0, 2**32, (z_T.shape[0],), generator=generator, device=gen_dev, dtype=torch.int64)
            noise = CounterNoise(keys.to(z_T.device), fused=True)
        z, calls = run_plan(plan, eps_model, z_T, generator=generator, noise=noise, progress=progress,
                            callback=callback, graph=graph)
    return SampleResult(x=process.data_block(z), z=z, nfe=calls)


def check(process: LinearProcess, sampler: str, nfe: int, *, grid=None, denoise: bool = False, project: bool = True,
          allow_unstable: bool = False, **options):
    """Everything :func:`sample` checks before it draws: the sampler, its options on this process and
    the ``nfe`` it must meet (its plan is built, and cached, here). Returns (the sampler's entry, its plan
    or None for a sampler run by another library). Call it before writing anything a refused run
    should not leave behind."""
    if options.get("lam") == "auto":
        raise ValueError("lam='auto' is a search run above the sampling core: call cosi.sample (which tunes λ "
                         "and then samples) or cosi.tune_lambda, not cosi.core.sample")
    spec = get_sampler(sampler)
    if spec.run is not None:
        _check_external(spec, process, grid, denoise, options)
        return spec, None
    return spec, build_plan(sampler, process, nfe, grid=grid, denoise=denoise, project=project,
                            allow_unstable=allow_unstable, **options)


def _check_external(spec, process: LinearProcess, grid, denoise: bool, options: dict) -> None:
    """The checks build_plan makes, for a sampler run by another library."""
    check_sampler(spec, process, options)
    if grid is not None or denoise:
        raise ValueError(f"sampler {spec.name!r} takes its own timesteps (option timestep_spacing) and ends "
                         "at t_min; grid= and denoise= do not apply")


def _check_state(z: Tensor, process: LinearProcess) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"z_T must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"z_T must be a floating-point tensor (float32 or float64), got {z.dtype}")
    if z.dim() < 2 or z.shape[1] % process.k:
        raise ValueError(
            f"z_T has shape {tuple(z.shape)}; a {process.name} state has shape (B, {process.k}*C, ...) "
            f"or (B, {process.k}*d) with the {process.k} blocks stacked along dim 1"
        )


class SamplerTable(Mapping):
    """``cosi.samplers``: name -> one-line description."""

    def __getitem__(self, name):
        return SAMPLERS[name].description

    def __iter__(self):
        return iter(SAMPLERS)

    def __len__(self):
        return len(SAMPLERS)

    def __repr__(self):
        w = max(map(len, SAMPLERS))
        return "\n".join(f"{n:<{w}}  {s.description}" for n, s in SAMPLERS.items())


samplers = SamplerTable()

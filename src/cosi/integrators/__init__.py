"""The sampler registry: user-facing names mapped to parameterized machinery.

``build_plan(name, process, nfe, ...)`` returns the cached :class:`Plan` of a sampler;
``SAMPLERS`` maps each name to its :class:`Sampler` entry.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..processes import LinearProcess
from . import classic, conjugate
from .base import NFEError, grid_for, single_call_plan, steps_for
from .plan import Plan


@dataclass(frozen=True)
class Sampler:
    """A named sampler.

    ``build(process, nfe, grid, denoise, **options) -> Plan``; ``default_grid`` maps a
    process name to the grid chosen by measurement (docs/integrators.md).
    """

    name: str
    description: str
    build: Callable
    options: dict = field(default_factory=dict)
    processes: tuple = ("vp", "cld", "psld")
    default_grid: dict = field(default_factory=dict)
    stochastic: bool = False
    doc: str = ""

    def grid(self, process: LinearProcess) -> str:
        return self.default_grid.get(process.name, "uniform")


def single_call(coeffs: Callable, name: str) -> Callable:
    """Build function of a sampler with one network call per step from its coefficients."""

    def build(process, nfe, grid, denoise, **options):
        ts = grid_for(process, steps_for(nfe, 1, 0, denoise, name), grid)
        return single_call_plan(process, ts, coeffs(process, ts, **options), denoise)

    return build


def _options(fn: Callable) -> dict:
    ps = list(inspect.signature(fn).parameters.values())[2:]
    return {p.name: p.default for p in ps}


SAMPLERS: "OrderedDict[str, Sampler]" = OrderedDict()


def register(name: str, description: str, *, coeffs: Callable | None = None,
             build: Callable | None = None, options: dict | None = None, **kw) -> None:
    if coeffs is not None:
        build, options, doc = single_call(coeffs, name), _options(coeffs), coeffs.__doc__
    else:
        doc = build.__doc__
    SAMPLERS[name] = Sampler(name, description, build, options or {}, doc=doc or "", **kw)


# Default grids: chosen by measurement on the exact-score oracles (docs/integrators.md,
# benchmarks/grid_choice.py). On PSLD the stiff end near t_min dominates the error.
_ODE_GRIDS = {"vp": "logsnr", "cld": "quadratic", "psld": "quadratic"}

register("euler", "Euler on the probability-flow ODE (order 1, 1 NFE/step)",
         coeffs=classic.euler, default_grid=_ODE_GRIDS)
register("em", "Euler-Maruyama on the reverse SDE, noise scale eta (1 NFE/step)",
         coeffs=classic.em, default_grid=_ODE_GRIDS, stochastic=True)
register("ddim", "DDIM on VP, eta >= 0 (1 NFE/step)", coeffs=classic.ddim,
         processes=("vp",), default_grid=_ODE_GRIDS)
register("conjugate", "conjugate integrator with a constant matrix B (B=0: exponential/DDIM)",
         coeffs=conjugate.conjugate, default_grid=_ODE_GRIDS)
register("lambda-ddim-1", "conjugate integrator with B = lam * I (lambda-DDIM-I)",
         coeffs=conjugate.lambda_ddim_1, default_grid=_ODE_GRIDS)
register("lambda-ddim-2", "conjugate integrator with B = lam * ones (lambda-DDIM-II)",
         coeffs=conjugate.lambda_ddim_2, default_grid=_ODE_GRIDS)


def get_sampler(name: str) -> Sampler:
    try:
        return SAMPLERS[name]
    except KeyError:
        import difflib

        near = difflib.get_close_matches(name, SAMPLERS, n=3)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise ValueError(f"unknown sampler {name!r}{hint}; `cosi samplers` lists them: "
                         f"{', '.join(SAMPLERS)}") from None


def _freeze(v):
    if isinstance(v, torch.Tensor):
        return tuple(v.flatten().tolist()), tuple(v.shape)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


_CACHE: "OrderedDict[tuple, Plan]" = OrderedDict()
_CACHE_SIZE = 256


def build_plan(name: str, process: LinearProcess, nfe: int, grid=None, denoise: bool = False,
               **options) -> Plan:
    """The plan of sampler ``name`` for exactly ``nfe`` network calls (cached)."""
    s = get_sampler(name)
    if process.name not in s.processes:
        raise ValueError(f"sampler {name!r} is not defined for {process.name}; it supports "
                         f"{', '.join(s.processes)}")
    unknown = set(options) - set(s.options)
    if unknown:
        raise ValueError(f"sampler {name!r} has no option(s) {sorted(unknown)}; its options are "
                         f"{sorted(s.options) or 'none'}")
    grid = s.grid(process) if grid is None else grid
    key = (name, process.key, nfe, _freeze(grid), bool(denoise), _freeze(sorted(options.items())))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    plan = s.build(process, nfe, grid, bool(denoise), **options)
    if plan.nfe != nfe:  # a sampler bug, not a user error
        raise AssertionError(f"{name} built a plan with {plan.nfe} calls for nfe={nfe}")
    _CACHE[key] = plan
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return plan


__all__ = ["SAMPLERS", "Sampler", "build_plan", "get_sampler", "NFEError", "Plan"]

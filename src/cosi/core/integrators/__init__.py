"""The sampler registry: user-facing names mapped to parameterized machinery.

``build_plan(name, process, nfe, ...)`` returns the cached :class:`Plan` of a sampler;
``SAMPLERS`` maps each name to its :class:`Sampler` entry.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

from ..processes import LinearProcess
from . import classic, conjugate, gddim, multistep
from . import eta as eta_schedule
from . import stability
from .splitting import Scheme, scheme_algorithm, scheme_calls, splitting_plan
from .base import NFEError, grid_for, single_call_plan, steps_for
from .plan import Plan


@dataclass(frozen=True)
class Requires:
    """What a sampler needs of a process, as a predicate on its capabilities (never its name):
    ``what`` for errors ("a variance-preserving one-block process"), ``tag`` for listings,
    ``instead`` the sampler to suggest."""

    what: str
    test: Callable
    tag: str
    instead: str = ""

    def refusal(self, sampler: str, process: LinearProcess) -> str | None:
        if self.test(process):
            return None
        hint = f"; use {self.instead}" if self.instead else ""
        return f"{sampler} needs {self.what}; this is {process.name} (k={process.k}){hint}"


ANY_PROCESS = Requires("a linear process", lambda p: True, "")
VARIANCE_PRESERVING = Requires("a variance-preserving one-block process", lambda p: p.variance_preserving,
                               "vp only", "gddim")
PHASE_SPACE = Requires("a two-block (x, m) process with constant β", lambda p: p.k == 2 and p.constant_beta,
                       "k = 2, constant β only", "gddim-2m or lambda-ddim-2")


@dataclass(frozen=True)
class Sampler:
    """A named sampler.

    ``build(process, nfe, grid, denoise, **options) -> Plan``; its grid defaults to the process's
    ``ode_grid``, and ``default_grid`` maps a process name to this sampler's own choice where a
    measurement found another (docs/integrators.md, "Default time grids"). A sampler run by
    another library (the diffusers baselines) has no plan: ``build`` is None and
    ``run(eps_model, process, nfe, z_T, **options) -> (z, calls)`` samples directly.
    """

    name: str
    description: str
    build: Callable | None
    options: dict = field(default_factory=dict)
    requires: Requires = ANY_PROCESS
    default_grid: dict = field(default_factory=dict)
    stochastic: bool = False
    run: Callable | None = None
    calls: Callable = lambda process: (1, 0)  # (calls per step, extra calls at the start) on a process
    eps_form: bool = True  # steps with ε itself (projected for consistency on k ≥ 2); False: with x̂₀ = w (z − L ε)
    resolve: Callable | None = None  # resolve(process, nfe, grid, denoise, options) -> options: defaults that
    # depend on the call (eta='auto'), resolved outside the plan cache so that their warnings fire every call

    def grid(self, process: LinearProcess) -> str:
        """The grid this sampler defaults to on ``process``; 'own' for a sampler run by another library."""
        if self.build is None:
            return "own"
        return self.default_grid.get(process.name, process.ode_grid)

    def accepts(self, process) -> bool:
        """Whether the sampler runs on ``process`` (a LinearProcess or a name): its requirement's test."""
        from ..processes import make_process

        return bool(self.requires.test(make_process(process)))

    @property
    def algorithm(self) -> str:
        """The sampler's update in math.md's symbols, its order and NFE per step: the docstring of its build
        (or run) function, shown by ``cosi samplers --explain``."""
        return inspect.getdoc(self.build or self.run) or self.description


def single_call(coeffs: Callable, name: str) -> Callable:
    """Build function of a sampler with one network call per step from its coefficients."""

    def build(process, nfe, grid, denoise, **options):
        ts = grid_for(process, steps_for(nfe, 1, 0, denoise, name), grid)
        return single_call_plan(process, ts, coeffs(process, ts, **options), denoise, label=f"{name} step t→s")

    build.__doc__ = coeffs.__doc__
    return build


def _options(fn: Callable) -> dict:
    ps = list(inspect.signature(fn).parameters.values())[2:]
    return {p.name: p.default for p in ps}


SAMPLERS: "OrderedDict[str, Sampler]" = OrderedDict()


def register(name: str, description: str, *, coeffs: Callable | None = None,
             build: Callable | None = None, options: dict | None = None, **kw) -> None:
    if coeffs is not None:
        build, options = single_call(coeffs, name), _options(coeffs)
    SAMPLERS[name] = Sampler(name, description, build, options or {}, **kw)


register("euler", "Euler on the probability-flow ODE (order 1, 1 NFE/step)",
         coeffs=classic.euler)
register("em", "Euler-Maruyama on the reverse SDE, noise scale eta (1 NFE/step)",
         coeffs=classic.em, stochastic=True)
register("ddim", "DDIM on a variance-preserving process: gddim's step, eta of math.md (1 NFE/step)",
         coeffs=gddim.ddim, requires=VARIANCE_PRESERVING)
register("gddim", "data-prediction step (DDIM generalized to every process, exact for point-mass data), "
         "eta >= 0 (1 NFE/step)", coeffs=gddim.gddim, eps_form=False)
register("gddim-s", "gddim with the reverse SDE's noise, eta = 1 by default (1 NFE/step)",
         coeffs=gddim.gddim_s, stochastic=True, eps_form=False)
register("gddim-2m", "two-step data prediction (x0 linear in t through the last two calls), order 2, "
         "eta >= 0 (1 NFE/step)", build=gddim.gddim_2m_plan, options={"eta": 0.0, "tau": "t"},
         default_grid={"cld": "logsnr"}, eps_form=False)


def _multistep(order: int, corrector: bool, name: str) -> Callable:
    def build(process, nfe, grid, denoise, eta=0.0, tau="t", lower_order_final=False):
        return multistep.multistep_plan(process, nfe, grid, denoise, order=order, corrector=corrector, eta=eta,
                                        tau=tau, lower_order_final=lower_order_final, name=name)
    build.__doc__ = multistep.multistep_plan.__doc__
    return build


for _q, _c in ((3, False), (2, True), (3, True)):
    _name = f"gddim-{_q}m" + ("-c" if _c else "")
    register(_name, f"{_q}-step data prediction (x0 polynomial in t through the last {_q} calls)"
             + (", with UniPC's corrector (no extra call)" if _c else "")
             + f", order {_q + _c}, eta >= 0 (1 NFE/step)", build=_multistep(_q, _c, _name),
             options={"eta": 0.0, "tau": "t", "lower_order_final": False}, eps_form=False)
register("heun", "Heun on the probability-flow ODE (EDM's 2nd-order sampler, order 2, 2 NFE/step)",
         build=classic.heun_plan, calls=lambda process: (2, 0))
register("conjugate", "conjugate integrator with a constant matrix B (B=0: exponential/DDIM)",
         coeffs=conjugate.conjugate)
register("lambda-ddim-1", "conjugate integrator with B = lam * I (lambda-DDIM-I)",
         coeffs=conjugate.lambda_ddim_1)
register("lambda-ddim-2", "conjugate integrator with B = lam * ones (lambda-DDIM-II)",
         coeffs=conjugate.lambda_ddim_2)


def register_splitting(name: str, description: str, scheme: Scheme, note: str = "", **defaults) -> None:
    """A splitting preset: the scheme plus its default options (eta, lam). Its docstring (``cosi samplers
    --explain``) is the description, the scheme's step as equations (:func:`splitting.scheme_algorithm`)
    and ``note``."""

    def build(process, nfe, grid, denoise, **options):
        return splitting_plan(process, scheme, nfe, grid, denoise, name=name, **{**defaults, **options})

    def resolve(process, nfe, grid, denoise, options):  # eta='auto': the stable schedule of exact moments (eta.py)
        eta = options.get("eta", defaults.get("eta"))
        return {**options, "eta": eta_schedule.resolve(name, process.name, nfe - int(denoise), eta,
                                                         warn=grid == get_sampler(name).grid(process))}

    if scheme.stochastic:  # which linear terms O integrates with the noise, and the position's own noise
        defaults = {**defaults, "o_part": scheme.o_part, "eta_x": None}  # scale (None: eta): choices to measure
    shown = {k: v for k, v in defaults.items() if v is not None}
    build.__doc__ = (f"{description}. Composition {scheme.composition} (fractions of h {scheme.fractions}, "
                     f"'*' the call), {scheme.policy} calls; defaults {shown}.\n\n{scheme_algorithm(scheme)}"
                     + (f"\n\n{note}" if note else ""))
    register(name, description, build=build, options=dict(defaults), requires=PHASE_SPACE,
             stochastic=scheme.stochastic, calls=lambda p: scheme_calls(p, scheme),
             resolve=resolve if scheme.stochastic else None)


HALF = 0.5  # half of the step h
CSPS_D_NOTE = (
    "The momentum kick B uses the score coefficient at its sub-flow's start, S(t), while its ε comes from the "
    "call at t+h/2. λ = −3 is tuned to that choice: taking S(t+h/2), consistent with the call, was 2× worse "
    "on the PSLD oracle (docs/integrators.md, \"How the defaults of csps-d were chosen\").")
# deterministic (probability-flow ODE)
register_splitting("nse", "naive symplectic Euler (B then A)", Scheme("BA", (1, 1), "euler", "naive"))
register_splitting("nvv", "naive velocity Verlet (B/2, A, B/2)", Scheme("BAB", (HALF, 1, HALF), "euler", "naive"))
register_splitting("rse", "reduced symplectic Euler: one call per step", Scheme("*BA", (1, 1), "euler", "reduced"))
register_splitting("rvv", "reduced velocity Verlet: one call per step (+1 at T)",
                   Scheme("BA*B", (HALF, 1, HALF), "euler", "reduced"))
register_splitting("cse", "conjugate symplectic Euler: exponential sub-flows, one call per step",
                   Scheme("*BA", (1, 1), "conjugate", "reduced"), lam=0.0)
register_splitting("cvv", "conjugate velocity Verlet: exponential sub-flows, one call per step (+1 at T)",
                   Scheme("BA*B", (HALF, 1, HALF), "conjugate", "reduced"), lam=0.0)
register_splitting("csps-d", "conjugate splitting PSLD sampler, deterministic: A/2 (conjugate), call, "
                   "B (Euler), A/2 (conjugate); the best deterministic splitting preset",
                   Scheme("A*BA", (HALF, 1, HALF), "A=conjugate,B=euler", "reduced"), note=CSPS_D_NOTE, lam=-3.0)
register_splitting("csps-2m", "second-order conjugate splitting: A/2, B/2 (conjugate, ε extrapolated through the "
                   "last two calls), call at the midpoint, B/2, A/2; order 2 at λ = 0, one call per step (+1 at T)",
                   Scheme("AB*BA", (HALF, HALF, HALF, HALF), "conjugate", "reduced", extrapolate=True), lam=0.0)
# stochastic (reverse SDE family, noise scale eta; same marginals for every eta)
register_splitting("oba", "naive OBA splitting (stochastic)", Scheme("OBA", (1, 1, 1), "euler", "naive"), eta="auto")
register_splitting("bao", "naive BAO splitting (stochastic)", Scheme("BAO", (1, 1, 1), "euler", "naive"), eta="auto")
register_splitting("obab", "naive OBAB splitting (stochastic)", Scheme("OBAB", (1, HALF, 1, HALF), "euler", "naive"),
                   eta="auto")
register_splitting("baoab", "naive BAOAB splitting (stochastic)",
                   Scheme("BAOAB", (HALF, HALF, 1, HALF, HALF), "euler", "naive"), eta="auto")
register_splitting("roba", "reduced OBA: one call per step", Scheme("O*BA", (1, 1, 1), "euler", "reduced"), eta="auto")
register_splitting("rbao", "reduced BAO: one call per step", Scheme("*BAO", (1, 1, 1), "euler", "reduced"), eta="auto")
register_splitting("robab", "reduced OBAB: one call per step (+1 at T)",
                   Scheme("OBA*B", (1, HALF, 1, HALF), "euler", "reduced"), eta="auto")
register_splitting("rbaoab", "reduced BAOAB: one call per step (+1 at T)",
                   Scheme("BAOA*B", (HALF, HALF, 1, HALF, HALF), "euler", "reduced"), eta="auto")
register_splitting("coba", "conjugate OBA: exponential sub-flows, one call per step",
                   Scheme("O*BA", (1, 1, 1), "conjugate", "reduced"), eta="auto", lam=0.0)
register_splitting("sps-s", "splitting PSLD sampler, stochastic: O, B/2, A, call, B/2 (reduced OBAB); "
                   "eta='auto': the measured stable schedule", Scheme("OBA*B", (1, HALF, 1, HALF), "euler", "reduced"), eta="auto")
register_splitting("csps-s", "conjugate splitting PSLD sampler, stochastic: O, B/2, A (conjugate), call, "
                   "B/2; eta='auto': the measured stable schedule",
                   Scheme("OBA*B", (1, HALF, 1, HALF), "A=conjugate,B=euler", "reduced"), eta="auto", lam=0.0)
register_splitting("sscs", "CLD's symmetric splitting sampler SSCS (Dockhorn et al. 2022)",
                   Scheme("O*BAO", (HALF, 1, 1, HALF), "euler", "reduced", o_part="linear"), eta="auto")


def register_external(name: str, description: str, run: Callable, *, options: dict, requires: Requires,
                      doc: str = "") -> None:
    """A sampler run step by step by another library (the peers of :mod:`cosi.evaluation.peers`):
    ``run(eps_model, process, nfe, z_T, **options) -> (z, calls)``. Registered from above the core, so
    the core itself imports no such library. ``doc`` (default: ``run``'s) is what ``cosi samplers --explain``
    shows."""
    if doc:
        run = functools.partial(run)  # a copy that carries the doc
        run.__doc__ = doc
    SAMPLERS[name] = Sampler(name, description, None, dict(options), requires=requires, run=run)


def nearest_nfe(sampler: str, nfe: int, process="psld", *, denoise: bool = False, at_least: bool = False) -> int:
    """The NFE closest to ``nfe`` that ``sampler`` meets exactly on ``process`` (ties: the smaller one,
    so an equally near choice never costs more calls than asked); with ``at_least``, the smallest such
    NFE ≥ ``nfe``. A sampler makes ``extra + per_step · steps`` calls, plus one to denoise, with at
    least one step."""
    from ..processes import make_process

    s = get_sampler(sampler)
    per_step, extra = s.calls(make_process(process))
    fixed = extra + int(denoise)
    lowest = fixed + per_step
    if nfe <= lowest:
        return lowest
    below = fixed + per_step * ((nfe - fixed) // per_step)
    above = below if below == nfe else below + per_step
    if at_least or above - nfe < nfe - below:
        return above
    return below


def get_sampler(name: str) -> Sampler:
    if not isinstance(name, str):
        raise TypeError(f"a sampler is named by a string (e.g. 'gddim-2m'), got {type(name).__name__} {name!r}; "
                        "the order is build_plan(sampler, process, nfe) and sample(eps_model, process, sampler, nfe)")
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


class _Frozen:
    """An argument keyed by its frozen form (tensors by their entries), so that a grid tensor or a
    B matrix can key :func:`functools.lru_cache`; the value itself is passed on unchanged."""

    __slots__ = ("value", "key")

    def __init__(self, value):
        self.value, self.key = value, _freeze(value)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Frozen) and self.key == other.key


def check_sampler(s: Sampler, process: LinearProcess, options: dict) -> None:
    """Refuse a process or options the sampler does not take."""
    refusal = s.requires.refusal(s.name, process)
    if refusal:
        raise ValueError(f"sampler {s.name!r} is not defined for {process.name}: {refusal}")
    unknown = set(options) - set(s.options)
    if unknown:
        raise ValueError(f"sampler {s.name!r} has no option(s) {sorted(unknown)}; its options are "
                         f"{sorted(s.options) or 'none'}")


COEFF_LIMIT = 1e10  # the largest |coefficient| of any default plan is ~1e7 (baoab on PSLD at nfe=4)


def _coefficients_refused(name: str, nfe: int, options: dict, why: str) -> str:
    culprit = {k: options[k] for k in ("lam", "B", "eta") if k in options}
    if "lam" in options:
        lam = options["lam"]
        lam = f"{lam:g}" if isinstance(lam, (int, float)) else repr(lam)
        return (f"lam={lam} makes {name}'s coefficients at nfe={nfe} {why} — choose a λ of moderate "
                "size (the presets use |λ| ≤ 10), or lam='auto'")
    what = f" with {culprit}" if culprit else ""
    return f"{name}{what} at nfe={nfe} has coefficients that are {why} — choose other options or another nfe"


def _check_coefficients(plan: Plan, name: str, nfe: int, options: dict) -> None:
    """Refuse a plan whose float64 coefficients are non-finite or absurdly large (e.g. |λ| = 1e6): it
    would turn any model's ε into overflow and blame the model."""
    for chunk in plan.chunks:
        stacks = [c for part in chunk if part is not None for c in (part if isinstance(part, tuple) else (part,))]
        for c in stacks:  # C_r of several registers is a tuple of stacks
            if not bool(torch.isfinite(c).all()):
                raise ValueError(_coefficients_refused(name, nfe, options, "non-finite (inf or NaN)"))
            big = float(c.abs().max()) if c.numel() else 0.0
            if big > COEFF_LIMIT:
                raise ValueError(_coefficients_refused(name, nfe, options, f"as large as {big:.3g}"))


def build_plan(name: str, process: LinearProcess, nfe: int, grid=None, denoise: bool = False,
               project: bool = True, allow_unstable: bool = False, **options) -> Plan:
    """The plan of sampler ``name`` for exactly ``nfe`` network calls (cached). ``project``: follow each
    network call of an ε-form sampler on a k ≥ 2 process by the consistency projection of ε
    (:meth:`Plan.project_eps`); False gives the paper's plain ε-form. Below the sampler's measured stable
    range on the process (:mod:`.stability`) it is refused unless ``allow_unstable``; the paper's plain
    ε-form (``project=False``) is outside that measurement and not refused."""
    s = get_sampler(name)
    check_sampler(s, process, options)
    if s.build is None:
        raise ValueError(f"sampler {name!r} is run step by step by another library and has no plan; "
                         "call it through cosi.sample")
    lam = options.get("lam")
    if isinstance(lam, (int, float)) and not math.isfinite(lam):
        raise ValueError(f"lam={lam} is not a finite number — give a finite λ (the presets use |λ| ≤ 10) or "
                         "lam='auto'")
    grid = s.grid(process) if grid is None else grid
    project = bool(project) and s.eps_form and process.k > 1
    if project or not s.eps_form or process.k == 1:
        stability.check(name, process.name, nfe - int(denoise), allow_unstable=allow_unstable)
    if s.resolve is not None:
        options = s.resolve(process, nfe, grid, denoise, options)
    return _cached_plan(name, process, nfe, _Frozen(grid), bool(denoise), project, _Frozen(sorted(options.items())))


@lru_cache(maxsize=256)
def _cached_plan(name: str, process: LinearProcess, nfe: int, grid: _Frozen, denoise: bool, project: bool,
                 options: _Frozen) -> Plan:
    opts = dict(options.value)
    try:
        plan = SAMPLERS[name].build(process, nfe, grid.value, denoise, **opts)
    except torch.linalg.LinAlgError:
        raise ValueError(_coefficients_refused(name, nfe, opts, "singular (a matrix inversion fails)")) from None
    _check_coefficients(plan, name, nfe, opts)
    plan.process = process
    if plan.nfe != nfe:  # a sampler bug, not a user error
        raise AssertionError(f"{name} built a plan with {plan.nfe} calls for nfe={nfe}")
    if project:
        plan.project_eps(process)
    return plan


__all__ = ["SAMPLERS", "Sampler", "Requires", "ANY_PROCESS", "VARIANCE_PRESERVING", "PHASE_SPACE", "build_plan", "check_sampler", "get_sampler", "nearest_nfe", "register_external",
           "NFEError", "Plan", "stability"]

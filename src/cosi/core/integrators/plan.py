"""Samplers as data: a plan of network calls and linear block updates, and one runner.

Every sampler in cosi — Euler, Euler–Maruyama, DDIM, conjugate integrators, splitting
integrators and their hybrids — advances the state by maps that are linear in the state
z, the latest network output ε and fresh Gaussian noise ξ:

    z ← C_z z + C_ε ε + C_ξ ξ        (C_* are k×k matrices acting on every data coordinate)

interleaved with network calls ε ← ε_θ(z, t). A sampler is therefore a list of such
operations whose float64 coefficients are computed once per (process, sampler options,
grid) and cached; the loop in :func:`run_plan` only applies them. Multistep samplers also
keep registers r_0, r_1, …, state-shaped memories of earlier steps: an update may read the
first n of them (z ← … + Σ_j C_r,j r_j) and save into one slot (r_j ← S_z z + S_ε ε, from the
values before the update).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Callable

import torch
from torch import Tensor

from ..noise import CounterNoise
from ..processes import f64
from .coefficients import consistency_projection, data_prediction_weights


@dataclass(frozen=True)
class Eval:
    """ε ← ε_θ(z, t); with ``project`` = (chunk, row), then ε ← P_z z + P_ε ε, the consistency projection
    (:func:`cosi.core.integrators.coefficients.consistency_projection`) with the matrices of that row.
    ``at``: the call's time in the step's symbols (``t + h/2``), for :meth:`Plan.explain`."""

    t: float
    project: tuple | None = None
    at: str = ""

    def __str__(self) -> str:
        return f"ε(z, {self.at or f'{self.t:.4g}'})" + (" → projected" if self.project is not None else "")

    def __repr__(self) -> str:
        return f"Eval[{self}; t={self.t:.6g}]"


@dataclass(frozen=True)
class Lin:
    """z ← C_z z + C_ε ε + Σ_j C_r,j r_j + C_ξ ξ with the matrices of row ``row`` of coefficient
    chunk ``chunk``; ``t`` is the time the state reaches. ``uses_reg``: how many registers r_0 … r_{n−1}
    it reads (True = 1). With ``save`` (a chunk of (S_z, S_ε)), also r_slot ← S_z z + S_ε ε from the same
    z and ε, before z changes (the update reads the old r_slot).

    ``label``: what the update is, in symbols and the same for every step (``A[conjugate, λ=-3] t→t+h/2``),
    set by the builder; ``step``: set on the last update of grid step ``step`` (the per-step callback fires
    after it; the final denoising update is step ``steps``)."""

    chunk: int
    row: int
    uses_eps: bool
    noisy: bool
    t: float
    uses_reg: int = 0
    save: int | None = None
    slot: int = 0
    label: str = ""
    step: int | None = None

    def __str__(self) -> str:
        return self.label or f"update (chunk {self.chunk}, row {self.row})"

    def __repr__(self) -> str:
        regs = "".join(f", r{j}" for j in range(int(self.uses_reg)))
        reads = "z" + ", ε" * self.uses_eps + regs + ", ξ" * self.noisy
        extra = ("" if self.save is None else f"; r{self.slot} ← chunk {self.save}") + \
            ("" if self.step is None else f"; ends step {self.step}")
        return f"Lin[{self}; reaches t={self.t:.6g}; reads {reads}; chunk {self.chunk} row {self.row}{extra}]"


def _runs(items: list) -> list:
    """Run-length encoding: [(first index, count, item)] of consecutive equal items."""
    out = []
    for i, x in enumerate(items):
        if out and out[-1][2] == x:
            out[-1][1] += 1
        else:
            out.append([i, 1, x])
    return out


@dataclass(repr=False)
class Plan:
    """The whole sampler: a list of operations and float64 coefficient chunks.

    A chunk is a tuple (C_z, C_ε, C_ξ, C_r) of (n, k, k) stacks, typically one row per step of
    one kind of sub-update, computed vectorized over the grid; C_ε, C_ξ or C_r is None when the
    update does not use ε, noise or a register. An update that reads several registers has C_r a
    tuple of (n, k, k) stacks, one per register slot 0, 1, …. ``process``: the process it was built for
    (set by :func:`cosi.core.integrators.build_plan`; the per-step callback's x̂₀ needs it).
    """

    k: int
    ops: list = field(default_factory=list)
    chunks: list = field(default_factory=list)
    on_device: dict = field(default_factory=dict, compare=False)  # see _packed
    process: object = field(default=None, compare=False)

    @property
    def nfe(self) -> int:
        return sum(isinstance(op, Eval) for op in self.ops)

    @property
    def stochastic(self) -> bool:
        return any(isinstance(op, Lin) and op.noisy for op in self.ops)

    @property
    def steps(self) -> int:
        """Grid steps marked by the builder (the final denoising update counts as one)."""
        return sum(isinstance(op, Lin) and op.step is not None for op in self.ops)

    def coeffs(self, Cz: Tensor, Ce: Tensor | None = None, Cn: Tensor | None = None,
               Cr: Tensor | None = None) -> int:
        """Register a chunk of (n, k, k) coefficient stacks (Cr: one stack, or a list of them for
        registers 0, 1, …); returns its id."""
        as64 = lambda c: None if c is None else c.to(f64).reshape(-1, self.k, self.k)  # noqa: E731
        if isinstance(Cr, (list, tuple)):
            Cr = Cr[0] if len(Cr) == 1 else tuple(as64(c) for c in Cr)
        self.chunks.append((as64(Cz), as64(Ce), as64(Cn), Cr if isinstance(Cr, tuple) else as64(Cr)))
        return len(self.chunks) - 1

    def eval(self, t, at: str = "") -> None:
        """Append a network call at time t (``at``: that time in the step's symbols, e.g. 't + h/2')."""
        self.ops.append(Eval(float(t), at=at))

    def project_eps(self, process) -> None:
        """Follow every network call by the consistency projection of ε, ε ← P_z z + P_ε ε at the call's time
        (float64 matrices, one row per call): no network call, one fused update."""
        calls = [i for i, op in enumerate(self.ops) if isinstance(op, Eval)]
        if not calls:
            return
        P_z, P_eps = consistency_projection(process, torch.tensor([self.ops[i].t for i in calls], dtype=f64))
        chunk = self.coeffs(P_z, P_eps)
        for row, i in enumerate(calls):
            self.ops[i] = replace(self.ops[i], project=(chunk, row))

    def lin(self, t, chunk: int, row: int = 0, save: int | None = None, slot: int = 0, *, label: str = "",
            step: int | None = None) -> None:
        """Append the update of row ``row`` of ``chunk``, reaching time t; ``save``: a chunk
        (S_z, S_ε) whose row ``row`` writes register ``slot`` from the values before the update. ``label``:
        the update in symbols, the same for every step; ``step``: the grid step this update ends."""
        _, Ce, Cn, Cr = self.chunks[chunk]
        if save is not None and (self.chunks[save][2] is not None or self.chunks[save][3] is not None):
            raise ValueError("a register save reads z and ε only")
        regs = 0 if Cr is None else len(Cr) if isinstance(Cr, tuple) else 1
        self.ops.append(Lin(chunk, row, Ce is not None, Cn is not None, float(t), regs, save, slot, label, step))

    def data_prediction_rows(self) -> Tensor:
        """(calls, 1, 2k) float64: per network call, [w_t | −w_t L_t], so that x̂₀ = w_t (z − L_t ε) from the
        state at the call and its ε (:func:`~cosi.core.integrators.coefficients.data_prediction_weights`).
        Computed on first use (the per-step callback) and kept."""
        if "x0" not in self.on_device:
            if self.process is None:
                raise ValueError("the per-step callback's x̂₀ needs the plan's process: build the plan with "
                                 "cosi.core.integrators.build_plan (or set plan.process)")
            t = torch.tensor([op.t for op in self.ops if isinstance(op, Eval)], dtype=f64)
            w = data_prediction_weights(self.process, t)
            self.on_device["x0"] = torch.cat([w, -w @ self.process.marginal(t).L], -1)
        return self.on_device["x0"]

    def explain(self) -> str:
        """The labelled sequence of updates and network calls, one line per run of identical steps:
        the first step, the repeated middle steps once with their count, the last step if it differs,
        then what follows the last grid step (the final denoising)."""
        steps, current = [], []
        for op in self.ops:
            current.append(str(op))
            if isinstance(op, Lin) and op.step is not None:
                steps.append(" · ".join(current))
                current = []
        lines = []
        for first, count, text in _runs(steps):
            span = f"step {first}" if count == 1 else f"steps {first}–{first + count - 1} (×{count})"
            lines.append(f"{span}: {text}")
        if current:
            lines.append(("then" if steps else "ops") + ": " + " · ".join(current))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Plan(k={self.k}, {self.nfe} network calls, {len(self.ops)} ops):\n{self.explain()}"


class ModelError(RuntimeError):
    """The eps-model returned something the sampler cannot use."""


# ---- applying one linear update -----------------------------------------------------------------


def lin_update(C: Tensor, *parts: Tensor) -> Tensor:
    """z ← C_z z + C_ε ε + C_r r + C_ξ ξ for ``parts`` = (z, [ε], [r], [ξ]) and the packed
    k×(k·len(parts)) matrix C = [C_z | C_ε | C_r | C_ξ] (absent parts left out):
    out_i = Σ_j C_ij part_j, blockwise.

    Written as sums of products so that torch.compile turns it into one elementwise kernel."""
    k = C.shape[0]
    cols = [b for p in parts for b in p.unflatten(1, (k, -1)).unbind(1)]
    rows = []
    for i in range(k):
        acc = C[i, 0] * cols[0]
        for j in range(1, len(cols)):
            acc = torch.addcmul(acc, C[i, j], cols[j])
        rows.append(acc)
    return torch.cat(rows, 1) if k > 1 else rows[0]


@lru_cache(maxsize=1)
def _fused_updates() -> dict:
    """One compiled update per number of parts: each its own code object, so torch.compile's
    recompilation budget counts per signature (k and dtype vary across processes and runs)."""
    def u1(C, z):
        return lin_update(C, z)

    def u2(C, z, a):
        return lin_update(C, z, a)

    def u3(C, z, a, b):
        return lin_update(C, z, a, b)

    def u4(C, z, a, b, c):
        return lin_update(C, z, a, b, c)

    def u5(C, z, a, b, c, d):
        return lin_update(C, z, a, b, c, d)

    def u6(C, z, a, b, c, d, e):
        return lin_update(C, z, a, b, c, d, e)

    return {n: torch.compile(f, dynamic=True) for n, f in ((1, u1), (2, u2), (3, u3), (4, u4), (5, u5), (6, u6))}


def _apply(C: Tensor, parts: list, fused: bool) -> Tensor:
    return _fused_updates()[len(parts)](C, *parts) if fused else lin_update(C, *parts)


# ---- the runner ----------------------------------------------------------------------------------


def _randn(z: Tensor, generator) -> Tensor:
    if generator is None or generator.device == z.device:
        return torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return torch.randn(z.shape, generator=generator, device=generator.device, dtype=z.dtype).to(z.device)


def _packed(plan: Plan, device: torch.device, dtype: torch.dtype) -> list:
    """The plan's chunks as (n, k, w) stacks [C_z | C_ε | C_r | C_ξ] (the order of
    :func:`_loop`'s parts) in ``dtype`` on ``device``, made once per (device, dtype) and kept on
    the plan."""
    key = (str(device), dtype)
    if key not in plan.on_device:
        regs = lambda Cr: Cr if isinstance(Cr, tuple) else (Cr,)  # noqa: E731
        plan.on_device[key] = [torch.cat([c for c in (Cz, Ce, *regs(Cr), Cn) if c is not None], -1)
                               .to(device=device, dtype=dtype) for Cz, Ce, Cn, Cr in plan.chunks]
    return plan.on_device[key]


def _data_prediction(row: Tensor, z: Tensor, eps: Tensor) -> Tensor:
    """x̂₀ = w (z − L ε) = Σ_j row_j z_j + Σ_j row_{k+j} ε_j over the k blocks of z and ε: the data block's shape."""
    k = row.shape[-1] // 2
    parts = z.unflatten(1, (k, -1)).unbind(1) + eps.unflatten(1, (k, -1)).unbind(1)
    x0 = row[0] * parts[0]
    for c, p in zip(row[1:], parts[1:]):
        x0 = x0 + c * p
    return x0


def _loop(plan: Plan, eps_model: Callable, z: Tensor, noise: Callable, *, fused: bool = False,
          bar=None, callback: Callable | None = None) -> tuple[Tensor, Tensor]:
    """The plan's operations in order; returns (final state, per-call finiteness flags). ``callback``: see
    :func:`run_plan`.

    No host-device synchronization happens here, so the loop can be captured as a CUDA graph."""
    dev, dt = z.device, z.dtype
    chunks = _packed(plan, dev, dt)
    x0_rows = None if callback is None else plan.data_prediction_rows().to(device=dev, dtype=dt)
    finite = torch.ones(max(plan.nfe, 1), dtype=torch.bool, device=dev)
    eps, regs, calls, n_noise, z_call = None, {}, 0, 0, None
    B = z.shape[0]
    for op in plan.ops:
        if isinstance(op, Eval):
            out = eps_model(z, torch.full((B,), op.t, device=dev, dtype=dt))
            if not isinstance(out, Tensor) or out.shape != z.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ModelError(
                    f"eps_model returned {got} at network call {calls + 1} (t={op.t:.6g}); "
                    f"it must return a tensor of the state's shape {tuple(z.shape)}"
                )
            if not out.is_floating_point():  # a cast would hide it: bool or int ε moves x by orders of magnitude
                raise ModelError(
                    f"eps_model returned dtype {out.dtype} at network call {calls + 1} (t={op.t:.6g}); "
                    "ε must be a real floating-point tensor (float16, bfloat16, float32 or float64)"
                )
            eps = out.to(dt)
            finite[calls] = torch.isfinite(eps).all()
            if op.project is not None:
                eps = _apply(chunks[op.project[0]][op.project[1]], [z, eps], fused)
            z_call = z
            calls += 1
            if bar is not None:
                bar.update(1)
            continue
        parts = [z]
        if op.uses_eps:
            parts.append(eps)
        if op.uses_reg:
            parts.extend(regs[j] for j in range(int(op.uses_reg)))
        if op.noisy:
            parts.append(noise(n_noise, z))
            n_noise += 1
        if op.save is not None:
            regs[op.slot] = _apply(chunks[op.save][op.row], [z, eps], fused)
        z = _apply(chunks[op.chunk][op.row], parts, fused)
        if callback is not None and op.step is not None:
            x0 = _data_prediction(x0_rows[calls - 1, 0], z_call, eps)
            callback({"i": op.step, "t": op.t, "z": z, "x0_hat": x0, "calls": calls})
    return z, finite


@lru_cache(maxsize=None)
def side_stream(device: torch.device) -> "torch.cuda.Stream":
    """The one stream that warm-ups before a capture run on, per device. A new stream per capture
    would leave a cuBLAS workspace (32 MiB) cached for each, up to the 32 streams of PyTorch's pool
    (seen on an H200: +33 MB per capture, levelling off at ~1 GB)."""
    return torch.cuda.Stream(device)


def capture(fn: Callable, device: torch.device):
    """torch.cuda.graph's recipe: run ``fn`` once on the warm-up stream (cuDNN autotuning,
    compilation, lazy initialization), then capture it. Returns (the warm-up's result, the graph,
    the captured run's outputs, which each replay overwrites)."""
    main, side = torch.cuda.current_stream(device), side_stream(device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        first = fn()
    main.wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return first, graph, out


class _CapturedPlan:
    """A plan captured as one CUDA graph for one state shape: network calls, updates (compiled,
    one kernel each) and counter-based noise replayed with no launch or Python overhead.

    The warm-up run before the capture (:func:`capture`) serves the first request. The state
    and the noise keys are static buffers refilled before each replay."""

    def __init__(self, plan: Plan, eps_model: Callable, z: Tensor, noise: CounterNoise | None):
        self.plan, self.eps_model = plan, eps_model
        self.z = z.clone()
        self.keys = None if noise is None else noise.keys.clone()
        static_noise = None if noise is None else CounterNoise(self.keys, fused=True)
        first, self.graph, (self.out, self.finite) = capture(
            lambda: _loop(plan, eps_model, self.z, static_noise, fused=True), z.device)
        self.first = tuple(t.clone() for t in first)

    def matches(self, plan: Plan, eps_model: Callable) -> bool:
        return self.plan is plan and self.eps_model == eps_model

    def __call__(self, z: Tensor, noise: CounterNoise | None) -> tuple[Tensor, Tensor]:
        if self.first is not None:  # the warm-up ran on these very inputs
            first, self.first = self.first, None
            return first
        self.z.copy_(z)
        if self.keys is not None:
            self.keys.copy_(noise.keys)
        self.graph.replay()
        return self.out.clone(), self.finite.clone()


# Hand-written rather than functools.lru_cache: the key holds ids (of the plan and the model's
# owner), which Python reuses once an object dies, so a hit must also check identity
# (``matches``) and a stale entry be replaced; and the call's tensors (z, noise) are inputs
# of the first capture, not part of the key.
_GRAPHS: "OrderedDict[tuple, _CapturedPlan]" = OrderedDict()
_GRAPHS_KEPT = 4  # each holds its own memory pool


def release_graphs() -> None:
    """Drop every captured sampler graph (and its memory pool)."""
    _GRAPHS.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _run_graphed(plan: Plan, eps_model: Callable, z: Tensor, noise) -> tuple[Tensor, Tensor]:
    if z.device.type != "cuda":
        raise ValueError(f"graph=True captures the sampler as a CUDA graph; the state is on {z.device}. "
                         "Use a CUDA device or graph=False")
    if plan.stochastic and not isinstance(noise, CounterNoise):
        raise ValueError("graph=True replays the sampler's noise from counter-based keys: pass "
                         "noise=cosi.core.noise.CounterNoise(keys) (cosi.sample does when given a generator)")
    owner = getattr(eps_model, "__self__", eps_model)
    if getattr(owner, "captures_itself", False):  # the capability cosi.core.sampling.sample documents
        raise ValueError("the network replays its own CUDA graphs (e.g. compiled with mode 'reduce-overhead'), "
                         "which graph=True cannot capture again: compile it with model.compile('default')")
    key = (id(plan), id(owner), tuple(z.shape), z.dtype, str(z.device))
    entry = _GRAPHS.get(key)
    if entry is not None and entry.matches(plan, eps_model):
        _GRAPHS.move_to_end(key)
        return entry(z, noise)
    # a first call here: the warm-up inside the capture computes this batch
    entry = _CapturedPlan(plan, eps_model, z, noise if plan.stochastic else None)
    _GRAPHS[key] = entry
    while len(_GRAPHS) > _GRAPHS_KEPT:
        _GRAPHS.popitem(last=False)
    return entry(z, noise)


def run_plan(plan: Plan, eps_model: Callable, z: Tensor, *, generator=None, noise=None,
             progress: bool = False, callback: Callable | None = None, graph: bool = False) -> tuple[Tensor, int]:
    """Run ``plan`` from state ``z``; returns (final state, network calls made).

    ``noise(i, z)`` (optional) returns the standard normal draw for the i-th noisy update;
    by default it is drawn from ``generator``. ``callback`` (k-diffusion's convention) is called once per
    grid step, after the step's last update, with ``{"i": step index 0 … steps − 1, "t": the time
    reached, "z": the state, "x0_hat": w_t (z_call − L_t ε) from the latest network call (the data block's
    shape), "calls": network calls made so far}``; a final denoising update is one more step
    (i = steps). The plan needs its process (:func:`cosi.core.integrators.build_plan` sets it). ``graph=True`` (CUDA only)
    captures the whole plan as one CUDA graph for this state's shape on first use and replays it
    afterwards; its noise must be a :class:`cosi.core.noise.CounterNoise`.
    """
    if graph:
        if progress or callback is not None:
            raise ValueError("graph=True replays the whole sampler at once: no progress bar or callback")
        z, finite = _run_graphed(plan, eps_model, z, noise)
    else:
        draw = noise if noise is not None else (lambda i, x: _randn(x, generator))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=plan.nfe, desc="sampling", unit="nfe", leave=False)
        z, finite = _loop(plan, eps_model, z, draw, bar=bar, callback=callback)
        if bar is not None:
            bar.close()
    if plan.nfe and not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        t = [op.t for op in plan.ops if isinstance(op, Eval)][i]
        raise ModelError(
            f"eps_model returned non-finite values at network call {i + 1} of {plan.nfe} "
            f"(t={t:.6g}); check the model's inputs (dtype, scaling) and weights"
        )
    return z, plan.nfe

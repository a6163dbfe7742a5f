"""Samplers as data: a plan of network calls and linear block updates, and one runner.

Every sampler in cosi — Euler, Euler–Maruyama, DDIM, conjugate integrators, splitting
integrators and their hybrids — advances the state by maps that are linear in the state
z, the latest network output ε and fresh Gaussian noise ξ:

    z ← C_z z + C_ε ε + C_ξ ξ        (C_* are k×k matrices acting on every data coordinate)

interleaved with network calls ε ← ε_θ(z, t). A sampler is therefore a list of such
operations whose float64 coefficients are computed once per (process, sampler options,
grid) and cached; the loop in :func:`run_plan` only applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..processes import apply_blocks, f64


@dataclass(frozen=True)
class Eval:
    """ε ← ε_θ(z, t)."""

    t: float


@dataclass(frozen=True)
class Lin:
    """z ← C_z z + C_ε ε + C_ξ ξ with the matrices of row ``row`` of coefficient chunk
    ``chunk``; ``t`` is the time the state reaches (for callbacks)."""

    chunk: int
    row: int
    uses_eps: bool
    noisy: bool
    t: float


@dataclass
class Plan:
    """The whole sampler: a list of operations and float64 coefficient chunks.

    A chunk is a triple (C_z, C_ε, C_ξ) of (n, k, k) stacks, typically one row per step of
    one kind of sub-update, computed vectorized over the grid; C_ε or C_ξ is None when the
    update does not use ε or noise.
    """

    k: int
    ops: list = field(default_factory=list)
    chunks: list = field(default_factory=list)

    @property
    def nfe(self) -> int:
        return sum(isinstance(op, Eval) for op in self.ops)

    @property
    def stochastic(self) -> bool:
        return any(isinstance(op, Lin) and op.noisy for op in self.ops)

    def coeffs(self, Cz: Tensor, Ce: Tensor | None = None, Cn: Tensor | None = None) -> int:
        """Register a chunk of (n, k, k) coefficient stacks; returns its id."""
        as64 = lambda c: None if c is None else c.to(f64).reshape(-1, self.k, self.k)  # noqa: E731
        self.chunks.append((as64(Cz), as64(Ce), as64(Cn)))
        return len(self.chunks) - 1

    def eval(self, t) -> None:
        self.ops.append(Eval(float(t)))

    def lin(self, t, chunk: int, row: int = 0) -> None:
        """Append the update of row ``row`` of ``chunk``, reaching time t."""
        _, Ce, Cn = self.chunks[chunk]
        self.ops.append(Lin(chunk, row, Ce is not None, Cn is not None, float(t)))


class ModelError(RuntimeError):
    """The eps-model returned something the sampler cannot use."""


def _randn(z: Tensor, generator) -> Tensor:
    if generator is None or generator.device == z.device:
        return torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return torch.randn(z.shape, generator=generator, device=generator.device, dtype=z.dtype).to(z.device)


def run_plan(plan: Plan, eps_model: Callable, z: Tensor, *, generator=None, noise=None,
             progress: bool = False, callback: Callable | None = None) -> tuple[Tensor, int]:
    """Run ``plan`` from state ``z``; returns (final state, network calls made).

    ``noise(i, z)`` (optional) returns the standard normal draw for the i-th noisy update;
    by default it is drawn from ``generator``. ``callback`` receives a dict with the step
    index, the time and the current state after every linear update.
    """
    dev, dt = z.device, z.dtype
    chunks = [tuple(None if c is None else c.to(device=dev, dtype=dt) for c in ch) for ch in plan.chunks]
    n_calls = plan.nfe
    finite = torch.ones(max(n_calls, 1), dtype=torch.bool, device=dev)
    eps, calls, n_noise = None, 0, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_calls, desc="sampling", unit="nfe", leave=False)
    B = z.shape[0]
    call_times = []
    for op in plan.ops:
        if isinstance(op, Eval):
            t = torch.full((B,), op.t, device=dev, dtype=dt)
            out = eps_model(z, t)
            if not isinstance(out, Tensor) or out.shape != z.shape:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ModelError(
                    f"eps_model returned {got} at network call {calls + 1} (t={op.t:.6g}); "
                    f"it must return a tensor of the state's shape {tuple(z.shape)}"
                )
            eps = out.to(dt)
            finite[calls] = torch.isfinite(eps).all()
            call_times.append(op.t)
            calls += 1
            if bar is not None:
                bar.update(1)
            continue
        Cz, Ce, Cn = chunks[op.chunk]
        j = op.row
        z_new = apply_blocks(Cz[j], z)
        if op.uses_eps:
            z_new = z_new + apply_blocks(Ce[j], eps)
        if op.noisy:
            xi = noise(n_noise, z) if noise is not None else _randn(z, generator)
            z_new = z_new + apply_blocks(Cn[j], xi)
            n_noise += 1
        z = z_new
        if callback is not None:
            callback({"t": op.t, "z": z, "eps": eps, "calls": calls})
    if bar is not None:
        bar.close()
    if n_calls and not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise ModelError(
            f"eps_model returned non-finite values at network call {i + 1} of {n_calls} "
            f"(t={call_times[i]:.6g}); check the model's inputs (dtype, scaling) and weights"
        )
    return z, calls

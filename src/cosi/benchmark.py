"""Sampler overhead: a full sampler against the same number of bare network calls, in one run.

For a model, sampler, NFE and batch size, :func:`speed` times

* **bare** — the network alone: ``nfe`` calls of ``eps_model(z, t)`` on one prior batch at the
  sampler's call times, nothing else;
* **sampler** — ``cosi.sample`` from the same prior batch (plan from the cache, every linear
  update, noise, checks);

each after warm-up, as the median of ``repeats`` runs, with CUDA events on a GPU (wall clock on
a CPU). It reports the ratio sampler / bare, images per second, and the peak device memory of
a sampler run (CUDA only), once at ``nfe`` and once at ``2·nfe`` so that memory growing with NFE
shows.
"""

from __future__ import annotations

import statistics
import time

import torch

from .api import sample
from .generate import prior, sample_keys
from .integrators import build_plan, get_sampler
from .integrators.plan import Eval


def _timer(device: torch.device):
    """fn -> seconds of one call of fn, measured on the device's clock."""
    if device.type == "cuda":
        def run(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000
    else:
        def run(fn):
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
    return run


def _peak_memory(device: torch.device, fn) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


@torch.no_grad()
def speed(model, sampler: str, nfe: int, batch_size: int, *, repeats: int = 5, warmup: int = 1,
          seed: int = 0, **options) -> dict:
    """Time ``sampler`` against ``nfe`` bare network calls on ``model`` (a DiffusionModel)."""
    dev = model.device
    keys = sample_keys(seed, torch.arange(batch_size, device=dev))
    z_T = prior(model.process, model.data_shape, keys).to(dev)
    plan = build_plan(sampler, model.process, nfe, **options)
    times = [op.t for op in plan.ops if isinstance(op, Eval)]
    ts = [torch.full((batch_size,), t, device=dev) for t in times]
    g = torch.Generator(dev)

    def bare():
        for t in ts:
            model.eps_model(z_T, t)

    def full(k=nfe):
        g.manual_seed(seed)
        sample(model.eps_model, model.process, sampler, k, z_T=z_T, generator=g, **options)

    clock = _timer(dev)
    for _ in range(warmup):
        bare(), full()
    t_bare, t_full = [], []
    for _ in range(repeats):  # interleaved, so drifts of the clock or the load hit both alike
        t_bare.append(clock(bare))
        t_full.append(clock(full))
    tb, tf = statistics.median(t_bare), statistics.median(t_full)
    out = {"sampler": sampler, "nfe": nfe, "batch_size": batch_size, "device": str(dev),
           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "dtype": str(model.dtype).removeprefix("torch."), "compiled": getattr(model, "_compiled", None) is not None,
           "bare_s": tb, "sampler_s": tf, "ratio": tf / tb,
           "images_per_s": batch_size / tf, "repeats": repeats, "stochastic": get_sampler(sampler).stochastic}
    if dev.type == "cuda":
        double = 2 * nfe
        try:
            build_plan(sampler, model.process, double, **options)
        except ValueError:
            double += 1
        out["peak_memory_bytes"] = _peak_memory(dev, full)
        out["peak_memory_bytes_2nfe"] = _peak_memory(dev, lambda: full(double))
    return out

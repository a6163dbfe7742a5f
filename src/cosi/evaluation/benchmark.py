"""Sampler overhead: a full sampler against the same number of bare network calls, in one run.

For a model, sampler, NFE and batch size, :func:`speed` times

* **bare** — the network alone: ``nfe`` calls of ``eps_model(z, t)`` on one prior batch at the
  sampler's call times, nothing else;
* **sampler** — ``cosi.sample`` from the same prior batch (plan from the cache, every linear
  update, noise, checks);

each after warm-up, as the median of ``repeats`` runs, with CUDA events on a GPU (wall clock on
a CPU). With ``graph=True`` both run as captured CUDA graphs: the sampler as `cosi sample
--graph` runs it (one graph for the whole sampler), the bare calls as one graph of ``nfe``
calls. It reports the ratio sampler / bare, images per second, and the peak device memory of
a first sampler run (CUDA only), once at ``nfe`` and once at ``2·nfe`` so that memory growing
with NFE shows.
"""

from __future__ import annotations

import statistics
import time

import torch

from ..core.sampling import sample
from ..core.noise import CounterNoise, sample_keys
from ..core.integrators import build_plan, get_sampler
from ..core.integrators.plan import Eval, capture, release_graphs


def timer(device: torch.device):
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


def bare_calls(eps_model, z: torch.Tensor, ts: list, graph: bool):
    """The sampler's network calls alone, as a function; with ``graph`` captured as one CUDA graph."""
    def calls():
        for t in ts:
            eps_model(z, t)

    if not graph:
        return calls
    _, g, _ = capture(calls, z.device)
    return g.replay


@torch.no_grad()
def speed(model, sampler: str, nfe: int, batch_size: int, *, repeats: int = 5, warmup: int = 1,
          seed: int = 0, graph: bool = False, **options) -> dict:
    """Time ``sampler`` against ``nfe`` bare network calls on ``model`` (a DiffusionModel).

    The sampler runs as `cosi sample` runs it (counter-based noise keyed by sample); with
    ``graph`` (CUDA) the whole sampler is one captured CUDA graph and so are the bare calls."""
    dev = model.device
    keys = sample_keys(seed, torch.arange(batch_size, device=dev))
    z_T = model.process.prior_sample(model.process.state_shape((batch_size, *model.data_shape)), keys=keys).to(dev)
    plan = build_plan(sampler, model.process, nfe, **options)
    ts = [torch.full((batch_size,), op.t, device=dev) for op in plan.ops if isinstance(op, Eval)]
    bare = bare_calls(model.eps_model, z_T, ts, graph)

    def full(k=nfe):
        noise = CounterNoise(keys, fused=graph)
        sample(model.eps_model, model.process, sampler, k, z_T=z_T, noise=noise, graph=graph, **options)

    clock = timer(dev)
    for _ in range(warmup):
        bare(), full()
    t_bare, t_full = [], []
    for _ in range(repeats):  # interleaved, so drifts of the clock or the load hit both alike
        t_bare.append(clock(bare))
        t_full.append(clock(full))
    tb, tf = statistics.median(t_bare), statistics.median(t_full)
    compiled = getattr(model, "compiled_mode", None)
    out = {"sampler": sampler, "nfe": nfe, "batch_size": batch_size, "device": str(dev),
           "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
           "dtype": str(model.dtype).removeprefix("torch."), "compiled": compiled, "graph": graph,
           "bare_s": tb, "sampler_s": tf, "ratio": tf / tb,
           "images_per_s": batch_size / tf, "repeats": repeats, "stochastic": get_sampler(sampler).stochastic}
    if dev.type == "cuda":  # first use (a graph's capture included) from a clean slate, at NFE and 2·NFE
        del bare
        double = 2 * nfe
        try:
            build_plan(sampler, model.process, double, **options)
        except ValueError:
            double += 1
        for key, k in (("peak_memory_bytes", nfe), ("peak_memory_bytes_2nfe", double)):
            release_graphs()
            out[key] = _peak_memory(dev, lambda: full(k))
        release_graphs()
    return out

"""Per-step overhead of CosiMultistepScheduler.step beside diffusers' DPMSolverMultistepScheduler.step.

Both schedulers step through the same number of timesteps on latents of the same shape, with a fixed
random model output (no network): the time measured is the scheduler's own work per step. Median over
repeats of whole runs divided by the steps; CUDA events on a GPU, perf_counter on the CPU.

    python benchmarks/diffusers_scheduler_overhead.py                          # (16, 4, 64, 64) on CUDA
    python benchmarks/diffusers_scheduler_overhead.py --device cpu --shape 2 4 16 16 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from diffusers import DPMSolverMultistepScheduler

from cosi.models.diffusers_scheduler import CosiMultistepScheduler


def per_step_ms(scheduler, steps: int, x: torch.Tensor, out: torch.Tensor, repeats: int) -> list[float]:
    cuda = x.device.type == "cuda"
    times = []
    for r in range(repeats + 2):  # two warm-ups
        scheduler.set_timesteps(steps, device=x.device)
        z = x
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
        else:
            t0 = time.perf_counter()
        for t in scheduler.timesteps:
            z = scheduler.step(out, t, z).prev_sample
        if cuda:
            end.record()
            torch.cuda.synchronize()
            ms = start.elapsed_time(end)
        else:
            ms = 1e3 * (time.perf_counter() - t0)
        if r >= 2:
            times.append(ms / steps)
    return times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", type=int, nargs="+", default=[16, 4, 64, 64])
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=50)
    a = ap.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    g = torch.Generator(a.device).manual_seed(0)
    x = torch.randn(a.shape, generator=g, device=a.device, dtype=dtype)
    out = 0.1 * torch.randn(a.shape, generator=g, device=a.device, dtype=dtype)
    config = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    schedulers = {
        "CosiMultistepScheduler (gddim-2m)": CosiMultistepScheduler(**config),
        "DPMSolverMultistepScheduler (dpmsolver++ 2M)": DPMSolverMultistepScheduler(**config),
    }
    rows = []
    for name, s in schedulers.items():
        ts = per_step_ms(s, a.steps, x, out, a.repeats)
        rows.append({"scheduler": name, "median_ms_per_step": statistics.median(ts), "min_ms_per_step": min(ts),
                     "device": str(x.device), "gpu": torch.cuda.get_device_name() if x.is_cuda else None,
                     "shape": a.shape, "dtype": a.dtype, "steps": a.steps, "repeats": a.repeats,
                     "torch": torch.__version__})
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

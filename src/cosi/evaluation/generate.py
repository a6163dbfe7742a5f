"""Many samples from a model: seeded per sample, in batches, on any number of processes, to a
resumable folder of PNGs.

Every random number a sample uses — its prior draw z_T and the noise of each stochastic
update — is a function of (seed, sample index, draw index, element index) alone, computed by a
counter-based hash on the device (:mod:`cosi.core.noise`). So sample i starts from the same prior
draw and sees the same noise, bitwise, whatever the batch size, the order in which batches run, or
the number of processes that share the work, for deterministic and stochastic samplers alike. Its
values are equal only up to float rounding: the network's kernels depend on the batch size, so
after 8-bit quantization a pixel can move by one grey level between batch sizes
(docs/performance.md).

:func:`generate_folder` writes ``<index:06d>.png`` (8-bit, as FID tools read them) and a
``manifest.json`` naming the model, sampler, options and seed. Images are written atomically
and checked on resume: a rerun with the same settings redoes only batches with a missing or
unreadable image, so a killed run loses at most the batches in flight; a rerun with other
settings is refused. ``graph=True`` (CUDA) runs each batch as one captured CUDA graph
(:func:`cosi.core.integrators.plan.run_plan`). Under ``torchrun`` (torch.distributed initialized, any backend) rank r
takes batches r, r + W, r + 2W, …; the result is the folder one process would write.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from ..core.sampling import check, sample
from ..core.noise import CounterNoise, sample_keys


def sample_range(model, sampler: str, nfe: int, start: int, count: int, *, seed: int = 0, device=None,
                 graph: bool = False, first_state=None, **options) -> Tensor:
    """The data blocks of samples start .. start+count−1 of ``model`` (a DiffusionModel). ``first_state``: a map
    of the prior draws z_T to the sampler's first state (a warm start's exact Gaussian flow to t_skip,
    :func:`cosi.evaluation.warmstart.gaussian_flow`, with ``options["grid"]`` starting at t_skip)."""
    device = torch.device(device or model.device)
    keys = sample_keys(seed, torch.arange(start, start + count, device=device))
    z_T = model.process.prior_sample(model.process.state_shape((count, *model.data_shape)), keys=keys)
    if first_state is not None:
        z_T = first_state(z_T)
    noise = CounterNoise(keys, fused=graph)
    return sample(model.eps_model, model.process, sampler, nfe, z_T=z_T, noise=noise, graph=graph, **options).x


def batches(model, sampler: str, nfe: int, n: int, batch_size: int, *, seed: int = 0, graph: bool = False,
            **options) -> Iterator[Tensor]:
    """Yield samples 0 .. n−1 in batches of ``batch_size``."""
    for start in range(0, n, batch_size):
        yield sample_range(model, sampler, nfe, start, min(batch_size, n - start), seed=seed, graph=graph,
                           **options)


# ---- a folder of PNGs ------------------------------------------------------------------------------


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [−1, 1] -> (B, H, W, C) uint8."""
    from ..data import from_unit_range

    return from_unit_range(x).permute(0, 2, 3, 1).cpu().numpy()


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp, format="PNG")
    tmp.replace(path)


def _readable(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def generate_folder(model, out, sampler: str, nfe: int, n: int, *, batch_size: int = 256, seed: int = 0,
                    describe: dict | None = None, progress: bool = True, graph: bool = False, warm_start=None,
                    **options) -> dict:
    """Write samples 0 .. n−1 as ``out/<index:06d>.png``; returns the manifest.

    ``describe``: what the model is (written to the manifest and checked on resume). Under
    torch.distributed each rank writes its share of the batches. Everything is checked (counts, the
    sampler, its options and NFE) before the first file is written, so a refused run leaves ``out`` as
    it found it; stale ``*.png.tmp`` files of a killed run are removed. ``warm_start``: (the map of z_T to the
    state at t_skip, what names it for the manifest), with ``options["grid"]`` the times from t_skip
    (:func:`cosi.evaluation.warmstart.skip_grid`)."""
    out = Path(out)
    rank, world = _rank_world()
    for value, what in ((n, "n"), (batch_size, "batch_size")):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{what}={value} is not a positive integer — give 1 or more")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a folder — choose another output folder")
    check(model.process, sampler, nfe, **options)
    if warm_start is not None and not isinstance(options.get("grid"), (list, tuple)):
        raise ValueError("a warm start needs the grid's times from t_skip (cosi.evaluation.warmstart.skip_grid)")
    manifest = {"format": "cosi-samples", "model": describe or {}, "sampler": sampler, "nfe": nfe,
                "options": options, "seed": seed, "data_shape": list(model.data_shape)}
    if warm_start is not None:
        manifest["warm_start"] = warm_start[1]
    path = out / "manifest.json"
    old = json.loads(path.read_text()) if path.is_file() else None
    if old is not None:
        diff = sorted(k for k in manifest if old.get(k) != manifest[k])
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} there vs {manifest[k]!r} now" for k in diff)
            raise ValueError(f"{out} holds samples made with other settings ({shown}); use another --out "
                             "or the same settings to continue")
    manifest["n"] = max(n, old.get("n", 0) if old else 0)
    if rank == 0 and out.is_dir():
        for tmp in out.glob("*.png.tmp"):  # a killed run's half-written image
            tmp.unlink(missing_ok=True)
    _barrier()  # every rank has read the old manifest (and rank 0 cleaned) before rank 0 rewrites it
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest, indent=1))
    from tqdm.auto import tqdm

    starts = list(range(0, n, batch_size))[rank::world]
    shown = progress and rank == 0
    # in samples, moved on at each network call (not with graph=True, which runs a batch at once)
    bar = tqdm(total=sum(min(batch_size, n - s) for s in starts), desc=f"{sampler} nfe={nfe}", unit="sample",
               disable=not shown, bar_format="{l_bar}{bar}| {n:.0f}/{total} [{elapsed}<{remaining}]")
    out.mkdir(parents=True, exist_ok=True)
    for start in starts:
        count = min(batch_size, n - start)
        names = [out / f"{i:06d}.png" for i in range(start, start + count)]
        done = bar.n
        if not all(p.is_file() and _readable(p) for p in names):
            hook = {}
            if shown and not graph:
                hook["callback"] = lambda info, c=count, d=done: bar.update(d + c * info["calls"] / max(nfe, 1)
                                                                            - bar.n)
            x = sample_range(model, sampler, nfe, start, count, seed=seed, graph=graph,
                             first_state=None if warm_start is None else warm_start[0], **options, **hook)
            for p, img in zip(names, to_uint8(x)):
                _write_png(p, img)
        bar.update(done + count - bar.n)
    bar.close()
    _barrier()
    return manifest

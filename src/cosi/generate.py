"""Many samples from a model: seeded per sample, in batches, and to a resumable folder of PNGs.

Sample i's prior draw z_T comes from its own generator, seeded with (seed, i): with a
deterministic sampler every sample is the same whatever the batch size or the order in which
batches run. A stochastic sampler draws its step noise from one generator per batch, seeded
with (seed, index of the batch's first sample), so its samples are reproducible for a given
batch size.

:func:`generate_folder` writes ``<index>.png`` files (8-bit, as FID tools read them) and a
``manifest.json`` naming the model, sampler, options and seed. Each image is written
atomically; a rerun with the same settings skips the batches already complete, so a killed
run loses at most the batch in flight, and a rerun with other settings is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from .api import sample

_SEED_STRIDE = 1_000_003


def sample_seed(seed: int, index: int) -> int:
    return _SEED_STRIDE * seed + index + 1


def prior(process, data_shape, start: int, count: int, seed: int, device=None,
          dtype=torch.float32) -> Tensor:
    """z_T for samples start .. start+count−1, each from its own (seed, index) generator."""
    state = process.state_shape((1, *data_shape))
    z = [process.prior_sample(state, generator=torch.Generator().manual_seed(sample_seed(seed, i)))
         for i in range(start, start + count)]
    return torch.cat(z).to(device=device, dtype=dtype)


def sample_range(model, sampler: str, nfe: int, start: int, count: int, *, seed: int = 0, device=None,
                 **options) -> Tensor:
    """The data blocks of samples start .. start+count−1 of ``model`` (a DiffusionModel)."""
    device = torch.device(device or model.device)
    z_T = prior(model.process, model.data_shape, start, count, seed, device)
    g = torch.Generator(device).manual_seed(sample_seed(seed, start) + 7)
    return sample(model.eps_model, model.process, sampler, nfe, z_T=z_T, generator=g, **options).x


def batches(model, sampler: str, nfe: int, n: int, batch_size: int, *, seed: int = 0,
            **options) -> Iterator[Tensor]:
    """Yield samples 0 .. n−1 in batches of ``batch_size``."""
    for start in range(0, n, batch_size):
        yield sample_range(model, sampler, nfe, start, min(batch_size, n - start), seed=seed, **options)


# ---- a folder of PNGs ------------------------------------------------------------------------------


def to_uint8(x: Tensor) -> np.ndarray:
    """(B, C, H, W) in [−1, 1] -> (B, H, W, C) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(tmp, format="PNG")
    tmp.replace(path)


def generate_folder(model, out, sampler: str, nfe: int, n: int, *, batch_size: int = 256, seed: int = 0,
                    describe: dict | None = None, progress: bool = True, **options) -> dict:
    """Write samples 0 .. n−1 as ``out/<index:06d>.png``; returns the manifest.

    ``describe``: what the model is (written to the manifest and checked on resume)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "cosi-samples", "model": describe or {}, "sampler": sampler, "nfe": nfe,
                "options": options, "seed": seed, "batch_size": batch_size,
                "data_shape": list(model.data_shape)}
    path = out / "manifest.json"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in manifest if k != "n" and old.get(k) != manifest[k])
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} there vs {manifest[k]!r} now" for k in diff)
            raise ValueError(f"{out} holds samples made with other settings ({shown}); use another --out "
                             "or the same settings to continue")
    manifest["n"] = max(n, json.loads(path.read_text()).get("n", 0) if path.is_file() else 0)
    path.write_text(json.dumps(manifest, indent=1))
    from tqdm.auto import tqdm

    bar = tqdm(total=n, desc=f"{sampler} nfe={nfe}", unit="img", disable=not progress)
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        names = [out / f"{i:06d}.png" for i in range(start, start + count)]
        if not all(p.is_file() for p in names):
            x = sample_range(model, sampler, nfe, start, count, seed=seed, **options)
            for p, img in zip(names, to_uint8(x)):
                _write_png(p, img)
        bar.update(count)
    bar.close()
    return manifest

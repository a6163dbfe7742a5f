"""Counter-based standard normals: entry e of row b of draw d is a function of (key_b, d, e) alone.

Every random number a sample uses — its prior draw z_T and the noise ξ of each stochastic
update — comes from here, keyed by the sample (:func:`sample_keys` of a seed and the sample's
global index). Sample i is therefore the same whatever the batch size, the order in which
batches run, or the number of processes sharing the work.

The arithmetic is a bijective 32-bit hash on int64 tensors, two 24-bit uniforms per normal and
Box–Muller. Nothing here copies from the host once a draw index has been used on a device (the
hashed draw index is cached there), so a whole sampler, noise included, can be captured as one
CUDA graph; with ``fused=True`` each draw is one compiled kernel instead of a few dozen.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF
PRIOR_DRAW = 0x7FFFFFFF  # the draw index of z_T; stochastic updates use 0, 1, 2, ...


def _mul32(x, c: int):
    """(x · c) mod 2³² for x in [0, 2³²) (int64 tensor or int), without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def mix32(x):
    """A bijective 32-bit integer hash (the 'lowbias32' constants) on int64 tensors or ints."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sample_keys(seed: int, indices: Tensor) -> Tensor:
    """One 32-bit key per sample index (int64 tensor on the indices' device)."""
    s = mix32((seed & _M32) ^ 0x5BD1E995)
    return mix32(mix32(indices.to(torch.int64) & _M32) ^ s)


@lru_cache(maxsize=8)
def _element_hashes(n: int, device: torch.device) -> Tensor:
    return mix32(torch.arange(n, dtype=torch.int64, device=device))


@lru_cache(maxsize=4096)
def _draw_key(draw: int, device: torch.device) -> Tensor:
    return torch.tensor(mix32((draw & _M32) ^ 0x27D4EB2F), dtype=torch.int64, device=device)


def _normals(keys: Tensor, draw_key: Tensor, elements: Tensor) -> Tensor:
    """(B, n) float32 normals from keys (B,), a hashed draw index () and element hashes (2n,)."""
    k = mix32(keys ^ draw_key)
    h = mix32(k[:, None] ^ elements[None])
    u = ((h >> 8).to(torch.float32) + 0.5) * 2.0**-24  # exact in float32: 24-bit uniforms in (0, 1)
    n = elements.shape[0] // 2
    return torch.sqrt(-2 * torch.log(u[:, :n])) * torch.cos(2 * math.pi * u[:, n:])


@lru_cache(maxsize=1)
def _compiled_normals():
    return torch.compile(_normals, dynamic=True)


def counter_normal(keys: Tensor, draw: int, shape, dtype=torch.float32, *, fused: bool = False) -> Tensor:
    """Standard normals of shape (len(keys), *shape): entry e of row b is a function of
    (keys[b], draw, e) only. ``fused``: one compiled kernel (torch.compile) per draw."""
    n = math.prod(shape)
    fn = _compiled_normals() if fused else _normals
    z = fn(keys, _draw_key(draw, keys.device), _element_hashes(2 * n, keys.device))
    return z.to(dtype).reshape(len(keys), *shape)


class CounterNoise:
    """``noise(i, z)``: the ξ of the i-th noisy update of the samples with these keys.

    The sampler runner recognizes it: a CUDA-graph capture reads ``keys`` from a static buffer
    that each replay refills (:func:`cosi.core.integrators.plan.run_plan`)."""

    def __init__(self, keys: Tensor, fused: bool = False):
        self.keys, self.fused = keys, fused

    def __call__(self, i: int, z: Tensor) -> Tensor:
        return counter_normal(self.keys, i, z.shape[1:], z.dtype, fused=self.fused)

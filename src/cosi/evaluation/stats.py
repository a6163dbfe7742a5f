"""Streaming Gaussian statistics of features (for Fréchet distances over many batches or ranks).

Sums are kept in float64 so that the order of batches (or of ranks) changes the result only
in the last bits; ``all_reduce`` merges the sums of every rank of a torch.distributed group.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor


class FeatureStats:
    """Running n, Σf and Σffᵀ of feature vectors; ``mean`` and ``cov`` (unbiased) on demand."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, feats: Tensor) -> "FeatureStats":
        f = feats.detach().reshape(len(feats), -1).to("cpu", torch.float64)
        if f.shape[1] != self.dim:
            raise ValueError(f"features have dimension {f.shape[1]}, these statistics hold {self.dim}")
        if not bool(torch.isfinite(f).all()):
            raise ValueError(f"{int((~torch.isfinite(f)).any(1).sum())} of {len(f)} feature vectors hold NaN or inf "
                             "— check the images (a diverged sampler?) and the feature network")
        self.n += len(f)
        self.sum += f.sum(0)
        self.outer += f.T @ f
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.n += other.n
        self.sum += other.sum
        self.outer += other.outer
        return self

    def all_reduce(self, device=None) -> "FeatureStats":
        """Sum n, Σf and Σffᵀ over the ranks of the default torch.distributed group (in place)."""
        import torch.distributed as dist

        packed = torch.cat([torch.tensor([float(self.n)], dtype=torch.float64), self.sum, self.outer.flatten()])
        packed = packed.to(device or "cpu")
        dist.all_reduce(packed)
        packed = packed.cpu()
        self.n = int(round(packed[0].item()))
        self.sum = packed[1:1 + self.dim].clone()
        self.outer = packed[1 + self.dim:].reshape(self.dim, self.dim).clone()
        return self

    @property
    def mean(self) -> np.ndarray:
        self._need(1)
        return (self.sum / self.n).numpy()

    @property
    def cov(self) -> np.ndarray:
        self._need(2)
        mu = self.sum / self.n
        return ((self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)).numpy()

    def _need(self, k: int) -> None:
        if self.n < k:
            raise ValueError(f"these statistics hold {self.n} feature vectors; at least {k} are needed")

    def save(self, path) -> None:
        np.savez(Path(path), n=self.n, sum=self.sum.numpy(), outer=self.outer.numpy())

    @classmethod
    def load(cls, path) -> "FeatureStats":
        try:
            with np.load(Path(path)) as f:
                s = cls(int(f["sum"].shape[0]))
                s.n, s.sum, s.outer = int(f["n"]), torch.from_numpy(f["sum"].copy()), torch.from_numpy(f["outer"].copy())
        except FileNotFoundError:
            raise
        except Exception as e:  # another .npz (KeyError), not an .npz at all (ValueError, BadZipFile), ...
            raise ValueError(f"{path} is not a cosi feature-statistics .npz (arrays n, sum, outer; "
                             f"{type(e).__name__}: {e}) — pass a reference name (fmnist, cifar10), a folder of "
                             "images, or a .npz that cosi wrote to its --cache") from None
        if s.outer.shape != (s.dim, s.dim) or s.n < 0:
            raise ValueError(f"{path}: sum has {s.dim} entries but outer has shape {tuple(s.outer.shape)} — not a "
                             "cosi feature-statistics .npz")
        return s

"""Sample quality in a feature space: Fréchet distance (FD) from streamed feature statistics.

    FD(a, b) = ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})

computed in float64 with symmetric eigendecompositions (exact for the PSD covariances of
real features; no complex parts to discard as with a general matrix square root).
Images are quantized to 8 bits before their features are taken, generated and real alike,
as they would be when written to PNG.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from ..core.processes import sqrtm_psd
from .stats import FeatureStats


def frechet_distance(mu_a, cov_a, mu_b, cov_b) -> float:
    """FD between N(mu_a, cov_a) and N(mu_b, cov_b), in float64."""
    as64 = lambda v: torch.as_tensor(np.asarray(v), dtype=torch.float64)  # noqa: E731
    mu_a, cov_a, mu_b, cov_b = map(as64, (mu_a, cov_a, mu_b, cov_b))
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape[-1]} vs {mu_b.shape[-1]} — the reference "
                         "statistics come from another feature space")
    for name, v in (("samples' mean", mu_a), ("samples' covariance", cov_a), ("reference mean", mu_b),
                    ("reference covariance", cov_b)):
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"the {name} holds non-finite values (NaN or inf), so no FD can be computed — "
                             "check the samples (a diverged sampler?) or the reference statistics")
    r = sqrtm_psd(cov_a)
    cross = sqrtm_psd(r @ cov_b @ r)
    out = float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a + cov_b - 2 * cross))
    if not np.isfinite(out):
        raise ValueError(f"the FD came out {out} — the feature statistics overflow; check the samples")
    return out


def fd(a: FeatureStats, b: FeatureStats) -> float:
    """FD between the Gaussians fitted to two sets of streamed features."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def quantize(x: Tensor) -> Tensor:
    """Images in [−1, 1] rounded to the 256 levels of an 8-bit image (still in [−1, 1])."""
    from ..data import from_unit_range, to_unit_range

    return to_unit_range(from_unit_range(x))


@torch.no_grad()
def feature_stats(features: Callable[[Tensor], Tensor], batches: Iterable[Tensor], dim: int,
                  stats: FeatureStats | None = None) -> FeatureStats:
    """Stream image batches in [−1, 1] (any device) through ``features`` into FeatureStats."""
    stats = stats or FeatureStats(dim)
    for x in batches:
        stats.update(features(quantize(x)))
    return stats


class ClassifierFeatures:
    """The penultimate features of the shipped Fashion-MNIST classifier, on a device."""

    def __init__(self, classifier: torch.nn.Module | str = "fmnist-classifier", device="cpu"):
        if isinstance(classifier, str):
            from ..models.checkpoint import load

            classifier = load(classifier, device=device)
        self.net = classifier.to(device).eval()
        self.device = torch.device(device)
        self.dim = self.net.config.feature_dim

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        return self.net.features(x.to(self.device, torch.float32))

    def stats(self, batches: Iterable[Tensor]) -> FeatureStats:
        return feature_stats(self, batches, self.dim)

    @torch.no_grad()
    def collect(self, batches: Iterable[Tensor]) -> Tensor:
        """The features themselves (N, dim), float32 on the CPU (for KID, which needs them all)."""
        return torch.cat([self(quantize(x)).float().cpu() for x in batches])

    def image_stats(self, images_u8: Tensor, batch_size: int = 2000) -> FeatureStats:
        """Statistics of a uint8 image set (N, C, H, W), e.g. the test split."""
        return self.stats(_unit_batches(images_u8, batch_size, self.device))

    def image_features(self, images_u8: Tensor, batch_size: int = 2000) -> Tensor:
        """The features (N, dim) of a uint8 image set, float32 on the CPU."""
        return self.collect(_unit_batches(images_u8, batch_size, self.device))


def _unit_batches(images_u8: Tensor, batch_size: int, device):
    from ..data import to_unit_range

    return (to_unit_range(images_u8[i:i + batch_size].to(device)) for i in range(0, len(images_u8), batch_size))


# ---- Inception features (standard FID), through torch-fidelity --------------------------------------

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_HOWTO = (
    f"FID needs the Inception-v3 weights that torch-fidelity uses, the file {INCEPTION_FILE} (from the "
    "releases of github.com/toshas/torch-fidelity); cosi never downloads it. Pass its path with "
    "--inception-weights (or inception_weights=...)."
)


class InceptionFeatures:
    """2048-d pool features of the TF-ported Inception-v3 of torch-fidelity (standard FID), from a
    local weights file. Inputs in [−1, 1] with 3 channels (1-channel images are repeated)."""

    dim = 2048

    def __init__(self, weights, device="cpu"):
        from pathlib import Path

        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise ImportError("Inception FID needs torch-fidelity: pip install 'cosi[fid]'") from None
        weights = Path(weights) if weights else None
        if weights is None or not weights.is_file():
            raise FileNotFoundError(f"no Inception weights at {weights}. {INCEPTION_HOWTO}")
        try:  # refuse a file that holds anything but tensors before torch-fidelity unpickles it
            torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{weights} is not a plain tensor state dict ({type(e).__name__}); "
                             f"{INCEPTION_HOWTO}") from None
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                               feature_extractor_weights_path=str(weights)).to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, x: Tensor) -> Tensor:
        from ..data import from_unit_range

        u8 = from_unit_range(x)
        if u8.shape[1] == 1:
            u8 = u8.repeat(1, 3, 1, 1)
        return self.net(u8.to(self.device))[0]

    stats = ClassifierFeatures.stats
    collect = ClassifierFeatures.collect
    image_stats = ClassifierFeatures.image_stats
    image_features = ClassifierFeatures.image_features


def kid(f_a: Tensor, f_b: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018) in any feature space: the unbiased MMD²
    with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³, averaged over ``subsets`` random
    subsets of ``subset_size`` features of each set (float64). Returns (mean, standard deviation
    over the subsets); unlike FD it is unbiased, so it can be slightly negative."""
    f_a, f_b = f_a.reshape(len(f_a), -1).double(), f_b.reshape(len(f_b), -1).double()
    if f_a.shape[1] != f_b.shape[1]:
        raise ValueError(f"feature dimensions differ: {f_a.shape[1]} vs {f_b.shape[1]}")
    if not (bool(torch.isfinite(f_a).all()) and bool(torch.isfinite(f_b).all())):
        raise ValueError("the features hold NaN or inf, so no KID can be computed — check the images")
    m = min(subset_size, len(f_a), len(f_b))
    if m < 2:
        raise ValueError("KID needs at least 2 features in each set")
    d = f_a.shape[1]
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        x = f_a[torch.randperm(len(f_a), generator=g)[:m]]
        y = f_b[torch.randperm(len(f_b), generator=g)[:m]]
        kxx, kyy, kxy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
        off = lambda k: (k.sum() - k.diagonal().sum()) / (m * (m - 1))  # noqa: E731
        vals.append(float(off(kxx) + off(kyy) - 2 * kxy.mean()))
    t = torch.tensor(vals, dtype=torch.float64)
    return float(t.mean()), float(t.std()) if len(vals) > 1 else 0.0

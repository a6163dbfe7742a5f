"""Write the Gaussian statistics shipped beside the Fashion-MNIST models (the warm start's, cosi.evaluation.warmstart):

    PYTHONPATH=src python benchmarks/gauss_stats.py --data-dir .data/fmnist

μ and the eigen-decomposition of the covariance of the 60k training images in the models' range [−1, 1] (float64
sums; eigenvectors stored in float32, orthogonal to ~1e-7) -> src/cosi/weights/fashion-mnist-train.gauss.safetensors.
"""

from __future__ import annotations

import argparse
import time

import torch

from cosi.data import load_fashion_mnist, to_unit_range
from cosi.evaluation.warmstart import GaussianStats
from cosi.models.checkpoint import WEIGHTS_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    x = to_unit_range(load_fashion_mnist(args.data_dir, "train").images)
    stats = GaussianStats.from_data(x)
    path = WEIGHTS_DIR / "fashion-mnist-train.gauss.safetensors"
    stats.save(path, eigvecs_dtype=torch.float32)
    print(f"{path}: {len(x)} images, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

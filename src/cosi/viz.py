"""Pictures of samples: image grids (PNG via pillow) and 2-D scatter plots (matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


def image_grid(x: Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) images in [-1, 1] -> one uint8 (H', W', C) grid."""
    x = x.detach().float().cpu().clamp(-1, 1)
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = torch.ones(c, ncol * (h + pad) + pad, nrow * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = x[i]
    img = ((grid + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
    return img[..., 0] if c == 1 else img


def save_image_grid(x: Tensor, path, nrow: int | None = None, scale: int = 1) -> Path:
    from PIL import Image

    im = Image.fromarray(image_grid(x, nrow))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def save_scatter(x: Tensor, path, ref: Tensor | None = None, title: str = "") -> Path:
    """Scatter of the first two coordinates of samples (and of reference data, if given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    if ref is not None:
        r = ref.reshape(len(ref), -1).cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=3, alpha=0.4, c="tab:gray", label="exact data")
    p = x.reshape(len(x), -1).detach().cpu().float().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=3, alpha=0.7, c="tab:blue", label="samples")
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

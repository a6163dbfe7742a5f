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
    return _save(fig, path)


def _save(fig, path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- sweep results -------------------------------------------------------------------------------


def _label(row: dict, keys=("lam", "eta", "grid")) -> str:
    extra = ", ".join(f"{k}={row[k]}" for k in keys if k in row and row.get(k) is not None)
    return row["sampler"] + (f" ({extra})" if extra else "")


def _mean_std(values):
    m = sum(values) / len(values)
    s = (sum((v - m) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
    return m, s


def plot_fd_vs_nfe(rows: list[dict], path, title: str = "") -> Path:
    """FD against NFE, one line per sampler (and λ/η/grid), mean ± std over seeds; log axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict = {}
    for r in rows:
        if "fd" in r:
            groups.setdefault(_label(r), {}).setdefault(r["nfe"], []).append(r["fd"])
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    for label, by_nfe in sorted(groups.items()):
        nfes = sorted(by_nfe)
        ms = [_mean_std(by_nfe[k]) for k in nfes]
        ax.errorbar(nfes, [m for m, _ in ms], yerr=[s for _, s in ms], marker="o", ms=3, capsize=2, label=label)
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="FD", title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_fd_vs_lam(rows: list[dict], sampler: str, path, title: str = "") -> Path:
    """FD against λ for one sampler, one line per NFE (rows with a numeric λ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_nfe: dict = {}
    for r in rows:
        if r.get("sampler") == sampler and "fd" in r and isinstance(r.get("lam"), (int, float)):
            by_nfe.setdefault(r["nfe"], {}).setdefault(r["lam"], []).append(r["fd"])
    if not by_nfe:
        raise ValueError(f"no rows of sampler {sampler!r} with a numeric lam and an FD")
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    for nfe, by_lam in sorted(by_nfe.items()):
        lams = sorted(by_lam)
        ax.plot(lams, [_mean_std(by_lam[x])[0] for x in lams], marker="o", ms=3, label=f"NFE {nfe}")
    ax.set(yscale="log", xlabel="λ", ylabel="FD", title=title or sampler)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)

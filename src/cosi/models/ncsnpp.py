"""NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs"), pure PyTorch.

This is our own implementation of the score network that the official PSLD code
(github.com/mandt-lab/PSLD, ``main/models/score_fn/song_sde/ncsnpp.py``, itself a port of
yang-song/score_sde_pytorch) trains. It supports the options the official PSLD configs and
scripts use (see :mod:`cosi.models.official_psld` for the presets):

* BigGAN residual blocks (``resblock_type='biggan'``; DDPM blocks are supported too),
* FIR up/down-sampling (``fir=True``, kernel ``(1, 3, 3, 1)``) through :func:`upfirdn2d`,
  written here in plain PyTorch (no custom CUDA op), or nearest/average resampling,
* ``progressive_input`` 'none' | 'input_skip' | 'residual' and ``progressive``
  'none' | 'output_skip' | 'residual', ``progressive_combine`` 'sum' | 'cat',
* Gaussian Fourier (``embedding_type='fourier'``, of log t) or sinusoidal
  (``'positional'``, of raw t) time embedding,
* self-attention at the resolutions in ``attn_resolutions`` (16 in every PSLD config).

Interface (same as the official network)::

    net = NCSNpp(NCSNppConfig(image_size=32, in_ch=6, out_ch=6, ...))
    out = net(z, t)    # z: (B, in_ch, H, W) float32, t: (B,) forward time in (0, 1]

``t`` is fed *as is* — no ×999 rescaling and no log-sigma: the Fourier embedding is
computed from ``log(t)`` inside the network, the positional embedding from ``t`` itself
(frequencies exp(−k·ln(10⁴)/(nf/2 − 1)), k = 0 … nf/2 − 1). What the output means is a
matter of training; for PSLD it is ε, see :mod:`cosi.models.official_psld`.

Parameter names. The network keeps the official layout: one ``nn.ModuleList`` named
``all_modules`` filled in the official order, with the official sub-module names
(``GroupNorm_0``, ``Conv_0``, ``Dense_0``, ``NIN_0.W``, ``Conv2d_0.weight`` …), so an
official state dict (after stripping the Lightning prefix) loads with ``strict=True`` and
no key renaming. The forward pass walks ``all_modules`` with an iterator; which module
comes next is fixed at construction (attention is placed by level, not by testing the
feature-map width at run time as the official code does; the two agree at the
configured image size).

One deliberate difference: the official PyTorch port's fused ``upsample_conv_2d`` (used
only by ``progressive='residual'`` or by DDPM blocks with ``fir=True``; no PSLD config
uses either) indexes a tensor with a negative step and cannot run. Ours follows the
StyleGAN2 definition it was ported from (flipped kernel, transposed convolution, FIR).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "NCSNppConfig", "NCSNpp", "upfirdn2d", "fir_kernel_2d", "upsample_2d", "downsample_2d",
    "upsample_conv_2d", "conv_downsample_2d",
]

SQRT2 = math.sqrt(2.0)

# ---- FIR resampling (StyleGAN2 upfirdn2d) ------------------------------------------------


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, filter with a 2-D FIR kernel, downsample.

    ``x`` (N, C, H, W); ``kernel`` (kh, kw), applied as a true convolution (flipped
    correlation) to every channel; ``pad = (p0, p1)`` pads both spatial axes by p0 before
    and p1 after (negative values crop). Output side: (H·up + p0 + p1 − kh) // down + 1.
    """
    n, c, h, w = x.shape
    p0, p1 = int(pad[0]), int(pad[1])
    if up > 1:  # zero insertion: x[i] -> position i*up
        x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
    if p0 < 0 or p1 < 0:
        c0, c1 = max(-p0, 0), max(-p1, 0)
        x = x[..., c0:x.shape[-2] - c1, c0:x.shape[-1] - c1]
    k = kernel.to(dtype=x.dtype, device=x.device).flip(0, 1)[None, None]
    # every channel filtered alike: fold channels into the batch (much faster on CPU than groups=c)
    y = F.conv2d(x.reshape(n * c, 1, *x.shape[-2:]), k, stride=down)
    return y.reshape(n, c, *y.shape[-2:])


def fir_kernel_2d(k, gain: float = 1.0) -> Tensor:
    """A separable 1-D kernel (or a square 2-D one) as a 2-D kernel summing to ``gain``."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"FIR kernel must be 1-D or square 2-D, got shape {k.shape}")
    return torch.from_numpy(k / k.sum() * gain)


def upsample_2d(x: Tensor, k=(1, 3, 3, 1), factor: int = 2) -> Tensor:
    """FIR upsampling: (N, C, H, W) -> (N, C, H·f, W·f); constants are preserved."""
    kk = fir_kernel_2d(k, gain=factor**2)
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Tensor, k=(1, 3, 3, 1), factor: int = 2) -> Tensor:
    """FIR downsampling: (N, C, H, W) -> (N, C, H/f, W/f); constants are preserved."""
    kk = fir_kernel_2d(k)
    p = kk.shape[0] - factor
    return upfirdn2d(x, kk, down=factor, pad=((p + 1) // 2, p // 2))


def conv_downsample_2d(x: Tensor, w: Tensor, k=(1, 3, 3, 1), factor: int = 2) -> Tensor:
    """FIR filter then a strided convolution with ``w`` (out, in, r, r), r odd."""
    kk = fir_kernel_2d(k)
    p = (kk.shape[0] - factor) + (w.shape[-1] - 1)
    x = upfirdn2d(x, kk, pad=((p + 1) // 2, p // 2))
    return F.conv2d(x, w, stride=factor)


def upsample_conv_2d(x: Tensor, w: Tensor, k=(1, 3, 3, 1), factor: int = 2) -> Tensor:
    """Zero insertion + convolution with ``w`` (as conv2d correlates) + FIR, fused (StyleGAN2)."""
    kk = fir_kernel_2d(k, gain=factor**2)
    p = (kk.shape[0] - factor) - (w.shape[-1] - 1)
    x = F.conv_transpose2d(x, w.flip(-1, -2).transpose(0, 1), stride=factor)
    return upfirdn2d(x, kk, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def naive_upsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


def naive_downsample_2d(x: Tensor, factor: int = 2) -> Tensor:
    return F.avg_pool2d(x, factor)


# ---- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class NCSNppConfig:
    """The official ``score_fn`` options (same names) plus the data image size."""

    image_size: int = 32
    in_ch: int = 6
    out_ch: int = 6
    nf: int = 128
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: tuple = (16,)
    dropout: float = 0.1
    resamp_with_conv: bool = True
    noise_cond: bool = True
    fir: bool = False
    fir_kernel: tuple = (1, 3, 3, 1)
    skip_rescale: bool = True
    resblock_type: str = "biggan"
    progressive: str = "none"
    progressive_input: str = "none"
    progressive_combine: str = "sum"
    embedding_type: str = "positional"
    init_scale: float = 0.0
    fourier_scale: float = 16.0
    nonlinearity: str = "swish"

    def __post_init__(self):
        for name in ("ch_mult", "attn_resolutions", "fir_kernel"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("resblock_type", "progressive", "progressive_input", "progressive_combine",
                     "embedding_type", "nonlinearity"):
            object.__setattr__(self, name, str(getattr(self, name)).lower())
        _check_choice("resblock_type", self.resblock_type, ("biggan", "ddpm"))
        _check_choice("progressive", self.progressive, ("none", "output_skip", "residual"))
        _check_choice("progressive_input", self.progressive_input, ("none", "input_skip", "residual"))
        _check_choice("progressive_combine", self.progressive_combine, ("sum", "cat"))
        _check_choice("embedding_type", self.embedding_type, ("fourier", "positional"))
        _check_choice("nonlinearity", self.nonlinearity, tuple(_ACTIVATIONS))
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"image_size {self.image_size} not divisible by 2^{len(self.ch_mult) - 1}")

    @property
    def resolutions(self) -> list[int]:
        return [self.image_size // 2**i for i in range(len(self.ch_mult))]

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "NCSNppConfig":
        """Build from an official ``score_fn`` section (``name`` is ignored) plus image_size."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known - {"name"}
        if unknown:
            raise ValueError(f"unknown NCSN++ options {sorted(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in known})


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {list(choices)}")


_ACTIVATIONS = {"swish": nn.SiLU, "elu": nn.ELU, "relu": nn.ReLU,
                "lrelu": lambda: nn.LeakyReLU(0.2)}

# ---- initialization (DDPM / JAX variance scaling: fan_avg, uniform) ------------------------


def _init_weight(weight: Tensor, scale: float = 1.0, in_axis: int = 1, out_axis: int = 0):
    scale = 1e-10 if scale == 0 else scale
    receptive = weight[0, 0].numel() if weight.dim() > 2 else 1
    fan_avg = (weight.shape[in_axis] + weight.shape[out_axis]) * receptive / 2
    bound = math.sqrt(3 * scale / fan_avg)
    with torch.no_grad():
        weight.uniform_(-bound, bound)


def conv3x3(cin, cout, stride=1, padding=1, init_scale=1.0) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=padding)
    _init_weight(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def conv1x1(cin, cout, init_scale=1.0) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    _init_weight(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def dense(din, dout) -> nn.Linear:
    lin = nn.Linear(din, dout)
    _init_weight(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def group_norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(ch // 4, 32), ch, eps=1e-6)


# ---- layers (attribute names = the official ones) -------------------------------------------


class NIN(nn.Module):
    """Per-pixel linear map with weight ``W`` (in, out) and bias ``b``: a 1×1 convolution."""

    def __init__(self, cin, cout, init_scale=0.1):
        super().__init__()
        self.W = nn.Parameter(torch.empty(cin, cout))
        _init_weight(self.W, init_scale, in_axis=0, out_axis=1)
        self.b = nn.Parameter(torch.zeros(cout))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.W.t()[:, :, None, None], self.b)


class GaussianFourierProjection(nn.Module):
    """[sin(2π W s), cos(2π W s)] with fixed random frequencies ``W`` (a frozen parameter)."""

    def __init__(self, embedding_size: int, scale: float):
        super().__init__()
        self.W = nn.Parameter(torch.randn(embedding_size) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        proj = s[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([proj.sin(), proj.cos()], dim=-1)


def positional_embedding(t: Tensor, dim: int, max_positions: float = 10000.0) -> Tensor:
    """Transformer sinusoidal embedding of the raw values ``t`` (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_positions) / (half - 1)
                      * torch.arange(half, dtype=torch.float32, device=t.device))
    arg = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([arg.sin(), arg.cos()], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class Combine(nn.Module):
    """Merge the input pyramid into the features: 1×1 conv, then sum or concatenate."""

    def __init__(self, dim1, dim2, method="sum"):
        super().__init__()
        self.Conv_0 = conv1x1(dim1, dim2)
        self.method = method

    def forward(self, pyramid: Tensor, h: Tensor) -> Tensor:
        p = self.Conv_0(pyramid)
        return torch.cat([p, h], dim=1) if self.method == "cat" else p + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels, residual (÷√2 with skip_rescale)."""

    def __init__(self, channels, skip_rescale=True, init_scale=0.0):
        super().__init__()
        self.GroupNorm_0 = group_norm(channels)
        self.NIN_0 = NIN(channels, channels)
        self.NIN_1 = NIN(channels, channels)
        self.NIN_2 = NIN(channels, channels)
        self.NIN_3 = NIN(channels, channels, init_scale=init_scale)
        self.skip_rescale = skip_rescale

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        h = self.GroupNorm_0(x)
        q, k, v = (nin(h).flatten(2).transpose(1, 2)[:, None] for nin in (self.NIN_0, self.NIN_1, self.NIN_2))
        a = F.scaled_dot_product_attention(q, k, v)  # (B, 1, HW, C), scale 1/sqrt(C)
        h = self.NIN_3(a[:, 0].transpose(1, 2).reshape(b, c, hh, ww))
        return (x + h) / SQRT2 if self.skip_rescale else x + h


class FIRConv2d(nn.Module):
    """3×3 convolution fused with FIR up- or down-sampling (official name: ``Conv2d_0``)."""

    def __init__(self, cin, cout, up=False, down=False, fir_kernel=(1, 3, 3, 1), kernel=3):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
        _init_weight(self.weight)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.up, self.down, self.fir_kernel = up, down, fir_kernel

    def forward(self, x: Tensor) -> Tensor:
        if self.up:
            x = upsample_conv_2d(x, self.weight, self.fir_kernel)
        elif self.down:
            x = conv_downsample_2d(x, self.weight, self.fir_kernel)
        else:
            x = F.conv2d(x, self.weight, padding=self.weight.shape[-1] // 2)
        return x + self.bias[None, :, None, None]


class Upsample(nn.Module):
    """×2 upsampling: nearest (+3×3 conv) or FIR (fused with a 3×3 conv when with_conv)."""

    def __init__(self, in_ch, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, up=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, fir_kernel

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else upsample_2d(x, self.fir_kernel)
        h = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.Conv_0(h) if self.with_conv else h


class Downsample(nn.Module):
    """×2 downsampling: 2×2 mean or strided 3×3 conv, or FIR (fused with a 3×3 conv)."""

    def __init__(self, in_ch, out_ch=None, with_conv=False, fir=False, fir_kernel=(1, 3, 3, 1)):
        super().__init__()
        out_ch = out_ch or in_ch
        if with_conv and fir:
            self.Conv2d_0 = FIRConv2d(in_ch, out_ch, down=True, fir_kernel=fir_kernel)
        elif with_conv:
            self.Conv_0 = conv3x3(in_ch, out_ch, stride=2, padding=0)
        self.with_conv, self.fir, self.fir_kernel = with_conv, fir, fir_kernel

    def forward(self, x: Tensor) -> Tensor:
        if self.fir:
            return self.Conv2d_0(x) if self.with_conv else downsample_2d(x, self.fir_kernel)
        if self.with_conv:
            return self.Conv_0(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, 2)


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block; optionally resamples both branches by 2."""

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, up=False, down=False, dropout=0.1,
                 fir=False, fir_kernel=(1, 3, 3, 1), skip_rescale=True, init_scale=0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch or up or down:
            self.Conv_2 = conv1x1(in_ch, out_ch)
        self.act, self.up, self.down, self.fir, self.fir_kernel = act, up, down, fir, fir_kernel
        self.skip_rescale = skip_rescale

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return upsample_2d(x, self.fir_kernel) if self.fir else naive_upsample_2d(x)
        if self.down:
            return downsample_2d(x, self.fir_kernel) if self.fir else naive_downsample_2d(x)
        return x

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.Conv_0(self._resample(self.act(self.GroupNorm_0(x))))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        x = self._resample(x)
        if hasattr(self, "Conv_2"):
            x = self.Conv_2(x)
        return (x + h) / SQRT2 if self.skip_rescale else x + h


class ResnetBlockDDPM(nn.Module):
    """DDPM residual block (NIN shortcut when the channel count changes)."""

    def __init__(self, act, in_ch, out_ch=None, temb_dim=None, dropout=0.1, skip_rescale=False,
                 init_scale=0.0):
        super().__init__()
        out_ch = out_ch or in_ch
        self.GroupNorm_0 = group_norm(in_ch)
        self.Conv_0 = conv3x3(in_ch, out_ch)
        if temb_dim is not None:
            self.Dense_0 = dense(temb_dim, out_ch)
        self.GroupNorm_1 = group_norm(out_ch)
        self.Dropout_0 = nn.Dropout(dropout)
        self.Conv_1 = conv3x3(out_ch, out_ch, init_scale=init_scale)
        if in_ch != out_ch:
            self.NIN_0 = NIN(in_ch, out_ch)
        self.act, self.skip_rescale = act, skip_rescale

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        h = self.Conv_0(self.act(self.GroupNorm_0(x)))
        if temb is not None:
            h = h + self.Dense_0(self.act(temb))[:, :, None, None]
        h = self.Conv_1(self.Dropout_0(self.act(self.GroupNorm_1(h))))
        if hasattr(self, "NIN_0"):
            x = self.NIN_0(x)
        return (x + h) / SQRT2 if self.skip_rescale else x + h


# ---- the network ----------------------------------------------------------------------------


class NCSNpp(nn.Module):
    """NCSN++ U-Net: ``forward(x, t)`` with x (B, in_ch, H, W), t (B,) -> (B, out_ch, H, W)."""

    def __init__(self, config: NCSNppConfig):
        super().__init__()
        if isinstance(config, dict):
            config = NCSNppConfig.from_dict(config)
        self.config = c = config
        self.act = _ACTIVATIONS[c.nonlinearity]()
        self.attn_at_level = [r in c.attn_resolutions for r in c.resolutions]
        self._mods: list[nn.Module] = []
        self._build_embedding()
        self._build_down()
        self._build_middle()
        self._build_up()
        self.all_modules = nn.ModuleList(self._mods)
        del self._mods
        self.pyramid_downsample = Downsample(c.in_ch, fir=c.fir, fir_kernel=c.fir_kernel)
        self.pyramid_upsample = Upsample(c.in_ch, fir=c.fir, fir_kernel=c.fir_kernel)

    # -- construction: modules are appended in the order the forward pass consumes them --

    def _add(self, module: nn.Module) -> None:
        self._mods.append(module)

    def _resblock(self, in_ch, out_ch=None, up=False, down=False) -> nn.Module:
        c = self.config
        temb_dim = 4 * c.nf  # officially Dense_0 exists even with noise_cond=False (then unused)
        if c.resblock_type == "ddpm":
            return ResnetBlockDDPM(self.act, in_ch, out_ch, temb_dim, c.dropout, c.skip_rescale, c.init_scale)
        return ResnetBlockBigGAN(self.act, in_ch, out_ch, temb_dim, up, down, c.dropout, c.fir,
                                 c.fir_kernel, c.skip_rescale, c.init_scale)

    def _attn(self, ch) -> AttnBlock:
        return AttnBlock(ch, self.config.skip_rescale, self.config.init_scale)

    def _build_embedding(self):
        c = self.config
        if c.embedding_type == "fourier":
            self._add(GaussianFourierProjection(c.nf, c.fourier_scale))
        if c.noise_cond:
            self._add(dense(2 * c.nf if c.embedding_type == "fourier" else c.nf, 4 * c.nf))
            self._add(dense(4 * c.nf, 4 * c.nf))

    def _build_down(self):
        c = self.config
        self._add(conv3x3(c.in_ch, c.nf))
        self._skip_ch, ch, pyramid_ch = [c.nf], c.nf, c.in_ch
        for level, mult in enumerate(c.ch_mult):
            for _ in range(c.num_res_blocks):
                self._add(self._resblock(ch, c.nf * mult))
                ch = c.nf * mult
                if self.attn_at_level[level]:
                    self._add(self._attn(ch))
                self._skip_ch.append(ch)
            if level == len(c.ch_mult) - 1:
                continue
            if c.resblock_type == "ddpm":
                self._add(Downsample(ch, with_conv=c.resamp_with_conv, fir=c.fir, fir_kernel=c.fir_kernel))
            else:
                self._add(self._resblock(ch, down=True))
            if c.progressive_input == "input_skip":
                self._add(Combine(pyramid_ch, ch, c.progressive_combine))
                ch = 2 * ch if c.progressive_combine == "cat" else ch
            elif c.progressive_input == "residual":
                self._add(Downsample(pyramid_ch, ch, with_conv=True, fir=c.fir, fir_kernel=c.fir_kernel))
                pyramid_ch = ch
            self._skip_ch.append(ch)
        self._ch = ch

    def _build_middle(self):
        ch = self._ch
        self._add(self._resblock(ch))
        self._add(self._attn(ch))
        self._add(self._resblock(ch))

    def _build_up(self):
        c = self.config
        ch, skips, pyramid_ch = self._ch, self._skip_ch, 0
        for level in reversed(range(len(c.ch_mult))):
            for _ in range(c.num_res_blocks + 1):
                self._add(self._resblock(ch + skips.pop(), c.nf * c.ch_mult[level]))
                ch = c.nf * c.ch_mult[level]
            if self.attn_at_level[level]:
                self._add(self._attn(ch))
            if c.progressive != "none":
                pyramid_ch = self._build_output_pyramid(level, ch, pyramid_ch)
            if level != 0:
                if c.resblock_type == "ddpm":
                    self._add(Upsample(ch, with_conv=c.resamp_with_conv, fir=c.fir, fir_kernel=c.fir_kernel))
                else:
                    self._add(self._resblock(ch, up=True))
        assert not skips
        if c.progressive != "output_skip":
            self._add(group_norm(ch))
            self._add(conv3x3(ch, c.out_ch, init_scale=c.init_scale))
        del self._skip_ch, self._ch

    def _build_output_pyramid(self, level, ch, pyramid_ch) -> int:
        c = self.config
        first = level == len(c.ch_mult) - 1
        if c.progressive == "output_skip":
            self._add(group_norm(ch))
            self._add(conv3x3(ch, c.in_ch, init_scale=c.init_scale))
            return c.in_ch
        if first:  # residual
            self._add(group_norm(ch))
            self._add(conv3x3(ch, ch))
        else:
            self._add(Upsample(pyramid_ch, ch, with_conv=True, fir=c.fir, fir_kernel=c.fir_kernel))
        return ch

    # -- forward --

    def time_embedding(self, t: Tensor, mods) -> Tensor | None:
        c = self.config
        if c.embedding_type == "fourier":
            temb = next(mods)(torch.log(t))
        else:
            temb = positional_embedding(t, c.nf).to(t.dtype)  # computed in float32, as officially
        if not c.noise_cond:
            return None
        temb = next(mods)(temb)
        return next(mods)(self.act(temb))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        c = self.config
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        mods = iter(self.all_modules)
        temb = self.time_embedding(t, mods)
        hs = self._down(x, temb, mods)
        h = next(mods)(hs[-1], temb)
        h = next(mods)(h)
        h = next(mods)(h, temb)
        h = self._up(h, hs, temb, mods)
        if c.progressive != "output_skip":
            norm, conv = next(mods), next(mods)
            h = conv(self.act(norm(h)))
        assert next(mods, None) is None, "module order out of sync"
        return h

    def _merge(self, a: Tensor, b: Tensor) -> Tensor:
        return (a + b) / SQRT2 if self.config.skip_rescale else a + b

    def _down(self, x, temb, mods) -> list[Tensor]:
        c = self.config
        pyramid = x
        hs = [next(mods)(x)]
        for level in range(len(c.ch_mult)):
            for _ in range(c.num_res_blocks):
                h = next(mods)(hs[-1], temb)
                if self.attn_at_level[level]:
                    h = next(mods)(h)
                hs.append(h)
            if level == len(c.ch_mult) - 1:
                continue
            h = next(mods)(hs[-1]) if c.resblock_type == "ddpm" else next(mods)(hs[-1], temb)
            if c.progressive_input == "input_skip":
                pyramid = self.pyramid_downsample(pyramid)
                h = next(mods)(pyramid, h)
            elif c.progressive_input == "residual":
                pyramid = self._merge(next(mods)(pyramid), h)
                h = pyramid
            hs.append(h)
        return hs

    def _up(self, h, hs, temb, mods) -> Tensor:
        c = self.config
        pyramid = None
        for level in reversed(range(len(c.ch_mult))):
            for _ in range(c.num_res_blocks + 1):
                h = next(mods)(torch.cat([h, hs.pop()], dim=1), temb)
            if self.attn_at_level[level]:
                h = next(mods)(h)
            if c.progressive != "none":
                h, pyramid = self._output_pyramid(level, h, pyramid, mods)
            if level != 0:
                h = next(mods)(h) if c.resblock_type == "ddpm" else next(mods)(h, temb)
        assert not hs
        return pyramid if c.progressive == "output_skip" else h

    def _output_pyramid(self, level, h, pyramid, mods):
        c = self.config
        first = level == len(c.ch_mult) - 1
        if c.progressive == "output_skip" or first:  # GroupNorm -> act -> conv3x3
            norm, conv = next(mods), next(mods)
            p = conv(self.act(norm(h)))
            if c.progressive == "residual":
                return h, p
            return h, p if first else self.pyramid_upsample(pyramid) + p
        pyramid = self._merge(next(mods)(pyramid), h)
        return pyramid, pyramid

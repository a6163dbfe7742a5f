"""A compact DDPM-style U-Net that predicts ε for all k·C channels of a block state.

    ε_θ(z_t, t):  (B, k·C, H, W), t ∈ [0, 1]  ->  (B, k·C, H, W)

Time enters through a sinusoidal embedding of ``time_scale · t`` (default 1000, so the
frequencies of the usual DDPM embedding span the whole of t ∈ [1e−5, 1]; no log-SNR is
used, the same network serves VP, CLD and PSLD) followed by a 2-layer MLP; each residual
block adds a projection of it after its first convolution. Blocks: GroupNorm → SiLU → conv
→ +time → GroupNorm → SiLU → dropout → conv, plus a (1×1 when channels change) skip.
Self-attention runs at the resolutions in ``attn_resolutions`` and in the middle. Each
level but the last halves the resolution (28 → 14 → 7 for Fashion-MNIST, 32 → 16 → 8 → 4
for CIFAR-10). The output convolution starts at zero, so an untrained net predicts ε = 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class UNetConfig:
    """Everything that fixes the network's shapes; round-trips through JSON."""

    in_channels: int = 2  # k * C
    out_channels: int | None = None  # default: in_channels
    image_size: int = 28
    base_channels: int = 64
    channel_mult: tuple = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (7,)
    num_heads: int = 4
    dropout: float = 0.1
    time_scale: float = 1000.0
    norm_groups: int = 32

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if self.out_channels is None:
            object.__setattr__(self, "out_channels", self.in_channels)
        down = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % down:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2^(levels-1) = {down} "
                             f"for channel_mult {self.channel_mult}")
        bad = [r for r in self.attn_resolutions if r not in self.resolutions]
        if bad:
            raise ValueError(f"attention resolutions {bad} are not among the U-Net's resolutions "
                             f"{self.resolutions} (image_size {self.image_size}, channel_mult {self.channel_mult})")
        for m in self.channel_mult:
            if (self.base_channels * m) % _groups(self.base_channels * m, self.norm_groups):
                raise ValueError(f"channels {self.base_channels * m} do not split into GroupNorm groups")
            if (self.base_channels * m) % self.num_heads:
                raise ValueError(f"channels {self.base_channels * m} not divisible by num_heads {self.num_heads}")

    @property
    def resolutions(self) -> list[int]:
        return [self.image_size // 2**i for i in range(len(self.channel_mult))]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"], d["attn_resolutions"] = list(self.channel_mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown U-Net config keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _groups(channels: int, groups: int) -> int:
    """The largest group count ≤ ``groups`` that divides ``channels``."""
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


def norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels, groups), channels, eps=1e-6)


def timestep_embedding(t: Tensor, dim: int, scale: float, max_period: float = 10000.0) -> Tensor:
    """[cos(scale·t·ω_j), sin(scale·t·ω_j)], ω_j = max_period^(−j/(dim/2)), in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (scale * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class ResBlock(nn.Module):
    """GN → SiLU → conv → +emb → GN → SiLU → dropout → conv, with a skip connection."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.drop = norm(cout, groups), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H·W positions, residual, output projection zeroed."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(h.transpose(-1, -2).reshape(B, C, H, W))


class Level(nn.Module):
    """The residual blocks (and attention) of one resolution."""

    def __init__(self, cins: list[int], cout: int, emb_dim: int, cfg: UNetConfig, attn: bool):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, cout, emb_dim, cfg.dropout, cfg.norm_groups) for c in cins)
        self.attns = nn.ModuleList(
            Attention(cout, cfg.num_heads, cfg.norm_groups) if attn else nn.Identity() for _ in cins)


class UNet(nn.Module):
    """ε_θ(z, t) for a k-block state; see the module docstring."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        ch = [cfg.base_channels * m for m in cfg.channel_mult]
        emb_dim = 4 * cfg.base_channels
        self.time_mlp = nn.Sequential(nn.Linear(cfg.base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.base_channels, 3, padding=1)

        skips, c = [cfg.base_channels], cfg.base_channels
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        for i, (cout, res) in enumerate(zip(ch, cfg.resolutions)):
            cins = [c] + [cout] * (cfg.num_res_blocks - 1)
            self.down.append(Level(cins, cout, emb_dim, cfg, res in cfg.attn_resolutions))
            c = cout
            skips += [cout] * cfg.num_res_blocks
            last = i == len(ch) - 1
            self.downsample.append(nn.Identity() if last else nn.Conv2d(c, c, 3, stride=2, padding=1))
            if not last:
                skips.append(c)

        self.mid1 = ResBlock(c, c, emb_dim, cfg.dropout, cfg.norm_groups)
        self.mid_attn = Attention(c, cfg.num_heads, cfg.norm_groups)
        self.mid2 = ResBlock(c, c, emb_dim, cfg.dropout, cfg.norm_groups)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, (cout, res) in reversed(list(enumerate(zip(ch, cfg.resolutions)))):
            cins = []
            for _ in range(cfg.num_res_blocks + 1):
                cins.append(c + skips.pop())
                c = cout
            self.up.append(Level(cins, cout, emb_dim, cfg, res in cfg.attn_resolutions))
            self.upsample.append(nn.Conv2d(c, c, 3, padding=1) if i > 0 else nn.Identity())

        self.norm_out = norm(c, cfg.norm_groups)
        self.conv_out = nn.Conv2d(c, cfg.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        cfg = self.config
        t = t.reshape(-1).expand(z.shape[0]) if t.numel() == 1 else t
        emb = self.time_mlp(timestep_embedding(t, cfg.base_channels, cfg.time_scale).to(self.conv_in.weight.dtype))
        h = self.conv_in(z)
        hs = [h]
        for level, down in zip(self.down, self.downsample):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for level, up in zip(self.up, self.upsample):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, hs.pop()], 1), emb))
            if not isinstance(up, nn.Identity):
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())

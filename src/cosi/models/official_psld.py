"""Official PSLD checkpoints (github.com/mandt-lab/PSLD): presets, loader, ε-model wrapper.

What the official code does (read from ``main/models/sde/psld.py``, ``main/losses.py``,
``main/models/wrapper.py``, ``main/samplers/sde.py`` at commit 24e1867):

* **State.** z = [x; m] stacked on channels (``torch.cat([x, m], dim=1)``), x first, as in
  cosi. Data are scaled to [−1, 1] (``norm: True``: x = img/127.5 − 1).
* **Time input.** The score network is called as ``score_fn(z_t.float(), t.float())`` with
  the *forward* time t itself: training draws t ~ U[1e−5, 1] (``train_eps``); the sampler
  integrates the reverse SDE over forward times 1 → 1e−3 (``eval_eps``) and ends with one
  noise-free Euler step at t = 1e−3. There is no ×999 or ×1000 rescaling and no log-sigma:
  with ``embedding_type='fourier'`` the network embeds log(t) (Gaussian Fourier features,
  scale 16); with ``'positional'`` it embeds t ∈ (0, 1] directly (sinusoidal, nf dims).
* **Output.** The network predicts ε itself (no division by a std, no multiplier:
  ``scale_by_sigma`` is commented out). Training (``psld_score_loss``, HSM, ``weighting:
  fid``) minimizes mean ‖ε − ε_θ(z_t, t)‖² where z_t = μ_t + L_t ε, L_t the *lower*
  Cholesky factor (``decomp_mode: lower``) of the perturbation covariance Σ_t of
  z_t | x₀ with Σ₀ = diag(0, κ·M) (M = 1/M⁻¹, M⁻¹ = (Γ − ν)²/4), and the score is
  ``get_score``: s = −L_t^{-T} ε. This is exactly cosi's convention, so for the 2C-channel
  networks of every preset here the wrapper returns the network output unchanged.
  The official Σ_t adds ``numerical_eps`` = 1e−9 to both diagonal entries before the
  Cholesky factorization; a process that omits it has a slightly different L_t at the
  smallest t (see docs/interop.md).
* **Momentum-only networks.** With Γ = 0 (official ``mode == 'score_m'``) the network has
  C output channels, ε_m only, and the official score sets s_x = 0, s_m = −ε_m / l22.
  :class:`OfficialPSLDEpsModel` converts such an output to a full ε with the same score:
  ε_x = (l21 / l22) ε_m (then −L^{-T} ε has x-part 0), which needs L_t: pass
  ``cholesky(t) -> (B, 2, 2)`` float64. No preset below is of this kind.
* **Checkpoint.** A PyTorch Lightning (1.9) ``.ckpt`` of ``SDEWrapper``: ``state_dict``
  holds the online network under ``score_fn.`` and the EMA copy (decay 0.9999, updated by
  the ``EMAWeightUpdate`` callback, which keeps no state of its own) under
  ``ema_score_fn.``; sampling uses the EMA network (``sample_from: target``). Below the
  prefix the names are NCSN++'s ``all_modules.<i>.…``, which :class:`~cosi.models.ncsnpp.NCSNpp`
  reproduces, so the weights load with ``strict=True`` after the prefix is stripped.

Presets. ``PRESETS`` holds the settings of the official runs: the YAML config under
``main/configs/dataset/`` with the overrides of the training script under
``scripts_psld/`` (the YAML files alone are stale for CIFAR-10 and CelebA-64: the scripts
and the README change the architecture and Γ, ν). The network options of each preset are
checked against the official config in ``tests/test_ncsnpp.py``.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .ncsnpp import NCSNpp, NCSNppConfig

__all__ = [
    "OfficialPreset", "PRESETS", "OfficialCheckpointError", "get_preset", "read_checkpoint",
    "official_state_dict", "expected_shapes", "load_state_dict_strict", "load_official_checkpoint",
    "OfficialPSLDEpsModel", "load_official_model",
]

ONLINE_PREFIX = "score_fn."
EMA_PREFIX = "ema_score_fn."


@dataclass(frozen=True)
class OfficialPreset:
    """Network options, process parameters and data layout of one official PSLD run.

    ``process`` uses cosi's PSLD parameter names (Gamma, nu, M_inv, beta, kappa, t_min,
    t_train_min, T); the official names are gamma, nu, beta_min = beta_max, kappa,
    eval_eps, train_eps, with M⁻¹ = (Γ − ν)²/4 derived.
    """

    network: NCSNppConfig
    process: dict
    image_size: int
    channels: int = 3
    data_range: tuple = (-1.0, 1.0)  # norm: True -> x = img / 127.5 - 1
    numerical_eps: float = 1e-9  # added by the official code to diag(Σ_t) before Cholesky
    source: str = ""

    @property
    def initial_momentum_variance(self) -> float:
        """Σ₀ for m (HSM): κ · M = κ / M⁻¹."""
        return self.process["kappa"] / self.process["M_inv"]


def _psld_process(Gamma, nu, beta=8.0, kappa=0.04, t_min=1e-3, t_train_min=1e-5):
    return dict(Gamma=Gamma, nu=nu, M_inv=(Gamma - nu) ** 2 / 4, beta=beta, kappa=kappa,
                t_min=t_min, t_train_min=t_train_min, T=1.0)


_COMMON = dict(in_ch=6, out_ch=6, nf=128, attn_resolutions=(16,), resamp_with_conv=True,
               noise_cond=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True, resblock_type="biggan",
               progressive="none", progressive_combine="sum", init_scale=0.0, fourier_scale=16.0,
               nonlinearity="swish")

PRESETS: dict[str, OfficialPreset] = {
    # main/configs/dataset/cifar10/cifar10_psld.yaml overridden by
    # scripts_psld/sota/uncond/cifar10/train_uncond_psld.sh (= README.md's commands):
    # ch_mult [2,2,2], 8 res blocks, dropout 0.15, FIR, residual input pyramid, Fourier
    # embedding; Γ = 0.01, ν = 4.01, κ = 0.04, β = 8. (The script sota/.../sample_uncond_psld.sh
    # samples a checkpoint trained with Γ = 0.02, ν = 4.02: same network, other process.)
    "psld-cifar10": OfficialPreset(
        network=NCSNppConfig(image_size=32, ch_mult=(2, 2, 2), num_res_blocks=8, dropout=0.15,
                             fir=True, progressive_input="residual", embedding_type="fourier",
                             **_COMMON),
        process=_psld_process(Gamma=0.01, nu=4.01),
        image_size=32,
        source="main/configs/dataset/cifar10/cifar10_psld.yaml + scripts_psld/sota/uncond/cifar10/train_uncond_psld.sh",
    ),
    # main/configs/dataset/celeba64/celeba64_psld.yaml overridden by
    # scripts_psld/sota/uncond/celeba64/train_uncond_psld.sh: in/out 6 channels,
    # ch_mult [1,2,2,2], 4 res blocks, dropout 0.1, FIR, residual input pyramid, Fourier;
    # Γ = 0.005, ν = 4.005, κ = 0.04, β = 8 (from the YAML).
    "psld-celeba64": OfficialPreset(
        network=NCSNppConfig(image_size=64, ch_mult=(1, 2, 2, 2), num_res_blocks=4, dropout=0.1,
                             fir=True, progressive_input="residual", embedding_type="fourier",
                             **_COMMON),
        process=_psld_process(Gamma=0.005, nu=4.005),
        image_size=64,
        source="main/configs/dataset/celeba64/celeba64_psld.yaml + scripts_psld/sota/uncond/celeba64/train_uncond_psld.sh",
    ),
    # main/configs/dataset/afhqv2/afhqv2128_psld.yaml (scripts_psld/ablations/uncond/afhqv2/
    # train_uncond_psld.sh repeats its values): 128×128, ch_mult [1,2,2,2,3], 2 res blocks,
    # dropout 0.2, no FIR, no pyramids, positional embedding; Γ = 0.01, ν = 4.01, κ = 0.04, β = 8.
    "psld-afhqv2": OfficialPreset(
        network=NCSNppConfig(image_size=128, ch_mult=(1, 2, 2, 2, 3), num_res_blocks=2, dropout=0.2,
                             fir=False, progressive_input="none", embedding_type="positional",
                             **_COMMON),
        process=_psld_process(Gamma=0.01, nu=4.01),
        image_size=128,
        source="main/configs/dataset/afhqv2/afhqv2128_psld.yaml + scripts_psld/ablations/uncond/afhqv2/train_uncond_psld.sh",
    ),
}


class OfficialCheckpointError(RuntimeError):
    """An official checkpoint cannot be read or does not match the requested network."""


def get_preset(preset) -> tuple[str, NCSNppConfig]:
    """(label, network config) from a preset name, an OfficialPreset, an NCSNppConfig or a dict."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        return preset, PRESETS[preset].network
    if isinstance(preset, OfficialPreset):
        return "custom preset", preset.network
    if isinstance(preset, dict):
        return "custom config", NCSNppConfig.from_dict(preset)
    if isinstance(preset, NCSNppConfig):
        return "custom config", preset
    raise TypeError(f"preset must be a name, OfficialPreset, NCSNppConfig or dict, got {type(preset)}")


# ---- reading ---------------------------------------------------------------------------------


def read_checkpoint(path, map_location="cpu", trust_pickle: bool = False) -> dict:
    """Load a checkpoint's top-level dict without running pickled code (unless trusted).

    ``.safetensors`` files are read with safetensors. Anything else goes through
    ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers;
    if the file needs other classes, the error says which and how to proceed.
    """
    path = Path(path)
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise OfficialCheckpointError(f"not a PSLD checkpoint: {path} is empty (0 bytes) — the download or copy "
                                      "did not finish; fetch the file again")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device=str(map_location))
        if trust_pickle:
            out = torch.load(path, map_location=map_location, weights_only=False)
        else:
            out = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if not names:  # not a disallowed class: the bytes are no pickle torch can read
            raise OfficialCheckpointError(f"not a PSLD checkpoint: {path} is corrupt or not a PyTorch file "
                                          f"({_first_line(e)}) — fetch the file again") from None
        raise OfficialCheckpointError(
            f"{path} holds pickled Python objects outside PyTorch's tensor allowlist ({', '.join(names)}), "
            "which torch.load(weights_only=True) will not build — only if you trust the file's origin, pass "
            "--trust-pickle (trust_pickle=True: torch.load(weights_only=False), which can run code from the "
            f"file), or allowlist exactly these with torch.serialization.add_safe_globals([{', '.join(names)}])"
        ) from None
    except (EOFError, RuntimeError, KeyError, ValueError, OSError, AttributeError, ImportError) as e:
        raise OfficialCheckpointError(f"not a PSLD checkpoint: {path} is corrupt, truncated or not a PyTorch "
                                      f"checkpoint ({type(e).__name__}: {_first_line(e)}) — fetch the file "
                                      "again") from None
    if not isinstance(out, dict):
        raise OfficialCheckpointError(f"not a PSLD checkpoint: {path} holds a {type(out).__name__}, not the dict "
                                      "of a Lightning checkpoint or state dict — pass the official .ckpt file")
    return out


def _first_line(e: BaseException) -> str:
    """The gist of a loader's error: its first sentence (torch's unpickler: its own error line)."""
    said = str(e).strip()
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+)", said)
    line = unpickler.group(1) if unpickler else (said.splitlines() or [""])[0]
    return re.split(r"(?<=\.)\s", line)[0][:200] or type(e).__name__


def _prefixes(keys) -> list[str]:
    return sorted({k.split(".", 1)[0] + "." for k in keys if "." in k})


def official_state_dict(checkpoint: dict, ema: bool = True) -> dict[str, Tensor]:
    """The key map: official Lightning checkpoint -> NCSNpp state dict.

    Takes ``checkpoint['state_dict']`` (or the dict itself if it has no such entry), drops a
    leading ``module.`` (DDP), keeps the keys under ``ema_score_fn.`` (ema=True) or
    ``score_fn.`` (ema=False) and strips that prefix; names below it are kept as they are.
    A bare network state dict (keys ``all_modules.*``) is returned unchanged.
    """
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, dict) or not sd:
        raise OfficialCheckpointError("not a PSLD checkpoint: it has no (non-empty) state_dict — pass the "
                                      "official .ckpt file")
    if not all(isinstance(k, str) for k in sd):
        raise OfficialCheckpointError("not a PSLD checkpoint: its state_dict has keys that are not names — pass "
                                      "the official .ckpt file")
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}
    if all(k.startswith("all_modules.") for k in sd):
        return dict(sd)
    prefix = EMA_PREFIX if ema else ONLINE_PREFIX
    out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        hint = " (pass ema=False for the raw weights)" if ema else ""
        raise OfficialCheckpointError(
            f"no '{prefix}*' weights in the checkpoint{hint}; its top-level prefixes are "
            f"{_prefixes(sd)}")
    return out


def expected_shapes(config: NCSNppConfig) -> dict[str, tuple]:
    """Parameter names and shapes of NCSNpp(config), built on the meta device (no memory)."""
    with torch.device("meta"):
        net = NCSNpp(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _listing(keys, limit=8) -> str:
    keys = sorted(keys)
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _mismatch_report(net: nn.Module, state: dict) -> str:
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {expected[k]}"
              for k in sorted(expected.keys() & state.keys()) if tuple(state[k].shape) != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es): " + "; ".join(shapes[:8])
                     + (" …" if len(shapes) > 8 else ""))
    return "\n  ".join(parts)


def _matching_presets(state: dict) -> list[str]:
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    return [name for name, p in PRESETS.items() if expected_shapes(p.network) == shapes]


def load_state_dict_strict(net: NCSNpp, state: dict, label: str = "", assign: bool = False) -> None:
    """``net.load_state_dict(state, strict=True, assign=assign)``, with an error naming the bad keys."""
    report = _mismatch_report(net, state)
    if report:
        fits = _matching_presets(state)
        hint = f"\n  the weights do fit preset(s) {fits}" if fits else ""
        raise OfficialCheckpointError(f"weights do not match the network of {label}:\n  {report}{hint}")
    net.load_state_dict(state, strict=True, assign=assign)


def load_official_checkpoint(path, preset, ema: bool = True, map_location="cpu",
                             trust_pickle: bool = False) -> NCSNpp:
    """Build the preset's NCSN++ and load an official PSLD ``.ckpt`` into it (strictly).

    ``preset``: a name in ``PRESETS`` ('psld-cifar10', 'psld-celeba64', 'psld-afhqv2'),
    an ``OfficialPreset``, an ``NCSNppConfig`` or a dict of official ``score_fn`` options
    plus ``image_size``. ``ema=True`` (default) takes the EMA weights (``ema_score_fn.*``),
    ``ema=False`` the online ones (``score_fn.*``). The checkpoint is read with
    ``torch.load(weights_only=True)`` unless ``trust_pickle=True``. Returns the network in
    eval mode; wrap it in :class:`OfficialPSLDEpsModel` for cosi's ε convention.
    """
    label, config = get_preset(preset)
    checkpoint = read_checkpoint(path, map_location, trust_pickle)
    weights = official_state_dict(checkpoint, ema=ema)
    odd = sorted(k for k, v in weights.items() if not isinstance(v, Tensor))
    if odd:
        raise OfficialCheckpointError(f"not a PSLD checkpoint: {Path(path).name} holds non-tensor weights "
                                      f"({_listing(odd, 3)}) — pass the official .ckpt file")
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in weights.items()}
    with torch.device("meta"):  # no memory and no random init: the checkpoint's tensors are used
        net = NCSNpp(config)
    which = "EMA" if ema else "online"
    load_state_dict_strict(net, state, label=f"{label} ({which} weights of {Path(path).name})", assign=True)
    return net.eval()


# ---- ε in cosi's convention -----------------------------------------------------------------


class OfficialPSLDEpsModel(nn.Module):
    """ε-model z, t -> ε with z_t = μ_t + L_t ε (L_t lower Cholesky of Σ_t), s = −L_t^{-T} ε.

    ``net``: an official-layout NCSN++ (``forward(z, t)``, t the forward time in (0, 1]).
    A 2C-channel output already is this ε and is returned unchanged (cast to z's dtype).
    A C-channel output (a Γ = 0 'score_m' network: ε_m only) is completed with
    ε_x = (l21 / l22) ε_m, the choice whose score −L^{-T} ε equals the official one
    (s_x = 0, s_m = −ε_m / l22); this needs ``cholesky(t) -> (B, 2, 2)`` float64 L_t.
    """

    def __init__(self, net: nn.Module, cholesky: Callable[[Tensor], Tensor] | None = None):
        super().__init__()
        self.net = net
        self.cholesky = cholesky

    def forward(self, z: Tensor, t) -> Tensor:
        b = z.shape[0]
        t = torch.as_tensor(t, device=z.device)
        t = t.expand(b) if t.dim() == 0 else t.reshape(b)
        dtype = next(self.net.parameters()).dtype
        out = self.net(z.to(dtype), t.to(dtype))
        if out.shape[1] == z.shape[1]:
            return out.to(z.dtype)
        if 2 * out.shape[1] == z.shape[1]:
            return self._complete_momentum_only(out, t).to(z.dtype)
        raise ValueError(f"network returned {out.shape[1]} channels for a {z.shape[1]}-channel state")

    def _complete_momentum_only(self, eps_m: Tensor, t: Tensor) -> Tensor:
        if self.cholesky is None:
            raise ValueError("this network predicts ε_m only (C output channels, official Γ = 0 "
                             "mode); pass cholesky=(t -> (B, 2, 2) lower factor) to complete ε")
        L = torch.as_tensor(self.cholesky(t.to(torch.float64)), dtype=torch.float64)
        ratio = (L[..., 1, 0] / L[..., 1, 1]).reshape(-1, 1, 1, 1)
        eps_x = ratio.to(eps_m.dtype) * eps_m
        return torch.cat([eps_x, eps_m], dim=1)


def load_official_model(path, preset: str, ema: bool = True, device="cpu", dtype=torch.float32,
                        trust_pickle: bool = False):
    """An official PSLD checkpoint as a cosi :class:`~cosi.models.checkpoint.DiffusionModel`: the
    preset's process, its NCSN++ with the checkpoint's (EMA by default) weights behind
    :class:`OfficialPSLDEpsModel`, ready for ``cosi.sample`` and :mod:`cosi.evaluation.generate`."""
    from ..core.processes import make_process
    from .checkpoint import DiffusionModel

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    net = load_official_checkpoint(path, preset, ema=ema, trust_pickle=trust_pickle)
    eps = OfficialPSLDEpsModel(net).to(device=device, dtype=dtype).eval()
    config = {"kind": "official-psld", "preset": preset, "checkpoint": str(path), "ema": ema}
    return DiffusionModel(make_process("psld", **p.process), eps, (p.channels, p.image_size, p.image_size), config)

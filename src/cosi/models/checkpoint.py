"""Saving and loading models and training state: safetensors for tensors, JSON for the rest.

Nothing here unpickles: a file can hold tensors and JSON, never code.

A *model* is a pair ``<stem>.safetensors`` (weights, fp16 when shipped) + ``<stem>.json``
(config: ``kind`` 'diffusion' or 'classifier', the process, the network config, the data
shape). :func:`load` takes a shipped name (``load("fmnist-psld")``, files in
``cosi/weights/``) or a path (stem, either file, or a folder holding ``model.*``) and returns
a :class:`DiffusionModel` or a :class:`~cosi.models.classifier.Classifier`.

A *training state* is the same pair with every tensor (weights, EMA, optimizer moments,
RNG states as uint8) in the safetensors file and the scalars (step, optimizer settings,
config) in the JSON; both carry the step so a half-written pair is detected.
Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A model or training-state file is missing, corrupt, or does not match its config."""


# ---- files ---------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_json(path, obj) -> None:
    def write(p):
        p.write_text(json.dumps(obj, indent=1) + "\n")

    _atomic_write(Path(path), write)


def load_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def save_tensors(path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file (atomically)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    _atomic_write(Path(path), lambda p: save_file(flat, str(p), metadata=metadata))


def load_tensors(path, device="cpu") -> tuple[dict[str, Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file; a missing or corrupt file raises CheckpointError."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers / truncation
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({type(e).__name__}: {e})") from None
    return tensors, meta


def prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {prefix + k: v for k, v in tensors.items()}


def subdict(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ---- training state ------------------------------------------------------------------------


def state_exists(stem) -> bool:
    return Path(str(stem) + ".json").is_file()


def save_state(stem, tensors: dict[str, Tensor], meta: dict) -> None:
    """Training state: tensors -> ``<stem>.safetensors``, JSON-able ``meta`` -> ``<stem>.json``.
    A random token written into both detects a pair from two different saves."""
    token = os.urandom(8).hex()
    save_tensors(str(stem) + ".safetensors", tensors, {"token": token})
    save_json(str(stem) + ".json", {**meta, "token": token})


def load_state(stem, device="cpu") -> tuple[dict[str, Tensor], dict]:
    meta = load_json(str(stem) + ".json")
    tensors, tmeta = load_tensors(str(stem) + ".safetensors", device)
    if tmeta.get("token") != meta.get("token"):
        raise CheckpointError(f"{stem}.safetensors and {stem}.json come from different saves "
                              "(the run was killed while saving?); delete both to restart")
    return tensors, meta


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state_dict split into tensors ('optim.<param>.<name>') and JSON."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"optim.{i}.{name}"] = v
            else:
                scalars[f"{i}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_load(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict) -> None:
    state: dict = {}
    for key, v in subdict(tensors, "optim.").items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors(generators: dict[str, torch.Generator]) -> dict[str, Tensor]:
    """RNG states as uint8 tensors: the named generators and torch's global CPU (and current
    CUDA) generators, which drive weight init and dropout."""
    out = {f"rng.{name}": g.get_state() for name, g in generators.items()}
    out["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["rng.torch_cuda"] = torch.cuda.get_rng_state()
    return out


def rng_restore(generators: dict[str, torch.Generator], tensors: dict[str, Tensor]) -> None:
    for name, g in generators.items():
        g.set_state(tensors[f"rng.{name}"].cpu())
    torch.set_rng_state(tensors["rng.torch_cpu"].cpu())
    if "rng.torch_cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.torch_cuda"].cpu())


# ---- models --------------------------------------------------------------------------------


def diffusion_config(process, unet_cfg, data_shape, **extra) -> dict:
    """The JSON config of a generative model."""
    return {"kind": "diffusion", "process": process.to_config(), "unet": unet_cfg.to_dict(),
            "data_shape": list(data_shape), **extra}


def save_model(stem, net_or_state, config: dict, dtype=torch.float16) -> tuple[Path, Path]:
    """``<stem>.safetensors`` (floating tensors cast to ``dtype``) + ``<stem>.json``."""
    sd = net_or_state.state_dict() if isinstance(net_or_state, nn.Module) else net_or_state
    sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    w, c = Path(str(stem) + ".safetensors"), Path(str(stem) + ".json")
    save_tensors(w, sd, {"format": "cosi-model", "kind": config.get("kind", "")})
    save_json(c, {"format": "cosi-model", "version": FORMAT_VERSION, **config})
    return w, c


def shipped_names() -> list[str]:
    """Names :func:`load` accepts without a path (pairs present in cosi/weights/)."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors") if p.with_suffix(".json").is_file())


def resolve(name_or_path) -> tuple[Path, Path]:
    """(weights file, config file) for a shipped name or a path."""
    p = Path(name_or_path)
    if p.is_dir():
        p = p / "model"
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    w, c = Path(str(p) + ".safetensors"), Path(str(p) + ".json")
    if w.exists() or c.exists():
        return w, c
    name = str(name_or_path)
    if "/" not in name and os.sep not in name:
        w, c = WEIGHTS_DIR / f"{name}.safetensors", WEIGHTS_DIR / f"{name}.json"
        if w.exists() or c.exists():
            return w, c
        names = shipped_names()
        have = ", ".join(names) if names else f"none yet (train with benchmarks/train_fmnist.sh and copy "\
                                               f"<name>.safetensors + <name>.json into {WEIGHTS_DIR})"
        raise CheckpointError(f"no model named {name!r} is shipped; shipped models: {have}. "
                              "Or pass a path to a .safetensors/.json pair.")
    raise CheckpointError(f"no model at {name_or_path}: expected {w.name} and {c.name} in {w.parent}")


def build_net(config: dict, where: str = "config") -> nn.Module:
    """The network a model config describes (random weights)."""
    from .classifier import Classifier, ClassifierConfig
    from .unet import UNet, UNetConfig

    kind = config.get("kind")
    try:
        if kind == "diffusion":
            return UNet(UNetConfig.from_dict(config["unet"]))
        if kind == "classifier":
            return Classifier(ClassifierConfig.from_dict(config["classifier"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: bad {kind} config ({type(e).__name__}: {e})") from None
    raise CheckpointError(f"{where}: unknown model kind {kind!r} (expected 'diffusion' or 'classifier')")


def load_weights_checked(net: nn.Module, tensors: dict[str, Tensor], weights: Path, config: Path,
                         why: str = "") -> None:
    """Copy ``tensors`` into ``net`` or say exactly which names/shapes disagree."""
    own = net.state_dict()
    problems = [f"missing {k}" for k in own if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in own]
    problems += [f"{k} has shape {tuple(tensors[k].shape)} in the file but {tuple(v.shape)} in the network"
                 for k, v in own.items() if k in tensors and tensors[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... ({len(problems)} problems)" if len(problems) > 4 else "")
        raise CheckpointError(f"{weights.name} does not match {config.name}{why}: {shown}")
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()})


@dataclass
class DiffusionModel:
    """A trained ε-model with its process: ``eps_model(z, t)`` is what samplers call."""

    process: object  # LinearProcess
    net: nn.Module
    data_shape: tuple  # (C, H, W)
    config: dict
    compiled_mode: str | None = None  # set by compile()
    compiled_net: nn.Module | None = field(default=None, repr=False)
    layout: torch.memory_format = torch.contiguous_format  # set by channels_last()

    @property
    def captures_itself(self) -> bool:
        """Whether the network replays its own CUDA graphs (mode 'reduce-overhead'), which a
        whole-sampler capture (``cosi.sample(graph=True)``) cannot capture again."""
        return self.compiled_mode == "reduce-overhead"

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device=None, dtype=None) -> "DiffusionModel":
        """Move the network (e.g. ``.to('cuda', torch.bfloat16)``); returns self."""
        self.net.to(device=device, dtype=dtype)
        return self

    def compile(self, mode: str | None = None) -> "DiffusionModel":
        """``torch.compile`` the network: by default on CUDA with mode 'reduce-overhead' (CUDA
        graphs: the launch overhead of a small U-Net is replayed away), elsewhere 'default'. For
        sampling with ``graph=True``, which captures the whole sampler, use mode 'default' (a
        network that captures itself cannot be captured again). Returns self."""
        self.compiled_mode = mode or ("reduce-overhead" if self.device.type == "cuda" else "default")
        self.compiled_net = torch.compile(self.net, mode=self.compiled_mode)
        return self

    def channels_last(self, on: bool = True) -> "DiffusionModel":
        """Run the network in the channels-last (NHWC) layout, which cuDNN's tensor-core
        convolutions prefer; the sampler's state stays in the default layout. Returns self."""
        self.layout = torch.channels_last if on else torch.contiguous_format
        self.net.to(memory_format=self.layout)
        return self

    @torch.no_grad()
    def eps_model(self, z: Tensor, t) -> Tensor:
        """ε_θ(z, t): z (B, k·C, H, W) in any float dtype, t scalar or (B,); runs the network in
        its own dtype, device and layout, returns ε in z's dtype, device and layout."""
        C, H, W = self.data_shape
        want = (self.process.k * C, H, W)
        if tuple(z.shape[1:]) != want:
            raise ValueError(f"z has shape {tuple(z.shape)}; this {self.process.name} model takes "
                             f"(B, {want[0]}, {H}, {W}) (k={self.process.k} blocks × C={C})")
        t = torch.as_tensor(t, device=self.device, dtype=torch.float32).reshape(-1).expand(z.shape[0]).contiguous()
        x = z.to(device=self.device, dtype=self.dtype).contiguous(memory_format=self.layout)
        # not `compiled_net or net`: a compiled module's truth value asks the wrapped UNet for len()
        net = self.net if self.compiled_net is None else self.compiled_net
        # copy=True: a CUDA-graph replay of a compiled network reuses its output buffer
        return net(x, t).to(device=z.device, dtype=z.dtype, copy=True, memory_format=torch.contiguous_format)

    __call__ = eps_model


def load(name_or_path, device="cpu", dtype=torch.float32):
    """Load a model by shipped name or path: a :class:`DiffusionModel` (generative) or a
    Classifier (in eval mode). Weights are cast to ``dtype`` (fp32 by default)."""
    from ..core.processes import make_process

    wpath, cpath = resolve(name_or_path)
    config = load_json(cpath)
    if config.get("format") != "cosi-model":
        raise CheckpointError(f"{cpath}: not a cosi model config (no \"format\": \"cosi-model\")")
    tensors, _ = load_tensors(wpath)
    net = build_net(config, str(cpath))
    why = ""
    if config["kind"] == "diffusion":
        try:
            process = make_process(**config["process"])
            data_shape = tuple(int(s) for s in config["data_shape"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{cpath}: bad process or data_shape ({e})") from None
        need = process.k * data_shape[0]
        if net.config.in_channels != need or net.config.out_channels != need:
            raise CheckpointError(f"{cpath}: the U-Net has {net.config.in_channels} input channels but a "
                                  f"{process.name} model of data shape {data_shape} needs k·C = {need}")
        why = f" ({process.name}: k={process.k} blocks × C={data_shape[0]} = {need} channels)"
    load_weights_checked(net, tensors, wpath, cpath, why)
    net.to(device=device, dtype=dtype).eval()
    if config["kind"] == "classifier":
        net.model_config = config
        return net
    return DiffusionModel(process, net, data_shape, config)

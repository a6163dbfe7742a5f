"""Training ε-models with the HSM loss of math.md §1, for VP, CLD and PSLD.

One step, with x₀ a data batch in [−1, 1], t ~ U[t_train_min, T], ε ~ N(0, I) on all k·C
channels:

    z_t = μ_t(x₀) + L_t ε,      loss = ‖ε_θ(z_t, t) − ε‖² / (k·C·H·W)     (mean over coordinates)

μ_t = Ψ(t,0)[:, 0] x₀ blockwise and L_t = chol Σ_t come from a table (:class:`MarginalTable`)
built once in float64 with ``process.marginal`` and interpolated on the device, so no
matrix exponential or Cholesky runs per step. AdamW with linear warm-up, gradient
clipping, an EMA of the weights, bf16 autocast on CUDA (fp32 on CPU). The whole dataset
sits on the device and batches are drawn there; the loop synchronizes with the host only
every ``log_every`` steps (loss, steps/s) and when saving.

Checkpoints (``<out>/checkpoint.{safetensors,json}``) hold the weights, EMA, optimizer
moments, every RNG state (data sampler, noise, torch's global generators) and the running
loss window, so a run stopped at step n and resumed continues exactly as if uninterrupted
(same device, same flags). ``<out>/model.{safetensors,json}`` is the EMA network in fp16,
loadable with ``cosi.models.checkpoint.load``. ``<out>/log.jsonl`` has one line per
``log_every`` steps: step, loss (mean over the window), lr, grad_norm, steps_per_s, time.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from ..core.devices import pick_device
from ..data import BatchSampler, ImageData, load_dataset
from ..models import checkpoint as ck
from ..models.unet import UNet, UNetConfig, count_parameters
from ..core.processes import LinearProcess, f64, make_process, perturb

# ---- μ_t and L_t from a table -----------------------------------------------------------------


class MarginalTable:
    """ψ_t (the k mean coefficients, μ_t = ψ_t ⊗ x₀) and L_t of the HSM kernel, tabulated once in float64.

    Nodes are uniform in s = √t over [√t_train_min, √T] (plus one ghost node each side);
    entries are smooth in s (L_t ∝ √t as t → 0 for every process here) and are interpolated
    with the Catmull-Rom cubic, which reproduces quadratics in s exactly. Stored float32 on
    the device; evaluation is a handful of element-wise kernels with no host sync.
    With 4096 intervals the relative error of each entry is ~2e-6 (float32 rounding).
    """

    def __init__(self, process: LinearProcess, device="cpu", size: int = 4096):
        self.k = k = process.k
        s0, s1 = math.sqrt(process.t_train_min), math.sqrt(process.T)
        n = max(size, math.ceil(2 * (s1 - s0) / s0))  # keeps the ghost node s0 − h at t > 0
        self.s0, self.h, self.n = s0, (s1 - s0) / n, n
        s = s0 + self.h * torch.arange(-1, n + 2, dtype=f64)
        m = process.marginal(s * s)
        self.tril = torch.tril_indices(k, k)
        self.values = torch.cat([m.psi, m.L[:, self.tril[0], self.tril[1]]], -1).float().to(device)
        self.tril = self.tril.to(device)
        self.offsets = torch.arange(4, device=device)

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(ψ_t (B, k), L_t (B, k, k)) at times t (B,), float32."""
        u = (t.float().sqrt() - self.s0) / self.h
        i = u.floor().clamp_(0, self.n - 1)
        f = (u - i).unsqueeze(-1)
        p0, p1, p2, p3 = self.values[i.long()[:, None] + self.offsets].unbind(1)
        v = p1 + 0.5 * f * (p2 - p0 + f * (2 * p0 - 5 * p1 + 4 * p2 - p3 + f * (3 * (p1 - p2) + p3 - p0)))
        k = self.k
        L = v.new_zeros(len(t), k, k)
        L[:, self.tril[0], self.tril[1]] = v[:, k:]
        return v[:, :k], L

    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """z_t = ψ_t ⊗ x₀ + L_t ε with the tabulated ψ_t, L_t (the formula of
        :func:`cosi.core.processes.perturb`); x0 (B, C, ...), eps (B, k·C, ...)."""
        return perturb(*self(t), x0, eps)


def hsm_loss(net: nn.Module, table: MarginalTable, x0: Tensor, t: Tensor, eps: Tensor,
             autocast_dtype: torch.dtype | None = None) -> Tensor:
    """‖ε_θ(μ_t + L_t ε, t) − ε‖², averaged over the batch and the k·C·H·W coordinates."""
    z = table.perturb(x0, t, eps)
    with torch.autocast(z.device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        pred = net(z, t)
    return (pred.float() - eps).square().mean()


# ---- configuration ------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """What defines a training run (all of it is checked when resuming, except ``steps``,
    which may grow, and ``data_dir``, which may move)."""

    process: str = "psld"
    process_params: dict = field(default_factory=dict)
    dataset: str = "fmnist"
    data_dir: Optional[str] = None
    data_kwargs: dict = field(default_factory=dict)
    unet: dict = field(default_factory=dict)  # UNetConfig fields; in/out channels and size are derived
    steps: int = 300_000
    batch_size: int = 256
    lr: float = 2e-4
    warmup: int = 1000
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.9995
    flip: bool = False
    seed: int = 0
    table_size: int = 4096
    bf16: bool = True  # autocast on CUDA only

    def make_process(self) -> LinearProcess:
        return make_process(self.process, **self.process_params)

    def unet_config(self, process: LinearProcess, data_shape) -> UNetConfig:
        C, H, W = data_shape
        if H != W:
            raise ValueError(f"the U-Net takes square images, got {H}x{W}")
        return UNetConfig(**{**self.unet, "in_channels": process.k * C, "out_channels": process.k * C,
                             "image_size": H})

    def lr_at(self, step: int) -> float:
        """Linear warm-up to ``lr`` over ``warmup`` steps, then constant."""
        return self.lr * min(1.0, (step + 1) / max(1, self.warmup))

    def ema_at(self, step: int) -> float:
        """EMA decay with the usual warm-up: min(ema_decay, (1 + n) / (10 + n))."""
        return min(self.ema_decay, (1 + step) / (10 + step))

    def to_json(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        return cls(**{**d, "betas": tuple(d["betas"])})


def check_resumable(saved: TrainConfig, cfg: TrainConfig, where: Path) -> None:
    a, b = saved.to_json(), cfg.to_json()
    diff = [k for k in a if k not in ("steps", "data_dir") and a[k] != b.get(k)]
    if diff:
        shown = ", ".join(f"{k}: saved {a[k]!r} vs given {b[k]!r}" for k in diff)
        raise ck.CheckpointError(f"{where} was trained with other settings ({shown}); pass the same "
                                 "settings to resume, or use another --out to start afresh")


def set_deterministic() -> None:
    """Deterministic GPU kernels (slower): needed for bit-exact resume on CUDA, where the default
    convolution backward kernels sum in a varying order."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    import torch._inductor.config as inductor  # for --compile: eager RNG, no order-dependent reductions

    inductor.fallback_random = True
    if hasattr(inductor, "deterministic"):
        inductor.deterministic = True


# ---- the loss log -------------------------------------------------------------------------------


def read_log(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def open_log(path: Path, step: int):
    """Append handle to the log, after dropping lines past ``step`` (written after the last
    checkpoint by a run that was then killed)."""
    rows = [r for r in read_log(path) if r["step"] <= step]
    ck._atomic_write(path, lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)))
    return open(path, "a", buffering=1)


# ---- training -----------------------------------------------------------------------------------


class _Stop:
    """Set on SIGTERM/SIGINT so the loop saves a checkpoint and exits cleanly."""

    def __init__(self):
        self.requested, self._old = False, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for sig, h in self._old.items():
            signal.signal(sig, h)


def draw_batch(sampler: BatchSampler, noise: torch.Generator, process: LinearProcess, eps_shape: tuple,
               channels_last: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """x₀ from the data, t ~ U[t_train_min, T], ε ~ N(0, I) on all k·C channels (on the device)."""
    x0, _ = sampler()
    t0, T = process.t_train_min, process.T
    t = t0 + (T - t0) * torch.rand(eps_shape[0], device=x0.device, generator=noise)
    eps = torch.randn(eps_shape, device=x0.device, generator=noise)
    if channels_last:
        x0, eps = (v.contiguous(memory_format=torch.channels_last) for v in (x0, eps))
    return x0, t, eps


def optimizer_step(model, table: MarginalTable, x0: Tensor, t: Tensor, eps: Tensor, opt: torch.optim.Optimizer,
                   params: list, ema_params: list, cfg: TrainConfig, step: int,
                   amp: torch.dtype | None) -> tuple[Tensor, Tensor]:
    """One AdamW step on the HSM loss (warm-up lr, clipped gradients), then the EMA update
    θ_ema ← θ_ema + (1 − decay)(θ − θ_ema). Returns (loss, gradient norm), still on the device."""
    for g in opt.param_groups:
        g["lr"] = cfg.lr_at(step)
    loss = hsm_loss(model, table, x0, t, eps, amp)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip, foreach=True)
    opt.step()
    torch._foreach_lerp_(ema_params, params, 1.0 - cfg.ema_at(step))
    return loss.detach(), grad_norm


@dataclass
class _Run:
    """What a checkpoint holds: the network, its EMA, the optimizer, the generators, the step
    and the running loss window (summed on the device since ``window_start``)."""

    net: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    gens: dict
    loss_sum: Tensor
    step: int = 0
    window_start: int = 0


def _new_run(cfg: TrainConfig, ucfg: UNetConfig, dev: torch.device) -> _Run:
    """A seeded U-Net, its EMA copy, AdamW and the data/noise generators, at step 0."""
    torch.manual_seed(cfg.seed)
    net = UNet(ucfg).to(dev)
    ema = copy.deepcopy(net).requires_grad_(False).eval()
    opt = torch.optim.AdamW(list(net.parameters()), lr=cfg.lr_at(0), betas=cfg.betas,
                            weight_decay=cfg.weight_decay, fused=dev.type == "cuda")
    gens = {"data": torch.Generator(dev).manual_seed(cfg.seed + 1),
            "noise": torch.Generator(dev).manual_seed(cfg.seed + 2)}
    return _Run(net, ema, opt, gens, torch.zeros((), device=dev))


def _resume(run: _Run, state: Path, cfg: TrainConfig, dev: torch.device) -> bool:
    """Load the checkpoint at ``state`` into ``run`` (after checking that ``cfg`` matches the
    saved settings); False when there is none."""
    if not ck.state_exists(state):
        return False
    tensors, meta = ck.load_state(state)
    check_resumable(TrainConfig.from_json(meta["config"]), cfg, Path(str(state) + ".json"))
    run.net.load_state_dict(ck.subdict(tensors, "net."))
    run.ema.load_state_dict(ck.subdict(tensors, "ema."))
    ck.optimizer_load(run.opt, tensors, meta["optimizer"])
    ck.rng_restore(run.gens, tensors)
    run.step, run.window_start = meta["step"], meta["window_start"]
    run.loss_sum = tensors["loss_sum"].to(dev)
    return True


def _save(run: _Run, state: Path, model_paths: list, cfg: TrainConfig, model_cfg: dict, flags: dict) -> None:
    """The resumable checkpoint at ``state``, then the EMA network at each of ``model_paths``."""
    tensors = {**ck.prefixed(run.net.state_dict(), "net."), **ck.prefixed(run.ema.state_dict(), "ema."),
               **ck.rng_tensors(run.gens), "loss_sum": run.loss_sum}
    opt_tensors, opt_meta = ck.optimizer_tensors(run.opt)
    ck.save_state(state, {**tensors, **opt_tensors},
                  {"format": "cosi-train", "step": run.step, "window_start": run.window_start,
                   "config": cfg.to_json(), "optimizer": opt_meta, **flags})
    for path in model_paths:
        ck.save_model(path, run.ema, {**model_cfg, "steps": run.step})


def _progress_bar(cfg: TrainConfig, run: _Run, process: LinearProcess, progress: bool):
    from tqdm import tqdm

    return tqdm(total=cfg.steps, initial=run.step, desc=f"train {process.name}", unit="step",
                disable=not progress, mininterval=1.0 if sys.stderr.isatty() else 30.0, dynamic_ncols=True)


def _log_window(run: _Run, cfg: TrainConfig, grad_norm: Tensor, since: tuple[float, int], now: float,
                t_start: float) -> dict:
    """The log row of the window that ends at ``run.step`` (the loop's one host sync), and
    the window reset. ``since``: (perf_counter time, step) at the window's start."""
    mean_loss = run.loss_sum.item() / (run.step - run.window_start)
    sps = (run.step - since[1]) / (now - since[0])
    row = {"step": run.step, "loss": mean_loss, "lr": cfg.lr_at(run.step - 1),
           "grad_norm": grad_norm.item(), "steps_per_s": round(sps, 2),
           "time": round(time.monotonic() - t_start, 1)}
    run.loss_sum.zero_()
    run.window_start = run.step
    return row


def _read_steps_file(steps_file: Path | None, step: int) -> int | None:
    """The step target a running job was given in ``steps_file`` (never below ``step``)."""
    if steps_file is None or not Path(steps_file).is_file():
        return None
    return max(step, int(Path(steps_file).read_text().strip()))


def train(cfg: TrainConfig, out, *, save_every: int = 5000, log_every: int = 100,
          max_minutes: float | None = None, stop_at: int | None = None, device: str = "auto",
          compile: bool = False, channels_last: bool = False, deterministic: bool = False,
          progress: bool = True, export: Path | None = None, data: ImageData | None = None,
          steps_file: Path | None = None) -> dict:
    """Train (or resume) the ε-model of ``cfg`` in folder ``out``.

    Stops at ``cfg.steps``, at ``stop_at`` (an interruption for tests), after ``max_minutes``
    of wall time since the call, or on SIGTERM/SIGINT — always saving a checkpoint and the
    EMA model first. ``data`` overrides loading ``cfg.dataset``. ``steps_file``: a text file
    holding an integer, read at every log line while the run goes on; when present it replaces
    ``cfg.steps`` (so concurrent runs can be given one common step count once their speed is
    known). Returns a summary dict.
    Resuming is bit-exact on CPU; on CUDA only with ``deterministic`` (otherwise two
    uninterrupted runs already differ in the last bits after one step).
    """
    t_start = time.monotonic()
    if deterministic:
        set_deterministic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    process = cfg.make_process()
    data = (data if data is not None else load_dataset(cfg.dataset, cfg.data_dir, "train", **cfg.data_kwargs)).to(dev)
    ucfg = cfg.unet_config(process, data.shape)
    run = _new_run(cfg, ucfg, dev)
    sampler = BatchSampler(data, cfg.batch_size, cfg.flip, run.gens["data"])
    table = MarginalTable(process, dev, cfg.table_size)
    state = out / "checkpoint"
    if _resume(run, state, cfg, dev):
        print(f"resuming {out} at step {run.step}", file=sys.stderr)

    net, params, ema_params = run.net, list(run.net.parameters()), list(run.ema.parameters())
    if channels_last:
        net.to(memory_format=torch.channels_last)
        run.ema.to(memory_format=torch.channels_last)
    # On CUDA the loop is bound by the host's per-kernel launch cost (~1800 kernels a step in eager
    # mode); "reduce-overhead" replays the compiled forward/backward as CUDA graphs.
    model = torch.compile(net, mode="reduce-overhead" if dev.type == "cuda" else "default") if compile else net
    amp = torch.bfloat16 if (cfg.bf16 and dev.type == "cuda") else None
    C, H, W = data.shape
    eps_shape = (cfg.batch_size, process.k * C, H, W)
    end = min(cfg.steps, stop_at if stop_at is not None else cfg.steps)
    deadline = None if max_minutes is None else t_start + 60 * max_minutes
    log = open_log(out / "log.jsonl", run.step)
    model_cfg = ck.diffusion_config(process, ucfg, data.shape, dataset=data.name, steps=run.step,
                                    ema_decay=cfg.ema_decay, batch_size=cfg.batch_size)
    flags = {"device": str(dev), "compile": compile, "channels_last": channels_last,
             "deterministic": deterministic}
    model_paths = [out / "model"] + ([export] if export is not None else [])

    bar = _progress_bar(cfg, run, process, progress)
    if run.step == 0:
        print(f"{process!r}: U-Net with {count_parameters(net) / 1e6:.2f}M parameters on {dev}, data "
              f"{data.name} {tuple(data.images.shape)}", file=sys.stderr)
    since, stopped_by = (time.perf_counter(), run.step), "steps"
    grad_norm = torch.zeros((), device=dev)
    with _Stop() as stop:
        net.train()
        while run.step < end:
            if compile:
                torch.compiler.cudagraph_mark_step_begin()
            x0, t, eps = draw_batch(sampler, run.gens["noise"], process, eps_shape, channels_last)
            loss, grad_norm = optimizer_step(model, table, x0, t, eps, run.opt, params, ema_params, cfg,
                                             run.step, amp)
            run.step += 1
            run.loss_sum += loss
            bar.update(1)

            if run.step % log_every == 0:
                now = time.perf_counter()
                row = _log_window(run, cfg, grad_norm, since, now, t_start)
                log.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.4f}", it_s=f"{row['steps_per_s']:.1f}")
                since = (now, run.step)
                steps = _read_steps_file(steps_file, run.step)
                if steps is not None:
                    cfg.steps = bar.total = steps
                    end = min(cfg.steps, stop_at if stop_at is not None else cfg.steps)
            if run.step % save_every == 0 and run.step < end:
                _save(run, state, model_paths, cfg, model_cfg, flags)
            if deadline is not None and time.monotonic() > deadline:
                stopped_by = "time budget"
                break
            if stop.requested:
                stopped_by = "signal"
                break
    bar.close()
    _save(run, state, model_paths, cfg, model_cfg, flags)
    log.close()
    if run.step < cfg.steps:
        print(f"stopped at step {run.step} ({stopped_by}); run the same command again to resume", file=sys.stderr)
    return {"step": run.step, "finished": run.step >= cfg.steps, "stopped_by": stopped_by, "out": str(out),
            "seconds": time.monotonic() - t_start}

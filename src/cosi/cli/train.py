"""`cosi train` and `cosi train-classifier`: the training layer's command lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from .options import parse_key_values


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.replace(" ", "").split(",") if x]


def train_command(
    process: str = typer.Option("psld", "--process", "-p", help="vp, cld or psld"),
    param: List[str] = typer.Option(None, "--param", help="process parameter key=value (repeatable), e.g. beta=6"),
    data: str = typer.Option("fmnist", "--data", help="fmnist, cifar10, folder or synthetic"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="dataset folder (default: fmnist from "
                                            "/usr/share/datasets/fashion-mnist, or $COSI_DATA)"),
    out: Path = typer.Option(Path("out/train"), "--out", help="run folder: checkpoint, log, model"),
    steps: int = typer.Option(300_000, "--steps", help="total steps (a run may stop earlier and resume)"),
    batch_size: int = typer.Option(256, "--batch-size"),
    lr: float = typer.Option(2e-4, "--lr"),
    warmup: int = typer.Option(1000, "--warmup", help="linear learning-rate warm-up steps"),
    ema_decay: float = typer.Option(0.9995, "--ema-decay"),
    grad_clip: float = typer.Option(1.0, "--grad-clip"),
    dropout: float = typer.Option(0.1, "--dropout"),
    base_channels: int = typer.Option(64, "--base-channels"),
    channel_mult: str = typer.Option("1,2,2", "--channel-mult", help="per level, e.g. 1,2,2 (28->14->7)"),
    attn: str = typer.Option("7", "--attn", help="resolutions with self-attention, e.g. 7 or 16,8; '' for none"),
    num_res_blocks: int = typer.Option(2, "--num-res-blocks"),
    flip: bool = typer.Option(False, "--flip/--no-flip", help="random left-right flips"),
    seed: int = typer.Option(0, "--seed"),
    save_every: int = typer.Option(5000, "--save-every"),
    log_every: int = typer.Option(100, "--log-every"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="save and exit after this wall time"),
    device: str = typer.Option("auto", "--device"),
    bf16: bool = typer.Option(True, "--bf16/--no-bf16", help="bf16 autocast (CUDA only)"),
    compile: bool = typer.Option(False, "--compile/--no-compile",
                                 help="torch.compile the U-Net (CUDA graphs on GPU: ~3x the steps/s, ~75 s to compile)"),
    channels_last: bool = typer.Option(False, "--channels-last/--no-channels-last"),
    deterministic: bool = typer.Option(False, "--deterministic/--no-deterministic",
                                       help="deterministic CUDA kernels (bit-exact resume on GPU; slower)"),
    export: Optional[Path] = typer.Option(None, "--export", help="also write the EMA model to EXPORT.{safetensors,json}"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    steps_file: Optional[Path] = typer.Option(None, "--steps-file",
                                              help="file holding a step count that replaces --steps once it exists"),
) -> None:
    """Train an eps-model (HSM loss) for a VP, CLD or PSLD process; resumes from --out."""
    from ..training.train import TrainConfig, train

    cfg = TrainConfig(
        process=process, process_params=parse_key_values(param, '--param'), dataset=data,
        data_dir=None if data_dir is None else str(data_dir), steps=steps, batch_size=batch_size, lr=lr,
        warmup=warmup, grad_clip=grad_clip, ema_decay=ema_decay, flip=flip, seed=seed, bf16=bf16,
        unet={"base_channels": base_channels, "channel_mult": _ints(channel_mult), "attn_resolutions": _ints(attn),
              "num_res_blocks": num_res_blocks, "dropout": dropout})
    res = train(cfg, out, save_every=save_every, log_every=log_every, max_minutes=max_minutes, device=device,
                compile=compile, channels_last=channels_last, deterministic=deterministic, progress=progress,
                export=export, steps_file=steps_file)
    print(json.dumps(res))


def train_classifier_command(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Fashion-MNIST idx files (default: Debian's "
                                            "dataset-fashion-mnist, or $COSI_DATA)"),
    out: Path = typer.Option(Path("out/fmnist-classifier"), "--out", help="run folder: checkpoint and model"),
    epochs: int = typer.Option(20, "--epochs"),
    batch_size: int = typer.Option(256, "--batch-size"),
    lr: float = typer.Option(2e-3, "--lr"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device"),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="save and exit after this wall time"),
    export: Optional[Path] = typer.Option(None, "--export", help="also write the model to EXPORT.{safetensors,json}"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train the Fashion-MNIST classifier whose features the FD uses; resumes from --out."""
    import shutil

    from ..training.classifier import train_classifier

    res = train_classifier(data_dir, out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=device,
                           max_minutes=max_minutes, progress=progress)
    if export is not None and res.get("kind") == "classifier":
        export.parent.mkdir(parents=True, exist_ok=True)
        for ext in (".safetensors", ".json"):
            shutil.copyfile(Path(out) / f"model{ext}", str(export) + ext)

"""Training the Fashion-MNIST classifier of the FD metric (:mod:`cosi.models.classifier` is the network).

AdamW with cosine decay, label smoothing, random ±2 px shifts and left–right flips (``augment``), the
whole training set on the device; resumable per epoch and saved the safetensors + JSON way
(``checkpoint.save_model``).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.devices import pick_device
from ..models.classifier import FMNIST_CLASSES, Classifier, ClassifierConfig


def random_shift(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Translate each image by an independent integer offset in [−pad, pad]², filling with −1
    (the background of [−1, 1]-scaled images)."""
    B, C, H, W = x.shape
    xp = F.pad(x, (pad, pad, pad, pad), value=-1.0)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B, 1), generator=generator, device=x.device)
    rows = torch.arange(H, device=x.device)[None] + dy  # (B, H)
    cols = torch.arange(W, device=x.device)[None] + dx  # (B, W)
    b = torch.arange(B, device=x.device)[:, None, None]
    return xp[b, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


@torch.no_grad()
def accuracy(net: nn.Module, images_u8: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy on a uint8 image set."""
    from ..data import to_unit_range

    was = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=images_u8.device)
    for i in range(0, len(images_u8), batch_size):
        logits = net(to_unit_range(images_u8[i:i + batch_size]))
        correct += (logits.argmax(1) == labels[i:i + batch_size]).sum()
    net.train(was)
    return correct.item() / len(images_u8)


def _cosine_lr(lr: float, step: int, total: int) -> float:
    return lr * 0.5 * (1 + math.cos(math.pi * step / total))


def train_epoch(net: nn.Module, opt: torch.optim.Optimizer, data, gen: torch.Generator, epoch: int, *,
                batch_size: int, lr: float, epochs: int, augment: bool, label_smoothing: float) -> float:
    """One pass over ``data`` in a random order (cosine-decayed lr, optional shift/flip
    augmentation); returns the mean cross-entropy (one host sync, at the end)."""
    from ..data import random_flip, to_unit_range

    steps_per_epoch = math.ceil(len(data) / batch_size)
    net.train()
    perm = torch.randperm(len(data), generator=gen, device=gen.device)
    loss_sum = torch.zeros((), device=gen.device)
    for i in range(steps_per_epoch):
        for g in opt.param_groups:
            g["lr"] = _cosine_lr(lr, epoch * steps_per_epoch + i, epochs * steps_per_epoch)
        idx = perm[i * batch_size:(i + 1) * batch_size]
        x = to_unit_range(data.images[idx])
        if augment:
            x = random_shift(random_flip(x, gen), 2, gen)
        loss = F.cross_entropy(net(x), data.labels[idx], label_smoothing=label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach()
    return loss_sum.item() / steps_per_epoch


def _resume_classifier(state_path: Path, net: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                       settings: dict) -> tuple[int, float | None]:
    """Load the per-epoch checkpoint, if any: (epochs done, test accuracy after the last)."""
    from ..models import checkpoint as ck

    if not ck.state_exists(state_path):
        return 0, None
    tensors, meta = ck.load_state(state_path, device=gen.device)
    if meta.get("settings") != settings:
        raise ck.CheckpointError(f"{state_path}.json was written with settings {meta.get('settings')}, "
                                 f"not {settings}; use another --out or the same settings")
    net.load_state_dict(ck.subdict(tensors, "net."))
    ck.optimizer_load(opt, tensors, meta["optimizer"])
    ck.rng_restore({"data": gen}, tensors)
    return meta["epoch"], meta.get("test_accuracy")


def _save_epoch(state_path: Path, net: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                settings: dict, epoch: int, acc: float) -> None:
    from ..models import checkpoint as ck

    tensors = {**ck.prefixed(net.state_dict(), "net."), **ck.rng_tensors({"data": gen})}
    opt_tensors, opt_meta = ck.optimizer_tensors(opt)
    ck.save_state(state_path, {**tensors, **opt_tensors},
                  {"epoch": epoch, "settings": settings, "optimizer": opt_meta, "test_accuracy": acc})


def _classifier_model_config(cfg: ClassifierConfig, dataset_name: str, acc: float, epochs: int) -> dict:
    """The JSON config of the trained classifier (``checkpoint.save_model``)."""
    return {"kind": "classifier", "classifier": cfg.to_dict(), "data_shape": [cfg.in_channels, cfg.image_size,
            cfg.image_size], "dataset": dataset_name.rsplit("-", 1)[0], "classes": list(FMNIST_CLASSES),
            "test_accuracy": acc, "epochs": epochs, "input_range": [-1.0, 1.0]}


def train_classifier(data_dir=None, out="out/fmnist-classifier", *, epochs: int = 20, batch_size: int = 256,
                     lr: float = 2e-3, weight_decay: float = 5e-4, label_smoothing: float = 0.1,
                     augment: bool = True, seed: int = 0, device: str = "auto", max_minutes: float | None = None,
                     cfg: ClassifierConfig = ClassifierConfig(), train_data=None, test_data=None,
                     progress: bool = True) -> dict:
    """Train the classifier, resuming from ``out/checkpoint.*`` if present.

    Writes ``out/model.{safetensors,json}`` (fp16 weights; the JSON holds the config and the
    test accuracy) when training is complete; returns that JSON's dict. ``train_data`` /
    ``test_data`` (ImageData) override reading Fashion-MNIST from ``data_dir``.
    """
    from tqdm import tqdm

    from ..data import load_fashion_mnist
    from ..models import checkpoint as ck

    t_start = time.monotonic()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    train_data = (train_data or load_fashion_mnist(data_dir, "train")).to(dev)
    test_data = (test_data or load_fashion_mnist(data_dir, "test")).to(dev)
    torch.manual_seed(seed)
    net = Classifier(cfg).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)
    settings = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
                "label_smoothing": label_smoothing, "augment": augment, "seed": seed, "config": cfg.to_dict()}
    state_path = out / "checkpoint"
    epoch, acc = _resume_classifier(state_path, net, opt, gen, settings)
    if epoch >= epochs and (out / "model.json").is_file():
        print(f"classifier in {out} already trained for {epoch} epochs; nothing to do")
        return ck.load_json(out / "model.json")

    bar = tqdm(total=epochs, initial=epoch, desc="classifier", unit="epoch", disable=not progress)
    while epoch < epochs:
        mean_loss = train_epoch(net, opt, train_data, gen, epoch, batch_size=batch_size, lr=lr, epochs=epochs,
                                augment=augment, label_smoothing=label_smoothing)
        epoch += 1
        acc = accuracy(net, test_data.images, test_data.labels)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", test_acc=f"{acc:.4f}")
        if not progress:
            print(f"epoch {epoch}/{epochs}: train loss {mean_loss:.4f}, test accuracy {acc:.4f}", flush=True)
        _save_epoch(state_path, net, opt, gen, settings, epoch, acc)
        if max_minutes is not None and epoch < epochs and (time.monotonic() - t_start) > 60 * max_minutes:
            print(f"time budget of {max_minutes} min reached after epoch {epoch}; run again to resume")
            break
    bar.close()
    if epoch < epochs:
        return {"epoch": epoch, "finished": False}
    ck.save_model(out / "model", net, _classifier_model_config(cfg, train_data.name, acc, epochs))
    print(f"classifier: test accuracy {acc:.4f} after {epochs} epochs; saved {out / 'model'}.safetensors")
    return ck.load_json(out / "model.json")

"""Figures for docs/models.md from a training run and the shipped weights (CPU is enough).

    python benchmarks/models_report.py [--logs DIR]   # DIR/{psld,vp}_log.jsonl (default: the committed run)

Writes docs/figures/loss_fmnist.png (loss and steps/s of both trainings) and
docs/figures/samples_fmnist-{psld,vp}.png (64 samples of each shipped model: csps-d at 50 NFE
for PSLD, ddim at 50 NFE for VP, seed 0), and prints a summary of the logs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import cosi
from cosi.models.checkpoint import load
from cosi.evaluation.viz import save_image_grid

ROOT = Path(__file__).resolve().parents[1]
FIG = ROOT / "docs" / "figures"
SAMPLERS = {"fmnist-psld": ("csps-d", 50), "fmnist-vp": ("ddim", 50)}


def read_log(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def loss_figure(logs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, rows in logs.items():
        steps = [r["step"] for r in rows]
        a.plot(steps, [r["loss"] for r in rows], label=name)
        b.plot(steps, [r.get("steps_per_s", float("nan")) for r in rows], label=name)
    a.set(xlabel="step", ylabel="HSM ε-loss (mean over a log window)", yscale="log", title="training loss")
    b.set(xlabel="step", ylabel="steps/s", title="throughput (the two trainers share one GPU)")
    a.legend(), b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--logs", type=Path, default=ROOT / "benchmarks" / "results" / "fmnist-train",
                    help="folder holding psld_log.jsonl and vp_log.jsonl (copied from a train_fmnist.sh run)")
    ap.add_argument("--n", type=int, default=64)
    args = ap.parse_args()
    FIG.mkdir(parents=True, exist_ok=True)
    if args.logs:
        logs = {m: read_log(args.logs / f"{m}_log.jsonl") for m in ("psld", "vp")}
        loss_figure(logs, FIG / "loss_fmnist.png")
        for m, rows in logs.items():
            last = rows[-1]
            rate = sorted(r["steps_per_s"] for r in rows if "steps_per_s" in r)
            print(f"{m}: {last['step']} steps, last loss {last['loss']:.4f}, median {rate[len(rate) // 2]:.1f} steps/s")
    for name, (sampler, nfe) in SAMPLERS.items():
        model = load(name)
        g = torch.Generator().manual_seed(0)
        r = cosi.sample(model.eps_model, model.process, sampler, nfe, shape=(args.n, *model.data_shape), generator=g)
        save_image_grid(r.x, FIG / f"samples_{name}.png", scale=2)
        print(f"{name}: {sampler} at {nfe} NFE -> {FIG / f'samples_{name}.png'}")


if __name__ == "__main__":
    main()

"""FD of the shipped Fashion-MNIST models (GPU): the 1000-step references, then a few samplers.

    python benchmarks/fmnist_fd.py --data-dir FMNIST --out results.jsonl [--weights DIR] [--minutes 6]

DIR holds fmnist-{psld,vp,classifier}.{safetensors,json} (default: the shipped ones). FD is
taken in the classifier's 256-d penultimate features, n samples (default 10k) against the
10k test images; the data's own floor is the FD of 10k random training images against the
same test set (two disjoint draws). The cells run through `cosi.evaluation.sweep.run_sweep`: one JSON
line each, cells already in --out are skipped, --minutes stops starting new cells after that
wall time. With --samples DIR the first 64 samples of each cell go to DIR/<cell>.npz.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cosi.data import load_fashion_mnist
from cosi.evaluation.generate import sample_range
from cosi.evaluation.metrics import ClassifierFeatures, fd
from cosi.models.checkpoint import WEIGHTS_DIR, load
from cosi.evaluation.sweep import make_cells, run_sweep

REFERENCE = {m: make_cells(["euler", "em"], [1000]) for m in ("fmnist-psld", "fmnist-vp")}
EXTRA = {"fmnist-psld": make_cells(["csps-d", "csps-s", "euler", "em", "sscs"], [20, 50, 100]),
         "fmnist-vp": make_cells(["ddim", "euler", "em"], [20, 50, 100])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=2500)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--extra", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--samples", type=Path, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the U-Nets")
    ap.add_argument("--graph", action="store_true", help="capture each sampler as one CUDA graph")
    args = ap.parse_args()
    t_start = time.monotonic()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True

    feats = ClassifierFeatures(load(args.weights / "fmnist-classifier", device=dev), dev)
    test = load_fashion_mnist(args.data_dir, "test").images
    train = load_fashion_mnist(args.data_dir, "train").images
    ref = feats.image_stats(test)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    floors = [fd(feats.image_stats(train[perm[i * len(test):(i + 1) * len(test)]]), ref) for i in range(2)]
    hw = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"data floor (10k train vs 10k test): {floors[0]:.3f}, {floors[1]:.3f} on {hw}", flush=True)
    extra = {"data_fd_floor": floors, "device": hw, "dtype": str(dtype).removeprefix("torch."),
             "compiled": args.compile, "graph": args.graph}

    for stage in [REFERENCE] + ([EXTRA] if args.extra else []):
        for name, cells in stage.items():
            left = None if args.minutes is None else args.minutes - (time.monotonic() - t_start) / 60
            if left is not None and left <= 0:
                print("time budget reached; run again to continue", flush=True)
                return
            model = load(args.weights / name, device=dev, dtype=dtype)
            if args.compile:
                model.compile("default" if args.graph else None)
            rows = run_sweep(model, name, feats, ref, cells, args.out, n=args.n, batch_size=args.batch_size,
                             minutes=left, extra=extra, graph=args.graph, log=lambda s: print(s, flush=True))
            if args.samples:
                args.samples.mkdir(parents=True, exist_ok=True)
                for r in rows:
                    if "fd" in r:
                        x = sample_range(model, r["sampler"], r["nfe"], 0, 64, seed=r["seed"])
                        np.savez_compressed(args.samples / f"{name}_{r['sampler']}_{r['nfe']}.npz",
                                            x=x.half().cpu().numpy())


if __name__ == "__main__":
    main()

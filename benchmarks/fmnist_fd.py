"""FD of the shipped Fashion-MNIST models (GPU): the 1000-step references, then a few samplers.

    python benchmarks/fmnist_fd.py --weights DIR --data-dir FMNIST --out results.jsonl [--minutes 6]

DIR holds fmnist-{psld,vp,classifier}.{safetensors,json} (default: the shipped ones). FD is
taken in the classifier's 256-d penultimate features, n samples (default 10k) against the
10k test images; the data's own floor is the FD of 10k random training images against the
same test set (two disjoint draws). One JSON line per cell; cells already in --out are
skipped, so an interrupted run continues. --minutes stops starting new cells after that
wall time. With --samples DIR the first 64 samples of each cell go to DIR/<cell>.npz.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cosi.data import load_fashion_mnist
from cosi.evaluate import model_fd
from cosi.metrics import ClassifierFeatures, fd
from cosi.models.checkpoint import WEIGHTS_DIR, load

REFERENCE = [(m, s, 1000, {}) for m in ("fmnist-psld", "fmnist-vp") for s in ("euler", "em")]
EXTRA = ([("fmnist-psld", s, k, {}) for k in (20, 50, 100) for s in ("csps-d", "csps-s", "euler", "em", "sscs")]
         + [("fmnist-vp", s, k, {}) for k in (20, 50, 100) for s in ("ddim", "euler", "em")])


def cell_key(model: str, sampler: str, nfe: int, opts: dict, n: int, seed: int) -> str:
    return json.dumps([model, sampler, nfe, opts, n, seed], sort_keys=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=WEIGHTS_DIR)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--extra", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--samples", type=Path, default=None)
    ap.add_argument("--compile", action="store_true", help="torch.compile the U-Nets (CUDA graphs)")
    args = ap.parse_args()
    t_start = time.monotonic()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True

    done = set()
    if args.out.is_file():
        done = {json.loads(line)["key"] for line in args.out.read_text().splitlines() if line.strip()}
    feats = ClassifierFeatures(load(args.weights / "fmnist-classifier", device=dev), dev)
    test = load_fashion_mnist(args.data_dir, "test").images
    train = load_fashion_mnist(args.data_dir, "train").images
    ref = feats.image_stats(test)
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    floors = [fd(feats.image_stats(train[perm[i * len(test):(i + 1) * len(test)]]), ref) for i in range(2)]
    hw = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    print(f"data floor (10k train vs 10k test): {floors[0]:.3f}, {floors[1]:.3f} on {hw}", flush=True)

    models = {}
    cells = REFERENCE + (EXTRA if args.extra else [])
    with args.out.open("a") as f:
        for name, sampler, nfe, opts in cells:
            key = cell_key(name, sampler, nfe, opts, args.n, args.seed)
            if key in done:
                continue
            if args.minutes is not None and time.monotonic() - t_start > 60 * args.minutes:
                print("time budget reached; run again to continue", flush=True)
                break
            if name not in models:
                models[name] = load(args.weights / name, device=dev, dtype=dtype)
                if args.compile:
                    models[name].compile()
            r = model_fd(models[name], feats, ref, sampler, nfe, args.n, args.batch_size, seed=args.seed,
                         keep=64 if args.samples else 0, **opts)
            if args.samples:
                args.samples.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(args.samples / f"{name}_{sampler}_{nfe}.npz",
                                    x=r.pop("samples").half().numpy())
            row = {"key": key, "model": name, **r, "data_fd_floor": floors, "device": hw,
                   "dtype": str(dtype).removeprefix("torch."), "compiled": args.compile}
            f.write(json.dumps(row) + "\n")
            f.flush()
            print(f"{name} {sampler} nfe={nfe}: FD {r['fd']:.3f} ({r['images_per_s']:.0f} img/s)", flush=True)


if __name__ == "__main__":
    main()

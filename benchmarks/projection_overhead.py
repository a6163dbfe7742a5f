"""The cost of the consistency projection of ε in the whole-sampler CUDA graph (issue 19).

For each ε-form sampler on fmnist-psld: `cosi bench speed`'s measurement (sampler time over the time of the same
NFE bare network calls, both as one CUDA graph) with the projection on and off, the two runs alternating so
that the clock's drift hits both alike. bf16 network, float32 state, as the FD study runs.

    python benchmarks/projection_overhead.py --out benchmarks/results/projection_overhead.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cosi.evaluation.benchmark import speed
from cosi.models.checkpoint import load

SAMPLERS = ["csps-d", "euler", "lambda-ddim-2", "rvv", "csps-s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/projection_overhead.jsonl"))
    ap.add_argument("--nfe", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    model = load("fmnist-psld", device="cuda" if cuda else "cpu", dtype=torch.bfloat16 if cuda else torch.float32)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for s in SAMPLERS:
        for r in range(args.rounds):
            for project in (True, False):
                row = speed(model, s, args.nfe, args.batch_size, repeats=5, graph=cuda, project=project,
                            allow_unstable=True)
                row = {"round": r, "project": project, **{k: v for k, v in row.items() if "memory" not in k}}
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{s} project={project} round {r}: ratio {row['ratio']:.4f}", flush=True)


if __name__ == "__main__":
    main()

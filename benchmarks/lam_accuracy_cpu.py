"""λ of csps-d by the accuracy proxy on fmnist-psld (issue 19, point 5), on the CPU: lam="auto"'s default objective
(16 probe draws against gddim-2m at max(500, 4·NFE) calls), at the NFEs of the λ table in docs/benchmarks.md.

    PYTHONPATH=src python benchmarks/lam_accuracy_cpu.py [--nfe 10 --nfe 20 ...] [--out FILE.jsonl]

One JSON line per NFE: the λ chosen, the proxy at every λ tried, the calls and seconds. The FD at that λ is a GPU
measurement (study.py --stage lam); this script says where the proxy lands beside λ by FD."""

from __future__ import annotations

import argparse
import json
import time

import torch

from cosi.evaluation.autolam import choose_lambda
from cosi.models.checkpoint import load


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fmnist-psld")
    ap.add_argument("--sampler", default="csps-d")
    ap.add_argument("--nfe", type=int, action="append")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    m = load(args.model, device="cpu")
    for nfe in args.nfe or [10, 20, 50, 100]:
        t0 = time.perf_counter()
        r = choose_lambda(m.eps_model, m.process, args.sampler, nfe, m.data_shape, device="cpu")
        row = {"model": args.model, "sampler": args.sampler, "nfe": nfe, "lam": r["lam"],
               "proxy": sorted((float(k), v) for k, v in r["proxy"].items()), "calls": r["calls"], "probe": r["probe"],
               "reference": r["reference"], "seconds": round(time.perf_counter() - t0, 1), "device": "cpu",
               "torch": torch.__version__}
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

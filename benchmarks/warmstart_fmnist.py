"""The Gaussian warm start on a shipped model: statistics of the training images, t_skip chosen on a probe, then
accuracy on held-out draws beside the same sampler from T (issue 21).

    python benchmarks/warmstart_fmnist.py --model fmnist-vp --data-dir .data/fmnist            # a GPU: full size
    python benchmarks/warmstart_fmnist.py --model fmnist-vp --probe 16 --n 32 --ref gddim-3m-c@100 --nfe 5  # CPU

The statistics (mean and full covariance of the 60k training images, float64) take one pass over the data; their
cost is printed. Held-out draws: prior_draws seed 0 (the accuracy stage's), against --ref from the same draws.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import cosi
import cosi.evaluation.warmstart as ws
from cosi.data import load_fashion_mnist
from cosi.evaluation.accuracy import Reference, errors, prior_draws, reference_solution


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="fmnist-vp")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--sampler", action="append")
    ap.add_argument("--nfe", type=int, action="append")
    ap.add_argument("--probe", type=int, default=ws.PROBE)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--ref", default="gddim-2m@2000")
    ap.add_argument("--out", default=None, help="append JSON rows here")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # as the accuracy stage
    m = cosi.load_model(args.model, device=dev)
    t0 = time.perf_counter()
    x = load_fashion_mnist(args.data_dir, "train").images
    x = (x.float() / 127.5 - 1) if x.dtype == torch.uint8 else x.float()
    stats = ws.GaussianStats.from_data(x)
    stats_s = time.perf_counter() - t0
    print(f"statistics of {len(x)} images: {stats_s:.1f} s", flush=True)
    ws.PROBE = args.probe
    ref = Reference.parse(args.ref)
    if args.probe != 64:  # a small probe judges against the same reference as the held-out draws
        ws.reference = lambda process, nfe: (ref.sampler, ref.nfe)
    z = prior_draws(m.process, m.data_shape, args.n, 0, m.device)
    x_ref = reference_solution(m.eps_model, m.process, m.data_shape, args.n, 0, ref, device=m.device,
                               self_check=False, batch_size=256)["x"]
    for s in args.sampler or ["gddim-2m"]:
        for nfe in args.nfe or [5, 10]:
            base = errors(torch.cat([cosi.sample(m.eps_model, m.process, s, nfe, z_T=b).x for b in z.split(256)]),
                          x_ref)
            rec = ws.choose_skip(m.eps_model, m.process, s, nfe, stats, device=m.device)
            warm = errors(torch.cat([ws.sample_from_skip(m.eps_model, m.process, s, nfe, b, stats, rec["v"]).x
                                     for b in z.split(256)]), x_ref)
            row = {"model": args.model, "sampler": s, "nfe": nfe, "n": args.n, "reference": str(ref),
                   "probe": args.probe, "v": rec["v"], "t_skip": rec["t_skip"], "proxy": rec["proxy"],
                   "from_T": base, "warm": warm, "choose_calls": rec["calls"], "choose_seconds": rec["seconds"],
                   "stats_seconds": round(stats_s, 1), "device": torch.cuda.get_device_name() if dev == "cuda" else "cpu"}
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

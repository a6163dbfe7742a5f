"""The low-NFE frontier on the exact-score oracle (issue 21): endpoint error against the reference
probability-flow solution from the same prior states, for cosi's multistep samplers and every peer
setting (evaluation.peers.PEER_SETTINGS), at NFE 5, 8, 10.

    PYTHONPATH=src python benchmarks/frontier_oracle.py [--process vp] [--nfes 5,8,10]

Prints a markdown table: median over 64 states of the per-state RMS error (the oracle_benchmark
mixture, d = 32), float64, CPU. Peers run on VP only."""

from __future__ import annotations

import argparse

import torch

import cosi
from cosi.evaluation.evaluate import oracle_setup
from cosi.evaluation.peers import PEER_SETTINGS

OURS = [(s, {"grid": g}) for s in ("gddim-2m", "gddim-3m", "gddim-2m-c", "gddim-3m-c")
        for g in ("quadratic", "logsnr")] + [("gddim-3m", {"lower_order_final": True})]


def error(process, sampler, nfe, options):
    gmm, z_T, ref = oracle_setup(process)
    z = cosi.sample(gmm.eps_model(process), process, sampler, nfe, z_T=z_T, **options).z
    return float(((z - ref) ** 2).flatten(1).mean(1).sqrt().median())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--process", default="vp")
    ap.add_argument("--nfes", default="5,8,10")
    args = ap.parse_args()
    process = cosi.make_process(args.process)
    nfes = [int(n) for n in args.nfes.split(",")]
    rows = OURS + (PEER_SETTINGS if process.name == "vp" else [])
    print(f"{process.name} oracle, median endpoint RMS error\n")
    print("| sampler | options | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|---|" + "---:|" * len(nfes))
    for sampler, options in rows:
        errs = []
        for n in nfes:
            try:
                errs.append(f"{error(process, sampler, n, options):.4f}")
            except Exception as e:  # a setting a scheduler refuses at this NFE: say so in the table
                errs.append(f"fails ({type(e).__name__})")
        opts = ", ".join(f"{k}={v}" for k, v in options.items()) or "default"
        print(f"| {sampler} | {opts} | " + " | ".join(errs) + " |", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()

"""Oracle tables: endpoint error (deterministic samplers) and MMD with its floor (all) vs NFE
on the exact-score oracles (vector Gaussian mixture, d = 32, 8 components).

    python benchmarks/oracle_tables.py core      # issue 2: VP and PSLD, NFE 10..200, best lambda
    python benchmarks/oracle_tables.py splitting # issue 3: every preset on PSLD and CLD, NFE 20..200
    python benchmarks/oracle_tables.py splitting csps-s ...  # recompute only these samplers' rows
    python benchmarks/oracle_tables.py gddim     # the data-prediction samplers on VP, CLD and PSLD, NFE 10..200

Writes benchmarks/results/oracle_<table>.jsonl (one JSON line per cell) and prints markdown.
The endpoint error is the median over 64 trajectories of the per-trajectory RMS distance to
the reference ODE solution from the same exact sample at T (DOP853, rtol = atol = 1e-10);
MMD and the Fréchet distance (FD, Gaussian fits in data space) use 1000 samples started
from exact samples at T, against exact samples of x at t_min; each floor is the same
distance between two independent exact sets of that size.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from cosi.evaluation.evaluate import oracle_benchmark
import cosi
from cosi.core.integrators import PHASE_SPACE, SAMPLERS

RESULTS = Path(__file__).parent / "results"
LAMS = (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)


def cell(process, sampler, nfe, **opts):
    return oracle_benchmark(process, sampler, cosi.nearest_nfe(sampler, nfe, process), allow_unstable=True, **opts)


def fmt_err(r):
    return "—" if r is None or "endpoint_error_median" not in r else f"{r['endpoint_error_median']:.2e}"


def fmt_mmd(r):
    return "—" if r is None else f"{r['mmd']:.3f}"


def fmt_fd(r):
    return "—" if r is None else f"{r['fd']:.3f}"


def table(rows, nfes, key, title):
    print(f"\n**{title}**\n")
    print("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|" + "---|" * len(nfes))
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(key(c) for c in cells) + " |")


def distribution_tables(process, rows, nfes, fd=False) -> list[dict]:
    """Print the endpoint-error table of the deterministic rows and the MMD (and FD) table of all;
    returns the cells."""
    det = {k: v for k, v in rows.items() if not SAMPLERS[k].stochastic}
    table(det, nfes, fmt_err, f"{process}: median endpoint error vs NFE (deterministic)")
    ref = next(c for c in rows["euler"] if c)
    table(rows, nfes, fmt_mmd, f"{process}: MMD vs NFE (floor {ref['mmd_floor']:.3f}, 1000 samples)")
    if fd:
        table(rows, nfes, fmt_fd, f"{process}: Fréchet distance in data space vs NFE (floor "
                                  f"{ref['fd_floor']:.3f}, 1000 samples)")
    return [c for cells in rows.values() for c in cells if c]


def core():
    nfes = (10, 20, 50, 100, 200)
    out = []
    for process in ("vp", "psld"):
        rows = {}
        for sampler in ("euler", "conjugate", "lambda-ddim-1", "lambda-ddim-2"):
            if sampler.startswith("lambda"):
                best = []
                for n in nfes:  # the best lambda of the grid LAMS at each NFE
                    cands = [cell(process, sampler, n, lam=lam, n_dist=200) for lam in LAMS]
                    lam = min(zip(cands, LAMS), key=lambda c: c[0]["endpoint_error_median"])[1]
                    best.append(cell(process, sampler, n, lam=lam))
                rows[sampler + " (best λ)"] = best
            else:
                rows[sampler] = [cell(process, sampler, n) for n in nfes]
        for name, cells in rows.items():
            out += [c for c in cells if c]
        table(rows, nfes, fmt_err, f"{process}: median endpoint error vs NFE (default grids)")
        lam_row = {k: [f"λ={c['lam']:g}" for c in v] for k, v in rows.items() if "best" in k}
        for k, v in lam_row.items():
            print(f"| {k}: chosen λ | " + " | ".join(v) + " |")
    return out


def splitting(only=()):
    """Every preset's cells; with ``only``, recompute just those samplers and keep the other rows
    of the committed file."""
    nfes = (20, 50, 100, 200)
    out = []
    names = ["euler", "em", "conjugate"] + [n for n, s in SAMPLERS.items() if s.requires is PHASE_SPACE]
    old = [json.loads(x) for x in (RESULTS / "oracle_splitting.jsonl").read_text().splitlines()] if only else []
    for process in ("psld", "cld"):
        kept = {(r["sampler"], r["nfe"]): r for r in old if r["process"] == process and r["sampler"] not in only}
        rows = {name: [kept.get((name, cosi.nearest_nfe(name, n, process))) if only and name not in only
                       else cell(process, name, n) for n in nfes] for name in names}
        out += distribution_tables(process, rows, nfes, fd=True)
    return out


def gddim():
    """gddim, gddim-s and gddim-2m beside euler, em and the exponential integrator (conjugate B = 0)."""
    nfes = (10, 20, 50, 100, 200)
    out = []
    for process in ("vp", "cld", "psld"):
        rows = {name: [cell(process, name, n) for n in nfes]
                for name in ("euler", "em", "conjugate", "gddim", "gddim-2m", "gddim-s")}
        out += distribution_tables(process, rows, nfes)
    return out


if __name__ == "__main__":
    torch.set_num_threads(2)
    which = sys.argv[1] if len(sys.argv) > 1 else "core"
    t0 = time.time()
    rows = {"core": core, "gddim": gddim}[which]() if which != "splitting" else splitting(tuple(sys.argv[2:]))
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"oracle_{which}.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    print(f"\n({len(rows)} cells in {time.time() - t0:.0f} s on this CPU)")

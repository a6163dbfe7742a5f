"""Stochastic samplers on the PSLD oracle, scored by the unbiased MMD² to the exact marginal.

    python benchmarks/oracle_mmd_exact.py [--n 16000] [--seeds 2] [--json FILE]   # ~35 min, 2-core CPU
    python benchmarks/oracle_mmd_exact.py --eta-scan --n 8000 --seeds 1            # csps-s at NFE 50 vs η
    python benchmarks/oracle_mmd_exact.py --cell gddim-s:50 --cell 'csps-s:50:{"eta": 0.5}'   # any cells
    python benchmarks/oracle_mmd_exact.py --narrow --cell em:50 ...   # a near-point-mass mixture instead

`cosi.evaluation.distances.mmd2_to_mixture` integrates the sample–data and data–data kernel terms exactly
(the target is the mixture of x at t_min itself), so no reference sample adds noise: the only
noise is the U-statistic's, shown as ± one standard error, and the spread over seeds. Two kernel
families: the oracle tables' wide one (`MMD_BANDWIDTHS`) and a fine one (`MMD_FINE_BANDWIDTHS`,
as narrow as the mixture's components), which separates samplers that the wide one leaves at its
floor. Vector mixture d = 32 (GaussianMixture.random(d=32, seed=0)), each sampler's default grid,
starting from exact samples at T; each seed draws other samples at T and other noise.
"""

import argparse
import json
import time

import torch

import cosi
from cosi.evaluation.distances import MMD_BANDWIDTHS, MMD_FINE_BANDWIDTHS, mmd2_to_mixture
from cosi.evaluation.oracle import GaussianMixture

CELLS = [("em", 50, {}), ("em", 100, {}), ("em", 200, {}), ("sps-s", 50, {}), ("csps-s", 50, {}),
         ("csps-s", 50, {"lam": -3.0}), ("csps-s", 50, {"lam": 1.0}), ("csps-s", 100, {})]

NARROW = (0.005, 0.025)
ETA_SCAN = [("csps-s", 50, {"eta": eta}) for eta in (0.5, 1.0, 1.5, 2.0)]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--json", default=None, help="also append one JSON line per run to this file")
    ap.add_argument("--eta-scan", action="store_true", help="csps-s at NFE 50 for η in 0.5 ... 2 instead")
    ap.add_argument("--cell", action="append", default=[], help="SAMPLER:NFE[:JSON options] instead (repeatable)")
    ap.add_argument("--narrow", action="store_true",
                    help=f"components of std {NARROW[0]}–{NARROW[1]} (like data on a thin set: a stiff score near "
                         f"t_min) instead of 0.05–0.25; the fine kernels then scale down by the same factor")
    args = ap.parse_args()
    cells = [(c.split(":", 2)[0], int(c.split(":", 2)[1]), json.loads(c.split(":", 2)[2]) if c.count(":") > 1 else {})
             for c in args.cell] or (ETA_SCAN if args.eta_scan else CELLS)
    torch.set_num_threads(2)
    p = cosi.make_process("psld")
    gmm = GaussianMixture.random(d=32, seed=0, **({"std_range": NARROW} if args.narrow else {}))
    fine_bw = tuple(h * NARROW[0] / 0.05 for h in MMD_FINE_BANDWIDTHS) if args.narrow else MMD_FINE_BANDWIDTHS
    eps = gmm.eps_model(p)
    target = gmm.marginal_mixture(p, p.t_min)
    print(f"PSLD oracle, d = 32, component std {'%g–%g' % NARROW if args.narrow else '0.05–0.25'}, {args.n} samples; "
          f"MMD² ± standard error, one column per seed; fine kernels {fine_bw}\n")
    print("| sampler | NFE | options | fine kernels | wide kernels |\n|---|---|---|---|---|")
    for sampler, nfe, opts in cells:
        fine, wide = [], []
        t0 = time.time()
        for seed in range(args.seeds):
            g = torch.Generator().manual_seed(100 + seed)
            z0 = gmm.sample_state(p, p.T, args.n, g)
            x = cosi.sample(eps, p, sampler, nfe, z_T=z0, generator=g, allow_unstable=True, **opts).x
            fine.append(mmd2_to_mixture(x, target, fine_bw))
            wide.append(mmd2_to_mixture(x, target, MMD_BANDWIDTHS))
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"sampler": sampler, "nfe": nfe, "options": opts, "n": args.n, "seed": seed,
                                        **({"std_range": NARROW} if args.narrow else {}),
                                        "mmd2_fine": fine[-1], "mmd2_wide": wide[-1]}) + "\n")
        cell = lambda rs: ", ".join(f"{m:.2e} ± {s:.0e}" for m, s in rs)  # noqa: E731
        print(f"| {sampler} | {nfe} | {opts or 'default'} | {cell(fine)} | {cell(wide)} |  ({time.time() - t0:.0f} s)",
              flush=True)

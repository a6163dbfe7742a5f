"""The GPU study of issues 4 and 8, in priority order, resumable across device sessions.

    python benchmarks/study.py --out benchmarks/results/study --minutes 20 [--n 10000] [--stage NAME ...]

Stages (each appends JSON lines to OUT/<stage>.jsonl and skips what is already there, so the
same command continues in the next session where this one stopped):

  network    bare-call throughput of the U-Net at the FD stages' batch size for each layout (NCHW,
             channels-last) × compilation (none, torch.compile 'default'); the FD stages then run the
             fastest measured configuration (--network auto)
  speed      `cosi bench speed` for every sampler: NFE 20 and 50, batch 64 and 256, whole-sampler CUDA
             graphs first, then the other modes (eager; graph with a compiled network; compiled network)
  psld       FD vs NFE {10, 20, 50, 100, 200} for every PSLD sampler (the paper's Table 2 and more)
  vp         the same for every VP sampler, DPM-Solver++ and UniPC included
  lam        FD vs λ (−6 … 4) for lambda-ddim-2 / csps-d (PSLD) and lambda-ddim-1 (VP), plus lam=auto
             (by the FD of 2000 samples to the train split), and a fine λ grid (steps of 0.25 on PSLD,
             0.125 on VP) around the optimum: the check of lam=auto
  tune       the stochastic splitting samplers on the learned PSLD model: η × what O integrates (o_part),
             and noise on the momentum only (eta_x = 0), at NFE 20, 50, 100 (the evidence for csps-s's defaults)
  seeds      a second seed for the rows of psld and vp at NFE 20 and 50 (the FD's sampling noise)
  final      50k samples for the final row (NFE 200) of the best sampler on each model
  accuracy   issue 19: RMSE of the data block against gddim-2m@2000 from the same 256 prior draws
             (cosi.evaluation.accuracy) for every deterministic sampler on both models at NFE 5, 10, 20, 50,
             100, 2000 (the nearest NFE each meets), the consistency projection of ε off and on (PSLD;
             on VP, k = 1, measured once); float32 network (torch.compile on a GPU), TF32 off; NFE <= 100
             first, then 2000
  project    issue 19: FD rows of every ε-form sampler on fmnist-psld with the projection on (the
             default; the psld stage's older rows are plain ε) at the Table-2 NFEs, lam=auto again, and
             csps-d's λ curve (NFE 10–100) with the FD at the λ the accuracy proxy chose
  stability  issue 19: max |x| and RMSE (the accuracy rows) of every sampler on fmnist-psld, the ε-form ones
             with the projection on and their stable range ignored (allow_unstable), climbing NFE from 4 until
             STABLE_RUN consecutive NFEs stay inside STABLE_MAX_ABS: the data of the stable ranges
             (cosi.core.integrators.stability.MIN_NFE, benchmarks/stability_table.py)
  frontier   issue 21: accuracy at NFE 4, 5, 6, 8, 10, 15, 20 of the data-prediction samplers on both models
             and of every diffusers peer setting on fmnist-vp (Karras sigmas, lu_lambdas), seeds 0 and 1
  frontier_fd  issue 21: the FD of the same cells (seed 0), and csps-d on the uniform grid (issue 19)
  autogrid   issue 21: grid="auto" (cosi.tune_grid: 64 probe draws) for AUTOGRID_SAMPLERS at NFE 10, 5, 8 and
             for gddim-2m-c at NFE 4, 6, 15, 20 (AUTOGRID_PLAN) on every shipped model, judged on the accuracy
             stage's 256 held-out draws beside the default grid; the tuning's calls and seconds recorded
  autogrid_fd  issue 21: the FD of those tuned grids (seed 0)

The FD stages run interleaved in the priority order of fd_plan(): the headline samplers at every NFE,
the paper's Table 2 at NFE 50 and 100, their second seeds, the λ curves and the lam=auto check, second
seeds of the data-prediction samplers, then everything else.

FD and KID: the shipped classifier's features, --n samples against the 10k Fashion-MNIST test images;
network in bf16, state in float32, each sampler captured as one CUDA graph on a GPU (--no-graph: eager). The 1000-step references the
study is judged against come from benchmarks/fmnist_fd.py (benchmarks/results/fmnist_fd.jsonl).
`benchmarks/render.py` turns the results into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch

from cosi.data import DatasetError
from cosi.evaluation.autolam import FDObjective
from cosi.evaluation.evaluate import feature_space, reference_images, reference_stats
from cosi.core.integrators import SAMPLERS
from cosi.core.sampling import sample as cosi_sample
from cosi.models.checkpoint import load, shipped_names
from cosi.evaluation.sweep import make_cells, run_sweep

NFES = [10, 20, 50, 100, 200]
STAGES = ["network", "speed", "psld", "vp", "lam", "tune", "seeds", "final", "accuracy", "stability", "frontier",
          "frontier_fd", "autogrid", "autogrid_fd", "project"]
FINAL_N = 50_000  # the final stage's samples per cell
LAM_AUTO_STAGES = {"psld", "vp", "lam", "tune", "seeds", "final", "project"}  # the FD stages with lam="auto" cells
NETWORKS = {"nchw": (False, None), "nhwc": (True, None), "nchw+compile": (False, "default"),
            "nhwc+compile": (True, "default")}  # name: (channels-last, torch.compile mode)


def samplers_of(process: str) -> list[str]:
    return [n for n, s in SAMPLERS.items() if s.accepts(process) and n != "conjugate"]


DATA_PREDICTION = ["gddim", "gddim-s", "gddim-2m"]  # the best samplers on both learned models
HEADLINE = {"fmnist-psld": ["csps-d", "csps-s"], "fmnist-vp": ["lambda-ddim-1", "dpm-solver++", "unipc"]}
TABLE2 = ["em", "sscs", "oba", "roba", "coba", "euler", "lambda-ddim-1", "lambda-ddim-2", "cvv"]  # and HEADLINE's
LAMS = [-6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, "auto"]
# the fine grids of the lam=auto check, around the optima of the coarse curves (λ ≈ 1–2.5 for lambda-ddim-2 on
# PSLD, λ ≈ 0 for lambda-ddim-1 on VP)
LAMS_FINE = {"fmnist-psld": [0.25 * i for i in range(13)], "fmnist-vp": [-0.5 + 0.125 * i for i in range(9)]}


def accuracy_lams(model: str, sampler: str) -> list[tuple[int, float]]:
    """(NFE, λ) that lam=auto's accuracy proxy chose on the CPU (benchmarks/lam_accuracy_cpu.py): the FD at that λ is
    the λ table's 'lam=auto by accuracy' cell of the curve with the projection on (the CPU's choice had it on)."""
    from cosi.evaluation.rows import read_rows

    path = Path(__file__).parent / "results" / "lam_accuracy_cpu.jsonl"
    return [(r["nfe"], r["lam"]) for r in (read_rows(path) if path.exists() else [])
            if r["model"] == model and r["sampler"] == sampler]


def fd_plan() -> list[tuple[str, str, list[dict]]]:
    """(stage, model, cells) in priority order: what the issue's closing figures need first.

    A stage's rows go to OUT/<stage>.jsonl and finished cells are skipped, so a later, wider entry of
    the same stage runs only what the earlier ones left.
    """
    psld, vp = "fmnist-psld", "fmnist-vp"
    return [("psld", psld, make_cells(HEADLINE[psld], NFES)),
            ("vp", vp, make_cells(HEADLINE[vp], NFES)),
            ("psld", psld, make_cells(TABLE2, [50, 100])),  # the paper's Table 2 NFEs
            ("seeds", psld, make_cells([*HEADLINE[psld], "em"], [20, 50], seeds=[1])),
            ("seeds", vp, make_cells(HEADLINE[vp][:2], [20, 50], seeds=[1])),
            ("lam", psld, make_cells(["lambda-ddim-2"], [10, 20, 50, 100], lams=LAMS)),
            ("lam", vp, make_cells(["lambda-ddim-1"], [10, 20, 50, 100], lams=["auto"])),
            ("lam", psld, make_cells(["lambda-ddim-2"], [10, 20, 50, 100], lams=LAMS_FINE[psld])),
            ("lam", vp, make_cells(["lambda-ddim-1"], [10, 20, 50, 100], lams=LAMS_FINE[vp])),
            ("lam", vp, make_cells(["lambda-ddim-1"], [50, 100], lams=[0.625, 0.75, 0.875, 1.0])),  # past 0.5
            ("seeds", psld, make_cells(DATA_PREDICTION, [10, 20, 50], seeds=[1])),
            ("seeds", vp, make_cells(["gddim-2m", "unipc"], [10, 20, 50], seeds=[1])),
            ("psld", psld, make_cells(samplers_of("psld"), NFES)),
            ("vp", vp, make_cells(samplers_of("vp"), NFES)),
            ("tune", psld, make_cells(["csps-s", "sps-s"], [20, 50, 100], etas=[1.0], eta_xs=[0.0])),  # m's noise only
            ("tune", psld, make_cells(["csps-s", "sps-s"], [20, 50, 100], etas=[0.5, 1.0],
                                      o_parts=["friction", "none", "linear"])),
            ("lam", vp, make_cells(["lambda-ddim-1"], [10, 20, 50, 100], lams=LAMS)),
            ("lam", psld, make_cells(["csps-d"], [10, 20, 50, 100], lams=LAMS)),
            ("lam", psld, make_cells(["lambda-ddim-2"], [10, 20, 50, 100], lams=["auto"], seeds=[1])),
            ("lam", vp, make_cells(["lambda-ddim-1"], [10, 20, 50, 100], lams=["auto"], seeds=[1])),
            ("final", psld, make_cells(["gddim-2m"], [200])),  # FINAL_N samples
            ("final", vp, make_cells(["gddim-2m"], [200])),
            ("seeds", psld, make_cells(samplers_of("psld"), [20, 50], seeds=[1])),
            ("seeds", vp, make_cells(samplers_of("vp"), [20, 50], seeds=[1]))]


ACCURACY_NFES = [5, 10, 20, 50, 100, 2000]
ACCURACY = {"fmnist-psld": ["euler", "gddim", "gddim-2m", "conjugate", "lambda-ddim-1", "lambda-ddim-2", "nse",
                            "nvv", "rse", "rvv", "cse", "cvv", "csps-d", "csps-2m", "gddim-3m", "gddim-2m-c", "gddim-3m-c",
                            "heun"],
            "fmnist-vp": ["euler", "ddim", "gddim", "gddim-2m", "conjugate", "lambda-ddim-1", "lambda-ddim-2",
                          "dpm-solver++", "unipc", "gddim-3m", "gddim-2m-c", "gddim-3m-c", "heun"]}
EPS_FORM = ["euler", "em", "lambda-ddim-1", "lambda-ddim-2", "conjugate", "csps-d", "csps-s", "rvv", "cse", "sscs",
            "roba", "oba", "cvv"]  # the ε-form samplers of the FD study on fmnist-psld (oba, cvv: Table 2's pairs)


FIRST_AT_TOP = ["csps-2m", "csps-d", "euler", "lambda-ddim-2", "cse", "rvv"]  # issue 19's cases first at the costly top NFE
# at the top NFE only: csps-d at other λ than its default (−3, tuned on the oracle for few steps), to see how much
# of its error at NFE 2000 its λ carries (the conjugate A sub-flow at λ ≠ 0 is a first-order step of its own)
ACCURACY_TOP_OPTIONS = {"fmnist-psld": [("csps-d", {"lam": -4.0}), ("csps-d", {"lam": -6.0}), ("csps-d", {"lam": 4.0})]}


def accuracy_plan(name: str, nfes=ACCURACY_NFES, top: bool = False) -> list[dict]:
    """The accuracy cells of one model: every NFE below the largest (``top`` False, cheap) or the largest
    alone (each cell ~0.5M evaluations at 2000, issue 19's cases first); the nearest NFE each sampler meets,
    the projection off and on where it applies (an ε-form sampler on k >= 2)."""
    from cosi.core.integrators import nearest_nfe
    from cosi.core.processes import make_process

    p = make_process(name.split("-")[1])
    wanted = [max(nfes)] if top else [k for k in nfes if k < max(nfes)]
    names = sorted(ACCURACY[name], key=lambda s: FIRST_AT_TOP.index(s) if s in FIRST_AT_TOP else len(FIRST_AT_TOP))
    cells = []
    for s in names:
        spec = SAMPLERS[s]
        for pr in ([False, True] if spec.eps_form and spec.build is not None and p.k > 1 else [True]):
            cells += [{"sampler": s, "nfe": nearest_nfe(s, k, p), "project": pr, "options": {}} for k in wanted]
    if top:
        cells = [{"sampler": s, "nfe": nearest_nfe(s, k, p), "project": True, "options": o}
                 for s, o in ACCURACY_TOP_OPTIONS.get(name, []) for k in wanted] + cells
    return list({json.dumps(c, sort_keys=True): c for c in cells}.values())


def tf32_off(stage):
    """Run an accuracy stage with TF32 off (full float32 matmuls and convolutions), restored after it."""
    @functools.wraps(stage)
    def run(*args, **kw):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        try:
            return stage(*args, **kw)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return run


def accurate_model(name: str, device: str):
    """A shipped model as the accuracy stages run it: float32, compiled on a GPU."""
    return prepared(name, device, torch.float32, "nchw+compile" if device == "cuda" else "nchw")


@tf32_off
def accuracy_stage(out: Path, minutes: float, device: str, n: int, reference: str, nfes=ACCURACY_NFES) -> None:
    """The accuracy stage: float32 network (compiled on a GPU), TF32 off; references cached in OUT/../accuracy_refs (not
    committed). Both models below the top NFE first, then both at the top NFE."""
    from cosi.evaluation.accuracy import Reference, run_accuracy

    t0 = time.monotonic()
    hw = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    models = {}
    for top in (False, True):
        for name in ACCURACY:
            left = minutes - (time.monotonic() - t0) / 60
            if left <= 0:
                break
            if name not in models:
                models[name] = accurate_model(name, device)
            run_accuracy(models[name], name, accuracy_plan(name, nfes, top), out, n=n,
                         reference=Reference.parse(reference), minutes=left, cache_dir=out.parent / "accuracy_refs",
                         extra={"device_name": hw}, log=lambda s: print(s, flush=True))


STABILITY_NFES = [4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 70, 100, 150, 200, 300, 500, 1000]
STABLE_MAX_ABS = 10.0  # cosi.core.integrators.stability.STABLE_MAX_ABS
STABLE_RUN = 4  # a sampler's scan stops after this many consecutive stable NFEs


@tf32_off
def stability_stage(out: Path, minutes: float, device: str, n: int, reference: str,
                    models=("fmnist-psld", "fmnist-vp")) -> None:
    """The stability stage: every sampler of fmnist-psld (and fmnist-vp's ε-form ones; fmnist-cld's with
    ``models``) climbing STABILITY_NFES with its stable range ignored, until STABLE_RUN consecutive NFEs are
    inside STABLE_MAX_ABS."""
    from cosi.core.integrators import nearest_nfe
    from cosi.core.integrators.eta import EDGES
    from cosi.core.processes import make_process
    from cosi.evaluation.accuracy import Reference, run_accuracy
    from cosi.evaluation.rows import read_rows

    t0 = time.monotonic()
    hw = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    for name in models:
        p = make_process(name.split("-")[1])
        model = None
        names = [s for s in samplers_of(p.name) if SAMPLERS[s].build is not None and (p.k > 1 or SAMPLERS[s].eps_form)]
        for s in names:
            run = 0
            eta_one = EDGES.get((s, p.name), ((0, 1.0),))[-1][0]  # a stochastic preset's η rises to 1 up to here
            for k in dict.fromkeys(nearest_nfe(s, k, p) for k in STABILITY_NFES):
                left = minutes - (time.monotonic() - t0) / 60
                if left <= 0 or run >= STABLE_RUN:
                    break
                if model is None:
                    model = accurate_model(name, device)
                cell = {"sampler": s, "nfe": k, "project": True, "options": {"allow_unstable": True}}
                run_accuracy(model, name, [cell], out, n=n, reference=Reference.parse(reference), minutes=left,
                             cache_dir=out.parent / "accuracy_refs", extra={"device_name": hw},
                             log=lambda m: print(m, flush=True))
                rows = [r for r in read_rows(out) if r["model"] == name and r["sampler"] == s and r["nfe"] == k]
                ok = rows and rows[-1].get("max_abs", float("inf")) <= STABLE_MAX_ABS
                run = run + 1 if ok and k >= eta_one else 0 if not ok else run


FRONTIER_NFES = [4, 5, 6, 8, 10, 15, 20]
FMNIST_MODELS = [m for m in ("fmnist-vp", "fmnist-psld", "fmnist-cld") if m in shipped_names()]
FRONTIER = ["gddim", "gddim-2m", "gddim-3m", "gddim-2m-c", "gddim-3m-c"]
FRONTIER_MULTISTEP = ["gddim-3m", "gddim-2m-c", "gddim-3m-c"]
# the grids of the frontier (the diffusers peers' default spacing is uniform in t), and the multistep samplers'
# lower order at the last steps (DPM-Solver++'s and UniPC's default) on the default and uniform grids
FRONTIER_OPTIONS = [{}, {"grid": "logsnr"}, {"grid": "uniform"}, {"lower_order_final": True},
                    {"grid": "uniform", "lower_order_final": True}]
PEER_SETTINGS = {"dpm-solver++": [{}, {"use_karras_sigmas": True}, {"use_lu_lambdas": True}],
                 "dpm-solver++-3m": [{}, {"use_karras_sigmas": True}, {"use_lu_lambdas": True}],
                 "unipc": [{}, {"use_karras_sigmas": True}], "unipc-bh2-3": [{}, {"use_karras_sigmas": True}],
                 "unipc-bh1-2": [{}, {"use_karras_sigmas": True}], "unipc-bh1-3": [{}, {"use_karras_sigmas": True}],
                 "deis": [{}, {"use_karras_sigmas": True}], "ipndm": [{}]}


def frontier_plan(name: str, seed: int) -> list[dict]:
    """The frontier cells of one model: the data-prediction samplers on their default and logsnr grids, and on
    fmnist-vp every peer setting, at FRONTIER_NFES (the nearest NFE each meets)."""
    from cosi.core.integrators import nearest_nfe
    from cosi.core.processes import make_process

    p = make_process(name.split("-")[1])
    cells = [{"sampler": s, "nfe": nearest_nfe(s, k, p), "project": True, "options": o}
             for k in FRONTIER_NFES for s in FRONTIER for o in FRONTIER_OPTIONS
             if "lower_order_final" not in o or s in FRONTIER_MULTISTEP]
    if p.k == 1:
        cells += [{"sampler": s, "nfe": k, "project": True, "options": o}
                  for k in FRONTIER_NFES for s, settings in PEER_SETTINGS.items() for o in settings]
    return list({json.dumps(c, sort_keys=True): c for c in cells}.values())


def frontier_fd_plan() -> list[tuple[str, str, list[dict]]]:
    """The FD cells of the frontier: what frontier_plan measures for accuracy, seed 0, csps-d on the uniform grid at
    the Table-2 NFEs, and the converged sampler on fmnist-cld (the targets' FD baseline)."""
    first = [10, 5, 8, 4, 6, 15, 20]  # the target NFEs first

    def cells(name):
        return sorted(({"sampler": c["sampler"], "nfe": c["nfe"], "options": c["options"], "seed": 0}
                       for c in frontier_plan(name, 0)), key=lambda c: first.index(c["nfe"]) if c["nfe"] in first else 9)
    return [("frontier_fd", "fmnist-psld", make_cells(["csps-d"], [20, 50, 100], grids=["uniform"])),
            ("frontier_fd", "fmnist-cld", make_cells(["gddim-2m"], [200])),  # CLD's converged FD (the others': psld, vp)
            *[("frontier_fd", name, cells(name)) for name in FMNIST_MODELS]]


@tf32_off
def frontier_stage(out: Path, minutes: float, device: str, n: int, reference: str, models=None) -> None:
    """The frontier cells of ``models`` (default: every shipped Fashion-MNIST model), seed 0 then seed 1; a model
    is loaded (and compiled) only when one of its cells is left."""
    from cosi.evaluation.accuracy import Reference, accuracy_key, run_accuracy
    from cosi.evaluation.rows import read_rows

    t0 = time.monotonic()
    hw = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    ref = Reference.parse(reference)
    done = {r["key"] for r in read_rows(out)}
    loaded = {}
    for seed in (0, 1):
        for name in models or FMNIST_MODELS:
            left = minutes - (time.monotonic() - t0) / 60
            if left <= 0:
                break
            cells = [c for c in frontier_plan(name, seed) if accuracy_key(
                name, c["sampler"], c["nfe"], c["project"], c["options"], n, seed, ref) not in done]
            if not cells:
                continue
            if name not in loaded:
                loaded[name] = accurate_model(name, device)
            run_accuracy(loaded[name], name, cells, out, n=n, seed=seed, reference=ref, minutes=left,
                         cache_dir=out.parent / "accuracy_refs", extra={"device_name": hw},
                         log=lambda m: print(m, flush=True))


AUTOGRID_SAMPLERS = ("gddim-2m-c", "gddim-3m-c", "gddim-2m")
# (NFE, samplers) in the order the stage visits them: the three second-order samplers at the target NFEs,
# then the frontier's other NFEs for gddim-2m-c alone (the README's sampler)
AUTOGRID_PLAN = [*((k, AUTOGRID_SAMPLERS) for k in (10, 5, 8)), *((k, AUTOGRID_SAMPLERS[:1]) for k in (4, 6, 15, 20))]


def autogrid_fd_plan(rows_path: Path) -> list[tuple[str, str, list[dict]]]:
    """The FD cells of the autogrid stage's tuned grids (seed 0), as its rows give them."""
    from cosi.evaluation.rows import read_rows

    rows = read_rows(rows_path) if rows_path.exists() else []
    return [("autogrid_fd", name, [{"sampler": r["sampler"], "nfe": r["nfe"], "options": {"grid": r["grid_auto"]},
                                    "seed": 0} for r in rows if r["model"] == name]) for name in FMNIST_MODELS]


@tf32_off
def autogrid_stage(out: Path, minutes: float, device: str, n: int, reference: str) -> None:
    from cosi.api import tune_grid
    from cosi.evaluation.accuracy import Reference, accuracy, errors, prior_draws, reference_solution
    from cosi.evaluation.rows import read_rows

    t0 = time.monotonic()
    done = {(r["model"], r["sampler"], r["nfe"]) for r in read_rows(out)}
    ref = Reference.parse(reference)
    loaded = {}
    for nfe, samplers in AUTOGRID_PLAN:
        for name in FMNIST_MODELS:
            for s in samplers:
                if (name, s, nfe) in done or time.monotonic() - t0 > 60 * minutes:
                    continue
                if name not in loaded:
                    loaded[name] = accurate_model(name, device)
                model = loaded[name]
                p = model.process
                tuned = tune_grid(model.eps_model, p, s, nfe, model.data_shape, device=model.device)
                base = accuracy(model, s, nfe, n=n, reference=ref, cache_dir=out.parent / "accuracy_refs", name=name)
                x_ref = reference_solution(model.eps_model, p, model.data_shape, n, 0, ref, device=model.device,
                                           cache_dir=out.parent / "accuracy_refs", name=name)["x"]
                z = prior_draws(p, model.data_shape, n, 0, model.device)
                x = torch.cat([cosi_sample(model.eps_model, p, s, nfe, z_T=b, grid=tuned["grid"]).x for b in z.split(256)])
                auto = errors(x, x_ref)
                row = {"model": name, "sampler": s, "nfe": nfe, "n": n, "reference": str(ref),
                       "default_rmse": base["rmse"], "default_rmse_median": base["rmse_median"],
                       "auto_rmse": auto["rmse"], "auto_rmse_median": auto["rmse_median"], "auto_max_abs": auto["max_abs"],
                       "grid_default": tuned["start"].tolist(), "grid_auto": tuned["grid"].tolist(),
                       "proxy_start": tuned["proxy_start"], "proxy": tuned["proxy"], "tuning_calls": tuned["calls"],
                       "tuning_probe": tuned["probe"], "tuning_seconds": tuned["seconds"],
                       "device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu"}
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"autogrid {name} {s} nfe={nfe}: RMSE {base['rmse']:.3g} -> {auto['rmse']:.3g} "
                      f"(median {base['rmse_median']:.3g} -> {auto['rmse_median']:.3g}), {tuned['calls']} calls, "
                      f"{tuned['seconds']:.0f} s", flush=True)


def project_plan(nfes=(50, 100)) -> list[tuple[str, str, list[dict]]]:
    """The FD cells of the project stage: the ε-form samplers at the Table-2 NFEs, lam=auto (by FD), then csps-d's
    λ curve with the projection on and the λ its accuracy proxy chose (accuracy_lams)."""
    psld = "fmnist-psld"
    return [("project", psld, make_cells(EPS_FORM, list(nfes))),
            ("project", psld, make_cells(["lambda-ddim-2"], [10, 20, 50, 100], lams=["auto"])),
            ("project", psld, make_cells(["csps-d"], [10, 20, 50, 100], lams=LAMS)),  # csps-d's λ curve again
            *(("project", psld, make_cells(["csps-d"], [k], lams=[lam])) for k, lam in accuracy_lams(psld, "csps-d"))]


TARGETS = ["csps-d", "csps-s", "lambda-ddim-2", "em"]  # issue 8's overhead target: <= 1.02 at batch 256, NFE 50


def speed_plan() -> list[tuple]:
    """(mode, compile mode, graph, samplers or None for all, batch sizes, NFEs) in priority order."""
    return [("graph", None, True, None, (256, 64), (50, 20)),
            ("eager", None, False, TARGETS, (256,), (50,)),
            ("graph+compile", "default", True, TARGETS, (256,), (50,)),
            ("compiled", "reduce-overhead", False, TARGETS, (256,), (50,)),
            ("eager", None, False, None, (256, 64), (50, 20))]


def speed(out: Path, minutes_left: float, device: str, dtype) -> None:
    """`cosi bench speed` in process, mode by mode; one JSON line per (model, mode, sampler, NFE, batch)."""
    from cosi.evaluation.benchmark import speed as time_sampler
    from cosi.core.integrators.plan import release_graphs

    key = lambda r: (r["model"], r["mode"], r["sampler"], r["nfe"], r["batch_size"])  # noqa: E731
    done = {key(r) for r in map(json.loads, out.read_text().splitlines())} if out.is_file() else set()
    t0 = time.monotonic()
    for mode, compile_mode, graph, names, batch_sizes, nfes in speed_plan():
        if device == "cpu" and (graph or compile_mode):
            continue  # CUDA graphs and compiled networks are timed on a GPU
        for model_name in ("fmnist-psld", "fmnist-vp"):
            model = None
            for b in batch_sizes:
                for nfe in nfes:
                    for s in names or samplers_of(model_name.split("-")[1]):
                        if time.monotonic() - t0 > 60 * minutes_left:
                            return
                        if (model_name, mode, s, nfe, b) in done or SAMPLERS[s].build is None \
                                or not SAMPLERS[s].accepts(model_name.split("-")[1]):
                            continue
                        if model is None:
                            model = load(model_name, device=device, dtype=dtype)
                            if compile_mode:
                                model.compile(compile_mode)
                        try:
                            r = time_sampler(model, s, nfe, b, repeats=3, graph=graph)
                        except ValueError as e:  # an NFE this sampler cannot meet
                            r = {"sampler": s, "nfe": nfe, "batch_size": b, "error": str(e)}
                        row = {"model": model_name, "mode": mode, **r}
                        with out.open("a") as f:
                            f.write(json.dumps(row) + "\n")
                        print(f"speed {model_name} {mode} b={b} nfe={nfe} {s}: "
                              f"{row.get('ratio', float('nan')):.3f}", flush=True)
            release_graphs()


def prepared(name: str, device: str, dtype, network: str):
    """A shipped model on the device, in the layout and compilation ``network`` names."""
    channels_last, mode = NETWORKS[network]
    model = load(name, device=device, dtype=dtype).channels_last(channels_last)
    return model.compile(mode) if mode else model


def network(out: Path, device: str, dtype, batch: int, calls: int = 20) -> None:
    """Bare-call throughput of the PSLD U-Net (one CUDA graph of ``calls`` calls, median of 3)."""
    from cosi.evaluation.benchmark import bare_calls, timer
    from cosi.evaluation.sweep import read_rows

    clock = timer(torch.device(device))
    done = {r["network"] for r in read_rows(out)}
    for name in NETWORKS:
        if name in done:
            continue
        t0 = time.perf_counter()
        model = prepared("fmnist-psld", device, dtype, name)
        z = torch.randn(batch, 2, 28, 28, device=device)
        ts = [torch.full((batch,), t, device=device) for t in torch.linspace(1.0, 1e-3, calls).tolist()]
        replay = bare_calls(model.eps_model, z, ts, graph=True)  # warm-up (and compilation) included
        setup = time.perf_counter() - t0
        secs = [clock(replay) for _ in range(3)]
        row = {"network": name, "batch_size": batch, "calls": calls, "evals_per_s": batch * calls / sorted(secs)[1],
               "setup_s": round(setup, 1), "device": torch.cuda.get_device_name(), "dtype": str(dtype)}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"network {name}: {row['evals_per_s']:.0f} evaluations/s (setup {setup:.0f} s)", flush=True)


def fastest_network(out: Path) -> str:
    from cosi.evaluation.sweep import read_rows

    rows = read_rows(out)
    return max(rows, key=lambda r: r["evals_per_s"])["network"] if rows else "nchw"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/study"))
    ap.add_argument("--stage", action="append", choices=STAGES, help="default: all, in order")
    ap.add_argument("--minutes", type=float, default=20.0, help="start no new cell after this wall time")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=2000)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--network", default="auto", choices=["auto", *NETWORKS],
                    help="FD stages: the network's layout and compilation (auto: the fastest the network stage measured)")
    ap.add_argument("--train-stats", type=Path, default=None,
                    help="lam=auto by FD: a folder holding (or to hold) the train split's feature statistics "
                         "(classifier-fmnist-train.npz), in place of reading the train split (default ~/.cache/cosi)")
    ap.add_argument("--no-graph", action="store_true", help="FD stages: sample eagerly, not as CUDA graphs")
    ap.add_argument("--accuracy-n", type=int, default=256, help="accuracy stage: samples")
    ap.add_argument("--accuracy-reference", default="gddim-2m@2000", help="accuracy stage: SAMPLER@NFE")
    ap.add_argument("--accuracy-nfe", type=int, action="append", help="accuracy stage (default 5 10 20 50 100 2000)")
    ap.add_argument("--accuracy-minutes", type=float, default=None,
                    help="accuracy stage: its own wall-time budget (default: all that is left)")
    ap.add_argument("--project-nfe", type=int, action="append", help="project stage (default: 50 100)")
    ap.add_argument("--model", action="append", choices=FMNIST_MODELS,
                    help="stability and frontier stages: the models (default: fmnist-psld and fmnist-vp; frontier: all shipped)")
    args = ap.parse_args()
    t0 = time.monotonic()
    left = lambda: args.minutes - (time.monotonic() - t0) / 60  # noqa: E731
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    torch.backends.cudnn.benchmark = True
    args.out.mkdir(parents=True, exist_ok=True)
    hw = torch.cuda.get_device_name() if dev == "cuda" else "cpu"
    stages = args.stage or STAGES
    if "network" in stages and dev == "cuda":
        network(args.out / "network.jsonl", dev, dtype, args.batch_size)
    if "speed" in stages:
        speed(args.out / "speed.jsonl", left(), dev, dtype)
    if "accuracy" in stages and left() > 0:
        budget = min(left(), args.accuracy_minutes or left())
        accuracy_stage(args.out / "accuracy.jsonl", budget, dev, args.accuracy_n, args.accuracy_reference,
                       args.accuracy_nfe or ACCURACY_NFES)
    if "stability" in stages and left() > 0:
        stability_stage(args.out / "stability.jsonl", left(), dev, args.accuracy_n, args.accuracy_reference,
                        args.model or ("fmnist-psld", "fmnist-vp"))
    if "frontier" in stages and left() > 0:
        frontier_stage(args.out / "frontier.jsonl", left(), dev, args.accuracy_n, args.accuracy_reference, args.model)
    if "autogrid" in stages and left() > 0:
        autogrid_stage(args.out / "autogrid.jsonl", left(), dev, args.accuracy_n, args.accuracy_reference)
    stages = [s for s in stages if s not in ("network", "speed", "accuracy", "stability", "frontier", "autogrid")]
    if not stages or left() <= 0:
        print(f"study: {(time.monotonic() - t0) / 60:.1f} min on {hw}", flush=True)
        return
    features, kind, ref_name = feature_space("classifier", (1, 28, 28), dev)
    ref = reference_stats(features, kind, ref_name, ref_dir=args.data_dir)
    ref_features = features.image_features(reference_images(ref_name, args.data_dir))  # for the KID
    # lam=auto picks λ by the FD of 2000 samples to the train split; every FD reported is to the test split
    # the train split is read only where a cell needs it; without it the lam=auto cells wait for a later run
    objective = None
    if set(stages) & LAM_AUTO_STAGES:
        try:
            objective = FDObjective.held_out(features, kind, "fmnist-train", ref_dir=args.data_dir,
                                             batch_size=args.batch_size, cache=args.train_stats)
        except DatasetError as e:
            print(f"lam=auto cells skipped (their FD objective needs the train split): {e}", flush=True)
    graph = dev == "cuda" and not args.no_graph
    net = args.network if args.network != "auto" else fastest_network(args.out / "network.jsonl")
    if dev != "cuda":
        net = "nchw"
    print(f"FD stages: network {net}, graph {graph}", flush=True)
    extra = {"features": kind, "device": hw, "dtype": str(dtype).removeprefix("torch."), "network": net,
             "graph": graph}
    models = {}
    for stage, name, cells in [*fd_plan(), *project_plan(args.project_nfe or (50, 100)), *frontier_fd_plan(),
                               *autogrid_fd_plan(args.out / "autogrid.jsonl")]:
        if left() <= 0:
            break
        if stage not in stages:
            continue
        if objective is None:
            cells = [c for c in cells if c["options"].get("lam") != "auto"]
        if name not in models:
            models[name] = prepared(name, dev, dtype, net)
        run_sweep(models[name], name, features, ref, cells, args.out / f"{stage}.jsonl",
                  n=FINAL_N if stage == "final" else args.n,
                  batch_size=args.batch_size, minutes=left(), extra=extra, ref_features=ref_features,
                  graph=graph, lam_objective=objective, log=lambda s: print(s, flush=True))
    print(f"study: {(time.monotonic() - t0) / 60:.1f} min on {hw}", flush=True)


if __name__ == "__main__":
    main()

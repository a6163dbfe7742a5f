"""Render docs/benchmarks.md (tables and figures) from the committed results of benchmarks/study.py.

    python benchmarks/render.py [--results benchmarks/results/study] [--out docs/benchmarks.md]

Reads OUT/{psld,vp,lam,tune,seeds,speed,accuracy,project,stability,frontier,frontier_fd,autogrid,autogrid_fd}.jsonl,
benchmarks/results/fmnist_fd.jsonl (the 1000-step references and the data floor), benchmarks/results/
projection_overhead.jsonl and benchmarks/results/mutation.json; what is missing is reported as not measured. Figures go to
docs/figures/bench_*.png. Every number in the page is read from those files. The overhead tables are also
written into docs/performance.md, between its markers.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from cosi.core.integrators import SAMPLERS
from cosi.evaluation.sweep import latest_rows, read_rows
from cosi.evaluation.viz import plot_fd_vs_lam, plot_fd_vs_nfe

ROOT = Path(__file__).resolve().parents[1]
NFES = [10, 20, 50, 100, 200]
# The paper's Table 2 (CIFAR-10 PSLD): each pair (better, worse) at the NFE it was reported.
PAPER_ORDER = [("sscs", "em", 50), ("sscs", "em", 100), ("roba", "oba", 50), ("roba", "sscs", 50),
               ("csps-s", "em", 100), ("csps-s", "sscs", 100), ("csps-d", "euler", 100),
               ("csps-d", "lambda-ddim-2", 100), ("csps-d", "cvv", 100), ("csps-d", "csps-s", 100)]


def fd_table(rows: list[dict], seeds: list[dict]) -> tuple[dict, list[str]]:
    """{(sampler, nfe): (mean FD, std or None, n seeds)} over default-option rows."""
    cells = defaultdict(list)
    for r in rows + seeds:
        if "fd" in r and not {"lam", "eta", "grid"} & set(r):
            cells[(r["sampler"], r["nfe"])].append(r["fd"])
    out = {k: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else None, len(v)) for k, v in cells.items()}
    names = list(dict.fromkeys(r["sampler"] for r in rows if "fd" in r))
    return out, names


def fmt(cell) -> str:
    if cell is None:
        return "—"
    m, s, _ = cell
    return f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"


ACCURACY_NFES = [5, 10, 20, 50, 100, 2000]


def accuracy_section(rows: list[dict]) -> list[str]:
    """Per model: RMSE against the reference per sampler × NFE, projection off / on side by side."""
    import math

    lines = ["## Accuracy: how well each sampler solves the model's ODE (`cosi bench accuracy`)", ""]
    ok = [r for r in rows if "rmse" in r and not r["options"] and r["grid"] in ("own", default_grid(r))]
    if not ok:
        return lines + ["Not measured yet.", ""]
    column = lambda k: min(ACCURACY_NFES, key=lambda c: abs(math.log(k / c)))  # noqa: E731
    num = lambda r: "—" if r is None else (f"{r['rmse']:.2g}" + (f" (max {r['max_abs']:.3g})" if r["max_abs"] > 2 else "")  # noqa: E731
                                          + ("" if r["nfe"] == column(r["nfe"]) else f" [{r['nfe']}]"))
    for model in dict.fromkeys(r["model"] for r in ok):
        mine = [r for r in ok if r["model"] == model]
        r0 = mine[0]
        cells = {}  # a column shows the row nearest its NFE (csps-d's 4000 beside its 2000), the latest among equals
        for r in mine:
            key, d = (r["sampler"], r["project"], column(r["nfe"])), abs(math.log(r["nfe"] / column(r["nfe"])))
            if key not in cells or d <= abs(math.log(cells[key]["nfe"] / key[2])):
                cells[key] = r
        both = any(r["project"] for r in mine) and any(not r["project"] for r in mine)
        lines += [f"### {model}", "",
                  f"RMSE per pixel of the data block against {r0['reference']} from the same {r0['n']} prior draws "
                  f"(seed {r0['seed']}); the reference is {r0['reference_self_rmse']:.2g} from itself at "
                  f"{r0['reference_self_nfe']} calls, its max |x| {r0['reference_max_abs']:.3g}. "
                  f"{r0.get('device_name', r0['device'])}, network {r0['dtype']}, TF32 {'on' if r0['tf32'] else 'off'}. "
                  "(max …): the largest |x| where above 2 (the data lie in [−1, 1]); [k]: the NFE the sampler meets."
                  + (" Each cell: plain ε / with the consistency projection (one value: the projection does not apply)."
                     if both else ""), "",
                  "| sampler | " + " | ".join(f"NFE {k}" for k in ACCURACY_NFES) + " |",
                  "|---|" + "---|" * len(ACCURACY_NFES)]
        for s in dict.fromkeys(r["sampler"] for r in mine):
            vals = []
            for k in ACCURACY_NFES:
                off, on = cells.get((s, False, k)), cells.get((s, True, k))
                vals.append(f"{num(off)} / {num(on)}" if off is not None and on is not None else num(off or on))
            lines.append(f"| {s} | " + " | ".join(vals) + " |")
        lines.append("")
    return lines


def default_grid(r: dict) -> str:
    from cosi.core.processes import make_process

    return SAMPLERS[r["sampler"]].grid(make_process(r["model"].split("-")[1]))


def csps_d_grid_section(rows: list[dict], fd_rows: list[dict], project: list[dict]) -> list[str]:
    """csps-d on fmnist-psld by grid: accuracy (RMSE, the median per draw) and FD."""
    lines = ["## csps-d's grid on fmnist-psld: accuracy against FD", ""]
    ok = [r for r in rows if "rmse" in r and r["model"] == "fmnist-psld" and r["sampler"] == "csps-d" and r["project"]
          and not r["options"]]
    grids = [g for g in ("quadratic", "uniform", "logsnr") if any(r["grid"] == g for r in ok)]
    if len(grids) < 2:
        return lines + ["Not measured yet.", ""]
    nfes = sorted({r["nfe"] for r in ok if r["grid"] != "quadratic"} | {2000, 4000} & {r["nfe"] for r in ok})
    cell = {(r["grid"], r["nfe"]): r for r in ok}
    fd = {("quadratic", r["nfe"]): r["fd"] for r in latest_rows(project) if r.get("sampler") == "csps-d" and "fd" in r
          and r.get("lam") is None}
    fd.update({(r.get("grid"), r["nfe"]): r["fd"] for r in fd_rows
               if r.get("sampler") == "csps-d" and "fd" in r and r.get("model") == "fmnist-psld"})
    r0 = ok[0]
    lines += [f"RMSE against {r0['reference']} (256 draws; in brackets the median per-draw RMSE), float32, "
              f"{r0.get('device_name', r0['device'])}, TF32 off, projection on; FD: 10k samples, bf16 network, "
              "seed 0. The mean RMSE is dominated by the few draws whose trajectory ends near a boundary between "
              "modes, where a small error moves the endpoint far.", "",
              "| grid | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for g in grids:
        vals = []
        for k in nfes:
            r = cell.get((g, k))
            v = "—" if r is None else f"{r['rmse']:.3g} ({r['rmse_median']:.2g})"
            if (g, k) in fd:
                v += f"; FD {fd[(g, k)]:.2f}"
            vals.append(v)
        lines.append(f"| {g} | " + " | ".join(vals) + " |")
    lines += ["", "The uniform grid solves the ODE more accurately at every NFE measured (it meets the 0.01 "
              "target at NFE 2000, where the default quadratic grid does not), yet its FD is far worse at NFE "
              "20–100: its long last steps leave structure that the classifier's features see and the RMSE "
              "barely does. The default stays quadratic.", ""]
    by_lam = {r["options"].get("lam", SAMPLERS["csps-d"].options["lam"]): r for r in rows
              if "rmse" in r and r["model"] == "fmnist-psld" and r["sampler"] == "csps-d" and r["project"]
              and r["nfe"] == 2000 and r["grid"] == "quadratic" and set(r["options"]) <= {"lam"}}
    if len(by_lam) > 1:
        lines += [f"csps-d at NFE 2000 on the default grid by λ (the default is "
                  f"{SAMPLERS['csps-d'].options['lam']:g}; same draws and reference): "
                  + ", ".join(f"λ = {lam:g}: {r['rmse']:.3g}" for lam, r in sorted(by_lam.items()))
                  + (". No λ measured brings it within 0.01: at this NFE its error is the grid's and the "
                     "scheme's, not λ's." if min(r["rmse"] for r in by_lam.values()) > 0.01 else "."), ""]
    return lines


def stability_section(rows: list[dict]) -> list[str]:
    """Max |x| over NFE per sampler with its stable range ignored, and the edge cosi refuses below."""
    from stability_table import markdown, scans  # benchmarks/ is on the path when this file runs as a script

    from cosi.core.integrators.stability import STABLE_MAX_ABS

    lines = ["## Stable ranges (`cosi.core.integrators.stability`)", ""]
    if not rows:
        return lines + ["Not measured yet.", ""]
    r0 = next(r for r in rows if "max_abs" in r)
    cld = [r for r in rows if r["model"] == "fmnist-cld" and "max_abs" in r]
    on = " and ".join(dict.fromkeys("the 2-core CPU" if r.get("device_name", "cpu") == "cpu" else r["device_name"]
                                    for r in cld))
    cld_text = "" if not cld else (
        f" fmnist-cld's rows: {cld[0]['n']} draws on {on}, reference {cld[0]['reference']} (`python "
        f"benchmarks/study.py --stage stability --model fmnist-cld --accuracy-n {cld[0]['n']} --accuracy-reference "
        f"{cld[0]['reference']}`).")
    lines += [f"The largest |x| over 256 draws (seed 0) of each sampler on its default grid with the projection on "
              f"(ε-form samplers on PSLD and CLD) and `allow_unstable=True`, {r0.get('device_name', r0['device'])}, "
              f"float32 network, TF32 off (`python benchmarks/study.py --stage stability`).{cld_text} In bold: beyond "
              f"{STABLE_MAX_ABS:g} (the data lie in [−1, 1]; the converged solution reaches 1.47). 'Stable from': the "
              "smallest NFE from which every larger measured NFE stays inside; cosi refuses fewer calls (a "
              "stochastic preset also no fewer than its exact-moment edge, `integrators/eta.py`) and names the "
              "range, unless `allow_unstable=True`. The table in `stability.py` is written by "
              "`python benchmarks/stability_table.py`.", ""]
    return lines + markdown(scans()) + [""]


def _setting(r: dict, opts: dict) -> str:
    """A frontier row's sampler and its options beyond the defaults, as a label."""
    opts = dict(opts)
    if r.get("grid") not in (None, "own") and isinstance(r.get("grid"), str) and r["grid"] != default_grid(r):
        opts["grid"] = r["grid"]
    return r["sampler"] + "".join(f", {k}={v}" for k, v in sorted(opts.items()))


FRONTIER_NFES = [4, 5, 6, 8, 10, 15, 20]


def frontier_section(rows: list[dict], fd_rows: list[dict]) -> list[str]:
    """Accuracy (seeds 0 / 1) and FD (seed 0) at NFE 4–20 of the data-prediction samplers and every peer setting."""
    lines = ["## The low-NFE frontier (issue 21): NFE 4–20", ""]
    ok = [r for r in rows if "rmse" in r or "error" in r]
    if not ok:
        return lines + ["Not measured yet.", ""]
    r0 = next(r for r in ok if "rmse" in r)
    lines += [f"Accuracy: RMSE against {r0['reference']} from 256 draws, seed 0 / seed 1 (a different set of draws; "
              f"the spread between them is the measure's sampling noise), {r0.get('device_name', r0['device'])}, "
              "float32, TF32 off (`python benchmarks/study.py --stage frontier`). FD: 10k samples, seed 0, bf16 "
              "network (`--stage frontier_fd`). Peers run through diffusers with the setting named; 'inf': the "
              "peer's output was not finite. A cell with one number: seed 0 only (the grid=uniform and "
              "lower_order_final rows and fmnist-cld's came from later, shorter GPU calls, `benchmarks/device_cld.sh` "
              "and `study.py --stage frontier --model fmnist-cld`, which reached seed 1 for some cells); FD is shown "
              "where it was measured. fmnist-cld's gddim-2m defaults to the "
              "logsnr grid, so its logsnr row is its default.", ""]
    import json

    fds = {}
    for r in fd_rows:
        if "fd" in r:
            fds[(r["model"], _setting(r, json.loads(r["key"])[3]), r["nfe"])] = r["fd"]  # the options as asked
    for model in ("fmnist-vp", "fmnist-psld", "fmnist-cld"):
        mine = [r for r in ok if r["model"] == model]
        if not mine:
            continue
        acc = defaultdict(dict)
        for r in mine:
            acc[_setting(r, r["options"])][(r["nfe"], r["seed"])] = r.get("rmse", float("inf"))
        lines += [f"### {model}", "", "| sampler, setting | " + " | ".join(f"NFE {k}" for k in FRONTIER_NFES) + " |",
                  "|---|" + "---|" * len(FRONTIER_NFES)]
        for name, cells in acc.items():
            vals = []
            for k in FRONTIER_NFES:
                a, b = cells.get((k, 0)), cells.get((k, 1))
                v = "—" if a is None else f"{a:.3g}" + ("" if b is None else f" / {b:.3g}")
                f = fds.get((model, name, k))
                vals.append(v + ("" if f is None else f"; FD {f:.2f}"))
            lines.append(f"| {name} | " + " | ".join(vals) + " |")
        lines.append("")
    return lines


def second_order_splitting_section(rows: list[dict]) -> list[str]:
    """csps-2m beside csps-d on fmnist-psld: RMSE per NFE, the projection on, and the order each shows."""
    import math

    lines = ["## A second-order splitting on the learned model: csps-2m against csps-d", ""]
    def pick(sampler):  # default options first; a stability row (allow_unstable) where no such row exists
        out = {}
        for r in rows:
            if (r.get("model") == "fmnist-psld" and r["sampler"] == sampler and r["project"] and "rmse" in r
                    and r["options"] in ({}, {"allow_unstable": True}) and r["grid"] == default_grid(r)):
                if r["nfe"] not in out or not r["options"]:
                    out[r["nfe"]] = r
        return out

    new, old = pick("csps-2m"), pick("csps-d")
    if not new:
        return lines + ["Not measured yet.", ""]
    nfes = sorted(set(new) | {k for k in old if k in (5, 10, 20, 50, 100, 2000, 4000)})
    r0 = next(iter(new.values()))
    cell = lambda d, k: "—" if k not in d else f"{d[k]['rmse']:.3g}" + (  # noqa: E731
        f" (max {d[k]['max_abs']:.3g})" if d[k]["max_abs"] > 2 else "")
    lines += [f"RMSE against {r0['reference']} from the same {r0['n']} draws, {r0.get('device_name', r0['device'])}, "
              "float32, TF32 off, projection on, default grids (`python benchmarks/study.py --stage accuracy`, and "
              "`--stage stability` for NFEs the accuracy stage does not visit). csps-2m is refused below NFE 15, its "
              "stable range (\"Stable ranges\"): its cells below it come from runs before that range was measured "
              "or with `allow_unstable=True`.", "",
              "| sampler | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|" + "---|" * len(nfes)]
    lines += [f"| {s} | " + " | ".join(cell(d, k) for k in nfes) + " |" for s, d in (("csps-d", old), ("csps-2m", new))]
    hi = [k for k in (100, 2000) if k in new and k in old]
    if len(hi) == 2:
        order = lambda d: math.log(d[hi[0]]["rmse"] / d[hi[1]]["rmse"]) / math.log(hi[1] / hi[0])  # noqa: E731
        lines += ["", f"Observed order from NFE {hi[0]} to {hi[1]}: csps-d {order(old):.2f}, csps-2m {order(new):.2f}."]
    return lines + [""]


def autogrid_section(rows: list[dict], fd_rows: list[dict]) -> list[str]:
    """grid="auto" on the learned models: held-out RMSE of the default and tuned grids, the tuning's cost, FD."""
    lines = ["## grid=\"auto\" on the learned models", ""]
    if not rows:
        return lines + ["Not measured yet.", ""]
    fd = {(r["model"], r["sampler"], r["nfe"]): r["fd"] for r in fd_rows if "fd" in r}
    r0 = rows[0]
    lines += [f"Tuned on 64 probe draws (`cosi.tune_grid`, search: best named grid, then one time at a time), judged "
              f"on {r0['n']} other draws against {r0['reference']}; {r0['device_name']}, float32, TF32 off "
              "(`python benchmarks/study.py --stage autogrid`). In brackets the median per-draw RMSE. FD of the tuned "
              "grid: 10k samples, seed 0, bf16 network (`--stage autogrid_fd`). The tuning's cost: network calls on "
              "the probe and wall seconds, the first cell of a model including its compilation.", "",
              "| model | sampler | NFE | default grid | tuned grid | calls | seconds | FD (tuned) |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = fd.get((r["model"], r["sampler"], r["nfe"]))
        lines.append(f"| {r['model']} | {r['sampler']} | {r['nfe']} | {r['default_rmse']:.3g} "
                     f"({r['default_rmse_median']:.2g}) | {r['auto_rmse']:.3g} ({r['auto_rmse_median']:.2g}) | "
                     f"{r['tuning_calls']} | {r['tuning_seconds']:.0f} | {'—' if f is None else f'{f:.2f}'} |")
    return lines + [""]


def targets_section(R: dict, warm: list[dict]) -> list[str]:
    """Issue 21's targets from the committed rows: per model, the best cosi setting at NFE 10 (and 5, 8) in accuracy
    against gddim-2m's default on the same draws, its FD against the converged sampler's, and on fmnist-vp the best
    peer setting beside it."""
    import json

    lines = ["## Issue 21's targets, as measured", ""]
    acc, fd = defaultdict(dict), defaultdict(dict)  # (model, nfe, seed) -> {setting: value}
    peer = lambda s: SAMPLERS[s].build is None  # noqa: E731  (run by diffusers)
    for r in R["frontier"]:
        if "rmse" in r:
            acc[(r["model"], r["nfe"], r["seed"])][_setting(r, r["options"])] = r["rmse"]
    for r in R["frontier_fd"]:
        if "fd" in r:
            fd[(r["model"], r["nfe"])][_setting(r, json.loads(r["key"])[3])] = r["fd"]
    for r in R["autogrid"]:
        acc[(r["model"], r["nfe"], 0)][f"{r['sampler']}, grid=auto"] = r["auto_rmse"]
    for r in R["autogrid_fd"]:
        if "fd" in r:
            fd[(r["model"], r["nfe"])][f"{r['sampler']}, grid=auto"] = r["fd"]
    for r in (r for r in warm if r["v"] > 0):  # v = 0: no skip, the run from T the frontier rows already have
        label = _setting({**r, "grid": None}, r.get("options", {})) + f", warm start v={r['v']:g}"
        acc[(r["model"], r["nfe"], r.get("seed", 0))][label] = r["warm"]["rmse"]
        if "fd_warm" in r:
            fd[(r["model"], r["nfe"])][label] = r["fd_warm"]
    converged = {r["model"]: r["fd"] for r in R["psld"] + R["vp"] + R["frontier_fd"]  # 10k samples, as every FD
                 if r.get("sampler") == "gddim-2m" and r.get("nfe") == 200 and "fd" in r and not r.get("grid")}
    if not acc:
        return lines + ["Not measured yet.", ""]
    best = lambda d, mine=True: min(((v, k) for k, v in d.items() if peer(k.split(",")[0]) != mine),  # noqa: E731
                                    default=(None, None))
    lines += ["Read from the rows of the sections above (`python benchmarks/render.py`). Accuracy: RMSE against "
              "gddim-2m@2000 on 256 draws of seed 0 / seed 1; the baseline is gddim-2m with its defaults on the same "
              "draws (the issue quoted 0.31 for fmnist-psld at NFE 10 from an earlier measurement; on these draws it "
              "is the value shown). Settings measured on seed 0 only (grid=auto, the warm start) compete on seed 0. "
              "FD: 10k samples against the test split, the converged sampler's too (gddim-2m at NFE 200, seed 0; "
              "FD is biased by the sample count, so both sides use the same). Targets: accuracy at NFE 10 at most ⅓ of the baseline; FD at most 1.1× the "
              "converged FD at NFE 10 and 1.5× at NFE 5.", "",
              "| model | NFE | seed | gddim-2m default | best cosi setting | RMSE | ratio | best peer setting | RMSE |",
              "|---|---|---|---|---|---|---|---|---|"]
    for model in ("fmnist-vp", "fmnist-psld", "fmnist-cld"):
        for nfe in (5, 8, 10):
            for seed in (0, 1):
                cells = acc.get((model, nfe, seed))
                v, k = best(cells or {})
                if v is None or "gddim-2m" not in cells:
                    continue
                pv, pk = best(cells, mine=False)
                base = cells["gddim-2m"]
                lines.append(f"| {model} | {nfe} | {seed} | {base:.3g} | {k} | {v:.3g} | {v / base:.2f} | "
                             f"{pk or '—'} | {'—' if pv is None else f'{pv:.3g}'} |")
    lines += ["", "| model | NFE | converged FD | best cosi setting by FD | FD | ratio | best peer setting by FD | FD |",
              "|---|---|---|---|---|---|---|---|"]
    for model in ("fmnist-vp", "fmnist-psld", "fmnist-cld"):
        for nfe in (5, 8, 10):
            cells = fd.get((model, nfe), {})
            v, k = best(cells)
            if v is None:
                continue
            pv, pk = best(cells, mine=False)
            c = converged.get(model)
            lines.append(f"| {model} | {nfe} | {'—' if c is None else f'{c:.3g}'} | {k} | {v:.3g} | "
                         f"{'—' if c is None else f'{v / c:.2f}'} | {pk or '—'} | {'—' if pv is None else f'{pv:.3g}'} |")
    return lines + ["", "An FD below the converged sampler's is not a more faithful sample of the model: a coarse "
                    "sampler's error can move the samples' features towards the test split's. The accuracy table is "
                    "the judge of a solver; the FD table says whether the samples' quality holds.", ""]


def file_section(title: str, path: Path, body) -> list[str]:
    """A section drawn from the JSON rows of one file: its title, then ``body(rows)``, or 'Not measured yet.'."""
    rows = read_rows(path)
    return [f"## {title}", ""] + (body(rows) if rows else ["Not measured yet."]) + [""]


def warmstart_table(rows: list[dict]) -> list[str]:
    """The Gaussian warm start at full size: accuracy and FD from T and from the chosen t_skip."""
    r0 = rows[0]
    lines = [f"`python benchmarks/warmstart_fmnist.py --model MODEL --stats shipped --sampler S --grid G --nfe N "
             f"--fd 10000` ({r0['device']}; `benchmarks/device_cld.sh`, `benchmarks/device_autogrid.sh`): "
             f"RMSE against {r0['reference']} from "
             f"{r0['n']} held-out draws (the frontier's seed 0, or seed 1 where the seed column says so), float32, "
             "TF32 off; t_skip chosen on a probe of "
             f"{r0['probe']} other draws from 11 log-SNR fractions v (0 … 0.5); FD of 10k samples (seed 0; float32 "
             "network, eager, where the frontier's FD ran bf16 in CUDA graphs) against the test split. The shipped "
             "statistics (`fashion-mnist-train.gauss.safetensors`) cost nothing at run time; computing them from the "
             "60k training images takes 2–3 s on the 2-core CPU (`benchmarks/gauss_stats.py`).",
             "", "| model | sampler, grid | NFE | seed | RMSE from T → warm (median per draw) | FD from T → warm | "
             "v (t_skip) | choosing v: calls of the probe batch, s |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], r.get("seed", 0), r["nfe"])):
        opts = ", ".join(f"{k}={v}" for k, v in sorted(r.get("options", {}).items())) or "default"
        fd = (f"{r['fd_from_T']:.2f} → {r['fd_warm']:.2f}" if "fd_warm" in r else "—")
        lines.append(f"| {r['model']} | {r['sampler']}, {opts} | {r['nfe']} | {r.get('seed', 0)} | "
                     f"{r['from_T']['rmse']:.3f} "
                     f"({r['from_T']['rmse_median']:.3f}) → {r['warm']['rmse']:.3f} ({r['warm']['rmse_median']:.3f}) | "
                     f"{fd} | {r['v']:g} ({r['t_skip']:.3f}) | {r['choose_calls']}, {r['choose_seconds']:.1f}"
                     + (f"; grid=auto from T and from t_skip: {r['tuning_calls']}, {r['tuning_seconds']:.0f}"
                        if "tuning_calls" in r else "") + " |")
    return lines


def overhead_table(rows: list[dict]) -> list[str]:
    """The projection's cost in the whole-sampler CUDA graph: sampler time / bare calls, projection on and off."""
    r0 = rows[0]
    lines = [f"`python benchmarks/projection_overhead.py`: fmnist-psld, NFE {r0['nfe']}, batch {r0['batch_size']}, "
             f"{r0['device_name']}, {r0['dtype']} network, each sampler as one CUDA graph against the same calls "
             "bare; runs alternate on and off. Ratio = sampler time / bare calls (median of 5 per run; each run "
             "listed).", "", "| sampler | projection on | projection off |", "|---|---|---|"]
    by = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by[r["sampler"]][r["project"]].append(r["ratio"])
    for s, d in by.items():
        lines.append(f"| {s} | {', '.join(f'{v:.4f}' for v in d[True]) or '—'} | "
                     f"{', '.join(f'{v:.4f}' for v in d[False]) or '—'} |")
    return lines


def mutation_section(path: Path) -> list[str]:
    import json

    lines = ["## The moment tests see a 1.1× noise mutation (issue 19)", ""]
    if not path.is_file():
        return lines + ["Not measured yet.", ""]
    rows = json.loads(path.read_text())
    lines += ["`PYTHONPATH=src python benchmarks/mutation_demo.py`: csps-s on PSLD with its O-step noise scaled by 1.1 "
              "(which passed the old MMD-floor test: MMD 0.103 under its floor 0.107). The exact output covariance "
              "error (Gaussian data of variances 0.01, 0.1, 1; float64) against the unmutated plan's; "
              "tests/test_stochastic.py asserts the mutated error is above 20× the true one and above 0.2 at NFE 400, "
              "and the weak-order test bounds the unmutated one.", "",
              "| NFE | covariance error | mutated (noise × 1.1) |", "|---|---|---|"]
    lines += [f"| {r['nfe']} | {r['cov_error']:.3g} | {r['cov_error_mutated']:.3g} |" for r in rows]
    return lines + [""]


def projection_fd_section(rows: list[dict], plain: list[dict]) -> list[str]:
    """FD of the ε-form samplers on fmnist-psld with the projection on (project stage) beside the plain-ε rows."""
    lines = ["## fmnist-psld: FD with the consistency projection of ε", ""]
    rows = [r for r in latest_rows(rows) if "fd" in r and r.get("project")]
    if not rows:
        return lines + ["Not measured yet.", ""]
    old = {(r["sampler"], r["nfe"]): r["fd"] for r in plain
           if "fd" in r and r.get("seed") == 0 and not r.get("project") and not {"lam", "eta", "grid"} & set(r)}
    lines += ["Seed 0, default options; plain ε: the psld stage's rows measured before the projection.", "",
              "| sampler | NFE | FD, plain ε | FD, projected ε |", "|---|---|---|---|"]
    for r in sorted((r for r in rows if r.get("lam") != "auto"), key=lambda r: (r["sampler"], r["nfe"])):
        o = old.get((r["sampler"], r["nfe"]))
        lines.append(f"| {r['sampler']} | {r['nfe']} | {'—' if o is None else f'{o:.2f}'} | {r['fd']:.2f} |")
    auto = [r for r in rows if r.get("lam") == "auto"]
    if auto:
        lines += ["", "lam=auto (by FD) with the projection:", "", "| sampler | NFE | λ chosen | FD |", "|---|---|---|---|"]
        lines += [f"| {r['sampler']} | {r['nfe']} | {r['lam_chosen']:.3g} | {r['fd']:.2f} |"
                  for r in sorted(auto, key=lambda r: r["nfe"])]
    table = {(r["sampler"], r["nfe"]): r["fd"] for r in rows if r.get("lam") != "auto"}
    lines += ["", "The paper's Table 2 orderings with the projection:", "", "| claim | NFE | FD | holds |",
              "|---|---|---|---|"]
    for better, worse, k in PAPER_ORDER:
        a, b = table.get((better, k)), table.get((worse, k))
        lines.append(f"| {better} < {worse} | {k} | " + ("not measured | — |" if a is None or b is None else
                                                         f"{a:.2f} vs {b:.2f} | {'yes' if a < b else 'no'} |"))
    return lines + [""]


SPEED_BEGIN, SPEED_END = "<!-- overhead tables: benchmarks/render.py -->", "<!-- end of overhead tables -->"
CONFIGS = [(256, 50), (256, 20), (64, 50), (64, 20)]  # (batch, NFE) columns of the overhead tables
MODES = {"graph": "the whole sampler as one CUDA graph against the bare calls as one CUDA graph (network "
                  "kernels eager)",
         "graph+compile": "as graph, with the network compiled by torch.compile (mode 'default') in both arms",
         "compiled": "the network compiled with its own CUDA graphs (mode 'reduce-overhead'), updates eager",
         "eager": "everything eager"}


def speed_section(rows: list[dict]) -> list[str]:
    """Per model and mode: ratio sampler/bare and images/s per (batch, NFE), peak memory."""
    lines = ["## Sampler overhead (`cosi bench speed`)", ""]
    ok = [r for r in rows if "ratio" in r]
    if not ok:
        return lines + ["Not measured yet.", ""]
    devices = sorted({r["device_name"] for r in ok})
    lines += [f"Measured on {', '.join(devices)}, network in {', '.join(sorted({r['dtype'] for r in ok}))}, "
              "state float32; median of 3 interleaved repeats after a warm-up, CUDA events. A cell is the ratio "
              "sampler / bare network calls (images/s of the sampler); '—': not measured, or the sampler cannot "
              "meet that NFE. Peak memory: the first use (a graph's capture included) at NFE 50 and at 2×NFE, "
              "batch 256; it includes what earlier cells left allocated (docs/performance.md, 'Memory').", ""]
    for model in dict.fromkeys(r["model"] for r in ok):
        for mode in MODES:
            sel = [r for r in ok if r["model"] == model and r.get("mode", "eager") == mode]
            if not sel:
                continue
            cell = {(r["sampler"], r["batch_size"], r["nfe"]): r for r in sel}
            bare = {(r["batch_size"], r["nfe"]): 1e3 * r["bare_s"] / r["nfe"] for r in sel}
            per_call = ", ".join(f"batch {b}: {ms:.2f} ms" for (b, k), ms in sorted(bare.items()) if k == 50)
            lines += [f"### {model}, {mode}", "", f"{MODES[mode]}. One bare network call: {per_call}.", "",
                      "| sampler | " + " | ".join(f"batch {b}, NFE {k}" for b, k in CONFIGS) + " | peak MiB (NFE, 2×NFE) |",
                      "|---|" + "---|" * (len(CONFIGS) + 1)]
            for s in dict.fromkeys(r["sampler"] for r in sel):
                cols = []
                for b, k in CONFIGS:
                    r = cell.get((s, b, k))
                    cols.append("—" if r is None else f"{r['ratio']:.3f} ({r['images_per_s']:.0f})")
                m = cell.get((s, 256, 50))
                mem = "—" if m is None or m.get("peak_memory_bytes") is None else \
                    f"{m['peak_memory_bytes'] / 2**20:.0f}, {m['peak_memory_bytes_2nfe'] / 2**20:.0f}"
                lines.append(f"| {s} | " + " | ".join(cols) + f" | {mem} |")
            lines.append("")
    return lines


def tune_section(rows: list[dict], psld: list[dict]) -> list[str]:
    """The stochastic splitting samplers on the learned PSLD model: η × o_part, FD per NFE."""
    lines = ["## Stochastic splitting samplers: η and the O flow (fmnist-psld)", ""]
    ok = [r for r in rows if "fd" in r]
    if not ok:
        return lines + ["Not measured yet.", ""]
    nfes = sorted({r["nfe"] for r in ok})
    lines += ["What O integrates with the noise (`o_part`): 'friction' (each block's own drift, diag F; the "
              "default), 'none' (noise only; A and B carry all of F), 'linear' (all of F, as SSCS). Seed 0, "
              "η_x: the position's own noise scale (default η). FD as above; the default rows (η = 'auto' = "
              "min(1, NFE/50)) are those of the FD-vs-NFE table. "
              "For comparison, `em` and `gddim-s` at the same NFE.", "",
              "| sampler | η | η_x | o_part | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
              "|---|---|---|---|" + "---|" * len(nfes)]
    setting = lambda r: (r["sampler"], r["eta"], r.get("eta_x", r["eta"]), r.get("o_part", "friction"))  # noqa: E731
    cell = {(*setting(r), r["nfe"]): r["fd"] for r in ok}
    for st in dict.fromkeys(map(setting, ok)):
        lines.append(f"| {st[0]} | {st[1]:g} | {st[2]:g} | {st[3]} | " + " | ".join(
            f"{cell[(*st, k)]:.2f}" if (*st, k) in cell else "—" for k in nfes) + " |")
    base = {(r["sampler"], r["nfe"]): r["fd"] for r in psld if "fd" in r and not {"lam", "eta", "grid"} & set(r)}
    for s in ("csps-s", "sps-s", "em", "gddim-s"):
        if any((s, k) in base for k in nfes):
            lines.append(f"| {s} | default | default | default | " + " | ".join(
                f"{base[(s, k)]:.2f}" if (s, k) in base else "—" for k in nfes) + " |")
    return lines + [""]


def tuned_by_fd(r: dict) -> bool:
    """A lam=auto row whose λ was chosen by the FD objective (cosi.evaluation.autolam.FDObjective)."""
    return r.get("lam") == "auto" and str(r.get("tuning_reference", "")).startswith("FD vs")


def seed_noise(R: dict) -> str:
    """The FD's seed-to-seed spread over every cell measured with two seeds: the noise to assume for a
    cell measured once."""
    by_cell = defaultdict(dict)
    for r in R["psld"] + R["vp"] + R["seeds"] + R["lam"]:
        if "fd" in r and r["n"] == 10_000:
            by_cell[(r["model"], r["sampler"], r["nfe"], str(r.get("lam")), str(r.get("eta")))][r["seed"]] = r["fd"]
    rel = sorted(abs(v[0] - v[1]) / (v[0] + v[1]) * 2 for v in by_cell.values() if {0, 1} <= set(v))
    if not rel:
        return ""
    return (f"For a cell measured once, assume the spread of the {len(rel)} cells measured with two seeds: "
            f"|FD(seed 0) − FD(seed 1)| / their mean has median {100 * statistics.median(rel):.1f} % and maximum "
            f"{100 * rel[-1]:.1f} %; KID cells show their spread over subsets.")


def lam_spread(rows: list[dict], s: str, proj: bool) -> list[str]:
    """One line on a λ curve: the range of λ that lam=auto by FD chose over the NFEs, and the FD at the sampler's
    default λ against auto's."""
    auto = {r["nfe"]: r for r in rows if tuned_by_fd(r) and r["seed"] == 0}
    default = SAMPLERS[s].options["lam"]
    at_default = {r["nfe"]: r["fd"] for r in rows if r.get("lam") == default and r["seed"] == 0}
    both = sorted(k for k in auto if k in at_default)
    if not both:
        return []
    chosen = [auto[k]["lam_chosen"] for k in sorted(auto)]
    ratios = [at_default[k] / auto[k]["fd"] for k in both]
    return [f"{'With the projection' if proj else 'Plain ε'}: lam=auto by FD chose λ from {min(chosen):.2f} to "
            f"{max(chosen):.2f} over NFE {min(auto)}–{max(auto)}; the default λ = {default:g} has "
            f"{min(ratios):.2f}–{max(ratios):.2f} times auto's FD at NFE {', '.join(map(str, both))}.", ""]


def lam_section(R: dict, every_lam: list[dict], figs: Path, cpu_lam: list[dict] = ()) -> list[str]:
    """FD vs λ, and the check of lam=auto: by the FD objective (the latest rows of R["lam"]) against
    the best λ of the grid at each NFE, and beside it the accuracy proxy's choice (the latest such
    row of ``every_lam``, the lam rows before the latest-per-key selection)."""
    lines = ["## λ", ""]
    lam_rows = [r for r in R["lam"] if "fd" in r]
    if not lam_rows:
        return lines + ["Not measured yet.", ""]
    lines += ["lam=auto is checked against the best λ of the measured grid (coarse: −6 … 4; fine: steps of "
              "0.25 on PSLD, 0.125 on VP, where measured; seed 0, the same prior draws as auto's seed 0) at each "
              "NFE; 'auto / best' is the ratio of their FDs at seed 0 (issue 4 asks ≤ 1.05). lam=auto by FD: "
              "λ chosen by the FD of 2000 samples (other prior draws than the reported ones) to the Fashion-MNIST "
              "*train* split's statistics; every FD reported is to the *test* split. lam=auto by accuracy: "
              "λ chosen by the distance of 16 samples to the ODE solution of gddim-2m at max(500, 4·NFE) calls "
              "from the same prior draws, no data needed (the default of `cosi.sample`).", ""]
    # the plain-ε curves (the lam stage, before the projection) and, where the project stage measured one, the
    # curve with the consistency projection on (the default since issue 19)
    projected = [r for r in R["project"] if "fd" in r and "lam" in r and r["lam"] != "auto"]
    curves = sorted({(r["model"], r["sampler"], False) for r in lam_rows}
                    | {(r["model"], r["sampler"], True) for r in projected})  # a sampler's two curves together
    for model, s, proj in curves:
        default = {"lam": SAMPLERS[s].options["lam"]}  # the FD-vs-NFE table's row of s is a point of its λ curve
        source, defaults = (R["project"], R["project"]) if proj else (lam_rows, R["psld" if model == "fmnist-psld"
                                                                                  else "vp"])
        rows = [r for r in source if r["sampler"] == s and r["model"] == model and "lam" in r and "fd" in r] + [
            {**r, **default} for r in defaults
            if r["sampler"] == s and "fd" in r and not {"lam", "eta", "grid"} & set(r) and r["nfe"] <= 100]
        fig = plot_fd_vs_lam(rows, s, figs / f"bench_lam_{s}{'_projected' if proj else ''}.png")
        steps = sorted({r["lam"] for r in rows if isinstance(r.get("lam"), (int, float))})
        lines += [f"### {s} ({model}{', consistency projection on' if proj else ''})", "",
                  f"λ measured: {', '.join(f'{v:g}' for v in steps)} (not every λ at every NFE)."
                  + (" Plain ε, as the paper: these curves predate the projection." if not proj
                     and any(c[1:] == (s, True) for c in curves) else ""), "",
                  "| NFE | best λ on the grid (FD) | lam=auto by FD: λ (FD seed 0; seed 1) | auto / best | "
                  "lam=auto by accuracy: λ (FD) | its auto / best |", "|---|---|---|---|---|---|"]
        for k in sorted({r["nfe"] for r in rows}):
            grid = [r for r in rows if r["nfe"] == k and isinstance(r.get("lam"), (int, float)) and r["seed"] == 0]
            if not grid:
                continue
            best = min(grid, key=lambda r: r["fd"])
            by_fd = {r["seed"]: r for r in rows if r["nfe"] == k and tuned_by_fd(r)}
            accurate = next((r for r in reversed(every_lam if not proj else R["project"])
                             if r["model"] == model and r["sampler"] == s
                             and r["nfe"] == k and r.get("lam") == "auto" and r.get("tuning_search")
                             and not tuned_by_fd(r)), None)
            a0 = by_fd.get(0)
            cell = "—" if a0 is None else f"{a0['lam_chosen']:.2f} ({a0['fd']:.2f}" + (
                f"; {by_fd[1]['fd']:.2f})" if 1 in by_fd else ")")
            ratio = f"{a0['fd'] / best['fd']:.3f}" if a0 else "—"
            cpu = next((r for r in cpu_lam if r["model"] == model and r["sampler"] == s and r["nfe"] == k
                        and (proj or (model, s, True) not in curves)), None)  # chosen with the projection on
            at_cpu = next((r for r in grid if cpu and r["lam"] == cpu["lam"]), None)  # the FD at the CPU's choice
            acc = (f"{accurate['lam_chosen']:.2f} ({accurate['fd']:.2f})" if accurate
                   else f"{cpu['lam']:.2f} (CPU; {at_cpu['fd']:.2f})" if at_cpu
                   else f"{cpu['lam']:.2f} (CPU; FD not measured)" if cpu else "—")
            chosen = accurate or at_cpu
            acc_ratio = f"{chosen['fd'] / best['fd']:.3f}" if chosen else "—"
            lines.append(f"| {k} | {best['lam']:g} ({best['fd']:.2f}) | {cell} | {ratio} | {acc} | {acc_ratio} |")
        lines += ["", f"![FD vs λ, {s}](figures/{fig.name})", ""] + lam_spread(rows, s, proj)
    if cpu_lam:
        lines += ["'CPU': λ by the accuracy proxy chosen on the 2-core CPU "
                  "(`PYTHONPATH=src python benchmarks/lam_accuracy_cpu.py`, `benchmarks/results/lam_accuracy_cpu.jsonl`), "
                  "the proxy's value at every λ in that file; the FD at that λ is the lam stage's row at that λ "
                  "(GPU, as the rest of the table), or 'FD not measured'.", ""]
    calls = defaultdict(set)
    for r in filter(tuned_by_fd, lam_rows):
        calls[r["nfe"]].add(r["tuning_calls"] // r["nfe"])
    if calls:
        lines += ["Cost of lam=auto by FD: runs of the sampler on the probe of 2000 (each NFE calls), by NFE: "
                  + ", ".join(
            f"{k}: {min(c)}–{max(c)}" for k, c in sorted(calls.items())) + ", i.e. {:.1f}–{:.1f} times the "
            "network work of one 10k-sample run at that NFE. The csps-d grid is coarse only (steps of 1 or 2): "
            "its ratios below 1 say the grid missed the optimum, not that auto beat a fine grid.".format(
                *(2000 * f(map(f, calls.values())) / 10_000 for f in (min, max))), ""]
    return lines


def final_section(rows: list[dict], refs: dict) -> list[str]:
    """The final rows of 50k samples."""
    rows = [r for r in rows if "fd" in r]
    if not rows:
        return []
    lines = ["## Final rows, 50k samples", "", "| model | sampler | NFE | FD (50k) | KID | em 1000 steps (10k) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        em = refs.get((r["model"], "em"))
        lines.append(f"| {r['model']} | {r['sampler']} | {r['nfe']} | {r['fd']:.3f} | {r['kid']:.3g} ± "
                     f"{r['kid_std']:.2g} | {em['fd'] if em else float('nan'):.3f} |")
    return lines + ["", "FD is biased upwards at fewer samples; the 10k rows above and these are not comparable to "
                    "the third digit.", ""]


def load_results(results: Path) -> tuple[dict, list[dict]]:
    """The study's rows by file (for a cell measured again under new defaults, its last row), and
    every λ row with an FD (lam=auto rows tuned by earlier objectives too)."""
    R = {k: read_rows(results / f"{k}.jsonl")
         for k in ("psld", "vp", "lam", "tune", "seeds", "speed", "final", "accuracy", "project", "stability",
                   "frontier", "frontier_fd", "autogrid", "autogrid_fd")}
    every_lam = [r for r in R["lam"] if "fd" in r]
    for k in ("psld", "vp", "lam", "tune", "seeds", "final"):
        R[k] = latest_rows(R[k])
    return R, every_lam


def header(R: dict, floors) -> list[str]:
    """Where the numbers come from: hardware, samples per FD, the data floor, the seeds."""
    every = [r for rs in R.values() for r in rs if "fd" in r]
    hw = sorted({r.get("device", "?") for r in every}) or ["not measured"]
    ns = sorted({r["n"] for r in every}) or ["—"]
    return ["# Benchmarks", "",
            "Generated by `python benchmarks/render.py` from `benchmarks/results/study/*.jsonl` "
            "(written by `python benchmarks/study.py`) and `benchmarks/results/fmnist_fd.jsonl`. "
            f"Hardware: {', '.join(hw)}. Samples per FD: {', '.join(map(str, ns))}; FD in the shipped "
            "classifier's features against the 10k Fashion-MNIST test images.",
            f"Data floor (FD of 10k training images vs the test set, two draws): "
            f"{', '.join(f'{f:.3f}' for f in floors) if floors else 'not measured'}. "
            "Where two seeds were run, a cell shows mean ± standard deviation over seeds (the FD's sampling "
            f"noise); a cell without ± is one seed. {seed_noise(R)}", ""]


def kid_table(rows: list[dict], names: list[str]) -> list[str]:
    kids = {(r["sampler"], r["nfe"]): r for r in rows if "kid" in r and not {"lam", "eta", "grid"} & set(r)}
    if not kids:
        return []
    lines = ["", "KID in the same features (± its spread over 100 subsets of 1000), seed 0:", "",
             "| sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |", "|---|" + "---|" * len(NFES)]
    for s in names:
        cells = [kids.get((s, k)) for k in NFES]
        lines.append(f"| {s} | " + " | ".join("—" if r is None else f"{r['kid']:.3g} ± {r['kid_std']:.2g}"
                                              for r in cells) + " |")
    return lines


def first_within_table(table: dict, names: list[str], ode: float, sde: float) -> list[str]:
    """The first NFE at which each sampler's FD comes within 5 % of the 1000-step references."""
    lines = ["", "The first NFE at which a sampler's FD comes within 5 % of (or below) a 1000-step "
                 f"reference: the reverse SDE's (em, {sde:.3f}; the best) and the probability-flow ODE's "
                 f"(euler, {ode:.3f}; on PSLD far from converged: the data-prediction samplers reach about "
                 "1.0 deterministically); '>200': not within NFE 200.", "",
             "| sampler | within 5 % of em 1000 | within 5 % of euler 1000 |",
             "|---|---|---|"]
    first = lambda s, ref: next((str(k) for k in NFES if (s, k) in table  # noqa: E731
                                 and table[(s, k)][0] <= 1.05 * ref), ">200")
    return lines + [f"| {s} | {first(s, sde)} | {first(s, ode)} |" for s in names]


def paper_order_table(table: dict, lam_rows: list[dict], model: str) -> list[str]:
    """The paper's orderings (its Table 2), at the default λ and with lam=auto by FD."""
    tuned = {(r["sampler"], r["nfe"]): r["fd"] for r in lam_rows
             if r.get("model") == model and "fd" in r and r["seed"] == 0 and tuned_by_fd(r)}
    lines = ["### The paper's orderings (its Table 2) on this model", "",
             "The paper tunes λ; the last column takes lam=auto (by FD, seed 0) where the sampler has a λ "
             "and it was measured, the default λ elsewhere.", "",
             "| claim | NFE | ours (default λ) | holds | with lam=auto | holds |",
             "|---|---|---|---|---|---|"]
    for better, worse, k in PAPER_ORDER:
        a, b = table.get((better, k)), table.get((worse, k))
        if a is None or b is None:
            lines.append(f"| {better} < {worse} | {k} | not measured | — | — | — |")
            continue
        noise = max(a[1] or 0, b[1] or 0)
        verdict = lambda x, y: (  # noqa: E731
            "yes" if x < y - noise else ("no" if x > y + noise else "within noise"))
        ta, tb = tuned.get((better, k), a[0]), tuned.get((worse, k), b[0])
        lines.append(f"| {better} < {worse} | {k} | {a[0]:.2f} vs {b[0]:.2f} | {verdict(a[0], b[0])} | "
                     f"{ta:.2f} vs {tb:.2f} | {verdict(ta, tb)} |")
    return lines + [""]


def model_section(model: str, key: str, R: dict, refs: dict, figs: Path) -> list[str]:
    """One model's FD vs NFE table, its KID, the NFE to reach the references, the figure and (PSLD)
    the paper's orderings."""
    table, names = fd_table(R[key], [r for r in R["seeds"] if r.get("model") == model])
    lines = [f"## {model}: FD vs NFE", ""]
    if not names:
        return lines + ["Not measured yet.", ""]
    ref_txt = ", ".join(f"{s} 1000 steps: {refs[(model, s)]['fd']:.2f}" for s in ("euler", "em")
                        if (model, s) in refs) or "not measured"
    lines += [f"1000-step references: {ref_txt}.", "",
              "| sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |", "|---|" + "---|" * len(NFES)]
    for s in names:
        lines.append(f"| {s} | " + " | ".join(fmt(table.get((s, k))) for k in NFES) + " |")
    lines += kid_table(R[key], names)
    if (model, "euler") in refs and (model, "em") in refs:
        lines += first_within_table(table, names, refs[(model, "euler")]["fd"], refs[(model, "em")]["fd"])
    errors = sorted({r["sampler"] for r in R[key] if "error" in r} - set(names))
    if errors:
        lines += ["", f"Not in the table: {', '.join(errors)} (their calls per step meet none of these NFEs)."]
    fig = plot_fd_vs_nfe([r for r in R[key] if "fd" in r], figs / f"bench_fd_nfe_{key}.png", title=model)
    lines += ["", f"![FD vs NFE, {model}](figures/{fig.name})", ""]
    if key == "psld":
        lines += paper_order_table(table, R["lam"], model)
    return lines


def update_performance(perf: Path, speed_rows: list[dict]) -> bool:
    """Write the overhead tables into docs/performance.md between its markers; False without them."""
    if not (perf.is_file() and SPEED_BEGIN in (text := perf.read_text())):
        return False
    head, rest = text.split(SPEED_BEGIN, 1)
    table = "\n".join(["", *speed_section(speed_rows)[2:]])
    perf.write_text(head + SPEED_BEGIN + table + rest[rest.index(SPEED_END):])
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "study")
    ap.add_argument("--references", type=Path, default=ROOT / "benchmarks" / "results" / "fmnist_fd.jsonl")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args()
    figs = args.out.parent / "figures"
    R, every_lam = load_results(args.results)
    refs = {(r["model"], r["sampler"]): r for r in read_rows(args.references) if r.get("nfe") == 1000 and "fd" in r}
    floors = next((r["data_fd_floor"] for r in refs.values() if "data_fd_floor" in r), None)
    lines = header(R, floors)
    for model, key in (("fmnist-psld", "psld"), ("fmnist-vp", "vp")):
        lines += model_section(model, key, R, refs, figs)
    lines += accuracy_section(R["accuracy"])
    lines += csps_d_grid_section(R["accuracy"], R["frontier_fd"], R["project"])
    lines += second_order_splitting_section(R["accuracy"] + R["stability"])
    lines += stability_section(R["stability"])
    lines += frontier_section(R["frontier"], R["frontier_fd"])
    lines += autogrid_section(R["autogrid"], R["autogrid_fd"])
    lines += targets_section(R, read_rows(ROOT / "benchmarks" / "results" / "warmstart.jsonl"))
    lines += file_section("The Gaussian warm start (issue 21): full size",
                          ROOT / "benchmarks" / "results" / "warmstart.jsonl", warmstart_table)
    lines += projection_fd_section(R["project"], R["psld"])
    lines += file_section("The consistency projection's cost (CUDA graph)",
                          ROOT / "benchmarks" / "results" / "projection_overhead.jsonl", overhead_table)
    lines += mutation_section(ROOT / "benchmarks" / "results" / "mutation.json")
    lines += lam_section(R, every_lam, figs, read_rows(ROOT / "benchmarks" / "results" / "lam_accuracy_cpu.jsonl"))
    lines += final_section(R["final"], refs)
    lines += tune_section(R["tune"], R["psld"])
    lines += speed_section(R["speed"])
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out)
    perf = args.out.parent / "performance.md"  # the same overhead tables, between its markers
    if update_performance(perf, R["speed"]):
        print(perf)


if __name__ == "__main__":
    main()

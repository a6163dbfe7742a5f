"""The stable ranges of cosi.core.integrators.stability.MIN_NFE, from the stability stage's rows.

    python benchmarks/stability_table.py                 # the table as Python, to paste into stability.py
    python benchmarks/stability_table.py --markdown      # the measured max |x| per NFE (docs/benchmarks.md)

A sampler's edge on a model: the smallest measured NFE from which every larger measured NFE kept max |x| (over
the 256 draws) within STABLE_MAX_ABS, on the sampler's default grid. No edge is written where every measured NFE
is inside (the sampler is stable from its smallest NFE). Rows: benchmarks/results/study/stability.jsonl
(``python benchmarks/study.py --stage stability`` on a GPU).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from cosi.core.integrators import get_sampler
from cosi.core.integrators.stability import STABLE_MAX_ABS
from cosi.core.processes import make_process

ROWS = Path(__file__).parent / "results" / "study" / "stability.jsonl"
SAME_PLAN = {"conjugate": "lambda-ddim-1"}  # at their defaults (B = 0, λ = 0) the plans are identical


def scans(path: Path = ROWS) -> dict:
    """{(sampler, model): {nfe: max |x|}} on each sampler's default grid, grouped by model (in the order the rows
    first name them), each model's samplers in the order they were scanned."""
    out = defaultdict(dict)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "max_abs" not in r:
            continue
        process = make_process(r["model"].split("-")[1])
        if r["grid"] == get_sampler(r["sampler"]).grid(process):
            out[(r["sampler"], r["model"])][r["nfe"]] = r["max_abs"]
    models = list(dict.fromkeys(m for _, m in out))
    return dict(sorted(out.items(), key=lambda kv: models.index(kv[0][1])))  # sorted() is stable


def edge(scan: dict) -> int | None:
    """The smallest NFE from which all larger measured NFEs are stable (None: stable from the smallest)."""
    nfes = sorted(scan)
    bad = [k for k in nfes if not scan[k] <= STABLE_MAX_ABS]
    if not bad:
        return None
    later = [k for k in nfes if k > max(bad)]
    return later[0] if later else max(bad) + 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    table = scans()
    if args.markdown:
        for line in markdown(table):
            print(line)
        return
    print("MIN_NFE: dict[tuple[str, str], int] = {")
    for (s, model), scan in table.items():
        e = edge(scan)
        if e is not None:
            print(f"    ({s!r}, {model.split('-')[1]!r}): {e},")
            for alias in (a for a, of in SAME_PLAN.items() if of == s):
                print(f"    ({alias!r}, {model.split('-')[1]!r}): {e},  # the same plan as {s}")
    print("}")


def markdown(table: dict) -> list[str]:
    """One row per (model, sampler): its stable edge and 'NFE: max |x|' for every NFE measured (bold: outside)."""
    lines = ["| model | sampler | stable from | NFE: max abs x |", "|---|---|---|---|"]
    for (s, model), scan in table.items():
        e = edge(scan)
        vals = [f"{k}: **{v:.3g}**" if not v <= STABLE_MAX_ABS else f"{k}: {v:.3g}" for k, v in sorted(scan.items())]
        lines.append(f"| {model} | {s} | {e or min(scan)} | " + ", ".join(vals) + " |")
    return lines


if __name__ == "__main__":
    main()

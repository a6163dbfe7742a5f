"""Sweeps: FD over a grid of samplers × NFE × λ × η × time grid × seed, one JSON line per cell.

A cell is (model, sampler, NFE, options, n, seed); its key is that tuple as JSON. Each row also
records the sampler's defaults at the time (its default grid and options), and a cell whose key
is already in the output file with the same defaults is skipped (:func:`same_defaults`), so an
interrupted sweep continues where it stopped and never recomputes a finished cell, while a cell
measured under defaults that have changed since is measured again (the newer row then stands for
the key). λ values apply only to samplers with a ``lam`` option, η values only to those with
``eta``; a sampler that cannot meet an NFE gets a row with
an ``error`` instead of an FD. Each seed draws other samples (counter-based, :mod:`cosi.evaluation.generate`),
so the spread over seeds is the sampling noise of the FD.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from .autolam import SEARCH, judged_by
from .rows import latest_rows, read_rows

__all__ = ["ADDED_DEFAULTS", "cell_key", "latest_rows", "make_cells", "read_rows", "run_sweep", "same_defaults",
           "sampler_defaults"]
from ..core.integrators import get_sampler


def cell_key(model: str, sampler: str, nfe: int, options: dict, n: int, seed: int) -> str:
    return json.dumps([model, sampler, nfe, options, n, seed], sort_keys=True)


def make_cells(samplers, nfes, lams=(None,), etas=(None,), grids=(None,), seeds=(0,), o_parts=(None,),
               eta_xs=(None,)) -> list[dict]:
    """Every combination, with λ, η, η_x and o_part given only to the samplers that take them."""
    cells = []
    for sampler in samplers:
        opts = get_sampler(sampler).options
        given = lambda name, values: values if name in opts else (None,)  # noqa: E731
        for nfe, lam, eta, eta_x, o_part, grid, seed in itertools.product(
                nfes, given("lam", lams), given("eta", etas), given("eta_x", eta_xs), given("o_part", o_parts),
                grids, seeds):
            o = {k: v for k, v in (("lam", lam), ("eta", eta), ("eta_x", eta_x), ("o_part", o_part), ("grid", grid))
                 if v is not None}
            cell = {"sampler": sampler, "nfe": nfe, "options": o, "seed": seed}
            if cell not in cells:
                cells.append(cell)
    return cells


def sampler_defaults(sampler: str, process) -> dict:
    """What a cell's options leave to the sampler: its default options, for cosi's own samplers its
    default grid on ``process``, and ``project``: whether ε is projected for consistency by default (an
    ε-form sampler on a k ≥ 2 process; :func:`cosi.core.sampling.sample`)."""
    s = get_sampler(sampler)
    own = {"grid": s.grid(process), "project": s.eps_form and process.k > 1} if s.build is not None else {}
    return {**own, **s.options}


# Defaults that changed behaviour when added, with the value every row from before them was measured under.
ADDED_DEFAULTS = {"project": False}


def same_defaults(recorded: dict | None, current: dict) -> bool:
    """Whether a row measured under ``recorded`` defaults stands for ``current`` ones: every default it
    recorded is unchanged. An option added since is taken to keep the old behaviour by default, and a
    row from before defaults were recorded (None) stands, except where a default of ``ADDED_DEFAULTS``
    now differs from what such a row was measured under (rows from before the projection of ε were plain ε)."""
    old = {k: v for k, v in ADDED_DEFAULTS.items() if k in current}
    return all(current.get(k) == v for k, v in {**old, **(recorded or {})}.items())




def run_sweep(model, model_name: str, features, ref_stats, cells: list[dict], out, *, n: int = 10_000,
              batch_size: int = 1000, minutes: float | None = None, extra: dict | None = None,
              ref_features=None, graph: bool = False, lam_objective=None, log=print) -> list[dict]:
    """Run the cells not yet in ``out`` (JSONL), appending one row each; returns the new rows.
    ``minutes``: start no new cell after that much wall time. ``extra``: fields added to each row.
    ``ref_features``: the reference's features (N, dim), to add the KID to each row. ``graph``: sample
    with captured CUDA graphs (:func:`cosi.core.sampling.sample`) where the sampler has a plan (the samplers run
    by diffusers run eagerly); not part of a cell's key, recorded in the row. ``lam_objective``: what
    lam="auto" cells pick λ by (:func:`cosi.evaluation.autolam.choose_lambda`); a cell tuned by another objective,
    reference or search is measured again."""
    from .evaluate import model_fd

    t0 = time.monotonic()
    out = Path(out)
    measured = {}  # key -> the rows measured for it
    for r in read_rows(out):
        measured.setdefault(r["key"], []).append(r)
    new = []
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        for c in cells:
            key = cell_key(model_name, c["sampler"], c["nfe"], c["options"], n, c["seed"])
            defaults = sampler_defaults(c["sampler"], model.process)
            auto = c["options"].get("lam") == "auto"
            tuned_as = (judged_by(model.process, c["nfe"], lam_objective), SEARCH) if auto else (None, None)
            if any(same_defaults(r.get("defaults"), defaults)
                   and (r.get("tuning_reference"), r.get("tuning_search")) == tuned_as for r in measured.get(key, ())):
                continue  # measured under the same defaults (and, for lam=auto, the same reference and search)
            if minutes is not None and time.monotonic() - t0 > 60 * minutes:
                log(f"time budget of {minutes} min reached; run again to continue")
                break
            graphed = graph and get_sampler(c["sampler"]).build is not None
            row = {"key": key, "model": model_name, **(extra or {}), "graph": graphed, "defaults": defaults}
            try:
                opts = dict(c["options"])
                if opts.get("lam") == "auto":
                    from .autolam import choose_lambda

                    rest = {k: v for k, v in opts.items() if k != "lam"}
                    tuning = choose_lambda(model.eps_model, model.process, c["sampler"], c["nfe"], model.data_shape,
                                           device=model.device, objective=lam_objective, **rest)
                    opts["lam"] = tuning["lam"]
                    row.update({"lam_chosen": tuning["lam"], "tuning_calls": tuning["calls"],
                                "tuning_probe": tuning["probe"], "tuning_reference": tuning["reference"],
                                "tuning_search": tuning["search"], "tuning_proxy": sorted(tuning["proxy"].items())})
                r = model_fd(model, features, ref_stats, c["sampler"], c["nfe"], n, batch_size, seed=c["seed"],
                             ref_features=ref_features, graph=graphed, **opts)
                row.update({**r, **c["options"], "project": bool(opts.get("project", defaults.get("project", False)))})
            except ImportError as e:  # an optional dependency missing here: no row, so a later run retries
                log(f"{model_name} {c['sampler']} nfe={c['nfe']}: skipped ({e})")
                continue
            except ValueError as e:  # an NFE or option this sampler cannot take
                row.update({"sampler": c["sampler"], "nfe": c["nfe"], **c["options"], "seed": c["seed"], "n": n,
                            "error": str(e)})
            f.write(json.dumps(row) + "\n")
            f.flush()
            new.append(row)
            what = f"FD {row['fd']:.3f} ({row['images_per_s']:.0f} img/s)" if "fd" in row else row["error"]
            log(f"{model_name} {c['sampler']} nfe={c['nfe']} {c['options']} seed={c['seed']}: {what}")
    return new

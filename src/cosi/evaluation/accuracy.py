"""Accuracy of a sampler on any model: how well it solves the model's own probability-flow ODE (math.md §7).

From one fixed set of prior draws z_T (counter-based: draw i depends on (seed, i) alone,
:func:`cosi.core.noise.sample_keys`), the sampler's data block x(z_T) is compared with a converged
reference x_ref(z_T), a named sampler at many calls (default gddim-2m at 2000):

    rmse        = sqrt(mean over samples and pixels of (x − x_ref)²)
    rmse_median = median over samples of the per-sample RMSE per pixel
    max_abs     = max |x|   (the data lie in [−1, 1]; a diverging sampler shows here first)

The reference is computed once per (model, n, seed, reference) and kept in memory (and, given a cache
folder and a model name, on disk as a .pt keyed by everything that makes it); beside it, its distance to
itself at half the calls says how converged it is. ``lam="auto"``'s accuracy proxy
(:mod:`cosi.evaluation.autolam`) is this measure on a probe of 16 draws.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..core.integrators import get_sampler, nearest_nfe
from ..core.noise import sample_keys
from ..core.sampling import sample
from .cache import ModelCache, model_key, owner

REFERENCES_KEPT = 16  # reference solutions remembered in memory (each n × the data size)
_CACHE = ModelCache(REFERENCES_KEPT)


@dataclass(frozen=True)
class Reference:
    """A converged solution of the ODE: ``sampler`` at ``nfe`` calls; written 'gddim-2m@2000'."""

    sampler: str = "gddim-2m"
    nfe: int = 2000

    @classmethod
    def parse(cls, text: str) -> "Reference":
        name, at, nfe = text.partition("@")
        if not at or not nfe.isdigit():
            raise ValueError(f"reference {text!r}: write SAMPLER@NFE, e.g. gddim-2m@2000")
        get_sampler(name)
        return cls(name, int(nfe))

    def __str__(self) -> str:
        return f"{self.sampler}@{self.nfe}"


def prior_draws(process, data_shape, n: int, seed: int, device=None, dtype=torch.float32) -> Tensor:
    """z_T of draws 0 .. n−1 of ``seed``: the same states whatever the batch, as generation draws them."""
    keys = sample_keys(seed, torch.arange(n, device=device))
    return process.prior_sample(process.state_shape((n, *data_shape)), keys=keys, dtype=dtype)


def errors(x: Tensor, x_ref: Tensor) -> dict:
    """{rmse, rmse_median, max_abs} of data blocks ``x`` against ``x_ref`` (a diverged x scores inf)."""
    d = (x.double() - x_ref.double()).flatten(1)
    per = d.pow(2).mean(1)
    nan = lambda v: float(v) if torch.isfinite(v) else float("inf")  # noqa: E731
    return {"rmse": nan(per.mean().sqrt()), "rmse_median": nan(per.sqrt().median()),
            "max_abs": nan(x.detach().abs().max())}


def _run(eps_model, process, sampler: str, nfe: int, z_T: Tensor, batch_size: int, **options) -> Tensor:
    return torch.cat([sample(eps_model, process, sampler, nfe, z_T=z, **options).x for z in z_T.split(batch_size)])


def _network(eps_model) -> dict:
    """The network's dtype and device, where the eps_model is a DiffusionModel's bound method."""
    own = owner(eps_model)[0]
    dt, dev = getattr(own, "dtype", None), getattr(own, "device", None)
    return {"dtype": str(dt).removeprefix("torch.") if dt is not None else "float32",
            "device": str(dev) if dev is not None else "cpu"}


def reference_solution(eps_model, process, data_shape, n: int, seed: int, ref: Reference = Reference(), *,
                       device=None, dtype=torch.float32, self_check: bool = True, batch_size: int = 256,
                       cache_dir=None, name: str | None = None) -> dict:
    """{"x": the reference's data blocks for draws 0 .. n−1 of ``seed``, "self_rmse": its RMSE against
    the same sampler at about half the calls (None without ``self_check``), "self_nfe", "calls": network
    calls made now (0 when cached)}. Kept in memory per (eps_model, process, shape, n, seed, reference); with
    ``cache_dir`` and ``name`` (what identifies the model, e.g. 'fmnist-psld') also on disk."""
    data_shape = tuple(data_shape)
    meta = {"model": name, "process": repr(process.key), "data_shape": list(data_shape), "n": n, "seed": seed,
            "reference": str(ref), "defaults": _defaults(ref.sampler, process), **_network(eps_model),
            "state_dtype": str(dtype).removeprefix("torch.")}
    key = (model_key(eps_model), json.dumps({**meta, "model": None}, sort_keys=True))
    hit = _CACHE.get(eps_model, key)
    if hit is not None and (hit["self_rmse"] is not None or not self_check):
        return {**hit, "calls": 0}
    path = None
    if cache_dir is not None and name is not None:
        digest = hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
        path = Path(cache_dir) / f"{name}-{ref.sampler}@{ref.nfe}-n{n}-seed{seed}-{digest}.pt"
        if path.is_file():
            saved = torch.load(path, map_location="cpu")
            if saved.get("meta") == meta and (saved["self_rmse"] is not None or not self_check):
                hit = {"x": saved["x"].to(device or "cpu"), "self_rmse": saved["self_rmse"],
                       "self_nfe": saved["self_nfe"]}
                _CACHE.put(eps_model, key, hit)
                return {**hit, "calls": 0}
    z_T = prior_draws(process, data_shape, n, seed, device, dtype)
    calls = 0
    if hit is None:
        hit = {"x": _run(eps_model, process, ref.sampler, ref.nfe, z_T, batch_size), "self_rmse": None,
               "self_nfe": None}
        calls += ref.nfe
    if self_check:
        half = nearest_nfe(ref.sampler, ref.nfe // 2, process)
        x_half = _run(eps_model, process, ref.sampler, half, z_T, batch_size)
        hit = {**hit, "self_rmse": errors(x_half, hit["x"])["rmse"], "self_nfe": half}
        calls += half
    _CACHE.put(eps_model, key, hit)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"meta": meta, "x": hit["x"].cpu(), "self_rmse": hit["self_rmse"], "self_nfe": hit["self_nfe"]},
                   tmp)
        tmp.replace(path)
    return {**hit, "calls": calls}


def _defaults(sampler: str, process) -> dict:
    """The reference sampler's default grid and options: a changed default is a changed reference."""
    s = get_sampler(sampler)
    own = {"grid": s.grid(process)} if s.build is not None else {}
    return {k: v for k, v in {**own, **s.options}.items() if isinstance(v, (str, int, float, bool))}


def tf32() -> bool:
    """Whether CUDA matmuls or cuDNN convolutions may run in TF32 (a 10-bit mantissa)."""
    return bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)


def accuracy(model, sampler: str, nfe: int, *, n: int = 256, seed: int = 0, reference: Reference = Reference(),
             project: bool = True, batch_size: int = 256, cache_dir=None, name: str | None = None,
             **options) -> dict:
    """The accuracy row of ``sampler`` at ``nfe`` calls on ``model`` (anything with ``eps_model``,
    ``process``, ``data_shape`` and ``device``): its error against ``reference`` from the same n draws."""
    p = model.process
    ref = reference_solution(model.eps_model, p, model.data_shape, n, seed, reference, device=model.device,
                             batch_size=batch_size, cache_dir=cache_dir, name=name)
    z_T = prior_draws(p, model.data_shape, n, seed, model.device)
    t0 = time.perf_counter()
    x = _run(model.eps_model, p, sampler, nfe, z_T, batch_size, project=project, **options)
    secs = time.perf_counter() - t0
    spec = get_sampler(sampler)
    net = _network(model.eps_model)
    on_cuda = net["device"].startswith("cuda")
    return {"sampler": sampler, "nfe": nfe, "project": bool(project) and spec.eps_form and p.k > 1,
            "grid": str(options.get("grid") or (spec.grid(p) if spec.build is not None else "own")),
            "options": {k: v for k, v in options.items() if k != "grid"}, **errors(x, ref["x"]),
            "reference": str(reference), "reference_self_rmse": ref["self_rmse"],
            "reference_self_nfe": ref["self_nfe"], "reference_max_abs": float(ref["x"].abs().max()),
            "n": n, "seed": seed, **net, "tf32": on_cuda and tf32(), "seconds": round(secs, 3)}


def accuracy_key(model_name: str, sampler: str, nfe: int, project: bool, options: dict, n: int, seed: int,
                 reference: Reference) -> str:
    return json.dumps([model_name, sampler, nfe, bool(project), options, n, seed, str(reference)], sort_keys=True)


def run_accuracy(model, model_name: str, cells: list[dict], out, *, n: int = 256, seed: int = 0,
                 reference: Reference = Reference(), minutes: float | None = None, cache_dir=None,
                 extra: dict | None = None, log=print) -> list[dict]:
    """Measure the cells ({"sampler", "nfe", "project", "options"}) not yet in ``out`` (JSONL, one row each,
    appended), so an interrupted run continues where it stopped; returns the new rows. A sampler that
    cannot meet an NFE gets a row with an ``error``. ``minutes``: start no new cell after that wall time."""
    from .rows import read_rows

    t0 = time.monotonic()
    out = Path(out)
    done = {r["key"] for r in read_rows(out)}
    new = []
    out.parent.mkdir(parents=True, exist_ok=True)
    for c in cells:
        opts = c.get("options", {})
        key = accuracy_key(model_name, c["sampler"], c["nfe"], c.get("project", True), opts, n, seed, reference)
        if key in done:
            continue
        if minutes is not None and time.monotonic() - t0 > 60 * minutes:
            log(f"time budget of {minutes:.2f} min reached; run again to continue")
            break
        try:
            row = accuracy(model, c["sampler"], c["nfe"], n=n, seed=seed, reference=reference,
                           project=c.get("project", True), cache_dir=cache_dir, name=model_name, **opts)
        except ImportError as e:  # an optional dependency missing here: no row, so a later run retries
            log(f"accuracy {model_name} {c['sampler']} nfe={c['nfe']}: skipped ({e})")
            continue
        except ValueError as e:
            row = {"sampler": c["sampler"], "nfe": c["nfe"], "project": c.get("project", True), "options": opts,
                   "n": n, "seed": seed, "reference": str(reference), "error": str(e)}
        row = {"key": key, "model": model_name, **(extra or {}), **row}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.add(key)
        new.append(row)
        what = (f"RMSE {row['rmse']:.3g} (max |x| {row['max_abs']:.3g})" if "rmse" in row else row["error"])
        log(f"accuracy {model_name} {c['sampler']} nfe={c['nfe']} project={row['project']}: {what}")
    return new


def table(rows: list[dict]) -> list[str]:
    """A markdown table sampler × NFE of the RMSE (max |x| in brackets where it passes 2), with the reference
    and its self-distance stated above it."""
    ok = [r for r in rows if "rmse" in r]
    if not ok:
        return ["(no accuracy rows)"]
    nfes = sorted({r["nfe"] for r in ok})
    r0 = ok[0]
    lines = [f"RMSE per pixel of the data block against {r0['reference']} from the same {r0['n']} draws "
             f"(seed {r0['seed']}); the reference is {r0['reference_self_rmse']:.2g} from itself at "
             f"{r0['reference_self_nfe']} calls. {r0['device']}, network {r0['dtype']}, TF32 "
             f"{'on' if r0['tf32'] else 'off'}. In brackets: max |x| where above 2.", "",
             "| sampler | projection | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
             "|---|---|" + "---|" * len(nfes)]
    cells = {(r["sampler"], r["project"], r["nfe"]): r for r in ok}
    for s, pr in dict.fromkeys((r["sampler"], r["project"]) for r in ok):
        vals = []
        for k in nfes:
            r = cells.get((s, pr, k))
            vals.append("—" if r is None else f"{r['rmse']:.3g}" + (f" ({r['max_abs']:.3g})" if r["max_abs"] > 2 else ""))
        lines.append(f"| {s} | {'on' if pr else 'off'} | " + " | ".join(vals) + " |")
    return lines

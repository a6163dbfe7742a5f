"""The `cosi` command line: samplers, sample, eval, sweep, plot, bench, train."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from . import validate
from .errors import ErrorHandlingGroup
from .options import parse_key_values
from .train import train_classifier_command, train_command

app = typer.Typer(cls=ErrorHandlingGroup, add_completion=False, no_args_is_help=True,
                  help="Conjugate and splitting integrators for diffusion models.")
bench_app = typer.Typer(no_args_is_help=True, help="Measure samplers.")
app.add_typer(bench_app, name="bench")


CompileOpt = typer.Option(False, "--compile/--no-compile", help="with a model: torch.compile the network "
                          "(on a GPU with its own CUDA graphs, or fused kernels inside --graph)")
GraphOpt = typer.Option(False, "--graph/--no-graph", help="with a model on a GPU: capture the whole sampler "
                        "(network, updates, noise) as one CUDA graph per batch shape and replay it")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show an error's traceback instead of its one line "
                                     "(also: COSI_DEBUG=1)")) -> None:
    """Conjugate and splitting integrators for diffusion models."""
    from . import errors

    errors.DEBUG = debug


def _fail(msg: str) -> None:
    """One line and exit code 2; under --debug, the exception being handled (if any) with its traceback."""
    from .errors import debugging

    handled = sys.exc_info()[1]
    if handled is not None and debugging():
        raise handled
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _sampler_options(lam, eta: Optional[float], option: List[str]) -> dict:
    """--lam, --eta and repeated --option key=value."""
    opts = parse_key_values(option, "--option")
    if lam is not None:
        opts["lam"] = lam
    if eta is not None:
        opts["eta"] = eta
    return opts


@app.command()
def samplers(
    explain: Optional[str] = typer.Option(None, "--explain", help="a sampler's update in equations, its order "
                                          "and NFE, and the sequence of sub-flows and network calls of its plan"),
    process: str = typer.Option("psld", "--process", "-p", help="with --explain: vp, cld or psld"),
    nfe: int = typer.Option(10, "--nfe", help="with --explain: number of network calls of the plan shown"),
) -> None:
    """List the samplers with a one-line description each, or explain one (--explain NAME)."""
    from ..core.integrators import SAMPLERS, build_plan, get_sampler

    if explain is not None:
        from ..core.processes import make_process

        try:
            s = get_sampler(explain)
            typer.echo(f"{s.name}: {s.algorithm}\n")
            if s.build is None:
                typer.echo("(run step by step by another library: no plan)")
                return
            plan = build_plan(s.name, make_process(process), nfe)
        except ValueError as e:
            _fail(str(e))
        typer.echo(f"Plan on {process}, nfe={nfe} (h < 0: the step t → t+h, s = t+h):\n{plan.explain()}")
        return
    w = max(map(len, SAMPLERS))
    for name, s in SAMPLERS.items():
        procs = f"  [{s.requires.tag}]" if s.requires.tag else ""
        typer.echo(f"{name:<{w}}  {s.description}{procs}")


ProcessOpt = typer.Option("psld", "--process", "-p", help="vp, cld, psld, edm (alias ve) or rf (alias rectified-flow)")
SamplerOpt = typer.Option("euler", "--sampler", "-s", help="a name from `cosi samplers`")
NfeOpt = typer.Option(50, "--nfe", help="number of network calls")
LamOpt = typer.Option(None, "--lam", help="lambda of lambda-ddim / conjugate-splitting samplers")
LamAutoOpt = typer.Option(None, "--lam", help="lambda of lambda-ddim / conjugate-splitting samplers: a number, "
                          "or 'auto' (chosen by a search whose network calls are reported apart)")
LargeNfeOpt = typer.Option(False, "--allow-large-nfe", help=f"allow --nfe above {validate.NFE_CAP}")
EtaOpt = typer.Option(None, "--eta", help="noise scale of stochastic samplers")
OptionOpt = typer.Option(None, "--option", "-o", help="extra sampler option key=value (repeatable)")
GridOpt = typer.Option(None, "--grid", help="uniform, quadratic, logsnr, edm, flow-shift, or auto (tuned for the "
                       "model by accuracy on a probe; with --warm-start, from t_skip); default: the sampler's")


@app.command()
def sample(
    process: str = ProcessOpt,
    sampler: str = typer.Option("gddim-2m", "--sampler", "-s", help="a name from `cosi samplers`; the default, "
                                "gddim-2m, is the best at low NFE on both shipped models (docs/benchmarks.md)"),
    nfe: int = NfeOpt,
    n: int = typer.Option(1000, "--n", "--num-samples", help="number of samples (under torchrun write "
                          "--num-samples: torchrun takes --n for one of its own options)"),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="a shipped model (fmnist-psld, fmnist-vp) or a .safetensors/.json "
                                             "pair; its process replaces --process. Default: the oracle"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="an official PSLD .ckpt (with --preset)"),
    preset: Optional[str] = typer.Option(None, "--preset", help="official PSLD preset: psld-cifar10, "
                                         "psld-celeba64, psld-afhqv2"),
    raw_weights: bool = typer.Option(False, "--raw-weights", help="official checkpoint: the online weights, "
                                     "not the EMA ones"),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="official checkpoint: allow arbitrary "
                                      "pickled objects (only for files you trust)"),
    batch_size: int = typer.Option(256, "--batch-size", help="samples per batch (with a model)"),
    device: str = typer.Option("auto", "--device", help="with a model: cpu, cuda, ... (auto: cuda if present)"),
    dtype: str = typer.Option("float32", "--dtype", help="network dtype with a model: float32, bfloat16, float16"),
    compile: bool = CompileOpt,
    graph: bool = GraphOpt,
    data: str = typer.Option("gmm", "--data", help="oracle data: gmm (vectors) or gmm-image"),
    d: int = typer.Option(32, "--d", help="oracle data dimension (gmm)"),
    lam: Optional[str] = LamAutoOpt,
    eta: Optional[float] = EtaOpt,
    option: List[str] = OptionOpt,
    grid: Optional[str] = GridOpt,
    denoise: bool = typer.Option(False, "--denoise/--no-denoise", help="final denoising call"),
    seed: int = typer.Option(0, "--seed"),
    out: Path = typer.Option(Path("out/sample"), "--out", help="output folder"),
    allow_large_nfe: bool = LargeNfeOpt,
    warm_start: Optional[str] = typer.Option(None, "--warm-start", help="a model: start from the exact flow of a "
                                             "Gaussian fit to the data at t_skip (chosen by accuracy on a probe); "
                                             "'shipped' (the statistics shipped for the model's dataset) or a "
                                             ".safetensors file of GaussianStats"),
    skip: str = typer.Option("auto", "--skip", help="with --warm-start: the fraction v of the log-SNR range "
                             "skipped (0 … 1), or auto (chosen by accuracy on a probe of 64 draws: about 600 "
                             "network calls on that batch, minutes on a CPU)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Draw samples from a model (--model, or --checkpoint with --preset) into OUT/images/ (one PNG
    each, resumable; under `torchrun --nproc_per_node=N -m cosi sample ...` the ranks share the
    batches and write the same folder) plus a grid OUT/samples.png; or from the exact-score oracle
    into OUT/samples.npz and a picture."""
    validate.nfe(nfe, allow_large_nfe)
    validate.positive(n, "--n")
    validate.positive(batch_size, "--batch-size")
    validate.out_dir(out)
    opts = _sampler_options(validate.lam(lam), eta, option)
    if model is not None or checkpoint is not None or preset is not None:
        validate.out_dir(out / "images")
        _sample_from_model(model, checkpoint, preset, raw_weights, trust_pickle, device, dtype, compile, graph,
                           sampler, nfe, n, batch_size, grid, denoise, seed, out, quiet, opts,
                           None if warm_start is None else (warm_start, skip))
    else:
        if warm_start is not None:
            _fail("--warm-start applies to a model (--model or --checkpoint)")
        _sample_from_oracle(process, data, d, sampler, nfe, n, grid, denoise, seed, out, quiet, opts)


def _sample_from_model(model, checkpoint, preset, raw_weights: bool, trust_pickle: bool, device: str, dtype: str,
                       compile: bool, graph: bool, sampler: str, nfe: int, n: int, batch_size: int, grid,
                       denoise: bool, seed: int, out: Path, quiet: bool, opts: dict, warm_start=None) -> None:
    """`cosi sample --model/--checkpoint`: load, speed up, and write PNGs (on every torchrun rank)."""
    import torch.distributed as dist

    from ..core.devices import pick_device

    dev = _init_distributed(pick_device(device))
    m, describe = _load_model(model, checkpoint, preset, raw_weights, trust_pickle, str(dev), dtype)
    _speed_up(m, compile, graph)
    try:
        _sample_model(m, describe, sampler, nfe, n, batch_size, grid, denoise, seed, out, quiet,
                      dict(opts, graph=graph), warm_start)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _sample_from_oracle(process: str, data: str, d: int, sampler: str, nfe: int, n: int, grid, denoise: bool,
                        seed: int, out: Path, quiet: bool, opts: dict) -> None:
    """`cosi sample` without a model: samples of the exact-score oracle into OUT/samples.npz and a
    picture (an image grid for gmm-image, a scatter against exact data for gmm)."""
    import numpy as np
    import torch

    from .. import api
    from ..core.processes import make_process
    from ..evaluation.oracle import GaussianMixture
    from ..evaluation.viz import save_image_grid, save_scatter

    proc = make_process(process)
    if data == "gmm":
        validate.positive(d, "--d")
        gmm = GaussianMixture.random(d=d, seed=0)
    elif data == "gmm-image":
        gmm = GaussianMixture.random(d=3 * 8 * 8, shape=(3, 8, 8), seed=0)
    else:
        _fail(f"unknown --data {data!r}; choose gmm or gmm-image")
    validate.fits(validate.oracle_memory(n, proc.k * gmm.d, nfe), f"{n} oracle samples at --nfe {nfe}")
    shape = (n, *gmm.shape)
    t0 = time.perf_counter()
    res = api.sample(gmm.eps_model(proc), proc, sampler, nfe, shape=shape,
                     generator=torch.Generator().manual_seed(seed), grid=grid, denoise=denoise,
                     progress=not quiet, **opts)
    secs = time.perf_counter() - t0
    if res.tuning is not None and not quiet:
        typer.echo(_tuning_line(res.tuning, nfe))
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "samples.npz", x=res.x.numpy(), z=res.z.numpy(), nfe=res.nfe)
    title = f"{proc.name} / {sampler} / NFE {res.nfe}"
    if len(gmm.shape) == 3:
        pic = save_image_grid(res.x[:64], out / "samples.png", scale=4)
    else:
        pic = save_scatter(res.x, out / "samples.png", ref=gmm.sample(n), title=title)
    if not quiet:
        typer.echo(f"{title}: {n} samples in {secs:.1f} s -> {out / 'samples.npz'}, {pic}")


def _speed_up(m, compile: bool, graph: bool) -> None:
    if graph and m.device.type != "cuda":
        _fail(f"--graph captures CUDA graphs; the model is on {m.device}")
    if compile:
        m.compile("default" if graph else None)


def _init_distributed(dev):
    """Under torchrun (WORLD_SIZE > 1): join the process group (NCCL on CUDA, gloo otherwise) and
    use this rank's GPU. Returns the device to run on."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return dev
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dev


def _load_model(model, checkpoint, preset, raw_weights: bool, trust_pickle: bool, device: str, dtype: str):
    """(DiffusionModel, a description for manifests) from --model or --checkpoint/--preset."""
    import torch

    from ..models.checkpoint import CheckpointError, DiffusionModel, load
    from ..models.official_psld import OfficialCheckpointError, load_official_model
    from ..core.devices import pick_device

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if dt is None:
        _fail(f"--dtype {dtype!r}: choose float32, bfloat16 or float16")
    dev = pick_device(device)
    if model is not None and (checkpoint is not None or preset is not None):
        _fail("give either --model or --checkpoint with --preset, not both")
    try:
        if model is not None:
            m = load(model, device=dev, dtype=dt)
            if not isinstance(m, DiffusionModel):
                kind = (getattr(m, "model_config", None) or {}).get("kind", type(m).__name__)
                _fail(f"--model {model} is a {kind}, not a diffusion model: it gives `cosi eval` its features but "
                      "draws no samples — use a diffusion model (fmnist-psld, fmnist-vp) or a .safetensors/.json pair "
                      "of kind 'diffusion'")
            return m, {"model": model}
        if checkpoint is None or preset is None:
            _fail("an official checkpoint needs both --checkpoint FILE and --preset "
                  "(psld-cifar10, psld-celeba64 or psld-afhqv2)")
        m = load_official_model(checkpoint, preset, ema=not raw_weights, device=dev, dtype=dt,
                                trust_pickle=trust_pickle)
        return m, {"checkpoint": Path(checkpoint).name, "preset": preset, "ema": not raw_weights}
    except (CheckpointError, OfficialCheckpointError, ValueError) as e:
        _fail(str(e))


def _tuning_line(tuning: dict, nfe: int) -> str:
    return (f"lam=auto: λ = {tuning['lam']:.4g}, chosen by {tuning['reference']} with {tuning['calls']} network "
            f"calls on a probe of {tuning['probe']} (apart from the {nfe} calls per sample)")


def _sample_model(m, describe: dict, sampler: str, nfe: int, n: int, batch_size: int, grid, denoise: bool,
                  seed: int, out: Path, quiet: bool, opts: dict, warm_start: tuple | None = None) -> None:
    """``opts``: the sampler's options and ``graph``; ``warm_start``: (which, skip), which 'shipped' or a
    GaussianStats file, skip its log-SNR fraction or 'auto'."""
    from ..data import load_image_folder
    from ..evaluation.generate import generate_folder
    from ..evaluation.viz import save_image_grid

    from ..evaluation.autolam import resolve

    t0 = time.perf_counter()
    try:
        if warm_start is not None:  # before any tuning: a refused combination costs nothing
            from ..evaluation.warmstart import check_grid

            check_grid(grid, "--grid")
        sampler_opts = {k: v for k, v in opts.items() if k != "graph"}
        resolved, tuning = resolve(m.eps_model, m.process, sampler, nfe, m.data_shape,
                                   {**sampler_opts, "grid": grid, "denoise": denoise}, device=m.device)
        if tuning is not None:
            opts = {**opts, "lam": resolved["lam"]}
            if not quiet:
                typer.echo(_tuning_line(tuning, nfe))
        if isinstance(grid, str) and grid == "auto" and warm_start is None:  # the times tuned for this model
            from ..evaluation.autogrid import choose_grid  # (deterministic: a resumed run tunes the same times)

            own = {k: v for k, v in opts.items() if k != "graph"}
            found = choose_grid(m.eps_model, m.process, sampler, nfe, m.data_shape, denoise=denoise, device=m.device,
                                **own)
            grid = [round(float(t), 12) for t in found["grid"]]
            if not quiet:
                typer.echo(f"grid=auto: RMSE on the probe {found['proxy_start']:.3g} -> {found['proxy']:.3g} "
                           f"({found['calls']} calls on {found['probe']} draws, {found['seconds']:.0f} s)")
        warm = None
        if warm_start is not None:
            grid, warm = _warm_start(m, *warm_start, sampler, nfe, grid, denoise, opts, quiet)
        generate_folder(m, out / "images", sampler, nfe, n, batch_size=batch_size, seed=seed, describe=describe,
                        progress=not quiet, grid=grid, denoise=denoise, warm_start=warm, **opts)
    except (ValueError, TypeError, NotImplementedError) as e:
        _fail(str(e))
    secs = time.perf_counter() - t0
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_rank() != 0:
        return  # rank 0 draws the grid and reports
    first = load_image_folder(out / "images", channels=m.data_shape[0], limit=64).images
    pic = save_image_grid(first.float() / 127.5 - 1, out / "samples.png", scale=3 if m.data_shape[1] <= 32 else 1)
    if not quiet:
        what = describe.get("model") or describe.get("preset")
        typer.echo(f"{what} ({m.process.name}) / {sampler} / NFE {nfe}: {n} samples in {secs:.1f} s on {m.device} "
                   f"-> {out / 'images'}/, grid {pic}")


def _warm_start(m, which: str, skip: str, sampler: str, nfe: int, grid, denoise: bool, opts: dict, quiet: bool):
    """(the grid's times from t_skip, (the map of z_T to the Gaussian flow's state at t_skip, its manifest entry)) for
    ``cosi sample --warm-start``; (grid, None) where the skip is 0."""
    from ..evaluation.warmstart import (GaussianStats, gaussian_flow, resolve_skip, skip_time, start_at_skip,
                                        tune_grid_from_skip)

    if which == "shipped":
        dataset = m.config.get("dataset")
        if not dataset:
            raise ValueError("this model's config names no dataset: give --warm-start FILE.safetensors")
        stats, name = GaussianStats.shipped(dataset), f"shipped:{dataset}"
    else:
        stats, name = GaussianStats.load(which), str(which)
    own = {k: x for k, x in opts.items() if k != "graph"}
    auto = isinstance(grid, str) and grid == "auto"  # t_skip on the sampler's own grid kind, then times tuned from it
    v, found = resolve_skip(m.eps_model, m.process, sampler, nfe, stats, skip, grid=None if auto else grid,
                            device=m.device, denoise=denoise, **own)
    how = "as given" if found is None else (
        f"probe RMSE {found['proxy'][0.0]:.3g} from T -> {found['proxy'][v]:.3g}; "
        f"{found['calls']} calls on {found['probe']} draws, {found['seconds']:.0f} s")
    if not quiet:
        typer.echo(f"warm start ({name}): t_skip = {skip_time(m.process, v):.4g} (skip {v:g} of the log-SNR range; "
                   f"{how})")
    if auto:
        tuned = tune_grid_from_skip(m.eps_model, m.process, sampler, nfe, stats, v, denoise=denoise, device=m.device,
                                    **own)
        if not quiet:
            typer.echo(f"grid=auto from t_skip: RMSE on the probe {tuned['proxy_start']:.3g} -> {tuned['proxy']:.3g} "
                       f"({tuned['calls']} calls on {tuned['probe']} draws, {tuned['seconds']:.0f} s)")
        times = tuned["grid"]
        t_skip = float(times[0])
        first_state = None if v <= 0 else (lambda z_T: gaussian_flow(stats, m.process, z_T, t_skip))
    else:
        times, first_state = start_at_skip(m.process, sampler, nfe, stats, v, grid, denoise)
    if times is None:
        return grid, None
    times = [round(float(t), 12) for t in times]
    return times, None if first_state is None else (first_state, {"stats": name, "skip": v})


@app.command("eval")
def eval_(
    folder: Path = typer.Argument(..., help="a folder of PNG samples (or a `cosi sample` output folder)"),
    fd: str = typer.Option("auto", "--fd", "--fid", help="feature space: classifier (the shipped Fashion-MNIST "
                           "classifier) or inception (standard FID, torch-fidelity); auto: by image shape"),
    ref: str = typer.Option("auto", "--ref", help="fmnist (test split), cifar10 (train split), fmnist-train, "
                            "cifar10-test, a folder of "
                            "images, or a cached statistics .npz; auto: by feature space"),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir", help="where the reference dataset lies "
                                           "(CIFAR-10 python batches; Fashion-MNIST idx files)"),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights",
                                                     help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth"),
    cache: Path = typer.Option(Path.home() / ".cache" / "cosi", "--cache", help="reference statistics cache"),
    n: Optional[int] = typer.Option(None, "--n", help="use the first N samples"),
    device: str = typer.Option("auto", "--device"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fréchet distance of a folder of samples against reference statistics (computed once, cached)."""
    from ..evaluation.evaluate import folder_fd

    if n is not None:
        validate.positive(n, "--n")
    try:
        r = folder_fd(folder, fd=fd, ref=ref, ref_dir=ref_dir, inception_weights=inception_weights, cache=cache,
                      n=n, device=device)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(r))
    else:
        typer.echo(f"FD ({r['features']}) of {r['n']} samples vs {r['ref']} ({r['n_ref']} images): {r['fd']:.4f}")


@app.command()
def sweep(
    model: str = typer.Option("fmnist-psld", "--model", "-m", help="a shipped model or a .safetensors/.json pair"),
    sampler: List[str] = typer.Option(..., "--sampler", "-s", help="repeatable"),
    nfe: List[int] = typer.Option(..., "--nfe", help="repeatable"),
    lam: List[str] = typer.Option(None, "--lam", help="repeatable: numbers or 'auto' (samplers with a lam only)"),
    eta: List[float] = typer.Option(None, "--eta", help="repeatable (stochastic samplers only)"),
    grid: List[str] = typer.Option(None, "--grid", help="repeatable: uniform, quadratic, logsnr, edm"),
    seed: List[int] = typer.Option([0], "--seed", help="repeatable: the spread over seeds is the FD's noise"),
    n: int = typer.Option(10_000, "--n", "--num-samples", help="samples per cell"),
    batch_size: int = typer.Option(1000, "--batch-size"),
    out: Path = typer.Option(..., "--out", help="JSONL results; finished cells in it are skipped"),
    fd: str = typer.Option("auto", "--fd", help="classifier, inception or auto (as in `cosi eval`)"),
    ref: str = typer.Option("auto", "--ref", help="as in `cosi eval`"),
    lam_ref: Optional[str] = typer.Option(None, "--lam-ref", help="lam=auto picks λ by the FD of 2000 samples "
                                          "to this reference (as --ref; hold it out: e.g. fmnist-train when --ref "
                                          "is fmnist); default: by the accuracy proxy, no data needed"),
    lam_probe: int = typer.Option(2000, "--lam-probe", help="with --lam-ref: samples per λ tried"),
    ref_dir: Optional[Path] = typer.Option(None, "--ref-dir"),
    inception_weights: Optional[Path] = typer.Option(None, "--inception-weights"),
    cache: Path = typer.Option(Path.home() / ".cache" / "cosi", "--cache"),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("float32", "--dtype", help="network dtype: float32, bfloat16, float16"),
    compile: bool = CompileOpt,
    graph: bool = GraphOpt,
    minutes: Optional[float] = typer.Option(None, "--minutes", help="start no new cell after this wall time"),
    kid: bool = typer.Option(False, "--kid/--no-kid", help="also the KID against the reference's features "
                             "(not with a statistics .npz as --ref)"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """FD (and KID) over samplers × NFE × lam × eta × grid × seed; one JSON line per cell, resumable."""
    from ..evaluation.evaluate import feature_space, reference_images, reference_stats
    from ..evaluation.sweep import make_cells, run_sweep

    validate.nfe(nfe)
    validate.positive(n, "--n")
    validate.positive(batch_size, "--batch-size")
    lams = [None] if not lam else [validate.lam(x) for x in lam]
    m, _ = _load_model(model, None, None, False, False, device, dtype)
    _speed_up(m, compile, graph)
    try:
        features, kind, default_ref = feature_space(fd, m.data_shape, m.device, inception_weights)
        ref_stats = reference_stats(features, kind, default_ref if ref == "auto" else ref, ref_dir=ref_dir,
                                    cache=cache, channels=m.data_shape[0])
        cells = make_cells(sampler, nfe, lams, eta or [None], grid or [None], seed)
        ref_features = None
        if kid:
            if ref.endswith(".npz"):
                _fail("--kid needs the reference images, not a statistics .npz")
            images = reference_images(default_ref if ref == "auto" else ref, ref_dir, m.data_shape[0])
            ref_features = features.image_features(images)
        objective = None
        if lam_ref is not None:
            from ..evaluation.autolam import FDObjective

            objective = FDObjective.held_out(features, kind, lam_ref, ref_dir=ref_dir, cache=cache,
                                             channels=m.data_shape[0], probe=lam_probe, batch_size=batch_size)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
        _fail(str(e))
    extra = {"features": kind, "device": str(m.device), "dtype": str(m.dtype).removeprefix("torch."),
             "compiled": compile, "graph": graph}
    run_sweep(m, model, features, ref_stats, cells, out, n=n, batch_size=batch_size, minutes=minutes, extra=extra,
              ref_features=ref_features, graph=graph, lam_objective=objective,
              log=(lambda s: None) if quiet else typer.echo)


plot_app = typer.Typer(no_args_is_help=True, help="Figures from sweep results and sample folders.")
app.add_typer(plot_app, name="plot")


@plot_app.command("nfe")
def plot_nfe(results: Path = typer.Argument(..., help="a `cosi sweep` JSONL file"),
             out: Path = typer.Option(..., "--out", help=".png or .svg"),
             model: Optional[str] = typer.Option(None, "--model", help="only this model's rows"),
             sampler: List[str] = typer.Option(None, "--sampler", "-s", help="only these samplers")) -> None:
    """FD against NFE, one curve per sampler (mean ± std over seeds)."""
    from ..evaluation.sweep import read_rows
    from ..evaluation.viz import plot_fd_vs_nfe

    rows = [r for r in read_rows(results) if (model is None or r.get("model") == model)
            and (not sampler or r.get("sampler") in sampler)]
    if not rows:
        _fail(f"no rows in {results} for model={model} samplers={sampler or 'all'}")
    typer.echo(plot_fd_vs_nfe(rows, out, title=model or ""))


@plot_app.command("lam")
def plot_lam(results: Path = typer.Argument(..., help="a `cosi sweep` JSONL file"),
             sampler: str = typer.Option(..., "--sampler", "-s"),
             out: Path = typer.Option(..., "--out", help=".png or .svg"),
             model: Optional[str] = typer.Option(None, "--model")) -> None:
    """FD against lambda for one sampler, one curve per NFE."""
    from ..evaluation.sweep import read_rows
    from ..evaluation.viz import plot_fd_vs_lam

    rows = [r for r in read_rows(results) if model is None or r.get("model") == model]
    try:
        typer.echo(plot_fd_vs_lam(rows, sampler, out))
    except ValueError as e:
        _fail(str(e))


@plot_app.command("grid")
def plot_grid(folder: Path = typer.Argument(..., help="a folder of PNG samples (or a `cosi sample` output)"),
              out: Path = typer.Option(..., "--out"), n: int = typer.Option(64, "--n"),
              scale: int = typer.Option(3, "--scale")) -> None:
    """A grid of the first N images of a folder."""
    from ..data import DatasetError, load_image_folder
    from ..evaluation.viz import save_image_grid

    folder = folder / "images" if (folder / "images").is_dir() else folder
    try:
        from PIL import Image

        first = next(iter(sorted(folder.glob("*.png"))), None)
        channels = 3
        if first is not None:
            with Image.open(first) as im:
                channels = 1 if im.mode == "L" else 3
        x = load_image_folder(folder, channels=channels, limit=n).images
    except DatasetError as e:
        _fail(str(e))
    typer.echo(save_image_grid(x.float() / 127.5 - 1, out, scale=scale))


@bench_app.command("oracle")
def bench_oracle(
    process: str = ProcessOpt,
    data: str = typer.Option("gmm", "--data", help="gmm (vector Gaussian mixture)"),
    sampler: str = SamplerOpt,
    nfe: List[int] = typer.Option([50], "--nfe", help="network calls (repeatable)"),
    lam: Optional[float] = LamOpt,
    eta: Optional[float] = EtaOpt,
    option: List[str] = OptionOpt,
    grid: Optional[str] = GridOpt,
    denoise: bool = typer.Option(False, "--denoise/--no-denoise"),
    d: int = typer.Option(32, "--d"),
    n: int = typer.Option(64, "--n", help="trajectories for the endpoint error"),
    n_dist: int = typer.Option(1000, "--n-dist", help="samples for MMD / sliced Wasserstein"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per NFE"),
    allow_large_nfe: bool = LargeNfeOpt,
) -> None:
    """Endpoint error, MMD and sliced Wasserstein (with floors) on the exact-score oracle."""
    from ..core.processes import make_process
    from ..evaluation.evaluate import oracle_benchmark

    if data != "gmm":
        _fail(f"unknown --data {data!r}; the oracle benchmark supports gmm")
    validate.nfe(nfe, allow_large_nfe)
    for value, flag in ((d, "--d"), (n, "--n"), (n_dist, "--n-dist")):
        validate.positive(value, flag)
    if lam is not None:
        validate.lam(str(lam))
    k = make_process(process).k
    validate.fits(validate.oracle_memory(n, k * d, max(nfe), reference=True) + validate.oracle_memory(n_dist, k * d, 0),
                  f"the oracle benchmark (--n {n}, --n-dist {n_dist}, --d {d}, --nfe {max(nfe)})")
    for k in nfe:
        try:
            r = oracle_benchmark(process, sampler, k, d=d, n=n, n_dist=n_dist, seed=seed, grid=grid,
                                 denoise=denoise, **_sampler_options(lam, eta, option))
        except (ValueError, TypeError, NotImplementedError) as e:
            _fail(str(e))
        if as_json:
            typer.echo(json.dumps(r))
        else:
            ee = (f"endpoint {r['endpoint_error']:.3e} (median {r['endpoint_error_median']:.3e})  "
                  if "endpoint_error" in r else "")
            typer.echo(f"{r['process']} {sampler} nfe={k}: {ee}MMD {r['mmd']:.4f} (floor "
                       f"{r['mmd_floor']:.4f})  SW {r['sw']:.4f} (floor {r['sw_floor']:.4f})")


@bench_app.command("accuracy")
def bench_accuracy(
    model: str = typer.Option("fmnist-psld", "--model", "-m", help="a shipped model or a .safetensors/.json pair"),
    sampler: List[str] = typer.Option(["gddim-2m"], "--sampler", "-s", help="repeatable; 'all': every "
                                      "deterministic sampler of the model's process"),
    nfe: List[int] = typer.Option([10, 20, 50], "--nfe", help="repeatable; each sampler runs at the nearest NFE "
                                  "it meets"),
    projection: str = typer.Option("both", "--projection", help="on, off or both: the consistency projection "
                                   "of ε (ε-form samplers on k >= 2; a no-op elsewhere, measured once)"),
    reference: str = typer.Option("gddim-2m@2000", "--reference", help="the converged solution, SAMPLER@NFE; "
                                  "its distance to itself at half the calls is reported"),
    n: int = typer.Option(256, "--n", help="samples (prior draws 0 .. n-1 of --seed)"),
    seed: int = typer.Option(0, "--seed"),
    lam: Optional[float] = LamOpt,
    option: List[str] = OptionOpt,
    grid: Optional[str] = GridOpt,
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("float32", "--dtype", help="network dtype: float32, bfloat16, float16"),
    tf32: bool = typer.Option(False, "--tf32/--no-tf32", help="let CUDA matmuls and convolutions use TF32"),
    cache: Optional[Path] = typer.Option(None, "--cache", help="a folder to keep the reference in (.pt)"),
    out: Optional[Path] = typer.Option(None, "--out", help="append one JSON line per cell here; cells already "
                                       "there are not measured again"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per cell instead of the table"),
) -> None:
    """RMSE of the data block against a converged reference from the same prior draws (math.md §7)."""
    import tempfile

    import torch

    from ..core.integrators import SAMPLERS, nearest_nfe
    from ..evaluation.accuracy import Reference, accuracy_key, run_accuracy, table
    from ..evaluation.rows import read_rows

    if projection not in ("on", "off", "both"):
        _fail(f"--projection {projection!r}: choose on, off or both")
    try:
        ref = Reference.parse(reference)
    except ValueError as e:
        _fail(str(e))
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    m, _ = _load_model(model, None, None, False, False, device, dtype)
    p = m.process
    names = [s for s, spec in SAMPLERS.items() if spec.accepts(p) and not spec.stochastic] \
        if sampler == ["all"] else sampler
    opts = _sampler_options(lam, None, option)
    if grid is not None:
        opts["grid"] = grid
    cells = []
    try:
        for s in names:
            spec = SAMPLERS.get(s)
            projectable = spec is not None and spec.eps_form and spec.build is not None and p.k > 1
            modes = {"on": [True], "off": [False], "both": [False, True]}[projection] if projectable else [True]
            for pr in modes:
                for k in nfe:
                    cells.append({"sampler": s, "nfe": nearest_nfe(s, k, p) if spec else k, "project": pr,
                                  "options": opts})
    except ValueError as e:
        _fail(str(e))
    cells = list({json.dumps(c, sort_keys=True): c for c in cells}.values())
    path = out or Path(tempfile.mkdtemp()) / "accuracy.jsonl"
    before = {r["key"] for r in read_rows(path)}
    log = (lambda s: None) if as_json else (lambda s: typer.echo(s, err=True))
    try:
        run_accuracy(m, model, cells, path, n=n, seed=seed, reference=ref, cache_dir=cache, log=log)
    except (ValueError, TypeError, NotImplementedError) as e:
        _fail(str(e))
    wanted = {accuracy_key(model, c["sampler"], c["nfe"], c["project"], c["options"], n, seed, ref) for c in cells}
    rows = [r for r in read_rows(path) if r["key"] in wanted]
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
        return
    typer.echo(f"{model} ({p.name}), {n} samples, seed {seed}" + (f" (already in {path}: {len(before & wanted)} "
                                                                   "cells)" if before & wanted else ""))
    typer.echo("\n".join(table(rows)))
    for r in rows:
        if "error" in r:
            typer.echo(f"{r['sampler']} nfe={r['nfe']}: {r['error']}")


@bench_app.command("speed")
def bench_speed(
    model: str = typer.Option("fmnist-psld", "--model", "-m", help="a shipped model or a .safetensors/.json pair"),
    sampler: List[str] = typer.Option(["csps-d"], "--sampler", "-s", help="repeatable; 'all': every sampler of "
                                      "the model's process"),
    nfe: List[int] = typer.Option([50], "--nfe", help="repeatable"),
    batch_size: List[int] = typer.Option([256], "--batch-size", help="repeatable"),
    device: str = typer.Option("auto", "--device"),
    dtype: str = typer.Option("bfloat16", "--dtype", help="network dtype: float32, bfloat16, float16 "
                              "(float32 on a CPU)"),
    repeats: int = typer.Option(5, "--repeats"),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch.compile the network; the bare "
                                 "calls use the same compiled network"),
    graph: bool = typer.Option(False, "--graph/--no-graph", help="(GPU) the sampler as one captured CUDA graph, "
                               "against the bare calls captured as one graph"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line per cell"),
) -> None:
    """Wall time of each sampler against the same number of bare network calls, in one run."""
    validate.nfe(nfe)
    for b in batch_size:
        validate.positive(b, "--batch-size")
    validate.positive(repeats, "--repeats")
    from ..evaluation.benchmark import speed
    from ..core.integrators import SAMPLERS

    import torch

    m, _ = _load_model(model, None, None, False, False, device, dtype)
    if m.device.type == "cpu":
        m.to(dtype=torch.float32)  # reduced-precision convolutions on a CPU would time nothing of use
    _speed_up(m, compile, graph)
    names = [n for n, s in SAMPLERS.items() if s.requires.test(m.process)] if sampler == ["all"] else sampler
    if not as_json:
        typer.echo(f"{model} on {m.device} ({m.dtype}, compiled: {m.compiled_mode}, "
                   f"graph: {graph}); median of {repeats}\n"
                   "| sampler | NFE | batch | bare network (ms) | sampler (ms) | ratio | images/s | peak memory (MiB) |\n"
                   "|---|---|---|---|---|---|---|---|")
    for b in batch_size:
        for k in nfe:
            for name in names:
                try:
                    r = speed(m, name, k, b, repeats=repeats, graph=graph)
                except ValueError as e:  # an NFE this sampler cannot meet
                    if not as_json:
                        typer.echo(f"| {name} | {k} | {b} | — | — | — | — | ({e}) |")
                    continue
                if as_json:
                    typer.echo(json.dumps(r))
                    continue
                mem = r.get("peak_memory_bytes")
                mem = "—" if mem is None else f"{mem / 2**20:.0f} ({r['peak_memory_bytes_2nfe'] / 2**20:.0f} at 2×NFE)"
                typer.echo(f"| {name} | {k} | {b} | {1e3 * r['bare_s']:.1f} | {1e3 * r['sampler_s']:.1f} | "
                           f"{r['ratio']:.3f} | {r['images_per_s']:.0f} | {mem} |")


app.command("train")(train_command)
app.command("train-classifier")(train_classifier_command)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

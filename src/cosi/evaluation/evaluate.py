"""Measuring samplers on the exact-score oracle: endpoint error against the reference
ODE solution from the same prior sample, and distribution distances with their floors."""

from __future__ import annotations

from functools import lru_cache

import torch

from ..core.sampling import sample
from ..core.integrators import get_sampler
from .distances import distribution_metrics, endpoint_error
from .oracle import GaussianMixture, reference_solution
from ..core.processes import LinearProcess, make_process


@lru_cache(maxsize=16)
def oracle_setup(process: LinearProcess, d: int = 32, n: int = 64, seed: int = 0,
                 gmm_seed: int = 0, reference: bool = True):
    """(gmm, z_T, reference endpoint or None) for a process; cached across calls."""
    gmm = GaussianMixture.random(d=d, seed=gmm_seed)
    g = torch.Generator().manual_seed(seed)
    z_T = gmm.sample_state(process, process.T, n, g)
    ref = reference_solution(gmm, process, z_T) if reference else None
    return gmm, z_T, ref


def oracle_benchmark(process, sampler: str, nfe: int, *, d: int = 32, n: int = 64, seed: int = 0,
                     n_dist: int = 1000, gmm_seed: int = 0, grid=None, denoise: bool = False,
                     **options) -> dict:
    """Endpoint error (deterministic samplers; RMS over all entries and the median of the
    per-sample RMS, which is robust to the rare trajectory that crosses to another mixture
    component) and MMD / sliced Wasserstein with their floors (every sampler)."""
    process = make_process(process) if isinstance(process, str) else process
    spec = get_sampler(sampler)
    eta = options.get("eta", spec.options.get("eta"))
    stochastic = spec.stochastic if eta is None else eta == "auto" or eta > 0
    gmm, z_T, ref = oracle_setup(process, d, n, seed, gmm_seed, reference=not stochastic)
    eps = gmm.eps_model(process)
    out = {"process": process.name, "sampler": sampler, "nfe": nfe, "d": d,
           "grid": grid or spec.grid(process), "denoise": denoise, **options}
    if not stochastic and not denoise:
        r = sample(eps, process, sampler, nfe, z_T=z_T, grid=grid, denoise=denoise, **options)
        per = ((r.z - ref) ** 2).flatten(1).mean(1).sqrt()
        out["endpoint_error"] = endpoint_error(r.z, ref)
        out["endpoint_error_median"] = float(per.median())
    g = torch.Generator().manual_seed(seed + 1)
    # start from the exact marginal at T, so that only the integrator's error remains
    z0 = gmm.sample_state(process, process.T, n_dist, g)
    r = sample(eps, process, sampler, nfe, z_T=z0, generator=g, grid=grid, denoise=denoise, **options)
    out.update(distribution_metrics(gmm, r.x, process=process, t=0.0 if denoise else process.t_min))
    out["calls"] = r.nfe
    return out


# ---- learned models: FD in a feature space ------------------------------------------------------


def model_fd(model, features, ref_stats, sampler: str, nfe: int, n: int = 10_000, batch_size: int = 1000, *,
             seed: int = 0, ref_features=None, graph: bool = False, **options) -> dict:
    """FD between ``n`` samples of ``model`` and ``ref_stats`` in the space of ``features``
    (e.g. :class:`cosi.evaluation.metrics.ClassifierFeatures`), samples seeded as in :mod:`cosi.evaluation.generate`
    (so ``generate.sample_range`` redraws any of them). With ``ref_features`` (N, dim) the KID
    against them too. Returns a dict with the FD (and KID ± its spread over subsets), the wall
    time and images/s."""
    import time

    from .generate import batches
    from .metrics import fd, kid
    from .stats import FeatureStats

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    draws = batches(model, sampler, nfe, n, batch_size, seed=seed, graph=graph, **options)
    if ref_features is None:
        stats, feats = features.stats(draws), None
    else:
        feats = features.collect(draws)
        stats = FeatureStats(feats.shape[1]).update(feats)
    secs = time.perf_counter() - t0
    out = {"sampler": sampler, "nfe": nfe, "n": n, "seed": seed, "seeding": "counter", **options,
           "fd": fd(stats, ref_stats), "seconds": round(secs, 2), "images_per_s": round(n / secs, 1)}
    if feats is not None:
        out["kid"], out["kid_std"] = kid(feats, ref_features)
    return out


def reference_stats(features, kind: str, ref: str, *, ref_dir=None, cache=None, channels: int = 3):
    """Feature statistics of a reference set, computed once and cached in ``cache``: 'fmnist' (the
    test split), 'cifar10' (the train split, the usual FID reference), 'fmnist-train' or
    'cifar10-test' (the other splits, e.g. to tune on data the results are not judged against), a
    folder of images, or a statistics ``.npz`` (read as is)."""
    import hashlib
    from pathlib import Path

    from .stats import FeatureStats

    if ref.endswith(".npz"):
        return FeatureStats.load(ref)
    cache = Path(cache) if cache is not None else Path.home() / ".cache" / "cosi"
    name = ref if ref in NAMED else \
        "folder-" + hashlib.sha1(str(Path(ref).resolve()).encode()).hexdigest()[:12]
    path = cache / f"{kind}-{name}.npz"
    if path.is_file():
        return FeatureStats.load(path)
    stats = features.image_stats(reference_images(ref, ref_dir, channels))
    path.parent.mkdir(parents=True, exist_ok=True)
    stats.save(path)
    return stats


NAMED = {"fmnist": ("fmnist", "test"), "fmnist-train": ("fmnist", "train"), "cifar10": ("cifar10", "train"),
         "cifar10-test": ("cifar10", "test")}  # reference name -> (dataset, split)


def reference_images(ref: str, ref_dir=None, channels: int = 3):
    """The uint8 images of a named reference (:data:`NAMED`) or a folder."""
    from ..data import load_cifar10, load_fashion_mnist, load_image_folder

    if ref in NAMED:
        dataset, split = NAMED[ref]
        return (load_fashion_mnist if dataset == "fmnist" else load_cifar10)(ref_dir, split).images
    return load_image_folder(ref, channels=channels).images


def feature_space(kind: str, data_shape, device, inception_weights=None):
    """(features, kind, default reference) for 'classifier', 'inception' or 'auto' (the shipped
    Fashion-MNIST classifier for 1×28×28 data, Inception otherwise)."""
    from .metrics import ClassifierFeatures, InceptionFeatures

    fits = tuple(data_shape) == (1, 28, 28)
    if kind == "auto":
        kind = "classifier" if fits or inception_weights is None else "inception"
    if kind == "classifier":
        if not fits:
            shape = "×".join(map(str, data_shape))
            raise ValueError(f"the images are {shape} (channels×height×width), but the shipped classifier takes "
                             "1×28×28 Fashion-MNIST images — for other images use --fd inception --inception-weights "
                             "FILE (standard FID; needs torch-fidelity: pip install 'cosi[fid]')")
        return ClassifierFeatures("fmnist-classifier", device), kind, "fmnist"
    if kind == "inception":
        return InceptionFeatures(inception_weights, device), kind, "cifar10"
    raise ValueError(f"feature space {kind!r}: choose classifier or inception")


def folder_fd(folder, fd: str = "auto", ref: str = "auto", ref_dir=None, inception_weights=None,
              cache=None, n: int | None = None, device: str = "auto") -> dict:
    """FD of a folder of PNG samples (e.g. ``cosi sample``'s OUT/images) against a reference
    (see :func:`reference_stats`); ``fd`` as in :func:`feature_space`."""
    from pathlib import Path

    from PIL import Image

    from ..data import load_image_folder
    from .metrics import fd as frechet
    from ..core.devices import pick_device

    folder = Path(folder)
    if (folder / "images").is_dir():
        folder = folder / "images"
    from ..data import DatasetError

    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder — pass a folder of .png samples (or a `cosi sample` output)")
    pngs = sorted(folder.glob("*.png"))
    if not pngs:
        raise DatasetError(f"no .png samples in {folder} — pass a folder of .png samples (or a `cosi sample` output)")
    if n is not None and not 0 < n <= len(pngs):
        raise ValueError(f"n={n}: the folder holds {len(pngs)} samples — give an n from 1 to {len(pngs)}")
    try:
        with Image.open(pngs[0]) as im:
            channels = 1 if im.mode in ("L", "I", "I;16") else 3
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{pngs[0]} is not a readable image ({type(e).__name__}) — remove it or write the "
                           "samples again") from None
    images = load_image_folder(folder, channels=channels, limit=n).images
    features, kind, default_ref = feature_space(fd, images.shape[1:], pick_device(device), inception_weights)
    ref = default_ref if ref == "auto" else ref
    ref_stats = reference_stats(features, kind, ref, ref_dir=ref_dir, cache=cache, channels=channels)
    stats = features.image_stats(images)
    return {"fd": frechet(stats, ref_stats), "features": kind, "n": stats.n, "ref": ref, "n_ref": ref_stats.n,
            "folder": str(folder)}

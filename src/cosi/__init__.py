"""cosi: conjugate and splitting integrators for diffusion models (VP, CLD, PSLD).

    >>> import cosi
    >>> cosi.samplers                     # name -> one-line description
    >>> res = cosi.sample(eps_model, "psld", "csps-d", nfe=50, shape=(16, 3, 32, 32))
    >>> res.x, res.z, res.nfe
    >>> model = cosi.load_model("fmnist-psld")

The package is layered (docs/architecture.md): ``cosi.core`` (processes, grids, noise, integrators,
sampling) imports nothing above it; ``cosi.models``, ``cosi.evaluation``, ``cosi.training`` and
``cosi.cli`` sit on top in that order, and ``cosi.api`` is the facade this package exports.
"""

from .api import SampleResult, as_eps_model, from_denoiser, load_model, nearest_nfe, sample, samplers, tune_lambda, tune_grid
from .core.processes import LinearProcess, cld, edm, make_process, psld, rf, vp

__all__ = ["sample", "samplers", "SampleResult", "load_model", "nearest_nfe", "tune_lambda", "tune_grid", "LinearProcess",
           "make_process", "vp", "cld", "psld", "edm", "rf", "as_eps_model", "from_denoiser"]
__version__ = "0.1.0"

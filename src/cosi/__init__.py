"""cosi: conjugate and splitting integrators for diffusion models (VP, CLD, PSLD).

    >>> import cosi
    >>> cosi.samplers                     # name -> one-line description
    >>> res = cosi.sample(eps_model, "psld", "csps-d", nfe=50, shape=(16, 3, 32, 32))
    >>> res.x, res.z, res.nfe
"""

from .api import SampleResult, sample, samplers
from .processes import LinearProcess, cld, make_process, psld, vp

__all__ = ["sample", "samplers", "SampleResult", "LinearProcess", "make_process", "vp", "cld", "psld"]
__version__ = "0.1.0"

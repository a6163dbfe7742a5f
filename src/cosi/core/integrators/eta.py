"""The default noise scale η of the stochastic splitting presets (``eta='auto'``), measured by exact moment propagation.

Where the splitting presets lose stability: an Euler kick of the momentum by the score term, (1 + η²)·½βD L⁻ᵀε, is
stiff at the large steps near T (PSLD: ½βνM/M = 16 per unit time), so it needs h·16·(1 + η²) ≲ 2. η = 0 halves the
kick, which is why lowering η extends the stable range, and why below some NFE no η helps (η = 0 is the splitting
ODE solver, unstable there too).

``EDGES[(preset, process)]``: the largest stable η at NFEs from the smallest NFE where the preset is stable at
every measured larger NFE, up to the first NFE where η = 1 is stable. "Stable": the exact covariance error of the
output (cosi.evaluation.moments.moment_errors: Gaussian data of variances 0.01, 0.1, 1; exact ε; the preset's
default grid; no denoising) below ``STABLE_COV_ERROR``, the largest data variance; η on a grid of 0.05.
Measured by ``PYTHONPATH=src python benchmarks/moments_table.py --edges`` (docs/integrators.md, "Exact moment
propagation"). The edge is a property of the grid and the process, barely of the data: robab's η = 0 edge on PSLD
is between NFE 15 and 20 for data variances 1e-3 to 1.
"""

from __future__ import annotations

import warnings

STABLE_COV_ERROR = 1.0
SAFETY = 0.8  # the default η below the η = 1 edge: this fraction of the largest stable η

EDGES = {
    ("oba", "psld"): ((36, 0.25), (40, 0.6), (46, 0.8), (50, 0.95), (60, 1.0)),
    ("bao", "psld"): ((36, 0.3), (40, 0.6), (46, 0.8), (50, 0.95), (60, 1.0)),
    ("obab", "psld"): ((60, 0.9), (72, 1.0)),  # also stable at NFE 36 with η ≤ 0.3, not at 42–51 with any η
    ("baoab", "psld"): ((40, 0.1), (48, 0.7), (52, 0.75), (60, 0.85), (72, 1.0)),
    ("roba", "psld"): ((20, 0.5), (22, 0.75), (25, 0.9), (27, 1.0)),
    ("rbao", "psld"): ((20, 0.6), (22, 0.75), (25, 0.95), (27, 1.0)),
    ("robab", "psld"): ((20, 0.8), (22, 0.95), (25, 1.0)),
    ("rbaoab", "psld"): ((30, 1.0),),  # also stable at NFE 20 with η ≤ 0.35, not at 22–27 with any η
    ("coba", "psld"): ((20, 0.5), (22, 0.7), (25, 0.9), (27, 1.0)),
    ("sps-s", "psld"): ((20, 0.8), (22, 0.95), (25, 1.0)),
    ("csps-s", "psld"): ((20, 0.8), (22, 0.95), (25, 1.0)),
    ("sscs", "psld"): ((20, 0.6), (22, 0.75), (25, 0.95), (27, 1.0)),
    ("oba", "cld"): ((20, 0.6), (22, 0.7), (25, 0.95), (27, 1.0)),
    ("bao", "cld"): ((20, 0.6), (22, 0.75), (25, 0.95), (27, 1.0)),
    ("obab", "cld"): ((40, 0.9), (46, 1.0)),
    ("baoab", "cld"): ((26, 0.75), (28, 0.8), (30, 0.85), (36, 1.0)),
    ("roba", "cld"): ((20, 0.5), (22, 0.7), (25, 0.9), (27, 1.0)),
    ("rbao", "cld"): ((20, 0.6), (22, 0.75), (25, 0.95), (27, 1.0)),
    ("robab", "cld"): ((20, 0.8), (22, 0.95), (25, 1.0)),
    ("rbaoab", "cld"): ((30, 1.0),),
    ("coba", "cld"): ((20, 0.5), (22, 0.75), (25, 0.85), (27, 1.0)),
    ("sps-s", "cld"): ((20, 0.8), (22, 0.95), (25, 1.0)),
    ("csps-s", "cld"): ((20, 0.8), (22, 0.95), (25, 1.0)),
    ("sscs", "cld"): ((20, 0.6), (22, 0.75), (25, 0.95), (27, 1.0)),
}


def largest_stable_eta(preset: str, process: str, nfe: int) -> float | None:
    """The measured largest stable η at ``nfe`` (linear in NFE between measured points; 1 beyond the η = 1
    edge); None below the stable range or for a preset not measured."""
    edges = EDGES.get((preset, process))
    if edges is None or nfe < edges[0][0]:
        return None
    for (n0, e0), (n1, e1) in zip(edges, edges[1:]):
        if nfe < n1:
            return e0 + (e1 - e0) * (nfe - n0) / (n1 - n0)
    return 1.0


def stable_range(preset: str, process: str) -> str:
    edges = EDGES[(preset, process)]
    return (f"{preset} on {process} is stable from NFE {edges[0][0]} (there with eta <= {edges[0][1]:g}), "
            f"with eta = 1 from NFE {edges[-1][0]}")


def resolve(preset: str, process: str, nfe: int, eta, *, warn: bool = True) -> float:
    """η for a preset at ``nfe`` steps' calls (without a denoising call): ``eta='auto'`` gives 1 from the η = 1
    edge on, ``SAFETY`` × the largest stable η between the edges, and 0 below the stable range (the least
    unstable choice there); an explicit η is kept. Warns where the result is outside the measured stable range."""
    edges = EDGES.get((preset, process))
    top = largest_stable_eta(preset, process, nfe)
    if eta == "auto":
        eta = 1.0 if edges is None or top == 1.0 else 0.0 if top is None else round(SAFETY * top, 3)
    eta = float(eta)
    if warn and edges is not None and (top is None or eta > top + 1e-9):
        where = "at any eta" if top is None else f"with eta = {eta:g} (the largest stable eta there is {top:.2f})"
        warnings.warn(f"{preset} with {nfe} network calls on {process} is unstable {where}: its output law can "
                      f"be far from the data (docs/integrators.md, 'Exact moment propagation'); "
                      f"{stable_range(preset, process)}", stacklevel=4)
    return eta

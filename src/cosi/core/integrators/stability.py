"""Where each sampler is stable: the smallest NFE it accepts on a process, measured (issue 19).

An explicit ε-form step on a two-block process is stiff where L_t⁻ᵀ is large and the step is long; below
some NFE a sampler's samples leave the data range by orders of magnitude (Euler on PSLD at NFE 20 reaches
|x| ≈ 120 with the projected ε, 2500 with the plain one). Such a sampler is refused there, with the stable
range named, rather than handed back as a result.

``MIN_NFE[(sampler, process)]``: the smallest NFE (the steps' calls, without a denoising call) from which the
sampler stayed inside |x| ≤ ``STABLE_MAX_ABS`` at every larger measured NFE on the shipped learned model of the
process (fmnist-psld and fmnist-vp: 256 draws on a GPU; fmnist-cld: 16 draws; the sampler's default grid and
options, the projection of ε on), measured by
``python benchmarks/study.py --stage stability`` on a GPU and turned into this table by
``python benchmarks/stability_table.py`` (docs/benchmarks.md, "Stable ranges"). The stochastic splitting
presets' ranges also start no lower than their exact-moment edges (:mod:`.eta`), and CLD's no lower than PSLD's
(``FLOOR_FROM``). The edge is a property of the
process and its grid far more than of the data, which is why a range measured on one model of a process is applied
to every model of it.
"""

from __future__ import annotations

from . import eta as eta_schedule

STABLE_MAX_ABS = 10.0  # the data lie in [-1, 1] and the converged ODE solution of fmnist-psld reaches |x| = 1.47;
# a sampler that diverges leaves by orders of magnitude (10^2 to 10^9 measured), while a coarse but convergent
# data-prediction sampler at NFE 4-10 overshoots to at most 8.6 on the 256 draws

# Written by `python benchmarks/stability_table.py` from benchmarks/results/study/stability.jsonl (psld, vp: 256
# draws on an H200; cld: 16 draws, on the 2-core CPU up to cse and on the H200 from cvv on; 2026-12-03).
MIN_NFE: dict[tuple[str, str], int] = {
    ('euler', 'psld'): 150,
    ('em', 'psld'): 20,
    ('heun', 'psld'): 50,
    ('lambda-ddim-1', 'psld'): 40,
    ('conjugate', 'psld'): 40,  # the same plan as lambda-ddim-1
    ('lambda-ddim-2', 'psld'): 40,
    ('nse', 'psld'): 40,
    ('nvv', 'psld'): 30,
    ('rse', 'psld'): 20,
    ('rvv', 'psld'): 15,
    ('cse', 'psld'): 40,
    ('cvv', 'psld'): 40,
    ('csps-d', 'psld'): 8,
    ('oba', 'psld'): 24,
    ('bao', 'psld'): 24,
    ('obab', 'psld'): 24,
    ('baoab', 'psld'): 100,
    ('roba', 'psld'): 12,
    ('rbao', 'psld'): 12,
    ('robab', 'psld'): 100,
    ('rbaoab', 'psld'): 12,
    ('coba', 'psld'): 12,
    ('sps-s', 'psld'): 70,
    ('csps-s', 'psld'): 100,
    ('sscs', 'psld'): 50,
    ('csps-2m', 'psld'): 15,
    ('em', 'vp'): 8,
    ('euler', 'cld'): 150,
    ('em', 'cld'): 20,
    ('gddim-2m', 'cld'): 5,
    ('heun', 'cld'): 50,
    ('lambda-ddim-1', 'cld'): 40,
    ('conjugate', 'cld'): 40,  # the same plan as lambda-ddim-1
    ('lambda-ddim-2', 'cld'): 40,
    ('nse', 'cld'): 20,
    ('nvv', 'cld'): 20,
    ('rse', 'cld'): 20,
    ('rvv', 'cld'): 15,
    ('cse', 'cld'): 40,
    ('cvv', 'cld'): 30,
    ('csps-d', 'cld'): 10,
    ('csps-2m', 'cld'): 15,
    ('oba', 'cld'): 12,
    ('bao', 'cld'): 12,
    ('obab', 'cld'): 20,
    ('baoab', 'cld'): 40,
    ('roba', 'cld'): 12,
    ('rbao', 'cld'): 12,
    ('robab', 'cld'): 70,
    ('rbaoab', 'cld'): 15,
    ('coba', 'cld'): 12,
    ('sps-s', 'cld'): 100,
    ('csps-s', 'cld'): 100,
    ('sscs', 'cld'): 40,
}


LOW_NFE = ("gddim-2m-c", "gddim-3m-c", "gddim-2m", "gddim")  # the data-prediction samplers an error suggests


# A process whose scan is weaker also takes the edges measured on a related one as a floor: CLD (16 draws)
# and PSLD (256 on a GPU) share the stiffness of their explicit ε-form steps. CLD's scan of all 26 samplers found
# PSLD's edge for 14, a lower one for 9 (nse, nvv, cvv, oba, bao, obab, baoab, robab, sscs) and a higher one for 3
# (csps-d 10 against 8, rbaoab 15 against 12, sps-s 100 against 70); the largest |x| of 16 draws under-reports a
# divergence that 256 show, so cosi keeps the higher edge (docs/benchmarks.md, "Stable ranges").
FLOOR_FROM = {"cld": "psld"}


def min_nfe(sampler: str, process: str) -> int | None:
    """The smallest stable NFE of ``sampler`` on the process named ``process`` (None: no measured edge)."""
    edges = eta_schedule.EDGES.get((sampler, process))
    found = [MIN_NFE.get((sampler, process)), MIN_NFE.get((sampler, FLOOR_FROM.get(process))),
             edges[0][0] if edges else None]
    found = [n for n in found if n is not None]
    return max(found) if found else None


class UnstableNFE(ValueError):
    """A sampler asked for fewer calls than its measured stable range starts at."""


def check(sampler: str, process: str, steps_nfe: int, *, allow_unstable: bool = False) -> None:
    """Refuse ``steps_nfe`` calls (without a denoising call) below the sampler's stable range on ``process``,
    unless ``allow_unstable``."""
    edge = min_nfe(sampler, process)
    if allow_unstable or edge is None or steps_nfe >= edge:
        return
    stable = [s for s in LOW_NFE if s != sampler and (min_nfe(s, process) or 0) <= steps_nfe]
    raise UnstableNFE(
        f"{sampler} on {process} is unstable below {edge} network calls (asked: {steps_nfe}): measured there, its "
        f"samples leave the data range (|x| > {STABLE_MAX_ABS:g} on the shipped model, or the exact Gaussian "
        f"moments diverge; docs/benchmarks.md, 'Stable ranges'). Give "
        f"nfe >= {edge}, or use a data-prediction sampler stable there ({', '.join(stable) or 'none measured'}), "
        "or pass allow_unstable=True (CLI: --option allow_unstable=true) to run it anyway")


__all__ = ["STABLE_MAX_ABS", "MIN_NFE", "FLOOR_FROM", "LOW_NFE", "min_nfe", "check", "UnstableNFE"]

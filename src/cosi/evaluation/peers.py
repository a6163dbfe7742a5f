"""DPM-Solver++ (2M) and UniPC on VP, run by diffusers' own schedulers (the peer implementation).

A continuous VP process is handed to a diffusers multistep scheduler as the discrete schedule
whose cumulative products are exactly cosi's α_t² at N = ``num_train_timesteps`` times,

    ᾱ_n = α(t_n)²,   t_n = t_min + n (T − t_min)/(N − 1),   β_n = 1 − ᾱ_n/ᾱ_{n−1}  (ᾱ_{−1} = 1),

so timestep n of the scheduler is time t_n of the process (n = 0 is t_min, n = N − 1 is T).
The scheduler runs with ``final_sigmas_type="sigma_min"``: it integrates from T down to t_min,
like every cosi sampler without a final denoising step, and makes one network call per step
(NFE = steps). The rest is diffusers' defaults: ``timestep_spacing="linspace"``, second order,
lower order at the last steps; ``options`` override any scheduler argument (e.g.
``solver_order=3``, ``use_lu_lambdas=True`` for steps uniform in log-SNR).
Needs the ``diffusers`` extra.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

from ..core.processes import f64

_END = {"final_sigmas_type": "sigma_min"}  # end at t_min (DEIS always does)
SCHEDULERS = {  # name -> (diffusers class, its settings); options override them
    "dpm-solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, **_END}),
    "dpm-solver++-3m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 3, **_END}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh2", **_END}),
    "unipc-bh2-3": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh2", **_END}),
    "unipc-bh1-2": ("UniPCMultistepScheduler", {"solver_order": 2, "solver_type": "bh1", **_END}),
    "unipc-bh1-3": ("UniPCMultistepScheduler", {"solver_order": 3, "solver_type": "bh1", **_END}),
    "deis": ("DEISMultistepScheduler", {"algorithm_type": "deis", "solver_order": 3}),
}

# Every peer setting the benchmarks sweep (issue 21): (sampler, options); the Karras and lu-lambda
# step placements are options of the same sampler.
PEER_SETTINGS = [(name, {key: True} if key else {}) for name in ("dpm-solver++", "dpm-solver++-3m")
                 for key in (None, "use_lu_lambdas", "use_karras_sigmas")] + \
                [(name, {}) for name in ("unipc", "unipc-bh2-3", "unipc-bh1-2", "unipc-bh1-3")] + \
                [(name, {"use_karras_sigmas": True}) for name in ("unipc", "unipc-bh2-3")] + \
                [("deis", {}), ("ipndm", {}), ("ipndm", {"spacing": "logsnr"})]


def discrete_schedule(process, n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """(times t_n, betas β_n) of the discrete schedule matching a VP process at n times."""
    if not process.variance_preserving:
        raise ValueError(f"diffusers' schedulers need a variance-preserving one-block process; this is "
                         f"{process.name} (k={process.k})")
    t = torch.linspace(process.t_min, process.T, n, dtype=f64)
    abar = process.marginal(t).psi[:, 0] ** 2
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=f64), abar[:-1]])
    return t.numpy(), betas.numpy()


def make_scheduler(name: str, process, num_train_timesteps: int = 1000, **options):
    try:
        import diffusers
    except ImportError:
        raise ImportError(f"sampler {name!r} runs diffusers' scheduler: pip install 'cosi[diffusers]'") from None
    cls_name, defaults = SCHEDULERS[name]
    _, betas = discrete_schedule(process, num_train_timesteps)
    return getattr(diffusers, cls_name)(num_train_timesteps=num_train_timesteps, trained_betas=betas,
                                        prediction_type="epsilon", **{**defaults, **options})


@torch.no_grad()
def run(name: str, eps_model, process, nfe: int, z: Tensor, num_train_timesteps: int = 1000,
        **options) -> tuple[Tensor, int]:
    """Sample with diffusers' scheduler ``name`` from state z at T; returns (final state, calls)."""
    if nfe < 1:
        raise ValueError(f"nfe={nfe}: {name} needs at least one network call")
    if nfe >= num_train_timesteps:
        raise ValueError(f"nfe={nfe}: {name} takes at most {num_train_timesteps - 1} steps of its "
                         f"{num_train_timesteps}-step schedule")
    sched = make_scheduler(name, process, num_train_timesteps, **options)
    sched.set_timesteps(nfe, device=z.device)
    times, _ = discrete_schedule(process, num_train_timesteps)
    calls = 0
    for n in sched.timesteps:
        t = torch.full((z.shape[0],), float(times[int(n)]), device=z.device, dtype=z.dtype)
        eps = eps_model(z, t)
        z = sched.step(eps.to(z.dtype), n, z).prev_sample
        calls += 1
    return z, calls


@torch.no_grad()
def run_ipndm(eps_model, process, nfe: int, z: Tensor, spacing: str = "edm") -> tuple[Tensor, int]:
    """iPNDM (Zhang & Chen 2023, the DEIS paper's improved PNDM; 4th-order Adams–Bashforth in ε on
    x/α, lower order at the start) by diffusers' IPNDMScheduler. That scheduler carries its own
    (cosine) schedule, so its α, σ are set to cosi's VP values on a cosi grid ``spacing``
    (default EDM's ρ = 7 grid, iPNDM's usual one); NFE = steps, ending at t_min."""
    import diffusers

    from ..core.grids import time_grid

    ts = time_grid(process, nfe, spacing)
    m = process.marginal(ts)
    sched = diffusers.IPNDMScheduler()
    sched.set_timesteps(nfe, device=z.device)
    sched.alphas = m.psi[:, 0].to(torch.float32)
    sched.betas = m.L[:, 0, 0].to(torch.float32)  # diffusers' name for σ here
    calls = 0
    for i, n in enumerate(sched.timesteps):
        eps = eps_model(z, torch.full((z.shape[0],), float(ts[i]), device=z.device, dtype=z.dtype))
        z = sched.step(eps.to(z.dtype), n, z).prev_sample
        calls += 1
    return z, calls


def register() -> None:
    """Make the peers selectable by name in ``cosi.sample`` and the CLI (VP only)."""
    from ..core.integrators import VARIANCE_PRESERVING, register_external

    common = {"timestep_spacing": "linspace", "lower_order_final": True, "use_karras_sigmas": False}
    for name, description, extra in [
        ("dpm-solver++", "DPM-Solver++ (2M) on VP, diffusers' scheduler (baseline, 1 NFE/step)",
         {"use_lu_lambdas": False}),
        ("dpm-solver++-3m", "DPM-Solver++ (3M) on VP, diffusers' scheduler (baseline, 1 NFE/step)",
         {"use_lu_lambdas": False}),
        ("unipc", "UniPC (bh2, order 2) on VP, diffusers' scheduler (baseline, 1 NFE/step)", {}),
        ("unipc-bh2-3", "UniPC (bh2, order 3) on VP, diffusers' scheduler (baseline, 1 NFE/step)", {}),
        ("unipc-bh1-2", "UniPC (bh1, order 2) on VP, diffusers' scheduler (baseline, 1 NFE/step)", {}),
        ("unipc-bh1-3", "UniPC (bh1, order 3) on VP, diffusers' scheduler (baseline, 1 NFE/step)", {}),
        ("deis", "DEIS (tAB, order 3, log-rho) on VP, diffusers' scheduler (baseline, 1 NFE/step)", {}),
    ]:
        order = SCHEDULERS[name][1]["solver_order"]
        register_external(name, description, functools.partial(run, name),
                          options={**common, "solver_order": order, **extra}, requires=VARIANCE_PRESERVING, doc=__doc__)
    register_external("ipndm", "iPNDM on VP, diffusers' IPNDMScheduler on a cosi grid (baseline, 1 NFE/step)",
                      run_ipndm, options={"spacing": "edm"}, requires=VARIANCE_PRESERVING, doc=run_ipndm.__doc__)

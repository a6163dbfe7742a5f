"""Use diffusers models (UNet2DModel, UNet2DConditionModel) with cosi's samplers: the public names,
from the three modules that each do one job (docs/interop_diffusers.md):

* :mod:`cosi.models.diffusers_schedule`: a diffusers DDPM schedule as a cosi process
  (:class:`TabulatedVP`), the timestep ↔ time map, and :func:`match_ddim`;
* :mod:`cosi.models.diffusers_eps`: the UNet as a cosi eps-model (:class:`DiffusersEpsModel`);
* :mod:`cosi.models.diffusers_steps`: cosi's conjugate and denoising coefficients for the
  arbitrary step pairs of diffusers' timestep rules.

The diffusers schedulers themselves are in :mod:`cosi.models.diffusers_scheduler`.
"""

from .diffusers_eps import DiffusersEpsModel, eps_model_from_pipeline, prediction_to_eps
from .diffusers_schedule import (
    TabulatedVP, alphas_cumprod_from_config, betas_from_config, match_ddim, scheduler_config, time_to_timestep,
    timestep_to_time, vp_from_alphas_cumprod, vp_from_scheduler_config,
)
from .diffusers_steps import conjugate_steps, denoise_coefficients

__all__ = [
    "TabulatedVP", "DiffusersEpsModel", "betas_from_config", "alphas_cumprod_from_config",
    "vp_from_alphas_cumprod", "vp_from_scheduler_config", "timestep_to_time", "time_to_timestep",
    "conjugate_steps", "denoise_coefficients", "match_ddim", "eps_model_from_pipeline", "scheduler_config",
    "prediction_to_eps",
]

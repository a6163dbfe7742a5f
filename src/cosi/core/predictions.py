"""One conversion from any network prediction to ε, for any one-block linear process
x_t = ψ_t x₀ + σ_t ε (VP, VE/EDM, rectified flow, a tabulated VP; docs/integrators.md, "Prediction
types"). With ψ′, σ′ the time derivatives (from the process's drift: ψ′ = f ψ, σ′ = (2fσ² + g²)/(2σ)):

| prediction          | what the network returns                 | ε from it                                   |
|---------------------|------------------------------------------|---------------------------------------------|
| ``eps``             | ε̂                                        | ε̂                                           |
| ``x0`` ("sample")   | x̂₀                                       | (x_t − ψ x̂₀) / σ                            |
| ``v``               | v̂ = ψ ε − σ x₀ (diffusers' v on VP)      | (σ x_t + ψ v̂) / (ψ² + σ²)                   |
| ``score``           | ŝ ≈ ∇ log p_t(x_t)                       | −σ ŝ                                        |
| ``flow``            | û = dx_t/dt = ψ′ x₀ + σ′ ε               | (û − (ψ′/ψ) x_t) / (σ′ − ψ′ σ/ψ)            |
| ``denoiser``        | D(x; s) = x̂₀, called on x = x_t/ψ, s = σ/ψ | (x_t − ψ D) / σ                           |

``denoiser`` is EDM's D(x; σ) (Karras et al. 2022) in the scaled variable x_t/ψ, whose noise level is
s = σ/ψ; on the EDM process (ψ = 1, σ = t) it is D(x_t; t). Each inverse (``from_eps``) is exact, so an
exact ε wrapped in any parameterization and converted back agrees to rounding.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .processes import LinearProcess, f64, make_process

PREDICTIONS = ("eps", "x0", "v", "score", "flow", "denoiser")
ALIASES = {"epsilon": "eps", "sample": "x0", "v_prediction": "v", "velocity": "flow", "u": "flow",
           "flow_prediction": "flow"}


def prediction_name(prediction: str) -> str:
    name = ALIASES.get(prediction, prediction)
    if name not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; choose one of {list(PREDICTIONS)} "
                         f"(aliases {sorted(ALIASES)})")
    return name


def path_coefficients(process: LinearProcess, t) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(ψ_t, σ_t, ψ′_t, σ′_t), float64 of t's shape, for a one-block process."""
    if process.k != 1:
        raise ValueError(f"prediction types are defined for one-block processes x_t = ψ x₀ + σ ε; this is "
                         f"{process.name} (k={process.k}), whose network predicts ε of the (x, m) state")
    t = torch.as_tensor(t, dtype=f64)
    m = process.marginal(t)
    f, g2 = process.drift_matrices(t)
    psi, sig, f, g2 = m.psi[..., 0], m.L[..., 0, 0], f[..., 0, 0], g2[..., 0, 0]
    return psi, sig, f * psi, (2 * f * sig * sig + g2) / (2 * sig)


def _shaped(c: Tensor, z: Tensor) -> Tensor:
    c = c.to(z.device)
    if c.dim() == 0:
        return c
    return c.reshape(-1, *([1] * (z.dim() - 1)))


def eps_from(prediction: str, out: Tensor, z: Tensor, psi, sig, dpsi=None, dsig=None) -> Tensor:
    """ε from a network output ``out`` of type ``prediction`` at state z = ψ x₀ + σ ε, given the path's
    coefficients (broadcastable to z; ψ′, σ′ only for 'flow'); float64 arithmetic, returned in z's dtype."""
    p = prediction_name(prediction)
    o, x = out.to(f64), z.to(f64)
    psi, sig = (torch.as_tensor(c, device=z.device).to(f64) for c in (psi, sig))
    if p == "eps":
        e = o
    elif p in ("x0", "denoiser"):
        e = (x - psi * o) / sig
    elif p == "v":
        e = (sig * x + psi * o) / (psi * psi + sig * sig)
    elif p == "score":
        e = -sig * o
    else:  # flow
        dpsi, dsig = (torch.as_tensor(c, device=z.device).to(f64) for c in (dpsi, dsig))
        e = (o - (dpsi / psi) * x) / (dsig - dpsi * sig / psi)
    return e.to(z.dtype)


def to_eps(out: Tensor, z: Tensor, t, process: LinearProcess, prediction: str) -> Tensor:
    """ε from a network output ``out`` of type ``prediction`` at state z, time t (computed in float64,
    returned in z's dtype). For ``denoiser``, ``out`` is D's value x̂₀."""
    return eps_from(prediction, out, z, *(_shaped(c, z) for c in path_coefficients(process, t)))


def from_eps(eps: Tensor, z: Tensor, t, process: LinearProcess, prediction: str) -> Tensor:
    """The inverse of :func:`to_eps`: the output a network of type ``prediction`` gives when its ε is ``eps``."""
    p = prediction_name(prediction)
    psi, sig, dpsi, dsig = (_shaped(c, z) for c in path_coefficients(process, t))
    e, x = eps.to(f64), z.to(f64)
    x0 = (x - sig * e) / psi
    out = {"eps": lambda: e, "x0": lambda: x0, "denoiser": lambda: x0, "v": lambda: psi * e - sig * x0,
           "score": lambda: -e / sig, "flow": lambda: dpsi * x0 + dsig * e}[p]()
    return out.to(z.dtype)


def as_eps_model(model: Callable, process, prediction: str = "v") -> Callable:
    """Wrap ``model(z, t)`` that predicts ``prediction`` into an ``eps_model(z, t)`` for cosi's samplers.
    For ``denoiser`` the model is EDM's D(x, sigma), called as D(z/ψ_t, σ_t/ψ_t)."""
    process = make_process(process)
    p = prediction_name(prediction)
    path_coefficients(process, process.T)  # refuse a two-block process now, not at the first call

    def eps_model(z: Tensor, t: Tensor) -> Tensor:
        if p == "denoiser":
            psi, sig = (_shaped(c, z) for c in path_coefficients(process, t)[:2])
            out = model((z.to(f64) / psi).to(z.dtype), (sig / psi).reshape(-1).to(z.dtype))
        else:
            out = model(z, t)
        return to_eps(out, z, t, process, p)

    return eps_model


def from_denoiser(D: Callable, sigma_data: float | None = None) -> Callable:
    """An ``eps_model(z, t)`` for the EDM process (``make_process("edm")``, σ = t) from a k-diffusion/EDM
    denoiser ``D(x, sigma)`` that returns x̂₀: ε = (x − D(x; σ))/σ.

    With ``sigma_data`` (EDM: 0.5), ``D`` is instead EDM's raw network F_θ(c_in x, c_noise) and EDM's
    preconditioning is applied here: D(x; σ) = c_skip x + c_out F_θ(c_in x, ¼ ln σ), c_skip =
    σ_d²/(σ² + σ_d²), c_out = σ σ_d/sqrt(σ² + σ_d²), c_in = 1/sqrt(σ² + σ_d²) (Karras et al. 2022, Table 1).
    """
    if sigma_data is not None:
        raw, sd = D, float(sigma_data)

        def denoiser(x, sigma):
            s = _shaped(sigma.to(f64), x)
            c_skip = sd**2 / (s**2 + sd**2)
            c_out = s * sd / (s**2 + sd**2).sqrt()
            c_in = 1 / (s**2 + sd**2).sqrt()
            out = raw((c_in * x.to(f64)).to(x.dtype), (0.25 * sigma.to(f64).log()).to(x.dtype))
            return (c_skip * x.to(f64) + c_out * out.to(f64)).to(x.dtype)

        return as_eps_model(denoiser, make_process("edm"), "denoiser")
    return as_eps_model(D, make_process("edm"), "denoiser")

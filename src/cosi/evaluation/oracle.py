"""The exact-score oracle (math.md §4): Gaussian-mixture data, its exact ε for any linear
process, exact data samples and a high-accuracy probability-flow ODE reference. The
distances that compare samplers against it live in :mod:`cosi.evaluation.distances`.

For data x₀ ~ Σ_j w_j N(μ_j, diag(v_j)), every marginal of a linear process is a Gaussian
mixture: per data coordinate c, component j has mean a_t μ_jc (a_t = Ψ(t,0)[:, 0]) and
covariance Σ_t + v_jc a_t a_tᵀ. The exact score follows by log-sum-exp over components and
ε = −L_tᵀ s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core.processes import LinearProcess, f64


@dataclass
class GaussianMixture:
    """Data x₀ ∈ R^d (or an image shape with prod(shape) = d): weights (J,), means (J, d),
    variances (J, d) (diagonal covariances)."""

    weights: Tensor
    means: Tensor
    variances: Tensor
    shape: tuple  # one sample's shape, e.g. (32,) or (1, 4, 4)

    @property
    def d(self) -> int:
        return self.means.shape[1]

    @classmethod
    def random(cls, d: int = 32, components: int = 8, shape=None, seed: int = 0,
               std_range=(0.05, 0.25)) -> "GaussianMixture":
        """A random mixture with data in roughly [-1, 1], like scaled images."""
        g = torch.Generator().manual_seed(seed)
        shape = tuple(shape) if shape is not None else (d,)
        if math.prod(shape) != d:
            raise ValueError(f"shape {shape} does not have d={d} entries")
        w = torch.rand(components, generator=g, dtype=f64) + 0.5
        means = (torch.rand(components, d, generator=g, dtype=f64) * 1.6 - 0.8)
        lo, hi = std_range
        std = lo + (hi - lo) * torch.rand(components, d, generator=g, dtype=f64)
        return cls(w / w.sum(), means, std**2, shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact data samples, float64, shape (n, *shape)."""
        j = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        xi = torch.randn(n, self.d, generator=generator, dtype=f64)
        x = self.means[j] + self.variances[j].sqrt() * xi
        return x.view(n, *self.shape)

    def sample_state(self, process: LinearProcess, t: float, n: int,
                     generator: torch.Generator | None = None) -> Tensor:
        """n exact samples of the full state z_t = μ_t(x₀) + L_t ε of the process at time
        t > 0, float64, shape (n, k*d) (or (n, k*C, ...) for image-shaped data)."""
        x0 = self.sample(n, generator).reshape(n, 1, self.d)
        m = process.marginal(torch.tensor(float(t), dtype=f64))
        xi = torch.randn(n, process.k, self.d, generator=generator, dtype=f64)
        z = m.psi[:, None] * x0 + m.L @ xi
        return z.reshape(n, process.k * self.shape[0], *self.shape[1:])

    def sample_marginal(self, process: LinearProcess, t: float, n: int,
                        generator: torch.Generator | None = None) -> Tensor:
        """n exact samples of the data block x_t (t = 0: the data itself)."""
        if t == 0:
            return self.sample(n, generator)
        return process.data_block(self.sample_state(process, t, n, generator))

    def marginal_mixture(self, process: LinearProcess, t: float) -> "GaussianMixture":
        """The mixture that the data block x_t follows (t = 0: the data itself)."""
        if t == 0:
            return self
        m = process.marginal(torch.tensor(float(t), dtype=f64))
        a, s2 = m.psi[0], m.cov[0, 0]
        return GaussianMixture(self.weights, a * self.means, a * a * self.variances + s2, self.shape)

    def kernel_mean(self, x: Tensor, s2: float) -> Tensor:
        """E_y exp(−‖x − y‖²/(2 s2)) under this mixture, for each row of x (exact)."""
        x = x.reshape(len(x), -1).to(f64)
        v = self.variances + s2  # (J, d)
        logc = 0.5 * (math.log(s2) * self.d - v.log().sum(1))  # (J,)
        q = (((x[:, None] - self.means[None]) ** 2) / v[None]).sum(-1)  # (n, J)
        return (self.weights.log() + logc - 0.5 * q).logsumexp(1).exp()

    def kernel_self_mean(self, s2: float) -> float:
        """E_{y,y'} exp(−‖y − y'‖²/(2 s2)) for independent y, y' of this mixture (exact)."""
        v = self.variances[:, None] + self.variances[None] + s2  # (J, J, d)
        dm = (self.means[:, None] - self.means[None]) ** 2
        logk = 0.5 * (math.log(s2) * self.d - v.log().sum(-1)) - 0.5 * (dm / v).sum(-1)
        w = self.weights.log()
        return float((w[:, None] + w[None] + logk).logsumexp((0, 1)).exp())

    # ---- exact score ----------------------------------------------------------------------
    def score(self, process: LinearProcess, z: Tensor, t) -> Tensor:
        """∇ log p_t(z) for states z of shape (B, k*d) or (B, k*C, ...), float64."""
        k, B = process.k, z.shape[0]
        zb = z.to(f64).reshape(B, k, self.d).transpose(1, 2)  # (B, d, k)
        t = torch.as_tensor(t, dtype=f64).expand(B) if torch.as_tensor(t).dim() == 0 \
            else torch.as_tensor(t, dtype=f64)
        m = process.marginal(t)
        a, S = m.psi[:, None, None, :], m.cov[:, None, None]  # (B,1,1,k), (B,1,1,k,k)
        mu = a * self.means[None, :, :, None]  # (B, J, d, k)
        cov = S + self.variances[None, :, :, None, None] * (a[..., :, None] * a[..., None, :])
        r = zb[:, None] - mu  # (B, J, d, k)
        inv, logdet = _inv_logdet(cov)
        sol = (inv @ r[..., None])[..., 0]  # cov⁻¹ r
        logp = -0.5 * ((r * sol).sum(-1) + logdet).sum(-1) + self.weights.log()  # (B, J)
        gamma = torch.softmax(logp, dim=1)[..., None, None]
        s = -(gamma * sol).sum(1)  # (B, d, k)
        return s.transpose(1, 2).reshape(z.shape)

    def eps_model(self, process: LinearProcess):
        """The exact ε_θ(z, t) = −L_tᵀ ∇log p_t(z), returned in z's dtype."""

        def eps(z: Tensor, t: Tensor) -> Tensor:
            s = self.score(process, z, t)
            LT = process.marginal(t.to(f64)).L.transpose(-1, -2)
            from ..core.processes import apply_blocks

            return (-apply_blocks(LT, s)).to(z.dtype)

        return eps


def _inv_logdet(C: Tensor) -> tuple[Tensor, Tensor]:
    k = C.shape[-1]
    if k == 1:
        return 1.0 / C, C[..., 0, 0].log()
    if k == 2:
        a, b, c, d = C[..., 0, 0], C[..., 0, 1], C[..., 1, 0], C[..., 1, 1]
        det = a * d - b * c
        inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]
        return inv, det.log()
    return torch.linalg.inv(C), torch.logdet(C)


# ---- the reference solution of the probability-flow ODE -------------------------------------


def reference_solution(gmm: GaussianMixture, process: LinearProcess, z_T: Tensor, *,
                       t_end: float | None = None, rtol: float = 1e-10, atol: float = 1e-10) -> Tensor:
    """Solve dz/dt = f(t) z − ½ g²(t) ∇log p_t(z) ((f, g²) = ``process.drift_matrices(t)``, = β(F, D)) from
    T to t_end (default t_min) in float64 with an adaptive 8th-order Runge–Kutta method (scipy DOP853)
    at tolerance rtol/atol. The tolerances are relative to the state's scale: on VE/EDM (T = 80) the
    state starts ~80 times larger than on VP, and rtol carries the accuracy."""
    from scipy.integrate import solve_ivp

    from ..core.processes import apply_blocks

    t_end = process.t_min if t_end is None else t_end
    shape = z_T.shape

    def rhs(t, y):
        z = torch.from_numpy(y).view(shape)
        s = gmm.score(process, z, t)
        f, g2 = process.drift_matrices(torch.tensor(t, dtype=f64))
        drift = apply_blocks(f, z) - 0.5 * apply_blocks(g2, s)
        return drift.flatten().numpy()

    y0 = z_T.to(f64).flatten().cpu().numpy()
    sol = solve_ivp(rhs, (process.T, t_end), y0, method="DOP853", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"reference ODE solve failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1].copy()).view(shape)

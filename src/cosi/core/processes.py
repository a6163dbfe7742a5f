"""Linear diffusions in block form (math.md §1).

Every data coordinate carries a block state ``z ∈ R^k`` (k = 1 for VP, k = 2 for CLD
and PSLD: data x and momentum m). The forward SDE is

    dz = β(t) F z dt + sqrt(β(t)) G dw,     D = G Gᵀ,     b(t) = ∫₀ᵗ β(s) ds,

with constant k×k matrices F, D and β(t) = β₀ + (β₁ − β₀) t (β₀ = 0 is allowed: only t > 0 is
used). A one-block process that is not of this form (rectified flow: ψ = 1 − t, σ = t) is a
:class:`ScalarProcess`, defined by closed-form ψ(t), σ(t). A tensor state has its blocks stacked
along dim 1: ``(B, k*C, *spatial)`` or ``(B, k*d)``, x first.

Integrators see a process only through its capabilities, never its name:

- ``drift_matrices(t) -> (f(t), g²(t))``: the forward SDE dz = f z dt + g dw (f = βF, g² = βD),
  the one source of the probability-flow drift f z − ½ g² ∇log p;
- ``drift_integral(t, s) = ∫_s^t f(u) du`` where the f(u) commute (constant F, or k = 1);
- ``marginal(t)``, ``transition(t, s)``, ``noise_cov(t, s)``;
- ``k``, ``variance_preserving`` (k = 1 and ψ_t² + Σ_t = 1), ``constant_beta`` (f constant in t);
- ``log_snr(t)`` = log(ψ_x² / Σ_xx) of the data block, its inverse ``log_snr_inverse`` (closed form
  where one exists, bisection otherwise), and EDM's ``sigma_of_t`` = exp(−log_snr / 2) with
  ``t_of_sigma``.

All coefficients are computed in float64 (torch) and vectorized over t; they are cast
to the state's dtype only where they are applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

f64 = torch.float64


class Marginal(NamedTuple):
    """Perturbation kernel z_t | x₀ ~ N(ψ_t x₀, Σ_t) per data coordinate, all (..., k[, k]) float64."""

    psi: Tensor  # ψ_t = Ψ(t, 0)[:, 0], (..., k): the mean μ_t = ψ_t x₀
    cov: Tensor  # Σ_t, (..., k, k)
    L: Tensor  # lower Cholesky factor of Σ_t
    L_invT: Tensor  # L_t^{-T}


def as_time(t, device=None) -> Tensor:
    """Times as a float64 tensor (scalars become 0-d tensors)."""
    return torch.as_tensor(t, dtype=f64, device=device)


def cholesky(S: Tensor) -> Tensor:
    """Lower Cholesky factor of SPD matrices (..., k, k); closed form for k ≤ 2 (no sync)."""
    k = S.shape[-1]
    if k == 1:
        return S.sqrt()
    if k == 2:
        a = S[..., 0, 0].sqrt()
        c = S[..., 1, 0] / a
        d = (S[..., 1, 1] - c * c).sqrt()
        zero = torch.zeros_like(a)
        return torch.stack([torch.stack([a, zero], -1), torch.stack([c, d], -1)], -2)
    return torch.linalg.cholesky(S)


def sqrtm_psd(S: Tensor) -> Tensor:
    """The PSD square root of symmetric matrices (..., k, k); eigenvalues below 0 (rounding)
    are clipped."""
    w, V = torch.linalg.eigh(0.5 * (S + S.transpose(-1, -2)))
    return (V * w.clamp_min(0).sqrt().unsqueeze(-2)) @ V.transpose(-1, -2)


def inv_transpose_lower(L: Tensor) -> Tensor:
    """L^{-T} for lower-triangular L (..., k, k)."""
    k = L.shape[-1]
    if k == 1:
        return 1.0 / L
    if k == 2:
        a, c, d = L[..., 0, 0], L[..., 1, 0], L[..., 1, 1]
        zero = torch.zeros_like(a)
        return torch.stack(
            [torch.stack([1 / a, -c / (a * d)], -1), torch.stack([zero, 1 / d], -1)], -2
        )
    eye = torch.eye(k, dtype=L.dtype, device=L.device).expand_as(L)
    return torch.linalg.solve_triangular(L, eye, upper=False).transpose(-1, -2)


def van_loan(F: Tensor, D: Tensor, db: Tensor) -> tuple[Tensor, Tensor]:
    """(e^{db F}, ∫₀^{db} e^{uF} D e^{uFᵀ} du) for db of any shape, from one block exponential:
    with C = [[−F, D], [0, Fᵀ]] and expm(db C) = [[·, P], [0, Q]], the integral is Qᵀ P."""
    k = F.shape[-1]
    C = torch.zeros(2 * k, 2 * k, dtype=f64, device=db.device)
    C[:k, :k], C[:k, k:], C[k:, k:] = -F, D, F.T
    E = torch.linalg.matrix_exp(db[..., None, None] * C)
    P, Q = E[..., :k, k:], E[..., k:, k:]
    Qt = Q.transpose(-1, -2)
    return Qt, Qt @ P


def invert_decreasing(f, y: Tensor, lo: float, hi: float, iters: int = 52) -> Tensor:
    """Solve f(t) = y for a decreasing f on [lo, hi] by vectorized bisection (float64; 52 halvings
    reach the float64 resolution of [lo, hi])."""
    a = torch.full_like(y, lo)
    b = torch.full_like(y, hi)
    for _ in range(iters):
        mid = 0.5 * (a + b)
        right = f(mid) > y  # still above the target: the root is to the right
        a = torch.where(right, mid, a)
        b = torch.where(right, b, mid)
    return 0.5 * (a + b)


def apply_blocks(M: Tensor, z: Tensor) -> Tensor:
    """Apply k×k matrices to a block state: out_i = Σ_j M_ij z_j.

    ``M`` is (k, k) (one matrix for the batch) or (B, k, k) (one per sample); ``z`` is
    (B, k*C, *spatial) or (B, k*d). ``M`` must already have ``z``'s dtype and device.
    """
    k = M.shape[-1]
    if k == 1:
        m = M[..., 0, 0]
        return z * (m if m.dim() == 0 else m.view(-1, *([1] * (z.dim() - 1))))
    zb = z.unflatten(1, (k, -1))
    if M.dim() == 2 and k == 2:  # explicit: far cheaper than einsum on small tensors
        x, m = zb[:, 0], zb[:, 1]
        return torch.cat([M[0, 0] * x + M[0, 1] * m, M[1, 0] * x + M[1, 1] * m], 1)
    eq = "ij,bj...->bi..." if M.dim() == 2 else "bij,bj...->bi..."
    return torch.einsum(eq, M, zb).flatten(1, 2)


def perturb(psi: Tensor, L: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """z_t = ψ_t ⊗ x₀ + L_t ε (math.md §1): ``psi`` (B, k) and ``L`` (B, k, k) of the marginal at
    each sample's t, ``x0`` data (B, C, ...), ``eps`` (B, k·C, ...). The one formula behind
    :meth:`LinearProcess.perturb` and the training table's interpolated ψ_t, L_t."""
    shape = (-1,) + (1,) * (x0.dim() - 1)
    mean = torch.cat([psi[:, i].view(shape) * x0 for i in range(psi.shape[1])], 1)
    return mean + apply_blocks(L, eps)


@dataclass(frozen=True, eq=False)
class LinearProcess:
    """A linear diffusion dz = β(t) F z dt + sqrt(β(t)) G dw with D = G Gᵀ.

    Build one with :func:`vp`, :func:`cld`, :func:`psld` or :func:`make_process`.
    """

    name: str
    F: tuple | None = None  # k×k, row-major nested tuples (hashable; use .F_ for the tensor)
    D: tuple | None = None
    Sigma0: tuple | None = None
    beta_0: float | None = None  # None: a subclass defines beta/b/b_inverse itself (TabulatedVP)
    beta_1: float | None = None
    T: float = 1.0
    t_min: float = 1e-3
    t_train_min: float = 1e-5
    params: tuple = ()  # the user-facing parameters, as (name, value) pairs
    ode_grid: str = "quadratic"  # the time grid samplers default to here, measured on the oracles (docs/integrators.md,
    # "Default time grids"): quadratic, log-SNR on VE/EDM; a sampler may override it for a process it was measured on

    def __post_init__(self):
        if not (0.0 < self.t_min < self.T):
            raise ValueError(
                f"need 0 < t_min < T, got t_min={self.t_min}, T={self.T}; "
                "sampling runs from T down to t_min (official PSLD: t_min = 1e-3, T = 1)"
            )
        if not (0.0 < self.t_train_min <= self.t_min):
            raise ValueError(
                f"need 0 < t_train_min <= t_min, got t_train_min={self.t_train_min}, t_min={self.t_min}"
            )
        if self.beta_0 is not None and (self.beta_0 < 0 or self.beta_1 <= 0):
            raise ValueError(f"β(t) must be positive on (0, T]: got β₀={self.beta_0}, β₁={self.beta_1} "
                             "(β₀ = 0 is allowed)")

    # ---- identity -------------------------------------------------------------------
    @property
    def k(self) -> int:
        return len(self.F)

    @property
    def key(self) -> tuple:
        """Hashable identity used to cache coefficient tables."""
        return (self.name, self.F, self.D, self.Sigma0, self.beta_0, self.beta_1, self.T, self.t_min)

    def __eq__(self, other):
        return isinstance(other, LinearProcess) and self.key == other.key

    def __hash__(self):
        return hash(self.key)

    def to_config(self) -> dict:
        """JSON-able description; ``make_process(**cfg)`` rebuilds the process."""
        return {"name": self.name, **dict(self.params), "t_min": self.t_min, "T": self.T,
                "t_train_min": self.t_train_min}

    def __repr__(self):
        ps = ", ".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.name}({ps}, t_min={self.t_min:g}, T={self.T:g})"

    # ---- matrices ---------------------------------------------------------------------
    def _mat(self, m, device=None) -> Tensor:
        return torch.tensor(m, dtype=f64, device=device)

    @property
    def F_(self) -> Tensor:
        return self._mat(self.F)

    @property
    def D_(self) -> Tensor:
        return self._mat(self.D)

    @property
    def Sigma0_(self) -> Tensor:
        return self._mat(self.Sigma0)

    @property
    def constant_beta(self) -> bool:
        """β (hence the drift f = βF) does not depend on t."""
        return self.beta_0 is not None and self.beta_0 == self.beta_1

    @property
    def variance_preserving(self) -> bool:
        """ψ_t² + Σ_t = 1 for all t (one block): d(ψ² + Σ)/dt = β (2F (ψ² + Σ) + D) vanishes
        from ψ₀ = 1, Σ₀ = 0 exactly when 2F + D = 0. VP and every tabulated VP schedule."""
        return self.k == 1 and self.Sigma0[0][0] == 0 and 2 * self.F[0][0] + self.D[0][0] == 0

    # ---- the drift: one capability every integrator uses ----------------------------------
    def drift_matrices(self, t) -> tuple[Tensor, Tensor]:
        """(f(t), g²(t)) = (β(t) F, β(t) D), each (..., k, k) float64: the forward SDE is
        dz = f z dt + g dw and the probability-flow drift is f z − ½ g² ∇log p_t(z)."""
        beta = self.beta(t)[..., None, None]
        return beta * self.F_.to(beta.device), beta * self.D_.to(beta.device)

    def drift_integral(self, t, s) -> Tensor:
        """∫_s^t f(u) du = (b(t) − b(s)) F, (..., k, k); transition(t, s) = expm of it."""
        db = as_time(self.b(t)) - as_time(self.b(s))
        return db[..., None, None] * self.F_.to(db.device)

    # ---- signal-to-noise ratio ---------------------------------------------------------------
    def log_snr(self, t) -> Tensor:
        """log SNR of the data block, log(ψ_x(t)² / Σ_t,xx); decreasing in t."""
        m = self.marginal(t)
        return torch.log(m.psi[..., 0] ** 2 / m.cov[..., 0, 0])

    def log_snr_derivative(self, t) -> Tensor:
        """dλ/dt of λ = log_snr: 2ψ_x′/ψ_x − Σ_xx′/Σ_xx with ψ′ = f ψ and Σ′ = f Σ + Σ fᵀ + g²."""
        m = self.marginal(t)
        f, g2 = self.drift_matrices(t)
        dpsi_x = (f @ m.psi[..., None])[..., 0, 0]
        dvar_x = (f @ m.cov + m.cov @ f.transpose(-1, -2) + g2)[..., 0, 0]
        return 2 * dpsi_x / m.psi[..., 0] - dvar_x / m.cov[..., 0, 0]

    @property
    def log_snr_closed_form(self) -> bool:
        """:meth:`log_snr_inverse` is closed form (not bisection): one block with Σ₀ = 0."""
        return self.k == 1 and self.Sigma0 is not None and self.Sigma0[0][0] == 0

    def log_snr_inverse(self, lam) -> Tensor:
        """The t with log_snr(t) = lam. Closed form for one block with Σ₀ = 0 (VP, VE/EDM, tabulated
        VP): Σ/ψ² = D (1 − e^{−2bF}) / (2F) (= bD for F = 0), so b = −log1p(−2F e^{−λ}/D) / (2F);
        bisection on [t_min/2, T] otherwise."""
        lam = as_time(lam)
        if self.log_snr_closed_form:
            F, D = self.F[0][0], self.D[0][0]
            r = torch.exp(-lam) / D
            b = r if F == 0 else -torch.log1p(-2 * F * r) / (2 * F)
            return self.b_inverse(b)
        return invert_decreasing(self.log_snr, lam, 0.5 * self.t_min, self.T)

    def sigma_of_t(self, t) -> Tensor:
        """EDM's noise level σ(t) = sqrt(Σ_xx)/ψ_x = exp(−log_snr/2) (VP: sqrt(e^{b} − 1); VE: t)."""
        return torch.exp(-0.5 * self.log_snr(t))

    def t_of_sigma(self, sigma) -> Tensor:
        """The inverse of :meth:`sigma_of_t`."""
        return self.log_snr_inverse(-2 * torch.log(as_time(sigma)))

    # ---- schedules --------------------------------------------------------------------
    def beta(self, t) -> Tensor:
        t = as_time(t)
        return self.beta_0 + (self.beta_1 - self.beta_0) * t

    def b(self, t) -> Tensor:
        """b(t) = ∫₀ᵗ β(s) ds."""
        t = as_time(t)
        return self.beta_0 * t + 0.5 * (self.beta_1 - self.beta_0) * t * t

    def b_inverse(self, b) -> Tensor:
        """The t with b(t) = b (β > 0 on (0, T], so b is increasing)."""
        b = as_time(b)
        if self.constant_beta:
            return b / self.beta_0
        a = 0.5 * (self.beta_1 - self.beta_0)
        return 2 * b / (self.beta_0 + torch.sqrt(self.beta_0**2 + 4 * a * b))  # stable for β₀ → 0

    # ---- transitions and marginals ------------------------------------------------------
    def transition(self, t, s) -> Tensor:
        """Ψ(t, s) = expm((b(t) − b(s)) F), shape (..., k, k)."""
        return torch.linalg.matrix_exp(self.drift_integral(t, s))

    def _van_loan(self, db: Tensor) -> tuple[Tensor, Tensor]:
        return van_loan(self.F_.to(db.device), self.D_.to(db.device), db)

    def noise_cov(self, t, s) -> Tensor:
        """Covariance of the noise added by the forward SDE over [s, t] (s ≤ t)."""
        return self._van_loan(self.b(t) - self.b(s))[1]

    def marginal(self, t) -> Marginal:
        """The HSM perturbation kernel at times t (any shape), float64."""
        t = as_time(t)
        psi, noise = self._van_loan(self.b(t))
        S0 = self.Sigma0_.to(t.device)
        cov = psi @ S0 @ psi.transpose(-1, -2) + noise
        cov = 0.5 * (cov + cov.transpose(-1, -2))
        L = cholesky(cov)
        return Marginal(psi[..., :, 0], cov, L, inv_transpose_lower(L))

    # ---- tensors ------------------------------------------------------------------------
    def state_shape(self, data_shape) -> tuple:
        """(B, C, *spatial) or (B, d) -> the block state's shape (B, k*C, ...)."""
        B, c, *rest = data_shape
        return (B, self.k * c, *rest)

    def prior_sample(self, shape, generator=None, device=None, dtype=torch.float32, *, keys: Tensor | None = None) -> Tensor:
        """z_T ~ N(0, Σ_T) per data coordinate; ``shape`` is the full state shape. The standard normals
        come from ``generator``, or, with ``keys`` (one per sample), from the counter-based draws of
        :mod:`cosi.core.noise`, so that sample i is the same in any batch."""
        if shape[1] % self.k:
            raise ValueError(f"state dim 1 ({shape[1]}) must be a multiple of k={self.k} for {self.name}")
        if keys is not None:
            from .noise import PRIOR_DRAW, counter_normal

            xi = counter_normal(keys, PRIOR_DRAW, tuple(shape[1:]), dtype=f64)
        else:
            xi = torch.randn(shape, generator=generator, dtype=f64, device=device or "cpu")
        L = self.marginal(self.T).L.to(xi.device)
        return apply_blocks(L, xi).to(device=device or xi.device, dtype=dtype)

    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """z_t = μ_t(x₀) + L_t ε, the HSM training input (math.md §1).

        ``x0`` is data (B, C, ...), ``t`` is (B,), ``eps`` is (B, k*C, ...).
        """
        m = self.marginal(t.to(f64))
        return perturb(m.psi.to(x0.dtype), m.L.to(x0.dtype), x0, eps)

    def data_block(self, z: Tensor) -> Tensor:
        """The data block x of a state z."""
        return z.unflatten(1, (self.k, -1))[:, 0]


@dataclass(frozen=True, eq=False)
class ScalarProcess(LinearProcess):
    """A one-block linear diffusion x_t = ψ(t) x₀ + σ(t) ε given by closed-form ψ, σ and their
    derivatives (subclasses define :meth:`psi_sigma`). Its forward SDE dx = f x dt + g dw has
    f = ψ′/ψ and g² = dσ²/dt − 2fσ² = 2σ (σ′ − fσ), which need not be β(t)·(constant): rectified
    flow has f = −1/(1 − t), g² = 2t/(1 − t). It has no constant F, D or scalar β; every
    integrator reaches it through :meth:`drift_matrices`, :meth:`drift_integral` and
    :meth:`marginal` (Σ₀ = 0)."""

    def __post_init__(self):
        LinearProcess.__post_init__(self)

    def psi_sigma(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(ψ, σ, dψ/dt, dσ/dt) at times t (float64)."""
        raise NotImplementedError

    @property
    def k(self) -> int:
        return 1

    @property
    def key(self) -> tuple:
        return (type(self).__name__, self.name, self.params, self.T, self.t_min)

    @property
    def constant_beta(self) -> bool:
        return False

    @property
    def variance_preserving(self) -> bool:
        return False

    def _no(self, what):
        raise AttributeError(f"{self.name} has no constant {what}: its forward SDE is dx = f(t) x dt + "
                             "g(t) dw, use drift_matrices(t)")

    F_ = property(lambda self: self._no("F"))
    D_ = property(lambda self: self._no("D"))
    Sigma0_ = property(lambda self: torch.zeros(1, 1, dtype=f64))

    def beta(self, t) -> Tensor:
        self._no("β(t)·F form")

    def b(self, t) -> Tensor:
        self._no("β(t)·F form")

    def drift_matrices(self, t) -> tuple[Tensor, Tensor]:
        psi, sig, dpsi, dsig = self.psi_sigma(as_time(t))
        f = dpsi / psi
        return f[..., None, None], (2 * sig * (dsig - f * sig))[..., None, None]

    def drift_integral(self, t, s) -> Tensor:
        return torch.log(self.psi_sigma(as_time(t))[0] / self.psi_sigma(as_time(s))[0])[..., None, None]

    def noise_cov(self, t, s) -> Tensor:
        psi_t, sig_t, _, _ = self.psi_sigma(as_time(t))
        psi_s, sig_s, _, _ = self.psi_sigma(as_time(s))
        return (sig_t**2 - (psi_t / psi_s) ** 2 * sig_s**2)[..., None, None]

    def marginal(self, t) -> Marginal:
        psi, sig, _, _ = self.psi_sigma(as_time(t))
        L = sig[..., None, None]
        return Marginal(psi[..., None], L * L, L, 1.0 / L)

    def log_snr(self, t) -> Tensor:
        psi, sig, _, _ = self.psi_sigma(as_time(t))
        return 2 * torch.log(psi / sig)

    log_snr_closed_form = False  # a subclass with a closed-form log_snr_inverse sets True


@dataclass(frozen=True, eq=False)
class RectifiedFlow(ScalarProcess):
    """Rectified flow / flow matching: x_t = (1 − t) x₀ + t ε, data at t = 0.

    T defaults to 1 − 10⁻³, not 1: at t = 1, ψ = 0 makes the data prediction x̂₀ = (x − tε)/ψ, the
    drift f = −1/(1 − t) and A_t of the conjugate integrators undefined. At T = 0.999 the prior
    N(0, T²) misses the true marginal only by its mean ψ_T x₀ = 10⁻³ x₀ (VP's ψ_T at T = 1 is
    6.6·10⁻³), and every sampler's first step is finite."""

    def psi_sigma(self, t):
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)

    log_snr_closed_form = True

    def log_snr_inverse(self, lam) -> Tensor:
        return torch.sigmoid(-0.5 * as_time(lam))  # (1 − t)/t = e^{λ/2}


# ---- the processes -----------------------------------------------------------------------------


def vp(beta_min: float = 0.1, beta_max: float = 20.0, *, t_min: float = 1e-3, T: float = 1.0,
       t_train_min: float = 1e-5) -> LinearProcess:
    """VP SDE (Song et al. 2021): F = −½, D = 1, β(t) = β_min + (β_max − β_min) t."""
    return LinearProcess(
        "vp", ((-0.5,),), ((1.0,),), ((0.0,),), float(beta_min), float(beta_max), T, t_min,
        t_train_min, (("beta_min", float(beta_min)), ("beta_max", float(beta_max))),
    )


def psld(Gamma: float = 0.01, nu: float = 4.01, M_inv: float = 4.0, beta: float = 8.0,
         kappa: float = 0.04, *, t_min: float = 1e-3, T: float = 1.0,
         t_train_min: float = 1e-5) -> LinearProcess:
    """Phase Space Langevin Diffusion (Pandey & Mandt 2023), CIFAR-10 settings by default.

    F = ½ [[−Γ, M⁻¹], [−1, −ν]], D = diag(Γ, M ν), β constant, Σ₀ = diag(0, κ M).
    Requires critical damping (Γ − ν)² = 4 M⁻¹.
    """
    if M_inv <= 0 or Gamma < 0 or nu < 0 or kappa < 0:
        raise ValueError(f"PSLD needs M_inv > 0 and Gamma, nu, kappa >= 0; got "
                         f"M_inv={M_inv}, Gamma={Gamma}, nu={nu}, kappa={kappa}")
    gap = (Gamma - nu) ** 2 - 4 * M_inv
    if abs(gap) > 1e-8 * max(1.0, 4 * M_inv):
        fix = Gamma + 2 * math.sqrt(M_inv)
        raise ValueError(
            f"PSLD requires critical damping (Gamma - nu)^2 = 4*M_inv, got Gamma={Gamma}, nu={nu}, "
            f"M_inv={M_inv}: (Gamma - nu)^2 - 4*M_inv = {gap:.3g}. "
            f"Set nu = Gamma + 2*sqrt(M_inv) = {fix:g} (or change M_inv)."
        )
    M = 1.0 / M_inv
    F = ((-0.5 * Gamma, 0.5 * M_inv), (-0.5, -0.5 * nu))
    D = ((float(Gamma), 0.0), (0.0, M * nu))
    S0 = ((0.0, 0.0), (0.0, kappa * M))
    params = (("Gamma", float(Gamma)), ("nu", float(nu)), ("M_inv", float(M_inv)),
              ("beta", float(beta)), ("kappa", float(kappa)))
    return LinearProcess("psld", F, D, S0, float(beta), float(beta), T, t_min, t_train_min, params)


def cld(M: float = 0.25, Gamma: float = 1.0, beta: float = 4.0, gamma: float = 0.04, *,
        t_min: float = 1e-3, T: float = 1.0, t_train_min: float = 1e-5) -> LinearProcess:
    """Critically damped Langevin diffusion (Dockhorn et al. 2022).

    F = [[0, M⁻¹], [−1, −Γ M⁻¹]], D = diag(0, 2Γ), β constant, Σ₀ = diag(0, γ M).
    Critical damping is Γ² = 4M.
    """
    if M <= 0 or Gamma <= 0 or gamma < 0:
        raise ValueError(f"CLD needs M > 0, Gamma > 0, gamma >= 0; got M={M}, Gamma={Gamma}, gamma={gamma}")
    F = ((0.0, 1.0 / M), (-1.0, -Gamma / M))
    D = ((0.0, 0.0), (0.0, 2.0 * Gamma))
    S0 = ((0.0, 0.0), (0.0, gamma * M))
    params = (("M", float(M)), ("Gamma", float(Gamma)), ("beta", float(beta)), ("gamma", float(gamma)))
    return LinearProcess("cld", F, D, S0, float(beta), float(beta), T, t_min, t_train_min, params)


def edm(*, t_min: float = 0.002, T: float = 80.0, t_train_min: float | None = None) -> LinearProcess:
    """VE / EDM (Karras et al. 2022): ψ = 1, σ(t) = t, i.e. F = 0, D = 1, β(t) = 2t (b = t², Σ_t = t²),
    Σ₀ = 0, on [t_min, T] = [σ_min, σ_max] = [0.002, 80] (EDM's defaults). β(0) = 0 is harmless: only
    t > 0 is used."""
    return LinearProcess("edm", ((0.0,),), ((1.0,),), ((0.0,),), 0.0, 2.0, float(T), float(t_min),
                         float(t_min if t_train_min is None else t_train_min), ode_grid="logsnr")


def rf(*, t_min: float = 1e-3, T: float = 1 - 1e-3, t_train_min: float = 1e-5) -> RectifiedFlow:
    """Rectified flow (Liu et al. 2022; flow matching with the linear path): ψ = 1 − t, σ = t. See
    :class:`RectifiedFlow` for why T = 0.999."""
    if T >= 1:
        raise ValueError(f"rectified flow needs T < 1 (ψ_T = 1 − T must be > 0), got T={T}; e.g. T = 0.999")
    return RectifiedFlow("rf", T=float(T), t_min=float(t_min), t_train_min=float(t_train_min))


PROCESSES = {"vp": vp, "cld": cld, "psld": psld, "edm": edm, "rf": rf}
ALIASES = {"ve": "edm", "rectified-flow": "rf"}


def make_process(name: str, **params) -> LinearProcess:
    """Build a process by name with parameter overrides, e.g. ``make_process('psld', beta=6)``;
    names: vp, cld, psld, edm (alias ve), rf (alias rectified-flow)."""
    if isinstance(name, LinearProcess):
        return name
    key = ALIASES.get(name.lower(), name.lower())
    try:
        build = PROCESSES[key]
    except KeyError:
        choices = sorted(PROCESSES) + sorted(ALIASES)
        raise ValueError(f"unknown process {name!r}; choose one of {choices}") from None
    try:
        return build(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for process {name!r}: {e}") from None

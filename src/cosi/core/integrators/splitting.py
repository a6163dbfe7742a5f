"""Splitting integrators for the k = 2 processes CLD and PSLD (math.md §3).

The reverse-time vector field (η: noise scale; η = 0 is the probability-flow ODE)

    dz = β(t) [F z + ½(1 + η²) D L_t⁻ᵀ ε_θ(z, t)] dt + η sqrt(β(t)) G dw̄

is split into sub-flows on z = (x, m):

    A (position, m and ε frozen):  dx = β [K_A z + (1 + η²) S_x(t) ε] dt
    B (momentum, x and ε frozen):  dm = β [K_B z + (1 + η²) S_m(t) ε] dt
    O (linear drift and noise):    dz = β K_O z dt + η sqrt(β) G dw̄      (solved exactly)

with S(t) = ½ D L_t⁻ᵀ (``score_coef`` computes β S). Deterministic schemes put the whole linear drift into A and B
(K_A = row x of F, K_B = row m of F). Stochastic schemes put the friction of each block,
diag(F), into O with the noise (an Ornstein–Uhlenbeck flow solved exactly as a Gaussian
transition, float64 Van Loan), and the coupling terms F₁₂ m and F₂₁ x into A and B — the
molecular-dynamics split of Langevin dynamics into drift (A), kick (B) and thermostat (O).

Each A/B sub-flow is advanced over its sub-interval [t_a → t_b] either by Euler, or by the
conjugate update of its own linear part (the conjugate-splitting hybrid): with
X_u = expm((u − t_a)(λP − βK)) (P the projection on the flow's block, λ the flow's B = λP),

    z_b = X_b⁻¹ (I + (t_b − t_a) λP) z_a + X_b⁻¹ ∫_{t_a}^{t_b} X_u β (1 + η²) P S(u) du · ε,

which for λ = 0 is exact in the flow's linear part with ε frozen.

A scheme is its composition string and sub-step fractions (e.g. "BAB" with (½, 1, ½)), run
by one generic builder: each letter keeps its own clock across the step. The network-call
policy is naive (a fresh call before every sub-flow that uses ε, at that flow's clock) or
reduced (one call per step at the position of '*' in the composition, at the most advanced
clock, the latest ε reused by every sub-flow; a scheme whose first sub-flow needs ε before
the step's call makes one extra call at T).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..processes import LinearProcess, f64, sqrtm_psd, van_loan
from .base import add_denoise, grid_for, steps_for
from .coefficients import integrate, score_coef
from .plan import Plan

X, M = 0, 1  # block rows


def _proj(row: int) -> Tensor:
    P = torch.zeros(2, 2, dtype=f64)
    P[row, row] = 1.0
    return P


@dataclass(frozen=True)
class Scheme:
    """A splitting integrator as data.

    composition: letters A, B, O and, for reduced schemes, one '*' marking the call;
    fractions: the fraction of the step h each letter advances (per letter, they sum to 1);
    method: 'euler' or 'conjugate' for the A and B sub-flows;
    policy: 'naive' or 'reduced'.
    """

    composition: str
    fractions: tuple
    method: str = "euler"
    policy: str = "reduced"
    o_part: str = "friction"  # what O integrates besides the noise: 'friction', 'linear' or 'none'

    def __post_init__(self):
        letters = self.composition.replace("*", "")
        if len(letters) != len(self.fractions):
            raise ValueError(f"{self.composition!r} has {len(letters)} sub-flows but "
                             f"{len(self.fractions)} fractions")
        for L in set(letters):
            total = sum(f for c, f in zip(letters, self.fractions) if c == L)
            if abs(total - 1.0) > 1e-12:
                raise ValueError(f"the fractions of {L} in {self.composition!r} sum to {total}, not 1")
        if self.policy == "reduced" and self.composition.count("*") != 1:
            raise ValueError("a reduced scheme marks its one network call per step with '*'")
        if self.policy == "naive" and "*" in self.composition:
            raise ValueError("a naive scheme calls the network before each sub-flow; drop '*'")
        if self.o_part not in ("friction", "linear", "none"):
            raise ValueError(f"o_part must be 'friction', 'linear' or 'none', got {self.o_part!r}")
        for L in "AB":
            if self.method_of(L) not in ("euler", "conjugate"):
                raise ValueError(f"method must be 'euler', 'conjugate' or per flow like "
                                 f"'A=conjugate,B=euler'; got {self.method!r}")

    def method_of(self, letter: str) -> str:
        """The method of sub-flow A or B: ``method`` is one name for both or 'A=..,B=..'."""
        if "=" not in self.method:
            return self.method
        return dict(kv.split("=") for kv in self.method.split(",")).get(letter, "euler")

    @property
    def stochastic(self) -> bool:
        return "O" in self.composition


# ---- the sub-flows ------------------------------------------------------------------------------


def o_drift(process: LinearProcess, o_part: str) -> Tensor:
    """K_O: the linear drift the O flow integrates with the noise."""
    F = process.F_
    if o_part == "none":
        return torch.zeros_like(F)
    return F if o_part == "linear" else torch.diag(torch.diagonal(F))


def flow_parts(process: LinearProcess, letter: str, o_drift_: Tensor | None):
    """(K, P) of an A or B sub-flow: its linear drift (row of F less what O integrates) and
    its block projection."""
    P = _proj(X if letter == "A" else M)
    K = P @ process.F_
    if o_drift_ is not None:
        K = K - P @ o_drift_
    return K, P


def kick_coeffs(process: LinearProcess, letter: str, t_a: Tensor, t_b: Tensor, *, method: str,
                eta: float, lam: float, o_drift_: Tensor | None):
    """(C_z, C_ε) of an A or B sub-flow from t_a to t_b (vectors over steps), float64."""
    K, P = flow_parts(process, letter, o_drift_)
    c = 1.0 + eta**2
    beta = process.beta_0  # CLD and PSLD have constant β (checked by the builder)
    h = (t_b - t_a)[:, None, None]
    I = torch.eye(2, dtype=f64)
    if method == "euler":
        return I + h * beta * K, h * c * (P @ score_coef(process, t_a))
    G = lam * P - beta * K  # X_u = expm((u − t_a) G)
    X_b_inv = torch.linalg.matrix_exp(-h * G)

    def integrand(u):
        X_u = torch.linalg.matrix_exp((u - t_a[:, None])[..., None, None] * G)
        return X_u @ (c * P) @ score_coef(process, u)

    signed = torch.where(h < 0, -1.0, 1.0).to(f64)
    lo, hi = torch.minimum(t_a, t_b), torch.maximum(t_a, t_b)
    Ce = X_b_inv @ (signed * integrate(integrand, lo, hi))
    return X_b_inv @ (I + h * lam * P), Ce


def ou_coeffs(process: LinearProcess, K_O: Tensor, t_a: Tensor, t_b: Tensor, etas: Tensor):
    """(C_z, C_ξ) of the O flow dz = β K_O z dt + sqrt(β) E G dw̄, E = diag(``etas``) (each
    block's noise scale), backward from t_a to t_b exactly: mean expm(−Δb K_O) z, covariance
    ∫₀^{Δb} e^{−uK_O} E D E e^{−uK_Oᵀ} du."""
    db = process.b(t_a) - process.b(t_b)
    E = torch.diag(etas)
    mean, cov = van_loan(-K_O, E @ process.D_ @ E, db)
    return mean, sqrtm_psd(cov)


def flows_using_eps(process: LinearProcess) -> dict:
    """Which sub-flows read ε: B always; A only where the score reaches the position (PSLD: D_xx = Γ > 0;
    CLD: D_xx = 0); O never."""
    return {"A": bool(process.D_[X, X] != 0), "B": True, "O": False}


def scheme_calls(process: LinearProcess, scheme: Scheme) -> tuple[int, int]:
    """(network calls per step, extra calls before the first step) of a scheme on a process: naive
    schemes call before every sub-flow that reads ε; reduced ones once per step, plus once at T when
    a sub-flow before the step's call reads ε."""
    uses_eps = flows_using_eps(process)
    if scheme.policy == "naive":
        return sum(uses_eps[L] for L in scheme.composition), 0
    first_call = scheme.composition.index("*")
    return 1, int(any(uses_eps[L] for L in scheme.composition[:first_call]))


# ---- the generic builder ------------------------------------------------------------------------


def splitting_plan(process: LinearProcess, scheme: Scheme, nfe: int, grid, denoise: bool, *,
                   eta: float = 0.0, lam: float = 0.0, o_part: str | None = None,
                   eta_x: float | None = None, name: str = "splitting") -> Plan:
    """The plan of a splitting scheme using exactly ``nfe`` network calls; ``o_part`` overrides
    the scheme's (what O integrates besides the noise). ``eta_x``: the noise scale of the
    position block alone (default: ``eta``). Per-block scales E = diag(η_x, η) keep the
    marginals: the family dz = β [F z + ½ (D + E D E) L⁻ᵀ ε] dt + sqrt(β) E G dw̄ has the
    forward process's marginals for any E ≥ 0, so A's score term takes 1 + η_x² and B's 1 + η²."""
    if o_part is not None:
        if not scheme.stochastic:
            raise ValueError(f"{name} is deterministic: it has no O flow, so o_part does not apply")
        scheme = replace(scheme, o_part=o_part)
    if process.k != 2:
        raise ValueError(f"{name} is a splitting integrator for (x, m) processes (cld, psld), not "
                         f"{process.name}")
    if not process.constant_beta:
        raise ValueError(f"{name} needs a constant β(t)")
    eta_x = eta if eta_x is None else eta_x
    if eta < 0 or eta_x < 0:
        raise ValueError(f"eta and eta_x must be >= 0, got {eta} and {eta_x}")
    if not scheme.stochastic and (eta != 0 or eta_x != 0):
        raise ValueError(f"{name} is deterministic; eta and eta_x apply to stochastic schemes only")
    block_eta = {"A": eta_x, "B": eta}
    K_O = o_drift(process, scheme.o_part) if scheme.stochastic else None
    uses_eps = flows_using_eps(process)
    per_step, extra = scheme_calls(process, scheme)
    steps = steps_for(nfe, per_step, extra, denoise, name)
    ts = grid_for(process, steps, grid)
    t, s = ts[:-1], ts[1:]
    h = s - t

    # coefficient chunks, one per letter occurrence, vectorized over the steps
    plan = Plan(2)
    clocks = {L: t.clone() for L in "ABO"}
    items = []  # per occurrence: ('*',) or (letter, chunk id, clock-start list, clock-end list)
    k = 0
    for ch in scheme.composition:
        if ch == "*":
            items.append(("*", None, None, None))
            continue
        frac = scheme.fractions[k]
        k += 1
        t_a, t_b = clocks[ch], clocks[ch] + frac * h
        if ch == "O":
            Cz, Cn = ou_coeffs(process, K_O, t_a, t_b, torch.tensor([eta_x, eta], dtype=f64))
            chunk = plan.coeffs(Cz, None, Cn if max(eta, eta_x) > 0 else None)
        else:
            Cz, Ce = kick_coeffs(process, ch, t_a, t_b, method=scheme.method_of(ch), eta=block_eta[ch], lam=lam,
                                 o_drift_=K_O)
            chunk = plan.coeffs(Cz, Ce if uses_eps[ch] else None)
        items.append((ch, chunk, t_a.tolist(), t_b.tolist()))
        clocks[ch] = t_b

    times = ts.tolist()
    if scheme.policy == "reduced" and extra:
        plan.eval(times[0])
    for i in range(steps):
        advanced = times[i]  # the most advanced clock reached in this step
        for ch, chunk, t_a, t_b in items:
            if ch == "*":
                plan.eval(advanced)
                continue
            if scheme.policy == "naive" and uses_eps[ch]:
                plan.eval(t_a[i])
            plan.lin(t_b[i], chunk, i)
            advanced = min(advanced, t_b[i])
    if denoise:
        add_denoise(plan, process, times[-1])
    return plan

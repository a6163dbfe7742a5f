"""Splitting integrators for the k = 2 processes CLD and PSLD (math.md §3).

The reverse-time vector field (η: noise scale; η = 0 is the probability-flow ODE)

    dz = β(t) [F z + ½(1 + η²) D L_t⁻ᵀ ε_θ(z, t)] dt + η sqrt(β(t)) G dw̄

is split into sub-flows on z = (x, m) (symbols: docs/integrators.md, "Symbols of the splitting integrators"):

    A (position, m and ε frozen):  dx = β [F_A z + (1 + η²) S_x(t) ε] dt
    B (momentum, x and ε frozen):  dm = β [F_B z + (1 + η²) S_m(t) ε] dt
    O (linear drift and noise):    dz = β F_O z dt + η sqrt(β) G dw̄      (solved exactly)

with S(t) = ½ D L_t⁻ᵀ (``score_coef`` computes β S). Deterministic schemes put the whole linear drift into A and B
(F_A = Π_x F, F_B = Π_m F, Π the projection on a block). Stochastic schemes put the friction of each block,
F_O = diag(F), into O with the noise (an Ornstein–Uhlenbeck flow solved exactly as a Gaussian
transition, float64 Van Loan), and the coupling terms F₁₂ m and F₂₁ x into A and B — the
molecular-dynamics split of Langevin dynamics into drift (A), kick (B) and thermostat (O).

Each A/B sub-flow is advanced over its sub-interval [t_a → t_b] either by Euler (S at t_a), or by the
conjugate integrator of math.md §2 applied to the flow alone, with B_flow = λΠ (the conjugate-splitting
hybrid): with A_u = expm((u − t_a) Υ), Υ = λΠ − β F_flow,

    z_b = A_b⁻¹ (I + (t_b − t_a) λΠ) z_a + A_b⁻¹ ∫_{t_a}^{t_b} A_u β (1 + η²) Π S(u) du · ε,

which for λ = 0 is exact in the flow's linear part with ε frozen.

A scheme is its composition string and sub-step fractions (e.g. "BAB" with (½, 1, ½)), run
by one generic builder: each letter keeps its own clock across the step. The network-call
policy is naive (a fresh call before every sub-flow that uses ε, at that flow's clock) or
reduced (one call per step at the position of '*' in the composition, at the most advanced
clock, the latest ε reused by every sub-flow; a scheme whose first sub-flow needs ε before
the step's call makes one extra call at T). :func:`scheme_algorithm` writes a scheme's step as
equations; :meth:`Plan.explain` prints a built plan's sub-flows and calls.

Reusing the previous step's ε before the call makes every reduced scheme first order. An ``extrapolate``
scheme feeds the sub-flows before the call the line through the last two calls instead, evaluated at this
step's call time c_i (c_{−1} = T, the extra call):

    ε̃ = ε_{i−1} + ρ_i (ε_{i−1} − ε_{i−2}),   ρ_i = (c_i − c_{i−1}) / (c_{i−1} − c_{i−2})

(plain ε_{i−1} in the first step). With symmetric sub-flows exact in their linear part (conjugate, λ = 0) and
the call at the step's midpoint state, each sub-flow's ε is then second-order accurate, and so is the scheme:
``csps-2m``, order 2 on the oracle with one call per step (docs/integrators.md, "A second-order splitting").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import torch
from torch import Tensor

from ..processes import LinearProcess, f64, sqrtm_psd, van_loan
from .base import add_denoise, grid_for, steps_for
from .coefficients import integrate, score_coef
from .plan import Plan

ROW_X, ROW_M = 0, 1  # the position and momentum blocks of z = (x, m)
BLOCK = {"A": ROW_X, "B": ROW_M}


def block_projection(row: int) -> Tensor:
    """Π: the projection on one block of z."""
    Pi = torch.zeros(2, 2, dtype=f64)
    Pi[row, row] = 1.0
    return Pi


@dataclass(frozen=True)
class Scheme:
    """A splitting integrator as data.

    composition: letters A, B, O and, for reduced schemes, one '*' marking the call;
    fractions: the fraction of the step h each letter advances (per letter, they sum to 1);
    method: 'euler' or 'conjugate' for the A and B sub-flows;
    policy: 'naive' or 'reduced';
    extrapolate: reduced only: the sub-flows before the call read ε extrapolated from the last two calls to this
    step's call time (module docstring), not the previous step's ε.
    """

    composition: str
    fractions: tuple
    method: str = "euler"
    policy: str = "reduced"
    o_part: str = "friction"  # what O integrates besides the noise: 'friction', 'linear' or 'none'
    extrapolate: bool = False

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
        if self.extrapolate and (self.policy != "reduced" or self.composition.startswith("*")):
            raise ValueError("extrapolate feeds the sub-flows before a reduced scheme's call: it needs the reduced "
                             "policy and a sub-flow before '*'")
        if self.extrapolate and (letters != letters[::-1] or tuple(self.fractions) != tuple(self.fractions)[::-1]
                                 or any(self.method_of(L) != "conjugate" for L in "AB")):
            raise ValueError("extrapolate makes a scheme second order only in a symmetric composition of conjugate "
                             f"sub-flows (e.g. 'AB*BA' with method 'conjugate'); got {self.composition!r} "
                             f"{self.fractions} with method {self.method!r}")
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
    """F_O: the linear drift the O flow integrates with the noise."""
    F = process.F_
    if o_part == "none":
        return torch.zeros_like(F)
    return F if o_part == "linear" else torch.diag(torch.diagonal(F))


def flow_parts(process: LinearProcess, letter: str, F_O: Tensor | None):
    """(F_flow, Π) of an A or B sub-flow: its linear drift (its block's rows of F less what O integrates)
    and its block projection."""
    Pi = block_projection(BLOCK[letter])
    F_flow = Pi @ process.F_
    if F_O is not None:
        F_flow = F_flow - Pi @ F_O
    return F_flow, Pi


def kick_coeffs(process: LinearProcess, letter: str, t_a: Tensor, t_b: Tensor, *, method: str,
                eta: float, lam: float, F_O: Tensor | None):
    """(C_z, C_ε) of an A or B sub-flow from t_a to t_b (vectors over steps), float64.

    Euler: z_b = (I + Δ β F_flow) z_a + Δ (1 + η²) Π β S(t_a) ε, Δ = t_b − t_a (S at the sub-flow's start);
    conjugate: see the module docstring."""
    F_flow, Pi = flow_parts(process, letter, F_O)
    c = 1.0 + eta**2
    beta = process.beta_0  # CLD and PSLD have constant β (checked by the builder)
    h = (t_b - t_a)[:, None, None]
    I = torch.eye(2, dtype=f64)
    if method == "euler":
        return I + h * beta * F_flow, h * c * (Pi @ score_coef(process, t_a))
    Upsilon = lam * Pi - beta * F_flow  # A_u = expm((u − t_a) Υ)
    A_b_inv = torch.linalg.matrix_exp(-h * Upsilon)

    def integrand(u):
        A_u = torch.linalg.matrix_exp((u - t_a[:, None])[..., None, None] * Upsilon)
        return A_u @ (c * Pi) @ score_coef(process, u)

    signed = torch.where(h < 0, -1.0, 1.0).to(f64)
    lo, hi = torch.minimum(t_a, t_b), torch.maximum(t_a, t_b)
    Ce = A_b_inv @ (signed * integrate(integrand, lo, hi))
    return A_b_inv @ (I + h * lam * Pi), Ce


def ou_coeffs(process: LinearProcess, F_O: Tensor, t_a: Tensor, t_b: Tensor, etas: Tensor):
    """(C_z, C_ξ) of the O flow dz = β F_O z dt + sqrt(β) E G dw̄, E = diag(``etas``) (each
    block's noise scale), backward from t_a to t_b exactly: mean expm(−Δb F_O) z, covariance
    ∫₀^{Δb} e^{−uF_O} E D E e^{−uF_Oᵀ} du, Δb = b(t_a) − b(t_b); C_ξ its symmetric square root."""
    db = process.b(t_a) - process.b(t_b)
    E = torch.diag(etas)
    mean, cov = van_loan(-F_O, E @ process.D_ @ E, db)
    return mean, sqrtm_psd(cov)


def flows_using_eps(process: LinearProcess) -> dict:
    """Which sub-flows read ε: B always; A only where the score reaches the position (PSLD: D_xx = Γ > 0;
    CLD: D_xx = 0); O never."""
    return {"A": bool(process.D_[ROW_X, ROW_X] != 0), "B": True, "O": False}


def _calls(scheme: Scheme, uses_eps: dict) -> tuple[int, int]:
    if scheme.policy == "naive":
        return sum(uses_eps[L] for L in scheme.composition), 0
    first_call = scheme.composition.index("*")
    return 1, int(any(uses_eps[L] for L in scheme.composition[:first_call]))


def scheme_calls(process: LinearProcess, scheme: Scheme) -> tuple[int, int]:
    """(network calls per step, extra calls before the first step) of a scheme on a process: naive
    schemes call before every sub-flow that reads ε; reduced ones once per step, plus once at T when
    a sub-flow before the step's call reads ε."""
    return _calls(scheme, flows_using_eps(process))


# ---- the scheme in words --------------------------------------------------------------------------


def clock(frac: float) -> str:
    """A time in the step's symbols: the step goes t → t+h (h < 0), ``frac`` the fraction of h done."""
    f = Fraction(frac).limit_denominator(64)
    if f == 0:
        return "t"
    return "t+" + ("h" if f == 1 else f"h/{f.denominator}" if f.numerator == 1 else f"{f.numerator}h/{f.denominator}")


def _step_of(frac: float) -> str:
    f = Fraction(frac).limit_denominator(64)
    return "h" if f == 1 else f"h/{f.denominator}" if f.numerator == 1 else f"{f.numerator}h/{f.denominator}"


def flow_label(letter: str, method: str, start: float, end: float, *, reads_eps: bool = True, lam: float = 0.0,
               o_part: str = "friction") -> str:
    """An A, B or O sub-flow in words: ``B[euler, S(t)] t→t+h``."""
    if letter == "O":
        tag = f"exact, F_O = {dict(friction='diag F', linear='F', none='0')[o_part]}"
    elif method == "conjugate":
        tag = f"conjugate, λ={lam:g}"
    else:
        tag = "euler" + (f", S({clock(start)})" if reads_eps else "")
    return f"{letter}[{tag}] {clock(start)}→{clock(end)}"


def _walk(scheme: Scheme):
    """The scheme's items in order: ('*', call clock, None) or (letter, start, end), clocks as fractions of h."""
    clocks, advanced, k = {L: 0.0 for L in "ABO"}, 0.0, 0
    for ch in scheme.composition:
        if ch == "*":
            yield "*", advanced, None
            continue
        start = clocks[ch]
        clocks[ch] = start + scheme.fractions[k]
        k += 1
        advanced = max(advanced, clocks[ch])
        yield ch, start, clocks[ch]


def scheme_algorithm(scheme: Scheme) -> str:
    """One step of the scheme as equations in math.md's symbols (docs/integrators.md, "Symbols of the
    splitting integrators"), with its order and its network calls per step."""
    c = {"A": " (1 + η_x²)", "B": " (1 + η²)"} if scheme.stochastic else {"A": "", "B": ""}
    var = {"A": ("x", "F_A", "S_x", "Π_x"), "B": ("m", "F_B", "S_m", "Π_m")}
    lines, called = [], False
    if scheme.extrapolate:
        lines.append("    ε̃ ← ε + ρ (ε − ε_prev)   (the line through the last two calls at this step's call time; "
                     "ε in the first step)")
    for ch, start, end in _walk(scheme):
        if ch == "*":
            lines.append(f"    ε ← ε_θ(z, {clock(start)})")
            called = True
            continue
        if scheme.policy == "naive" and ch != "O":
            lines.append(f"    ε ← ε_θ(z, {clock(start)})" + ("   (PSLD only)" if ch == "A" else ""))
        d = _step_of(end - start)
        d = d if d == "h" else f"({d})"
        method = scheme.method_of(ch)
        head = f"    {flow_label(ch, method, start, end, lam=float('nan'), o_part=scheme.o_part)}:"
        head = head.replace("λ=nan", "λ")
        if ch == "O":
            eq = "z ← e^{−Δb F_O} z + (∫₀^{Δb} e^{−u F_O} E D E e^{−u F_Oᵀ} du)^{1/2} ξ,  Δb = b(t_a) − b(t_b)"
        elif method == "euler":
            x, F_, S_, _ = var[ch]
            eq = f"{x} ← {x} + {d} β [{F_} z +{c[ch]} {S_}({clock(start)}) ε]"
        else:
            _, _, _, P_ = var[ch]
            eq = (f"z ← A_b⁻¹ (I + {d} λ{P_}) z + A_b⁻¹ ∫_{{t_a}}^{{t_b}} A_u β{c[ch]} {P_} S(u) du ε,"
                  f"  A_u = expm((u − t_a)(λ{P_} − β F_A))".replace("F_A", "F_" + ch))
        if scheme.extrapolate and not called:
            eq = eq.replace(" ε", " ε̃")
        lines.append(f"{head:<36} {eq}")
    per = {}
    for name, uses in (("PSLD", {"A": True, "B": True, "O": False}), ("CLD", {"A": False, "B": True, "O": False})):
        n, extra = _calls(scheme, uses)
        per[name] = f"{n}" + (" (+1 at T)" if extra else "")
    calls = per["PSLD"] + " per step" + ("" if per["PSLD"] == per["CLD"] else f" on PSLD, {per['CLD']} on CLD")
    if scheme.extrapolate:
        order, how = "Order 2 at λ = 0, 1 otherwise", "ε extrapolated before the call"
        why = "each sub-flow fed ε at the step's midpoint to second order; a conjugate sub-flow at λ ≠ 0 is Euler in λ"
    else:
        order = "Weak order 1" if scheme.stochastic else "Order 1"
        how, why = "the latest ε reused by every sub-flow", "ε frozen over each sub-flow"
    return ("One step t → t+h (h < 0), " + ("each call made before the sub-flow it feeds"
                                            if scheme.policy == "naive" else how)
            + ":\n" + "\n".join(lines) + f"\n{order} ({why}); network calls: {calls}.")


# ---- the generic builder ------------------------------------------------------------------------


def _extrapolated(plan: Plan, scheme: Scheme, items: list, ts, uses_eps: dict) -> dict:
    """{item index: (chunk reading ε̃ = (1 + ρ) ε − ρ r_0, save chunk or None)} for the sub-flows before the call
    that read ε: C_ε ε̃ = (1 + ρ_i) C_ε ε − ρ_i C_ε r_0, with r_0 the previous call's ε, saved by the last of these
    flows (the register is read before it is written). ρ_i = (c_i − c_{i−1}) / (c_{i−1} − c_{i−2}) from the call
    times c_i = t_i + f h_i (f: the call's clock), c_{−1} = T."""
    call = next(j for j, item in enumerate(items) if item[0] == "*")
    before = [j for j in range(call) if uses_eps[items[j][0]]]
    frac = next(f for ch, f, _ in _walk(scheme) if ch == "*")
    t, h = ts[:-1], ts[1:] - ts[:-1]
    c = torch.cat([ts[:1], t + frac * h])  # c_{−1} = T, c_0, c_1, …
    rho = torch.zeros_like(t)
    rho[1:] = (c[2:] - c[1:-1]) / (c[1:-1] - c[:-2])
    keep = plan.coeffs(torch.zeros(len(t), 2, 2, dtype=f64), torch.eye(2, dtype=f64).expand(len(t), 2, 2))
    out = {}
    for j in before:
        Cz, Ce = plan.chunks[items[j][1]][:2]
        r = rho[:, None, None]
        out[j] = plan.coeffs(Cz, (1 + r) * Ce, None, -r * Ce), keep if j == before[-1] else None
    return out


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
    F_O = o_drift(process, scheme.o_part) if scheme.stochastic else None
    uses_eps = flows_using_eps(process)
    per_step, extra = scheme_calls(process, scheme)
    steps = steps_for(nfe, per_step, extra, denoise, name)
    ts = grid_for(process, steps, grid)
    t, h = ts[:-1], ts[1:] - ts[:-1]

    # per item of the composition: ('*', call clock) or (letter, chunk, label, clock at its end), each
    # coefficient chunk vectorized over the steps; clocks as fractions of h, every letter with its own
    plan = Plan(2)
    items, t_clocks = [], {L: t.clone() for L in "ABO"}
    for ch, start, end in _walk(scheme):
        if ch == "*":
            items.append(("*", None, f"{clock(start)}", None))
            continue
        t_a = t_clocks[ch]
        t_b = t_clocks[ch] = t_a + (end - start) * h
        if ch == "O":
            Cz, Cn = ou_coeffs(process, F_O, t_a, t_b, torch.tensor([eta_x, eta], dtype=f64))
            chunk = plan.coeffs(Cz, None, Cn if max(eta, eta_x) > 0 else None)
        else:
            Cz, Ce = kick_coeffs(process, ch, t_a, t_b, method=scheme.method_of(ch), eta=block_eta[ch], lam=lam,
                                 F_O=F_O)
            chunk = plan.coeffs(Cz, Ce if uses_eps[ch] else None)
        label = flow_label(ch, scheme.method_of(ch), start, end, reads_eps=uses_eps[ch], lam=lam, o_part=scheme.o_part)
        items.append((ch, chunk, label, (start, t_a.tolist(), t_b.tolist())))
    last = max(j for j, item in enumerate(items) if item[0] != "*")
    ahead = _extrapolated(plan, scheme, items, ts, uses_eps) if scheme.extrapolate and extra else {}

    times = ts.tolist()
    if scheme.policy == "reduced" and extra:
        plan.eval(times[0], at="T")
    for i in range(steps):
        advanced = times[i]  # the most advanced clock reached in this step
        for j, (ch, chunk, label, clocks) in enumerate(items):
            if ch == "*":
                plan.eval(advanced, at=label)
                continue
            start, t_a, t_b = clocks
            if scheme.policy == "naive" and uses_eps[ch]:
                plan.eval(t_a[i], at=clock(start))
            step = i if j == last else None
            if j in ahead:  # before the call: ε̃ after the first step, and the last such flow keeps ε as r_0
                tilde, save = ahead[j]
                shown = (label.replace("[", "[ε̃, ", 1) if i else label) + ("; r₀ ← ε" if save is not None else "")
                plan.lin(t_b[i], tilde if i else chunk, i, save=save, label=shown, step=step)
            else:
                plan.lin(t_b[i], chunk, i, label=label, step=step)
            advanced = min(advanced, t_b[i])
    if denoise:
        add_denoise(plan, process, times[-1])
    return plan

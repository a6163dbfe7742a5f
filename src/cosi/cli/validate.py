"""Checks the commands make before any work starts and before any file is written; each raises
ValueError with the one line the CLI shows (:mod:`cosi.cli.errors`)."""

from __future__ import annotations

import math
import os
from pathlib import Path

NFE_CAP = 10_000  # network calls per sample; beyond it a typo is likelier than a wish (--allow-large-nfe)
PLAN_BYTES_PER_NFE = 3_000  # a plan's operations and float64 coefficients, measured (~1-2.4 kB per call)


def positive(value: int, flag: str) -> int:
    if value is None or value <= 0:
        raise ValueError(f"{flag} {value} is not a positive number — give {flag} 1 or more")
    return value


def nfe(values, allow_large: bool = False) -> None:
    """Each NFE positive and, unless ``allow_large``, at most :data:`NFE_CAP`."""
    for k in [values] if isinstance(values, int) else values:
        positive(k, "--nfe")
        if k > NFE_CAP and not allow_large:
            raise ValueError(f"--nfe {k} is above the cap of {NFE_CAP} network calls per sample (its plan alone "
                             f"would take ~{_size(k * PLAN_BYTES_PER_NFE)} and the run days) — use a smaller "
                             "--nfe, or pass --allow-large-nfe if you mean it")
        fits(k * PLAN_BYTES_PER_NFE, f"the plan of --nfe {k}")


def lam(text: str | None):
    """--lam: a finite number or 'auto'."""
    if text is None or text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--lam {text!r} is neither a number nor 'auto' — give e.g. --lam -3 or --lam auto") from None
    if not math.isfinite(value):
        raise ValueError(f"--lam {text} is not finite — give a finite λ (the presets use |λ| ≤ 10) or --lam auto")
    return value


def out_dir(path: Path, flag: str = "--out") -> Path:
    """A folder that exists or can be made, and that this process may write to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path} is a file, not a folder — choose a folder (new or existing)")
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValueError(f"{flag} {path}: {probe} is a file, so no folder can be made below it — choose another "
                         f"{flag}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {probe} is not writable — choose a folder you may write to")
    return path


def available_memory() -> int | None:
    """Bytes of memory available now (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def fits(need: int, what: str) -> None:
    """Refuse ``need`` bytes beyond what this machine has available."""
    have = available_memory()
    if have is not None and need > have:
        raise ValueError(f"{what} needs about {_size(need)} of memory and {_size(have)} is available — make the run "
                         "smaller (--nfe, --n, --d)")


def oracle_memory(n: int, state_size: int, nfe: int, components: int = 8, reference: bool = False) -> int:
    """Bytes an oracle run holds at once, roughly: the plan, the state with ε, register and noise
    (float32), the mixture's score (float64, per component) and, with ``reference``, the adaptive ODE
    solve's stored steps (float64; ~2000 at tolerance 1e-10)."""
    need = nfe * PLAN_BYTES_PER_NFE + n * state_size * (4 * 6 + 8 * 3 * components)
    if reference:
        need += n * state_size * 8 * 2000
    return need


def _size(b: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if b < 1000:
            return f"{b:.0f} {unit}"
        b /= 1000
    return f"{b:.0f} PB"

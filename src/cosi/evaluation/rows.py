"""Result rows as JSON lines: what sweeps and accuracy runs append, and how they are read back."""

from __future__ import annotations

import json
from pathlib import Path


def read_rows(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def latest_rows(rows: list[dict]) -> list[dict]:
    """One row per key, the last written (a cell measured again under new defaults)."""
    return list({r.get("key", id(r)): r for r in rows}.values())

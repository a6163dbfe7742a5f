"""Parsing shared by the commands: repeated ``key=value`` options."""

from __future__ import annotations

import json

import typer


def parse_key_values(items: list[str] | None, flag: str) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON where they are JSON)."""
    out = {}
    for kv in items or []:
        if "=" not in kv:
            raise typer.BadParameter(f"{flag} expects key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out

"""The code examples of docs/models.md's model table run (tiny random models, CPU).

An example marked ``# needs: NAME`` is skipped while NAME (a module or attribute path) does not exist,
so the examples of APIs being merged run as soon as they are."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "models.md"
EXAMPLES = dict(re.findall(r"```python\n# example: (\S+)\n(.*?)```", DOC.read_text(), re.S))


def exists(path: str) -> bool:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_table_row_has_its_example():
    assert {"shipped", "diffusers-eps", "diffusers-pipeline", "edm", "rf"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_docs_example_runs(name):
    code = EXAMPLES[name]
    for need in re.findall(r"# needs: (\S+)", code):
        if not exists(need):
            pytest.skip(f"{need} is not merged yet")
    if "diffusers" in code:
        pytest.importorskip("diffusers")
    import torch

    torch.manual_seed(0)
    exec(compile(code, f"docs/models.md:{name}", "exec"), {})

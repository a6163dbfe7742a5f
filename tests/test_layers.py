"""The package's layers (docs/architecture.md) hold as an import-linter contract, and a wrong-way import breaks it."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    run = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", run, "--config", str(ROOT / "pyproject.toml")],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def test_layer_contract_holds():
    r = lint(ROOT / "src")
    assert r.returncode == 0, r.stdout + r.stderr


def test_core_importing_evaluation_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src" / "cosi", tmp_path / "cosi", ignore=shutil.ignore_patterns("weights", "__pycache__"))
    grids = tmp_path / "cosi" / "core" / "grids.py"
    grids.write_text(grids.read_text() + "\nfrom ..evaluation import metrics  # noqa: the wrong way\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    assert "cosi.core.grids -> cosi.evaluation.metrics" in r.stdout


def test_a_cycle_between_siblings_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "src" / "cosi", tmp_path / "cosi", ignore=shutil.ignore_patterns("weights", "__pycache__"))
    classifier = tmp_path / "cosi" / "models" / "classifier.py"
    classifier.write_text(classifier.read_text() + "\nfrom . import checkpoint  # noqa: a cycle\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    assert "No cycles are allowed in cosi.models" in r.stdout

"""Accuracy against a converged reference from the same prior draws (cosi.evaluation.accuracy, cosi bench accuracy)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import cosi
from cosi.evaluation.accuracy import Reference, accuracy, reference_solution, run_accuracy
from cosi.evaluation.oracle import GaussianMixture


@pytest.fixture(scope="module")
def psld_oracle():
    """The exact-score oracle on 1x2x2 images, shaped like a DiffusionModel."""
    p = cosi.make_process("psld")
    gmm = GaussianMixture.random(d=4, shape=(1, 2, 2), components=3, seed=0)
    return SimpleNamespace(eps_model=gmm.eps_model(p), process=p, data_shape=(1, 2, 2), device=torch.device("cpu"))


def test_gddim_2m_is_second_order_against_the_reference(psld_oracle):
    ref = Reference("gddim-2m", 240)
    rows = [accuracy(psld_oracle, "gddim-2m", k, n=12, reference=ref) for k in (15, 30, 60)]
    e = [r["rmse"] for r in rows]
    orders = [math.log2(a / b) for a, b in zip(e, e[1:])]
    assert all(1.6 < q < 2.8 for q in orders), (e, orders)
    r = rows[-1]
    assert r["reference"] == "gddim-2m@240" and r["reference_self_nfe"] == 120
    assert 0 < r["reference_self_rmse"] < e[-1]  # the reference is closer to itself than the best sampler to it
    assert r["max_abs"] < 3 and r["tf32"] is False and r["project"] is False  # gddim-2m predicts x̂₀: no projection
    assert accuracy(psld_oracle, "euler", 15, n=12, reference=ref)["project"] is True


def test_the_reference_is_computed_once_and_kept_on_disk_keyed_by_what_makes_it(psld_oracle, tmp_path):
    ref = Reference("gddim-2m", 20)
    a = reference_solution(psld_oracle.eps_model, psld_oracle.process, (1, 2, 2), 4, 0, ref,
                           cache_dir=tmp_path, name="oracle")
    assert a["calls"] == 30 and a["self_nfe"] == 10
    assert reference_solution(psld_oracle.eps_model, psld_oracle.process, (1, 2, 2), 4, 0, ref)["calls"] == 0
    (saved,) = tmp_path.glob("*.pt")
    other = SimpleNamespace(eps_model=psld_oracle.eps_model)  # not in memory: read from disk
    b = reference_solution(other.eps_model, psld_oracle.process, (1, 2, 2), 4, 0, ref, cache_dir=tmp_path,
                           name="oracle")
    assert b["calls"] == 0 and torch.equal(b["x"], a["x"])
    c = reference_solution(other.eps_model, psld_oracle.process, (1, 2, 2), 4, 0, Reference("gddim-2m", 22),
                           cache_dir=tmp_path, name="oracle")
    assert c["calls"] > 0 and len(list(tmp_path.glob("*.pt"))) == 2  # another reference: computed anew


def test_run_accuracy_resumes_and_records_what_cannot_be_met(psld_oracle, tmp_path):
    out = tmp_path / "acc.jsonl"
    cells = [{"sampler": "csps-d", "nfe": 8, "project": pr, "options": {}} for pr in (False, True)]
    cells.append({"sampler": "csps-d", "nfe": 0, "project": True, "options": {}})
    rows = run_accuracy(psld_oracle, "oracle", cells, out, n=4, reference=Reference("gddim-2m", 20), log=lambda s: None)
    assert len(rows) == 3 and "error" in rows[2] and rows[0]["project"] is False and rows[1]["project"] is True
    assert abs(rows[0]["rmse"] - rows[1]["rmse"]) < 1e-6  # an exact ε: the projection changes nothing
    assert run_accuracy(psld_oracle, "oracle", cells, out, n=4, reference=Reference("gddim-2m", 20),
                        log=lambda s: None) == []


def test_bench_accuracy_command_on_a_tiny_saved_model(tmp_path):
    from cosi.cli.app import app
    from cosi.models.checkpoint import save_model
    from test_checkpoint import tiny_model

    _, net, config = tiny_model()
    save_model(tmp_path / "m", net, config)
    runner = CliRunner()
    args = ["bench", "accuracy", "-m", str(tmp_path / "m"), "-s", "gddim-2m", "-s", "csps-d", "--nfe", "5",
            "--nfe", "9", "--reference", "gddim-2m@12", "--n", "3", "--device", "cpu", "--out", str(tmp_path / "a.jsonl")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "gddim-2m@12" in r.output and "6 calls" in r.output and "| csps-d | on |" in r.output
    assert "| csps-d | off |" in r.output and "TF32 off" in r.output
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["n"] == 3 and r["dtype"] == "float32" and "rmse" in r for r in rows)
    r = runner.invoke(app, args + ["--json"])  # resumed: nothing measured again, the rows printed
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 6
    r = runner.invoke(app, ["bench", "accuracy", "-m", str(tmp_path / "m"), "--reference", "gddim-2m"])
    assert r.exit_code == 2 and "SAMPLER@NFE" in r.output

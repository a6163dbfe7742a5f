"""The measured stable ranges (cosi.core.integrators.stability): refusals below them, the override, and the table
against its measurements and against exact Gaussian moments."""

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import cosi
from cosi.core.integrators import build_plan
from cosi.core.integrators.eta import STABLE_COV_ERROR
from cosi.core.integrators.stability import FLOOR_FROM, MIN_NFE, UnstableNFE, min_nfe
from cosi.evaluation.moments import moment_errors

pytestmark = pytest.mark.stable_ranges
ROOT = Path(__file__).resolve().parents[1]


def test_below_the_range_is_refused_naming_it_and_the_way_out():
    p = cosi.make_process("psld")
    with pytest.raises(UnstableNFE, match=r"euler on psld is unstable below 150 network calls \(asked: 50\).*"
                                          r"nfe >= 150.*gddim-2m.*allow_unstable=True"):
        build_plan("euler", p, 50)
    assert build_plan("euler", p, 50, allow_unstable=True).nfe == 50
    assert build_plan("euler", p, 150).nfe == 150


def test_a_stochastic_preset_is_refused_below_its_exact_moment_edge_too():
    p = cosi.make_process("cld")  # robab's exact-moment edge on CLD is 20 (eta.py); the learned edge may be higher
    edge = min_nfe("robab", "cld")
    assert edge >= 20
    with pytest.raises(UnstableNFE, match=f"robab on cld is unstable below {edge}"):
        build_plan("robab", p, 12)
    with pytest.warns(UserWarning, match="unstable at any eta"):
        build_plan("robab", p, 12, allow_unstable=True)


def test_cld_takes_its_own_edge_or_psld_s_whichever_is_higher():
    assert FLOOR_FROM == {"cld": "psld"}
    assert ("euler", "cld") in MIN_NFE  # the shipped CLD model was scanned
    for (s, proc), edge in MIN_NFE.items():
        if proc in ("psld", "cld"):
            assert min_nfe(s, "cld") >= max(edge, MIN_NFE.get((s, "cld"), 0)), s
    assert min_nfe("gddim", "cld") is None  # scanned on CLD, stable from NFE 4; no edge on PSLD either


def test_the_data_prediction_samplers_and_vp_have_no_floor():
    for s in ("gddim", "gddim-2m", "gddim-3m", "gddim-2m-c", "gddim-3m-c"):
        assert min_nfe(s, "psld") is None and min_nfe(s, "vp") is None
        build_plan(s, cosi.make_process("psld"), 4)
    assert min_nfe("euler", "vp") is None


def test_the_paper_plain_form_is_outside_the_measurement_and_not_refused():
    assert build_plan("euler", cosi.make_process("psld"), 50, project=False).nfe == 50


def test_a_denoising_call_does_not_count_toward_the_range():
    p = cosi.make_process("psld")
    build_plan("euler", p, 151, denoise=True)
    with pytest.raises(UnstableNFE):
        build_plan("euler", p, 150, denoise=True)


def test_sample_passes_the_override_and_refuses_before_drawing():
    p = cosi.make_process("psld")
    eps = lambda z, t: torch.zeros_like(z)  # noqa: E731
    with pytest.raises(UnstableNFE):
        cosi.sample(eps, p, "csps-s", 30, shape=(2, 3))
    out = cosi.sample(eps, p, "csps-s", 30, shape=(2, 3), allow_unstable=True, generator=torch.Generator().manual_seed(0))
    assert out.nfe == 30


def test_the_table_is_what_its_script_derives_from_the_committed_measurements():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stability_table.py")], capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""}).stdout
    derived = {}
    for line in out.splitlines():
        if line.strip().startswith("("):
            key, value = line.split("#")[0].strip().rstrip(",").rsplit(":", 1)
            derived[eval(key)] = int(value)  # noqa: S307 (the script's own output: tuples of names)
    assert derived == MIN_NFE


def test_every_measured_edge_is_also_stable_for_exact_gaussian_moments():
    """The learned models' edges (PSLD, CLD) are never below where the plan's exact Gaussian moments are stable
    (data variances 0.01, 0.1, 1): the Gaussian edge is a floor that any model of the process shares."""
    for s, proc in MIN_NFE:
        if proc == "vp":
            continue
        p = cosi.make_process(proc)
        k = cosi.nearest_nfe(s, min_nfe(s, proc), p)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            err = moment_errors(s, p, k)["cov"]
        assert err < STABLE_COV_ERROR, (s, k, err)


def test_the_cli_refusal_names_the_range_and_the_option_works(tmp_path):
    from typer.testing import CliRunner

    from cosi.cli.app import app

    args = ["sample", "-p", "psld", "-s", "euler", "--nfe", "20", "--n", "8", "--d", "4", "-q",
            "--out", str(tmp_path / "a")]
    r = CliRunner().invoke(app, args)
    assert r.exit_code != 0 and "unstable below 150" in r.output and "allow_unstable=true" in r.output
    r = CliRunner().invoke(app, [*args[:-1], str(tmp_path / "b"), "--option", "allow_unstable=true"])
    assert r.exit_code == 0, r.output

"""Sweeps resume without recomputing finished cells; plots are written from their rows."""

from types import SimpleNamespace

import torch
from typer.testing import CliRunner

import cosi
from cosi.cli.app import app
from cosi.evaluation.oracle import GaussianMixture
from cosi.evaluation.autolam import SEARCH
from cosi.evaluation.sweep import make_cells, read_rows, run_sweep

from conftest import FlatFeatures


def image_model():
    p = cosi.make_process("vp")
    gmm = GaussianMixture.random(d=16, shape=(1, 4, 4), seed=0)
    return SimpleNamespace(eps_model=gmm.eps_model(p), process=p, data_shape=(1, 4, 4), device=torch.device("cpu")), gmm


def test_cells_give_lam_and_eta_only_to_samplers_that_take_them():
    cells = make_cells(["euler", "lambda-ddim-1", "em"], [10], lams=[0.0, 1.0], etas=[0.5], seeds=[0, 1])
    assert {(c["sampler"], tuple(sorted(c["options"].items()))) for c in cells} == {
        ("euler", ()), ("lambda-ddim-1", (("lam", 0.0),)), ("lambda-ddim-1", (("lam", 1.0),)), ("em", (("eta", 0.5),))}
    assert len(cells) == 8  # four settings x two seeds
    cells = make_cells(["em", "csps-s"], [10], etas=[1.0], eta_xs=[0.0])
    assert [c["options"] for c in cells] == [{"eta": 1.0}, {"eta": 1.0, "eta_x": 0.0}]  # em has no eta_x


def test_sweep_skips_finished_cells_and_redoes_only_the_missing_one(tmp_path):
    model, gmm = image_model()
    feats = FlatFeatures()
    ref = feats.stats([gmm.sample(400, torch.Generator().manual_seed(0)).float()])
    cells = make_cells(["ddim", "lambda-ddim-1"], [0, 4, 8], lams=[0.5], seeds=[0, 1])
    out = tmp_path / "sweep.jsonl"
    first = run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None)
    assert len(first) == len(cells) == 12
    assert sum("error" in r for r in first) == 4 and all("fd" in r for r in first if r["nfe"] > 0)
    fd8 = {r["seed"]: r["fd"] for r in first if r["sampler"] == "ddim" and r["nfe"] == 8}
    assert fd8[0] != fd8[1]  # seeds draw other samples
    assert run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None) == []
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n")  # as if killed during the last cell
    again = run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None)
    assert len(again) == 1 and again[0]["key"] == read_rows(tmp_path / "sweep.jsonl")[-1]["key"]
    assert len(read_rows(out)) == 12


def test_a_cell_measured_under_changed_defaults_is_measured_again(tmp_path):
    """A row stands while every default it recorded is unchanged; a new option does not void it."""
    from cosi.evaluation.sweep import same_defaults

    assert same_defaults({"grid": "quadratic", "eta": 1.0}, {"grid": "quadratic", "eta": 1.0, "o_part": "friction"})
    assert not same_defaults({"grid": "quadratic", "eta": 1.0}, {"grid": "quadratic", "eta": 0.5})
    assert same_defaults(None, {"grid": "uniform"})
    model, gmm = image_model()
    feats = FlatFeatures()
    ref = feats.stats([gmm.sample(400, torch.Generator().manual_seed(0)).float()])
    cells = make_cells(["ddim"], [4], seeds=[0])
    out = tmp_path / "sweep.jsonl"
    (row,) = run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None)
    assert row["defaults"] == {"grid": "quadratic", "project": False, "eta": 0.0}  # VP: k = 1, nothing to project
    row["defaults"]["grid"] = "uniform"  # as if measured when the default grid was another
    out.write_text(__import__("json").dumps(row) + "\n")
    (again,) = run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None)
    assert again["key"] == row["key"] and again["defaults"]["grid"] == "quadratic"
    assert run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None) == []


def test_rows_of_plain_eps_do_not_stand_for_the_projected_default():
    """Rows written before the projection of ε (no "project" among their defaults) were plain ε: on PSLD
    an ε-form sampler's old row is measured again, a data-prediction sampler's and a VP row stand."""
    import cosi
    from cosi.evaluation.sweep import same_defaults, sampler_defaults

    psld, vp = cosi.make_process("psld"), cosi.make_process("vp")
    assert sampler_defaults("csps-d", psld)["project"] is True
    assert sampler_defaults("gddim-2m", psld)["project"] is False and sampler_defaults("euler", vp)["project"] is False
    for sampler, p, stands in [("csps-d", psld, False), ("euler", psld, False), ("gddim-2m", psld, True),
                               ("euler", vp, True)]:
        old = {k: v for k, v in sampler_defaults(sampler, p).items() if k != "project"}
        assert same_defaults(old, sampler_defaults(sampler, p)) is stands, sampler
        assert same_defaults(None, sampler_defaults(sampler, p)) is stands, sampler
        assert same_defaults(sampler_defaults(sampler, p), sampler_defaults(sampler, p))


def test_a_lam_auto_cell_is_measured_again_when_the_reference_or_search_changed(tmp_path):
    model, gmm = image_model()
    feats = FlatFeatures()
    ref = feats.stats([gmm.sample(400, torch.Generator().manual_seed(0)).float()])
    cells = make_cells(["lambda-ddim-1"], [4], lams=["auto"])
    out = tmp_path / "sweep.jsonl"
    (row,) = run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None)
    assert row["tuning_reference"] == "RMSE vs gddim-2m@500"
    assert run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None) == []
    row["tuning_reference"] = "csps-d@500"  # as if tuned against an older reference
    out.write_text(__import__("json").dumps(row) + "\n")
    (again,) = run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None)
    assert again["tuning_reference"] == "RMSE vs gddim-2m@500"
    del again["tuning_search"]  # as if tuned by an older search
    out.write_text(__import__("json").dumps(again) + "\n")
    (third,) = run_sweep(model, "oracle", feats, ref, cells, out, n=40, batch_size=16, log=lambda s: None)
    assert third["tuning_search"] == SEARCH and dict(third["tuning_proxy"])[third["lam_chosen"]] == min(
        v for _, v in third["tuning_proxy"])


def test_plots_from_sweep_rows(tmp_path):
    rows = [{"sampler": "lambda-ddim-1", "nfe": k, "lam": lam, "seed": s, "fd": 10.0 / k + lam + s}
            for k in (10, 20) for lam in (0.0, 1.0) for s in (0, 1)]
    (tmp_path / "r.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    runner = CliRunner()
    for args in (["plot", "nfe", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "a.png")],
                 ["plot", "lam", str(tmp_path / "r.jsonl"), "-s", "lambda-ddim-1", "--out", str(tmp_path / "b.svg")]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.output
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "b.svg").read_text().startswith("<?xml")
    r = runner.invoke(app, ["plot", "lam", str(tmp_path / "r.jsonl"), "-s", "ddim", "--out", str(tmp_path / "c.png")])
    assert r.exit_code != 0 and "no rows of sampler 'ddim'" in r.output


def test_sweep_rows_carry_the_kid_when_given_reference_features(tmp_path):
    model, gmm = image_model()
    feats = FlatFeatures()
    data = gmm.sample(600, torch.Generator().manual_seed(1)).float()
    ref, ref_features = feats.stats([data]), feats.collect([data])
    cells = make_cells(["ddim"], [2, 20])
    rows = run_sweep(model, "oracle", feats, ref, cells, tmp_path / "k.jsonl", n=300, batch_size=100,
                     ref_features=ref_features, log=lambda s: None)
    coarse, fine = rows
    assert coarse["kid"] > fine["kid"] and coarse["kid_std"] > 0
    assert abs(fine["fd"]) < coarse["fd"]


def test_sweep_cli_tunes_lam_by_fd_against_a_held_out_folder(tmp_path):
    import json

    from PIL import Image

    for name in ("judge", "tune"):
        (tmp_path / name).mkdir()
        rng = torch.Generator().manual_seed(len(name))
        for i in range(12):
            img = torch.randint(0, 256, (28, 28), generator=rng, dtype=torch.uint8).numpy()
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
    out = tmp_path / "s.jsonl"
    args = ["sweep", "-m", "fmnist-vp", "-s", "lambda-ddim-1", "--nfe", "2", "--lam", "auto", "--n", "8",
            "--batch-size", "8", "--ref", str(tmp_path / "judge"), "--lam-ref", str(tmp_path / "tune"),
            "--lam-probe", "8", "--cache", str(tmp_path / "cache"), "--device", "cpu", "--out", str(out), "-q"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["tuning_reference"] == f"FD vs classifier/{tmp_path / 'tune'} (8 samples)"
    assert row["tuning_probe"] == 8 and row["lam_chosen"] == min(row["tuning_proxy"], key=lambda p: p[1])[0]
    r = CliRunner().invoke(app, args[:-1])  # tuned the same way: nothing to do
    assert r.exit_code == 0 and "FD" not in r.output and len(out.read_text().splitlines()) == 1

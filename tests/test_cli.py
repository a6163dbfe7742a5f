import json

from typer.testing import CliRunner

from cosi.cli.app import app

runner = CliRunner()


def test_samplers_command_lists_names():
    r = runner.invoke(app, ["samplers"])
    assert r.exit_code == 0 and "lambda-ddim-2" in r.output and "[vp only]" in r.output


def test_sample_writes_npz_and_png(tmp_path):
    r = runner.invoke(app, ["sample", "-p", "psld", "-s", "conjugate", "--nfe", "8", "--n", "50",
                            "--d", "4", "--out", str(tmp_path), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "samples.npz").stat().st_size > 0 and (tmp_path / "samples.png").stat().st_size > 0


def test_sample_image_grid(tmp_path):
    r = runner.invoke(app, ["sample", "-p", "vp", "-s", "ddim", "--nfe", "5", "--n", "16",
                            "--data", "gmm-image", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    from PIL import Image

    assert Image.open(tmp_path / "samples.png").size[0] > 32


def test_bench_oracle_json():
    r = runner.invoke(app, ["bench", "oracle", "--process", "vp", "--data", "gmm", "--sampler",
                            "lambda-ddim-1", "--nfe", "10", "--lam", "0.2", "--d", "4", "--n", "8",
                            "--n-dist", "100", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output.strip().splitlines()[-1])
    assert row["nfe"] == 10 and row["lam"] == 0.2
    assert {"endpoint_error", "mmd", "mmd_floor", "sw", "sw_floor"} <= set(row)


def test_cli_errors_are_clear():
    r = runner.invoke(app, ["sample", "-s", "ddim", "-p", "psld", "-q"])
    assert r.exit_code == 2 and "not defined for psld" in r.output
    r = runner.invoke(app, ["bench", "oracle", "-s", "euler", "--option", "oops"])
    assert r.exit_code == 2 and "key=value" in r.output


def test_graph_mode_off_a_gpu_is_refused_clearly(tmp_path):
    r = runner.invoke(app, ["sample", "-m", "fmnist-vp", "-s", "ddim", "--nfe", "4", "--n", "2", "--device", "cpu",
                            "--graph", "--out", str(tmp_path), "-q"])
    assert r.exit_code == 2 and "CUDA graphs" in r.output and not (tmp_path / "images").exists()

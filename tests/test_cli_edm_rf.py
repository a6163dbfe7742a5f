from typer.testing import CliRunner

from cosi.cli.app import app


def test_cli_samples_and_benchmarks_edm_and_rf(tmp_path):
    runner = CliRunner()
    for p in ("edm", "rf"):
        r = runner.invoke(app, ["sample", "-p", p, "-s", "gddim-2m", "--nfe", "5", "--n", "4", "--d", "4",
                                "--out", str(tmp_path / p)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["bench", "oracle", "-p", "rf", "-s", "heun", "--nfe", "6", "--d", "4", "--n", "4",
                            "--n-dist", "50"])
    assert r.exit_code == 0 and "rf heun nfe=6" in r.output, r.output

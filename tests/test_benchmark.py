"""cosi bench speed: the sampler is timed against the same network calls in one run."""

import json

from typer.testing import CliRunner

from cosi.cli.app import app


def test_bench_speed_reports_the_ratio_to_bare_network_calls():
    r = CliRunner().invoke(app, ["bench", "speed", "-m", "fmnist-vp", "-s", "ddim", "-s", "em", "--nfe", "2",
                                 "--batch-size", "2", "--device", "cpu", "--repeats", "2", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.strip().splitlines()]
    assert [x["sampler"] for x in rows] == ["ddim", "em"]
    for x in rows:
        assert x["bare_s"] > 0 and x["sampler_s"] > 0 and abs(x["ratio"] - x["sampler_s"] / x["bare_s"]) < 1e-12
        assert x["images_per_s"] == 2 / x["sampler_s"] and x["dtype"] == "float32"


def test_bench_speed_names_an_nfe_a_sampler_cannot_meet():
    r = CliRunner().invoke(app, ["bench", "speed", "-m", "fmnist-psld", "-s", "rvv", "--nfe", "1",
                                 "--batch-size", "1", "--device", "cpu", "--repeats", "1"])
    assert r.exit_code == 0 and "| rvv | 1 | 1 | —" in r.output

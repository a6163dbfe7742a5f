"""grid="auto" (cosi.evaluation.autogrid): the tuned times on the exact oracle."""

import pytest
import torch

import cosi
from cosi.evaluation.oracle import GaussianMixture


def oracle(process="vp", d=8):
    p = cosi.make_process(process)
    gmm = GaussianMixture.random(d=d, components=4, seed=0, std_range=(0.1, 0.3))
    return p, gmm.eps_model(p)


def test_the_tuned_grid_is_a_valid_grid_that_lowers_the_proxy_and_is_cached():
    p, eps = oracle()
    r = cosi.tune_grid(eps, p, "gddim-2m", 5, (8,), sweeps=2)
    g = r["grid"]
    assert g.dtype == torch.float64 and g.shape == (6,)
    assert g[0] == p.T and g[-1] == p.t_min and bool((g[1:] < g[:-1]).all())
    assert r["proxy"] <= 0.95 * r["proxy_start"], r  # the search moved the times, and it helped on its probe
    assert not torch.allclose(g, r["start"])
    # the moves start from the best named grid on the probe, whose times are r["start"]
    assert set(r["named"]) == {"uniform", "quadratic", "logsnr"} and r["named"]["quadratic"] == r["proxy_start"]
    assert r["named"][r["start_kind"]] == min(r["named"].values()) >= r["proxy"]
    from cosi.core.grids import time_grid
    assert torch.allclose(r["start"], time_grid(p, 5, r["start_kind"]))
    assert r["calls"] >= 5 * 4 and r["probe"] == 64
    again = cosi.tune_grid(eps, p, "gddim-2m", 5, (8,), sweeps=2)
    assert again is r  # cached per model, sampler, NFE and options


def test_sample_with_grid_auto_runs_on_the_tuned_grid_and_reports_the_search():
    p, eps = oracle()
    z = p.prior_sample((4, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    res = cosi.sample(eps, p, "gddim-2m", 5, z_T=z, grid="auto")
    tuned = cosi.tune_grid(eps, p, "gddim-2m", 5, (8,))
    assert res.tuning is tuned and res.nfe == 5
    same = cosi.sample(eps, p, "gddim-2m", 5, z_T=z, grid=tuned["grid"])
    assert torch.equal(res.x, same.x)
    plain = cosi.sample(eps, p, "gddim-2m", 5, z_T=z)
    assert not torch.allclose(plain.x, res.x)


def test_grid_auto_counts_the_steps_of_a_multi_call_sampler():
    from cosi.evaluation.autogrid import grid_steps

    p = cosi.make_process("psld")
    assert grid_steps("heun", p, 10) == 5 and grid_steps("gddim-2m", p, 10, denoise=True) == 9
    assert grid_steps("nvv", p, 9) == 3  # naive velocity Verlet on PSLD: three calls per step
    with pytest.raises(ValueError, match="nfe"):
        grid_steps("nvv", p, 10)


def test_a_peer_run_by_diffusers_is_refused():
    p, eps = oracle()
    pytest.importorskip("diffusers")
    with pytest.raises(ValueError, match="takes its own timesteps"):
        cosi.tune_grid(eps, p, "dpm-solver++", 5, (8,))


def test_cosi_sample_with_grid_auto_on_a_saved_model(tmp_path):
    """The CLI tunes the times for the model, writes them in the folder's manifest, and a second run with the same
    settings finds the folder complete (the tuning is deterministic)."""
    import json

    from typer.testing import CliRunner

    from cosi.cli.app import app
    from cosi.models.checkpoint import save_model
    from test_checkpoint import tiny_model

    _, net, config = tiny_model()
    save_model(tmp_path / "m", net, config)
    args = ["sample", "-m", str(tmp_path / "m"), "-s", "gddim-2m", "--nfe", "3", "--n", "4", "--grid", "auto",
            "--out", str(tmp_path / "out"), "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "grid=auto: RMSE on the probe" in r.output
    grid = json.loads((tmp_path / "out" / "images" / "manifest.json").read_text())["options"]["grid"]
    assert isinstance(grid, list) and len(grid) == 4
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output

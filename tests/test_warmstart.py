"""The analytic Gaussian warm start (cosi.evaluation.warmstart)."""

import pytest
import torch

import cosi
from cosi.core.processes import f64
from cosi.evaluation.moments import gaussian_eps_model
import cosi.evaluation.warmstart as ws
from cosi.core.grids import time_grid
from cosi.evaluation.warmstart import GaussianStats, gaussian_flow, skip_time


def gaussian(d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=f64))
    lam = torch.logspace(-3, 0, d, dtype=f64)
    mu = 0.3 * torch.randn(d, generator=g, dtype=f64)
    return GaussianStats(mu, lam, U, (d,))


def rotated_eps(stats, process):
    """The exact ε of N(μ, U diag(λ) Uᵀ) data in the original coordinates (ε rotates with the data)."""
    inner = gaussian_eps_model(process, stats.mean @ stats.eigvecs, stats.eigvals)
    k, U = process.k, stats.eigvecs

    def eps(z, t):
        B = z.shape[0]
        e = inner((z.to(f64).reshape(B, k, -1) @ U).reshape(B, -1), t)
        return (e.reshape(B, k, -1) @ U.T).reshape(z.shape).to(z.dtype)

    return eps


def test_the_flow_on_vp_is_the_closed_form_variance_ratio():
    """k = 1: per eigen-coordinate, z_s − m_s = sqrt(P_s / P_T) (z_T − m_T), P_t = ψ_t² λ + σ_t²."""
    p, stats = cosi.make_process("vp"), gaussian()
    z = p.prior_sample(p.state_shape((5, 6)), generator=torch.Generator().manual_seed(1), dtype=f64)
    s = skip_time(p, 0.3)
    out = gaussian_flow(stats, p, z, s)
    mT, ms = (p.marginal(torch.tensor(t, dtype=f64)) for t in (p.T, s))
    psiT, psis, sT, ss = mT.psi[0], ms.psi[0], mT.L[0, 0], ms.L[0, 0]
    zt = z @ stats.eigvecs
    mu = stats.mean @ stats.eigvecs
    ratio = ((psis**2 * stats.eigvals + ss**2) / (psiT**2 * stats.eigvals + sT**2)).sqrt()
    want = (psis * mu + ratio * (zt - psiT * mu)) @ stats.eigvecs.T
    assert (out - want).abs().max() < 1e-7


@pytest.mark.parametrize("pname", ["cld", "psld"])
def test_the_flow_is_the_ode_solution_of_the_gaussian_in_the_original_coordinates(pname):
    p, stats = cosi.make_process(pname), gaussian()
    z = p.prior_sample(p.state_shape((4, 6)), generator=torch.Generator().manual_seed(2), dtype=f64)
    s = skip_time(p, 0.25)
    out = gaussian_flow(stats, p, z, s)
    grid = time_grid(p, 400, "quadratic", t_min=s)
    ref = cosi.sample(rotated_eps(stats, p), p, "gddim-2m", 400, z_T=z, grid=grid).z
    assert (out - ref).abs().max() < 1e-5 * ref.abs().max()
    assert (out - z).abs().max() > 0.1  # it moved


def test_statistics_from_data_and_their_file(tmp_path):
    stats = gaussian(d=4)
    torch.manual_seed(3)
    cov = stats.eigvecs @ torch.diag(stats.eigvals) @ stats.eigvecs.T
    x = torch.distributions.MultivariateNormal(stats.mean, cov).sample((40000,)).reshape(40000, 2, 2)
    fit = GaussianStats.from_data(x.float(), batch=7000)
    assert fit.shape == (2, 2)
    assert (fit.mean - stats.mean).abs().max() < 0.02
    got = fit.eigvecs @ torch.diag(fit.eigvals) @ fit.eigvecs.T
    assert (got - cov).abs().max() < 0.03
    fit.save(tmp_path / "s.safetensors")
    back = GaussianStats.load(tmp_path / "s.safetensors")
    assert torch.equal(back.eigvecs, fit.eigvecs) and back.shape == (2, 2)


def test_sample_with_a_warm_start_spends_its_calls_after_t_skip_and_is_exact_for_gaussian_data():
    p, stats = cosi.make_process("psld"), gaussian()
    eps = rotated_eps(stats, p)
    seen = []

    def counted(z, t):
        seen.append(float(t[0]))
        return eps(z, t)

    z = p.prior_sample(p.state_shape((8, 6)), generator=torch.Generator().manual_seed(4), dtype=f64)
    res = cosi.sample(counted, p, "gddim-3m-c", 20, z_T=z, warm_start=stats, skip=0.3)
    assert res.nfe == 20 and len(seen) == 20 and max(seen) <= skip_time(p, 0.3) + 1e-12
    ref = cosi.sample(eps, p, "gddim-2m", 800, z_T=z).x
    full = cosi.sample(eps, p, "gddim-3m-c", 20, z_T=z).x
    # on Gaussian data the skipped part is exact, so the same 20 calls on a shorter interval do better
    assert (res.x - ref).pow(2).mean().sqrt() < (full - ref).pow(2).mean().sqrt()


def test_skip_auto_chooses_from_the_candidates_and_records_the_search():
    p, stats = cosi.make_process("vp"), gaussian()
    eps = rotated_eps(stats, p)
    z = p.prior_sample(p.state_shape((4, 6)), generator=torch.Generator().manual_seed(5), dtype=f64)
    res = cosi.sample(eps, p, "gddim-2m", 5, z_T=z, warm_start=stats)
    rec = res.tuning
    assert rec["v"] in rec["proxy"] and rec["proxy"][rec["v"]] == min(rec["proxy"].values())
    assert rec["v"] > 0  # on Gaussian data the closed form beats 5 calls over the whole trajectory
    calls = []
    counted = lambda z, t: calls.append(1) or eps(z, t)  # noqa: E731
    times = time_grid(p, 5, "uniform")
    with pytest.raises(ValueError, match="not times"):  # refused before skip="auto" searches: no call made
        cosi.sample(counted, p, "gddim-2m", 5, z_T=z, warm_start=stats, grid=times)
    assert not calls


def test_grid_auto_after_the_warm_start_tunes_the_times_from_t_skip(monkeypatch):
    """warm_start with grid="auto": t_skip on the sampler's own grid kind, then the times on [t_min, t_skip] tuned
    for runs that begin at t_skip from the Gaussian flow (autogrid.Begin); every call lies below t_skip."""
    import cosi.evaluation.autogrid as ag

    monkeypatch.setattr(ag, "PROBE", 8)
    p, stats = cosi.make_process("psld"), gaussian(seed=1)
    eps = rotated_eps(stats, p)
    seen = []

    def counted(z, t):
        seen.append(float(t[0]))
        return eps(z, t)

    z = p.prior_sample(p.state_shape((4, 6)), generator=torch.Generator().manual_seed(6), dtype=f64)
    res = cosi.sample(counted, p, "gddim-2m", 6, z_T=z, warm_start=stats, skip=0.3, grid="auto")
    found, t_skip = res.tuning["grid"], skip_time(p, 0.3)
    g = found["grid"]
    assert res.tuning["skip"] is None  # the skip was given
    assert g[0] == pytest.approx(t_skip) and g[-1] == p.t_min and bool((g[1:] < g[:-1]).all()) and len(g) == 7
    # the named grids were laid on [t_min, t_skip] and the moves started from the best of them on the probe
    assert found["named"][found["start_kind"]] == min(found["named"].values()) >= found["proxy"]
    assert found["start"][0] == pytest.approx(t_skip)
    assert res.nfe == 6 and max(seen[-6:]) <= t_skip + 1e-12  # the batch's calls all lie after t_skip
    again = ws.sample_on_times(eps, p, "gddim-2m", 6, z, stats, g)  # the same run, by hand
    assert torch.equal(res.x, again.x)
    start = cosi.sample(eps, p, "gddim-2m", 6, z_T=z, warm_start=stats, skip=0.3, grid=found["start_kind"])
    assert not torch.allclose(start.x, res.x)  # the tuned times are not the named grid's
    # the probe's runs begin at t_skip from the Gaussian flow and are judged against the ODE solution from T
    from cosi.evaluation.accuracy import Reference, errors, prior_draws, reference_solution
    from cosi.evaluation.autolam import PROBE_SEED

    probe = prior_draws(p, (6,), 8, PROBE_SEED, None, torch.float32)
    x_ref = reference_solution(eps, p, (6,), 8, PROBE_SEED, Reference(*ag.reference(p, 6)), self_check=False)["x"]
    uniform = ws.sample_on_times(eps, p, "gddim-2m", 6, probe, stats, time_grid(p, 6, "uniform", T=t_skip)).x
    assert found["named"]["uniform"] == pytest.approx(errors(uniform, x_ref)["rmse"], rel=1e-6)
    assert ws.tune_grid_from_skip(counted, p, "gddim-2m", 6, stats, 0.3) is found  # cached per model


def test_a_given_grid_that_starts_elsewhere_than_the_run_is_refused():
    from cosi.evaluation.autogrid import Begin, choose_grid

    p, stats = cosi.make_process("vp"), gaussian()
    t = skip_time(p, 0.2)
    begin = Begin(t, lambda z: gaussian_flow(stats, p, z, t), ("gaussian", stats.fingerprint()))
    with pytest.raises(ValueError, match="run's start"):
        choose_grid(rotated_eps(stats, p), p, "gddim-2m", 4, (6,), start=time_grid(p, 4), begin=begin)


def test_cosi_sample_warm_start_from_the_shipped_statistics(tmp_path):
    """`cosi sample -m fmnist-vp --warm-start shipped`: the statistics shipped for the model's dataset, t_skip chosen
    on a probe and written into the folder's manifest with the times from t_skip; a resumed run continues."""
    import json

    from typer.testing import CliRunner

    import cosi.evaluation.warmstart as ws
    from cosi.cli.app import app

    stats = GaussianStats.shipped("fashion-mnist-train")
    assert stats.shape == (1, 28, 28) and stats.eigvals.min() >= 0
    assert (stats.eigvecs.T @ stats.eigvecs - torch.eye(784, dtype=f64)).abs().max() < 1e-6
    old = ws.PROBE, ws.reference
    ws.PROBE, ws.reference = 2, (lambda process, nfe: ("gddim-2m", 8))  # a tiny search: this checks the plumbing
    try:
        args = ["sample", "-m", "fmnist-vp", "-s", "gddim-2m", "--nfe", "4", "--n", "2", "--warm-start", "shipped",
                "--out", str(tmp_path / "o"), "--device", "cpu"]
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output
        assert "warm start (shipped:fashion-mnist-train): t_skip" in r.output
        man = json.loads((tmp_path / "o" / "images" / "manifest.json").read_text())
        assert (man.get("warm_start") is None) == ("(skip 0 of" in r.output)  # the manifest says what was chosen
        if man.get("warm_start"):  # a skip was chosen: the grid starts at t_skip
            assert man["options"]["grid"][0] < cosi.make_process("vp").T
        assert CliRunner().invoke(app, args).exit_code == 0
    finally:
        ws.PROBE, ws.reference = old
    bad = CliRunner().invoke(app, ["sample", "-p", "vp", "--warm-start", "shipped", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "applies to a model" in bad.output


def test_cosi_sample_warm_start_with_a_given_skip(tmp_path):
    """`--skip V` takes t_skip at the log-SNR fraction V with no probe search (README's main job); the manifest
    records it and the grid starts there; a fraction outside [0, 1) is refused with the fix named."""
    import json

    from typer.testing import CliRunner

    from cosi.cli.app import app

    args = ["sample", "-m", "fmnist-psld", "-s", "gddim-2m-c", "--nfe", "4", "--n", "2", "--grid", "uniform",
            "--warm-start", "shipped", "--skip", "0.2", "--out", str(tmp_path / "o"), "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "skip 0.2 of the log-SNR range; as given" in r.output
    man = json.loads((tmp_path / "o" / "images" / "manifest.json").read_text())
    p = cosi.make_process("psld")
    assert man["warm_start"]["skip"] == 0.2
    assert man["options"]["grid"][0] == pytest.approx(skip_time(p, 0.2)) and man["options"]["grid"][0] < p.T
    bad = CliRunner().invoke(app, args[:-4] + ["--skip", "1.5", "--out", str(tmp_path / "b")])
    assert bad.exit_code != 0 and "skip '1.5'" in bad.output and "auto" in bad.output



def test_cosi_sample_warm_start_with_grid_auto(tmp_path, monkeypatch):
    """`--warm-start shipped --skip V --grid auto`: the times tuned from t_skip (a tiny search: this checks the
    plumbing), written into the manifest, starting at t_skip."""
    import json

    from typer.testing import CliRunner

    import cosi.evaluation.autogrid as ag
    from cosi.cli.app import app

    monkeypatch.setattr(ag, "PROBE", 2)
    monkeypatch.setattr(ag, "reference", lambda process, nfe: ("gddim-2m", 8))
    args = ["sample", "-m", "fmnist-psld", "-s", "gddim-2m", "--nfe", "4", "--n", "2", "--grid", "auto",
            "--warm-start", "shipped", "--skip", "0.2", "--out", str(tmp_path / "o"), "--device", "cpu"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "grid=auto from t_skip: RMSE on the probe" in r.output
    man = json.loads((tmp_path / "o" / "images" / "manifest.json").read_text())
    p = cosi.make_process("psld")
    assert man["warm_start"]["skip"] == 0.2 and len(man["options"]["grid"]) == 5
    assert man["options"]["grid"][0] == pytest.approx(skip_time(p, 0.2))
    assert man["options"]["grid"] != pytest.approx(time_grid(p, 4, "quadratic", T=skip_time(p, 0.2)).tolist())

"""Training: the coefficient table, the HSM loss, loss decrease, exact resume, time budget."""

import json

import pytest
import torch

from cosi.data import synthetic_images
from cosi.models.checkpoint import CheckpointError, load, load_tensors
from cosi.core.processes import f64, make_process
from cosi.training.train import MarginalTable, TrainConfig, hsm_loss, read_log, train


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY_UNET = dict(base_channels=16, channel_mult=[1, 2], attn_resolutions=[4], num_res_blocks=1, dropout=0.1,
                 num_heads=2, norm_groups=8)
DATA = synthetic_images(256, 1, 8)


def tiny_cfg(process="psld", **kw) -> TrainConfig:
    base = dict(process=process, dataset="synthetic", steps=8, batch_size=16, lr=2e-3, warmup=3, flip=True,
                unet=TINY_UNET)
    return TrainConfig(**{**base, **kw})


# ---- the table of ψ_t and L_t -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["vp", "cld", "psld"])
def test_table_matches_process_marginal_to_relative_1e5(name):
    p = make_process(name)
    table = MarginalTable(p)
    g = torch.Generator().manual_seed(0)
    t = p.t_train_min + (p.T - p.t_train_min) * torch.rand(20000, generator=g)
    t = torch.cat([t, torch.tensor([p.t_train_min, 2e-5, 1e-4, p.T])])  # float32 times, as in training
    mean, L = table(t)
    ref = p.marginal(t.to(f64))
    rel_mean = ((mean.to(f64) - ref.psi).abs() / ref.psi.abs()).max()
    tril = torch.tril_indices(p.k, p.k)
    Lr, Lt = ref.L[:, tril[0], tril[1]], L.to(f64)[:, tril[0], tril[1]]
    rel_L = ((Lt - Lr).abs() / Lr.abs()).max()
    assert rel_mean < 1e-5 and rel_L < 1e-5, (rel_mean, rel_L)
    assert torch.count_nonzero(torch.triu(L, 1)) == 0


def test_table_perturb_equals_process_perturb():
    p = make_process("psld")
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(5, 1, 4, 4, generator=g) * 2 - 1, torch.randn(5, 2, 4, 4, generator=g)
    t = torch.tensor([1e-5, 1e-3, 0.1, 0.5, 1.0])
    assert torch.allclose(MarginalTable(p).perturb(x0, t, eps), p.perturb(x0, t, eps), rtol=1e-5, atol=1e-6)


def test_hsm_loss_of_the_zero_network_is_the_mean_square_of_eps():
    p = make_process("vp")
    eps = torch.randn(4, 1, 8, 8)
    loss = hsm_loss(lambda z, t: torch.zeros_like(z), MarginalTable(p), torch.zeros(4, 1, 8, 8),
                    torch.rand(4), eps)
    assert torch.allclose(loss, eps.square().mean())


# ---- training ------------------------------------------------------------------------------------


@pytest.mark.parametrize("process", ["psld", "vp"])
def test_a_few_steps_lower_the_loss_on_synthetic_data(tmp_path, process):
    cfg = tiny_cfg(process, steps=40, batch_size=32, flip=False)
    train(cfg, tmp_path, log_every=5, data=DATA, progress=False)
    losses = [r["loss"] for r in read_log(tmp_path / "log.jsonl")]
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0], losses


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    cfg = tiny_cfg()
    train(cfg, tmp_path / "a", log_every=2, data=DATA, progress=False)
    train(cfg, tmp_path / "b", log_every=2, data=DATA, progress=False, stop_at=3)  # stops mid-window
    train(cfg, tmp_path / "b", log_every=2, data=DATA, progress=False, stop_at=6)
    train(cfg, tmp_path / "b", log_every=2, data=DATA, progress=False)
    a, b = read_log(tmp_path / "a/log.jsonl"), read_log(tmp_path / "b/log.jsonl")
    assert [r["step"] for r in a] == [2, 4, 6, 8]
    assert [(r["step"], r["loss"], r["lr"]) for r in a] == [(r["step"], r["loss"], r["lr"]) for r in b]
    ta, _ = load_tensors(tmp_path / "a/checkpoint.safetensors")
    tb, _ = load_tensors(tmp_path / "b/checkpoint.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


def test_resume_drops_log_lines_written_after_the_last_checkpoint(tmp_path):
    cfg = tiny_cfg(steps=4)
    train(cfg, tmp_path, log_every=1, data=DATA, progress=False, stop_at=2)
    with open(tmp_path / "log.jsonl", "a") as f:  # as if killed at step 3 before saving
        f.write(json.dumps({"step": 3, "loss": 123.0}) + "\n")
    train(cfg, tmp_path, log_every=1, data=DATA, progress=False)
    rows = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[2]["loss"] != 123.0


def test_time_budget_saves_and_a_rerun_resumes(tmp_path):
    cfg = tiny_cfg(steps=5)
    res = train(cfg, tmp_path, max_minutes=0.0, data=DATA, progress=False)
    assert res["stopped_by"] == "time budget" and res["step"] == 1 and not res["finished"]
    assert load(tmp_path).config["steps"] == 1  # the EMA model is written with the checkpoint
    res = train(cfg, tmp_path, data=DATA, progress=False)
    assert res["finished"] and res["step"] == 5


def test_steps_file_replaces_the_step_target_of_a_running_job(tmp_path):
    (tmp_path / "steps").write_text("4\n")
    res = train(tiny_cfg(steps=50), tmp_path / "run", log_every=2, data=DATA, progress=False,
                steps_file=tmp_path / "steps")
    assert res["step"] == 4 and res["finished"]
    assert load(tmp_path / "run").config["steps"] == 4


def test_resume_with_other_settings_is_refused(tmp_path):
    train(tiny_cfg(steps=2), tmp_path, data=DATA, progress=False)
    with pytest.raises(CheckpointError, match="lr: saved 0.002 vs given 0.001"):
        train(tiny_cfg(steps=4, lr=1e-3), tmp_path, data=DATA, progress=False)
    assert train(tiny_cfg(steps=3), tmp_path, data=DATA, progress=False)["step"] == 3  # more steps is fine


def test_trained_model_loads_and_predicts_eps(tmp_path):
    train(tiny_cfg(steps=3), tmp_path, data=DATA, progress=False, export=tmp_path / "exported")
    m = load(tmp_path / "exported.safetensors")
    assert m.process == make_process("psld") and m.data_shape == (1, 8, 8)
    z = torch.randn(2, 2, 8, 8, dtype=f64)
    eps = m.eps_model(z, 0.5)
    assert eps.dtype == f64 and eps.shape == z.shape
    with pytest.raises(ValueError, match=r"takes \(B, 2, 8, 8\)"):
        m.eps_model(torch.randn(2, 1, 8, 8), 0.5)


@pytest.fixture
def restore_determinism():
    import torch._inductor.config as inductor

    saved = torch.are_deterministic_algorithms_enabled(), inductor.fallback_random
    yield
    torch.use_deterministic_algorithms(saved[0])
    inductor.fallback_random = saved[1]


def test_train_command_runs_through_typer(tmp_path, restore_determinism):
    import typer
    from typer.testing import CliRunner

    from cosi.cli.train import train_command

    app = typer.Typer()
    app.command()(train_command)
    args = ["--process", "vp", "--data", "synthetic", "--out", str(tmp_path), "--steps", "3", "--batch-size", "8",
            "--base-channels", "16", "--channel-mult", "1,2", "--attn", "", "--num-res-blocks", "1",
            "--log-every", "1", "--no-progress", "--param", "beta_max=10", "--deterministic"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert len(read_log(tmp_path / "log.jsonl")) == 3
    assert load(tmp_path).process == make_process("vp", beta_max=10)
    assert torch.are_deterministic_algorithms_enabled()


# ---- the classifier ------------------------------------------------------------------------------


def test_classifier_learns_synthetic_classes_and_resumes_per_epoch(tmp_path):
    from cosi.models.classifier import ClassifierConfig
    from cosi.training.classifier import train_classifier

    cfg = ClassifierConfig(image_size=8, widths=(8, 8, 8), feature_dim=16, num_classes=4, dropout=0.0)
    train_d, test_d = synthetic_images(512, 1, 8, seed=0), synthetic_images(256, 1, 8, seed=1)
    kw = dict(epochs=3, batch_size=32, cfg=cfg, augment=False, train_data=train_d, test_data=test_d, progress=False)
    partial = train_classifier(None, tmp_path, max_minutes=0.0, **kw)  # stops after one epoch
    assert partial == {"epoch": 1, "finished": False}
    res = train_classifier(None, tmp_path, **kw)
    assert res["test_accuracy"] >= 0.95
    net = load(tmp_path)
    assert net.features(torch.zeros(5, 1, 8, 8)).shape == (5, 16)
    assert net.model_config["test_accuracy"] == res["test_accuracy"]

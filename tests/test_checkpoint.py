"""Saving and loading: bit-exact round trips, names, and clear errors for bad files."""

import json

import pytest
import torch

from cosi.models import checkpoint as ck
from cosi.models.checkpoint import CheckpointError, DiffusionModel, load, save_model
from cosi.models.classifier import Classifier, ClassifierConfig
from cosi.models.unet import UNet, UNetConfig
from cosi.core.processes import make_process


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model(process="psld", C=1, size=8, seed=0):
    p = make_process(process)
    cfg = UNetConfig(in_channels=p.k * C, image_size=size, base_channels=16, channel_mult=(1, 2),
                     attn_resolutions=(4,), num_res_blocks=1, num_heads=2)
    torch.manual_seed(seed)
    net = UNet(cfg)
    for prm in net.parameters():  # no zeros: make every weight matter
        torch.nn.init.normal_(prm, std=0.05)
    return p, net, ck.diffusion_config(p, cfg, (C, size, size), dataset="synthetic")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_save_load_round_trips_bit_for_bit(tmp_path, dtype):
    p, net, config = tiny_model()
    save_model(tmp_path / "m", net, config, dtype=dtype)
    m = load(tmp_path / "m")
    assert isinstance(m, DiffusionModel) and m.process == p and m.data_shape == (1, 8, 8)
    assert m.dtype == torch.float32 and not m.net.training
    for k, v in net.state_dict().items():
        assert torch.equal(m.net.state_dict()[k], v.to(dtype).float()), k
    z, t = torch.randn(3, 2, 8, 8), torch.rand(3)
    if dtype == torch.float32:
        net.eval()
        with torch.no_grad():
            assert torch.equal(m.eps_model(z, t), net(z, t))
    assert m(z, t).shape == z.shape  # __call__ is eps_model


def test_shipped_files_are_fp16_and_load_as_fp32(tmp_path):
    _, net, config = tiny_model()
    w, c = save_model(tmp_path / "m", net, config)
    tensors, meta = ck.load_tensors(w)
    assert all(v.dtype == torch.float16 for v in tensors.values()) and meta["format"] == "cosi-model"
    assert json.loads(c.read_text())["process"]["name"] == "psld"
    assert load(w).dtype == torch.float32


def test_eps_model_runs_in_the_network_dtype_and_returns_the_callers():
    p, net, config = tiny_model("vp")
    m = DiffusionModel(p, net.eval(), (1, 8, 8), config).to(dtype=torch.float64)
    z = torch.randn(2, 1, 8, 8, dtype=torch.float32)
    out = m.eps_model(z, torch.tensor(0.25))
    assert out.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(out, net(z.double(), torch.full((2,), 0.25)).float())


def test_load_by_name_from_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "WEIGHTS_DIR", tmp_path)
    _, net, config = tiny_model()
    save_model(tmp_path / "fmnist-psld", net, config)
    assert ck.shipped_names() == ["fmnist-psld"]
    assert load("fmnist-psld").process.name == "psld"
    with pytest.raises(CheckpointError, match="no model named 'fmnist-vp' is shipped; shipped models: fmnist-psld"):
        load("fmnist-vp")


def test_unknown_name_with_nothing_shipped_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(ck, "WEIGHTS_DIR", tmp_path / "absent")
    with pytest.raises(CheckpointError, match="shipped models: none yet"):
        load("fmnist-psld")


def test_missing_weights_file_is_named(tmp_path):
    _, net, config = tiny_model()
    w, _ = save_model(tmp_path / "m", net, config)
    w.unlink()
    with pytest.raises(CheckpointError, match=r"m\.safetensors: file not found"):
        load(tmp_path / "m")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_weights_file_gives_a_clear_error(tmp_path, damage):
    _, net, config = tiny_model()
    w, _ = save_model(tmp_path / "m", net, config)
    raw = w.read_bytes()
    w.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\xff" * 64 + raw[64:])
    with pytest.raises(CheckpointError, match=r"m\.safetensors: corrupt or truncated"):
        load(w)


def test_corrupt_config_gives_a_clear_error(tmp_path):
    _, net, config = tiny_model()
    _, c = save_model(tmp_path / "m", net, config)
    c.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"m\.json: corrupt JSON"):
        load(tmp_path / "m")


def test_psld_config_with_vp_shaped_weights_is_refused(tmp_path):
    _, vp_net, _ = tiny_model("vp")
    _, _, psld_config = tiny_model("psld")
    save_model(tmp_path / "m", vp_net, psld_config)
    with pytest.raises(CheckpointError) as e:
        load(tmp_path / "m")
    msg = str(e.value)
    assert "m.safetensors does not match m.json" in msg and "psld: k=2 blocks" in msg
    assert "conv_in.weight has shape (16, 1, 3, 3) in the file but (16, 2, 3, 3)" in msg


def test_config_whose_unet_disagrees_with_its_process_is_refused(tmp_path):
    _, net, config = tiny_model("vp")
    save_model(tmp_path / "m", net, {**config, "process": make_process("psld").to_config()})
    with pytest.raises(CheckpointError, match="1 input channels but a psld model of data shape"):
        load(tmp_path / "m")


def test_classifier_round_trips_and_exposes_features(tmp_path):
    cfg = ClassifierConfig()
    torch.manual_seed(0)
    net = Classifier(cfg)
    for name, b in net.named_buffers():
        if b.is_floating_point():
            b.uniform_(0.5, 1.5)  # non-trivial BatchNorm statistics
    save_model(tmp_path / "c", net, {"kind": "classifier", "classifier": cfg.to_dict(), "data_shape": [1, 28, 28]},
               dtype=torch.float32)
    back = load(tmp_path / "c")
    assert isinstance(back, Classifier) and not back.training
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    net.eval()
    with torch.no_grad():
        assert torch.equal(back.features(x), net.features(x)) and back.features(x).shape == (4, 256)
        assert torch.equal(back(x), net(x))


def test_training_state_pairs_from_different_saves_are_detected(tmp_path):
    ck.save_state(tmp_path / "s", {"a": torch.ones(2)}, {"step": 1})
    old_json = (tmp_path / "s.json").read_text()
    ck.save_state(tmp_path / "s", {"a": torch.zeros(2)}, {"step": 2})
    (tmp_path / "s.json").write_text(old_json)
    with pytest.raises(CheckpointError, match="different saves"):
        ck.load_state(tmp_path / "s")


def test_optimizer_and_rng_state_round_trip_exactly(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, betas=(0.8, 0.99))
    for _ in range(3):
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    g = torch.Generator().manual_seed(5)
    t, meta = ck.optimizer_tensors(opt)
    ck.save_state(tmp_path / "s", {**t, **ck.rng_tensors({"g": g})}, {"optimizer": meta})
    expected = torch.rand(3, generator=g), torch.rand(3)
    tensors, meta = ck.load_state(tmp_path / "s")
    opt2 = torch.optim.AdamW(net.parameters(), lr=5.0)
    ck.optimizer_load(opt2, tensors, meta["optimizer"])
    g2 = torch.Generator()
    ck.rng_restore({"g": g2}, tensors)
    assert torch.equal(torch.rand(3, generator=g2), expected[0]) and torch.equal(torch.rand(3), expected[1])
    assert opt2.param_groups[0]["lr"] == 1e-3 and opt2.param_groups[0]["betas"] == (0.8, 0.99)
    for p in net.parameters():
        for k, v in opt.state[p].items():
            assert torch.equal(opt2.state[p][k], v)

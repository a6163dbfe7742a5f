"""NCSN++ and the official PSLD checkpoint loader (cosi.models.ncsnpp, cosi.models.official_psld).

Fixtures in tests/data (all generated from the official code, see docs/interop.md):
  psld_<dataset>_keys.json    official config + parameter names/shapes of the official network
  ncsnpp_official_golden.json official NCSN++ outputs (float64) for seeded weights/inputs
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import signal

from cosi.models.ncsnpp import (
    NCSNpp, NCSNppConfig, Downsample, Upsample, conv_downsample_2d, downsample_2d, fir_kernel_2d,
    upfirdn2d, upsample_2d, upsample_conv_2d,
)
from cosi.models.official_psld import (
    PRESETS, OfficialCheckpointError, OfficialPSLDEpsModel, expected_shapes, load_official_checkpoint,
    load_state_dict_strict, official_state_dict, read_checkpoint,
)

DATA = Path(__file__).parent / "data"
F64 = torch.float64


def fixture(name: str) -> dict:
    return json.loads((DATA / f"{name.replace('-', '_')}_keys.json").read_text())


# ---- upfirdn2d and FIR layers -------------------------------------------------------------------


def upfirdn2d_reference(x: np.ndarray, k: np.ndarray, up: int, down: int, p0: int, p1: int) -> np.ndarray:
    """Textbook definition with scipy: zero-insert, pad/crop, full 2-D convolution ('valid'), decimate."""
    n, c, h, w = x.shape
    u = np.zeros((n, c, h * up, w * up))
    u[:, :, ::up, ::up] = x
    u = np.pad(u, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    c0, c1 = max(-p0, 0), max(-p1, 0)
    u = u[:, :, c0:u.shape[2] - c1, c0:u.shape[3] - c1]
    out = np.stack([np.stack([signal.convolve2d(u[i, j], k, mode="valid") for j in range(c)]) for i in range(n)])
    return out[:, :, ::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (0, 0)), (2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (3, 0)),
                                         (1, 1, (-1, 2)), (3, 2, (1, -2))])
def test_upfirdn2d_matches_scipy_convolution(up, down, pad):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 9))
    k = rng.standard_normal((4, 4))  # asymmetric: catches a flipped kernel
    got = upfirdn2d(torch.from_numpy(x), torch.from_numpy(k), up=up, down=down, pad=pad).numpy()
    want = upfirdn2d_reference(x, k, up, down, *pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def _separable(x: np.ndarray, h: np.ndarray, up: int, down: int) -> np.ndarray:
    y = signal.upfirdn(h, x, up=up, down=down, axis=-1)
    return signal.upfirdn(h, y, up=up, down=down, axis=-2)


def test_fir_up_and_downsampling_match_scipy_upfirdn():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 8, 8))
    h = np.array([1.0, 3.0, 3.0, 1.0]) / 8
    up = upsample_2d(torch.from_numpy(x)).numpy()
    assert up.shape == (1, 2, 16, 16)
    np.testing.assert_allclose(up, _separable(x, 2 * h, 2, 1)[..., 1:17, 1:17], atol=1e-12)
    down = downsample_2d(torch.from_numpy(x)).numpy()
    assert down.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(down, _separable(x, h, 1, 2)[..., 1:5, 1:5], atol=1e-12)


def test_fir_resampling_preserves_constants_inside():
    x = torch.full((1, 1, 8, 8), 2.5, dtype=F64)
    assert torch.allclose(upsample_2d(x)[..., 2:-2, 2:-2], x.new_tensor(2.5))
    assert torch.allclose(downsample_2d(x)[..., 1:-1, 1:-1], x.new_tensor(2.5))
    assert torch.allclose(fir_kernel_2d([1, 3, 3, 1]).sum(), torch.tensor(1.0))


def test_fused_fir_convolutions_equal_unfused_compositions():
    """conv_downsample = FIR-downsample after a 'same' conv; upsample_conv = 'same' conv after
    FIR-upsample: identical away from the border (they differ only in where zeros are padded)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 12, 12, generator=g, dtype=F64)
    w = torch.randn(5, 3, 3, 3, generator=g, dtype=F64)
    fused = conv_downsample_2d(x, w)
    unfused = downsample_2d(F.conv2d(x, w, padding=1))
    assert fused.shape == unfused.shape == (2, 5, 6, 6)
    assert torch.allclose(fused[..., 1:-1, 1:-1], unfused[..., 1:-1, 1:-1], atol=1e-12)
    fused = upsample_conv_2d(x, w)
    unfused = F.conv2d(upsample_2d(x), w, padding=1)
    assert fused.shape == unfused.shape == (2, 5, 24, 24)
    assert torch.allclose(fused[..., 2:-2, 2:-2], unfused[..., 2:-2, 2:-2], atol=1e-12)


def test_resampling_modules_shapes_and_parameter_names():
    x = torch.randn(1, 4, 8, 8)
    for fir in (False, True):
        up, down = Upsample(4, 6, with_conv=True, fir=fir), Downsample(4, 6, with_conv=True, fir=fir)
        assert up(x).shape == (1, 6, 16, 16) and down(x).shape == (1, 6, 4, 4)
        name = "Conv2d_0" if fir else "Conv_0"
        assert sorted(up.state_dict()) == [f"{name}.bias", f"{name}.weight"]
        assert Upsample(4, fir=fir)(x).shape == (1, 4, 16, 16)
        assert Downsample(4, fir=fir)(x).shape == (1, 4, 4, 4)
        assert not Upsample(4, fir=fir).state_dict()


# ---- presets and parameter names against the official code --------------------------------------


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_matches_official_config(name):
    fx, preset = fixture(name), PRESETS[name]
    official = {k: v for k, v in fx["score_fn"].items() if k != "name"}
    ours = preset.network.to_dict()
    assert ours.pop("image_size") == fx["data"]["image_size"] == preset.image_size
    for key, value in official.items():
        mine = ours.pop(key)
        assert mine == value or (isinstance(value, float) and math.isclose(mine, value)), key
    assert not ours, f"options not in the official config: {ours}"
    sde, proc = fx["sde"], preset.process
    assert sde["beta_min"] == sde["beta_max"] == proc["beta"]
    assert (sde["gamma"], sde["nu"], sde["kappa"]) == (proc["Gamma"], proc["nu"], proc["kappa"])
    assert math.isclose(proc["M_inv"], (sde["gamma"] - sde["nu"]) ** 2 / 4)
    assert math.isclose(preset.initial_momentum_variance, sde["kappa"] / proc["M_inv"])
    assert sde["decomp_mode"] == "lower" and float(sde["numerical_eps"]) == preset.numerical_eps
    assert float(fx["eval_eps"]) == proc["t_min"] and float(fx["train_eps"]) == proc["t_train_min"]
    assert fx["data"]["num_channels"] == preset.channels and fx["data"]["norm"] is True
    assert preset.data_range == (-1.0, 1.0)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_full_size_names_and_shapes_equal_the_official_network(name):
    fx = fixture(name)
    ours = expected_shapes(PRESETS[name].network)
    official = {k: tuple(v) for k, v in fx["state_dict"].items()}
    assert list(ours) == list(official)  # same names, same order
    assert ours == official
    assert sum(math.prod(s) for s in ours.values()) == fx["n_params"]


def pooled_state_dict(shapes: dict, seed: int, scale: float = 0.05) -> dict:
    """Random tensors of the given shapes, all views into one shared random pool.

    torch.save stores a shared storage once, so a full-size checkpoint stays a few MB.
    """
    sizes = [math.prod(s) for s in shapes.values()]
    g = torch.Generator().manual_seed(seed)
    pool = torch.randn(max(sizes) + 997, generator=g) * scale
    offsets = torch.randint(0, 997, (len(sizes),), generator=g).tolist()
    return {k: pool[o:o + n].view(s) for (k, s), n, o in zip(shapes.items(), sizes, offsets)}


def lightning_checkpoint(online: dict, ema: dict) -> dict:
    """The layout of a PyTorch Lightning 1.9 checkpoint of the official SDEWrapper."""
    state = {f"score_fn.{k}": v for k, v in online.items()}
    state.update({f"ema_score_fn.{k}": v for k, v in ema.items()})
    return {"epoch": 2349, "global_step": 1, "pytorch-lightning_version": "1.9.0", "state_dict": state,
            "loops": {"fit_loop": {"state_dict": {}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None}},
            "optimizer_states": [], "lr_schedulers": [{"base_lrs": [2e-4], "last_epoch": 1}]}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_official_checkpoint_loads_strictly_and_runs(name, tmp_path):
    shapes = {k: tuple(v) for k, v in fixture(name)["state_dict"].items()}
    online, ema = pooled_state_dict(shapes, seed=1), pooled_state_dict(shapes, seed=2)
    path = tmp_path / "psld.ckpt"
    torch.save(lightning_checkpoint(online, ema), path)
    assert path.stat().st_size < 64e6
    net = load_official_checkpoint(path, name)  # ema=True by default
    assert not net.training
    if PRESETS[name].network.embedding_type == "fourier":  # frozen Fourier frequencies stay frozen
        assert not net.all_modules[0].W.requires_grad
    loaded = net.state_dict()
    assert list(loaded) == list(shapes) and all(torch.equal(loaded[k], ema[k]) for k in shapes)
    raw = official_state_dict(read_checkpoint(path), ema=False)
    assert raw.keys() == shapes.keys() and all(torch.equal(raw[k], online[k]) for k in shapes)
    # One forward pass of the full-size network. It is fully convolutional and places attention
    # by level, so a 32x32 input keeps this test fast for the 64/128 px presets; outputs at the
    # native size are checked against the official code in test_matches_official_network_outputs.
    z = torch.randn(1, 6, 32, 32)
    with torch.no_grad():
        out = OfficialPSLDEpsModel(net)(z, torch.tensor([0.5]))
    assert out.shape == (1, 6, 32, 32) and torch.isfinite(out).all()


# ---- error reporting ----------------------------------------------------------------------------

SMALL = NCSNppConfig(image_size=16, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                     fir=True, progressive_input="residual", embedding_type="fourier")


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = NCSNpp(SMALL).state_dict()
    state.pop("all_modules.4.GroupNorm_1.bias")
    state["all_modules.3.Bogus_0.weight"] = torch.zeros(3)
    state["all_modules.1.weight"] = torch.zeros(5, 5)
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {f"ema_score_fn.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(OfficialCheckpointError) as err:
        load_official_checkpoint(path, SMALL)
    msg = str(err.value)
    assert "1 missing key(s): all_modules.4.GroupNorm_1.bias" in msg
    assert "1 unexpected key(s): all_modules.3.Bogus_0.weight" in msg
    assert "all_modules.1.weight: checkpoint (5, 5) vs network (32, 16)" in msg


def test_wrong_preset_error_names_the_fitting_preset():
    shapes = fixture("psld-afhqv2")["state_dict"]
    state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    with torch.device("meta"):
        net = NCSNpp(PRESETS["psld-cifar10"].network)
    with pytest.raises(OfficialCheckpointError, match=r"fit preset\(s\) \['psld-afhqv2'\]"):
        load_state_dict_strict(net, state, label="psld-cifar10")


def test_key_map_selects_ema_or_online_and_strips_prefixes():
    ckpt = {"state_dict": {"score_fn.all_modules.0.W": 1, "ema_score_fn.all_modules.0.W": 2}}
    assert official_state_dict(ckpt) == {"all_modules.0.W": 2}
    assert official_state_dict(ckpt, ema=False) == {"all_modules.0.W": 1}
    ddp = {"state_dict": {"module.ema_score_fn.all_modules.1.bias": 3}}
    assert official_state_dict(ddp) == {"all_modules.1.bias": 3}
    assert official_state_dict({"all_modules.0.W": 4}) == {"all_modules.0.W": 4}
    with pytest.raises(OfficialCheckpointError, match=r"no 'ema_score_fn\.\*' weights.*\['score_fn\.'\]"):
        official_state_dict({"state_dict": {"score_fn.all_modules.0.W": 1}})


class NotAllowlisted:  # stands for any class a pickle may name
    pass


def test_unsafe_pickle_needs_explicit_trust(tmp_path):
    state = {f"ema_score_fn.{k}": v for k, v in NCSNpp(SMALL).state_dict().items()}
    path = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": NotAllowlisted()}, path)
    with pytest.raises(OfficialCheckpointError, match="trust_pickle=True") as err:
        load_official_checkpoint(path, SMALL)
    assert "NotAllowlisted" in str(err.value)
    assert isinstance(load_official_checkpoint(path, SMALL, trust_pickle=True), NCSNpp)


# ---- the ε wrapper ------------------------------------------------------------------------------


def test_wrapper_passes_full_eps_through():
    net = NCSNpp(SMALL).eval()
    model = OfficialPSLDEpsModel(net)
    z = torch.randn(2, 6, 16, 16, dtype=F64)
    with torch.no_grad():
        out = model(z, 0.25)  # scalar t broadcasts; z's dtype is kept
        ref = net(z.float(), torch.full((2,), 0.25))
    assert out.dtype == F64 and torch.allclose(out.float(), ref)


def test_wrapper_completes_momentum_only_eps_with_the_official_score():
    net = NCSNpp(NCSNppConfig(**{**SMALL.to_dict(), "out_ch": 3})).eval()
    L = torch.tensor([[[0.3, 0.0], [-0.7, 0.2]], [[0.05, 0.0], [0.4, 0.9]]], dtype=F64)
    model = OfficialPSLDEpsModel(net, cholesky=lambda t: L)
    z, t = torch.randn(2, 6, 16, 16), torch.tensor([0.1, 0.9])
    with torch.no_grad():
        eps, eps_m = model(z, t), net(z, t)
    eps = eps.double()
    assert torch.equal(eps[:, 3:], eps_m.double())
    LinvT = torch.linalg.inv(L).transpose(1, 2)
    score = -torch.einsum("bij,bjchw->bichw", LinvT, eps.unflatten(1, (2, 3)))
    assert score[:, 0].abs().max() < 1e-6  # official: s_x = 0
    assert torch.allclose(score[:, 1], -eps_m.double() / L[:, 1, 1].view(-1, 1, 1, 1))  # s_m = -eps_m / l22
    with pytest.raises(ValueError, match="cholesky"):
        OfficialPSLDEpsModel(net)(z, t)


# ---- golden outputs of the official network --------------------------------------------------


def seeded_weights(shapes: dict, seed: int) -> dict:
    """Deterministic float64 weights (also used to produce the golden file from the official code)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(shapes):
        s = tuple(shapes[name])
        r = torch.randn(s, generator=g, dtype=F64)
        if name.endswith("all_modules.0.W") and len(s) == 1:  # Fourier frequencies
            out[name] = 16 * r
        elif len(s) == 1:
            out[name] = (1.0 if "GroupNorm" in name and name.endswith("weight") else 0.0) + 0.1 * r
        else:
            fan_in = s[0] if name.endswith(".W") else math.prod(s[1:])
            out[name] = r / math.sqrt(fan_in)
    return out


def seeded_inputs(config: NCSNppConfig, seed: int):
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    z = torch.randn(2, config.in_ch, s, s, generator=g, dtype=F64)
    t = torch.tensor([0.5, 1e-3], dtype=F64)
    return z, t


GOLDEN = json.loads((DATA / "ncsnpp_official_golden.json").read_text())


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["label"] for c in GOLDEN["cases"]])
def test_matches_official_network_outputs(case):
    config = NCSNppConfig.from_dict(case["config"])
    net = NCSNpp(config).to(F64).eval()
    net.load_state_dict(seeded_weights(expected_shapes(config), case["seed"]), strict=True)
    z, t = seeded_inputs(config, case["seed"])
    with torch.no_grad():
        out = net(z, t)
    sub = out[:, :, ::case["stride"], ::case["stride"]]
    want = torch.tensor(case["output_subsampled"], dtype=F64)
    assert sub.shape == want.shape
    assert ((sub - want).norm() / want.norm()).item() < 1e-10
    assert math.isclose(out.norm().item(), case["output_norm"], rel_tol=1e-10)

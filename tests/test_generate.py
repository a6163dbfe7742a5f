"""Seeded generation in batches and to a resumable PNG folder; the sample and eval commands on models."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cosi
from cosi.cli.app import app
from cosi.data import FMNIST_DEFAULT, load_image_folder
from cosi.evaluation.generate import batches, generate_folder
from cosi.core.noise import counter_normal, sample_keys
from cosi.evaluation.oracle import GaussianMixture


@pytest.fixture(scope="module")
def image_model():
    """An exact-score oracle on 1x4x4 images, shaped like a DiffusionModel."""
    p = cosi.make_process("vp")
    gmm = GaussianMixture.random(d=16, shape=(1, 4, 4), seed=0)
    return SimpleNamespace(eps_model=gmm.eps_model(p), process=p, data_shape=(1, 4, 4), device=torch.device("cpu"))


@pytest.mark.parametrize("sampler", ["ddim", "em"])
def test_samples_do_not_depend_on_the_batch_size(image_model, sampler):
    a = torch.cat(list(batches(image_model, sampler, 5, 7, 3)))
    b = torch.cat(list(batches(image_model, sampler, 5, 7, 7)))
    assert a.shape == (7, 1, 4, 4) and torch.allclose(a, b, atol=1e-6)
    c = torch.cat(list(batches(image_model, sampler, 5, 7, 7, seed=1)))
    assert not torch.allclose(a, c)


def test_counter_normals_are_standard_normal_and_independent():
    from scipy import stats

    keys = sample_keys(0, torch.arange(1000))
    z, z2 = counter_normal(keys, 3, (1000,)), counter_normal(keys, 4, (1000,))
    assert abs(z.mean()) < 0.005 and abs(z.std() - 1) < 0.005 and abs((z ** 4).mean() - 3) < 0.05
    assert stats.kstest(z.flatten()[:200_000].numpy(), "norm").pvalue > 1e-3
    for a, b in [(z, z2), (z[:-1], z[1:]), (z[:, :-1], z[:, 1:])]:  # across draws, samples, elements
        assert abs(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) < 0.005
    assert torch.equal(counter_normal(keys[5:9], 3, (1000,)), z[5:9])  # a row depends on its key only


def test_folder_resumes_only_missing_or_broken_batches_and_refuses_other_settings(image_model, tmp_path):
    out = tmp_path / "s"
    generate_folder(image_model, out, "em", 5, 6, batch_size=2, progress=False)
    ref = load_image_folder(out, channels=1).images
    assert ref.shape == (6, 1, 4, 4)
    (out / "000003.png").unlink()
    (out / "000004.png").write_bytes((out / "000004.png").read_bytes()[:20])  # a file cut short
    stamp = (out / "000000.png").stat().st_mtime_ns
    generate_folder(image_model, out, "em", 5, 6, batch_size=3, progress=False)
    assert torch.equal(load_image_folder(out, channels=1).images, ref)
    assert (out / "000000.png").stat().st_mtime_ns == stamp  # finished batches are not redone
    generate_folder(image_model, out, "em", 5, 8, batch_size=2, progress=False)  # more samples: fine
    assert json.loads((out / "manifest.json").read_text())["n"] == 8
    with pytest.raises(ValueError, match="nfe: 5 there vs 6 now"):
        generate_folder(image_model, out, "em", 6, 8, batch_size=2, progress=False)


def test_two_gloo_processes_write_exactly_the_samples_of_one(tmp_path):
    import subprocess
    import sys

    args = ["sample", "--model", "fmnist-vp", "--sampler", "em", "--nfe", "8", "--num-samples", "6", "--quiet",
            "--device", "cpu"]
    one = CliRunner().invoke(app, args + ["--batch-size", "4", "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                          "-m", "cosi", *args, "--batch-size", "1", "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = (load_image_folder(tmp_path / d / "images", channels=1).images for d in ("one", "two"))
    assert a.shape == (6, 1, 28, 28) and torch.equal(a, b)


def test_sample_and_eval_commands_on_the_shipped_vp_model(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["sample", "-m", "fmnist-vp", "-s", "ddim", "--nfe", "3", "--n", "4", "--quiet",
                            "--out", str(tmp_path / "vp")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "vp" / "samples.png").is_file() and len(list((tmp_path / "vp" / "images").glob("*.png"))) == 4
    if not FMNIST_DEFAULT.is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    r = runner.invoke(app, ["eval", str(tmp_path / "vp"), "--json", "--cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output.strip().splitlines()[-1])
    assert res["features"] == "classifier" and res["n"] == 4 and res["n_ref"] == 10000 and res["fd"] > 0
    assert (tmp_path / "cache" / "classifier-fmnist.npz").is_file()


def test_sample_command_runs_an_official_checkpoint(tmp_path):
    from test_ncsnpp import fixture, lightning_checkpoint, pooled_state_dict

    shapes = {k: tuple(v) for k, v in fixture("psld-cifar10")["state_dict"].items()}
    path = tmp_path / "psld.ckpt"
    torch.save(lightning_checkpoint(pooled_state_dict(shapes, 1), pooled_state_dict(shapes, 2)), path)
    r = CliRunner().invoke(app, ["sample", "--checkpoint", str(path), "--preset", "psld-cifar10", "-s", "euler",
                                 "--nfe", "2", "--n", "1", "--quiet", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    img = load_image_folder(tmp_path / "o" / "images").images
    assert img.shape == (1, 3, 32, 32)
    r = CliRunner().invoke(app, ["sample", "--checkpoint", str(path), "-s", "euler", "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "--preset" in r.output


# The Inception path needs torch-fidelity (the `fid` extra), which needs torchvision; CI installs neither
# (torchvision from the registry would replace the local CPU torch), so these run where it is installed.


def test_inception_fid_needs_a_local_weights_file_and_says_which(tmp_path):
    pytest.importorskip("torch_fidelity")
    from cosi.evaluation.metrics import INCEPTION_FILE, InceptionFeatures

    with pytest.raises(FileNotFoundError, match=INCEPTION_FILE):
        InceptionFeatures(tmp_path / "missing.pth")


def test_inception_features_from_a_weights_file(tmp_path, monkeypatch):
    tf = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    from cosi.evaluation.metrics import InceptionFeatures, fd

    # a randomly initialized extractor stands in for the real weights, which cannot be downloaded here
    monkeypatch.setattr(tf, "load_state_dict_from_url", lambda *a, **k: None)
    monkeypatch.setattr(tf.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    state = tf.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    monkeypatch.undo()
    torch.save(state, tmp_path / "w.pth")
    feats = InceptionFeatures(tmp_path / "w.pth")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    f = feats(x)
    assert f.shape == (3, 2048) and torch.isfinite(f).all()
    s = feats.stats([x])
    assert abs(fd(s, s)) < 1e-6
    torch.save({"w": torch.zeros(1), "bad": np.dtype}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match="not a plain tensor state dict"):
        InceptionFeatures(tmp_path / "code.pth")


def test_what_batch_size_independence_means_on_a_network():
    """The prior and every noise draw of sample i are bitwise the same in any batch; the network's
    outputs agree to float rounding only (CPU convolutions pick kernels by batch size), which after
    8-bit quantization can move a pixel by one grey level."""
    from cosi.core.noise import CounterNoise
    from cosi.evaluation.generate import sample_range

    m = cosi.load_model("fmnist-psld")
    keys = sample_keys(0, torch.arange(0, 32))
    state = m.process.state_shape((32, *m.data_shape))
    full = m.process.prior_sample(state, keys=keys)
    part = m.process.prior_sample(m.process.state_shape((5, *m.data_shape)), keys=keys[10:15])
    assert torch.equal(full[10:15], part)
    z = torch.zeros(state)
    assert torch.equal(CounterNoise(keys)(3, z)[10:15], CounterNoise(keys[10:15])(3, z[10:15]))
    a = torch.cat([sample_range(m, "gddim-2m", 6, s, min(5, 32 - s)) for s in range(0, 32, 5)])
    b = sample_range(m, "gddim-2m", 6, 0, 32)
    assert (a - b).abs().max() < 2e-3  # float rounding through 6 calls; one grey level is 2/255 ≈ 8e-3
    from cosi.data import from_unit_range

    assert (from_unit_range(a).int() - from_unit_range(b).int()).abs().max() <= 1

"""Every user mistake ends with one line `error: <what> — <what to do>` and exit code 2, before any
work or file is written; nothing silent (issue 20's table, one test per row)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cosi.cli.app import app
from cosi.core.integrators import build_plan
from cosi.core.integrators.plan import ModelError
from cosi.core.processes import make_process
from cosi.core.sampling import sample
from cosi.models.checkpoint import save_model
from cosi.models.unet import UNet, UNetConfig
import cosi.models.checkpoint as ck

runner = CliRunner()
ORACLE = ["--d", "2", "--n", "4", "-q"]


def cli(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.output


def refused(args, *needles):
    """Exit code 2, one `error:` line naming each needle, no traceback."""
    code, out = cli(*args)
    assert code == 2, out
    assert "Traceback" not in out and out.count("error:") == 1, out
    for s in needles:
        assert s in out, out
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small PSLD U-Net on 1×8×8 images saved as a cosi model pair."""
    p = make_process("psld")
    cfg = UNetConfig(in_channels=p.k, image_size=8, base_channels=8, channel_mult=(1,), attn_resolutions=(),
                     num_res_blocks=1, num_heads=1)
    torch.manual_seed(0)
    stem = tmp_path_factory.mktemp("tiny") / "m"
    save_model(stem, UNet(cfg), ck.diffusion_config(p, cfg, (1, 8, 8), dataset="synthetic"))
    return str(stem)


# ---- the table -----------------------------------------------------------------------------------


def test_huge_nfe_with_the_oracle_is_refused_by_the_cap(tmp_path):
    refused(["sample", "--nfe", 10_000_000, "--out", tmp_path / "o", *ORACLE], "--nfe 10000000 is above the cap",
            "--allow-large-nfe")
    refused(["bench", "oracle", "--nfe", 10_000_000], "above the cap")
    assert not (tmp_path / "o").exists()


def test_huge_nfe_with_a_model_is_refused_before_loading(tmp_path, tiny):
    refused(["sample", "-m", tiny, "--nfe", 10_000_000, "--out", tmp_path, "-q"], "above the cap")
    assert not (tmp_path / "images").exists()


def test_allow_large_nfe_still_checks_memory(monkeypatch, tmp_path):
    from cosi.cli import validate

    monkeypatch.setattr(validate, "available_memory", lambda: 10**9)
    refused(["sample", "--nfe", 10_000_000, "--allow-large-nfe", "--out", tmp_path, *ORACLE],
            "needs about 30 GB of memory and 1 GB is available")


def test_a_refused_run_leaves_the_folder_as_it_was_and_the_suggested_retry_works(tmp_path, tiny):
    out = refused(["sample", "-m", tiny, "-s", "nvv", "--nfe", 5, "--n", 2, "--out", tmp_path, "-q", "--device",
                   "cpu"], "nfe=5 cannot be met exactly", "nfe=6")
    assert "use nfe=3 or nfe=6" in out and not (tmp_path / "images").exists()
    code, out = cli("sample", "-m", tiny, "-s", "nvv", "--nfe", 6, "--n", 2, "--out", tmp_path, "-q", "--device",
                    "cpu")
    assert code == 0, out
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["000000.png", "000001.png", "manifest.json"]


@pytest.mark.parametrize("n", [-5, 0])
def test_eval_n_must_be_positive(tmp_path, n):
    _png_folder(tmp_path, 3)
    refused(["eval", tmp_path, "--n", n], f"--n {n} is not a positive number")


def test_eval_n_beyond_the_samples_is_refused(tmp_path):
    _png_folder(tmp_path, 3)
    refused(["eval", tmp_path, "--n", 5], "n=5: the folder holds 3 samples", "from 1 to 3")


def test_bench_oracle_with_an_absurd_lam_is_refused():
    refused(["bench", "oracle", "-s", "lambda-ddim-1", "--lam", "-1e9", "--nfe", 10, "--d", 2, "--n", 2,
             "--n-dist", 10], "lam=-1e+09 makes lambda-ddim-1's coefficients", "choose a λ of moderate size")
    refused(["bench", "oracle", "-s", "csps-d", "-p", "psld", "--lam", "1e3", "--nfe", 20, "--d", 2, "--n", 2,
             "--n-dist", 10], "lam=1000", "as large as")
    refused(["bench", "oracle", "-s", "csps-d", "--lam", "nan", "--d", 2], "not finite")


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_a_non_float_eps_is_refused_not_cast(dtype):
    p = make_process("psld")
    model = lambda z, t: torch.ones_like(z).to(dtype)  # noqa: E731
    with pytest.raises(ModelError, match=f"returned dtype {dtype} at network call 1 .*real floating-point"):
        sample(model, p, "euler", 4, shape=(2, 3))


def test_a_huge_lam_blames_lam_not_the_model(tmp_path):
    refused(["sample", "-s", "csps-d", "--lam", "1e9", "--nfe", 10, "--out", tmp_path, *ORACLE],
            "lam=1e+09 makes csps-d's coefficients at nfe=10 non-finite", "choose a λ")
    p = make_process("psld")
    for lam in (1e6, -1e6):
        with pytest.raises(ValueError, match=r"lam=.*1e\+06 makes csps-d's coefficients"):
            sample(lambda z, t: torch.zeros_like(z), p, "csps-d", 10, shape=(2, 3), lam=lam)
    with pytest.raises(ValueError, match="lam=inf is not a finite number"):
        build_plan("csps-d", p, 10, lam=float("inf"))


def _official(tmp_path, *extra):
    return ["sample", "--checkpoint", tmp_path / "x.ckpt", "--preset", "psld-cifar10", "--out", tmp_path / "o",
            "--device", "cpu", "-q", *extra]


def test_an_empty_checkpoint_says_so_not_aborted(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"")
    out = refused(_official(tmp_path), "not a PSLD checkpoint", "is empty (0 bytes)")
    assert "Aborted" not in out


def test_random_bytes_are_corrupt_not_a_trust_question(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    out = refused(_official(tmp_path), "not a PSLD checkpoint", "corrupt")
    assert "trust" not in out


def test_a_truncated_zip_and_a_pickled_list_are_not_checkpoints(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1000)}}, tmp_path / "full.ckpt")
    data = (tmp_path / "full.ckpt").read_bytes()
    (tmp_path / "x.ckpt").write_bytes(data[: len(data) // 2])
    refused(_official(tmp_path), "not a PSLD checkpoint", "truncated")
    torch.save([1, 2, 3], tmp_path / "x.ckpt")
    refused(_official(tmp_path), "not a PSLD checkpoint", "holds a list")


class Extra:  # any class beyond PyTorch's allowlist
    pass


def test_trust_pickle_advice_names_the_class_only_when_there_is_one(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(2)}, "hp": Extra()}, tmp_path / "x.ckpt")
    refused(_official(tmp_path), "test_errors.Extra", "--trust-pickle")


@pytest.mark.parametrize("args, needle", [
    (["--n", 0], "--n 0 is not a positive number"), (["--n", -3], "--n -3 is not a positive number"),
    (["--batch-size", 0], "--batch-size 0 is not a positive number"),
    (["--batch-size", -1], "--batch-size -1 is not a positive number")])
def test_counts_must_be_positive(tmp_path, tiny, args, needle):
    refused(["sample", "-m", tiny, "--nfe", 4, "--out", tmp_path, "-q", *args], needle)
    refused(["sample", "--nfe", 4, "--out", tmp_path, "--d", 2, "-q", *args], needle)
    assert not any(tmp_path.iterdir())


def test_out_is_a_file_or_not_writable(tmp_path, tiny, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    refused(["sample", "--out", f, "--nfe", 4, *ORACLE], f"--out {f} is a file, not a folder")
    refused(["sample", "-m", tiny, "--out", f, "--nfe", 4, "-q"], "is a file, not a folder")
    refused(["sample", "--out", f / "sub", "--nfe", 4, *ORACLE], "is a file, so no folder can be made below it")
    # as root every folder is writable: stand in for a read-only one
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    sampled = []
    monkeypatch.setattr("cosi.api.sample", lambda *a, **k: sampled.append(1))
    refused(["sample", "--out", tmp_path / "new", "--nfe", 4, *ORACLE], "is not writable")
    assert not sampled  # refused before sampling, on the oracle path too


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path, tiny):
    refused(["sample", "-m", tiny, "--device", "cuda", "--nfe", 4, "--n", 2, "--out", tmp_path, "-q"],
            "this machine has no CUDA device", "use --device cpu")
    assert not any(tmp_path.iterdir())


def test_a_classifier_is_not_a_diffusion_model(tmp_path):
    refused(["sample", "-m", "fmnist-classifier", "--nfe", 4, "--n", 2, "--out", tmp_path, "-q"],
            "is a classifier, not a diffusion model", "fmnist-psld")


def _png_folder(path, n, size=28, mode="L"):
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new(mode, (size, size), color=i * 40).save(path / f"{i:06d}.png")
    return path


def test_eval_text_named_png_and_a_wrong_npz(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "000000.png").write_text("not an image")
    refused(["eval", tmp_path / "a"], "000000.png is not a readable image", "remove it")
    _png_folder(tmp_path / "b", 3)
    np.savez(tmp_path / "ref.npz", x=np.zeros(3))
    refused(["eval", tmp_path / "b", "--ref", tmp_path / "ref.npz", "--device", "cpu"],
            "is not a cosi feature-statistics .npz", "pass a reference name")


@pytest.mark.parametrize("size, mode, shape", [(64, "L", "1×64×64"), (28, "RGB", "3×28×28")])
def test_eval_on_images_the_classifier_cannot_take(tmp_path, size, mode, shape):
    _png_folder(tmp_path, 2, size, mode)
    refused(["eval", tmp_path, "--device", "cpu"], f"the images are {shape}", "takes 1×28×28",
            "--fd inception --inception-weights FILE")
    refused(["eval", tmp_path, "--fd", "classifier", "--device", "cpu"], "takes 1×28×28")


def test_sample_lam_auto_is_accepted_and_its_calls_are_reported(tmp_path, monkeypatch):
    import cosi.api
    from cosi.core.sampling import SampleResult

    seen = {}

    def fake(eps, proc, sampler, nfe, shape=None, **kw):  # the search itself is tested in test_autolam
        seen.update(kw)
        x = torch.zeros(shape)
        return SampleResult(x, torch.zeros(shape[0], 2 * shape[1]), nfe,
                            {"lam": -1.5, "reference": "gddim-2m@500", "calls": 700, "probe": 16})

    monkeypatch.setattr(cosi.api, "sample", fake)
    code, out = cli("sample", "-s", "csps-d", "--lam", "auto", "--nfe", 10, "--d", 2, "--n", 4, "--out", tmp_path)
    assert code == 0, out
    assert seen["lam"] == "auto" and "700 network calls" in out and "apart from the 10 calls" in out
    refused(["sample", "--lam", "big", "--out", tmp_path, *ORACLE], "--lam 'big' is neither a number nor 'auto'")


def test_stale_tmp_files_are_removed_on_resume(tmp_path):
    from types import SimpleNamespace

    from cosi.evaluation.generate import generate_folder
    from cosi.evaluation.oracle import GaussianMixture

    p = make_process("vp")
    gmm = GaussianMixture.random(d=16, shape=(1, 4, 4), seed=0)
    m = SimpleNamespace(eps_model=gmm.eps_model(p), process=p, data_shape=(1, 4, 4), device=torch.device("cpu"))
    generate_folder(m, tmp_path, "ddim", 4, 3, batch_size=2, progress=False)
    (tmp_path / "000007.png.tmp").write_bytes(b"half")
    generate_folder(m, tmp_path, "ddim", 4, 3, batch_size=2, progress=True)
    assert not list(tmp_path.glob("*.tmp")) and len(list(tmp_path.glob("*.png"))) == 3
    with pytest.raises(ValueError, match="batch_size=0 is not a positive integer"):
        generate_folder(m, tmp_path / "x", "ddim", 4, 3, batch_size=0)
    assert not (tmp_path / "x").exists()


# ---- the one error path ---------------------------------------------------------------------------


def test_debug_shows_the_traceback_instead(tmp_path):
    r = runner.invoke(app, ["--debug", "sample", "--n", "0", "--out", str(tmp_path), "-q"])
    assert r.exit_code != 0 and isinstance(r.exception, ValueError) and "error:" not in r.output


def test_an_unexpected_error_is_one_line_pointing_at_debug(monkeypatch, tmp_path):
    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr("cosi.api.sample", boom)
    refused(["sample", "--nfe", 4, "--out", tmp_path, *ORACLE], "unexpected KeyError", "cosi --debug")


def test_metrics_refuse_non_finite_values():
    from cosi.evaluation.metrics import frechet_distance
    from cosi.evaluation.stats import FeatureStats

    with pytest.raises(ValueError, match="NaN or inf"):
        FeatureStats(2).update(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))
    mu, cov = np.zeros(2), np.eye(2)
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(mu, np.full((2, 2), np.inf), mu, cov)



def test_the_console_script_entry_point_resolves():
    import importlib
    import tomllib
    from pathlib import Path

    spec = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]["cosi"]
    module, attr = spec.split(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_debug_also_shows_errors_a_command_catches_itself(tmp_path):
    _png_folder(tmp_path, 3)
    args = ["eval", str(tmp_path), "--n", "5"]  # `cosi eval` catches folder_fd's ValueError and calls _fail
    assert "the folder holds 3 samples" in runner.invoke(app, args).output
    r = runner.invoke(app, ["--debug", *args])
    assert isinstance(r.exception, ValueError) and "the folder holds 3 samples" in str(r.exception)


def test_a_corrupt_cosi_model_pair_is_one_line(tmp_path, tiny):
    import shutil

    for suffix in (".json", ".safetensors"):
        shutil.copy(tiny + suffix, tmp_path / f"m{suffix}")
    (tmp_path / "m.safetensors").write_bytes(b"")
    refused(["sample", "-m", tmp_path / "m", "--nfe", 4, "--n", 2, "--out", tmp_path / "o", "-q"],
            "corrupt or truncated safetensors file")
    assert not (tmp_path / "o").exists()


def test_swapped_sampler_and_process_name_the_order():
    from cosi.core.integrators import build_plan
    from cosi.core.processes import make_process

    p = make_process("vp")
    with pytest.raises(TypeError, match=r"the order is build_plan\(sampler, process, nfe\)"):
        build_plan(p, "gddim", 10)

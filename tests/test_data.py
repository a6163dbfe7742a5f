"""Dataset readers on small generated files, and the on-device batch sampler."""

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from cosi.data import (ArrayUnpickler, BatchSampler, DatasetError, ImageData, from_unit_range, load_cifar10,
                       load_dataset, load_fashion_mnist, load_image_folder, read_idx, synthetic_images,
                       to_unit_range)


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> None:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    raw = b"\0\0" + bytes([code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def fake_fmnist(root: Path, n: int = 12, gz: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix in ("train", "t10k"):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        write_idx(root / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y, gz)
        out[prefix] = (x, y)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_reader_returns_the_idx_contents(tmp_path, gz):
    ref = fake_fmnist(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        d = load_fashion_mnist(tmp_path, split)
        x, y = ref[prefix]
        assert d.images.dtype == torch.uint8 and d.images.shape == (len(x), 1, 28, 28)
        assert np.array_equal(d.images[:, 0].numpy(), x)
        assert np.array_equal(d.labels.numpy(), y.astype(np.int64))
        assert d.shape == (1, 28, 28)


def test_fashion_mnist_found_in_a_subfolder(tmp_path):
    fake_fmnist(tmp_path / "fashion-mnist")
    assert len(load_fashion_mnist(tmp_path, "test")) == 12


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist") as e:
        load_fashion_mnist(tmp_path / "nowhere")
    assert "train-images-idx3-ubyte" in str(e.value)


def test_truncated_idx_file_is_named_in_the_error(tmp_path):
    fake_fmnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="truncated or corrupt.*dataset-fashion-mnist") as e:
        load_fashion_mnist(tmp_path)
    assert str(p) in str(e.value)


def test_idx_with_bad_magic_or_label_count_is_refused(tmp_path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DatasetError, match="not an idx file"):
        read_idx(tmp_path / "junk")
    fake_fmnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=True)
    with pytest.raises(DatasetError, match="expected 12 labels"):
        load_fashion_mnist(tmp_path, "test")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_test_split():
    d = load_dataset("fmnist", split="test")
    assert d.images.shape == (10000, 1, 28, 28)
    assert sorted(d.labels.unique().tolist()) == list(range(10))


# ---- CIFAR-10 ------------------------------------------------------------------------------


def fake_cifar(root: Path, n: int = 6, protocol: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    ref = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=protocol)
        ref[name] = (data, labels)
    return ref


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar_batches_are_read_channel_major(tmp_path, protocol):
    ref = fake_cifar(tmp_path / "cifar-10-batches-py", protocol=protocol)
    train, test = load_cifar10(tmp_path, "train"), load_cifar10(tmp_path, "test")
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (6, 3, 32, 32)
    data, labels = ref["data_batch_2"]
    img = train.images[6 + 4]  # the 5th image of the second batch
    c, y, x = 1, 7, 20
    assert img[c, y, x].item() == data[4, c * 1024 + y * 32 + x]
    assert train.labels[6:12].tolist() == labels


class _Evil:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.makedirs, (self.target,))


def test_cifar_pickle_with_code_is_refused_and_not_run(tmp_path):
    fake_cifar(tmp_path)
    target = tmp_path / "pwned"
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(str(target)), b"labels": []}, f, protocol=2)
    with pytest.raises(DatasetError, match="refusing to load global"):
        load_cifar10(tmp_path, "test")
    assert not target.exists()


def test_array_unpickler_refuses_builtins(tmp_path):
    p = tmp_path / "x.pkl"
    p.write_bytes(pickle.dumps({"f": print}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        ArrayUnpickler(open(p, "rb")).load()


def test_missing_cifar_batches_are_listed(tmp_path):
    fake_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3 missing.*cifar-10-python.tar.gz"):
        load_cifar10(tmp_path)


# ---- image folders -----------------------------------------------------------------------------


def test_image_folder_reads_png_and_jpeg(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for _ in range(3)]
    (tmp_path / "sub").mkdir()
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / ("sub" if i == 2 else ".") / f"im{i}.png")
    Image.fromarray(arrays[0]).save(tmp_path / "z.jpg", quality=95)
    d = load_image_folder(tmp_path)
    assert d.images.shape == (4, 3, 10, 12)
    assert np.array_equal(d.images[0].permute(1, 2, 0).numpy(), arrays[0])  # im0.png sorts first
    assert load_image_folder(tmp_path, size=8, channels=1).images.shape == (4, 1, 8, 8)
    Image.fromarray(arrays[0][:5]).save(tmp_path / "small.png")
    with pytest.raises(DatasetError, match="pass size="):
        load_image_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no .png"):
        load_image_folder(tmp_path / "empty")


# ---- scaling and sampling ---------------------------------------------------------------------


def test_scaling_maps_pixels_onto_minus_one_one_and_back():
    u8 = torch.arange(256, dtype=torch.uint8)
    x = to_unit_range(u8)
    assert x[0] == -1 and x[-1] == 1 and x.dtype == torch.float32
    assert torch.equal(from_unit_range(x), u8)


def test_batch_sampler_is_reproducible_from_its_generator_state():
    data = synthetic_images(64, 1, 8)
    s = BatchSampler(data, 16, flip=True, generator=torch.Generator().manual_seed(3))
    state = s.generator.get_state()
    x1, y1 = s()
    x2, _ = s()
    assert x1.min() >= -1 and x1.max() <= 1 and x1.shape == (16, 1, 8, 8)
    assert not torch.equal(x1, x2)
    s.generator.set_state(state)
    x1b, y1b = s()
    assert torch.equal(x1, x1b) and torch.equal(y1, y1b)


def test_flip_flips_about_half_the_batch():
    data = synthetic_images(1, 1, 8, noise=40.0)
    s = BatchSampler(data, 400, flip=True, generator=torch.Generator().manual_seed(0))
    x, _ = s()
    orig = to_unit_range(data.images)
    flipped = (x == orig.flip(-1)).flatten(1).all(1)
    same = (x == orig).flatten(1).all(1)
    assert bool((flipped | same).all())
    assert 150 < int(flipped.sum()) < 250


def test_image_data_validates_its_tensors():
    with pytest.raises(ValueError, match="uint8"):
        ImageData(torch.zeros(2, 1, 4, 4))
    with pytest.raises(ValueError, match="labels"):
        ImageData(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))


def test_unknown_dataset_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="fmnist, cifar10, folder, synthetic"):
        load_dataset("mnist-ish")

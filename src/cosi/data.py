"""Image datasets held whole in memory as uint8 tensors, sampled in batches on their device.

Readers return an :class:`ImageData` (``images``: (N, C, H, W) uint8, ``labels``: (N,) int64
or None). Training moves it to the GPU once and draws i.i.d. batches there with
:class:`BatchSampler` (no DataLoader, no workers, no host round trip): a batch is

    x = u8 / 127.5 − 1 ∈ [−1, 1],     optionally flipped left–right with probability ½,

with every random choice drawn from one ``torch.Generator`` whose state is saved in
training checkpoints, so a resumed run draws the same batches.

Sources: Fashion-MNIST idx files (gzipped or not), CIFAR-10 python pickle batches (read
with an unpickler that admits only numpy's array reconstruction, so a malicious file
cannot run code), a folder of PNG/JPEG images, and small synthetic sets for tests.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

FMNIST_DEFAULT = Path("/usr/share/datasets/fashion-mnist")
FMNIST_HOWTO = (
    "Install Debian's package (`apt-get install dataset-fashion-mnist`, files land in "
    f"{FMNIST_DEFAULT}) or download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
    "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion) into one folder "
    "and pass that folder (gzipped or not)."
)
CIFAR_HOWTO = (
    "Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, "
    "extract it and pass the folder cifar-10-batches-py (it holds data_batch_1 ... "
    "data_batch_5 and test_batch)."
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetError(RuntimeError):
    """A dataset is missing or malformed; the message says how to get a good copy."""


@dataclass
class ImageData:
    """A whole image dataset: ``images`` (N, C, H, W) uint8, ``labels`` (N,) int64 or None."""

    images: Tensor
    labels: Tensor | None = None
    name: str = "images"

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels is not None and self.labels.shape != (len(self.images),):
            raise ValueError(f"labels must have shape ({len(self.images)},), got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def to(self, device) -> "ImageData":
        labels = None if self.labels is None else self.labels.to(device)
        return ImageData(self.images.to(device), labels, self.name)


# ---- scaling and sampling ------------------------------------------------------------------


def to_unit_range(u8: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [−1, 1]."""
    return u8.float().div_(127.5).sub_(1.0)


def from_unit_range(x: Tensor) -> Tensor:
    """float in [−1, 1] -> uint8 pixels (clamped, rounded)."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def random_flip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image of (B, C, H, W) left–right with probability ½ (no host sync)."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


class BatchSampler:
    """i.i.d. uniform batches (with replacement) of an in-memory dataset on its own device.

    Every random draw comes from ``generator`` (on the data's device), so restoring its
    state (``generator.set_state``) restores the batch sequence exactly.
    """

    def __init__(self, data: ImageData, batch_size: int, flip: bool = False,
                 generator: torch.Generator | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(data) == 0:
            raise DatasetError(f"dataset {data.name!r} is empty")
        self.data, self.batch_size, self.flip = data, batch_size, flip
        device = data.images.device
        self.generator = generator or torch.Generator(device=device).manual_seed(0)

    def indices(self) -> Tensor:
        return torch.randint(len(self.data), (self.batch_size,), generator=self.generator,
                             device=self.data.images.device)

    def __call__(self) -> tuple[Tensor, Tensor | None]:
        """(x in [−1, 1] float32 (B, C, H, W), labels or None)."""
        i = self.indices()
        x = to_unit_range(self.data.images[i])
        if self.flip:
            x = random_flip(x, self.generator)
        return x, None if self.data.labels is None else self.data.labels[i]


# ---- Fashion-MNIST (idx files) -------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    """A file's bytes, gunzipped when it starts with the gzip magic."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DatasetError(f"{path}: corrupt gzip file ({e})") from None
    return raw


def read_idx(path) -> np.ndarray:
    """Read an idx file (LeCun's MNIST format; gz or not) into a numpy array.

    Layout: 2 zero bytes, a type code, the number of dims n, n big-endian uint32 sizes, data.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an idx file (bad magic {raw[:4].hex() or 'empty'})")
    ndim = raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise DatasetError(f"{path}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", raw[4:head])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - head != need:
        raise DatasetError(f"{path}: idx header says shape {dims} ({need} bytes of data) "
                           f"but the file holds {len(raw) - head}; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype, offset=head).reshape(dims)


def _find(root: Path, stems: list[str]) -> Path | None:
    for stem in stems:
        for name in (stem, stem + ".gz"):
            if (root / name).is_file():
                return root / name
    return None


def load_fashion_mnist(root=None, split: str = "train") -> ImageData:
    """Fashion-MNIST as (N, 1, 28, 28) uint8 images and int64 labels.

    ``root``: a folder with the four idx files (``train-images-idx3-ubyte[.gz]``, ...), or a
    folder holding a ``fashion-mnist`` subfolder; default: Debian's
    /usr/share/datasets/fashion-mnist. ``split``: 'train' (60k) or 'test' (10k).
    """
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root) if root is not None else FMNIST_DEFAULT
    if not _find(root, [f"{prefix}-images-idx3-ubyte"]) and (root / "fashion-mnist").is_dir():
        root = root / "fashion-mnist"
    img_path = _find(root, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"])
    lab_path = _find(root, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"])
    if img_path is None or lab_path is None:
        missing = f"{prefix}-images-idx3-ubyte" if img_path is None else f"{prefix}-labels-idx1-ubyte"
        raise DatasetError(f"Fashion-MNIST not found: no {missing}[.gz] in {root}. {FMNIST_HOWTO}")
    try:
        images, labels = read_idx(img_path), read_idx(lab_path)
    except DatasetError as e:
        raise DatasetError(f"{e}. {FMNIST_HOWTO}") from None
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{img_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}. "
                           f"{FMNIST_HOWTO}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{lab_path}: expected {len(images)} labels, got shape {labels.shape}. {FMNIST_HOWTO}")
    return ImageData(torch.from_numpy(images.copy())[:, None], torch.from_numpy(labels.astype(np.int64)),
                     f"fashion-mnist-{split}")


# ---- CIFAR-10 (python pickle batches) --------------------------------------------------------


def _numpy_globals() -> dict:
    """The only globals a CIFAR batch needs: ndarray reconstruction, dtypes, and (for
    protocol-2 pickles written by Python 3) ``_codecs.encode`` for bytes."""
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = _reconstruct
        allowed[(mod, "scalar")] = scalar
    return allowed


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler for plain containers (dict, list, tuple, str, bytes, numbers) and numpy
    arrays. Every other global is refused, so no pickled code can run."""

    _allowed = None

    def find_class(self, module, name):
        if ArrayUnpickler._allowed is None:
            ArrayUnpickler._allowed = _numpy_globals()
        try:
            return ArrayUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays and plain "
                "containers are allowed in a data pickle") from None


def load_array_pickle(path):
    """Unpickle a data file with :class:`ArrayUnpickler` (Python-2 strings read as bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise DatasetError(f"{path}: not a readable data pickle ({e})") from None
    return obj


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = load_array_pickle(path)
    if not isinstance(d, dict):
        raise DatasetError(f"{path}: expected a dict with 'data' and 'labels', got {type(d).__name__}")
    d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"{path}: 'data' must be a uint8 array (N, 3072), got {got}. {CIFAR_HOWTO}")
    labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
    if labels is None or labels.shape != (len(data),):
        raise DatasetError(f"{path}: 'labels' must be a list of {len(data)} ints. {CIFAR_HOWTO}")
    return data, labels


def load_cifar10(root, split: str = "train") -> ImageData:
    """CIFAR-10 as (N, 3, 32, 32) uint8 images and labels from the python batches in ``root``
    (or ``root/cifar-10-batches-py``). Rows hold 1024 red, 1024 green, 1024 blue bytes."""
    if root is None:
        raise DatasetError(f"CIFAR-10 needs a folder. {CIFAR_HOWTO}")
    root = Path(root)
    if not (root / "test_batch").is_file() and (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}.get(split)
    if names is None:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 not found: {', '.join(missing)} missing in {root}. {CIFAR_HOWTO}")
    parts = [_cifar_batch(root / n) for n in names]
    data = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([p[1] for p in parts])
    return ImageData(torch.from_numpy(data), torch.from_numpy(labels), f"cifar10-{split}")


# ---- a folder of images --------------------------------------------------------------------


def load_image_folder(root, size: int | None = None, channels: int = 3, limit: int | None = None) -> ImageData:
    """Every PNG/JPEG under ``root`` (recursively, sorted; the first ``limit``), as (N, channels, H, W) uint8.

    ``channels``: 1 (grayscale) or 3 (RGB). Images must share one size unless ``size`` is
    given, in which case each is center-cropped to a square and resized to size×size.
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; pass a folder of .png/.jpg files")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not paths:
        raise DatasetError(f"no .png/.jpg/.jpeg images under {root}")
    arrays = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                if size is not None:
                    side = min(im.size)
                    left, top = (im.width - side) // 2, (im.height - side) // 2
                    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
                a = np.asarray(im, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as e:
            raise DatasetError(f"{p}: unreadable image ({e})") from None
        if arrays and a.shape != arrays[0].shape:
            raise DatasetError(f"{p} has size {a.shape[:2]} but {paths[0]} has {arrays[0].shape[:2]}; "
                               "pass size=... to resize every image")
        arrays.append(a)
    x = np.stack(arrays)
    x = x[:, None] if channels == 1 else x.transpose(0, 3, 1, 2)
    return ImageData(torch.from_numpy(np.ascontiguousarray(x)), None, f"folder:{root.name}")


# ---- synthetic data --------------------------------------------------------------------------


def synthetic_images(n: int = 256, channels: int = 1, size: int = 8, classes: int = 4,
                     noise: float = 8.0, seed: int = 0, prototype_seed: int = 0) -> ImageData:
    """A tiny learnable set: ``classes`` smooth random prototypes (sums of Gaussian blobs, fixed
    by ``prototype_seed``) plus pixel noise (drawn from ``seed``), labelled by prototype. Two
    calls with the same ``prototype_seed`` and different ``seed`` give a train and a test set."""
    g = torch.Generator().manual_seed(prototype_seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32),
                            torch.arange(size, dtype=torch.float32), indexing="ij")
    protos = torch.zeros(classes, channels, size, size)
    for c in range(classes):
        for _ in range(3):
            cy, cx = torch.rand(2, generator=g) * size
            w = 0.15 * size + 0.2 * size * torch.rand(1, generator=g)
            amp = torch.rand(channels, 1, 1, generator=g) * 2 - 1
            protos[c] += amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * w * w))
    protos = protos / protos.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.randint(classes, (n,), generator=g)
    x = 127.5 + 110 * protos[labels] + noise * torch.randn(n, channels, size, size, generator=g)
    return ImageData(x.round().clamp(0, 255).to(torch.uint8), labels, "synthetic")


# ---- by name -------------------------------------------------------------------------------

DATASETS = ("fmnist", "cifar10", "folder", "synthetic")


def load_dataset(name: str, root=None, split: str = "train", **kwargs) -> ImageData:
    """Load a dataset by name: 'fmnist' (alias 'fashion-mnist'), 'cifar10', 'folder' (a folder
    of images at ``root``), 'synthetic'. ``root`` falls back to $COSI_DATA when set."""
    key = name.lower().replace("_", "-")
    if root is None and os.environ.get("COSI_DATA"):
        root = os.environ["COSI_DATA"]
    if key in ("fmnist", "fashion-mnist"):
        return load_fashion_mnist(root, split)
    if key in ("cifar10", "cifar-10"):
        return load_cifar10(root, split)
    if key == "folder":
        if root is None:
            raise DatasetError("dataset 'folder' needs a folder of images (--data-dir)")
        return load_image_folder(root, **kwargs)
    if key == "synthetic":
        return synthetic_images(**kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")

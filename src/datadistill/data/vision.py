"""CIFAR-10, CIFAR-100 and SVHN, read through torchvision (Tiny ImageNet and image folders: `data.folders`).

Every loader reads torchvision's standard on-disk layout and returns both splits in memory as
normalized float32 ``[N, C, H, W]`` images with int64 labels (`RealData`)::

    cifar10       ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100      ROOT/cifar-100-python/{train, test, meta}
    svhn          ROOT/{train_32x32.mat, test_32x32.mat}                       (needs scipy)

Checksums: torchvision checks the CIFAR and SVHN files against the MD5s of the official release
each time it opens them, and these loaders keep that check by default. ``verify=False`` loads
through a subclass of the torchvision class whose file table carries ``md5=None``, which
torchvision's own ``check_integrity`` treats as "the file must exist": reading is still
torchvision's code, and only the checksum is skipped (for re-packed copies, subsets and test files).

torchvision is imported inside the functions, so importing the registry stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import torch

from .registry import DatasetDownloadError, DatasetEntry, DatasetMissingError, missing, register_dataset
from .spec import DatasetSpec, LoadedDataset, RealData

T = TypeVar("T")

# The statistics the DC/DSA/DM papers normalize with (CIFAR-10's std is the widely copied
# (0.2023, 0.1994, 0.2010), not the exact per-pixel std).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# torchvision's layouts (tests check these against torchvision's class attributes).
CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", "cifar-10-python.tar.gz",
                ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta")),
    "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz", ("train", "test", "meta")),
}
SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


# ---------------------------------------------------------------- shared helpers


def to_real(images: torch.Tensor, labels: Any, spec: DatasetSpec) -> RealData:
    """uint8 ``[N, C, H, W]`` images and labels -> normalized float32 `RealData`."""
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= spec.num_classes):
        raise ValueError(f"{spec.name}: labels span [{int(y.min())}, {int(y.max())}], "
                         f"expected 0..{spec.num_classes - 1}")
    x = spec.normalize(images.to(torch.float32).div_(255))
    return RealData(x.contiguous(), y, spec.num_classes)


def _nhwc(data: Any) -> torch.Tensor:
    """numpy uint8 ``[N, H, W, C]`` -> contiguous ``[N, C, H, W]`` tensor, in one copy."""
    return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()


def _absent(base: Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not (base / n).exists()]


def _as_bool(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{what} must be true or false, got {value!r}")


def _open_checked(name: str, root: Path, make: Callable[[], T]) -> T:
    """Run a torchvision constructor once the files are known to exist: its RuntimeError then
    means an MD5 mismatch, which becomes an error saying what to do."""
    try:
        return make()
    except RuntimeError as err:
        raise DatasetMissingError(
            f"dataset {name!r} under {root}: the files are there but fail torchvision's MD5 check against "
            f"the official release ({err}). Run `datadistill data prepare {name} --root {root}` to fetch them "
            f"again, or load with verify=False for a re-packed or subset copy."
        ) from err


def _download(name: str, root: Path, layout: str, fetch: Callable[[], object]) -> None:
    """Run torchvision's download; a network or checksum failure becomes `DatasetDownloadError`."""
    try:
        fetch()
    except (OSError, RuntimeError) as err:  # URLError/HTTPError/socket errors are OSErrors
        raise DatasetDownloadError(
            f"{name}: torchvision's download failed ({type(err).__name__}: {err}). Without network access, "
            f"copy the files from a machine that has them into {root}, laid out as {layout}; "
            f"`datadistill data list --root {root}` then shows {name} as available."
        ) from err


def _require_scipy() -> None:
    try:
        import scipy.io  # noqa: F401
    except ImportError as err:
        raise ImportError("svhn is stored as MATLAB .mat files, which torchvision reads with scipy: "
                          "`pip install scipy`") from err


# ---------------------------------------------------------------- CIFAR-10 / CIFAR-100


def _cifar_class(name: str, verify: bool) -> type:
    """torchvision's CIFAR class, or (``verify=False``) a subclass whose file table has ``md5=None``."""
    from torchvision import datasets

    tv = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[name]
    if verify:
        return tv
    return type(f"{tv.__name__}NoMD5", (tv,), {
        "train_list": [[f, None] for f, _ in tv.train_list],
        "test_list": [[f, None] for f, _ in tv.test_list],
        "meta": {**tv.meta, "md5": None},
    })


def cifar_dataset(name: str, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...],
                  *aliases: str) -> DatasetEntry:
    """Register CIFAR-10 or CIFAR-100 (fine labels), with class names from the dataset's meta file."""
    folder, archive, files = CIFAR_LAYOUT[name]
    layout = f"{folder}/{{{', '.join(files)}}} (or the archive {archive}, then run prepare again)"

    def available(root: Path) -> bool:
        return not _absent(root / folder, files)

    def load(root: Path, verify: Any = True) -> LoadedDataset:
        gone = _absent(root / folder, files)
        if gone:
            raise missing(name, root, f"{folder}/ lacks {', '.join(gone)}")
        cls = _cifar_class(name, _as_bool(verify, "verify"))
        train = _open_checked(name, root, lambda: cls(root, train=True, download=False))
        test = _open_checked(name, root, lambda: cls(root, train=False, download=False))
        spec = DatasetSpec(name=name, num_classes=num_classes, channels=3, image_size=(32, 32), mean=mean,
                           std=std, class_names=tuple(train.classes), allow_flip=True)
        return LoadedDataset(spec, to_real(_nhwc(train.data), train.targets, spec),
                             to_real(_nhwc(test.data), test.targets, spec))

    def prepare(root: Path) -> str:
        cls = _cifar_class(name, verify=True)
        _download(name, root, layout, lambda: cls(root, train=True, download=True))
        return f"{name}: {root / folder} holds the verified files"

    entry = DatasetEntry(
        name=name, load=load, available=available, prepare=prepare, options=("verify",),
        instructions=f"torchvision download by `datadistill data prepare {name}`; offline, copy {folder}/ "
                     f"or {archive} under the root",
    )
    return register_dataset(entry, *aliases)


cifar_dataset("cifar10", 10, CIFAR10_MEAN, CIFAR10_STD, "CIFAR10", "cifar-10")
cifar_dataset("cifar100", 100, CIFAR100_MEAN, CIFAR100_STD, "CIFAR100")


# ---------------------------------------------------------------- SVHN


def _svhn_class(verify: bool) -> type:
    """torchvision's SVHN, or (``verify=False``) a subclass whose split table has ``md5=None``."""
    from torchvision import datasets

    if verify:
        return datasets.SVHN
    table = {split: [url, fname, None] for split, (url, fname, _) in datasets.SVHN.split_list.items()}
    return type("SVHNNoMD5", (datasets.SVHN,), {"split_list": table})


def _svhn_available(root: Path) -> bool:
    return not _absent(root, list(SVHN_FILES.values()))


def load_svhn(root: Path, verify: Any = True) -> LoadedDataset:
    """SVHN train/test (the 'extra' split is not used); torchvision maps label 10 to digit 0."""
    gone = _absent(root, list(SVHN_FILES.values()))
    if gone:
        raise missing("svhn", root, f"lacks {', '.join(gone)}")
    _require_scipy()
    cls = _svhn_class(_as_bool(verify, "verify"))
    train = _open_checked("svhn", root, lambda: cls(root, split="train", download=False))
    test = _open_checked("svhn", root, lambda: cls(root, split="test", download=False))
    spec = DatasetSpec(name="svhn", num_classes=10, channels=3, image_size=(32, 32), mean=SVHN_MEAN, std=SVHN_STD,
                       class_names=tuple(str(d) for d in range(10)), allow_flip=False)
    # torchvision already transposed the .mat's [H, W, C, N] to [N, C, H, W]
    return LoadedDataset(spec, to_real(torch.from_numpy(train.data).contiguous(), train.labels, spec),
                         to_real(torch.from_numpy(test.data).contiguous(), test.labels, spec))


def prepare_svhn(root: Path) -> str:
    _require_scipy()  # torchvision opens the .mat right after downloading it
    cls = _svhn_class(verify=True)
    layout = " and ".join(SVHN_FILES.values()) + " directly in the root"
    for split in SVHN_FILES:
        _download("svhn", root, layout, lambda split=split: cls(root, split=split, download=True))
    return f"svhn: {root} holds the verified {' and '.join(SVHN_FILES.values())}"


register_dataset(
    DatasetEntry(
        name="svhn", load=load_svhn, available=_svhn_available, prepare=prepare_svhn, options=("verify",),
        instructions="torchvision download by `datadistill data prepare svhn` (needs scipy); offline, copy "
                     "train_32x32.mat and test_32x32.mat into the root",
    ),
    "SVHN",
)

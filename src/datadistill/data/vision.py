"""CIFAR-10, CIFAR-100, SVHN, Tiny ImageNet and a user's own image folders, read through torchvision.

Every loader reads torchvision's standard on-disk layout and returns both splits in memory as
normalized float32 ``[N, C, H, W]`` images with int64 labels (`RealData`)::

    cifar10       ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100      ROOT/cifar-100-python/{train, test, meta}
    svhn          ROOT/{train_32x32.mat, test_32x32.mat}                       (needs scipy)
    tinyimagenet  ROOT/tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
                                          val/images/*.JPEG, val/val_annotations.txt}
    imagefolder   ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/* (or ROOT/val/<class>/*);
                  here ROOT is the user's own folder (``--root DIR``), not the shared data root

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
TINY_FOLDER = "tiny-imagenet-200"
TINY_FILES = ("wnids.txt", "train", "val/images", "val/val_annotations.txt")
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


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


# ---------------------------------------------------------------- image files (Tiny ImageNet, ImageFolder)


def _fit(size: int, channels: int) -> Callable[[Any], torch.Tensor]:
    """PIL RGB image -> uint8 ``[channels, size, size]``: shorter side to ``size``, centre crop."""
    from torchvision.transforms import v2

    gray = [v2.Grayscale(num_output_channels=1)] if channels == 1 else []
    return v2.Compose([*gray, v2.Resize(size), v2.CenterCrop(size), v2.PILToTensor()])


def read_images(samples: Sequence[tuple[str, int]], transform: Callable[[Any], torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode ``(path, label)`` samples with torchvision's default loader (PIL, RGB) into one uint8
    ``[N, C, H, W]`` tensor and an int64 label vector."""
    from torchvision.datasets.folder import default_loader

    first = transform(default_loader(samples[0][0]))
    images = torch.empty((len(samples), *first.shape), dtype=torch.uint8)
    images[0] = first
    for i, (path, _) in enumerate(samples[1:], start=1):  # file decoding is per file by nature
        images[i] = transform(default_loader(path))
    return images, torch.tensor([label for _, label in samples], dtype=torch.long)


def _image_folder(name: str, root: Path, folder: Path) -> Any:
    """``torchvision.datasets.ImageFolder(folder)`` (used for its class list and samples); an empty or
    class-less folder becomes `DatasetMissingError`."""
    from torchvision import datasets

    try:
        return datasets.ImageFolder(folder)
    except FileNotFoundError as err:
        raise missing(name, root, str(err)) from err


def _tiny_available(root: Path) -> bool:
    return not _absent(root / TINY_FOLDER, TINY_FILES)


def _tiny_val_samples(base: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """val/val_annotations.txt lines are ``file<TAB>wnid<TAB>box...``; images sit in val/images/."""
    samples = []
    for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
        if not line.strip():
            continue
        fname, wnid = line.split("\t")[:2]
        if wnid not in class_to_idx:
            raise ValueError(f"tinyimagenet: val_annotations.txt names {wnid!r}, which is not a class in train/")
        samples.append((str(base / "val" / "images" / fname), class_to_idx[wnid]))
    return samples


def _tiny_names(base: Path, wnids: Sequence[str]) -> tuple[str, ...]:
    """First synonym from words.txt (``wnid<TAB>name, synonym, ...``); the wnid where it is absent."""
    words: dict[str, str] = {}
    path = base / "words.txt"
    if path.is_file():
        for line in path.read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    return tuple(words.get(w) or w for w in wnids)


def load_tinyimagenet(root: Path) -> LoadedDataset:
    """Tiny ImageNet's train split and its labelled val split (used as the test split).

    Class ``i`` is the ``i``-th wnid in sorted order (ImageFolder's convention), not wnids.txt order.
    """
    base = root / TINY_FOLDER
    gone = _absent(base, TINY_FILES)
    if gone:
        raise missing("tinyimagenet", root, f"{TINY_FOLDER}/ lacks {', '.join(gone)}")
    wnids = sorted(w for w in (base / "wnids.txt").read_text().split() if w)
    train = _image_folder("tinyimagenet", root, base / "train")
    if train.classes != wnids:
        raise missing("tinyimagenet", root, f"train/ holds {len(train.classes)} class folders that do not match "
                                            f"the {len(wnids)} wnids in wnids.txt")
    test_samples = _tiny_val_samples(base, train.class_to_idx)
    if not test_samples:
        raise missing("tinyimagenet", root, "val/val_annotations.txt lists no images")
    spec = DatasetSpec(name="tinyimagenet", num_classes=len(wnids), channels=3, image_size=(64, 64),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, class_names=_tiny_names(base, wnids), allow_flip=True)
    fit = _fit(64, 3)
    return LoadedDataset(spec, to_real(*read_images(train.samples, fit), spec),
                         to_real(*read_images(test_samples, fit), spec))


register_dataset(
    DatasetEntry(
        name="tinyimagenet", load=load_tinyimagenet, available=_tiny_available, prepare=None,
        instructions=f"download {TINY_URL} and unzip it in the data root, giving ROOT/{TINY_FOLDER}/"
                     f"{{wnids.txt, words.txt, train/, val/}}",
    ),
    "TinyImageNet",
)


def _floats(value: Any, channels: int, what: str) -> tuple[float, ...] | None:
    """``None``, a number, ``"0.5,0.4,0.3"`` or a sequence -> one float per channel."""
    if value is None:
        return None
    if isinstance(value, str):
        items: Sequence[Any] = [v for v in value.replace(" ", "").split(",") if v]
    elif isinstance(value, (int, float)):
        items = [value]
    else:
        items = list(value)
    out = tuple(float(v) for v in items)
    if len(out) == 1:
        out = out * channels
    if len(out) != channels:
        raise ValueError(f"imagefolder: {what} needs 1 or {channels} values, got {value!r}")
    return out


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images on the [0, 1] scale."""
    means, stds = [], []
    for c in range(images.shape[1]):  # one channel at a time keeps the float64 copy small
        std, mean = torch.std_mean(images[:, c].to(torch.float64).div_(255), correction=0)
        if float(std) < 1e-6:
            raise ValueError(f"imagefolder: channel {c} of the training images is constant; pass std=... explicitly")
        means.append(round(float(mean), 4))
        stds.append(round(float(std), 4))
    return tuple(means), tuple(stds)


def _folder_available(root: Path) -> bool:
    return (root / "train").is_dir() and ((root / "test").is_dir() or (root / "val").is_dir())


def load_image_folder(root: Path, image_size: Any = 32, channels: Any = 3, mean: Any = None, std: Any = None,
                      flip: Any = True) -> LoadedDataset:
    """A user's own images in ImageFolder layout: ``root/train/<class>/*`` and ``root/test/<class>/*``
    (``root/val/`` when there is no ``test/``).

    Class names are the train folder names, sorted; the test split is labelled with the same indices
    and may lack classes. Images are resized (shorter side) and centre-cropped to ``image_size``;
    ``channels=1`` converts to grayscale. ``mean``/``std`` default to the training images' statistics.
    """
    size, chans = int(image_size), int(channels)
    if chans not in (1, 3):
        raise ValueError(f"imagefolder: channels must be 1 or 3, got {channels!r}")
    if size < 1:
        raise ValueError(f"imagefolder: image_size must be positive, got {image_size!r}")
    mean_t, std_t = _floats(mean, chans, "mean"), _floats(std, chans, "std")
    if std_t is not None and min(std_t) <= 0:
        raise ValueError(f"imagefolder: std must be positive, got {std!r}")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise missing("imagefolder", root, "it needs train/<class>/ and test/<class>/ (or val/<class>/) folders")

    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    train = _image_folder("imagefolder", root, root / "train")
    try:
        extra = sorted(set(find_classes(test_dir)[0]) - set(train.classes))
    except FileNotFoundError as err:
        raise missing("imagefolder", root, str(err)) from err
    if extra:
        raise ValueError(f"imagefolder: {test_dir.name}/ has classes that train/ lacks: {extra}")
    test_samples = make_dataset(test_dir, train.class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not test_samples:
        raise missing("imagefolder", root, f"{test_dir.name}/ holds no images")

    fit = _fit(size, chans)
    x_train, y_train = read_images(train.samples, fit)
    x_test, y_test = read_images(test_samples, fit)
    if mean_t is None or std_t is None:
        computed = _channel_stats(x_train)
        mean_t, std_t = mean_t or computed[0], std_t or computed[1]
    do_flip = _as_bool(flip, "flip")
    # ``extra`` holds the load options that rebuild this spec (``load_dataset(name, root, **extra)``,
    # as `datadistill evaluate` does), with the mean/std in effect, JSON-ready
    options = {"image_size": size, "channels": chans, "mean": list(mean_t), "std": list(std_t), "flip": do_flip}
    spec = DatasetSpec(name="imagefolder", num_classes=len(train.classes), channels=chans, image_size=(size, size),
                       mean=mean_t, std=std_t, class_names=tuple(train.classes), allow_flip=do_flip, extra=options)
    return LoadedDataset(spec, to_real(x_train, y_train, spec), to_real(x_test, y_test, spec))


register_dataset(
    DatasetEntry(
        name="imagefolder", load=load_image_folder, available=_folder_available, prepare=None,
        instructions="your own images: pass --root DIR where DIR/train/<class>/*.png|jpg and DIR/test/<class>/* "
                     "(or DIR/val/) exist; options image_size, channels, mean, std, flip",
        options=("image_size", "channels", "mean", "std", "flip"),
    ),
    "ImageFolder",
)

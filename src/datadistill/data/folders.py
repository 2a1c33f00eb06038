"""Tiny ImageNet and a user's own image folders: image files read through torchvision.

Both loaders return both splits in memory as normalized float32 ``[N, C, H, W]`` images with int64
labels (`RealData`), as `data.vision`'s do::

    tinyimagenet  ROOT/tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
                                          val/images/*.JPEG, val/val_annotations.txt}
    imagefolder   ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/* (or ROOT/val/<class>/*);
                  here ROOT is the user's own folder (``--root DIR``), not the shared data root

torchvision is imported inside the functions, so importing the registry stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .registry import DatasetEntry, missing, register_dataset
from .spec import DatasetSpec, LoadedDataset
from .vision import IMAGENET_MEAN, IMAGENET_STD, _absent, _as_bool, to_real

TINY_FOLDER = "tiny-imagenet-200"
TINY_FILES = ("wnids.txt", "train", "val/images", "val/val_annotations.txt")
TINY_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


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

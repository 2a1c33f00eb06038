"""CIFAR-10/100, SVHN, Tiny ImageNet and ImageFolder loaders on tiny files written in each dataset's
exact on-disk format (nothing is downloaded)."""

from __future__ import annotations

import json
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datadistill.data import registry
from datadistill.data import vision
from datadistill.data.registry import DATASETS, DatasetDownloadError, DatasetMissingError, load_dataset
from datadistill.data.spec import DatasetSpec

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


# ---------------------------------------------------------------- writers of the on-disk formats


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose dispatch table we may extend
    """Writes pickles as Python 2 did when the CIFAR batches were made: protocol 2, and every string
    (keys, numpy's raw buffer) as a byte string (BINSTRING), which torchvision's
    ``pickle.load(f, encoding="latin1")`` reads back as ``str`` and the CIFAR page's
    ``encoding="bytes"`` snippet as ``bytes`` (``b"data"``)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def _py2_dump(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _cifar_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3072]`` uint8 rows (1024 R, 1024 G, 1024 B, each row-major): row 0 is pure red (255, 0, 0)."""
    rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    rows[0, :1024], rows[0, 1024:] = 255, 0
    return rows


def _write_cifar10(root: Path) -> dict[str, list[int]]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = {}
    for i, fname in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                               "test_batch"]):
        y = [(2 * i) % 10, (2 * i + 1) % 10]
        labels[fname] = y
        _py2_dump({"batch_label": f"batch {i}", "labels": y, "data": _cifar_rows(2, rng),
                   "filenames": [f"img_{i}_{j}.png" for j in range(2)]}, base / fname)
    _py2_dump({"label_names": CIFAR10_NAMES, "num_cases_per_batch": 2, "num_vis": 3072}, base / "batches.meta")
    return labels


def _write_cifar100(root: Path) -> None:
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    names = [f"fine_{i}" for i in range(100)]
    for fname, fine in [("train", [5, 99, 0]), ("test", [42, 7])]:
        _py2_dump({"batch_label": fname, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine],
                   "data": _cifar_rows(len(fine), rng), "filenames": ["x.png"] * len(fine)}, base / fname)
    _py2_dump({"fine_label_names": names, "coarse_label_names": [f"coarse_{i}" for i in range(20)]},
              base / "meta")


def _write_svhn(root: Path) -> None:
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(2)
    for fname, y in [("train_32x32.mat", [10, 1, 9]), ("test_32x32.mat", [3, 10])]:
        x = rng.integers(0, 256, size=(32, 32, 3, len(y)), dtype=np.uint8)  # [H, W, C, N]
        x[0, 5, :, 0] = (255, 0, 0)  # image 0: row 0, column 5 is red
        sio.savemat(root / fname, {"X": x, "y": np.asarray(y, dtype=np.uint8).reshape(-1, 1)})


def _solid(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (64, 64), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color = rgb if mode == "RGB" else rgb[0]
    Image.new(mode, size, color).save(path)


def _write_tiny(root: Path) -> None:
    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01", "n03"]  # wnids.txt is not sorted in the real release either
    base.mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tEuropean fire salamander, "
                                    "Salamandra salamandra\n")  # n03 has no entry
    for w in wnids:
        for j in range(2):
            _solid(base / "train" / w / "images" / f"{w}_{j}.JPEG", (255, 255, 255))
        (base / "train" / w / f"{w}_boxes.txt").write_text(f"{w}_0.JPEG\t0\t0\t63\t63\n")
    _solid(base / "train" / "n03" / "images" / "n03_2.JPEG", (0, 0, 0), mode="L")  # grayscale, as some are
    val = [("val_0.JPEG", "n03"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n02")]
    for fname, _ in val:
        _solid(base / "val" / "images" / fname, (255, 255, 255))
    (base / "val" / "val_annotations.txt").write_text("".join(f"{f}\t{w}\t0\t0\t63\t63\n" for f, w in val))


def _write_folder(root: Path, test_name: str = "test") -> None:
    rng = np.random.default_rng(3)
    for split, classes in [("train", {"cat": 3, "dog": 2}), (test_name, {"dog": 2})]:
        for cls, n in classes.items():
            for j in range(n):
                path = root / split / cls / f"{j}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)).save(path)


def _expected_white(spec) -> torch.Tensor:
    return (1 - torch.tensor(spec.mean)) / torch.tensor(spec.std)


# ---------------------------------------------------------------- registry and layout


def test_registered_names_aliases_and_layout_constants():
    from torchvision import datasets

    for alias, name in [("CIFAR10", "cifar10"), ("cifar-10", "cifar10"), ("CIFAR100", "cifar100"), ("SVHN", "svhn"),
                        ("TinyImageNet", "tinyimagenet"), ("ImageFolder", "imagefolder")]:
        assert DATASETS.canonical(alias) == name
        assert "\n" not in DATASETS.get(name).instructions
    for name, tv in [("cifar10", datasets.CIFAR10), ("cifar100", datasets.CIFAR100)]:
        folder, archive, files = vision.CIFAR_LAYOUT[name]
        assert (folder, archive) == (tv.base_folder, tv.filename)
        assert list(files) == [f for f, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
    assert vision.SVHN_FILES == {s: datasets.SVHN.split_list[s][1] for s in ("train", "test")}
    assert DATASETS.get("tinyimagenet").prepare is None and DATASETS.get("imagefolder").prepare is None


# ---------------------------------------------------------------- CIFAR


def test_cifar10_loads_the_python_batches(tmp_path):
    labels = _write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    with open(base / "data_batch_1", "rb") as f:  # the format the CIFAR page's own snippet reads
        assert set(pickle.load(f, encoding="bytes")) >= {b"data", b"labels", b"batch_label"}
    assert DATASETS.get("cifar10").available(tmp_path)

    ds = load_dataset("CIFAR10", tmp_path, verify=False)
    spec = ds.spec
    assert spec.name == "cifar10" and spec.shape == (3, 32, 32) and spec.allow_flip
    assert spec.class_names == tuple(CIFAR10_NAMES)
    assert spec.mean == vision.CIFAR10_MEAN and spec.std == vision.CIFAR10_STD
    assert spec.extra == {}  # verify is about the files, not part of the spec
    assert ds.train.images.shape == (10, 3, 32, 32) and ds.test.images.shape == (2, 3, 32, 32)
    assert ds.train.images.dtype == torch.float32 and ds.train.labels.dtype == torch.int64
    assert ds.train.images.is_contiguous()
    train_labels = sum((labels[f"data_batch_{i}"] for i in range(1, 6)), [])
    assert ds.train.labels.tolist() == train_labels and ds.test.labels.tolist() == labels["test_batch"]
    # the first image of every batch is pure red: channel 0 at 255, channels 1 and 2 at 0
    red = ds.train.images[0]
    m, s = torch.tensor(spec.mean), torch.tensor(spec.std)
    torch.testing.assert_close(red[0], torch.full((32, 32), float((1 - m[0]) / s[0])))
    torch.testing.assert_close(red[1:], (-m[1:] / s[1:]).view(2, 1, 1).expand(2, 32, 32))
    # the second image round-trips pixel by pixel from its row in data_batch_1
    with open(base / "data_batch_1", "rb") as f:
        row = pickle.load(f, encoding="latin1")["data"][1]
    raw = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32) / 255)
    torch.testing.assert_close(ds.train.images[1], spec.normalize(raw))


def test_cifar_md5_check_is_on_by_default(tmp_path):
    _write_cifar10(tmp_path)
    with pytest.raises(DatasetMissingError, match="MD5.*verify=False"):
        DATASETS.get("cifar10").load(tmp_path)


def test_cifar100_fine_labels_and_names(tmp_path):
    _write_cifar100(tmp_path)
    ds = load_dataset("CIFAR100", tmp_path, verify="false")
    assert ds.spec.num_classes == 100 and ds.spec.class_names[99] == "fine_99"
    assert ds.spec.mean == vision.CIFAR100_MEAN and ds.spec.std == vision.CIFAR100_STD
    assert ds.train.labels.tolist() == [5, 99, 0] and ds.test.labels.tolist() == [42, 7]
    assert ds.train.images.shape == (3, 3, 32, 32)
    torch.testing.assert_close(ds.test.images[0, 0], torch.full((32, 32), float(_expected_white(ds.spec)[0])))


def test_cifar10_prepare_without_network_says_what_to_copy(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetDownloadError) as info:
        DATASETS.get("cifar10").prepare(tmp_path)
    msg = str(info.value)
    assert "download failed" in msg and str(tmp_path) in msg
    assert "cifar-10-batches-py/" in msg and "data_batch_1" in msg and "batches.meta" in msg
    assert "http" not in msg
    assert isinstance(info.value, RuntimeError) and isinstance(info.value.__cause__, urllib.error.URLError)


# ---------------------------------------------------------------- SVHN


def test_svhn_loads_the_mat_files(tmp_path):
    _write_svhn(tmp_path)
    ds = load_dataset("SVHN", tmp_path, verify=False)
    assert ds.spec.class_names == tuple("0123456789") and not ds.spec.allow_flip
    assert ds.train.labels.tolist() == [0, 1, 9] and ds.test.labels.tolist() == [3, 0]  # 10 means digit 0
    assert ds.train.images.shape == (3, 3, 32, 32) and ds.train.images.dtype == torch.float32
    m, s = torch.tensor(ds.spec.mean), torch.tensor(ds.spec.std)
    torch.testing.assert_close(ds.train.images[0, :, 0, 5], torch.tensor([1.0, 0, 0]).sub(m).div(s))


def test_svhn_without_scipy_says_pip_install(tmp_path, monkeypatch):
    (tmp_path / "train_32x32.mat").write_bytes(b"")
    (tmp_path / "test_32x32.mat").write_bytes(b"")
    monkeypatch.setitem(__import__("sys").modules, "scipy.io", None)  # makes `import scipy.io` fail
    with pytest.raises(ImportError, match="pip install scipy"):
        DATASETS.get("svhn").load(tmp_path)


def test_svhn_prepare_without_network(tmp_path, monkeypatch):
    pytest.importorskip("scipy.io")
    import torchvision.datasets.svhn as tv_svhn

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_svhn, "download_url", offline)
    with pytest.raises(DatasetDownloadError, match="train_32x32.mat and test_32x32.mat"):
        DATASETS.get("svhn").prepare(tmp_path)


# ---------------------------------------------------------------- Tiny ImageNet


def test_tinyimagenet_train_and_val(tmp_path):
    _write_tiny(tmp_path)
    assert DATASETS.get("tinyimagenet").available(tmp_path)
    ds = load_dataset("TinyImageNet", tmp_path)
    spec = ds.spec
    assert spec.shape == (3, 64, 64) and spec.num_classes == 3
    assert spec.class_names == ("goldfish", "European fire salamander", "n03")  # sorted wnids n01, n02, n03
    assert ds.train.labels.tolist() == [0, 0, 1, 1, 2, 2, 2]
    assert ds.test.labels.tolist() == [2, 0, 1]
    assert spec.extra == {}  # nothing to pass back to load_dataset
    assert ds.train.images.shape == (7, 3, 64, 64) and ds.test.images.dtype == torch.float32
    white = _expected_white(spec).view(3, 1, 1)
    torch.testing.assert_close(ds.test.images, white.expand(3, 3, 64, 64), atol=0.03, rtol=0)  # JPEG: ±1 level
    black = (-torch.tensor(spec.mean) / torch.tensor(spec.std)).view(3, 1, 1)
    torch.testing.assert_close(ds.train.images[6], black.expand(3, 64, 64), atol=0.03, rtol=0)  # grayscale -> RGB


# ---------------------------------------------------------------- ImageFolder


@pytest.mark.parametrize("test_name", ["test", "val"])
def test_imagefolder_defaults_compute_mean_std(tmp_path, test_name):
    _write_folder(tmp_path, test_name)
    ds = load_dataset("ImageFolder", tmp_path, image_size=8)
    spec = ds.spec
    assert spec.shape == (3, 8, 8) and spec.class_names == ("cat", "dog") and spec.allow_flip
    assert ds.train.labels.tolist() == [0, 0, 0, 1, 1] and ds.test.labels.tolist() == [1, 1]  # test lacks "cat"
    # the default mean/std are the training images' own: normalized train images have mean 0, std 1
    x = ds.train.images.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(x.mean(1), torch.zeros(3), atol=2e-3, rtol=0)
    torch.testing.assert_close(x.std(1, correction=0), torch.ones(3), atol=2e-3, rtol=0)
    # spec.extra holds the options that rebuild the same spec (how `datadistill evaluate` reloads it)
    saved = DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    registry.clear_cache()
    assert load_dataset(saved.name, tmp_path, **saved.extra).spec.to_dict() == saved.to_dict()


def test_imagefolder_options(tmp_path):
    _write_folder(tmp_path)
    root = tmp_path / "train" / "cat"
    Image.new("RGB", (20, 10), (255, 255, 255)).save(root / "white.png")
    ds = load_dataset("imagefolder", tmp_path, image_size="6", channels=1, mean="0.5", std=[0.25], flip="no")
    spec = ds.spec
    assert spec.shape == (1, 6, 6) and spec.mean == (0.5,) and spec.std == (0.25,) and not spec.allow_flip
    white = ds.train.images[3]  # sorted file names: 0.png, 1.png, 2.png, white.png
    torch.testing.assert_close(white, torch.full((1, 6, 6), 2.0))  # (1 - 0.5) / 0.25
    with pytest.raises(TypeError, match="valid options"):
        load_dataset("imagefolder", tmp_path, size=8)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        load_dataset("imagefolder", tmp_path, channels=2)
    with pytest.raises(ValueError, match="mean needs 1 or 3 values"):
        load_dataset("imagefolder", tmp_path, mean="0.1,0.2")


def test_imagefolder_test_class_missing_from_train(tmp_path):
    _write_folder(tmp_path)
    _solid(tmp_path / "test" / "bird" / "0.png", (1, 2, 3), size=(10, 10))
    with pytest.raises(ValueError, match="bird"):
        load_dataset("imagefolder", tmp_path)


# ---------------------------------------------------------------- missing data


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "tinyimagenet", "imagefolder"])
def test_missing_dataset_says_how_to_get_it(tmp_path, name):
    entry = DATASETS.get(name)
    empty = tmp_path / "empty"
    assert not entry.available(empty)
    with pytest.raises(DatasetMissingError) as info:
        entry.load(empty)
    msg = str(info.value)
    if entry.prepare is not None:
        assert f"datadistill data prepare {name}" in msg
    else:
        assert entry.instructions in msg


def test_partial_cifar_names_the_missing_file(tmp_path):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    assert not DATASETS.get("cifar10").available(tmp_path)
    with pytest.raises(DatasetMissingError, match="lacks test_batch"):
        DATASETS.get("cifar10").load(tmp_path, verify=False)


def test_spec_dicts_written_with_flip_still_load():
    import warnings

    from datadistill.data.spec import DatasetSpec

    spec = DatasetSpec("hand", 2, 1, (2, 2), (0.0,), (1.0,), ("a", "b"), allow_flip=False)
    d = spec.to_dict()
    assert d["allow_flip"] is False and "flip" not in d
    old = {k if k != "allow_flip" else "flip": v for k, v in d.items()}  # a file's spec from before the rename
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file cannot be edited by its reader: no message for it
        assert DatasetSpec.from_dict(old) == spec and DatasetSpec.from_dict(d) == spec
    assert DatasetSpec.from_dict({**old, "flip": True}).allow_flip  # the value, not the default
    # cache folders keep their keys (the old name), so pools and features cached before still hit
    assert spec.cache_key() == old
    assert not hasattr(spec, "flip")  # the old attribute is gone (CHANGELOG)

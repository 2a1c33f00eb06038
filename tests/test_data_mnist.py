import gzip
import io
import pickle

import numpy as np
import pytest
import torch

from datadistill.data import DatasetDownloadError, DatasetMissingError, RealData, load_dataset
from datadistill.data import mirrors
from datadistill.data import mnist as m
from datadistill.data.registry import DATASETS, clear_cache


def _write_idx(folder, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, a in arrays.items():
        (folder / name).write_bytes(mirrors.idx_bytes(a))
    return arrays


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_loader_reads_torchvision_layout(tmp_path, name):
    arrays = _write_idx(m.raw_dir(name, tmp_path))
    clear_cache()
    d = load_dataset(name, tmp_path)
    assert d.train.images.shape == (20, 1, 28, 28) and d.test.images.shape == (10, 1, 28, 28)
    assert d.train.images.dtype == torch.float32 and d.train.labels.dtype == torch.int64
    x0 = torch.tensor(arrays["train-images-idx3-ubyte"][0], dtype=torch.float32) / 255
    expected = (x0 - d.spec.mean[0]) / d.spec.std[0]
    assert torch.allclose(d.train.images[0, 0], expected, atol=1e-6)
    assert d.train.labels.tolist() == list(np.arange(20) % 10)


def test_missing_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(DatasetMissingError, match=f"datadistill data prepare mnist --root {tmp_path}"):
        load_dataset("mnist", tmp_path)


def test_idx_encoding_matches_the_published_header():
    b = mirrors.idx_bytes(np.zeros((2, 28, 28), np.uint8))
    assert b[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(b[4:8], "big") == 2 and len(b) == 16 + 2 * 784


def test_install_checks_md5_before_writing(tmp_path):
    files = {f: b"not the real bytes" for f in mirrors.IDX_FILES}
    with pytest.raises(DatasetDownloadError, match="has MD5"):
        m._install_idx("mnist", tmp_path, files, "test source")
    assert not m.raw_dir("mnist", tmp_path).exists()


def test_an_interrupted_install_leaves_all_four_files_or_none(tmp_path, monkeypatch):
    from pathlib import Path

    files = {f: f"bytes of {f}".encode() for f in mirrors.IDX_FILES}
    monkeypatch.setitem(m.MD5, "mnist", {f: m.md5_bytes(b) for f, b in files.items()})
    real, calls = Path.write_bytes, []

    def dies_on_the_third(self, data):  # killed (here: interrupted) half-way through the install
        calls.append(self.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        m._install_idx("mnist", tmp_path, files, "test source")
    raw = m.raw_dir("mnist", tmp_path)
    assert not raw.exists() and list(raw.parent.iterdir()) == []  # nothing half-installed, no scratch left
    monkeypatch.setattr(Path, "write_bytes", real)
    m._install_idx("mnist", tmp_path, files, "test source")
    (raw / "keep.gz").write_bytes(b"a user's archive")
    newer = {**files, "t10k-labels-idx1-ubyte": b"newer labels"}
    monkeypatch.setitem(m.MD5["mnist"], "t10k-labels-idx1-ubyte", m.md5_bytes(b"newer labels"))
    calls.clear()
    monkeypatch.setattr(Path, "write_bytes", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        m._install_idx("mnist", tmp_path, newer, "test source")
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == {**files, "keep.gz": b"a user's archive"}  # the old set
    monkeypatch.setattr(Path, "write_bytes", real)
    m._install_idx("mnist", tmp_path, newer, "test source")
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == {**newer, "keep.gz": b"a user's archive"}
    assert sorted(p.name for p in raw.parent.iterdir()) == ["raw"]


def test_mnist_pickle_mirror_reconstructs_the_bytes():
    rng = np.random.default_rng(1)
    u8 = [rng.integers(0, 256, (k, 784), dtype=np.uint8) for k in (5, 3, 4)]
    ys = [rng.integers(0, 10, k).astype(np.int64) for k in (5, 3, 4)]
    splits = tuple((x.astype(np.float32) / 256, y) for x, y in zip(u8, ys))
    blob = gzip.compress(pickle.dumps(splits, protocol=2))
    files = mirrors.mnist_from_pkl(blob)
    assert files["train-images-idx3-ubyte"] == mirrors.idx_bytes(np.concatenate(u8[:2]).reshape(-1, 28, 28))
    assert files["train-labels-idx1-ubyte"] == mirrors.idx_bytes(np.concatenate(ys[:2]).astype(np.uint8))
    assert files["t10k-images-idx3-ubyte"] == mirrors.idx_bytes(u8[2].reshape(-1, 28, 28))


def test_pickle_mirror_refuses_code():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    blob = gzip.compress(pickle.dumps(((Evil(), 1), (2, 3), (4, 5))))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        mirrors.mnist_from_pkl(blob)


def test_fashion_mirror_reads_gzipped_idx(tmp_path):
    arrays = _write_idx(tmp_path / "plain")
    for f in mirrors.IDX_FILES:
        (tmp_path / f"{f}.gz").write_bytes(gzip.compress((tmp_path / "plain" / f).read_bytes()))
    files = mirrors.fashion_from_dir(tmp_path)
    assert files["t10k-images-idx3-ubyte"] == mirrors.idx_bytes(arrays["t10k-images-idx3-ubyte"])


def test_prepare_reports_every_failed_source(tmp_path, monkeypatch):
    def fail(*_a, **_k):
        raise DatasetDownloadError("offline")

    monkeypatch.setattr(m, "_torchvision_download", fail)
    prepare = m._prepare_idx("mnist", [("mirror A", fail), ("mirror B", fail)])
    with pytest.raises(DatasetDownloadError) as e:
        prepare(tmp_path)
    msg = str(e.value)
    assert "torchvision download: offline" in msg and "mirror A" in msg and "mirror B" in msg


def test_digits_and_procedural(digits):
    assert digits.spec.image_size == (28, 28) and not digits.spec.allow_flip
    assert len(digits.train) == 1437 and len(digits.test) == 360
    assert abs(float(digits.train.images.mean())) < 0.01 and abs(float(digits.train.images.std()) - 1) < 0.01
    toy = load_dataset("procedural", num_classes=3, size=8, per_class=4)
    assert toy.train.images.shape == (12, 1, 8, 8)
    with pytest.raises(TypeError, match="valid options"):
        load_dataset("procedural", classes=3)


def test_realdata_sampling_is_per_class_distinct_and_seeded():
    labels = torch.arange(4).repeat_interleave(6)
    images = labels.float().view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    data = RealData(images, labels, 4)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = data.sample_indices(2, 4, g1)
    assert len(set(a.tolist())) == 4 and bool((labels[a] == 2).all())
    assert torch.equal(a, data.sample_indices(2, 4, g2))
    assert len(data.sample(1, 100)) == 6  # capped at the class size
    x, y = data.sample_classes(3, torch.Generator().manual_seed(1))
    assert y.tolist() == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 and torch.equal(x[:, 0, 0, 0], y.float())
    with pytest.raises(ValueError, match="fewer than 7"):
        data.sample_classes(7)


def test_every_registered_dataset_has_instructions():
    for name in DATASETS.names():
        entry = DATASETS.get(name)
        assert entry.instructions and callable(entry.load) and callable(entry.available)

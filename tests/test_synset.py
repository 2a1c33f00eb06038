import json

import pytest
import torch
from torch.utils.data import DataLoader

from datadistill.synset import (PixelSet, SynsetDataset, SynsetFileError, export_imagefolder, load_synset,
                                read_meta, save_synset, update_meta)
from datadistill.synset.io import META_KEY


def _set(toy, ipc=2, **kw):
    return PixelSet.from_real(toy.train, ipc, torch.Generator().manual_seed(0), **kw)


def test_pixelset_protocol(toy):
    s = _set(toy, ipc=3)
    assert s.ipc == 3 and len(s) == 9 and s.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert s.class_index(1).tolist() == [3, 4, 5]
    x, y = s(torch.tensor([4, 0]))
    assert y.tolist() == [1, 0] and x.requires_grad
    assert s.per_class().shape == (3, 3, 1, 12, 12)
    seen = torch.cat([y for _, y in s.batches(4, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == s.labels.tolist()
    assert s.storage_numel() == 9 * 144 and s.learned_lr() is None
    noise = PixelSet.from_noise(toy.spec, 2, torch.Generator().manual_seed(0))
    assert noise.images.shape == (6, 1, 12, 12)


def test_pixelset_rejects_unsorted_or_unbalanced_labels():
    with pytest.raises(ValueError, match="same positive number"):
        PixelSet(torch.zeros(3, 1, 2, 2), torch.tensor([0, 0, 1]), 2)
    with pytest.raises(ValueError, match="sorted by class"):
        PixelSet(torch.zeros(2, 1, 2, 2), torch.tensor([1, 0]), 2)


def test_file_round_trip_keeps_tensors_spec_and_metadata(toy, tmp_path):
    s = _set(toy, lr=0.02, learn_lr=True)
    path = save_synset(tmp_path / "set.safetensors", s, toy.spec, method="dm", seed=7,
                       evaluation={"convnet": {"acc_mean": 50.0}})
    f = load_synset(path)
    assert torch.equal(f.synset.images, s.images.detach()) and torch.equal(f.synset.labels, s.labels)
    assert f.spec == toy.spec and f.spec.to_dict() == toy.spec.to_dict()
    assert abs(f.synset.learned_lr() - 0.02) < 1e-7
    assert f.meta["method"] == "dm" and f.meta["seed"] == 7 and f.meta["ipc"] == 2
    assert f.meta["format_version"] == 1 and f.meta["storage_numel"] == s.storage_numel()
    assert f.meta["versions"]["torch"] == torch.__version__
    assert [p.name for p in tmp_path.iterdir()] == ["set.safetensors"]  # no temp file left behind
    # the file is safetensors: an 8-byte header length, then JSON, never a pickle
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert META_KEY in header["__metadata__"] and b"\x80\x04" not in raw[:2]
    meta = update_meta(path, evaluation={"lenet": {"acc_mean": 1.0}})
    assert read_meta(path)["evaluation"] == meta["evaluation"] == {"lenet": {"acc_mean": 1.0}}


def test_bad_files_give_clear_errors(tmp_path, toy):
    with pytest.raises(SynsetFileError, match="no such file"):
        load_synset(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file")
    with pytest.raises(SynsetFileError, match="not a safetensors file"):
        load_synset(junk)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(SynsetFileError, match="no datadistill metadata"):
        load_synset(tmp_path / "plain.safetensors")
    path = save_synset(tmp_path / "s.safetensors", _set(toy), toy.spec)
    update_meta(path, format_version=99)
    with pytest.raises(SynsetFileError, match="format version 99"):
        load_synset(path)


def test_dataset_view_and_imagefolder_export(toy, tmp_path):
    s = _set(toy)
    ds = SynsetDataset(s)
    x, y = next(iter(DataLoader(ds, batch_size=6)))
    assert x.shape == (6, 1, 12, 12) and y.tolist() == [0, 0, 1, 1, 2, 2]
    out = export_imagefolder(s, toy.spec, tmp_path / "tree")
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(out))
    assert len(folder) == 6 and folder.classes == ["0_class0", "1_class1", "2_class2"]
    assert [t for _, t in folder.samples] == [0, 0, 1, 1, 2, 2]


def test_export_never_mixes_trees_and_leaves_nothing_partial(toy, tmp_path, monkeypatch):
    from datadistill.paths import OutputPathError

    s, out = _set(toy), tmp_path / "tree"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match="tree is not empty; .* --overwrite"):
        export_imagefolder(s, toy.spec, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # untouched
    export_imagefolder(s, toy.spec, out, overwrite=True)  # replaced whole: nothing of the old folder is left
    assert sorted(p.name for p in out.iterdir()) == ["0_class0", "1_class1", "2_class2"]
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))

    import torchvision.utils

    calls = []

    def fail_third(x, path):  # the disk fills up half-way through
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(x, path)

    real = torchvision.utils.save_image
    monkeypatch.setattr(torchvision.utils, "save_image", fail_third)
    with pytest.raises(OSError, match="No space left"):
        export_imagefolder(s, toy.spec, out, overwrite=True)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before  # the last good tree, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]  # no temporary tree left beside it
    calls.clear()
    with pytest.raises(OSError, match="No space left"):
        export_imagefolder(s, toy.spec, tmp_path / "new", overwrite=True)
    assert not (tmp_path / "new").exists()


def test_every_set_declares_its_labels_and_schedule():
    """`SetFeatures`: callers ask a set what it has instead of probing attribute names."""
    from datadistill.studies.sets import MemorySet
    from datadistill.evaluation.evaluator import RealSet
    from datadistill.synset import FactorizedSet, SetFeatures, StepSet

    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 0, 1, 1])
    plain = PixelSet(x, y, 2)
    soft = PixelSet(x, y, 2, soft_labels=torch.rand(4, 2), label_loss="mse")
    assert plain.label_vectors() is None and soft.label_vectors().shape == (4, 2)
    assert soft.hard().label_vectors() is None and soft.label_loss == "mse" and not soft.has_schedule
    steps = StepSet(torch.randn(4, 1, 8, 8), 2, steps=2, epochs=1)
    assert steps.has_schedule and steps.label_vectors() is None and steps.hard() is steps
    assert MemorySet(x, y, torch.rand(4, 2)).label_vectors().shape == (4, 2)
    assert MemorySet(x, y).label_vectors() is None
    for cls in (PixelSet, StepSet, FactorizedSet, MemorySet, RealSet):
        assert issubclass(cls, SetFeatures) and "__len__" in dir(cls), cls  # every set counts its examples
    from datadistill.data.spec import RealData

    assert len(RealSet(RealData(torch.randn(6, 1, 8, 8), torch.tensor([0, 1] * 3), 2))) == 6

"""RDED: teacher-ranked crops of real images, stitched, with the teacher's soft labels."""

import pytest
import torch
import torch.nn.functional as F

from datadistill.config import ConfigError, RunConfig, from_dict
from datadistill.data import load_dataset
from datadistill.methods import METHODS, Context
from datadistill.methods.rded import (RDEDConfig, check_rded, rded_from_file, rded_synset, sample_boxes,
                                      select_class, stitch)
from datadistill.models import create_model
from datadistill.resolve import check_run
from datadistill.teachers import Teacher, load_teacher, save_teacher


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _teacher(spec, seed=0) -> Teacher:
    """An untrained tiny ConvNet: its ranking is as good as any for checking the selection."""
    net = create_model("convnet_w32", spec.channels, spec.num_classes, spec.image_size, seed=seed).eval()
    return Teacher(net, "convnet_w32", spec, {"test_accuracy": 0.1})


@pytest.fixture(scope="module")
def teacher_file(digits, tmp_path_factory):
    return str(save_teacher(tmp_path_factory.mktemp("t") / "digits.safetensors", _teacher(digits.spec)))


def _scores_by_hand(teacher, data, c, pool, boxes, factor):
    """Every candidate's loss, one crop at a time: slice, resize, pad, score."""
    H, W = data.spec.image_size
    h, w = H // factor, W // factor
    out = torch.empty(boxes.shape[:2])
    for i in range(boxes.shape[0]):
        for j in range(boxes.shape[1]):
            t, l, s = (int(v) for v in boxes[i, j])
            crop = F.interpolate(data.train.images[pool[i]][None, :, t : t + s, l : l + s], size=(h, w),
                                 mode="bilinear", align_corners=False)
            canvas = torch.zeros(1, data.spec.channels, H, W)
            canvas[..., (H - h) // 2 : (H - h) // 2 + h, (W - w) // 2 : (W - w) // 2 + w] = crop
            out[i, j] = F.cross_entropy(teacher.logits(canvas), torch.tensor([c]))
    return out


@pytest.mark.parametrize("factor", [1, 2])
def test_the_chosen_crops_are_the_teachers_most_confident(digits, factor):
    teacher, c, ipc = _teacher(digits.spec), 3, 2
    cfg = RDEDConfig(factor=factor, num_crop=3, mipc=12)
    sel = select_class(cfg, teacher.logits, digits, c, ipc, torch.Generator().manual_seed(5))
    # the candidates, drawn again in select_class's order from the same seed, scored independently
    g = torch.Generator().manual_seed(5)
    pool = digits.train.sample_indices(c, cfg.mipc, g)
    boxes = sample_boxes(pool.numel(), cfg.num_crop, digits.spec.image_size, (cfg.min_scale, cfg.max_scale), g)
    scores = _scores_by_hand(teacher, digits, c, pool, boxes, factor)
    best, col = scores.min(1)  # each image's key patch
    k = ipc * factor**2
    top = torch.argsort(best)[:k]
    assert set(sel.sources.tolist()) == set(pool[top].tolist())  # the k most confident images ...
    torch.testing.assert_close(sel.losses, best[top], atol=1e-4, rtol=1e-4)  # ... best first
    assert torch.equal(sel.boxes, boxes[top, col[top]])  # ... each through its best crop
    assert (sel.losses[:-1] <= sel.losses[1:]).all() and sel.images.shape == (ipc, 1, 28, 28)


def test_stitching_places_each_ranked_crop_in_its_tile():
    ipc, factor = 2, 2
    crops = torch.arange(ipc * factor**2, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 3, 3)
    img = stitch(crops, ipc, factor, (6, 6))
    assert img.shape == (ipc, 1, 6, 6)
    for i in range(ipc):
        for r in range(factor):
            for s in range(factor):
                tile = img[i, 0, 3 * r : 3 * r + 3, 3 * s : 3 * s + 3]
                assert (tile == (r * factor + s) * ipc + i).all()
    odd = stitch(crops, ipc, factor, (7, 7))  # 7 = 4 + 3: the first row and column of tiles are taller
    assert (odd[1, 0, :4, :4] == 1).all() and (odd[1, 0, 4:, 4:] == 7).all() and (odd[0, 0, :4, 4:] == 2).all()
    assert torch.equal(stitch(crops[:2], 2, 1, (3, 3)), crops[:2])  # factor 1: the crops themselves


def test_soft_labels_are_the_teachers_probabilities_of_the_stitched_images(digits, teacher_file):
    cfg = RDEDConfig(teacher=teacher_file, factor=2, num_crop=2, mipc=10, temperature=4.0)
    s = rded_synset(cfg, digits, 2, "real", torch.Generator().manual_seed(0))
    teacher = load_teacher(teacher_file)
    want = torch.softmax(teacher.logits(s.images.detach()) / 4.0, dim=1)
    torch.testing.assert_close(s.soft_labels, want)
    assert s.label_loss == "kl" and s.label_temperature == 4.0 and s.ipc == 2
    assert torch.equal(s.labels, torch.arange(10).repeat_interleave(2))
    x, y = s(torch.tensor([0, 5]))
    assert torch.equal(y, s.soft_labels[[0, 5]])


def test_a_seed_fixes_the_set(digits, teacher_file):
    cfg = RDEDConfig(teacher=teacher_file, num_crop=2, mipc=8)
    a, b, c = (rded_synset(cfg, digits, 1, "real", torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a.images, b.images) and torch.equal(a.soft_labels, b.soft_labels)
    assert not torch.equal(a.images, c.images)


def test_a_missing_unreadable_or_foreign_teacher_is_refused_by_name(digits, teacher_file, tmp_path):
    ctx = Context(data=digits, synset=None, device=torch.device("cpu"), generator=torch.Generator(), seed=0, ipc=1)
    check_rded(RDEDConfig(teacher=teacher_file), ctx)  # fits
    with pytest.raises(ConfigError, match="rded needs a teacher.*datadistill teacher --dataset digits"):
        check_rded(RDEDConfig(), ctx)
    with pytest.raises(ConfigError, match="no teacher file at .*nope.*datadistill teacher --dataset digits"):
        check_rded(RDEDConfig(teacher=str(tmp_path / "nope.safetensors")), ctx)
    (tmp_path / "bad.safetensors").write_bytes(b"not a teacher")
    with pytest.raises(ConfigError, match="rded: .*bad.safetensors is not a readable safetensors file"):
        check_rded(RDEDConfig(teacher=str(tmp_path / "bad.safetensors")), ctx)
    other = load_dataset("procedural", num_classes=3, size=12, per_class=8)
    path = save_teacher(tmp_path / "proc.safetensors", _teacher(other.spec))
    with pytest.raises(ConfigError, match="does not fit this data .*dataset: teacher 'procedural' vs data 'digits'"):
        check_rded(RDEDConfig(teacher=str(path)), ctx)
    # and through the run's up-front checks, before any folder exists
    with pytest.raises(ConfigError, match="does not fit"):
        check_run(from_dict(RunConfig, {"method": "rded", "dataset": "digits", "ipc": 1,
                                        "method_config": {"teacher": str(path)}}))


def test_config_ranges_and_registration():
    for bad in ({"factor": 0}, {"mipc": 0}, {"num_crop": 0}, {"min_scale": 0.0}, {"min_scale": 0.9, "max_scale": 0.5},
                {"temperature": 0.0}):
        with pytest.raises(ConfigError, match="rded"):
            RDEDConfig(**bad)
    entry = METHODS.get("rded")
    assert entry.iterations == 0 and entry.image_inits == ("real",)


def test_a_file_asks_for_its_teacher_when_it_exists(teacher_file, tmp_path):
    meta = {"method": "rded", "method_config": {"temperature": 20.0}, "teacher": {"path": teacher_file}}
    how = rded_from_file(meta, None)
    assert how.protocol == {"labels": "teacher", "teacher": teacher_file, "label_loss": "kl", "label_temperature": 20.0}
    meta["teacher"]["path"] = str(tmp_path / "gone.safetensors")
    assert rded_from_file(meta, None).protocol["labels"] == "soft"

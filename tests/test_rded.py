"""RDED: teacher-ranked crops of real images, stitched, with the teacher's soft labels."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadistill.config import ConfigError, RunConfig, from_dict
from datadistill.data import load_dataset
from datadistill.evaluation import get_protocol
from datadistill.evaluation.labels import label_plan
from datadistill.methods import METHODS, Context
from datadistill.methods.rded import (RDEDConfig, check_floor, check_rded, crop_resize, rded_from_file,
                                      select_rded, sample_boxes, select_class, stitch)
from datadistill.models import create_model
from datadistill.resolve import check_run, resolve
from datadistill.synset import PixelSet, read_meta, save_synset
from datadistill.teachers import Teacher, load_teacher, save_teacher
from datadistill.viz import save_grid


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
    s = select_rded(cfg, digits, 2, "real", torch.Generator().manual_seed(0)).synset
    teacher = load_teacher(teacher_file)
    want = torch.softmax(teacher.logits(s.images.detach()) / 4.0, dim=1)
    torch.testing.assert_close(s.soft_labels, want)
    assert s.label_loss == "kl" and s.label_temperature == 4.0 and s.ipc == 2
    assert torch.equal(s.labels, torch.arange(10).repeat_interleave(2))
    x, y = s(torch.tensor([0, 5]))
    assert torch.equal(y, s.soft_labels[[0, 5]])


def test_a_seed_fixes_the_set(digits, teacher_file):
    cfg = RDEDConfig(teacher=teacher_file, num_crop=2, mipc=8)
    a, b, c = (select_rded(cfg, digits, 1, "real", torch.Generator().manual_seed(s)).synset for s in (1, 1, 2))
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
    meta = {"method": "rded", "method_config": {"temperature": 20.0, "factor": 2}, "teacher": {"path": teacher_file}}
    how = rded_from_file(meta, None)
    # the loss stays the protocol's: KL (T^2-scaled) on `dc`, the reference's unscaled KL on `rded-paper`
    assert how.protocol == {"labels": "teacher", "teacher": teacher_file, "label_temperature": 20.0, "rded_factor": 2}
    for preset, loss in (("dc", "kl"), ("rded-paper", "kl_unscaled")):
        p = get_protocol(preset).with_(**how.protocol)
        digits = load_dataset("digits")
        one = PixelSet(digits.train.images[:10], torch.arange(10), 10)
        assert label_plan(one, p, digits.spec).info["label_loss"] == loss
    meta["teacher"]["path"] = str(tmp_path / "gone.safetensors")
    assert rded_from_file(meta, None).protocol["labels"] == "soft"


def test_a_run_on_rded_paper_relabels_with_its_own_teacher(teacher_file):
    """rded-paper relabels with a teacher; a run that names none gets the method's own (resolve)."""
    base = {"dataset": "digits", "method": "rded", "ipc": 1, "iterations": 0,
            "method_config": {"teacher": teacher_file}}
    res = resolve(from_dict(RunConfig, {**base, "eval": {"preset": "rded-paper"}}))
    assert (res.protocol.labels.mode, res.protocol.labels.teacher) == ("teacher", teacher_file)
    res = resolve(from_dict(RunConfig, {**base, "eval": {"preset": "rded-paper", "labels": "soft"}}))
    assert res.protocol.labels.teacher is None  # told otherwise: no teacher slipped in


# ------------------------------------------------------------------------------------ crop-scale floor, crop records
@pytest.mark.parametrize("floor", [0.08, 0.3, 0.5])
def test_every_chosen_box_respects_the_crop_scale_floor(digits, floor):
    H, W = digits.spec.image_size
    boxes = sample_boxes(500, 5, (H, W), (floor, 1.0), torch.Generator().manual_seed(0))
    assert (boxes[..., 2] ** 2 >= floor * H * W).all()
    # the floor is reached, not kept away from: the smallest side is the smallest one that covers it
    # (at 0.3 torchvision's rounding would give 15 x 15 = 225 < 0.3 * 784 = 235.2)
    assert int(boxes[..., 2].min()) == math.ceil(math.sqrt(floor * H * W))
    sel = select_class(RDEDConfig(factor=2, num_crop=3, mipc=12, min_scale=floor), _teacher(digits.spec).logits,
                       digits, 4, 2, torch.Generator().manual_seed(1))
    assert (sel.boxes[:, 2] ** 2 >= floor * H * W).all() and (sel.boxes[:, :2] + sel.boxes[:, 2:] <= H).all()


@pytest.mark.parametrize("factor", [1, 2])
def test_the_crops_round_trip_through_the_file_and_rebuild_the_images(digits, teacher_file, tmp_path, factor):
    cfg = RDEDConfig(teacher=teacher_file, factor=factor, num_crop=2, mipc=10, min_scale=0.25)
    chosen = select_rded(cfg, digits, 2, "real", torch.Generator().manual_seed(3))
    s, meta = chosen.synset, chosen.meta  # the set and what its file records (teacher, crops)
    path = save_synset(tmp_path / "rded.safetensors", s, digits.spec, method="rded", **meta)
    crops = read_meta(path)["crops"]
    assert crops == meta["crops"] and len(crops["image"]) == 10 * 2 * factor**2
    H, W = digits.spec.image_size
    for n, src, (t, l, h, w), (pt, pl, ph, pw) in zip(crops["image"], crops["source"], crops["box"], crops["place"]):
        assert int(digits.train.labels[src]) == int(s.labels[n])  # a crop of its own class
        assert h == w and h * w >= 0.25 * H * W and (ph, pw) == (H // factor, W // factor)
        # the recorded box of the recorded image, resized, is what the set holds at the recorded place
        crop = crop_resize(digits.train.images[src][None], torch.tensor([[[t, l, h]]]), (ph, pw))[0, 0]
        torch.testing.assert_close(s.images[n, :, pt : pt + ph, pl : pl + pw], crop)
    per_image = torch.bincount(torch.tensor(crops["image"]))
    assert (per_image == factor**2).all()  # every tile of every image is recorded once
    assert len(set(crops["source"])) == len(crops["source"])  # one crop per real image


def test_the_grid_draws_each_image_beside_its_crops_sources(digits, teacher_file, tmp_path):
    from PIL import Image

    cfg = RDEDConfig(teacher=teacher_file, factor=2, num_crop=2, mipc=10)
    chosen = select_rded(cfg, digits, 2, "real", torch.Generator().manual_seed(0))
    s, crops = chosen.synset, chosen.meta["crops"]
    plain = Image.open(save_grid(s, digits.spec, tmp_path / "plain.png"))
    drawn = Image.open(save_grid(s, digits.spec, tmp_path / "crops.png", crops=crops, sources=digits.train.images))
    # 2 images per class, each followed by its 4 sources: 10 cells a row, each drawn >= 48 pixels wide
    assert drawn.size[0] >= 10 * 48 and drawn.size[1] >= 10 * 48 and drawn.size[0] > 4 * plain.size[0]
    # the outlines: the images are grey, so every coloured pixel is a box's; each is nearest one of
    # tab10's first four colours (one per tile), and none the fifth
    rgb = np.asarray(drawn.convert("RGB")).reshape(-1, 3).astype(float)
    coloured = rgb[rgb.max(1) - rgb.min(1) > 80]
    palette = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)], float)
    counts = np.bincount(((coloured[:, None] - palette[None]) ** 2).sum(-1).argmin(1), minlength=5)
    assert (counts[:4] > 20 * 2 * 10).all() and counts[4] < counts[:4].min() / 20, counts
    # without the sources (data not at hand) the plain grid is drawn
    assert Image.open(save_grid(s, digits.spec, tmp_path / "nosrc.png", crops=crops)).size == plain.size


@pytest.mark.parametrize("bad, message", [
    ({"min_scale": 0.0}, "min_scale (the smallest crop area, a fraction of the image) must be in (0, 1], got 0.0"),
    ({"min_scale": -0.2}, "must be in (0, 1], got -0.2"),
    ({"min_scale": 1.5}, "must be in (0, 1], got 1.5"),
    ({"min_scale": float("nan")}, "got nan"),
    ({"min_scale": 0.6, "max_scale": 0.5}, "max_scale must be in [min_scale, 1] = [0.6, 1], got 0.5"),
])
def test_a_bad_crop_scale_floor_is_one_line(bad, message):
    with pytest.raises(ConfigError) as e:
        resolve(from_dict(RunConfig, {"method": "rded", "dataset": "digits", "ipc": 1, "method_config": bad}))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_floor_beyond_the_shorter_side_is_refused():
    check_floor(RDEDConfig(min_scale=0.5), (12, 24))  # a 12 x 12 crop is half of 12 x 24
    with pytest.raises(ConfigError, match=r"min_scale=0.9 asks for square crops of at least 17 pixels a side, more "
                                          r"than this 12x24 image's shorter side; lower min_scale$"):
        check_floor(RDEDConfig(min_scale=0.9), (12, 24))


def test_a_run_stores_its_crops_and_draws_them_on_its_grid(tiny_teacher, tmp_path):
    from PIL import Image

    from datadistill.engine import run
    from datadistill.synset import load_synset

    cfg = from_dict(RunConfig, {
        "dataset": "procedural", "dataset_options": {"num_classes": 3, "size": 12, "per_class": 24},
        "method": "rded", "ipc": 2, "iterations": 0, "method_config": {"teacher": tiny_teacher, "num_crop": 2},
        "eval": {"preset": "smoke", "epochs": 1, "n_models": 1, "model": "convnet_w32"}})
    run(cfg, tmp_path / "r", progress=False, log=lambda *_: None)
    f = load_synset(tmp_path / "r" / "distilled.safetensors")
    crops = f.meta["crops"]
    assert sorted(crops["image"]) == [0, 1, 2, 3, 4, 5] and all(len(b) == 4 for b in crops["box"])
    plain = save_grid(f.synset, f.spec, tmp_path / "plain.png")
    # the run's grid: 2 images per class, each beside its source (2 x 2 cells a row), not the plain grid
    assert Image.open(tmp_path / "r" / "grid.png").size[0] > 3 * Image.open(plain).size[0]

"""The paper presets reproduce the reference evaluators' schedules step by step (without training for
long): passes run, the lr of every pass, the optimizer restart at the decay, the augmentation's ops."""

import pytest
import torch
import torch.nn.functional as F

from datadistill.augment import DSAConfig, apply, sample_params
from datadistill.data import load_dataset
from datadistill.evaluation import evaluate, get_protocol
from datadistill.evaluation.evaluator import dsa_augment
from datadistill.synset import PixelSet


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def reference_lrs(epochs: int, lr: float = 0.01) -> list[float]:
    """The DC/DSA/DM ``evaluate_synset`` loop, written out: ``for ep in range(Epoch+1)``: train one
    pass at ``lr``, then ``if ep in [Epoch//2+1]: lr *= 0.1`` (and a new optimizer)."""
    out = []
    for ep in range(epochs + 1):
        out.append(lr)
        if ep in [epochs // 2 + 1]:
            lr *= 0.1
    return out


class SpySGD(torch.optim.SGD):
    """Records every optimizer built and the lr and momentum-buffer state of every step."""

    built: list["SpySGD"] = []
    steps: list[tuple[int, float, bool]] = []  # (which optimizer, lr, momentum buffers existed before)

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        SpySGD.built.append(self)

    def step(self, closure=None):
        had = any("momentum_buffer" in self.state[p] for g in self.param_groups for p in g["params"])
        SpySGD.steps.append((SpySGD.built.index(self), self.param_groups[0]["lr"], had))
        return super().step(closure)


def _run(monkeypatch, data, protocol):
    SpySGD.built, SpySGD.steps = [], []
    monkeypatch.setattr(torch.optim, "SGD", SpySGD)
    g = torch.Generator().manual_seed(0)
    s = PixelSet.from_real(data.train, 2, g)  # 20 images: one batch per pass
    return evaluate(s, data, protocol, model="convnet_w32")


@pytest.mark.parametrize("epochs", [6, 7, 10])
def test_paper_schedule_runs_epochs_plus_one_passes_and_restarts_the_optimizer_at_the_decay(monkeypatch, digits, epochs):
    p = get_protocol("dsa-paper", epochs=epochs, n_models=1, augment="none")
    _run(monkeypatch, digits, p)
    lrs = [lr for _, lr, _ in SpySGD.steps]
    assert lrs == pytest.approx(reference_lrs(epochs))
    assert len(SpySGD.built) == 2  # the first optimizer, and the new one at the decay
    first_new = [i for i, (k, _, _) in enumerate(SpySGD.steps) if k == 1][0]
    assert first_new == epochs // 2 + 2  # the pass after ``ep == Epoch//2 + 1``
    assert SpySGD.steps[first_new][2] is False  # its momentum starts from zero
    assert SpySGD.steps[first_new - 1][2] is True  # while the old one had built up momentum


def test_our_dsa_preset_keeps_its_plain_step_schedule(monkeypatch, digits):
    p = get_protocol("dsa", epochs=6, n_models=1, augment="none")
    _run(monkeypatch, digits, p)
    assert [lr for _, lr, _ in SpySGD.steps] == pytest.approx([0.01] * 3 + [0.001] * 3)
    assert len(SpySGD.built) == 1


def test_paper_presets_fields():
    dsa, mtt, dm = get_protocol("dsa-paper"), get_protocol("mtt-paper"), get_protocol("dm-paper")
    assert dm == dsa  # DM's code evaluates as DSA's
    for p in (dsa, mtt):
        assert (p.epochs, p.train_epochs, p.milestones) == (1000, 1001, (502,))
        assert (p.lr, p.momentum, p.weight_decay, p.batch_size) == (0.01, 0.9, 5e-4, 256)
        assert p.augment == "dsa" and p.dsa_strategy == "color_crop_cutout_flip_scale_rotate" and p.dsa_flip_all
    assert mtt.use_learned_lr and mtt.dsa_align_corners and not dsa.dsa_align_corners


def test_paper_dsa_flips_digits_and_ours_does_not(digits):
    assert not digits.spec.allow_flip
    x = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 1, 28, 28).repeat(32, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    ours, paper = dsa_augment(digits.spec, "flip"), dsa_augment(digits.spec, "flip", flip_all=True)
    assert torch.equal(ours(x, g), x)
    out = paper(x, g)
    flipped = [bool(torch.equal(o, xi.flip(2))) for o, xi in zip(out, x)]
    assert 0 < sum(flipped) < len(flipped)  # each sample flips with probability 0.5
    assert all(f or torch.equal(o, xi) for f, o, xi in zip(flipped, out, x))


def test_paper_dsa_draws_one_op_per_batch_with_per_sample_parameters(digits):
    cfg = DSAConfig(op_choice="per_batch")
    for seed in range(5):
        p = sample_params(cfg, 16, torch.Generator().manual_seed(seed), (28, 28), allow_flip=True)
        assert (p.active.sum(1) == 1).all() and (p.active == p.active[0]).all()  # one op, the same for all
        assert p.angle.unique().numel() == 16 and p.scale.unique().numel() > 16  # drawn per sample


def test_align_corners_as_mtt_code_samples(digits):
    """``align_corners=True`` scales about the corner pixels' centres, as ``F.affine_grid(...,
    align_corners=True)`` with the reference's ``[[sx, 0, 0], [0, sy, 0]]``."""
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    cfg_t, cfg_f = DSAConfig(strategy="scale", align_corners=True), DSAConfig(strategy="scale")
    p = sample_params(cfg_t, 3, torch.Generator().manual_seed(2), (28, 28))
    theta = torch.zeros(3, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = p.scale[:, 0], p.scale[:, 1]
    want = F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=True), align_corners=True)
    torch.testing.assert_close(apply(x, p, cfg_t), want)
    assert not torch.allclose(apply(x, p, cfg_f), want)


def test_dc_paper_follows_the_dc_codes_augmentation_rule():
    p = get_protocol("dc-paper")
    assert (p.reference_schedule, p.augment, p.epochs, p.epochs_augmented) == (True, "dc", 300, 1000)
    mnist, fmnist = p.resolved("mnist", "convnet"), p.resolved("fashion_mnist", "convnet")
    assert (mnist.dc_strategy, mnist.train_epochs, mnist.milestones) == ("crop_scale_rotate", 1001, (502,))
    assert (fmnist.dc_strategy, fmnist.train_epochs, fmnist.milestones) == ("none", 301, (152,))
    assert p.resolved("fashion_mnist", "convnet_bn").dc_strategy == "crop_noise"  # BatchNorm wins
    assert p.resolved("mnist", "convnet_bn").dc_strategy == "crop_noise"


def test_dc_paper_runs_its_resolved_schedule(monkeypatch, digits):
    p = get_protocol("dc-paper", epochs=4, n_models=1)
    rep = _run(monkeypatch, digits, p)
    assert len(SpySGD.steps) == 5 and len(SpySGD.built) == 2  # digits: no augmentation, epochs + 1 passes
    assert rep.protocol.dc_strategy == "none"


def test_classic_augmentation_ops():
    from datadistill.augment import ClassicAugment

    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    mean = x.mean()
    out = ClassicAugment("crop")(x, g)
    pad = torch.full((12, 1, 36, 36), float(mean))
    pad[:, :, 4:32, 4:32] = x
    for o, pi in zip(out, pad):  # each image is one 28x28 window at an offset in 0..7 of the padded canvas
        assert any(torch.equal(o, pi[:, r : r + 28, c : c + 28]) for r in range(8) for c in range(8))
    out = ClassicAugment("noise")(x, g)
    assert 0.0005 < float((out - x).std()) < 0.002
    out = ClassicAugment("scale")(x, g)
    assert out.shape == x.shape and not torch.equal(out, x)
    from scipy.ndimage import rotate

    out = ClassicAugment("rotate")(x[:2], g)
    for o, xi in zip(out, x[:2]):  # an integer angle in [-45, 45), the centre of the grown canvas
        def rot(a):
            r = rotate(xi.numpy(), angle=a, axes=(-2, -1), cval=float(x[:2].mean()))
            k, j = (r.shape[-2] - 28) // 2, (r.shape[-1] - 28) // 2
            return torch.from_numpy(r[:, k : k + 28, j : j + 28])
        assert any(torch.allclose(o, rot(a), atol=1e-5) for a in range(-45, 45))
    with pytest.raises(ValueError, match="valid: crop, scale, rotate, noise"):
        ClassicAugment("crop_flip")

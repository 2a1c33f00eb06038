"""The paper presets reproduce the reference evaluators' schedules step by step (without training for
long): passes run, the lr of every pass, the optimizer restart at the decay, the augmentation's ops."""

import pytest
import torch
import torch.nn.functional as F

from datadistill.augment import DSAConfig, apply, sample_params
from datadistill.data import load_dataset
from datadistill.evaluation import Labels, Optimizer, evaluate, get_protocol
from datadistill.augment.training import dsa_augment
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
        s, o, a = p.schedule, p.optimizer, p.augment
        assert (s.epochs, s.train_epochs, s.milestones) == (1000, 1001, (502,))
        assert (o.lr, o.momentum, o.weight_decay, p.batch_size) == (0.01, 0.9, 5e-4, 256)
        assert a.name == "dsa" and a.dsa_strategy == "color_crop_cutout_flip_scale_rotate" and a.flip_all
    assert mtt.optimizer.use_learned_lr and mtt.augment.align_corners and not dsa.augment.align_corners


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
    f = p.to_dict()
    assert (f["reference_schedule"], f["augment"], f["epochs"], f["epochs_augmented"]) == (True, "dc", 300, 1000)
    mnist, fmnist = p.resolved("mnist", "convnet"), p.resolved("fashion_mnist", "convnet")
    for r, want in ((mnist, ("crop_scale_rotate", 1001, (502,))), (fmnist, ("none", 301, (152,)))):
        assert (r.augment.dc_strategy, r.schedule.train_epochs, r.schedule.milestones) == want
    assert p.resolved("fashion_mnist", "convnet_bn").augment.dc_strategy == "crop_noise"  # BatchNorm wins
    assert p.resolved("mnist", "convnet_bn").augment.dc_strategy == "crop_noise"


def test_dc_paper_runs_its_resolved_schedule(monkeypatch, digits):
    p = get_protocol("dc-paper", epochs=4, n_models=1)
    rep = _run(monkeypatch, digits, p)
    assert len(SpySGD.steps) == 5 and len(SpySGD.built) == 2  # digits: no augmentation, epochs + 1 passes
    assert rep.protocol.augment.dc_strategy == "none"


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


# ------------------------------------------------------------------ frepo-paper, rded-paper, haba-paper
# Each preset is pinned to the numbers of the authors' code: FRePo's script/eval.py (yongchao97/FRePo),
# RDED's validation/main.py and argument.py (LINs-lab/RDED), HaBa's utils.evaluate_synset/epoch
# (Huage001/DatasetFactorization).
import math  # noqa: E402
from dataclasses import replace  # noqa: E402

from datadistill.config import ConfigError  # noqa: E402
from datadistill.evaluation import PROTOCOLS  # noqa: E402
from datadistill.evaluation.augments import build_augment  # noqa: E402
from datadistill.evaluation.evaluator import standardized_test  # noqa: E402
from datadistill.evaluation.labels import label_plan  # noqa: E402
from datadistill.models import create_model  # noqa: E402


def frepo_reference_lr(t: int, total: int, lr: float = 3e-4, warmup: int = 500, alpha: float = 0.01) -> float:
    """optax.join_schedules([linear_schedule(0, lr, warmup), cosine_decay_schedule(lr, total - warmup,
    alpha)], [warmup]) at update count ``t``, written out."""
    if t < warmup:
        return lr * t / warmup
    d = max(total - warmup, 1)
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * min(t - warmup, d) / d)) + alpha)


class SpyOpt:
    """Records the optimizer class, its param groups and the lr of every step."""

    steps: list[float] = []
    built: list[torch.optim.Optimizer] = []

    @staticmethod
    def install(monkeypatch, name):
        base = getattr(torch.optim, name)

        class Spy(base):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                SpyOpt.built.append(self)

            def step(self, closure=None):
                SpyOpt.steps.append(self.param_groups[0]["lr"])
                return super().step(closure)

        SpyOpt.steps, SpyOpt.built = [], []
        monkeypatch.setattr(torch.optim, name, Spy)


def _set(data, ipc=2):
    return PixelSet.from_real(data.train, ipc, torch.Generator().manual_seed(0))


def test_frepo_paper_fields_follow_frepo_eval_py():
    p = get_protocol("frepo-paper")
    f = p.to_dict()
    assert (f["optimizer"], f["lr"], f["weight_decay"]) == ("adam", 3e-4, 0.0)  # optax.adam: no weight decay
    assert (f["lr_schedule"], f["warmup_steps"], f["lr_final"], f["cosine_fraction"]) == ("cosine", 500, 0.01, 1.0)
    assert (p.batch_size, p.n_models, p.augment.name) == (500, 5, "frepo")
    assert p.labels == Labels(loss="sse_half", encoding="frepo")  # labels auto
    assert (p.model, p.weight_init) == ("convnet_frepo_eval", "lecun")
    # step_per_prototpyes of script/eval.py, keyed by the number of images
    want = {10: 1000, 100: 2000, 200: 20000, 400: 5000, 500: 5000, 1000: 10000, 2000: 40000, 5000: 40000}
    assert {n: p.sized(n).schedule.steps for n in want} == want
    assert p.sized(10).schedule.milestones == ()  # no step decay: the cosine is the whole schedule
    with pytest.raises(ConfigError, match="a set of 20 images needs steps=N"):
        p.sized(20)
    assert p.with_(steps=7).sized(20).schedule.steps == 7  # an explicit length wins over the table
    o = p.sized(10).optim(p.optimizer.lr)  # 10 images: 1000 steps
    for t in (0, 1, 250, 499, 500, 501, 750, 999):
        assert o.lr_at(t, 0) == pytest.approx(frepo_reference_lr(t, 1000), rel=1e-12, abs=1e-15), t
    assert o.lr_at(0, 0) == 0.0 and o.lr_at(500, 0) == pytest.approx(3e-4)


def test_frepo_eval_network_is_conv_128_256_512_without_norm():
    net = create_model("convnet_frepo_eval", 3, 10, (32, 32))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [128, 256, 512]
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm, torch.nn.LayerNorm)) for m in net.modules())
    assert net.classifier.in_features == 512 * 4 * 4


def test_frepo_paper_loss_is_half_the_summed_squared_error_on_its_label_encoding(digits):
    s = _set(digits)
    plan = label_plan(s, get_protocol("frepo-paper"), digits.spec)
    z = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 3, 9, 3])
    enc = F.one_hot(y, 10).float() - 0.1  # (e_c - 1/C) / sqrt(C/10), C = 10
    torch.testing.assert_close(plan.loss(z, y), 0.5 * ((z - enc) ** 2).sum(1))
    soft = torch.randn(4, 10, generator=torch.Generator().manual_seed(1))  # a FRePo set's learned labels
    torch.testing.assert_close(plan.loss(z, soft), 0.5 * ((z - soft) ** 2).sum(1))
    plain = label_plan(s, get_protocol("dc", label_loss="sse_half"), digits.spec)
    torch.testing.assert_close(plain.loss(z, y), 0.5 * ((z - F.one_hot(y, 10).float()) ** 2).sum(1))


def test_frepo_paper_runs_its_adam_warmup_cosine_steps(monkeypatch, digits):
    SpyOpt.install(monkeypatch, "Adam")
    p = get_protocol("frepo-paper", steps=7, warmup_steps=3, n_models=1, model="convnet_w32")
    rep = evaluate(_set(digits), digits, p)  # 20 images: one batch of 20 per pass
    assert len(SpyOpt.built) == 1 and SpyOpt.built[0].defaults["weight_decay"] == 0.0
    assert SpyOpt.built[0].defaults["betas"] == (0.9, 0.999) and SpyOpt.built[0].defaults["eps"] == 1e-8
    assert SpyOpt.steps == pytest.approx([frepo_reference_lr(t, 7, warmup=3) for t in range(7)])
    assert rep.protocol.schedule.steps == 7 and rep.extra["labels"]["label_encoding"] == "frepo"


def test_frepo_paper_takes_its_steps_from_the_table(monkeypatch, digits):
    SpyOpt.install(monkeypatch, "Adam")
    p = get_protocol("frepo-paper", n_models=1, model="convnet_w32", warmup_steps=2,
                     steps_by_size=[[10, 3], [100, 50]])
    rep = evaluate(_set(digits, ipc=1), digits, p)
    assert len(SpyOpt.steps) == 3 and rep.protocol.schedule.steps == 3
    with pytest.raises(ConfigError, match="needs steps=N"):
        evaluate(_set(digits, ipc=2), digits, p)


def test_frepo_augmentation_ops_and_strategy(digits):
    from datadistill.augment.frepo import FRePoParams, apply, sample_params

    p = get_protocol("frepo-paper")
    assert build_augment(digits.spec, p).strategy == "color_crop_rotate_translate_cutout"  # no flip on digits
    fmnist = replace(digits.spec, name="fashion_mnist", allow_flip=True)
    assert build_augment(fmnist, p).strategy == "color_crop_rotate_translate_cutout"  # FRePo's rule
    cifar = replace(digits.spec, name="cifar10", allow_flip=True)
    assert build_augment(cifar, p).strategy == "flip_color_crop_rotate_translate_cutout"
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    one = torch.ones(3, 1)
    # geometric ops resample about the centre, pixel centres on integers, edges repeated
    shifted = apply(x, FRePoParams("translate", torch.cat([one, 0 * one], 1)))
    torch.testing.assert_close(shifted[:, :, 1:], x[:, :, :-1])
    torch.testing.assert_close(shifted[:, :, 0], x[:, :, 0])
    torch.testing.assert_close(apply(x, FRePoParams("rotate", one * math.pi / 2)), torch.rot90(x, 1, (-2, -1)),
                               atol=1e-5, rtol=0)
    cropped = apply(x, FRePoParams("crop", torch.cat([one, one, 0 * one], 1)))  # zoom 1, centre one row down
    torch.testing.assert_close(cropped[:, :, :-1], x[:, :, 1:])
    holes = apply(x, FRePoParams("cutout", torch.tensor([[0.0, 0.0], [6.0, 6.0], [3.0, 1.0]])))
    assert (holes == 0).sum() == 3 * 2 * 2 * 2 and torch.equal(holes[2, :, 3:5, 1:3], torch.zeros(2, 2, 2))
    v = torch.tensor([[0.1, 1.2, 0.9]]).repeat(3, 1)
    b = x + 0.1
    c = (b - b.mean((1, 2, 3), keepdim=True)) * 1.2 + b.mean((1, 2, 3), keepdim=True)
    want = (c - c.mean(1, keepdim=True)) * 0.9 + c.mean(1, keepdim=True)
    torch.testing.assert_close(apply(x, FRePoParams("color", v)), want)
    g = torch.Generator().manual_seed(0)
    ops, lims = set(), {"rotate": 0.0, "translate": 0.0}
    for _ in range(200):
        q = sample_params("color_crop_rotate_translate_cutout", 16, (28, 28), g)
        ops.add(q.op)
        if q.op == "crop":
            z = q.values[:, 0]
            assert ((z >= 0.8 - 1e-6) & (z <= 1.25 + 1e-6)).all()
            assert (q.values[:, 1].abs() <= (28 * z - 28).abs() / 2 + 1e-5).all()
        if q.op in lims:
            lims[q.op] = max(lims[q.op], float(q.values.abs().max()))
        if q.op == "cutout":
            assert q.values.min() >= 0 and q.values.max() <= 28 - 7
    assert ops == {"color", "crop", "rotate", "translate", "cutout"}  # one op per batch, drawn uniformly
    assert math.radians(10) < lims["rotate"] <= math.radians(15) and 2.5 < lims["translate"] <= 3.5


def test_rded_paper_fields_follow_rded_validation():
    p = PROTOCOLS.get("rded-paper")  # its teacher comes with the run: get_protocol(..., teacher=PATH)
    assert p.optimizer == Optimizer("adamw", lr=1e-3, weight_decay=0.01, decay_only_weights=True)
    assert (p.schedule.epochs, p.batch_size, p.augment.name, p.augment.rded_factor, p.model) == (
        300, 50, "rded", 1, "convnet_bn")
    assert p.labels == Labels("teacher", loss="kl_unscaled", temperature=20.0)
    s = p.schedule
    assert (s.decay, s.cosine_fraction, s.lr_final, s.warmup_steps) == ("cosine_epoch", 0.5, 0.0, 0)
    # their LambdaLR stepped once per epoch: 0.5 * (1 + cos(pi * step / re_epochs / 2))
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([w], lr=1e-3)
    ref = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / 300 / 2)) if s <= 300
                                            else 0)
    o = p.optim(p.optimizer.lr)
    for epoch in range(300):
        assert o.lr_at(123, epoch) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12), epoch
        opt.step()
        ref.step()
    assert o.lr_at(0, 299) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 299 / 600)))


def test_rded_paper_decays_only_weight_tensors_as_get_parameters():
    net = create_model("convnet_bn", 3, 10, (32, 32))
    opt = PROTOCOLS.get("rded-paper").optim(1e-3).build(list(net.named_parameters()))
    decay, rest = opt.param_groups
    want = [p for n, p in net.named_parameters() if "weight" in n and p.ndim > 1]  # RDED's get_parameters
    assert [id(p) for p in decay["params"]] == [id(p) for p in want] and decay["weight_decay"] == 0.01
    assert rest["weight_decay"] == 0.0 and len(rest["params"]) == len(list(net.parameters())) - len(want)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.999)


def test_kl_unscaled_is_kldivloss_batchmean():
    from datadistill.functional.labels import per_sample_loss

    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    p = F.softmax(t / 20, 1)
    want = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(z / 20, 1), p)
    torch.testing.assert_close(per_sample_loss("kl_unscaled", z, p, 20.0).mean(), want)
    torch.testing.assert_close(per_sample_loss("kl", z, p, 20.0).mean(), 400 * want)


def test_rded_augmentation_crop_flip_and_cutmix():
    from datadistill.augment.rded import RDEDAugment, cutmix, sample_crop, sample_cutmix, shuffle_patches

    g = torch.Generator().manual_seed(0)
    assert all(sample_crop(32, 32, (1.0, 1.0), g) == (0, 0, 32, 32) for _ in range(50))  # factor 1: whole image
    for _ in range(50):
        top, left, h, w = sample_crop(32, 32, (0.5, 1.0), g)
        assert 0.5 * 1024 * 0.9 <= h * w <= 1024 and 3 / 4 - 0.1 <= w / h <= 4 / 3 + 0.1
        assert 0 <= top <= 32 - h and 0 <= left <= 32 - w
    img = torch.arange(16.0).view(1, 4, 4)
    tiles = {tuple(t.flatten().tolist()) for t in img.unfold(1, 2, 2).unfold(2, 2, 2).reshape(4, 2, 2)}
    out = shuffle_patches(img, 2, g)
    assert {tuple(t.flatten().tolist()) for t in out.unfold(1, 2, 2).unfold(2, 2, 2).reshape(4, 2, 2)} == tiles
    x = torch.randn(8, 1, 12, 12, generator=g)
    perm, (r1, r2, c1, c2) = sample_cutmix(8, 12, 12, g)
    mixed = cutmix(x, perm, (r1, r2, c1, c2))
    inside = torch.zeros(12, 12, dtype=torch.bool)
    inside[r1:r2, c1:c2] = True
    assert torch.equal(mixed[:, :, ~inside], x[:, :, ~inside])
    assert torch.equal(mixed[:, :, inside], x[perm][:, :, inside])
    sides = set()
    for _ in range(200):  # rand_bbox: half-sides int(12 * sqrt(1 - lam)) // 2 about a uniform centre
        _, (a, b, c, d) = sample_cutmix(8, 12, 12, g)
        assert 0 <= a <= b <= 12 and 0 <= c <= d <= 12 and b - a <= 12 and d - c <= 12
        sides.add(b - a)
    assert len(sides) > 4
    # factor 1 without flips: crops are the whole image, so only the CutMix box changes pixels
    aug = RDEDAugment(factor=1, flip=False)(x, torch.Generator().manual_seed(5))
    rows, cols = (aug != x).any(1).any(0).nonzero(as_tuple=True)
    outside = torch.ones(12, 12, dtype=torch.bool)
    outside[int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1] = False
    assert aug.shape == x.shape and torch.equal(aug[:, :, outside], x[:, :, outside])


def test_haba_paper_is_mtt_paper_with_standardized_batches():
    h, m = get_protocol("haba-paper"), get_protocol("mtt-paper")
    assert h.with_(name="mtt-paper", standardize=False, test_batch_size=500) == m
    assert h.augment.standardize and h.test_batch_size == 128  # HaBa's testloader: batch_size=128, shuffle=False
    s = h.schedule
    assert (s.train_epochs, s.milestones) == (1001, (502,))
    assert h.optimizer.use_learned_lr and h.augment.align_corners


def test_standardize_acts_on_each_training_batch_before_augmentation_and_on_test_batches(digits, monkeypatch):
    x = 3 + 2 * torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    plain = build_augment(digits.spec, get_protocol("dc", standardize=True))
    torch.testing.assert_close(plain(x, torch.Generator()), (x - x.mean()) / x.std())
    seen = []
    from datadistill.evaluation import evaluator

    real = evaluator.accuracy

    def spy(net, test, batch_size, device):
        seen.append(test.images.clone())
        return real(net, test, batch_size, device)

    monkeypatch.setattr(evaluator, "accuracy", spy)
    rep = evaluate(_set(digits), digits, get_protocol("haba-paper", epochs=2, n_models=1, model="convnet_w32"))
    test = seen[0]
    assert len(rep.accuracies) == 1 and test.shape == digits.test.images.shape
    for i in range(0, len(test), 128):  # 360 images: batches of 128, 128 and 104, each standardized
        chunk = test[i : i + 128]
        assert abs(float(chunk.mean())) < 1e-5 and abs(float(chunk.std()) - 1) < 1e-5
    torch.testing.assert_close(standardized_test(digits.test, 128).images, test)


@pytest.fixture(scope="module")
def digits_teacher(digits, tmp_path_factory):
    """An untrained convnet_w32 teacher file for digits (relabelling needs a file, not a good teacher)."""
    from datadistill.teachers import Teacher, save_teacher

    spec = digits.spec
    net = create_model("convnet_w32", spec.channels, spec.num_classes, spec.image_size, seed=0)
    return str(save_teacher(tmp_path_factory.mktemp("teacher") / "digits.safetensors",
                            Teacher(net.eval(), "convnet_w32", spec, {"test_accuracy": 10.0})))


def test_rded_paper_runs_adamw_with_the_teachers_labels(monkeypatch, digits, digits_teacher):
    SpyOpt.install(monkeypatch, "AdamW")
    p = get_protocol("rded-paper", epochs=3, n_models=1, teacher=digits_teacher)
    rep = evaluate(_set(digits), digits, p)  # 20 images, batch 50: one batch per epoch
    want = [1e-3 * 0.5 * (1 + math.cos(math.pi * e / 6)) for e in range(3)]
    assert SpyOpt.steps == pytest.approx(want)
    info = rep.extra["labels"]
    assert (info["labels"], info["label_loss"], info["label_temperature"]) == ("teacher", "kl_unscaled", 20.0)
    with pytest.raises(ConfigError, match="needs a teacher file: teacher=PATH"):
        evaluate(_set(digits), digits, get_protocol("rded-paper", epochs=1, n_models=1))
    with pytest.raises(ValueError, match="teacher file"):
        get_protocol("dc", labels="teacher")  # asked for by an override: refused at once


@pytest.mark.parametrize("fields", [
    dict(optimizer="adam"), dict(optimizer="adamw", weight_decay=0.01, decay_only_weights=True),
    dict(lr_schedule="cosine", steps=4, warmup_steps=2, lr_final=0.1), dict(lr_schedule="cosine_epoch",
                                                                               cosine_fraction=0.5),
    dict(steps=5), dict(steps_by_size=[[20, 3]]), dict(standardize=True), dict(augment="frepo"),
    dict(augment="rded", rded_factor=2), dict(label_loss="mse", label_encoding="frepo"),
])
def test_each_new_field_evaluates_end_to_end(digits, fields):
    p = get_protocol("dc", epochs=3, n_models=1, model="convnet_w32", batch_size=16, **fields)
    rep = evaluate(_set(digits), digits, p)
    assert len(rep.accuracies) == 1 and 0 <= rep.accuracies[0] <= 1
    assert {k: rep.protocol.to_dict()[k] for k in fields} == fields


def test_steps_count_optimizer_steps_across_passes(monkeypatch, digits):
    SpyOpt.install(monkeypatch, "SGD")
    evaluate(_set(digits), digits, get_protocol("dc", steps=5, n_models=1, model="convnet_w32", batch_size=8))
    assert len(SpyOpt.steps) == 5  # 20 images in batches of 8: 3 a pass, the second pass stops after 2
    assert SpyOpt.steps == pytest.approx([0.01] * 2 + [0.001] * 3)  # decay_at 0.5 of the steps


def test_batched_evaluation_follows_the_new_fields(digits):
    """Adam, warm-up and cosine by steps, standardized batches and FRePo's augmentation: batched as alone."""
    p = get_protocol("dc", n_models=3, model="convnet_w32", batch_size=8, optimizer="adam", lr=1e-3,
                     lr_schedule="cosine", steps=6, warmup_steps=2, standardize=True, augment="frepo")
    one = evaluate(_set(digits), digits, p)
    two = evaluate(_set(digits), digits, p, batch_models=2)
    for a, b in zip(one.accuracies, two.accuracies):
        assert abs(a - b) <= 1 / len(digits.test) + 1e-12, (one.accuracies, two.accuracies)


@pytest.mark.parametrize("fields, message", [
    (dict(optimizer="lamb"), "unknown optimizer 'lamb'; valid: sgd, adam, adamw"),
    (dict(lr_schedule="linear"), "unknown lr_schedule 'linear'; valid: step, cosine, cosine_epoch"),
    (dict(lr_schedule="cosine"), "lr_schedule=cosine moves every optimizer step: give the run's length as steps=N"),
    (dict(lr_schedule="cosine_epoch", steps=3), "lr_schedule=cosine_epoch moves once per epoch"),
    (dict(warmup_steps=5), "warmup_steps is for lr_schedule=cosine"),
    (dict(steps=-1), "steps must be >= 0"),
    (dict(lr_final=2.0), r"lr_final must be in \[0, 1\]"),
    (dict(lr_schedule="cosine_epoch", cosine_fraction=0.0), r"cosine_fraction must be in \(0, 1\]"),
    (dict(steps_by_size=[[0, 5]]), r"steps_by_size must be pairs \[set size, steps\] of positive integers"),
    (dict(label_encoding="centered"), "unknown label_encoding 'centered'; valid: onehot, frepo"),
    (dict(rded_factor=0), "rded_factor must be >= 1"),
    (dict(augment="cutmix"), "unknown augment 'cutmix'; valid: .*frepo.*rded"),
    (dict(reference_schedule=True, steps=10), "reference_schedule is the reference evaluators' epoch schedule"),
])
def test_bad_new_fields_are_one_line_errors(fields, message):
    with pytest.raises(ValueError, match=message) as e:
        get_protocol("dc", **fields)
    assert "\n" not in str(e.value)


def test_replay_refuses_the_new_training_fields():
    with pytest.raises(ValueError, match="schedule=replay trains by plain GD .* no optimizer, steps"):
        get_protocol("dd", optimizer="adam", steps=3)

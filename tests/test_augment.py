"""Differentiable Siamese Augmentation: every registered op alone and the full strategy, both modes."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from datadistill.augment import (
    DSA_OP_REGISTRY,
    DSA_OPS,
    DSAConfig,
    DSAParams,
    apply,
    sample_params,
    siamese_params_for_classes,
)

FULL = "color_crop_cutout_flip_scale_rotate"
STRATEGIES = [*DSA_OPS, FULL]
MODES = ["single", "all"]
SHAPES = [(4, 3, 16, 16), (4, 1, 28, 28)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(shape: tuple[int, ...], seed: int = 123) -> torch.Tensor:
    return torch.rand(shape, generator=gen(seed))


def draw(cfg: DSAConfig, shape: tuple[int, ...], seed: int, allow_flip: bool = True) -> DSAParams:
    return sample_params(cfg, shape[0], gen(seed), shape[-2:], allow_flip=allow_flip)


def test_ops_come_from_the_registry():
    assert set(DSA_OPS) == {"color", "crop", "cutout", "flip", "scale", "rotate"}
    assert DSA_OPS == tuple(DSA_OP_REGISTRY.names())
    assert DSAConfig().ops == ("color", "crop", "cutout", "flip", "scale", "rotate")


@pytest.mark.parametrize("shape", SHAPES, ids=["rgb16", "gray28"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_op_contract(strategy, mode, shape):
    cfg = DSAConfig(strategy=strategy, mode=mode)
    x = images(shape)
    p = draw(cfg, shape, 0)
    out = apply(x, p, cfg)
    assert out.shape == x.shape

    # Siamese: the same params on two copies of a batch give identical outputs.
    assert torch.equal(apply(x.clone(), p, cfg), out)
    # Same seed twice: same params, same output.
    assert torch.equal(apply(x, draw(cfg, shape, 0), cfg), out)
    # Other seeds: other augmentations (a 4-sample flip pattern can repeat, so try a few seeds).
    assert any(not torch.equal(apply(x, draw(cfg, shape, s), cfg), out) for s in (1, 2, 3))

    # Gradients reach the input.
    xg = x.clone().requires_grad_(True)
    w = torch.randn(shape, generator=gen(7))
    (apply(xg, p, cfg) * w).sum().backward()
    assert xg.grad is not None
    assert torch.isfinite(xg.grad).all()
    assert xg.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", MODES)
def test_global_rng_untouched_and_unused(mode):
    cfg = DSAConfig(mode=mode)
    shape = SHAPES[0]
    x = images(shape)
    state = torch.get_rng_state()
    out = apply(x, draw(cfg, shape, 3), cfg)
    siamese_params_for_classes(cfg, 2, 3, 2, gen(3), shape[-2:])
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)  # the global RNG has no say in the draws
    assert torch.equal(apply(x, draw(cfg, shape, 3), cfg), out)
    torch.set_rng_state(state)


@pytest.mark.parametrize("mode", MODES)
def test_no_flip_when_not_allowed(mode):
    shape = SHAPES[1]
    x = images(shape)
    cfg = DSAConfig(strategy="flip", mode=mode)
    for seed in range(3):
        assert torch.equal(apply(x, draw(cfg, shape, seed, allow_flip=False), cfg), x)
    full = DSAConfig(mode=mode)
    p = sample_params(full, 500, gen(0), 28, allow_flip=False)
    assert not p.flip.any()
    assert not p.active[:, full.ops.index("flip")].any()


def test_single_mode_choice_is_uniform():
    n = 6000
    cfg = DSAConfig()
    for allow_flip in (True, False):
        p = sample_params(cfg, n, gen(0), 16, allow_flip=allow_flip)
        assert torch.equal(p.active.sum(1), torch.ones(n, dtype=torch.long))  # exactly one op each
        counts = p.active.sum(0)
        k = len(cfg.ops) - (0 if allow_flip else 1)
        expected = n / k
        sigma = math.sqrt(n * (1 / k) * (1 - 1 / k))
        for op, c in zip(cfg.ops, counts.tolist()):
            if op == "flip" and not allow_flip:
                assert c == 0
            else:
                assert abs(c - expected) < 5 * sigma, (op, c, expected)


def test_per_batch_op_choice_draws_one_op():
    cfg = DSAConfig(op_choice="per_batch")
    ops = set()
    for seed in range(12):
        p = sample_params(cfg, 16, gen(seed), 16)
        chosen = p.active.float().argmax(1)
        assert (chosen == chosen[0]).all() and p.active.sum() == 16
        ops.add(int(chosen[0]))
    assert len(ops) > 1


def test_all_mode_activates_every_op():
    cfg = DSAConfig(mode="all")
    assert sample_params(cfg, 5, gen(0), 16).active.all()


def test_crop_with_zero_shift_is_identity():
    cfg = DSAConfig(strategy="crop", mode="all")
    shape = SHAPES[0]
    x = images(shape)
    p = draw(cfg, shape, 0)
    assert torch.equal(apply(x, replace(p, shift=torch.zeros_like(p.shift)), cfg), x)
    # A known shift: out[i, j] = x[i + dy, j + dx], zero outside.
    shift = torch.tensor([[1, 0], [0, -2], [-1, 1], [2, 2]])
    out = apply(x, replace(p, shift=shift), cfg)
    for i, (dy, dx) in enumerate(shift.tolist()):
        assert torch.equal(out[i], _naive_crop(x[i], dy, dx))


def test_bounds_follow_the_reference():
    cfg = DSAConfig()
    p = sample_params(cfg, 4000, gen(0), (32, 28))
    assert p.shift[:, 0].abs().max() == 4 and p.shift[:, 1].abs().max() == 4  # int(32/8 + .5), int(28/8 + .5)
    assert p.scale.min() >= 1 / 1.2 and p.scale.max() <= 1.2
    assert p.angle.abs().max() <= 15.0
    assert p.cutout_center[:, 0].min() == 0 and p.cutout_center[:, 0].max() == 32  # hole 16: even
    assert p.cutout_center[:, 1].max() == 28  # hole int(14.5) = 14: even
    q = sample_params(cfg, 4000, gen(0), 30)
    assert q.cutout_center.max() == 29  # hole 15: odd, centers 0..29
    assert p.brightness.abs().max() <= 0.5
    assert p.saturation.min() >= 0 and p.saturation.max() <= 2.0
    assert p.contrast.min() >= 0.5 and p.contrast.max() <= 1.5


# --- agreement with a per-sample transcription of the reference ---------------------------------


def _naive_crop(img, dy, dx):
    _, h, w = img.shape
    out = torch.zeros_like(img)
    for i in range(h):
        for j in range(w):
            if 0 <= i + dy < h and 0 <= j + dx < w:
                out[:, i, j] = img[:, i + dy, j + dx]
    return out


def _naive(op, img, p, i, cfg):
    """Sample ``i`` of ``p``'s op ``op`` on one image [C, H, W], written as the reference does."""
    _, h, w = img.shape
    if op == "color":
        x = img[None] + (p.brightness[i])
        m = x.mean(dim=1, keepdim=True)
        x = (x - m) * p.saturation[i] + m
        m = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - m) * p.contrast[i] + m)[0]
    if op == "crop":
        return _naive_crop(img, *p.shift[i].tolist())
    if op == "cutout":
        ch, cw = int(h * cfg.cutout + 0.5), int(w * cfg.cutout + 0.5)
        out = img.clone()
        cy, cx = p.cutout_center[i].tolist()
        for r in range(ch):
            for c in range(cw):
                out[:, min(max(r + cy - ch // 2, 0), h - 1), min(max(c + cx - cw // 2, 0), w - 1)] = 0
        return out
    if op == "flip":
        return img.flip(-1) if p.flip[i] else img
    if op == "scale":
        sx, sy = p.scale[i].tolist()
        theta = torch.tensor([[[sx, 0.0, 0.0], [0.0, sy, 0.0]]])
    else:
        a = float(p.angle[i]) / 180 * math.pi
        theta = torch.tensor([[[math.cos(a), math.sin(-a), 0.0], [math.sin(a), math.cos(a), 0.0]]])
    grid = F.affine_grid(theta, [1, *img.shape], align_corners=False)
    return F.grid_sample(img[None], grid, align_corners=False)[0]


@pytest.mark.parametrize("shape", [(30, 3, 16, 16), (30, 1, 15, 17)], ids=["rgb16", "gray15x17"])
def test_single_mode_matches_reference_per_sample(shape):
    cfg = DSAConfig()
    x = images(shape)
    p = draw(cfg, shape, 5)
    out = apply(x, p, cfg)
    seen = set()
    for i in range(shape[0]):
        op = cfg.ops[int(p.active[i].float().argmax())]
        seen.add(op)
        expected = _naive(op, x[i], p, i, cfg)
        if op in ("crop", "cutout", "flip"):
            assert torch.equal(out[i], expected), op  # exact: no resampling
        else:
            torch.testing.assert_close(out[i], expected, rtol=1e-5, atol=1e-6, msg=op)
    assert seen == set(cfg.ops)


def test_all_mode_applies_ops_in_order_and_composes_affines():
    cfg = DSAConfig(mode="all")
    shape = (4, 3, 16, 16)
    x = images(shape)
    p = draw(cfg, shape, 2)
    out = apply(x, p, cfg)
    for i in range(shape[0]):
        y = x[i]
        for op in ("color", "crop", "cutout", "flip"):
            y = _naive(op, y, p, i, cfg)
        sx, sy = p.scale[i].tolist()
        a = float(p.angle[i]) / 180 * math.pi
        s = torch.tensor([[sx, 0, 0], [0, sy, 0], [0, 0, 1.0]], dtype=torch.float64)
        r = torch.tensor([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]], dtype=torch.float64)
        theta = (s @ r)[None, :2].float()  # scale then rotate: x(S R q)
        grid = F.affine_grid(theta, [1, *y.shape], align_corners=False)
        torch.testing.assert_close(out[i], F.grid_sample(y[None], grid, align_corners=False)[0], rtol=1e-5, atol=1e-5)


# --- siamese pairing --------------------------------------------------------------------------


def test_take_selects_and_reorders():
    cfg = DSAConfig()
    shape = (6, 3, 16, 16)
    x = images(shape)
    p = draw(cfg, shape, 4)
    idx = torch.tensor([5, 0, 3, 3])
    assert torch.equal(apply(x[idx], p.take(idx), cfg), apply(x, p, cfg)[idx])
    assert len(p.take([1, 2])) == 2
    with pytest.raises(ValueError, match="integer"):
        p.take(torch.ones(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="params.take"):
        apply(x[:4], p, cfg)


@pytest.mark.parametrize("per_sample", [False, True], ids=["shared_per_class", "paired_per_sample"])
@pytest.mark.parametrize("n_real,n_syn", [(5, 2), (2, 4)])
@pytest.mark.parametrize("mode", MODES)
def test_siamese_pairing_for_classes(mode, n_real, n_syn, per_sample):
    cfg = DSAConfig(mode=mode)
    num_classes, size = 3, 16
    real_p, syn_p = siamese_params_for_classes(cfg, num_classes, n_real, n_syn, gen(0), size, per_sample=per_sample)
    assert len(real_p) == num_classes * n_real and len(syn_p) == num_classes * n_syn
    # Same content in real sample j and synthetic sample j of a class.
    m = max(n_real, n_syn)
    content = images((num_classes, m, 3, size, size))
    real = content[:, :n_real].reshape(-1, 3, size, size)
    syn = content[:, :n_syn].reshape(-1, 3, size, size)
    out_r = apply(real, real_p, cfg).view(num_classes, n_real, 3, size, size)
    out_s = apply(syn, syn_p, cfg).view(num_classes, n_syn, 3, size, size)
    k = min(n_real, n_syn)
    assert torch.equal(out_r[:, :k], out_s[:, :k])
    # Classes get their own draws.
    assert not torch.equal(real_p.take([0]).scale, real_p.take([n_real]).scale)
    if not per_sample:
        # The reference's batch mode: one transform for the whole class, real and synthetic.
        same = images((1, 3, size, size)).expand(num_classes * n_real, -1, -1, -1)
        o = apply(same, real_p, cfg).view(num_classes, n_real, 3, size, size)
        assert torch.equal(o, o[:, :1].expand_as(o))


# --- errors -----------------------------------------------------------------------------------


def test_unknown_op_lists_valid_ops():
    with pytest.raises(ValueError) as e:
        DSAConfig(strategy="color_crp")
    msg = str(e.value)
    assert "'crp'" in msg
    for op in DSA_OPS:
        assert op in msg


def test_bad_config_values():
    with pytest.raises(ValueError, match="single, all"):
        DSAConfig(mode="S")
    with pytest.raises(ValueError, match="twice"):
        DSAConfig(strategy="crop_crop")
    with pytest.raises(ValueError, match="scale"):
        DSAConfig(scale=0.5)
    with pytest.raises(ValueError, match="per_sample"):
        DSAConfig(op_choice="sometimes")


def test_params_must_match_config_and_size():
    cfg = DSAConfig()
    x = images((4, 3, 16, 16))
    p = sample_params(cfg, 4, gen(0), 16)
    with pytest.raises(ValueError, match="strategy"):
        apply(x, p, DSAConfig(strategy="crop"))
    with pytest.raises(ValueError, match="drawn for"):
        apply(images((4, 3, 8, 8)), p, cfg)


def test_none_strategy_is_identity():
    cfg = DSAConfig(strategy="none")
    x = images((2, 3, 8, 8))
    assert torch.equal(apply(x, sample_params(cfg, 2, gen(0), 8), cfg), x)


def test_the_old_flip_key_means_flip_prob():
    from datadistill.config import DeprecatedKeyWarning, from_dict

    with pytest.warns(DeprecatedKeyWarning, match="'flip'.*'flip_prob'"):
        assert from_dict(DSAConfig, {"flip": 0.25}).flip_prob == 0.25
    with pytest.raises(ValueError, match="flip_prob=1.5"):
        DSAConfig(flip_prob=1.5)

"""Gradient matching (DC) and DSA: the distances, the batched per-class gradients, one iteration."""

import pytest
import torch
import torch.nn.functional as F

from datadistill.config import ConfigError
from datadistill.functional import gradient_distance
from datadistill.methods import Context
from datadistill.methods.dc import DC, DCConfig, DSAMethodConfig, default_loops
from datadistill.seeding import make_generator
from datadistill.synset import PixelSet


def _grads(seed, c=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(c, 4, 2, 3, 3, generator=g), torch.randn(c, 4, generator=g), torch.randn(c, 5, 8, generator=g)]


@pytest.mark.parametrize("metric", ["ours", "mse", "cos"])
def test_distance_is_zero_for_identical_gradients(metric):
    g = _grads(0)
    assert float(gradient_distance(g, [t.clone() for t in g], metric)) == pytest.approx(0.0, abs=1e-4)


def test_layerwise_distance_matches_a_direct_computation():
    a, b = _grads(0), _grads(1)
    direct = 0.0
    for c in range(3):
        for r, s in zip(a, b):
            if r[c].ndim == 1:
                continue  # biases are skipped
            r2, s2 = r[c].reshape(r.shape[1], -1), s[c].reshape(s.shape[1], -1)
            for i in range(r2.shape[0]):
                direct += 1 - float(r2[i] @ s2[i]) / (float(r2[i].norm() * s2[i].norm()) + 1e-6)
    assert float(gradient_distance(a, b, "ours")) == pytest.approx(direct, rel=1e-5)
    mse = sum(float(((s - r) ** 2).sum()) for r, s in zip(a, b))
    assert float(gradient_distance(a, b, "mse")) == pytest.approx(mse, rel=1e-5)
    flat_a = torch.cat([t.reshape(3, -1) for t in a], 1)
    flat_b = torch.cat([t.reshape(3, -1) for t in b], 1)
    cos = float((1 - F.cosine_similarity(flat_a, flat_b, dim=1, eps=0)).sum())
    assert float(gradient_distance(a, b, "cos")) == pytest.approx(cos, rel=1e-4)
    with pytest.raises(ValueError, match="valid: ours, mse, cos"):
        gradient_distance(a, b, "l1")


def _dc(toy, ipc=2, **kw):
    s = PixelSet.from_real(toy.train, ipc, make_generator(0, "init"))
    cfg = DCConfig(**{"batch_real": 8, "model": "convnet_w32", **kw})
    return s, DC(cfg, Context(toy, s, torch.device("cpu"), make_generator(0, "m"), 0, ipc, iterations=3))


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_class_gradients_equal_a_direct_loop_over_classes(toy, mode):
    s, dc = _dc(toy, class_grads=mode)
    assert dc.vmap == (mode == "vmap")
    params, buffers = dc._fresh(torch.Generator().manual_seed(0))
    x = toy.train.images[:12].view(3, 4, 1, 12, 12)
    y = torch.arange(3)[:, None].expand(3, 4)
    batched = dc.class_gradients(params, buffers, x, y)
    for c in range(3):
        p = {k: v.clone().requires_grad_() for k, v in params.items()}
        loss = dc._loss(p, buffers, x[c], y[c])
        for (k, v), gk in zip(p.items(), torch.autograd.grad(loss, list(p.values()))):
            assert torch.allclose(batched[k][c], gk, atol=1e-6), k


def test_vmap_and_loop_give_the_same_image_gradient(toy):
    grads = []
    for mode in ("vmap", "loop"):
        s, dc = _dc(toy, class_grads=mode)
        params, buffers = dc._fresh(torch.Generator().manual_seed(0))
        dc.match_loss(params, buffers, torch.Generator().manual_seed(2)).backward()
        grads.append(s.images.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("model,mode", [("convnet_w32", "vmap"), ("convnet_w32", "loop"), ("convnet_bn", "auto")])
def test_one_matching_step_reduces_the_matching_loss(toy, model, mode):
    s, dc = _dc(toy, model=model, class_grads=mode)
    params, buffers = dc._fresh(torch.Generator().manual_seed(0))
    dc.net.train()
    if dc.bn:
        dc._bn_statistics(params, buffers, torch.Generator().manual_seed(1))
        dc.net.eval()
    before = dc.match_loss(params, buffers, torch.Generator().manual_seed(2))
    dc.opt.zero_grad()
    before.backward()
    dc.opt.step()
    after = dc.match_loss(params, buffers, torch.Generator().manual_seed(2))  # same real batch
    assert float(after.detach()) < float(before.detach())


def test_dsa_shares_augmentation_between_real_and_synthetic_batches(toy, monkeypatch):
    import datadistill.methods.base as base
    import datadistill.methods.dc as dcm

    seen = []
    real_apply = dcm.apply

    def spy(x, params, cfg):
        seen.append(params)
        return real_apply(x, params, cfg)

    monkeypatch.setattr(base, "apply", spy)  # DC draws its batches with methods.base.class_batches
    s, dc = _dc(toy, dsa=True)
    params, buffers = dc._fresh(torch.Generator().manual_seed(0))
    dc.match_loss(params, buffers, torch.Generator().manual_seed(3))
    real_p, syn_p = seen[0], seen[1]
    n_real, ipc = dc.n_real, s.ipc
    for c in range(3):  # one draw per class, identical for its real and synthetic images
        a, b = real_p.take(torch.tensor([c * n_real])), syn_p.take(torch.tensor([c * ipc]))
        for field in a.__dataclass_fields__:
            va, vb = getattr(a, field), getattr(b, field)
            assert (torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb), field


def test_iteration_runs_the_papers_loops_and_updates_images(toy):
    s, dc = _dc(toy, ipc=1)
    assert (dc.outer, dc.inner) == (1, 1)
    x0 = s.images.detach().clone()
    m = dc.step(0)
    assert m["loss"] > 0 and not torch.equal(x0, s.images.detach())
    assert default_loops(10) == (10, 50) and default_loops(50) == (50, 10) and default_loops(7) == (1, 1)
    assert default_loops(100) == (50, 10)
    assert DSAMethodConfig().dsa and not DCConfig().dsa
    with pytest.raises(ConfigError, match="valid: ours, mse, cos"):
        DCConfig(metric="l2")

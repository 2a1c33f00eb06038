from dataclasses import dataclass

import pytest
import torch

from datadistill.cli import main
from datadistill.evaluation import evaluate, get_protocol
from datadistill.synset import (SYNSETS, FactorizedSet, Hallucinator, HallucinatorConfig, SyntheticSet,
                                factorized_synset, load_synset, read_meta, save_synset)
from datadistill.synset.factorized import FactorizedSettings, bases_for_budget


def _set(toy, bases=2, hals=3, seed=0, **kw):
    return FactorizedSet.from_real(toy.train, bases, hals, torch.Generator().manual_seed(seed), **kw)


def test_protocol_shapes_labels_and_index_order(toy):
    s = _set(toy)  # 3 classes x 2 bases, 3 hallucinators
    assert isinstance(s, SyntheticSet) and SYNSETS.get("factorized") is FactorizedSet
    assert (s.num_classes, s.bases_per_class, s.n_hallucinators, s.examples_per_class, len(s)) == (3, 2, 3, 6, 18)
    # no budget given: the images per class its storage fills (864 base + 3 x 220 hallucinator floats
    # over 3 classes x 144 pixels), rounded up
    assert s.ipc == 4 and _set(toy, ipc=5).ipc == 5
    assert s.bases.shape == (6, 1, 12, 12) and s.per_class().shape == (3, 2, 1, 12, 12)
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.class_index(1).tolist() == list(range(6, 12))
    # example i = hallucinator i % H on base i // H
    x, y = s(torch.tensor([7, 0, 17, 4]))
    assert y.tolist() == [1, 0, 2, 0] and x.shape == (4, 1, 12, 12) and x.requires_grad
    with torch.no_grad():
        for row, i in enumerate([7, 0, 17, 4]):
            assert torch.allclose(x[row], s.hallucinate(i % 3, torch.tensor([i // 3]))[0])
    images, labels = s.materialize()
    assert images.shape == (18, 1, 12, 12) and not images.requires_grad
    assert labels.tolist() == [c for c in range(3) for _ in range(6)]
    assert torch.allclose(images[[7, 0, 17, 4]], x.detach(), atol=1e-6)


def test_hallucinator_matches_the_released_architecture():
    hal = Hallucinator(3, 3, (32, 32))  # the released code: 3x3 kernel, hidden = image channels
    assert hal.enc.weight.shape == (3, 3, 3, 3) and hal.dec.weight.shape == (3, 3, 3, 3)
    assert hal.scale.shape == hal.shift.shape == (1, 3, 30, 30)  # one value per channel and position
    assert bool((hal.scale == 1).all()) and bool((hal.shift == 0).all())
    assert hal(torch.randn(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert sum(p.numel() for p in hal.parameters()) == 84 + 2 * 2700 + 84
    # no activation: a hallucinator is affine in its base
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    zero = hal(torch.zeros(1, 3, 32, 32))
    assert torch.allclose(hal(a + b) - zero, (hal(a) - zero) + (hal(b) - zero), atol=1e-5)


def test_start_follows_the_released_code_not_identity(toy):
    s = _set(toy)
    for hal in s.hallucinators:
        assert bool((hal.scale == 1).all()) and bool((hal.shift == 0).all())
    x, _ = s.materialize()
    x = x.view(6, 3, 1, 12, 12)
    # default conv initialization: hallucinators differ from each other and from the base
    assert not torch.allclose(x[:, 0], x[:, 1]) and not torch.allclose(x[:, 0], s.bases.detach())
    # and the same generator seed gives the same set
    assert torch.equal(_set(toy).materialize()[0], _set(toy).materialize()[0])


def test_storage_counts_bases_hallucinators_and_a_learned_lr(toy):
    s = _set(toy)
    per_hal = (9 + 1) + 2 * 100 + (9 + 1)  # enc, scale + shift over 10x10, dec (1 channel, 12x12)
    assert s.storage_numel() == 6 * 144 + 3 * per_hal
    assert _set(toy, lr=0.01, learn_lr=True).storage_numel() == s.storage_numel() + 1
    assert _set(toy, lr=0.01).storage_numel() == s.storage_numel()  # a fixed step size is not learned
    assert abs(_set(toy, lr=0.01).learned_lr() - 0.01) < 1e-8 and s.learned_lr() is None


def test_gradients_reach_bases_and_every_hallucinator(toy):
    s = _set(toy)
    x, _ = s(torch.arange(len(s)))
    x.square().sum().backward()
    assert s.bases.grad is not None and bool((s.bases.grad.abs().sum((1, 2, 3)) > 0).all())
    for hal in s.hallucinators:
        assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in hal.parameters())
    s.zero_grad()
    g = torch.Generator().manual_seed(1)
    x, y = s.sample(4, g, one_hallucinator=False)
    assert x.shape == (4, 1, 12, 12) and y.shape == (4,)
    x.sum().backward()
    assert s.bases.grad is not None and any(p.grad is not None for p in s.hallucinator_parameters())
    assert s.base_parameters() == [s.bases] and len(s.hallucinator_parameters()) == 3 * 6
    with pytest.raises(ValueError, match="1..6 distinct bases"):
        s.sample(7, g)


def test_one_hallucinator_batch_uses_a_single_hallucinator(toy):
    s = _set(toy)
    x, y = s.sample(6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        outs = torch.stack([s.hallucinate(h, torch.arange(6)) for h in range(3)])  # [H, bases, ...]
    # each row of x is some base through the same hallucinator
    matches = [{h for h in range(3) for b in range(6) if torch.allclose(row, outs[h, b], atol=1e-6)} for row in x]
    assert set.intersection(*matches)


def test_batches_are_one_seeded_epoch_over_the_bases(toy):
    s = _set(toy, bases=3)
    epoch = lambda seed: list(s.batches(4, torch.Generator().manual_seed(seed)))  # noqa: E731
    a, b = epoch(5), epoch(5)
    assert [x.shape[0] for x, _ in a] == [4, 4, 1]  # 9 bases: every base once, not every pair
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == s.labels.tolist()
    # each base appears exactly once: recover (hallucinator, base) of each image from the materialized set
    images, _ = s.materialize()
    found = []
    for x in torch.cat([x for x, _ in a]).detach():
        hits = [i for i in range(len(s)) if torch.allclose(x, images[i], atol=1e-6)]
        assert len(hits) == 1
        found.append(hits[0] // s.n_hallucinators)
    assert sorted(found) == list(range(9))
    c = torch.cat([x for x, _ in epoch(6)])
    assert not torch.equal(torch.cat([x for x, _ in a]), c)  # a different seed, a different epoch


def test_file_round_trip(toy, tmp_path):
    s = _set(toy, lr=0.02, learn_lr=True, ipc=5)
    with torch.no_grad():  # move away from the initialization so the round trip is meaningful
        for p in s.hallucinator_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    path = save_synset(tmp_path / "f.safetensors", s, toy.spec, method="haba")
    f = load_synset(path)
    assert isinstance(f.synset, FactorizedSet) and f.meta["type"] == "factorized"
    assert torch.equal(f.synset.materialize()[0], s.materialize()[0])
    assert torch.equal(f.synset.materialize()[1], s.materialize()[1])
    assert f.meta["num_images"] == 18 and f.meta["ipc"] == f.synset.ipc == 5 and f.meta["storage_numel"] == s.storage_numel()
    assert f.synset.storage_numel() == s.storage_numel() and abs(f.synset.learned_lr() - 0.02) < 1e-7
    from safetensors.torch import load_file

    names = set(load_file(str(path)))
    assert {"bases", "labels", "log_lr", "hallucinators.0.enc.weight", "hallucinators.2.scale"} <= names


def test_a_file_written_before_ipc_meant_the_budget_still_loads(toy, tmp_path):
    """Old HaBa files: ``ipc`` = bases x hallucinators in the set's config and the header, the budget
    in ``budget_ipc``, no ``examples_per_class``; the dataset spec with ``flip``."""
    import json

    from safetensors.torch import load_file, save_file

    s = _set(toy, ipc=3)
    path = save_synset(tmp_path / "new.safetensors", s, toy.spec, method="haba")
    meta = read_meta(path)
    meta["synset_config"]["ipc"] = meta["ipc"] = 6
    del meta["synset_config"]["examples_per_class"]
    meta["budget_ipc"] = 3
    meta["dataset"]["flip"] = meta["dataset"].pop("allow_flip")
    old = tmp_path / "old.safetensors"
    save_file(load_file(str(path)), str(old), metadata={"datadistill": json.dumps(meta)})
    f = load_synset(old)
    assert f.synset.examples_per_class == 6 and f.synset.ipc == 4  # the storage it fills; the header says 3
    assert f.meta["budget_ipc"] == 3 and f.spec == toy.spec and f.spec.allow_flip
    assert torch.equal(f.synset.materialize()[0], s.materialize()[0])


def test_rejects_bad_inputs(toy):
    g = torch.Generator().manual_seed(0)
    hal = [Hallucinator(1, 1, (12, 12))]
    with pytest.raises(ValueError, match="sorted by class"):
        FactorizedSet(torch.zeros(2, 1, 12, 12), torch.tensor([1, 0]), 2, hal)
    with pytest.raises(ValueError, match="takes 1x"):
        FactorizedSet(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), 2, hal)
    with pytest.raises(ValueError, match="kernel_size"):
        Hallucinator(1, 1, (4, 4), kernel_size=5)
    with pytest.raises(ValueError, match="fewer than"):
        FactorizedSet.from_real(toy.train, 100, 2, g)
    with pytest.raises(ValueError, match="n_hallucinators"):
        HallucinatorConfig(n_hallucinators=0)


def _HaBaLike(bases_per_class=None, hallucinator_channels=4, hallucinator_init="default", lr_teacher=0.01,
              hallucinator_norm="none"):
    """The set's settings as HaBa builds them (`methods.haba.haba_synset`), at a toy size."""
    hal = HallucinatorConfig(n_hallucinators=2, kernel_size=3, hidden_channels=hallucinator_channels,
                             init=hallucinator_init, norm=hallucinator_norm)
    return FactorizedSettings(hal, bases_per_class, "ipc", lr_teacher)


def test_the_builder_takes_typed_settings(toy):
    assert [bases_for_budget(i) for i in (1, 2, 10, 50)] == [1, 2, 10, 50]  # the authors': ipc bases
    assert [bases_for_budget(i, "ipc-1") for i in (1, 2, 10, 50)] == [1, 1, 9, 49]
    s = factorized_synset(_HaBaLike(), toy, 10, "real", torch.Generator().manual_seed(0))
    assert (s.bases_per_class, s.n_hallucinators, s.hallucinators[0].hidden_channels) == (10, 2, 4)
    assert s.log_lr.requires_grad and abs(s.learned_lr() - 0.01) < 1e-8
    s = factorized_synset(_HaBaLike(bases_per_class=3, lr_teacher=None), toy, 10, "noise", torch.Generator())
    assert s.bases_per_class == 3 and s.learned_lr() is None and (s.examples_per_class, s.ipc) == (6, 10)
    assert FactorizedSettings().hallucinators == HallucinatorConfig()  # defaults: 5 hallucinators, 3x3
    s = factorized_synset(_HaBaLike(hallucinator_init="identity", hallucinator_channels=None), toy, 2, "real",
                          torch.Generator())
    assert all(abs(float(h.enc.weight.detach()[0, 0, 1, 1]) - 1) < 0.5 for h in s.hallucinators)
    with pytest.raises(ValueError, match="initialization"):
        factorized_synset(_HaBaLike(), toy, 2, "kmeans", torch.Generator())


def test_identity_init_starts_hallucinations_at_their_bases(toy):
    g = torch.Generator().manual_seed(0)
    s = _set(toy, hallucinator_init="identity")
    default = _set(toy)
    with torch.no_grad():
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # no padding: a 1-pixel border is lost
        b = s.bases[inner]
        views = [s.hallucinate(h, torch.arange(len(s.labels)))[inner] for h in range(s.n_hallucinators)]
        far = [(default.hallucinate(h, torch.arange(len(s.labels)))[inner] - b).abs().mean()
               for h in range(s.n_hallucinators)]
    for v, d in zip(views, far):
        assert (v - b).abs().mean() < 0.15 * b.abs().mean() < d  # close to its base; the default is not
    assert not torch.allclose(views[0], views[1])  # the noise keeps the hallucinators apart
    wide = Hallucinator(2, 3, (6, 6), hidden_channels=4)  # 2 -> 4 -> 3 channels: both diagonals are partial
    assert wide.near_identity_() is wide and wide.dec.weight.shape[:2] == (4, 3)
    x = torch.randn(4, 2, 6, 6, generator=g)
    with torch.no_grad():
        y = wide(x)[inner]
    assert (y[:, :2] - x[inner]).abs().mean() < 0.15 * x[inner].abs().mean()  # the input channels pass through
    assert y[:, 2].abs().mean() < 0.15 * x[inner].abs().mean()  # the extra output channel starts near zero
    from datadistill.methods.haba import HaBaConfig

    assert HaBaConfig(hallucinator_init="identity").hallucinators().init == "identity"  # HaBa's flat field, typed
    with pytest.raises(ValueError, match="valid: default, identity"):
        HallucinatorConfig(init="zeros")
    with pytest.raises(ValueError, match="valid: default, identity"):
        FactorizedSet.from_real(toy.train, 1, 2, g, hallucinator_init="zeros")


def test_base_norm_keeps_each_hallucinations_scale_at_its_bases(toy, tmp_path):
    g = torch.Generator().manual_seed(0)
    s = _set(toy, hallucinator_norm="base")
    plain = _set(toy)  # same seed: the same bases and hallucinator weights, without the rescaling
    with torch.no_grad():
        for hal in [*s.hallucinators, *plain.hallucinators]:  # weights grown 20x, as scale drift does
            for p in (hal.enc.weight, hal.dec.weight):
                p.mul_(20)
    b = s.bases.detach()
    for h in range(s.n_hallucinators):
        x = s.hallucinate(h, torch.arange(len(s.labels))).detach()
        std, mean = torch.std_mean(x.flatten(1), dim=1)
        bstd, bmean = torch.std_mean(b.flatten(1), dim=1)
        assert torch.allclose(std, bstd, rtol=1e-3) and torch.allclose(mean, bmean, atol=1e-4)
        y = plain.hallucinate(h, torch.arange(len(s.labels))).detach()
        assert y.pow(2).mean().sqrt() > 20 * b.pow(2).mean().sqrt()  # without it the scale follows the weights
        # per image, the rescaled hallucination is an affine map (one positive scale, one shift) of the plain one
        for xi, yi in zip(x, y):
            z = (yi - yi.mean()) / yi.std()
            assert torch.allclose((xi - xi.mean()) / xi.std(), z, atol=1e-4)
    # why the scale drifts: the instance-normalized ConvNet cannot see a per-image scale
    from datadistill.models import create_model

    net = create_model("convnet", 1, 3, (12, 12), seed=0).eval()
    with torch.no_grad():
        x0 = plain.materialize()[0]
        assert torch.allclose(net(x0), net(37 * x0), atol=1e-4) and torch.allclose(net(b), net(5 * b), atol=1e-4)
    # gradients still reach the bases and every hallucinator
    x, y = s(torch.arange(len(s)))
    torch.nn.functional.cross_entropy(net(x), y).backward()
    assert s.bases.grad.abs().sum() > 0
    assert all(h.enc.weight.grad.abs().sum() > 0 for h in s.hallucinators)
    # the file keeps the setting; a file written before it existed loads as the released "none"
    f = load_synset(save_synset(tmp_path / "n.safetensors", s, toy.spec, method="haba"))
    assert all(h.norm == "base" for h in f.synset.hallucinators)
    assert torch.allclose(f.synset.materialize()[0], s.materialize()[0])
    config = s.config()
    del config["hallucinator_norm"]
    assert all(h.norm == "none" for h in FactorizedSet.from_tensors(s.tensors(), config).hallucinators)
    from datadistill.methods.haba import HaBaConfig

    assert HaBaConfig().hallucinators().norm == "none" and HaBaConfig(hallucinator_norm="base").hallucinators().norm == "base"
    with pytest.raises(ValueError, match="valid: none, base"):
        HallucinatorConfig(norm="batch")
    with pytest.raises(ValueError, match="valid: none, base"):
        FactorizedSet.from_real(toy.train, 1, 2, g, hallucinator_norm="batch")
    with pytest.raises(ValueError, match="share one architecture"):
        FactorizedSet(s.bases.detach(), s.labels, 3, [Hallucinator(1, 1, (12, 12)), Hallucinator(1, 1, (12, 12), norm="base")])


def test_show_draws_bases_and_hallucinations(toy, tmp_path, capsys):
    path = save_synset(tmp_path / "f.safetensors", _set(toy), toy.spec, method="haba")
    out = tmp_path / "g.png"
    assert main(["show", str(path), "--out", str(out)]) == 0
    assert out.is_file() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    w, h = Image.open(out).size
    assert w > h  # one panel per class side by side (3 classes), each 2 bases down and 1 + 3 tiles across
    assert "h2: correlation with its base" in capsys.readouterr().out  # and its collapse diagnostic


def test_evaluation_trains_on_a_factorized_set(toy, monkeypatch):
    s = _set(toy, bases=1, hals=2)
    drawn, real = [], FactorizedSet.batches

    def spy(self, batch_size, generator):
        for x, y in real(self, batch_size, generator):
            drawn.append((x.detach().clone(), y.clone()))
            yield x, y

    monkeypatch.setattr(FactorizedSet, "batches", spy)
    rep = evaluate(s, toy, get_protocol("smoke").with_(epochs=2, n_models=1, model="convnet_w32"))
    # each epoch trains on every base once, through one of its hallucinators: hallucinated images only
    images, labels = s.materialize()
    assert len(drawn) == 2
    for x, y in drawn:
        assert sorted(y.tolist()) == [0, 1, 2]
        for xi, yi in zip(x, y):
            match = [i for i in range(len(images)) if torch.allclose(xi, images[i], atol=1e-6)]
            assert match and all(labels[i] == yi for i in match)
    n = len(toy.test)  # a fraction of the test images the model got right
    assert len(rep.accuracies) == 1 and rep.accuracies[0] * n == pytest.approx(round(rep.accuracies[0] * n))


def test_evaluation_batches_build_no_graph_into_the_set(toy, monkeypatch):
    from datadistill.evaluation.evaluator import _Frozen

    s = FactorizedSet.from_real(toy.train, 2, 3, torch.Generator().manual_seed(0))
    modes, real = [], FactorizedSet.forward

    def spy(self, index):
        modes.append(torch.is_grad_enabled())
        return real(self, index)

    monkeypatch.setattr(FactorizedSet, "forward", spy)
    for x, _ in _Frozen(s).batches(4, torch.Generator().manual_seed(1)):
        assert not x.requires_grad
        assert torch.is_grad_enabled()  # the consumer's training step still has autograd
    assert modes and not any(modes)  # the hallucinations were computed without a graph

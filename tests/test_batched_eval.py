"""Batched evaluation (`evaluation.batched`): N models trained as one vmapped computation give what
training them one after another gives, up to float rounding."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from datadistill.cli import _is_user_error, main
from datadistill.config import ConfigError
from datadistill.data.spec import RealData
from datadistill.evaluation import evaluate, evaluate_models, get_protocol
from datadistill.evaluation.batched import UnbatchableModelError, accuracies, check_batchable, stack, train_stacked
from datadistill.functional.chunked import pick_chunk
from datadistill.models import MODELS, create_model, has_batchnorm
from datadistill.seeding import make_generator
from datadistill.synset import PixelSet, save_synset
from datadistill.train import accuracy, train_classifier


# float64: other kernels' rounding stays far below the tolerance (float32 rounding, amplified by a few
# steps of a deep net or by instance norm over 1x1 maps, reaches a fair part of an update)
DTYPE = torch.float64


def _batches(x: torch.Tensor, y: torch.Tensor):
    def batches(batch_size: int, g: torch.Generator):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            yield x[perm[i : i + batch_size]], y[perm[i : i + batch_size]]

    return batches


def _noise(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """An augmentation that draws from the model's generator (its order matters)."""
    return x + 0.1 * torch.randn(x.shape, generator=g, dtype=x.dtype)


def _size(name: str) -> int:
    """The smallest of 8, 16 and 32 that the model takes (VGG11 needs 32)."""
    for size in (8, 16):
        try:
            create_model(name, 1, 4, size).eval()(torch.zeros(1, 1, size, size))
            return size
        except (ValueError, RuntimeError):
            pass
    return 32


def _train_both(name: str, size: int, n: int, chunk: int | None = None, **kw):
    """Two models of ``name`` trained on ``n`` random images alone (`train_classifier`) and stacked
    (`train_stacked`, in chunks of ``chunk`` samples; default: as alone): ``(nets, (base, params,
    buffers))``."""
    seeds = [7, 8]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, size, size, generator=g, dtype=DTYPE)
    y = torch.randint(4, (n,), generator=g)
    kw = dict(lr=0.05, momentum=0.9, weight_decay=5e-4, augment=_noise, **kw)
    alone = []
    for s in seeds:
        net = create_model(name, 1, 4, size, seed=s).to(DTYPE)
        alone.append(train_classifier(net, _batches(x, y), generator=make_generator(s, "eval-train"), **kw))
    nets = [create_model(name, 1, 4, size, seed=s).to(DTYPE) for s in seeds]
    check_batchable(nets[0], name)
    base, params, buffers = stack(nets)
    train_stacked(base, params, buffers, _batches(x, y), [make_generator(s, "eval-train") for s in seeds],
                  chunk=chunk or pick_chunk("cpu", not has_batchnorm(base)), **kw)
    return alone, (base, params, buffers)


def _assert_same(name, alone, params, buffers):
    for i, net in enumerate(alone):
        state = net.state_dict()
        for k, v in (params | buffers).items():
            torch.testing.assert_close(v[i].detach(), state[k], rtol=1e-9, atol=1e-10, msg=lambda m: f"{name} {k}: {m}")


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_trains_and_tests_batched_as_alone(name):
    """Every model's layers under vmap: one SGD step of two models gives each one's parameters and
    buffers (BatchNorm's running statistics) as training it alone, and the batched test pass each
    one's accuracy."""
    size = _size(name)
    alone, (base, params, buffers) = _train_both(name, size, 4, epochs=1, batch_size=4)
    _assert_same(name, alone, params, buffers)
    g = torch.Generator().manual_seed(1)
    test = RealData(torch.randn(16, 1, size, size, generator=g, dtype=DTYPE), torch.randint(4, (16,)), 4)
    assert accuracies(base, params, buffers, test, batch_size=10) == [accuracy(net, test) for net in alone]


def test_schedule_momentum_restart_and_uneven_batches_as_alone():
    """Four steps: momentum, uneven batches (3 + 2), a milestone with a new optimizer, augmentation;
    chunks of 2 samples (their gradients add up to the batch's)."""
    alone, (_, params, buffers) = _train_both("convnet_w32", 12, 5, chunk=2, epochs=2, milestones=(1,),
                                              batch_size=3, restart_at_milestones=True)
    _assert_same("convnet_w32", alone, params, buffers)
    alone, (_, params, buffers) = _train_both("convnet_bn", 12, 5, epochs=2, milestones=(1,), batch_size=3)
    _assert_same("convnet_bn", alone, params, buffers)


def test_evaluate_batched_matches_sequential_on_digits(digits):
    """The reference schedule with DSA (flips, new optimizer at the decay), batches of 24 and 6 of 30
    images (the first in chunks of 16 and 8 on the CPU), 3 models in groups of 2 and 1: the same
    seeds, and each model's accuracy the same up to one test image."""
    s = PixelSet.from_real(digits.train, 3, make_generator(0, "init"))
    p = get_protocol("dsa-paper", epochs=4, n_models=3, model="convnet_w32", batch_size=24)
    one = evaluate(s, digits, p)
    two = evaluate(s, digits, p, batch_models=2)
    assert two.seeds == one.seeds == [0, 1, 2] and two.lr == one.lr and two.protocol == one.protocol
    for a, b in zip(one.accuracies, two.accuracies):
        assert abs(a - b) <= 1 / len(digits.test) + 1e-12, (one.accuracies, two.accuracies)
    assert len(set(one.accuracies)) > 1  # the models differ: each got its own seed
    assert s.images.grad is None


def test_batched_test_pass_equals_each_models_accuracy(digits):
    nets = [create_model("convnet_w32", 1, 10, 28, seed=s) for s in (0, 1, 2)]
    for i, net in enumerate(nets):  # some training, so that the models predict differently
        train_classifier(net, _batches(digits.train.images[:40], digits.train.labels[:40]), epochs=3, lr=0.05,
                         batch_size=20, generator=make_generator(i, "t"))
    test = digits.test
    base, params, buffers = stack(nets)
    # 7 image-model pairs per pass: chunks of 2 test images for 3 models
    batched = accuracies(base, params, buffers, test, batch_size=7)
    alone = [accuracy(net, test) for net in nets]
    for a, b in zip(alone, batched):
        assert abs(a - b) <= 1 / len(test) + 1e-12
    assert all(p.grad is None for p in params.values())


def test_models_that_cannot_be_batched_are_refused_with_a_user_error():
    class Drop(nn.Module):
        def __init__(self, bn: nn.Module):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), bn)

    for net, why in ((Drop(nn.Dropout(0.5)), "dropout"), (Drop(nn.BatchNorm1d(4, momentum=None)), "cumulative")):
        with pytest.raises(UnbatchableModelError, match=why) as e:
            check_batchable(net, "mynet")
        assert isinstance(e.value, ValueError) and _is_user_error(e.value)
        assert "'mynet'" in str(e.value) and "--batch-models 1" in str(e.value) and "\n" not in str(e.value)
    check_batchable(Drop(nn.Dropout(0.0)), "mynet")  # no masks drawn: fine
    check_batchable(Drop(nn.BatchNorm1d(4)), "mynet")  # running statistics are stacked buffers: fine


def test_batch_models_is_checked_and_replay_and_networks_train_one_at_a_time(digits):
    s = PixelSet.from_real(digits.train, 1, make_generator(0, "init"))
    p = get_protocol("smoke", epochs=1, n_models=2, model="mlp")
    with pytest.raises(ConfigError, match="batch_models must be >= 1"):
        evaluate(s, digits, p, batch_models=0)
    own = [create_model("mlp", 1, 10, 28, seed=100 + i) for i in range(2)]
    before = [[q.detach().clone() for q in net.parameters()] for net in own]

    def networks(i, model):
        return own[i]

    r = evaluate_models(s, digits, p, ["mlp"], networks=networks, batch_models=2)["mlp"]
    assert len(r.accuracies) == 2  # the method's own networks, trained in place one after another:
    assert all(not torch.equal(q, q0) for net, b in zip(own, before) for q, q0 in zip(net.parameters(), b))


def test_more_models_in_a_group_than_the_protocol_has(digits):
    s = PixelSet.from_real(digits.train, 1, make_generator(0, "init"))
    p = get_protocol("smoke", epochs=2, n_models=2, model="convnet_w32")
    r = evaluate(s, digits, p, batch_models=5)
    assert r.seeds == [0, 1] and len(r.accuracies) == 2


def test_cli_batch_models_flag(tmp_path, capsys):
    from datadistill.data import load_dataset

    data = load_dataset("digits")
    path = tmp_path / "s.safetensors"
    save_synset(path, PixelSet.from_real(data.train, 1, make_generator(0, "x")), data.spec, method="random")
    runs = {}
    for n in ("1", "3"):
        assert main(["evaluate", str(path), "--protocol", "smoke", "epochs=2", "n_models=3", "model=convnet_w32",
                     "--device", "cpu", "--json", "--batch-models", n]) == 0
        out = capsys.readouterr().out
        runs[n] = json.loads(out[out.index("{"):])["convnet_w32"]
    assert runs["1"]["seeds"] == runs["3"]["seeds"] == [0, 1, 2]
    for a, b in zip(runs["1"]["accuracies"], runs["3"]["accuracies"]):
        assert abs(a - b) <= 1 / len(data.test) + 1e-12
    assert main(["evaluate", str(path), "--batch-models", "0"]) == 2
    assert capsys.readouterr().err.strip() == "datadistill: error: batch_models must be >= 1, got 0"

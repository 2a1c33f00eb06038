"""DATM on scikit-learn digits with two tiny in-memory expert trajectories (an MLP, 4 epochs)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from datadistill.config import ConfigError
from datadistill.methods import Context
from datadistill.methods.datm import DATM, DATMConfig, datm_synset, start_epoch_bound
from datadistill.methods.mtt import MTT, MTTConfig, mtt_synset
from datadistill.models import create_model
from datadistill.seeding import make_generator
from fake_experts import Trajectories


@pytest.fixture(scope="module")
def experts(digits):
    return Trajectories(digits, batch=32)


COMMON = {"model": "mlp", "syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 3, "lr_img": 10.0, "lr_lr": 1e-4,
          "lr_teacher": 0.05, "dsa": False}
MTT_LIKE = {"learn_labels": False, "soft_init": False, "init_correct": False, "sequential": False,
            "loss_threshold": None}


def make(data, experts, ipc=2, seed=0, cls=DATM, cfg_cls=DATMConfig, synset=datm_synset, **kw):
    extra = {"current_max_start_epoch": 2} if cfg_cls is DATMConfig else {}
    cfg = cfg_cls(**{**COMMON, **extra, **kw})
    s = synset(cfg, data, ipc, "real", make_generator(seed, "init"))
    ctx = Context(data, s, torch.device("cpu"), make_generator(seed, "m"), seed, ipc, iterations=10)
    return cls(cfg, ctx, experts=experts), s


def logits_of(experts, expert, epoch, x):
    net = create_model("mlp", 1, 10, (28, 28))
    with torch.no_grad():
        return functional_call(net, experts.params(expert, epoch), (x,))


def test_with_its_additions_off_datm_is_mtt_bit_for_bit(digits, experts):
    """Labels not learned, hard labels, MTT's window and no loss threshold: MTT's exact set."""
    datm, s_datm = make(digits, experts, **MTT_LIKE, dsa=True)
    mtt, s_mtt = make(digits, experts, cls=MTT, cfg_cls=MTTConfig, synset=mtt_synset, dsa=True)
    assert torch.equal(s_datm.images, s_mtt.images)
    start = s_mtt.images.detach().clone()
    for it in range(4):
        a, b = datm.step(it), mtt.step(it)
        assert (a["loss"], a["start_epoch"], a["lr"]) == (b["loss"], b["start_epoch"], b["lr"])
    assert torch.equal(s_datm.images.detach(), s_mtt.images.detach())
    assert torch.equal(s_datm.log_lr.detach(), s_mtt.log_lr.detach())
    assert not torch.equal(start, s_mtt.images.detach()) and datm.logits is None  # the images did learn
    assert s_datm.soft_labels is None  # hard labels, as MTT's


def test_soft_labels_start_as_the_label_experts_logits(digits, experts):
    datm, s = make(digits, experts, learn_labels=False, init_correct=False, label_expert=1)
    want = logits_of(experts, 1, experts.epochs, s.images.detach())  # the last stored epoch by default
    assert torch.allclose(datm.logits, want, atol=1e-6)
    datm, s = make(digits, experts, learn_labels=False, init_correct=False, label_epoch=2)
    assert torch.allclose(datm.logits, logits_of(experts, 0, 2, s.images.detach()), atol=1e-6)


def test_correct_init_selects_correctly_classified_images_and_averages_the_correct_experts(digits, experts):
    datm, s = make(digits, experts, ipc=3, learn_labels=False)
    x, y = s.images.detach(), s.labels
    first = logits_of(experts, 0, experts.epochs, x)
    assert torch.equal(first.argmax(1), y)  # every selected image is one the label expert gets right
    rows = (digits.train.images.flatten(1)[None] == x.flatten(1)[:, None]).all(2)  # each a real training image
    assert bool(rows.any(1).all()) and torch.equal(digits.train.labels[rows.float().argmax(1)], y)
    both = torch.stack([first, logits_of(experts, 1, experts.epochs, x)])
    ok = (both.argmax(2) == y).float().unsqueeze(2)
    assert torch.allclose(datm.logits, (both * ok).sum(0) / ok.sum(0), atol=1e-6)


def test_learned_labels_change_and_stay_probabilities(digits, experts):
    datm, s = make(digits, experts, loss_threshold=None, lr_y=10.0)
    before = datm.logits.detach().clone()
    for it in range(3):
        datm.step(it)
    assert not torch.equal(before, datm.logits.detach())
    p = F.softmax(datm.logits.detach(), dim=1)
    assert bool((p >= 0).all()) and torch.allclose(p.sum(1), torch.ones(len(p)))
    # the set holds softmax(logits), what evaluation trains on (soft cross-entropy, as the reference)
    assert torch.allclose(s.soft_labels, p) and s.label_loss == "soft_ce"
    assert torch.allclose(s(torch.arange(len(s)))[1], p)


def test_gradients_reach_the_labels(digits, experts):
    datm, _ = make(digits, experts)
    datm.matching_loss(0, 1, torch.Generator().manual_seed(0)).backward()
    assert datm.logits.grad is not None and float(datm.logits.grad.abs().sum()) > 0


def test_window_bound_grows_from_current_to_max(digits, experts):
    cfg = DATMConfig(**COMMON, min_start_epoch=0, current_max_start_epoch=1, expansion_end_iteration=4)
    assert [start_epoch_bound(cfg, it) for it in range(7)] == [1, 1, 2, 2, 3, 3, 3]  # int(1 + 2 * it / 4), capped
    assert start_epoch_bound(DATMConfig(**COMMON, sequential=False), 0) == 3
    datm, _ = make(digits, experts, min_start_epoch=1, current_max_start_epoch=2, expansion_end_iteration=3,
                   loss_threshold=None)
    rows = [datm.step(it) for it in range(6)]
    assert [r["start_epoch_bound"] for r in rows] == [2, 2, 2, 3, 3, 3]
    assert all(r["start_epoch"] == 1 for r in rows[:3])  # the window [1, 2) allows only epoch 1
    assert all(1 <= r["start_epoch"] < 3 for r in rows)


def test_loss_above_threshold_skips_the_update(digits, experts):
    datm, s = make(digits, experts, loss_threshold=1e-9)
    images, logits = s.images.detach().clone(), datm.logits.detach().clone()
    assert datm.step(0)["skipped"] == 1.0
    assert torch.equal(images, s.images.detach()) and torch.equal(logits, datm.logits.detach())


def test_resume_is_exact(digits, experts):
    a, sa = make(digits, experts, loss_threshold=None)
    for it in range(2):
        a.step(it)
    # copies, as the engine's checkpoint file holds them (state dicts share the live tensors)
    state, set_state, gen = copy.deepcopy(a.state_dict()), copy.deepcopy(sa.state_dict()), a.ctx.generator.get_state()
    for it in range(2, 4):
        a.step(it)
    b, sb = make(digits, experts, loss_threshold=None)
    sb.load_state_dict(set_state)
    b.load_state_dict(state)
    b.ctx.generator.set_state(gen)
    for it in range(2, 4):
        b.step(it)
    assert torch.equal(sa.images.detach(), sb.images.detach())
    assert torch.equal(a.logits.detach(), b.logits.detach()) and torch.equal(sa.soft_labels, sb.soft_labels)
    assert torch.equal(sa.log_lr.detach(), sb.log_lr.detach())


@pytest.mark.parametrize("kw, match", [
    ({"min_start_epoch": 3}, "min_start_epoch < max_start_epoch"),
    ({"current_max_start_epoch": 5}, "current_max_start_epoch <= max_start_epoch"),
    ({"current_max_start_epoch": 0}, "min_start_epoch < current_max_start_epoch"),
    ({"soft_init": False}, "learn_labels=true needs soft_init=true"),
    ({"lr_y": -1.0}, "lr_y must be >= 0"),
    ({"momentum_y": 1.0}, "momentum_y must be in"),
    ({"loss_threshold": 0.0}, "loss_threshold must be > 0"),
    ({"expansion_end_iteration": 0}, "expansion_end_iteration must be >= 1"),
])
def test_bad_config_is_a_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        DATMConfig(**{**COMMON, "current_max_start_epoch": 2, **kw})


def test_noise_init_contradicts_correct_init(digits):
    with pytest.raises(ConfigError, match="image_init=real"):
        datm_synset(DATMConfig(**COMMON, current_max_start_epoch=2), digits, 1, "noise", make_generator(0, "i"))


def test_presets_load(recwarn):
    from datadistill.config import from_dict, load_preset, preset_names

    names = [n for n in preset_names() if n.startswith("datm-")]
    assert {"datm-cpu", "datm-cifar10-ipc1", "datm-cifar10-ipc10", "datm-cifar10-ipc50"} <= set(names)
    for name in names:
        d = load_preset(name)
        cfg = from_dict(DATMConfig, d["method_config"])
        assert cfg.epochs_needed <= 50
    cpu = from_dict(DATMConfig, load_preset("datm-cpu")["method_config"])
    assert cpu.max_start_epoch <= 2 and cpu.expert_epochs == 2 and cpu.epochs_needed <= 4

"""DATM on scikit-learn digits with two tiny in-memory expert trajectories (an MLP, 4 epochs)."""

import copy

import pytest
import torch
import yaml
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


# ---------------------------------------------------------------------- the authors' IPC 1 preset
# configs/CIFAR-10/ConvIN/IPC1.yaml of NUS-HPC-AI-Lab/DATM (and distill/DATM.py's momentum 0.5), in our keys
AUTHORS_IPC1 = {"syn_steps": 80, "expert_epochs": 2, "min_start_epoch": 0, "max_start_epoch": 4, "sequential": False,
                "batch_syn": 10, "lr_img": 100.0, "lr_lr": 1e-7, "lr_teacher": 0.01, "momentum": 0.5, "lr_y": 5.0,
                "momentum_y": 0.9, "loss_threshold": 1.1, "init_correct": True, "soft_init": True,
                "learn_labels": True, "label_epoch": None, "dsa": True}


def test_paper_preset_has_the_authors_ipc1_values():
    from datadistill import cli
    from datadistill.resolve import resolve

    res = resolve(cli.distill_config(cli.parse_args(["distill", "--preset", "datm-paper"])))
    assert res.entry.name == "datm" and res.cfg.dataset == "mnist" and res.cfg.ipc == 1
    assert res.iterations == 10000 and res.image_init == "real" and res.zca is None
    assert {k: getattr(res.method_cfg, k) for k in AUTHORS_IPC1} == AUTHORS_IPC1
    assert {start_epoch_bound(res.method_cfg, it) for it in (0, 999, 9999)} == {4}  # start epochs 0..3, fixed
    assert res.method_cfg.epochs_needed == 5
    # the authors' evaluator (MTT's evaluate_synset) with their batch_train 128
    assert res.protocol.name == "mtt-paper" and res.protocol.optimizer.use_learned_lr and res.protocol.batch_size == 128
    argv = ["distill", "--preset", "datm-paper", "--dataset", "fashion_mnist"]
    res = resolve(cli.distill_config(cli.parse_args(argv)))
    assert res.cfg.dataset == "fashion_mnist" and res.method_cfg.lr_y == 5.0


# ---------------------------------------------------------------------- the fidelity ladder
LADDER = [  # rung, the method_config keys its one addition may change (the first one must change)
    ("rung0-mtt", None),
    ("rung1-correct-init", ("init_correct",)),
    ("rung2-soft-init", ("soft_init",)),
    ("rung3-learned-labels", ("learn_labels", "lr_y", "momentum_y")),
    ("rung4-sequential", ("sequential", "current_max_start_epoch", "expansion_end_iteration")),
    ("rung5-threshold", ("loss_threshold",)),
    ("rung6-ftd-experts", ("experts",)),
]
ADDITIONS_OFF = {"init_correct": False, "soft_init": False, "learn_labels": False, "sequential": False,
                 "loss_threshold": None, "min_start_epoch": 0}


def _ladder_suite():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from suites import load_suite

    return load_suite("fidelity-datm")


def _resolved(job):
    from datadistill import cli
    from datadistill.resolve import resolve

    args = [a.replace("{runs}", "runs") for a in job.args]
    return resolve(cli.distill_config(cli.parse_args(
        ["distill", "--method", job.method, "--dataset", job.dataset, "--ipc", str(job.ipc), *args])))


@pytest.mark.parametrize("ipc", [1, 10])
def test_each_ladder_rung_adds_exactly_one_thing_to_mtts_record(ipc):
    import dataclasses

    from datadistill.evaluation.protocol import get_protocol

    suite = _ladder_suite()
    mtt_eval = suite.job(f"mtt-mnist-ipc{ipc}-mtt-paper")
    mtt_job = suite.job(mtt_eval.of)  # the MTT record the ladder starts from (cpu-ablations)
    mtt = _resolved(mtt_job)
    rungs = [suite.job(f"datm-mnist-ipc{ipc}-{name}") for name, _ in LADDER]
    assert [j.kind for j in rungs] == ["distill"] * len(LADDER) and all(j.method == "datm" for j in rungs)
    resolved = [_resolved(j) for j in rungs]

    # rung 0: MTT's run (its experts, iterations, unrolled steps, every shared field) with DATM's additions off
    first = resolved[0]
    mtt_suite = mtt_eval.of.split(":")[0]
    assert suite.job(rungs[0].needs) == suite.job(f"{mtt_suite}:{mtt_job.needs}")  # its experts job
    assert first.iterations == mtt.iterations
    for f in dataclasses.fields(mtt.method_cfg):
        assert getattr(first.method_cfg, f.name) == getattr(mtt.method_cfg, f.name), f.name
    assert {k: getattr(first.method_cfg, k) for k in ADDITIONS_OFF} == ADDITIONS_OFF
    assert (first.cfg.dataset, first.cfg.ipc, first.cfg.seed, first.image_init) == \
        (mtt.cfg.dataset, mtt.cfg.ipc, mtt.cfg.seed, mtt.image_init)

    # one protocol with the learned lr for MTT's set and every rung
    want = first.protocol
    name, *overrides = mtt_eval.args[mtt_eval.args.index("--protocol") + 1:]
    assert get_protocol(name, **{k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in overrides)}) == want
    assert want.name in ("mtt", "mtt-paper") and want.optimizer.use_learned_lr

    for (name, allowed), prev, cur in zip(LADDER[1:], resolved, resolved[1:]):
        a, b = prev.to_dict(), cur.to_dict()
        ma, mb = a.pop("method_config"), b.pop("method_config")
        assert a == b, name  # the run, its budget and its evaluation are the same
        changed = {k for k in ma if ma[k] != mb[k]}
        assert allowed[0] in changed and changed <= set(allowed), (name, changed)
    last = resolved[-2].method_cfg  # rung 5: all of the reference's DATM on MTT's experts
    assert (last.init_correct, last.soft_init, last.learn_labels, last.sequential) == (True, True, True, True)
    assert last.loss_threshold is not None
    ftd = suite.job(rungs[-1].needs)
    assert ftd.kind == "experts" and "--sam" in ftd.args


# ---------------------------------------------------------------------- FTD experts (sharpness-aware)
def test_sharpness_aware_direction_is_the_references_gsam():
    """Our GSAM direction against the reference's formulas (buffer/gsam/gsam.py), written out here on a
    small linear model: adaptive ascent, second gradient, orthogonal correction; the weights come back."""
    from datadistill.train import SharpnessAware, sharpness_aware_grads

    gen = torch.Generator().manual_seed(0)
    net = torch.nn.Linear(6, 3)
    with torch.no_grad():
        net.weight.copy_(torch.randn(3, 6, generator=gen))
        net.bias.copy_(torch.randn(3, generator=gen))
    x, y = torch.randn(20, 6, generator=gen), torch.randint(0, 3, (20,), generator=gen)
    rho, alpha, eps = 0.05, 0.3, 1e-12
    w = [p.detach().clone() for p in net.parameters()]

    def grads_at(ws):
        ws = [t.detach().clone().requires_grad_() for t in ws]
        return torch.autograd.grad(F.cross_entropy(F.linear(x, ws[0], ws[1]), y), ws)

    g = grads_at(w)
    norm = torch.stack([(t.abs() * gi).norm() for t, gi in zip(w, g)]).norm()
    e = [gi * (rho / (norm + eps)) * t.pow(2) for t, gi in zip(w, g)]
    g2 = grads_at([t + ei for t, ei in zip(w, e)])
    inner = sum((a * b).sum() for a, b in zip(g, g2))
    n_new, n_old = torch.stack([t.norm() for t in g2]).norm(), torch.stack([t.norm() for t in g]).norm()
    cosine = inner / (n_new * n_old + eps)
    want = [b - alpha * (a - cosine * n_old * b / (n_new + eps)) for a, b in zip(g, g2)]

    def backward():
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        return loss.detach()

    loss = sharpness_aware_grads(net, backward, SharpnessAware(rho, alpha, adaptive=True))
    assert torch.allclose(loss, F.cross_entropy(F.linear(x, w[0], w[1]), y))
    assert all(torch.equal(p.detach(), t) for p, t in zip(net.parameters(), w))  # back at w
    for p, t, gi in zip(net.parameters(), want, g):
        assert torch.allclose(p.grad, t, atol=1e-7, rtol=1e-5)
        assert not torch.allclose(p.grad, gi, atol=1e-5)  # not plain SGD's gradient


@pytest.fixture(scope="module")
def ftd_buffers(digits, tmp_path_factory):
    from datadistill.experts import ExpertConfig, train_experts

    root = tmp_path_factory.mktemp("ftd")
    base = dict(dataset="digits", model="mlp", n_experts=1, epochs=2, batch_size=64)
    return {rho: train_experts(ExpertConfig(**base, sam_rho=rho), root / str(rho), data=digits)
            for rho in (None, 0.0, 0.01)}


def test_ftd_experts_at_rho_zero_are_plain_training_and_otherwise_differ(ftd_buffers):
    plain, zero, ftd = ftd_buffers[None], ftd_buffers[0.0], ftd_buffers[0.01]
    for e in range(3):
        a, b, c = plain.params(0, e), zero.params(0, e), ftd.params(0, e)
        assert all(torch.equal(a[n], b[n]) for n in a)  # rho 0: the same tensors, bit for bit
        if e == 0:
            assert all(torch.equal(a[n], c[n]) for n in a)  # the same seeded start
        else:  # the sharpness-aware steps move the trajectory, far beyond float rounding (~1e-8 here)
            assert max(float((a[n] - c[n]).abs().max()) for n in a) > 1e-5
    assert ftd.config.sam_rho == 0.01 and ftd.config.sam_alpha == 0.3 and ftd.config.sam_adaptive
    assert plain.config.sam_rho is None
    assert ftd.summary()["config"]["sam_rho"] == 0.01  # in every shard's metadata, so in a distilled file's too


def test_ftd_experts_have_their_own_folder_and_a_mismatch_is_named(ftd_buffers, digits, monkeypatch, tmp_path):
    from dataclasses import replace

    from datadistill.cli import main
    from datadistill.experts import ExpertConfig, ExpertError, default_experts_dir, train_experts
    from datadistill.experts.config import trajectory_key

    plain = ftd_buffers[None]
    with pytest.raises(ExpertError, match=r"sam_rho: stored None vs requested 0\.01"):
        train_experts(replace(plain.config, sam_rho=0.01), plain.directory, data=digits)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    base = ExpertConfig(dataset="digits", model="mlp")
    assert "sam_rho" not in trajectory_key(base)  # plain experts keep their folder names
    assert default_experts_dir(replace(base, sam_rho=0.01)) != default_experts_dir(base)
    assert default_experts_dir(replace(base, sam_rho=0.01)) != default_experts_dir(replace(base, sam_rho=0.05))
    for bad in ({"sam_rho": -0.1}, {"sam_rho": 0.01, "sam_alpha": -1}, {"sam_alpha": 0.4}):
        with pytest.raises(ExpertError, match="sam"):
            ExpertConfig(dataset="digits", **bad)
    assert main(["experts", "--dataset", "digits", "--sam-alpha", "0.4", "--out", str(tmp_path / "x")]) == 2

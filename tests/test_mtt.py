"""MTT on a tiny procedural set with a hand-made expert trajectory (the expert store has its own tests)."""

import pytest
import torch
import torch.nn.functional as F

from datadistill.functional import squared_distance, trajectory_loss
from datadistill.functional.unroll import unrolled_sgd
from datadistill.methods import Context, DivergenceError
from datadistill.methods.mtt import MTT, MTTConfig, mtt_synset
from datadistill.models import create_model
from datadistill.seeding import make_generator
from fake_experts import Trajectories


@pytest.fixture(scope="module")
def experts(toy):
    return Trajectories(toy, "mlp")


def make(toy, experts, ipc=2, seed=0, **kw):
    cfg = MTTConfig(**{"model": "mlp", "syn_steps": 5, "expert_epochs": 1, "max_start_epoch": 2, "lr_img": 10.0,
                       "lr_lr": 1e-4, "lr_teacher": 0.05, "dsa": False, **kw})
    s = mtt_synset(cfg, toy, ipc, "real", make_generator(seed, "init"))
    ctx = Context(toy, s, torch.device("cpu"), make_generator(seed, "m"), seed, ipc, iterations=10)
    return MTT(cfg, ctx, experts=experts), s


def test_trajectory_loss_is_normalized_distance():
    a = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}
    b = {"w": torch.tensor([0.0, 0.0]), "b": torch.tensor([1.0])}
    assert float(squared_distance(a, b)) == pytest.approx(1 + 4 + 4)
    assert float(trajectory_loss(b, b, a)) == pytest.approx(1.0)  # a student that did not move
    assert float(trajectory_loss(a, b, a)) == 0.0  # a student on the target
    with pytest.raises(KeyError):
        squared_distance(a, {"w": a["w"]})


def test_mtt_reduces_matching_loss_and_student_moves_toward_target(toy, experts):
    mtt, s = make(toy, experts)

    def loss_at_fixed_draw():
        saved, mtt.match.chunks = mtt.match.chunks, []
        v = float(mtt.matching_loss(0, 1, torch.Generator().manual_seed(5)).detach())
        mtt.match.chunks = saved
        return v

    before = loss_at_fixed_draw()
    images0 = s.images.detach().clone()
    for it in range(15):
        mtt.step(it)
    after = loss_at_fixed_draw()
    assert after < before
    assert after < 1.0  # ended nearer the target than the start it came from
    assert not torch.equal(images0, s.images.detach())
    # the learned step size moved, is stored in the set and is what evaluation will use
    assert s.learned_lr() == pytest.approx(float(mtt.match.alpha.detach()))
    assert s.learned_lr() != pytest.approx(0.05)


def test_gradients_reach_images_and_step_size(toy, experts):
    mtt, s = make(toy, experts)
    loss = mtt.matching_loss(1, 0, torch.Generator().manual_seed(0))
    loss.backward()
    assert s.images.grad is not None and float(s.images.grad.abs().sum()) > 0
    assert mtt.match.alpha.grad is not None and float(mtt.match.alpha.grad.abs()) > 0


def test_checkpointed_unroll_gives_same_loss_and_gradients(toy, experts):
    out = []
    for ckpt in (False, True):
        mtt, s = make(toy, experts, grad_checkpoint=ckpt)
        loss = mtt.matching_loss(0, 1, torch.Generator().manual_seed(3))
        loss.backward()
        out.append((float(loss.detach()), s.images.grad.clone(), float(mtt.match.alpha.grad)))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-5)
    assert torch.allclose(out[0][1], out[1][1], atol=1e-6, rtol=1e-4)
    assert out[0][2] == pytest.approx(out[1][2], rel=1e-4)


def test_student_steps_use_the_learned_step_size(toy, experts):
    """One unrolled step equals a hand-written SGD step with alpha."""
    mtt, s = make(toy, experts, syn_steps=1)
    start = experts.params(0, 0)
    x, y = s.images.detach(), s.labels
    new = unrolled_sgd(mtt.match.net, start, [(x, y, mtt.match.alpha)])
    net = create_model("mlp", 1, 3, (12, 12))
    net.load_state_dict(start)
    F.cross_entropy(net(x), y).backward()
    for k, p in net.named_parameters():
        assert torch.allclose(new[k], start[k] - 0.05 * p.grad, atol=1e-6)


def test_non_finite_loss_stops_before_any_update(toy, experts):
    bad = Trajectories.__new__(Trajectories)
    bad.traj = [[{k: v.clone() for k, v in st.items()} for st in experts.traj[0]]]
    for st in bad.traj[0]:
        for v in st.values():
            v.fill_(float("nan"))
    mtt, s = make(toy, bad)
    images0 = s.images.detach().clone()
    with pytest.raises(DivergenceError, match="lr_img"):
        mtt.step(0)
    assert torch.equal(images0, s.images.detach())


def test_step_size_is_clamped_positive_or_the_run_stops_unchanged(toy, experts):
    # an absurd lr_lr throws alpha far off: either below zero (clamped to min_lr) or above max_lr (stop)
    mtt, s = make(toy, experts, lr_lr=1e4, min_lr=1e-4)
    images0, lr0 = s.images.detach().clone(), s.learned_lr()
    try:
        mtt.step(0)
    except DivergenceError as e:
        assert "max_lr" in str(e)
        assert torch.equal(images0, s.images.detach()) and s.learned_lr() == pytest.approx(lr0)
    else:
        assert float(mtt.match.alpha.detach()) == pytest.approx(1e-4) and s.learned_lr() == pytest.approx(1e-4)


def test_state_dict_round_trip(toy, experts):
    a, _ = make(toy, experts)
    a.step(0)
    b, s2 = make(toy, experts)
    b.load_state_dict(a.state_dict())
    assert float(b.match.alpha.detach()) == pytest.approx(float(a.match.alpha.detach()))
    assert s2.learned_lr() == pytest.approx(float(a.match.alpha.detach()))


def test_batchnorm_students_are_refused(toy, experts):
    with pytest.raises(ValueError, match="BatchNorm"):
        make(toy, experts, model="convnet_bn")


def test_config_validation():
    with pytest.raises(ValueError, match="syn_steps"):
        MTTConfig(syn_steps=0)
    with pytest.raises(ValueError, match="min_lr"):
        MTTConfig(lr_teacher=2.0)
    assert MTTConfig(max_start_epoch=20, expert_epochs=2).epochs_needed == 21


def test_engine_keeps_the_last_good_state_when_the_loss_diverges(tmp_path, tiny_experts, monkeypatch):
    from datadistill.cli import main
    from datadistill.config import RunConfig, from_dict
    from datadistill.engine import run

    calls = {"n": 0}
    real = MTT.matching_loss

    def flaky(self, *a, **kw):
        calls["n"] += 1
        loss = real(self, *a, **kw)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(MTT, "matching_loss", flaky)
    cfg = from_dict(RunConfig, {
        "dataset": "procedural", "dataset_options": {"num_classes": 3, "size": 12, "per_class": 24},
        "method": "mtt", "ipc": 2, "iterations": 5, "checkpoint_every": 0,
        "method_config": {"experts": tiny_experts, "model": "convnet_w32", "syn_steps": 2, "expert_epochs": 1,
                          "max_start_epoch": 1},
        "eval": {"preset": "smoke", "epochs": 2, "n_models": 1, "model": "convnet_w32"}})
    with pytest.raises(DivergenceError, match="last good state \\(iteration 2\\)"):
        run(cfg, tmp_path / "r", progress=False, log=lambda *_: None)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 2 and torch.isfinite(state["synset"]["images"]).all()
    # the CLI reports it as one line, not a traceback
    calls["n"] = 0
    argv = ["distill", "--method", "mtt", "--dataset", "procedural", "--ipc", "2", "--iterations", "4",
            "--out", str(tmp_path / "c"), "dataset_options.num_classes=3", "dataset_options.size=12",
            "dataset_options.per_class=24", f"method_config.experts={tiny_experts}", "method_config.model=convnet_w32",
            "method_config.syn_steps=2", "method_config.expert_epochs=1", "method_config.max_start_epoch=1",
            "eval.preset=smoke", "eval.model=convnet_w32"]
    assert main(argv) == 2


def test_missing_experts_error_names_the_command(toy):
    from datadistill.experts import ExpertError

    cfg = MTTConfig(experts="/nonexistent/experts", model="mlp", max_start_epoch=3, expert_epochs=2)
    s = mtt_synset(cfg, toy, 1, "real", make_generator(0, "init"))
    ctx = Context(toy, s, torch.device("cpu"), make_generator(0, "m"), 0, 1)
    with pytest.raises(ExpertError, match="datadistill experts --dataset procedural --model mlp --experts 10 "
                                          "--epochs 4 --out /nonexistent/experts"):
        MTT(cfg, ctx)


def test_mtt_and_haba_extend_the_one_trajectory_config():
    import dataclasses

    from datadistill.methods.haba import HaBaConfig
    from datadistill.methods.trajectory import TrajectoryMatching

    shared = [f.name for f in dataclasses.fields(TrajectoryMatching)]
    for cls in (MTTConfig, HaBaConfig):
        assert issubclass(cls, TrajectoryMatching)
        assert [f.name for f in dataclasses.fields(cls)][: len(shared)] == shared  # flat: one mapping in YAML
        assert "epochs_needed" not in vars(cls)  # defined once
    assert HaBaConfig(max_start_epoch=20, expert_epochs=2).epochs_needed == 21
    assert (HaBaConfig().lr_img, HaBaConfig().min_lr, MTTConfig().lr_img) == (100.0, 0.001, 1000.0)


@pytest.mark.parametrize("preset", ["mtt-cifar10-ipc1", "mtt-cifar10-ipc10", "haba-cifar10-ipc1",
                                    "haba-cifar10-ipc10"])
def test_presets_load_without_deprecation_messages(preset, recwarn):
    from datadistill.config import DeprecatedKeyWarning, from_dict, load_preset
    from datadistill.methods import METHODS

    d = load_preset(preset)
    cfg = from_dict(METHODS.get(d["method"]).config, d["method_config"])
    assert cfg.syn_steps == d["method_config"]["syn_steps"]
    assert not [w for w in recwarn if issubclass(w.category, DeprecatedKeyWarning)]


def test_the_old_checkpoint_key_means_grad_checkpoint():
    from datadistill.config import ConfigError, DeprecatedKeyWarning, from_dict
    from datadistill.methods.haba import HaBaConfig

    for cls in (MTTConfig, HaBaConfig):
        with pytest.warns(DeprecatedKeyWarning, match="'checkpoint'.*'grad_checkpoint'"):
            assert from_dict(cls, {"checkpoint": True, "syn_steps": 3}).grad_checkpoint is True
        with pytest.raises(ConfigError, match="keep only 'grad_checkpoint'"):
            from_dict(cls, {"checkpoint": True, "grad_checkpoint": True})
    # a config.yaml saved before the rename (dataclasses.asdict of the old MTTConfig) still loads
    saved = {"experts": None, "model": "convnet", "syn_steps": 20, "expert_epochs": 3, "max_start_epoch": 25,
             "lr_img": 1000.0, "lr_lr": 1e-05, "lr_teacher": 0.01, "momentum": 0.5, "batch_syn": None, "dsa": True,
             "dsa_strategy": "color_crop_cutout_flip_scale_rotate", "checkpoint": False, "min_lr": 1e-6,
             "max_lr": 1.0}
    with pytest.warns(DeprecatedKeyWarning):
        assert from_dict(MTTConfig, saved) == MTTConfig()

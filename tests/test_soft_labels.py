"""Soft labels: the losses, the set's label vectors and their file, teachers, the evaluator's label
plans and DD-Ranking's scores."""

import math

import pytest
import torch
import torch.nn.functional as F

from datadistill.config import ConfigError
from datadistill.data import load_dataset
from datadistill.evaluation import evaluate, get_protocol, label_robust_score, score_set
from datadistill.evaluation.scores import augmentation_robust_score, normalized
from datadistill.functional.labels import LABEL_LOSSES, label_loss, per_sample_loss
from datadistill.synset import PixelSet, load_synset, save_synset
from datadistill.synset.io import read_meta
from datadistill.teachers import TeacherError, load_teacher, save_teacher, train_teacher


def _set(data, ipc=2, seed=0, **kw):
    return PixelSet.from_real(data.train, ipc, torch.Generator().manual_seed(seed), **kw)


def _one_hot(s):
    return F.one_hot(s.labels, s.num_classes).float()


# ---------------------------------------------------------------------- losses
def test_losses_against_their_definitions():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(6, 4, generator=g), torch.randint(0, 4, (6,), generator=g)
    p = torch.softmax(torch.randn(6, 4, generator=g), 1)
    assert torch.equal(per_sample_loss("soft_ce", z, F.one_hot(y, 4).float()), per_sample_loss("ce", z, y))
    ref_kl = 9 * F.kl_div(F.log_softmax(z / 3, 1), p, reduction="none").sum(1)
    assert torch.allclose(per_sample_loss("kl", z, p, 3.0), ref_kl, atol=1e-6)
    assert torch.allclose(per_sample_loss("mse", z, p), ((z - p) ** 2).mean(1))
    assert torch.allclose(label_loss("soft_ce")(z, p), F.cross_entropy(z, p))
    assert per_sample_loss("kl", z, torch.softmax(z / 2, 1), 2.0).abs().max() < 1e-5  # KL(p || p) = 0
    with pytest.raises(KeyError, match="Valid"):
        LABEL_LOSSES.get("hinge")
    with pytest.raises(ValueError, match="class indices"):
        per_sample_loss("ce", z, p)
    with pytest.raises(ValueError, match="> 0"):
        label_loss("kl", 0.0)


# ---------------------------------------------------------------------- the set and its file
def test_soft_labels_round_trip_through_the_file(toy, tmp_path):
    s = _set(toy)
    soft = torch.softmax(torch.randn(len(s), 3, generator=torch.Generator().manual_seed(1)), 1)
    s.set_soft_labels(soft)
    s.label_loss, s.label_temperature = "kl", 4.0
    x, y = s(torch.tensor([0, 5]))
    assert torch.equal(y, soft[[0, 5]])  # the set's targets are its vectors
    assert torch.equal(s.materialize()[1], s.labels)  # export and viewing stay hard
    assert s.storage_numel() == s.images.numel() + soft.numel()
    path = save_synset(tmp_path / "s.safetensors", s, toy.spec, method="test")
    assert read_meta(path)["format_version"] == 3  # older readers refuse it rather than drop the labels
    f = load_synset(path)
    assert torch.equal(f.synset.soft_labels, soft) and f.synset.label_loss == "kl" and f.synset.label_temperature == 4
    plain = save_synset(tmp_path / "h.safetensors", _set(toy), toy.spec)
    assert read_meta(plain)["format_version"] == 1 and load_synset(plain).synset.soft_labels is None
    with pytest.raises(ValueError, match="shape"):
        s.set_soft_labels(torch.zeros(len(s), 2))
    with pytest.raises(KeyError, match="Valid"):
        PixelSet(s.images, s.labels, 3, soft_labels=soft, label_loss="hinge")


# ---------------------------------------------------------------------- evaluation
def test_one_hot_soft_labels_evaluate_exactly_like_hard_labels(toy):
    p = get_protocol("smoke", epochs=4, n_models=2, model="convnet_w32")
    hard = _set(toy)
    soft = _set(toy)
    soft.set_soft_labels(_one_hot(soft))  # label_loss soft_ce: -sum p log q = CE of the class
    a, b = evaluate(hard, toy, p), evaluate(soft, toy, p)
    assert a.accuracies == b.accuracies
    assert b.extra["labels"]["labels"] == "soft" and b.extra["labels"]["label_loss"] == "soft_ce"


def test_evaluation_trains_on_the_soft_labels_it_is_given(toy):
    p = get_protocol("smoke", epochs=4, n_models=1, model="convnet_w32")
    s = _set(toy)
    s.set_soft_labels(_one_hot(s).roll(1, dims=1))  # every image labelled as the next class
    wrong = evaluate(s, toy, p).mean
    right = evaluate(s, toy, p.with_(labels="hard")).mean
    assert wrong < right  # the vectors, not the classes, were trained on
    with pytest.raises(ConfigError, match="no soft labels"):
        evaluate(_set(toy), toy, p.with_(labels="soft"))


@pytest.fixture(scope="module")
def toy_teacher(toy, tmp_path_factory):
    t = train_teacher(toy, model="convnet_w32", epochs=3, batch_size=16, augment=False)
    return save_teacher(tmp_path_factory.mktemp("teacher") / "t.safetensors", t), t


def test_teacher_file_round_trip_and_checks(toy, digits, toy_teacher, tmp_path):
    path, t = toy_teacher
    u = load_teacher(path)
    x = toy.test.images[:7]
    assert torch.allclose(u.logits(x), t.logits(x), atol=1e-6)  # the trained net is channels-last
    assert torch.allclose(u.probs(x, 2.0).sum(1), torch.ones(7))
    d = u.describe()
    assert d["model"] == "convnet_w32" and d["dataset"] == toy.spec.name and len(d["sha256"]) == 64
    assert d["source"]["kind"] == "trained" and 0 <= d["test_accuracy"] <= 100
    with pytest.raises(TeacherError, match="does not fit"):
        u.check_fits(digits.spec)
    with pytest.raises(TeacherError, match="datadistill teacher"):
        load_teacher(tmp_path / "none.safetensors")
    other = save_synset(tmp_path / "s.safetensors", _set(toy), toy.spec)
    with pytest.raises(TeacherError, match="not a teacher file"):
        load_teacher(other)


def test_teacher_relabels_every_augmented_batch(toy, toy_teacher, monkeypatch):
    path, _ = toy_teacher
    seen = []
    from datadistill.teachers import Teacher

    real_probs = Teacher.probs

    def spy(self, x, temperature=1.0):
        seen.append((x.detach().clone(), temperature))
        return real_probs(self, x, temperature)

    monkeypatch.setattr(Teacher, "probs", spy)
    p = get_protocol("smoke", epochs=2, n_models=1, model="convnet_w32", augment="dsa", labels="teacher",
                     teacher=str(path), label_temperature=3.0, batch_size=4)
    s = _set(toy)
    r = evaluate(s, toy, p)
    assert len(seen) == 2 * math.ceil(len(s) / 4)  # one relabelling per batch
    assert all(t == 3.0 for _, t in seen)
    assert not any(torch.equal(x, s.images[: x.shape[0]]) for x, _ in seen)  # the augmented images
    info = r.extra["labels"]
    assert info["labels"] == "teacher" and info["label_loss"] == "kl" and info["teacher"]["sha256"]
    with pytest.raises(ValueError, match="teacher file"):
        get_protocol("smoke", labels="teacher")


# ---------------------------------------------------------------------- scores
def test_score_normalization():
    assert normalized(1.0) == pytest.approx(1.0) and normalized(-1.0) == pytest.approx(0.0)
    assert label_robust_score(0.0, 0.0) == pytest.approx((1 - 1 / math.e) / (math.e - 1 / math.e))
    assert label_robust_score(0.2, 0.1) > label_robust_score(0.1, 0.1) > label_robust_score(0.1, 0.2)
    assert augmentation_robust_score(0.1, 0.1) == pytest.approx(normalized(0.1))


def test_a_set_scored_against_itself_adds_nothing(toy):
    s = _set(toy)
    p = get_protocol("smoke", epochs=3, n_models=2, model="convnet_w32")
    sc = score_set(s, toy, p, full_accuracy=0.9, random_set=s)
    assert sc.ior == 0.0 and sc.accuracy == sc.random == sc.hard
    assert sc.hlr == pytest.approx(0.9 - sc.hard)
    d = sc.to_dict()
    assert d["ior"] == 0.0 and 0 <= d["lrs"] <= 1 and d["random_labels"] == "hard"
    with pytest.raises(ConfigError, match="fraction"):
        score_set(s, toy, p, full_accuracy=95.0)
    with pytest.raises(ConfigError, match="validation"):
        score_set(s, toy, p, full_accuracy=0.9, lr_grid=(0.01, 0.1))


def test_scores_of_a_soft_labelled_set_give_the_random_subset_the_teachers_labels(toy, toy_teacher):
    path, _ = toy_teacher
    s = _set(toy, seed=3)
    s.set_soft_labels(_one_hot(s))
    p = get_protocol("smoke", epochs=2, n_models=1, model="convnet_w32", teacher=str(path))
    sc = score_set(s, toy, p, full_accuracy=0.9)
    assert sc.random_labels == "teacher (stored)"
    sc2 = score_set(s, toy, p.with_(teacher=None), full_accuracy=0.9)
    assert sc2.random_labels == "hard"


def test_learning_rate_is_chosen_on_the_validation_split(toy, monkeypatch):
    val = load_dataset("procedural", num_classes=3, channels=1, size=12, per_class=24, seed=0, validation=0.25)
    s = _set(toy)
    p = get_protocol("smoke", epochs=2, n_models=1, model="convnet_w32")
    sc = score_set(s, toy, p, full_accuracy=0.9, validation=val, lr_grid=(1e-6, 0.05))
    assert set(sc.lr) == {"set", "random", "hard"} and all(v in (1e-6, 0.05) for v in sc.lr.values())

    # a split-aware evaluator: on the validation split the small lr wins, on the test split the large
    # one; a choice made on the test split picks 0.05 and fails here
    from datadistill.evaluation import EvalReport, scores

    seen = []

    def fake(synset, data, protocol, **kw):
        lr = protocol.optimizer.lr
        seen.append((data is val, lr))
        acc = (0.8 if lr == 1e-6 else 0.2) if data is val else (0.2 if lr == 1e-6 else 0.8)
        return EvalReport(kw.get("model") or protocol.model, protocol, [acc], [0], 0.0, lr)

    monkeypatch.setattr(scores, "evaluate", fake)
    sc = score_set(s, toy, p, full_accuracy=0.9, validation=val, lr_grid=(1e-6, 0.05))
    assert sc.lr == {"set": 1e-6, "random": 1e-6, "hard": 1e-6}
    assert sorted({lr for on_val, lr in seen if on_val}) == [1e-6, 0.05]  # the grid is tried on validation only
    assert {lr for on_val, lr in seen if not on_val} == {1e-6}  # the test split sees only the chosen lr


# ---------------------------------------------------------------------- the command line
def test_teacher_and_scores_from_the_command_line(toy, tmp_path, capsys):
    import json

    from datadistill.cli import main

    teacher = tmp_path / "t.safetensors"
    s = _set(toy)
    f = save_synset(tmp_path / "s.safetensors", s, toy.spec, method="random")
    t = train_teacher(toy, model="convnet_w32", epochs=1, batch_size=16, augment=False)
    save_teacher(teacher, t)
    assert main(["teacher", "--dataset", "digits", "--out", str(teacher), "--no-progress"]) == 2  # exists, no --force
    assert "exists" in capsys.readouterr().err
    assert main(["evaluate", str(f), "--protocol", "smoke", "n_models=1", "epochs=2", "model=convnet_w32",
                 "labels=teacher", f"teacher={teacher}", "--scores", "--full-accuracy", "90", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["convnet_w32"]
    assert out["random_labels"] == "teacher" and out["full"] == 90.0
    assert out["reports"]["set"]["labels"]["teacher"]["sha256"] == load_teacher(teacher).sha256
    assert main(["evaluate", str(f), "--scores"]) == 2
    assert "--full-accuracy" in capsys.readouterr().err


def test_evaluate_prints_the_labels_it_trained_on(toy, tmp_path, capsys):
    from datadistill.cli import main

    s = _set(toy)
    s.set_soft_labels(_one_hot(s))
    f = save_synset(tmp_path / "s.safetensors", s, toy.spec, method="random")
    assert main(["evaluate", str(f), "--protocol", "smoke", "n_models=1", "epochs=1", "model=convnet_w32"]) == 0
    assert "labels: soft (soft_ce, temperature 1)" in capsys.readouterr().out


class _Killed(Exception):
    pass


def _teacher_killed_after(monkeypatch, data, epochs_done, checkpoint, **kw):
    """train_teacher stopped right after its checkpoint of epoch ``epochs_done`` (as a kill would)."""
    import datadistill.teachers as teachers

    real = teachers.train_classifier

    def stopping(*a, on_checkpoint=None, **k):
        def save(state):
            on_checkpoint(state)
            if state["epoch"] == epochs_done:
                raise _Killed

        return real(*a, on_checkpoint=save, **k)

    monkeypatch.setattr(teachers, "train_classifier", stopping)
    with pytest.raises(_Killed):
        train_teacher(data, checkpoint=checkpoint, **kw)
    monkeypatch.setattr(teachers, "train_classifier", real)


@pytest.mark.parametrize("model", ["convnet_w32", "convnet_bn"])  # BatchNorm: its running statistics resume too
def test_an_interrupted_teacher_goes_on_from_its_checkpoint_bit_for_bit(toy, tmp_path, monkeypatch, model):
    kw = {"model": model, "epochs": 4, "batch_size": 16, "augment": True, "seed": 3}  # lr x0.1 after epoch 2
    whole = train_teacher(toy, **kw)
    ckpt, lines = tmp_path / "t.safetensors.partial", []
    _teacher_killed_after(monkeypatch, toy, 3, ckpt, **kw)  # past the decay: the optimizer's state matters
    resumed = train_teacher(toy, checkpoint=ckpt, log=lines.append, **kw)
    assert lines == [f"resuming the teacher from {ckpt} after epoch 3 of 4"]
    a, b = whole.net.state_dict(), resumed.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.meta["test_accuracy"] == whole.meta["test_accuracy"]


def test_a_checkpoint_of_other_settings_or_a_damaged_one_starts_over(toy, tmp_path, monkeypatch):
    kw = {"model": "convnet_w32", "epochs": 2, "batch_size": 16, "augment": False}
    ckpt, lines = tmp_path / "t.partial", []
    _teacher_killed_after(monkeypatch, toy, 1, ckpt, lr=0.05, **kw)
    fresh = train_teacher(toy, **kw)
    other = train_teacher(toy, checkpoint=ckpt, log=lines.append, **kw)
    assert lines == [f"the teacher's checkpoint {ckpt} was made with other settings (lr 0.05 -> 0.01); starting over"]
    assert all(torch.equal(x, y) for x, y in zip(fresh.net.state_dict().values(), other.net.state_dict().values()))
    ckpt.write_bytes(b"not a checkpoint")
    lines.clear()
    train_teacher(toy, checkpoint=ckpt, log=lines.append, **kw)
    assert lines == [f"the teacher's checkpoint {ckpt} cannot be read (UnpicklingError); starting over"]


def test_the_teacher_command_resumes_its_partial_run_and_removes_the_checkpoint(toy, tmp_path, monkeypatch, capsys):
    from datadistill.cli import main
    from datadistill.cli.teacher import checkpoint_path

    out = tmp_path / "t.safetensors"
    monkeypatch.setattr("datadistill.data.load_dataset", lambda *a, **k: toy)
    _teacher_killed_after(monkeypatch, toy, 1, checkpoint_path(out), model="convnet_w32", epochs=2, lr=0.01,
                          batch_size=256, augment=True, seed=0)
    assert checkpoint_path(out).is_file() and not out.exists()
    assert main(["teacher", "--dataset", "digits", "--model", "convnet_w32", "--epochs", "2", "--out", str(out),
                 "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert f"resuming the teacher from {checkpoint_path(out)} after epoch 1 of 2" in said
    assert out.is_file() and not checkpoint_path(out).exists()


def test_a_teacher_from_experts_is_the_experts_network(tiny_experts, toy):
    from datadistill.experts import ExpertBuffer
    from datadistill.teachers import teacher_from_experts

    t = teacher_from_experts(tiny_experts, expert=1, epoch=1)
    buf = ExpertBuffer.open(tiny_experts)
    stored = buf.params(1, 1)
    assert all(torch.equal(p, stored[k]) for k, p in t.net.named_parameters())
    assert t.model == "convnet_w32" and t.spec.name == "procedural" and t.meta["source"]["epoch"] == 1
    assert t.meta["test_accuracy"] == buf.summary()["experts"][1]["test_acc"][1]
    from datadistill.train import accuracy

    data = load_dataset("procedural", num_classes=3, size=12, per_class=24)  # the experts' data (conftest)
    assert round(100 * accuracy(t.net, data.test), 2) == pytest.approx(t.meta["test_accuracy"], abs=0.01)
    t.check_fits(data.spec)
    with pytest.raises(TeacherError, match="trained on 'procedural', not 'digits'"):
        teacher_from_experts(tiny_experts, dataset="digits")


def test_hard_labelled_sets_are_not_trained_twice_for_their_scores(toy, monkeypatch):
    import datadistill.evaluation.scores as scores

    calls = []
    real = scores.evaluate
    monkeypatch.setattr(scores, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    p = get_protocol("smoke", epochs=2, n_models=1, model="convnet_w32")
    sc = score_set(_set(toy), toy, p, full_accuracy=0.9)
    assert len(calls) == 2 and sc.hard == sc.accuracy and sc.reports["hard"] is sc.reports["set"]
    soft = _set(toy)
    soft.set_soft_labels(_one_hot(soft))
    calls.clear()
    score_set(soft, toy, p, full_accuracy=0.9)
    assert len(calls) == 3

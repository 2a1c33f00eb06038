import pytest
import torch

from datadistill.evaluation import PROTOCOLS, evaluate, evaluate_full, evaluate_models, format_table, get_protocol
from datadistill.synset import PixelSet
from datadistill.train import lr_at


def test_presets_follow_the_field_standard():
    dc = get_protocol("dc")
    o = dc.optimizer
    assert (dc.schedule.epochs, o.lr, o.momentum, o.weight_decay, dc.batch_size, dc.augment.name, dc.model) == (
        300, 0.01, 0.9, 5e-4, 256, "none", "convnet")
    assert dc.schedule.milestones == (150,)
    dsa = get_protocol("dsa")
    assert dsa.schedule.epochs == 1000 and dsa.augment.name == "dsa" and dsa.schedule.milestones == (500,)
    assert lr_at(149, 0.01, (150,)) == 0.01 and abs(lr_at(150, 0.01, (150,)) - 0.001) < 1e-12
    assert {"dc", "dsa", "mtt", "smoke"} <= set(PROTOCOLS.names())
    with pytest.raises(ValueError, match="valid: "):
        get_protocol("dc", epoch=3)
    with pytest.raises(ValueError, match="unknown augment"):
        get_protocol("dc", augment="flip")


def test_evaluate_reports_final_accuracy_per_model(toy):
    s = PixelSet.from_real(toy.train, 2, torch.Generator().manual_seed(0))
    p = get_protocol("smoke", epochs=5, n_models=3, model="convnet_w32")
    r = evaluate(s, toy, p)
    assert len(r.accuracies) == 3 and r.seeds == [0, 1, 2] and all(0 <= a <= 1 for a in r.accuracies)
    mean = sum(r.accuracies) / 3
    assert abs(r.mean - mean) < 1e-12
    assert abs(r.std - (sum((a - mean) ** 2 for a in r.accuracies) / 3) ** 0.5) < 1e-12  # population std
    again = evaluate(s, toy, p)
    assert again.accuracies == r.accuracies  # seeded: the same protocol gives the same numbers
    d = r.to_dict()
    assert d["n_models"] == 3 and d["protocol"]["epochs"] == 5 and abs(d["acc_mean"] - 100 * r.mean) < 1e-9
    assert s.images.grad is None  # evaluation never back-propagates into the set


def test_evaluate_with_dsa_and_cross_architecture_table(toy):
    s = PixelSet.from_real(toy.train, 2, torch.Generator().manual_seed(0))
    p = get_protocol("smoke", epochs=2, n_models=1, augment="dsa")
    reports = evaluate_models(s, toy, p, ["convnet_w32", "mlp"])
    table = format_table(reports)
    assert "| convnet_w32 |" in table and "| mlp |" in table and "dsa" in table


def test_full_baseline_trains_on_the_whole_training_set(toy):
    r = evaluate_full(toy, get_protocol("smoke", epochs=40, n_models=1, model="convnet_w32"))
    assert r.extra["baseline"] == "full" and r.mean > 0.6  # the toy classes are easy with all the data


def test_learned_lr_is_used_when_the_protocol_asks(toy):
    s = PixelSet.from_real(toy.train, 1, torch.Generator().manual_seed(0), lr=0.05)
    p = get_protocol("smoke", epochs=1, n_models=1, model="mlp")
    assert evaluate(s, toy, p).lr == 0.01
    assert abs(evaluate(s, toy, p.with_(use_learned_lr=True)).lr - 0.05) < 1e-7

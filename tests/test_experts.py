"""Expert trajectories (MTT's buffer): what is stored, reproducibility, resume, parallel indices, errors."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

import datadistill.experts.buffer as buffer_mod
import datadistill.experts.train as train_mod
from datadistill.cli import main
from datadistill.augment.training import dsa_augment
from datadistill.experts import ExpertBuffer, ExpertConfig, ExpertError, default_experts_dir, train_experts
from datadistill.models import create_model
from datadistill.seeding import make_generator
from datadistill.train import real_batches, train_classifier


@pytest.fixture(scope="module")
def cfg(toy):
    return ExpertConfig(dataset="procedural", model="ConvNetW32", n_experts=2, epochs=2, batch_size=16,
                        dataset_options=dict(toy.spec.extra))


@pytest.fixture(scope="module")
def whole(cfg, toy, tmp_path_factory):
    return train_experts(cfg, tmp_path_factory.mktemp("experts") / "whole", data=toy)


def _fresh(cfg, toy, i):
    s = toy.spec
    return create_model(cfg.model, s.channels, s.num_classes, s.image_size, seed=cfg.expert_seed(i))


def _shards(directory):
    return {p.name: load_file(str(p)) for p in sorted(directory.glob("expert-*.safetensors"))}


def _assert_same_shards(a, b):
    sa, sb = _shards(a), _shards(b)
    assert list(sa) == list(sb) == ["expert-00000.safetensors", "expert-00001.safetensors"]
    for name in sa:
        assert sa[name].keys() == sb[name].keys()
        for k in sa[name]:
            assert torch.equal(sa[name][k], sb[name][k]), (name, k)
    for x, y in zip(ExpertBuffer.open(a).shards, ExpertBuffer.open(b).shards):
        assert {**x.meta, "seconds": 0} == {**y.meta, "seconds": 0}


def test_every_epoch_is_stored_with_the_models_parameter_names(whole, cfg, toy):
    assert len(whole) == 2 and whole.epochs == 2 and whole.complete and whole.indices == [0, 1]
    assert whole.config.model == "convnet_w32"  # aliases are stored canonical
    names = dict(_fresh(cfg, toy, 0).named_parameters())
    stored = load_file(str(whole.directory / "expert-00001.safetensors"))
    assert set(stored) == {f"e{e:03d}/{n}" for e in range(3) for n in names}
    for e in range(3):
        p = whole.params(1, e)
        assert list(p) == list(names)
        assert all(p[n].shape == names[n].shape and p[n].is_contiguous() for n in names)
    s = whole.summary()
    assert [len(x["test_acc"]) for x in s["experts"]] == [3, 3] and s["finished"] == 2
    assert json.loads((whole.directory / "manifest.json").read_text())["finished"] == 2
    assert not list(whole.directory.glob(".*.tmp"))
    with pytest.raises(ExpertError, match="epoch 3 out of range"):
        whole.params(0, 3)


def test_trajectory_starts_at_the_seeded_model_and_ends_where_plain_training_ends(whole, cfg, toy):
    for i in range(2):
        fresh = _fresh(cfg, toy, i)
        start = whole.params(i, 0)
        assert all(torch.equal(start[n], p) for n, p in fresh.named_parameters())
        train_classifier(fresh, real_batches(toy.train), epochs=2, lr=0.01, momentum=0.0, weight_decay=0.0,
                         batch_size=16, generator=make_generator(cfg.expert_seed(i), "expert-train"),
                         augment=dsa_augment(toy.spec, cfg.dsa_strategy))
        end = whole.params(i, 2)
        assert all(torch.equal(end[n], p.detach().contiguous()) for n, p in fresh.named_parameters())
        assert not torch.equal(whole.params(i, 1)["classifier.weight"], start["classifier.weight"])
    assert not torch.equal(whole.params(0, 0)["classifier.weight"], whole.params(1, 0)["classifier.weight"])


def test_crash_inside_an_expert_stores_nothing_of_it_and_the_rerun_matches(whole, cfg, toy, tmp_path, monkeypatch):
    calls = []

    def crashing(*args, on_epoch_end, **kw):
        def hook(epoch, model):
            on_epoch_end(epoch, model)
            calls.append(epoch)
            if len(calls) == 3:  # expert 1, after its first epoch
                raise KeyboardInterrupt

        return train_classifier(*args, on_epoch_end=hook, **kw)

    monkeypatch.setattr(train_mod, "train_classifier", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_experts(cfg, tmp_path / "b", data=toy)
    assert [p.name for p in (tmp_path / "b").iterdir() if not p.name.startswith("manifest")] == \
        ["expert-00000.safetensors"]
    assert len(ExpertBuffer.open(tmp_path / "b")) == 1 and not ExpertBuffer.open(tmp_path / "b").complete
    monkeypatch.setattr(train_mod, "train_classifier", train_classifier)
    resumed = train_experts(cfg, tmp_path / "b", data=toy)
    assert len(resumed) == 2
    _assert_same_shards(whole.directory, tmp_path / "b")


def test_disjoint_indices_in_two_calls_give_the_shards_of_one_call(whole, cfg, toy, tmp_path):
    half = train_experts(cfg, tmp_path / "p", indices=[1], data=toy)
    assert half.indices == [1] and len(half) == 1
    (tmp_path / "p" / "manifest.json").write_text("{}")  # a stale manifest is not trusted
    assert torch.equal(half.params(0, 2)["classifier.bias"], whole.params(1, 2)["classifier.bias"])
    train_experts(cfg, tmp_path / "p", indices=[0], data=toy)
    _assert_same_shards(whole.directory, tmp_path / "p")
    assert ExpertBuffer.open(tmp_path / "p").indices == [0, 1]


def test_open_and_check_fits_name_the_mismatching_fields(whole, cfg, tmp_path):
    with pytest.raises(ExpertError, match=r"lr: stored 0\.01 vs requested 0\.1.*zca: stored None vs requested 0\.1"):
        ExpertBuffer.open(whole.directory, expect=replace(cfg, lr=0.1, zca=0.1))
    ExpertBuffer.open(whole.directory, expect=replace(cfg, n_experts=50, epochs=30, seed=3))  # not trajectory-defining
    with pytest.raises(ExpertError, match=r"\(augment: stored 'dsa' vs requested 'none'\)"):
        ExpertBuffer.open(whole.directory, expect=replace(cfg, augment="none"))
    with pytest.raises(ExpertError, match=r"\(dsa_strategy: stored 'color_crop_cutout_flip_scale_rotate' vs "
                       r"requested 'flip'\)"):
        ExpertBuffer.open(whole.directory, expect=replace(cfg, dsa_strategy="flip"))
    with pytest.raises(ExpertError, match="no expert trajectories"):
        ExpertBuffer.open(tmp_path / "nothing")
    with pytest.raises(ExpertError, match="epochs: stored 2 vs requested 3"):
        train_experts(replace(cfg, epochs=3), whole.directory)
    whole.check_fits(dataset="procedural", model="ConvNetW32", zca=None, need_epochs=2)
    with pytest.raises(ExpertError, match=r"model: stored 'convnet_w32' vs requested 'mlp'.*2 per expert, 3 needed"):
        whole.check_fits(dataset="procedural", model="mlp", zca=None, need_epochs=3)
    with pytest.raises(ExpertError, match="zca"):
        whole.check_fits(dataset="procedural", model="convnet_w32", zca=0.1, need_epochs=1)


def test_params_reads_only_the_requested_epoch(whole, monkeypatch):
    read = []
    real = buffer_mod.safe_open

    class Recording:
        def __init__(self, *a, **kw):
            self.f = real(*a, **kw)

        def __enter__(self):
            self.inner = self.f.__enter__()
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

        def get_tensor(self, key):
            read.append(key)
            return self.inner.get_tensor(key)

    monkeypatch.setattr(buffer_mod, "safe_open", Recording)
    p = whole.params(1, 1)
    assert read and all(k.startswith("e001/") for k in read) and len(read) == len(p)


def test_augment_none_with_an_mlp_is_plain_sgd(toy, tmp_path):
    cfg = ExpertConfig(dataset="procedural", model="MLP", n_experts=1, epochs=1, batch_size=32, augment="none",
                       dataset_options=dict(toy.spec.extra))
    buf = train_experts(cfg, tmp_path / "m", data=toy)
    net = _fresh(cfg, toy, 0)
    train_classifier(net, real_batches(toy.train), epochs=1, lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=32,
                     generator=make_generator(cfg.expert_seed(0), "expert-train"))
    assert all(torch.equal(buf.params(0, 1)[n], p.detach()) for n, p in net.named_parameters())


def test_zca_whitens_the_data_before_training(toy, tmp_path):
    from datadistill.data.zca import whiten_dataset

    cfg = ExpertConfig(dataset="procedural", model="mlp", n_experts=1, epochs=1, batch_size=32, augment="none",
                       zca=0.1, dataset_options=dict(toy.spec.extra))
    buf = train_experts(cfg, tmp_path / "z", data=toy)
    buf.check_fits(dataset="procedural", model="mlp", zca=0.1, need_epochs=1)
    white = whiten_dataset(toy, 0.1)
    net = _fresh(cfg, toy, 0)
    train_classifier(net, real_batches(white.train), epochs=1, lr=0.01, momentum=0.0, weight_decay=0.0, batch_size=32,
                     generator=make_generator(cfg.expert_seed(0), "expert-train"))
    assert all(torch.equal(buf.params(0, 1)[n], p.detach()) for n, p in net.named_parameters())
    with pytest.raises(ExpertError, match="whitened already"):
        train_experts(replace(cfg, zca=None), tmp_path / "z2", data=white)


def test_config_validation_and_default_folder(monkeypatch, tmp_path):
    assert ExpertConfig(dataset="procedural", model="ConvNet").model == "convnet"
    for bad in ({"model": "nope"}, {"n_experts": 0}, {"epochs": -1}, {"augment": "zca"}, {"zca": -0.1},
                {"lr": 0}, {"dsa_strategy": "colour"}, {"batch_size": 2.5}):
        with pytest.raises(ExpertError):
            ExpertConfig(dataset="procedural", **bad)
    ExpertConfig(dataset="procedural", augment="none", dsa_strategy="whatever")  # unused without DSA
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    base = ExpertConfig(dataset="procedural", model="ConvNet")
    d = default_experts_dir(base)
    assert d.parent == tmp_path / "datadistill" / "experts" and d.name.startswith("procedural-convnet-")
    assert default_experts_dir(replace(base, n_experts=3, epochs=5, seed=1)) == d
    assert default_experts_dir(replace(base, lr=0.02)) != d


def test_cli_trains_in_parts_resumes_and_reports_errors(tmp_path, capsys):
    out = str(tmp_path / "buf")
    args = ["experts", "--dataset", "procedural", "--model", "ConvNetW32", "--experts", "2", "--epochs", "1",
            "--batch-size", "32", "--out", out, "--device", "cpu", "--no-progress"]
    assert main([*args, "--indices", "1"]) == 0
    assert "1 of 2 experts finished" in capsys.readouterr().out
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "2 of 2 experts finished (convnet_w32 on procedural, 1 epoch each)" in text and "test accuracy" in text
    assert ExpertBuffer.open(out).complete
    assert main([*args, "--lr", "0.1"]) == 2
    assert "lr: stored 0.01 vs requested 0.1" in capsys.readouterr().err
    assert main([*args, "--indices", "0-x"]) == 2
    assert main([*args, "--indices", "0-2"]) == 2
    assert "out of range" in capsys.readouterr().err

"""Dataset Distillation's other settings: weight-init schemes, pretrained pools (fixed / random /
adaptation), the poisoning objective, the real-image baselines and the CLI spellings."""

import json
import math

import pytest
import torch
import yaml

from datadistill.cli import main
from datadistill.config import ConfigError
from datadistill.evaluation import evaluate, get_protocol
from datadistill.methods import Context
from datadistill.methods.dd import (DD, DDConfig, Pool, PoolConfig, PoolError, baseline_images, before_after, kmeans,
                                   make_set, networks_from_meta, pretrain_pool)
from datadistill.models import create_model
from datadistill.registry import UnknownNameError
from datadistill.seeding import make_generator
from datadistill.synset import load_synset


def test_xavier_init_zeroes_biases_and_scales_weights_by_fan():
    net = create_model("lenet", 1, 10, 28, seed=0, weight_init="xavier")
    w = net.fc_1.weight.detach()
    fan_in, fan_out = w.shape[1], w.shape[0]
    assert float(net.fc_1.bias.detach().abs().max()) == 0.0
    assert abs(float(w.std()) - math.sqrt(2 / (fan_in + fan_out))) < 0.01
    again = create_model("lenet", 1, 10, 28, seed=0, weight_init="xavier")
    assert torch.equal(again.fc_1.weight, w)  # seeded
    with pytest.raises(UnknownNameError, match="default, kaiming, lecun, xavier"):
        create_model("lenet", 1, 10, 28, weight_init="xavir")
    with pytest.raises(UnknownNameError):
        get_protocol("dd", weight_init="nope")


@pytest.fixture(scope="module")
def pool(toy, tmp_path_factory):
    cfg = PoolConfig(dataset="procedural", n_nets=4, held_out=2, epochs=15, batch_size=16,
                     dataset_options=dict(toy.spec.extra))
    return pretrain_pool(cfg, toy, tmp_path_factory.mktemp("pool") / "p", progress=False)


def test_pool_trains_stores_and_splits_networks(pool, toy):
    assert len(pool) == 4 and pool.train_indices == [0, 1] and pool.held_out_indices == [2, 3]
    a, b = pool.network(0), pool.network(1)
    assert not torch.equal(a.fc_1.weight, b.fc_1.weight)  # each network from its own seed
    assert all(acc > 100 / 3 for acc in pool.accuracies([0, 1, 2, 3]))  # trained: above chance on the toy set
    manifest = json.loads((pool.path / "manifest.json").read_text())
    assert [n["file"] for n in manifest["nets"]] == [f"net-{i:03d}.safetensors" for i in range(4)]


def test_pool_resumes_an_interrupted_run_and_refuses_another_config(pool, toy, tmp_path):
    import shutil

    p = tmp_path / "copy"
    shutil.copytree(pool.path, p)
    manifest = json.loads((p / "manifest.json").read_text())
    manifest["nets"] = manifest["nets"][:3]  # as if killed while training the 4th network
    (p / "manifest.json").write_text(json.dumps(manifest))
    (p / "net-003.safetensors").unlink()
    with pytest.raises(PoolError, match="incomplete"):
        Pool(p)
    kept = (p / "net-001.safetensors").read_bytes()
    resumed = pretrain_pool(pool.config, toy, p, progress=False)
    assert len(resumed) == 4 and (p / "net-001.safetensors").read_bytes() == kept
    assert torch.equal(resumed.network(3).fc_1.weight, pool.network(3).fc_1.weight)  # same seed, same network
    other = PoolConfig(**{**pool.manifest["config"], "epochs": 3})
    with pytest.raises(PoolError, match="different configuration"):
        pretrain_pool(other, toy, p, progress=False)
    with pytest.raises(PoolError, match="datadistill pretrain"):
        Pool(tmp_path / "nothing")


def _dd(toy, ipc=1, seed=0, **kw):
    cfg = DDConfig(batch_real=32, **kw)
    s = make_set(cfg, toy, ipc, kw.pop("image_init", "noise"), make_generator(seed, "init"))
    return s, DD(cfg, Context(toy, s, torch.device("cpu"), make_generator(seed, "m"), seed, ipc, iterations=10))


@pytest.mark.parametrize("setting", ["pretrained_fixed", "pretrained_random"])
def test_pretrained_settings_train_from_and_evaluate_on_the_right_networks(pool, toy, setting, tmp_path):
    s, dd = _dd(toy, net_init=setting, pretrained=str(pool.path), n_nets=2)
    assert len(dd.pretrained) == (1 if setting == "pretrained_fixed" else 2)
    x0 = s.images.detach().clone()
    dd.step(0)
    assert not torch.equal(x0, s.images.detach())
    nets = dd.eval_networks()
    expect = [0] if setting == "pretrained_fixed" else [2, 3]  # held-out networks for the random setting
    assert nets.indices == expect and len(nets) == len(expect)
    assert torch.equal(nets(0, "lenet").fc_1.weight, pool.network(expect[0]).fc_1.weight)
    r = evaluate(s, toy, get_protocol("dd", n_models=20), networks=nets)
    assert len(r.accuracies) == len(expect)  # capped at the networks there are
    meta = dd.file_meta()
    assert meta["net_init"]["setting"] == setting and meta["setting"] == setting
    again = networks_from_meta(json.loads(json.dumps(meta)), toy.spec)
    assert again.indices == expect
    with pytest.raises(ConfigError, match="pretrained 'lenet'"):
        nets(0, "convnet")


def test_pool_for_other_images_is_refused(pool, digits):
    with pytest.raises(PoolError, match="cannot start networks for digits"):
        pool.check_fits(digits.spec)


def test_adaptation_setting_is_named_after_source_and_target():
    assert DDConfig(net_init="pretrained_random", source_dataset="digits").setting("mnist") == "adapt-digits-mnist"
    assert DDConfig(net_init="pretrained_random").setting("mnist") == "pretrained_random"
    assert DDConfig(net_init="random").setting("mnist") == "random"
    assert DDConfig(net_init="pretrained_random", objective="poison").setting("mnist") == "poison"


def test_poisoning_relabels_the_attack_class_and_raises_attack_success(pool, toy):
    # One seed's outcome on two held-out networks is a coin that floating-point paths flip (AVX2 vs
    # AVX-512): assert what the method guarantees, that the attack succeeds on most (seed, network)
    # pairs, never on one seed's figure. Measured on AVX-512, AVX2 and the plain path: 6-7 of 8 pairs.
    success, before = [], []
    for seed in range(4):
        s, dd = _dd(toy, net_init="pretrained_random", pretrained=str(pool.path), objective="poison", attack_class=0,
                    target_class=1, lr=0.01, lr_init=0.1, n_nets=2, decay_every=1000, seed=seed)
        for it in range(50):
            dd.step(it)
        r = before_after(s, toy, dd.eval_networks(), poison=(0, 1))
        assert r["n_networks"] == 2
        for k in ("acc_before", "acc_after", "attack_success_before", "attack_success_after", "other_acc_before",
                  "other_acc_after"):
            assert k in r and len(r[k]["values"]) == 2
        assert r["acc_before"]["mean"] > 90  # well-trained networks ...
        before += r["attack_success_before"]["values"]
        success += r["attack_success_after"]["values"]
    assert max(before) < 10  # ... that do not predict the 0s as 1 before the distilled steps
    assert sum(v > 50 for v in success) >= 5, success  # ... and mostly do after them
    assert dd.file_meta()["poison"] == {"attack_class": 0, "target_class": 1}


def test_poison_config_errors(toy, pool):
    with pytest.raises(ConfigError, match="attack_class != target_class"):
        DDConfig(objective="poison", attack_class=1, target_class=1)
    with pytest.raises(ConfigError, match="not a class of procedural"):
        _dd(toy, net_init="pretrained_random", pretrained=str(pool.path), objective="poison", attack_class=7)
    with pytest.raises(ConfigError, match="valid: fixed, random, pretrained_fixed, pretrained_random"):
        DDConfig(net_init="pretrained")


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    counts = [30, 20, 10]
    x = torch.cat([c + 0.1 * torch.randn(n, 2, generator=g) for c, n in zip(centers, counts)])
    got = kmeans(x, 3, torch.Generator().manual_seed(1))
    assert torch.allclose(got, centers, atol=0.1)  # ordered by cluster size, largest first


def test_baselines_average_and_kmeans_images(toy):
    avg = baseline_images("average", toy.train, 2, torch.Generator().manual_seed(0))
    mean0 = toy.train.images[toy.train.labels == 0].mean(0)
    assert avg.shape == (6, 1, 12, 12) and torch.allclose(avg[0], mean0) and torch.allclose(avg[1], mean0)
    s = make_set(DDConfig(steps=2), toy, 2, "kmeans", torch.Generator().manual_seed(0))
    x, y = s.step_images(1)
    assert y.tolist() == [0, 1, 2] and x.shape == (3, 1, 12, 12)
    with pytest.raises(ConfigError, match="valid: noise, real, kmeans, average"):
        baseline_images("median", toy.train, 1, torch.Generator())


def test_learned_step_size_baseline_keeps_its_images(toy):
    s, dd = _dd(toy, net_init="fixed", learn_images=False)
    x0, lr0 = s.images.detach().clone(), s.lrs().detach().clone()
    dd.step(0)
    assert torch.equal(x0, s.images.detach()) and not torch.equal(lr0, s.lrs().detach())
    with pytest.raises(ConfigError, match="nothing to learn"):
        _dd(toy, net_init="fixed", learn_images=False, learn_lr=False)


def test_cli_image_init_and_net_init_flags(tmp_path, capsys):
    common = ["--dataset", "digits", "--method", "dd", "--ipc", "1", "--iterations", "2", "--no-progress",
              "method_config.batch_real=32", "eval.n_models=2"]
    out = tmp_path / "fixed"
    assert main(["distill", "--net-init", "fixed", "--out", str(out), *common]) == 0
    f = load_synset(out / "distilled.safetensors")
    assert f.meta["net_init"]["setting"] == "fixed" and f.meta["init"] == "noise"
    assert f.meta["net_init"]["weight_init"] == "xavier" and f.meta["setting"] == "fixed"
    assert "over 1 models" in capsys.readouterr().out  # one fixed network
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["image_init"] == "noise" and saved["method_config"]["net_init"] == "fixed" and "init" not in saved
    out = tmp_path / "kmeans"
    assert main(["distill", "--image-init", "kmeans", "--net-init", "random", "--out", str(out), *common]) == 0
    f = load_synset(out / "distilled.safetensors")
    assert f.meta["init"] == "kmeans" and f.meta["net_init"]["setting"] == "random"
    assert main(["evaluate", str(out / "distilled.safetensors"), "n_models=2"]) == 0
    assert "lenet" in capsys.readouterr().out
    assert main(["distill", "--net-init", "sideways", "--out", str(tmp_path / "x"), *common]) == 2
    assert "unknown net_init 'sideways'; valid: fixed, random" in capsys.readouterr().err
    assert main(["distill", "--image-init", "fixed", "--out", str(tmp_path / "x"), *common]) == 2
    assert "image_init 'fixed' is not an image initialization of dd" in capsys.readouterr().err
    assert main(["distill", "--source-dataset", "mnist", "--dataset", "digits", "--method", "dm",
                 "--out", str(tmp_path / "y")]) == 2
    assert "--source-dataset: method 'dm' has no such setting (--source-dataset is dd's)" in capsys.readouterr().err
    assert main(["distill", "--net-init", "fixed", "--dataset", "digits", "--out", str(tmp_path / "y")]) == 2
    assert "--net-init: method 'dm' has no such setting (--net-init is dd's)" in capsys.readouterr().err


def test_cli_old_init_flag_and_keys_still_work_with_one_line(tmp_path, capsys):
    """``--init`` (either kind, by its value), ``init=`` and ``method_config.init=`` are the old names."""
    from datadistill.config import DeprecatedKeyWarning

    common = ["--dataset", "digits", "--method", "dd", "--ipc", "1", "--iterations", "1", "--no-progress",
              "method_config.batch_real=16", "eval.n_models=1"]
    out = tmp_path / "old"
    with pytest.warns(DeprecatedKeyWarning) as caught:
        assert main(["distill", "--init", "fixed", "init=average", "--out", str(out), *common]) == 0
    said = [str(w.message) for w in caught]
    assert any("'--init'" in m and "'--net-init'" in m for m in said)
    assert any("'init'" in m and "'image_init'" in m for m in said)
    f = load_synset(out / "distilled.safetensors")
    assert f.meta["init"] == "average" and f.meta["net_init"]["setting"] == "fixed"
    with pytest.warns(DeprecatedKeyWarning) as caught:
        assert main(["distill", "--init", "kmeans", "method_config.init=random", "--out", str(tmp_path / "k"),
                     *common]) == 0
    said = [str(w.message) for w in caught]
    assert any("'--init'" in m and "'--image-init'" in m for m in said)
    assert any("'init'" in m and "'net_init'" in m for m in said)
    f = load_synset(tmp_path / "k" / "distilled.safetensors")
    assert f.meta["init"] == "kmeans" and f.meta["net_init"]["setting"] == "random"
    with pytest.warns(DeprecatedKeyWarning, match="'--net-init'"):
        assert main(["distill", "--init", "sideways", "--out", str(tmp_path / "x"), *common]) == 2
    assert "unknown net_init 'sideways'; valid: fixed, random" in capsys.readouterr().err
    assert main(["distill", "--init", "real", "--image-init", "real", "--out", str(tmp_path / "x"), *common]) == 2
    assert "give only the new ones" in capsys.readouterr().err


def test_the_deprecation_is_one_line_on_the_console(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "datadistill.cli", "distill", "--dataset", "digits", "--method", "dd",
                        "--init", "pretrained_fixed", "method_config.pretrained=nopool", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 2, r.stderr
    assert lines[0].startswith("datadistill: warning: '--init'") and "'--net-init'" in lines[0]
    assert lines[1].startswith("datadistill: error: ")


def test_cli_pretrain_writes_a_pool(tmp_path, capsys):
    out = tmp_path / "pool"
    assert main(["pretrain", "--dataset", "digits", "--nets", "2", "--held-out", "1", "--epochs", "1",
                 "--out", str(out)]) == 0
    assert "networks 1..1 are held out" in capsys.readouterr().out
    assert len(Pool(out)) == 2
    assert main(["pretrain", "--dataset", "digits", "--nets", "2", "--held-out", "2", "--out", str(out)]) == 2
    assert "held_out < n_nets" in capsys.readouterr().err


def test_poison_run_end_to_end_reports_before_and_after(pool, toy, tmp_path, capsys):
    from datadistill.config import RunConfig, from_dict
    from datadistill.engine import run

    cfg = from_dict(RunConfig, {
        "dataset": "procedural", "dataset_options": dict(toy.spec.extra), "method": "dd", "ipc": 1,
        "iterations": 3, "method_config": {"net_init": "pretrained_random", "pretrained": str(pool.path),
                                           "objective": "poison", "batch_real": 16}})
    r = run(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    assert r.reports["lenet"].accuracies and len(r.reports["lenet"].accuracies) == 2  # the held-out networks
    assert set(r.extra) >= {"attack_success_before", "attack_success_after", "other_acc_after", "acc_before"}
    assert "attack_success_after" in (tmp_path / "run" / "report.md").read_text()
    f = load_synset(tmp_path / "run" / "distilled.safetensors")
    assert f.meta["setting"] == "poison" and f.meta["extra_report"]["n_networks"] == 2
    final = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert final["final"] and "extra" in final
    assert main(["evaluate", str(tmp_path / "run" / "distilled.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "before/after the distilled steps" in out and "attack_success_after" in out


def test_pool_epochs_grow_on_small_sources(toy, digits):
    from datadistill.methods.dd.pools import pool_config

    assert pool_config(DDConfig(), digits).epochs == math.ceil(1400 * 128 / len(digits.train))
    assert pool_config(DDConfig(pool_epochs=2), digits).epochs == 2

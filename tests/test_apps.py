"""The studies of distilled sets (`datadistill.studies`): continual learning, membership inference, architecture search,
on the digits set at tiny sizes."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from datadistill.studies import StudyError, get_study, run_study
from datadistill.studies import continual, membership, nas, privacy
from datadistill.studies import sets as common
from datadistill.studies.sets import SetSource, parse_sets
from datadistill.cli import main
from datadistill.data import DatasetOptionError, load_dataset
from datadistill.data.registry import split_indices
from datadistill.evaluation import evaluate, get_protocol
from datadistill.executor import make_executor
from datadistill.models import create_model
from datadistill.seeding import make_generator
from datadistill.synset import PixelSet, load_synset, save_synset
from datadistill.train import train_classifier

QUICK = dict(epochs=4, n_models=1)


@pytest.fixture(scope="module")
def set_file(tmp_path_factory, digits):
    """A 3-images-per-class set of digits (real images: what a set file holds is all that matters)."""
    s = PixelSet.from_real(digits.train, 3, make_generator(5, "set"))
    return str(save_synset(tmp_path_factory.mktemp("sets") / "dm.safetensors", s, digits.spec, method="dm"))


def serial():
    return make_executor("serial", progress=False)


# -- the split option ---------------------------------------------------------------------------------
def test_split_halves_partition_the_pool_per_class(digits):
    pool, a, b = split_indices(digits.train.labels, 10, 20, seed=0)
    assert len(pool) == 200 and len(a) == len(b) == 100
    assert set(a.tolist()).isdisjoint(b.tolist()) and set(a.tolist()) | set(b.tolist()) == set(pool.tolist())
    assert torch.bincount(digits.train.labels[a], minlength=10).tolist() == [10] * 10
    pool2, a2, _ = split_indices(digits.train.labels, 10, 20, seed=1)
    assert torch.equal(pool, pool2) and not torch.equal(a, a2)  # one pool, another halving
    half = load_dataset("digits", split="20:1:0")
    assert torch.equal(half.train.images, digits.train.images[a2]) and half.spec.extra["split"] == "20:1:0"
    assert torch.equal(half.test.images, digits.test.images)


@pytest.mark.parametrize("value", ["20", "20:0:2", "x:0:0", "1:0:0"])
def test_split_option_bad_values(value):
    with pytest.raises(DatasetOptionError, match="POOL:SEED:SIDE"):
        load_dataset("digits", split=value)


def test_split_option_refuses_pool_larger_than_a_class_and_validation():
    with pytest.raises(DatasetOptionError, match="fewer than the pool"):
        load_dataset("digits", split="5000:0:0")
    with pytest.raises(DatasetOptionError, match="do not combine"):
        load_dataset("digits", split="20:0:0", validation=0.1)


# -- sets -------------------------------------------------------------------------------------------------
def test_parse_sets_checks_files_names_and_dataset(set_file, tmp_path):
    (s,) = parse_sets([set_file])
    assert (s.name, s.path, len(s.sha256)) == ("dm", set_file, 64)
    with pytest.raises(StudyError, match="no such file"):
        parse_sets([f"x={tmp_path / 'none.safetensors'}"])
    with pytest.raises(StudyError, match="baseline"):
        parse_sets([f"random={set_file}"])
    with pytest.raises(StudyError, match="unique"):
        parse_sets([set_file, f"dm={set_file}"])
    with pytest.raises(StudyError, match="distilled on 'digits', not 'mnist'"):
        parse_sets([set_file], dataset="mnist")


# -- continual learning -------------------------------------------------------------------------------
def test_class_orders_are_the_scripts():
    for seed in range(5):
        np.random.seed(seed)
        assert continual.class_order(10, seed) == np.random.permutation(10).tolist()
    assert continual.step_classes([3, 1, 4, 0, 2, 5], 3) == [[3, 1], [4, 0], [2, 5]]


def test_memory_holds_exactly_the_classes_seen(set_file, digits):
    f = load_synset(set_file)
    groups = continual.step_classes(continual.class_order(10, 2), 5)
    for step in range(5):
        seen = [c for g in groups[: step + 1] for c in g]
        for memory in (common.file_memory(f, seen, 2), common.random_memory(digits.train, seen, 2, seed=2)):
            assert sorted(torch.unique(memory.labels).tolist()) == sorted(seen)
            assert torch.bincount(memory.labels, minlength=10)[seen].tolist() == [2] * len(seen)
            assert memory.floats() == 2 * len(seen) * 28 * 28
    # a class's random images are the same whichever step brings it
    a = common.random_memory(digits.train, [4], 3, seed=0).images
    b = common.random_memory(digits.train, [7, 4], 3, seed=0).images[3:]
    assert torch.equal(a, b)


def test_a_memory_keeps_its_files_learned_step_size(tmp_path, digits):
    """A set's learned lr (MTT's) reaches the studies' networks when the protocol asks for it: the
    memory of some classes carries it, hard labels keep it, and `use_learned_lr` trains at it."""
    s = PixelSet.from_real(digits.train, 2, make_generator(5, "lr-set"), lr=0.037)
    f = load_synset(save_synset(tmp_path / "mtt.safetensors", s, digits.spec, method="mtt"))
    memory = common.file_memory(f, [0, 3], 1)
    assert memory.learned_lr() == pytest.approx(0.037) and memory.hard().learned_lr() == pytest.approx(0.037)
    assert common.random_memory(digits.train, [0, 3], 1, seed=0).learned_lr() is None
    protocol = get_protocol("dc", epochs=1, n_models=1)
    assert evaluate(memory, digits, protocol.with_(use_learned_lr=True)).lr == pytest.approx(0.037)
    assert evaluate(memory, digits, protocol).lr == protocol.optimizer.lr


def test_continual_runs_resumes_and_reports(set_file, tmp_path):
    cfg = continual.ContinualConfig("digits", (SetSource("dm", set_file),), steps=2, orders=(0, 1),
                                    protocol=get_protocol("dc", **QUICK))
    out = tmp_path / "cl"
    summary = run_study("continual", cfg, out, serial())
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2  # (dm, random) x orders x steps
    for r in rows:
        groups = continual.step_classes(continual.class_order(10, r["order"]), 2)
        assert r["classes_seen"] == 5 * r["step"] and r["memory_images"] == 3 * r["classes_seen"]
        assert r["class_order"] == [c for g in groups for c in g]
        assert 0 <= r["accuracy"] <= 100
        assert r["seed"] == r["order"]  # a fresh network per order (and network), the same at each of its steps
    assert set(summary["sets"]) == {"dm", "random"} and summary["per_class"] == 3
    step1 = summary["sets"]["dm"]["steps"][0]
    accs = [r["accuracy"] for r in rows if r["set"] == "dm" and r["step"] == 1]
    assert step1["n"] == 2 and step1["acc_mean"] == pytest.approx(sum(accs) / 2, abs=0.01)
    headline = get_study("continual").metrics(summary)  # what a benchmark expectation names
    assert headline["dm_last"] == summary["sets"]["dm"]["steps"][-1]["acc_mean"] and "random_mean" in headline
    assert (out / "continual.png").stat().st_size > 0 and "| dm |" in (out / "summary.md").read_text()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()}
    run_study("continual", cfg, out, serial())  # every job done: nothing trains again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()} == stamps
    other = continual.ContinualConfig("digits", cfg.sets, steps=2, orders=(0, 1),
                                      protocol=get_protocol("dc", epochs=5, n_models=1))
    with pytest.raises(StudyError, match=r"other settings: .*\(protocol\)"):  # never a silent mix of protocols
        run_study("continual", other, out, serial())
    # a result that does not say how it was made (an older version's) is refused, naming the file
    job = sorted((out / "jobs").iterdir())[0]
    row = json.loads(job.read_text())
    del row["settings"]
    job.write_text(json.dumps(row))
    with pytest.raises(StudyError, match=f"^{job} does not record the settings it was made with"):
        run_study("continual", cfg, out, serial())
    job.write_text('{"accuracy": 9')  # cut short
    with pytest.raises(StudyError, match=f"^{job} is not a job result this study can read"):
        run_study("continual", cfg, out, serial())


def test_continual_bad_input(set_file, tmp_path):
    base = dict(protocol=get_protocol("dc", **QUICK))
    for kw, match in ((dict(steps=11), "steps must be"), (dict(orders=(0, 0)), "distinct"),
                      (dict(per_class=4), "fewer images")):
        cfg = continual.ContinualConfig("digits", (SetSource("dm", set_file),), **{**base, **kw})
        with pytest.raises(StudyError, match=match):
            run_study("continual", cfg, tmp_path / "x", serial())


# -- membership inference ------------------------------------------------------------------------------
def test_roc_metrics():
    perfect = membership.roc_metrics([3.0, 2.0, 1.0, 0.0], [1, 1, 0, 0])
    assert perfect["auc"] == 1.0 and perfect["tpr@0.1%fpr"] == 1.0 and perfect["tpr@1%fpr"] == 1.0
    g = torch.Generator().manual_seed(0)
    chance = membership.roc_metrics(torch.randn(4000, generator=g), torch.arange(4000) % 2)
    assert abs(chance["auc"] - 0.5) < 0.04 and chance["tpr@1%fpr"] < 0.05


def test_lira_separates_a_signal_and_is_unbiased_without_one():
    g = torch.Generator().manual_seed(0)
    pool, splits = 400, 3
    member = torch.stack([torch.randperm(pool, generator=g) < pool // 2 for _ in range(splits)])
    member = torch.stack([m for row in member for m in (row, ~row)])  # each split's two complementary halves
    groups = [s for s in range(splits) for _ in (0, 1)]
    base = torch.randn(pool, generator=g) * 3  # per-image difficulty
    noise = torch.randn(2 * splits, pool, generator=g)
    for shift, lo, hi in ((2.0, 0.8, 1.0), (0.0, 0.45, 0.55)):
        phi = base + noise + shift * member
        scores = membership.lira_scores(phi, member, groups)
        auc = membership.roc_metrics(scores.flatten(), member.flatten())["auc"]
        assert lo < auc <= hi, (shift, auc)
    with pytest.raises(StudyError, match="2 splits"):
        membership.lira_scores(phi[:2], member[:2], [0, 0])


def _members_auc(net, pool_x, pool_y, member):
    phi, loss = membership.confidences(net, pool_x, pool_y)
    return membership.roc_metrics(-torch.tensor(loss), member)["auc"], membership.roc_metrics(torch.tensor(phi), member)["auc"]


def test_attack_sees_members_only_in_a_model_trained_on_them(digits):
    pool, a, b = split_indices(digits.train.labels, 10, 40, seed=0)
    x, y = digits.train.images, digits.train.labels
    member = torch.isin(pool, a).int()
    outside = torch.tensor(sorted(set(range(len(y))) - set(pool.tolist())))[:200]

    def trained(idx):
        net = create_model("mlp", 1, 10, 28, seed=1)
        data = common.MemorySet(x[idx], y[idx])
        return train_classifier(net, data.batches, epochs=100, lr=0.01, weight_decay=0, batch_size=16,
                                generator=make_generator(0, "t"))

    # 200 members against 200 non-members: the AUC of a blind guess has a spread of about 0.03
    on_members = _members_auc(trained(a), x[pool], y[pool], member)
    never = _members_auc(trained(outside), x[pool], y[pool], member)
    assert all(abs(v - 0.5) < 0.08 for v in never), never  # chance, within the noise
    assert min(on_members) > 0.56 and min(on_members) > max(never) + 0.04, (on_members, never)


def test_privacy_runs_with_a_distilled_pipeline(tmp_path):
    p = privacy.parse_pipeline("dm: method=dm iterations=2 method_config.batch_real=8 method_config.model=convnet_w32")
    assert p.overrides == ("method=dm", "iterations=2", "method_config.batch_real=8", "method_config.model=convnet_w32")
    cfg = privacy.PrivacyConfig("digits", (p,), pool=8, splits=2, per_class=2,
                                protocol=get_protocol("dc", model="convnet_w32", epochs=3))
    out = tmp_path / "pv"
    summary = run_study("privacy", cfg, out, serial())
    assert set(summary["pipelines"]) == {"dm", "subset", "all"}
    dm, allr = summary["pipelines"]["dm"], summary["pipelines"]["all"]
    assert dm["runs"] == 4 and dm["train_images"] == 20 and allr["train_images"] == 40
    assert "lira_nearest" in dm and "lira_nearest" not in allr
    assert dm["lira"]["members"] == dm["lira"]["non_members"] == 4 * 40
    # the AUCs again from the jobs' own rows, by counting pairs (no sklearn): loss, and LiRA's scores
    jobs = [json.loads(f.read_text()) for f in sorted((out / "jobs").glob("dm-*.json"))]
    member = torch.tensor([r["member"] for r in jobs]).bool()
    lira = membership.lira_scores(torch.tensor([r["phi"] for r in jobs]), member,
                                  [membership.run_group(r) for r in jobs])
    for name, score in (("loss", -torch.tensor([r["loss"] for r in jobs])), ("lira", lira)):
        ins, outs = score[member].double(), score[~member].double()
        pairs = (ins[:, None] > outs[None, :]).double() + 0.5 * (ins[:, None] == outs[None, :]).double()
        assert dm[name]["auc"] == pytest.approx(float(pairs.mean()), abs=1e-4), name
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["nearest"] is None or len(r["nearest"]) <= 20 for r in rows)
    meta = load_synset(out / "runs" / "dm-8-0-1" / "distilled.safetensors").spec
    assert meta.extra["split"] == "8:0:1"  # the set was distilled on its half only
    assert (out / "privacy.png").is_file()


def test_privacy_pipeline_settings_and_bad_input(tmp_path):
    assert privacy.needs_experts({"method": "mtt", "method_config": {"max_start_epoch": 2, "expert_epochs": 2}}) == 3
    assert privacy.needs_experts({"method": "dm"}) is None
    assert privacy.needs_experts({"method": "mtt", "method_config": {"experts": "/x"}}) is None
    cfg = privacy.PrivacyConfig("digits", (), pool=8)
    run = privacy.run_config(privacy.parse_pipeline("h: preset=herding"), cfg, "8:0:0", 1, None)
    assert run["ipc"] == 10 and run["method"] == "herding" and run["dataset_options"] == {"split": "8:0:0"}
    for text in ("dm", "subset: method=dm", "dm: iterations"):
        with pytest.raises(StudyError):
            privacy.parse_pipeline(text)
    with pytest.raises(StudyError, match="splits"):
        run_study("privacy", privacy.PrivacyConfig("digits", (), splits=1), tmp_path / "a", serial())
    with pytest.raises(StudyError, match="per-class"):
        run_study("privacy", privacy.PrivacyConfig("digits", (), pool=8, per_class=5), tmp_path / "b", serial())


# -- architecture search --------------------------------------------------------------------------------
def test_rank_correlation_of_a_list_with_itself_is_one():
    a = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    assert nas.rank_correlations(a, a) == {"spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0)}
    rev = nas.rank_correlations(a, [-v for v in a])
    assert rev == {"spearman": pytest.approx(-1.0), "kendall": pytest.approx(-1.0)}
    with pytest.raises(ValueError):
        nas.rank_correlations([1.0], [1.0])


def test_default_grid_has_sixteen_distinct_convnets():
    archs = nas.architectures(nas.DEFAULT_GRID)
    assert len(archs) == 16 and len({nas.arch_name(a) for a in archs}) == 16
    with pytest.raises(StudyError, match="valid: instancenorm"):
        nas.architectures({"norm": ("bogus",)})
    with pytest.raises(StudyError, match="valid: width"):
        nas.architectures({"heads": (2,)})


def test_nas_ranks_against_the_whole_data(set_file, tmp_path):
    grid = {"width": (8, 16), "depth": (1,), "pool": ("avgpooling", "maxpooling")}
    cfg = nas.NASConfig("digits", (SetSource("dm", set_file),), **grid, norm=(), protocol=get_protocol("dc", **QUICK),
                        full_epochs=1, full_models=2)
    out = tmp_path / "nas"
    summary = run_study("nas", cfg, out, serial())
    full = summary["full"]  # two seeds of the reference, their agreement measured from their own rows
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    by = {(r["model"], r["arch"]): r["accuracy"] for r in rows if r["set"] == "full"}
    seeds = [[by[(m, a)] for a in summary["architectures"]] for m in (0, 1)]
    assert full["seeds"] == 2 and full["seed_spearman"] == pytest.approx(
        nas.rank_correlations(*seeds)["spearman"], abs=1e-4) and full["stable"] == (full["seed_spearman"] >= 0.8)
    assert "seed vs seed (2 seeds)" in nas.format_summary(summary)
    assert len(summary["architectures"]) == 4 and set(summary["sets"]) == {"dm", "random"}
    dm = summary["sets"]["dm"]
    # recomputed from the records by hand: each architecture's mean accuracy, the ranks, the pick
    names = summary["architectures"]

    def means(set_name):
        return [float(np.mean([r["accuracy"] for r in rows if r["set"] == set_name and r["arch"] == n])) for n in names]

    mine, whole = means("dm"), means("full")

    def ranks(v):  # average ranks (ties share theirs), as Spearman's rho needs
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rho = float(np.corrcoef(ranks(mine), ranks(whole))[0, 1]) if len(set(mine)) > 1 and len(set(whole)) > 1 else None
    if rho is not None:
        assert dm["spearman"] == pytest.approx(rho, abs=1e-9)
    pick = int(np.argmax(mine))
    assert dm["top1_arch"] == names[pick] and dm["top1_full_acc"] == pytest.approx(whole[pick], abs=0.005)
    assert dm["accuracies"] == {n: pytest.approx(a, abs=0.005) for n, a in zip(names, mine)}
    assert summary["full"]["best_acc"] == pytest.approx(max(whole), abs=0.005) and dm["speedup"] > 1
    assert len(rows) == 4 * 4 and {r["train_images"] for r in rows if r["set"] != "full"} == {30}
    assert (out / "nas.png").is_file()
    headline = get_study("nas").metrics(summary)
    assert headline["dm_pick_full_acc"] == dm["top1_full_acc"] and headline["full_seed_spearman"] == full["seed_spearman"]


def test_nas_reuses_a_reference_trained_with_its_settings(set_file, tmp_path, digits):
    """`--reference DIR`: new proxies ranked against whole-data networks already trained, copied only when
    trained with this study's settings (a learned-lr protocol does not change the whole data's training);
    another reference is a one-line error that names what differs."""
    grid = dict(width=(8, 16), depth=(1,), norm=(), pool=("avgpooling",))
    quick = get_protocol("dc", **QUICK)
    ref = tmp_path / "ref"
    first = run_study("nas", nas.NASConfig("digits", (SetSource("dm", set_file),), **grid, protocol=quick,
                                           full_epochs=1, full_models=1), ref, serial())
    mtt = PixelSet.from_real(digits.train, 3, make_generator(6, "mtt-set"), lr=0.05)
    mtt_file = str(save_synset(tmp_path / "mtt.safetensors", mtt, digits.spec, method="mtt"))
    out = tmp_path / "new"
    cfg = nas.NASConfig("digits", (SetSource("mtt", mtt_file),), **grid, protocol=quick.with_(use_learned_lr=True),
                        full_epochs=1, full_models=1, random=False, reference=str(ref))
    summary = run_study("nas", cfg, out, serial())
    full = sorted((ref / "jobs").glob("full-*.json"))
    assert len(full) == 2 and all((out / "jobs" / f.name).read_bytes() == f.read_bytes() for f in full)
    assert summary["full"]["accuracies"] == first["full"]["accuracies"] and set(summary["sets"]) == {"mtt"}
    rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["settings"]["protocol"]["use_learned_lr"] for r in rows if r["set"] == "mtt"} == {True}
    # --per-class does not enter the whole data's training: a reference made for sets of another size is
    # reused, each copy naming this study's per_class and the file it came from
    fewer = run_study("nas", dataclasses.replace(cfg, per_class=2), tmp_path / "fewer", serial())
    assert fewer["full"]["accuracies"] == first["full"]["accuracies"] and fewer["per_class"] == 2
    for f in full:
        copy = json.loads((tmp_path / "fewer" / "jobs" / f.name).read_text())
        assert copy["settings"]["per_class"] == 2 and copy["reference"] == str(f)
        assert {k: v for k, v in copy.items() if k not in ("settings", "reference")} == \
            {k: v for k, v in json.loads(f.read_text()).items() if k != "settings"}
    with pytest.raises(StudyError, match=r"trained with other settings \(protocol\)"):
        run_study("nas", dataclasses.replace(cfg, full_epochs=2), tmp_path / "other", serial())
    with pytest.raises(StudyError, match="lacks 2 of the 4 whole-data results"):
        run_study("nas", dataclasses.replace(cfg, full_models=2), tmp_path / "more", serial())
    with pytest.raises(StudyError, match="not a NAS study's folder"):
        run_study("nas", dataclasses.replace(cfg, reference=str(tmp_path / "none")), tmp_path / "x", serial())


def test_nas_seed_agreement_is_the_rank_correlation_of_the_seeds():
    """Known answers: identical orders agree (1, stable), reversed ones disagree (-1, not stable, and
    the table says the proxies then measure the reference's noise); one seed measures nothing."""
    names = ["a", "b", "c", "d"]
    rows = [{"model": m, "arch": n, "accuracy": acc} for m, accs in ((0, [1, 2, 3, 4]), (1, [10, 20, 30, 40]))
            for n, acc in zip(names, accs)]
    assert nas.seed_agreement(rows, names) == {"seeds": 2, "seed_spearman": 1.0, "seed_kendall": 1.0, "stable": True}
    rows[4:] = [{"model": 1, "arch": n, "accuracy": acc} for n, acc in zip(names, [4, 3, 2, 1])]
    bad = nas.seed_agreement(rows, names)
    assert bad["seed_spearman"] == -1.0 and bad["stable"] is False
    assert nas.seed_agreement(rows[:4], names) == {}
    summary = {"sets": {}, "full": {"best_arch": "a", "best_acc": 1.0, "seconds": 1.0, **bad,
                                    "accuracies": {"a": 98.1, "b": 98.6, "c": 98.3, "d": 98.4}}}
    assert "not stable across seeds" in nas.format_summary(summary)
    assert "span 0.50 points" in nas.format_summary(summary)  # the spread the seeds' noise is set against


# -- the command line --------------------------------------------------------------------------------
def test_cli_apps(set_file, tmp_path, capsys):
    assert main(["apps", "continual", "--dataset", "digits", "--set", f"dm={set_file}", "--steps", "2", "--orders", "0",
                 "--protocol", "dc", "epochs=2", "--out", str(tmp_path / "cl"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| dm |" in out and "step 2 (10 cl.)" in out
    cfg = json.loads((tmp_path / "cl" / "config.json").read_text())
    assert cfg["protocol"]["n_models"] == 3 and cfg["protocol"]["epochs"] == 2  # the script's 3 networks
    assert main(["apps", "nas", "--dataset", "digits", "--set", set_file, "--width", "8", "--depth", "1,2",
                 "--norm", "instancenorm", "--pool", "avgpooling", "--full-epochs", "1", "epochs=2",
                 "--out", str(tmp_path / "nas"), "--no-progress"]) == 0
    assert "whole data" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["continual", "--dataset", "digits", "--set", "nofile.safetensors"], "no such file"),
    (["continual", "--dataset", "digits", "--orders", "a-b"], "--orders"),
    (["nas", "--dataset", "digits", "--per-class", "1", "--norm", "bogus"], "valid: instancenorm"),
    (["nas", "--dataset", "digits", "--per-class", "1", "--width", "x"], "integers"),
    (["privacy", "--dataset", "digits", "--splits", "1"], "splits must be"),
    (["privacy", "--dataset", "digits", "--distill", "dm: method=nosuch"], "nosuch"),
    (["privacy", "--dataset", "digits", "epochs=0"], "epochs"),
])
def test_cli_apps_bad_input_is_one_line(argv, message, tmp_path, capsys):
    assert main(["apps", *argv, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("datadistill: error:") and message in err and "Traceback" not in err


def test_an_app_gives_the_same_numbers_on_a_process_pool(set_file, tmp_path):
    cfg = continual.ContinualConfig("digits", (SetSource("dm", set_file),), steps=2, orders=(3,), random=False,
                                    protocol=get_protocol("dc", epochs=2, n_models=1))
    here = run_study("continual", cfg, tmp_path / "serial", make_executor("serial", threads=1, progress=False))
    with make_executor("process", workers=2, threads=1, progress=False) as ex:
        pool = run_study("continual", cfg, tmp_path / "pool", ex)
    assert pool["sets"] == here["sets"]


# -- the study protocol ----------------------------------------------------------------------------------
TOY_STUDY = '''
from dataclasses import dataclass, field
from datadistill.studies.base import STUDIES, Job, Study


@dataclass(frozen=True)
class ToyConfig:
    dataset: str
    n: int = 2
    scale: float = 1.0
    tags: tuple[str, ...] = ("a",)
    loud: bool = False
    root: str | None = None
    device: str = "cpu"


@STUDIES.register("toy-study")
class Toy(Study):
    name, config, what = "toy-study", ToyConfig, "toy folder"

    def jobs(self, cfg, out, resolved):
        return [Job(f"job{i}", {"i": i, "scale": cfg.scale, "tags": list(cfg.tags)}) for i in range(cfg.n)]

    def run(self, job):
        return {"i": job["i"], "value": job["i"] * job["scale"], "tags": job["tags"]}

    def summarize(self, cfg, rows, resolved):
        return {"total": sum(r["value"] for r in rows), "loud": cfg.loud, "dataset": cfg.dataset}

    def format(self, summary):
        return f"total {summary['total']}"
'''


def test_a_new_study_is_one_file_with_its_flags_from_its_config(tmp_path, monkeypatch, capsys):
    import sys

    import datadistill.studies as studies
    from datadistill.studies import STUDIES, base

    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "toy_study.py").write_text(TOY_STUDY)
    for attr in ("_entries", "_names", "_aliases"):  # the registration ends with the test
        monkeypatch.setattr(STUDIES, attr, dict(getattr(STUDIES, attr)))
    monkeypatch.setattr(studies, "__path__", [*studies.__path__, str(pkg)])
    monkeypatch.setattr(base, "_found", False)
    try:
        out = tmp_path / "toy"
        argv = ["study", "toy-study", "--dataset", "digits", "--n", "3", "--scale", "0.5", "--tags", "x,y", "--loud",
                "--out", str(out)]
        assert main(argv) == 0
        assert "total 1.5" in capsys.readouterr().out
        summary = json.loads((out / "summary.json").read_text())
        assert summary == {"total": 1.5, "loud": True, "dataset": "digits"}
        rows = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
        assert [r["tags"] for r in rows] == [["x", "y"]] * 3 and rows[2]["settings"] == {"i": 2, "scale": 0.5,
                                                                                         "tags": ["x", "y"]}
        assert json.loads((out / "config.json").read_text())["study"] == "toy-study"
        stamps = {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()}
        assert main(argv) == 0  # resumed: every job kept
        assert {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()} == stamps
        assert main([*argv[:-2], "--scale", "2", "--out", str(out)]) == 2  # other settings: an error, no silent mix
        assert "other settings" in capsys.readouterr().err
        assert main(["study", "toy-study", "--dataset", "digits", "--n", "two", "--out", str(tmp_path / "b")]) == 2
        assert "--n 'two': give an int" in capsys.readouterr().err
    finally:
        sys.modules.pop("datadistill.studies.toy_study", None)


def test_study_configs_round_trip_through_json(set_file):
    from datadistill.studies import config_dict, config_from_dict
    from datadistill.studies.ipc_curve import IPCCurveConfig

    for cfg in (continual.ContinualConfig("digits", (SetSource("dm", set_file),), orders=(1, 2)),
                nas.NASConfig("digits", width=(8,), act=("relu", "sigmoid"), full_models=1),
                privacy.PrivacyConfig("digits", (privacy.parse_pipeline("dm: method=dm iterations=2"),), pool=8),
                IPCCurveConfig("digits", ipcs=(1, 5))):
        d = config_dict(cfg)
        assert json.loads(json.dumps(d)) == d and config_from_dict(type(cfg), d) == cfg

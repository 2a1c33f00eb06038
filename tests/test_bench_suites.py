"""The benchmark suites (benchmarks/suites/*.yaml), their runner (benchmarks/run.py) and the report
(benchmarks/report.py): the committed records meet every suite's expectations, one expectation
raised above its record makes the runner fail, and a one-job suite runs end to end on digits."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from datadistill.fileio import TornLineWarning

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import paper_cost  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
from suites import CHANCE, RESULTS_DIR, SUITES_DIR, latest_record, load_suite  # noqa: E402

SUITES = sorted(SUITES_DIR.glob("*.yaml"))


def test_there_are_suites():
    assert {"cpu", "cpu-ablations", "cpu-smoke", "paper", "paper-budget"} <= {p.stem for p in SUITES}


@pytest.mark.parametrize("suite", SUITES, ids=[p.stem for p in SUITES])
def test_current_records_meet_every_expectation(suite, capsys):
    loaded = load_suite(suite)
    recorded = [j for j in loaded.jobs if latest_record(j) is not None]
    if not recorded:  # a suite nobody has run says why, and is skipped visibly, never passed on an empty list
        assert loaded.not_run, f"{loaded.name} has no record and no `not_run:` reason"
        pytest.skip(f"{loaded.name}: {loaded.not_run}")
    assert run.main([str(suite), "--check"]) == 0
    out = capsys.readouterr().out
    assert "regression" not in out.splitlines()[-1]
    jobs = loaded.jobs
    if loaded.filling:  # a suite still being filled (paper protocols, paper budgets): recorded jobs must hold
        jobs = tuple(recorded)
    # every job has an expectation (or says why it has none) and a record: nothing passes by being absent
    # (a parity job's expectation is its record's agreement of the two evaluators)
    assert all(j.expected is not None or j.unchecked or j.kind == "parity" for j in jobs), \
        [j.id for j in jobs if j.expected is None and not j.unchecked and j.kind != "parity"]
    assert all(latest_record(j) is not None for j in jobs), [j.id for j in jobs if latest_record(j) is None]


@pytest.mark.parametrize("suite", SUITES, ids=[p.stem for p in SUITES])
def test_no_floor_is_at_or_below_chance(suite):
    """An expectation whose floor a network guessing one class meets checks nothing: such a job is
    `unchecked` with its reason instead."""
    loaded = load_suite(suite)
    for j in loaded.jobs:
        e = j.expected
        if e is None or e.metric not in ("acc_mean", "mean_final_test_acc", "test_accuracy"):
            continue
        dataset = loaded.job(j.of).dataset if j.of else j.dataset
        assert e.floor > CHANCE[dataset], f"{j.id}: floor {e.floor:.2f} <= chance {CHANCE[dataset]}"


def test_a_parity_job_is_judged_by_its_records_agreement(tmp_path, capsys):
    """A parity job's verdict is its latest record's agreement (records of its set and preset count
    without a job name, as parity.py writes them): agreeing is ok, disagreeing a regression."""
    suite = tmp_path / "par.yaml"
    suite.write_text(yaml.safe_dump({"suite": "par", "jobs": [
        {"id": "p", "kind": "parity", "results": "p.jsonl", "file": "s.safetensors", "preset": "dc-paper"}]}))
    rec = {"set": "s.safetensors", "preset": "dc-paper", "acc_mean": 90.0, "reference_mean": 89.0, "n_models": 3,
           "reference_accs": [89.0, 88.0, 90.0], "commit": "abc"}
    records = tmp_path / "p.jsonl"
    records.write_text(json.dumps({**rec, "agreement": {"diff": 1.0, "combined_se": 0.6, "agree": True}}) + "\n"
                       + json.dumps({**rec, "set": "other.safetensors", "agreement": {"diff": 9, "combined_se": 1,
                                                                                    "agree": False}}) + "\n")
    assert run.main([str(suite), "--check", "--results", str(records)]) == 0
    assert "ok         p: ours 90.00 vs the authors' evaluator 89.00" in capsys.readouterr().out
    with open(records, "a") as f:  # a later record of the same set and preset that disagrees
        f.write(json.dumps({**rec, "agreement": {"diff": 3.0, "combined_se": 0.6, "agree": False}}) + "\n")
    assert run.main([str(suite), "--check", "--results", str(records)]) == 1
    assert "beyond two combined standard errors" in capsys.readouterr().out


def test_paper_claims_cover_the_coresets_and_condensation_methods():
    """The claims of issue 28: DC, DSA, DM, random, herding and k-center at 1 and 10 per class on MNIST and
    Fashion-MNIST, each with a job on the paper's protocol."""
    suite = load_suite("paper")
    have = {(c.method, c.dataset, c.ipc): c for c in suite.claims}
    for m in ("dc", "dsa", "dm", "random", "herding", "kcenter"):
        for d in ("mnist", "fashion_mnist"):
            for i in (1, 10):
                c = have[(m, d, i)]
                assert c.job and c.protocol.endswith("-paper"), c.id
                assert suite.job(c.job) is not None


def test_tables_show_one_protocol_and_pool_reruns(tmp_path):
    """Records of two protocols and two reruns: the methods table shows the `dc` reruns pooled with their
    count, never the other protocol's (higher) figure and never the larger rerun alone; the claims check
    shows the paper-protocol record beside the paper's figure, with its standard error."""
    from suites import check_claims

    job = report.headline_jobs()[("random", "mnist", 1)]
    cmd = "datadistill distill --method random --dataset mnist --ipc 1 --out x --preset random"
    base = {"job": job, "method": "random", "dataset": "mnist", "ipc": 1, "setting": "baseline", "model": "convnet",
            "n_models": 2, "command": cmd, "commit": "abc", "device": "cpu"}
    rows = [report.Row({**base, "protocol": "dc", "acc_mean": 50.0, "acc_std": 1.0, "accuracies": [49.0, 51.0]}),
            report.Row({**base, "protocol": "dc-paper", "acc_mean": 60.0, "acc_std": 1.0, "accuracies": [59.0, 61.0],
                        "command": cmd + " eval.preset=dc-paper"}),
            report.Row({**base, "protocol": "dc", "acc_mean": 54.0, "acc_std": 1.0, "accuracies": [53.0, 55.0]})]
    for n, r in enumerate(rows, 1):
        r["file"], r["line"] = "dm_cpu.jsonl", n
    table = report.methods_table(rows)
    line = next(t for t in table.splitlines() if t.startswith("| random |"))
    assert "[52.00 ± 2.24 (2 runs)](benchmarks/results/dm_cpu.jsonl#L3)" in line  # pooled: mean 52, pop. std
    assert "60.00" not in line and "54.00" not in line
    assert "`dc` protocol" in table.splitlines()[0]
    # the claims check reads a suite's own records: the paper protocol beside the paper's figure
    suite = tmp_path / "claims.yaml"
    suite.write_text(yaml.safe_dump({"suite": "claims", "filling": True, "jobs": [
        {"id": "p", "kind": "distill", "results": "r.jsonl", "method": "random", "dataset": "digits", "ipc": 1,
         "setting": "x", "args": ["eval.preset=dc-paper"]}], "claims": [
        {"id": "c", "paper": "P", "table": "Table 1", "method": "random", "dataset": "digits", "ipc": 1,
         "value": 58.0, "std": 1.0, "n": 100, "protocol": "dc-paper", "job": "p"}]}))
    records = tmp_path / "r.jsonl"
    records.write_text("".join(json.dumps({**base, "job": "p", "protocol": p, "acc_mean": a, "acc_std": 1.0,
                                           "accuracies": [a - 1, a + 1], "iterations": 0}) + "\n"
                               for p, a in (("dc-paper", 60.0), ("dc-paper", 62.0))))
    (cc,) = check_claims(load_suite(suite), records)
    assert cc.ours["n_runs"] == 2 and cc.ours["acc_mean"] == 61.0
    assert cc.diff == 3.0 and cc.se == pytest.approx((2 / 4 + 1 / 100) ** 0.5, abs=0.01)  # pooled population variance 2
    assert "ours 61.00" in cc.line() and "+3.00" in cc.line()


def test_reruns_with_another_teacher_at_the_same_path_are_not_pooled():
    from suites import reruns

    cmd = "datadistill evaluate x --models convnet --scores --protocol dc labels=teacher teacher=runs/t.safetensors"
    old, new = ({"command": cmd, "model": "convnet", "acc_mean": a, "teacher": {"path": "runs/t.safetensors",
                                                                               "sha256": d}}
                for a, d in ((94.0, "e283"), (95.0, "0596")))
    assert reruns([old, new]) == [new]  # the rebuilt teacher's record alone
    assert reruns([old, new, {**new, "acc_mean": 95.2}]) == [new, {**new, "acc_mean": 95.2}]
    assert reruns([{"command": cmd, "model": "convnet"}] * 2) == [{"command": cmd, "model": "convnet"}] * 2


@pytest.mark.parametrize("suite", SUITES, ids=[p.stem for p in SUITES])
def test_every_job_is_listed_with_its_command(suite, capsys):
    assert run.main([str(suite), "--list"]) == 0
    out = capsys.readouterr().out
    for job in load_suite(suite).jobs:
        head = "python benchmarks/parity.py " if job.kind == "parity" else "datadistill "
        assert f"{job.id}\n  $ {head}" in out, job.id


@pytest.mark.filterwarnings("ignore::datadistill.config.DeprecatedKeyWarning")  # the cpu suite's old `--init`
@pytest.mark.parametrize("suite", SUITES, ids=[p.stem for p in SUITES])
def test_every_job_resolves_to_a_valid_config(suite):
    """Each job's arguments make a valid config (names, keys, types, ranges), before anything runs: a
    typo in a suite fails here, not hours into a cluster run. Distill and experts jobs resolve their
    configs; evaluate, score, full, bases and teacher jobs parse their whole command and build their
    protocol and models."""
    from datadistill import cli
    from datadistill.resolve import resolve

    loaded, checked = load_suite(suite), 0
    for job in loaded.jobs:
        args = [a.replace("{runs}", "runs") for a in job.args]
        if job.kind == "distill":
            argv = ["distill", "--method", job.cli_method or job.method, "--dataset", job.dataset,
                    "--ipc", str(job.ipc), *args]
            resolve(cli.distill_config(cli.parse_args(argv)))
        elif job.kind == "experts":
            cli.experts_config(cli.parse_args(["experts", "--dataset", job.dataset, *args]))
        elif job.kind == "study":  # the command parses, and each distillation it runs per half resolves
            from datadistill.studies import privacy
            from datadistill.config import RunConfig, from_dict

            a = cli.parse_args(["study", job.study, "--dataset", job.dataset, *args, "--out", "x"])
            cfg = privacy.PrivacyConfig(job.dataset, ())
            for pipeline in privacy.PrivacyConfig.__dataclass_fields__["pipelines"].metadata["parse"](
                    getattr(a, "pipelines", [])):
                config = privacy.run_config(pipeline, cfg, "100:0:0", 0, None)
                if privacy.needs_experts(config) is not None:
                    config = privacy.run_config(pipeline, cfg, "100:0:0", 0, "experts")
                resolve(from_dict(RunConfig, config, where=job.id))
        elif job.kind in ("evaluate", "score", "full", "bases", "teacher"):
            # the command as the runner runs it parses, and an evaluation's protocol (preset, fields,
            # types, ranges) and models are valid
            from datadistill.cli.common import _protocol
            from datadistill.models import MODELS

            cmd = run.Runner(loaded, Path("runs"), None, None).command(job)
            a = cli.parse_args([c.replace("{runs}", "runs") for c in cmd[1:]])
            checked += 1
            if job.kind != "teacher":
                protocol = _protocol(a.protocol, ([a.file] if a.full and a.file else []) + a.overrides, "dc")
                for m in a.models or [protocol.model]:
                    MODELS.get(m)
        else:
            assert job.kind == "parity", f"{job.id}: kind {job.kind} is not checked here"
    assert checked == sum(j.kind in ("evaluate", "score", "full", "bases", "teacher") for j in loaded.jobs)


def test_an_expectation_above_its_record_is_a_regression(tmp_path, capsys):
    doc = yaml.safe_load((SUITES_DIR / "cpu.yaml").read_text())
    job = next(j for j in doc["jobs"] if j["id"] == "dm-mnist-ipc10-cpu-300it")
    record = latest_record(load_suite("cpu").job(job["id"]))
    job["expected"]["value"] = record["acc_mean"] + job["expected"]["tolerance"] + 0.5
    raised = tmp_path / "cpu.yaml"
    raised.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert run.main([str(raised), "--check"]) == 1
    captured = capsys.readouterr()
    assert "regression dm-mnist-ipc10-cpu-300it" in captured.out
    assert "REGRESSION: dm-mnist-ipc10-cpu-300it" in captured.err
    # only that job: the others still pass
    assert sum(line.startswith("regression") for line in captured.out.splitlines()) == 1
    # exactly at the floor is no regression
    job["expected"]["value"] = record["acc_mean"] + job["expected"]["tolerance"]
    raised.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert run.main([str(raised), "--check", "--only", "dm-mnist-ipc10-cpu-300it"]) == 0


def one_job_suite(path: Path, value: float) -> Path:
    path.write_text(yaml.safe_dump({"suite": "tiny", "jobs": [{
        "id": "dm-digits-ipc1-2it", "kind": "distill", "results": "tiny.jsonl", "method": "dm", "dataset": "digits",
        "ipc": 1, "setting": "2it",
        "args": ["--iterations", "2", "method_config.batch_real=16", "method_config.model=convnet_w32",
                 "eval.preset=smoke", "eval.epochs=2", "eval.n_models=1", "eval.model=convnet_w32"],
        "expected": {"value": value, "tolerance": 1.0, "source": "test"}}]}, sort_keys=False))
    return path


def test_runner_runs_a_job_end_to_end_and_resumes(tmp_path, capsys):
    suite, results, runs = one_job_suite(tmp_path / "tiny.yaml", 0.0), tmp_path / "tiny.jsonl", tmp_path / "runs"
    assert run.main([str(suite), "--results", str(results), "--runs", str(runs)]) == 0
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(rows) == 1
    r = rows[0]
    assert r["job"] == "dm-digits-ipc1-2it" and r["suite"] == "tiny" and r["iterations"] == 2
    assert r["command"].startswith("datadistill distill --method dm --dataset digits --ipc 1 --out ")
    assert r["capability"] and r["device"].startswith("cpu") and r["commit"] and r["job_seconds"] > 0
    assert 0 <= r["acc_mean"] <= 100 and (runs / "dm-digits-ipc1-2it" / "distilled.safetensors").is_file()
    # a recorded job is skipped
    assert run.main([str(suite), "--results", str(results), "--runs", str(runs)]) == 0
    assert "skip dm-digits-ipc1-2it" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 1
    # its record below the expectation: the run exits 1 without running anything
    one_job_suite(suite, r["acc_mean"] + 5)
    assert run.main([str(suite), "--results", str(results), "--runs", str(runs)]) == 1
    assert len(results.read_text().splitlines()) == 1


def test_rerun_appends_a_new_record_keeps_the_earlier_run_folder_and_resumes_a_stopped_rerun(tmp_path, capsys):
    suite, results, runs = one_job_suite(tmp_path / "tiny.yaml", 0.0), tmp_path / "tiny.jsonl", tmp_path / "runs"
    argv = [str(suite), "--results", str(results), "--runs", str(runs)]
    assert run.main(argv) == 0
    first = (runs / "dm-digits-ipc1-2it" / "distilled.safetensors").read_bytes()
    assert run.main([*argv, "--only", "dm-digits-ipc1-2it", "--rerun"]) == 0
    assert "its earlier run folder is kept as" in capsys.readouterr().out
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["command"] == rows[1]["command"]  # a rerun: the same command, a new line
    assert (runs / "dm-digits-ipc1-2it.previous-1" / "distilled.safetensors").read_bytes() == first
    assert (runs / "dm-digits-ipc1-2it" / "distilled.safetensors").is_file()
    assert not (runs / "dm-digits-ipc1-2it.rerun").exists()  # recorded: the mark is gone
    # a rerun stopped before its record (its mark holds the record count) resumes in its folder
    runner = run.Runner(run.load_suite(suite), runs, results)
    job = runner.suite.job("dm-digits-ipc1-2it")
    (runs / "dm-digits-ipc1-2it.rerun").write_text("2\n")
    runner.start_rerun(job)
    assert "resumes" in capsys.readouterr().out and not (runs / "dm-digits-ipc1-2it.previous-2").exists()
    # a mark from before the last record: that rerun was recorded, so this one starts afresh
    (runs / "dm-digits-ipc1-2it.rerun").write_text("1\n")
    runner.start_rerun(job)
    assert (runs / "dm-digits-ipc1-2it.previous-2").is_dir() and not (runs / "dm-digits-ipc1-2it").exists()
    assert (runs / "dm-digits-ipc1-2it.rerun").read_text().strip() == "2"


@pytest.mark.parametrize("argv", [["cpu", "--rerun"], ["cpu", "--only", "dm-mnist-ipc10-cpu-300it", "--rerun",
                                                        "--check"]])
def test_rerun_needs_only_and_runs_something(argv, capsys):
    with pytest.raises(SystemExit) as e:
        run.main(argv)
    assert e.value.code == 2 and "--rerun runs the jobs named with --only" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["no-such-suite", "--check"], "no suite 'no-such-suite'"),
    (["cpu", "--check", "--only", "dm-mnist-ipc10-cpu-30it"], "did you mean dm-mnist-ipc10-cpu-300it"),
])
def test_bad_input_is_one_line(argv, message, capsys):
    assert run.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("job, message", [
    ({"id": "a", "kind": "distil", "results": "x.jsonl"}, "kind must be one of"),
    ({"id": "a", "kind": "distill", "results": "x.jsonl", "method": "dm", "dataset": "digits", "ipc": 1},
     "missing setting"),
    ({"id": "a", "kind": "evaluate", "results": "x.jsonl", "of": "b", "model": "mlp"}, "refers to 'b'"),
    ({"id": "a", "kind": "full", "results": "x.jsonl", "dataset": "digits", "setting": "s", "budget": 3},
     "unknown field(s) budget"),
    ({"id": "a", "kind": "full", "results": "x.jsonl", "dataset": "digits", "setting": "s",
      "expected": {"value": 1}}, "expected needs value, tolerance and source"),
    ({"id": "a", "kind": "study", "results": "x.jsonl", "study": "contnual", "dataset": "digits"},  # registry names
     "study 'contnual'"),
    ({"id": "a", "kind": "distill", "results": "x.jsonl", "method": "dn", "dataset": "digits", "ipc": 1,
      "setting": "s"}, "method 'dn'"),
    ({"id": "a", "kind": "full", "results": "x.jsonl", "dataset": "mnistt", "setting": "s"}, "dataset 'mnistt'"),
])
def test_bad_suite_is_one_line(tmp_path, capsys, job, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"jobs": [job]}))
    assert run.main([str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_released_sets_are_the_methods_tables_figures():
    """Each released set is one job's set, its index entry names that job's record, and the methods table
    shows that job's figure (its latest record or the pool of its reruns) in its cell."""
    index = json.loads((ROOT / "benchmarks/released/index.json").read_text())
    top = report.headline(report.records())
    assert len(index) == len({(e["method"], e["dataset"], e["ipc"]) for e in index})
    for e in index:
        assert (ROOT / e["file"]).is_file()
        file, line = e["record"].split(":")
        r = json.loads((ROOT / file).read_text().splitlines()[int(line) - 1])
        assert r["job"] == e["job"] and r["acc_mean"] == e["acc_mean"]
        if e["method"] != "dd":  # DD has its own protocol and table
            assert top[(e["method"], e["dataset"], e["ipc"])]["row"]["job"] == e["job"], e["file"]


def test_results_page_is_generated_from_the_records(capsys):
    assert report.main(["--check"]) == 0, "docs/results.md or README.md's table is stale: run python benchmarks/report.py"
    capsys.readouterr()
    text = (ROOT / "docs/results.md").read_text()
    assert "generated by `python benchmarks/report.py`" in text.splitlines()[0]
    assert report.main(["--methods-table"]) == 0
    table = capsys.readouterr().out
    assert "| dm |" in table and "(benchmarks/results/dm_cpu.jsonl#L6)" in table
    # the README shows the table the records give today, not an older copy (report.main --check above)
    assert table.strip() in (ROOT / "README.md").read_text()
    assert (ROOT / "docs/img/acc_vs_ipc.png").is_file()
    # every record file the page links to exists
    assert all((RESULTS_DIR / name).is_file() for name in {"dm_cpu.jsonl", "dc_cpu.jsonl", "mtt_cpu.jsonl"})


def test_fidelity_suites_have_their_own_section_not_the_one_protocol_tables(monkeypatch, tmp_path):
    """Each fidelity suite's job is a row of its own section, with its latest figure, how it was measured
    and its record, or "not run"; a fidelity record never joins the `dc` methods tables."""
    suite = tmp_path / "fidelity-toy.yaml"
    suite.write_text(yaml.safe_dump({"suite": "fidelity-toy", "filling": True, "not_run": "toy", "jobs": [
        {"id": "rded-toy", "kind": "distill", "results": "toy.jsonl", "method": "rded", "dataset": "mnist", "ipc": 10,
         "setting": "fidelity", "args": []},
        {"id": "random-toy", "kind": "distill", "results": "toy.jsonl", "method": "random", "dataset": "mnist",
         "ipc": 10, "setting": "selection", "args": []}]}))
    monkeypatch.setattr(report, "SUITES_DIR", tmp_path)
    rec = report.Row({"job": "rded-toy", "method": "rded", "dataset": "mnist", "ipc": 10, "setting": "fidelity",
                      "model": "convnet", "protocol": "dc", "epochs": 300, "n_models": 2, "acc_mean": 91.5,
                      "acc_std": 0.25, "command": "x", "commit": "abc", "iterations": 0, "seconds_per_iteration": 0.0,
                      "device": "cpu", "file": "toy.jsonl", "line": 3})
    jobs = {"rded-toy": [rec]}
    md = report.fidelity_section(jobs)
    assert "| rded-toy | rded, MNIST 10/class, fidelity | 91.50 ± 0.25 | 2 x convnet, `dc` protocol, 300 epochs" in md
    assert "trained on the file's own labels" in md and "(../benchmarks/results/toy.jsonl#L3)" in md
    assert "| random-toy | random, MNIST 10/class, selection | not run |" in md
    assert "rded-toy" not in report.main_tables(jobs, {"rded-toy": "fidelity-toy"})[0]
    assert "rded-toy" in report.main_tables(jobs, {"rded-toy": "cpu"})[0]  # the same record of another suite


def test_a_job_knows_its_suite_also_when_another_suite_needs_it():
    """A prerequisite of another suite (fidelity-datm's rungs need cpu-ablations' experts) is recorded
    under its own suite's name, not under the suite whose run built it."""
    datm = load_suite("fidelity-datm")
    assert datm.job("cpu-ablations:experts-mnist-9").suite == "cpu-ablations"
    assert datm.job("experts-mnist-9-ftd").suite == "fidelity-datm"
    assert {j.suite for j in load_suite("cpu-ablations").jobs} == {"cpu-ablations"}


def test_a_nas_table_says_at_which_lr_the_proxies_trained():
    """The fidelity-nas records at the proxy protocol's lr (L8) and at the sets' learned lr (L9): the
    caption of each table says which."""
    rows = [{**json.loads(line), "file": "apps.jsonl", "line": i}
            for i, line in enumerate((RESULTS_DIR / "apps.jsonl").read_text().splitlines(), 1)]
    fixed, learned = rows[7], rows[8]
    assert (fixed["job"], learned["job"]) == ("nas-fashion_mnist-ref1-2seeds", "nas-fashion_mnist-ref1-2seeds-learned-lr")
    assert "proxies trained `dc` 100 epochs, the whole data 1 epoch(s)" in report._nas_table(fixed)
    assert ("proxies trained `dc` 100 epochs at each set's learned lr where it has one (else 0.01), the whole data"
            in report._nas_table(learned))


def test_a_distill_record_carries_the_runs_accuracy_curve(tmp_path):
    """`--eval-every` evaluations become the record's ``curve`` ([iteration, accuracy, networks]); the final
    evaluation is the record's own figure, and a line cut by a kill is passed over."""
    metrics = tmp_path / "metrics.jsonl"
    assert run.eval_curve(metrics) == []
    metrics.write_text("\n".join([json.dumps({"iteration": 10, "loss": 1.0}),
                                  json.dumps({"iteration": 500, "eval": {"acc_mean": 77.374, "n_models": 1}}),
                                  json.dumps({"iteration": 1000, "eval": {"acc_mean": 80.76, "n_models": 2}}),
                                  json.dumps({"iteration": 2000, "final": True, "eval": {"m": {"acc_mean": 80.5}}}),
                                  '{"iteration": 2100, "ev']))
    with pytest.warns(TornLineWarning, match="torn last line"):
        assert run.eval_curve(metrics) == [[500, 77.37, 1], [1000, 80.76, 2]]
    metrics.write_text('{"iteration": 1, "ev\n' + json.dumps({"iteration": 500, "eval": {"acc_mean": 77.0}}))
    assert run.eval_curve(metrics) == []  # a damaged file: no curve, and the record stands


def test_adopt_turns_a_first_record_into_the_expectation(tmp_path, capsys):
    suite = tmp_path / "filling.yaml"
    suite.write_text('suite: filling\nfilling: true\njobs:\n'
                     '  - {"id": "a", "kind": "full", "results": "r.jsonl", "dataset": "digits", "setting": "x"}\n'
                     '  - {"id": "b", "kind": "full", "results": "r.jsonl", "dataset": "digits", "setting": "y"}\n'
                     '  - {"id": "e", "kind": "experts", "results": "r.jsonl", "dataset": "digits", "args": ["--out", "x"]}\n')
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"job": "a", "acc_mean": 90.0, "acc_std": 3.0, "n_models": 4, "commit": "abc"}) + "\n"
                       + json.dumps({"job": "e", "mean_final_test_acc": 97.531, "commit": "abc"}) + "\n")
    assert run.main([str(suite), "--adopt", "--results", str(records)]) == 0
    a, b, e = load_suite(suite).jobs
    assert (e.expected.metric, e.expected.value, e.expected.tolerance) == ("mean_final_test_acc", 97.53, 1.0)
    assert (a.expected.value, a.expected.tolerance) == (90.0, 4.5)  # 3 * 3.0 / sqrt(4)
    assert "r.jsonl:1 (commit abc)" in a.expected.source and b.expected is None  # b has no record yet
    assert run.main([str(suite), "--check", "--results", str(records)]) == 0


def grid_suite(path: Path) -> Path:
    common = ["method_config.batch_real=16", "method_config.model=convnet_w32", "eval.preset=smoke", "eval.epochs=2",
              "eval.n_models=1", "eval.model=convnet_w32"]
    jobs = [{"id": f"dm-digits-ipc1-{n}it", "kind": "distill", "results": "tiny.jsonl", "method": "dm",
             "dataset": "digits", "ipc": 1, "setting": f"{n}it", "args": ["--iterations", str(n), *common]}
            for n in (1, 2)]
    jobs.append({"id": "eval-dm-2it", "kind": "evaluate", "results": "tiny.jsonl", "model": "convnet_w32",
                 "of": "dm-digits-ipc1-2it", "args": ["--protocol", "smoke", "epochs=2", "n_models=2"]})
    path.write_text(yaml.safe_dump({"suite": "tiny", "filling": True, "jobs": jobs}, sort_keys=False))
    return path


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_runner_spreads_jobs_over_an_executor(executor, tmp_path, capsys, monkeypatch):
    """One task per job; a job whose input set is missing waits for the job that makes it; the
    records are those of the serial runner; a second launch runs nothing."""
    if executor == "ray":
        pytest.importorskip("ray")
    suite, runs = grid_suite(tmp_path / "tiny.yaml"), tmp_path / "runs"
    argv = [str(suite), "--results", str(tmp_path / "grid.jsonl"), "--runs", str(runs), "--executor", executor,
            "--workers", "2", "--threads", "1", "--only", "eval-dm-2it,dm-digits-ipc1-1it"]
    assert run.main(argv) == 0
    rows = {r["job"]: r for r in map(json.loads, (tmp_path / "grid.jsonl").read_text().splitlines())}
    assert set(rows) == {"dm-digits-ipc1-1it", "dm-digits-ipc1-2it", "eval-dm-2it"}  # the input job ran first
    assert rows["eval-dm-2it"]["source"].endswith("dm-digits-ipc1-2it/distilled.safetensors")
    assert run.main(argv) == 0 and "skip eval-dm-2it" in capsys.readouterr().out
    assert len((tmp_path / "grid.jsonl").read_text().splitlines()) == 3
    if executor == "ray":
        return
    # the serial runner, one thread (--threads reaches each job's process): the same accuracies
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert run.main([str(suite), "--results", str(tmp_path / "serial.jsonl"), "--runs", str(tmp_path / "r2"),
                     "--threads", "1", "--only", "eval-dm-2it,dm-digits-ipc1-1it"]) == 0
    serial = {r["job"]: r for r in map(json.loads, (tmp_path / "serial.jsonl").read_text().splitlines())}
    assert {r["device"].rsplit("(", 1)[1] for r in serial.values()} == {"1 threads)"}
    assert {k: r["accuracies"] for k, r in serial.items()} == {k: r["accuracies"] for k, r in rows.items()}
    # an evaluation keeps each model's result in its run folder, where a stopped job resumes
    assert sorted(p.name for p in (tmp_path / "r2" / "eval-dm-2it" / "models").glob("*.json")) == \
        ["convnet_w32-000.json", "convnet_w32-001.json"]


def test_paper_cost_extrapolates_each_job_once_per_device(tmp_path, capsys):
    """paper_cost.py on digits: a distillation (MTT, against its stand-in experts) and an experts job,
    timed a few units each, one record per job, skipped when measured; report.py tables them."""
    suite = tmp_path / "tiny-cost.yaml"
    suite.write_text(yaml.safe_dump({"suite": "tiny-cost", "jobs": [
        {"id": "experts-digits", "kind": "experts", "results": "x.jsonl", "dataset": "digits",
         "args": ["--model", "convnet_w32", "--experts", "4", "--epochs", "3", "--out", "{runs}/experts/digits"]},
        {"id": "mtt-digits-ipc1", "kind": "distill", "results": "x.jsonl", "method": "mtt", "dataset": "digits",
         "ipc": 1, "setting": "t", "needs": "experts-digits",
         "args": ["--iterations", "100", "method_config.experts={runs}/experts/digits", "method_config.model=convnet_w32",
                  "method_config.syn_steps=2", "method_config.max_start_epoch=2", "method_config.expert_epochs=1",
                  "eval.preset=mtt-paper", "eval.n_models=3", "eval.model=convnet_w32"]}]}, sort_keys=False))
    results = tmp_path / "cost.jsonl"
    argv = ["--suite", str(suite), "--k", "2", "--eval-epochs", "1", "--device", "cpu", "--results", str(results)]
    assert paper_cost.main(argv) == 0
    experts, mtt = [json.loads(x) for x in results.read_text().splitlines()]
    for r in (experts, mtt):
        assert r["extrapolation"] is True and r["k"] == 2 and r["suite"] == "tiny-cost"
        assert r["device"].startswith("cpu") and r["capability"] and r["commit"]
        assert r["node_hours"] == pytest.approx(r["distill_hours"] + r["experts_hours"] + r["eval_hours"], abs=1e-3)
    assert experts["n_experts"] == 4 and experts["expert_epochs"] == 3 and experts["seconds_per_expert_epoch"] > 0
    assert experts["experts_hours"] == pytest.approx(4 * 3 * experts["seconds_per_expert_epoch"] / 3600, rel=1e-2)
    assert mtt["iterations"] == 100 and mtt["seconds_per_iteration"] > 0 and mtt["needs"] == "experts-digits"
    assert mtt["distill_hours"] == pytest.approx(100 * mtt["seconds_per_iteration"] / 3600, rel=1e-2, abs=1e-4)
    assert mtt["eval_epochs"] == [1001] and mtt["eval_n_models"] == 3 and mtt["eval_hours"] > 0
    # measured on this device already: skipped, nothing appended
    assert paper_cost.main(argv) == 0
    assert "skip mtt-digits-ipc1" in capsys.readouterr().out and len(results.read_text().splitlines()) == 2
    rows = [report.Row(r, file="paper_cost.jsonl", line=n) for n, r in enumerate((experts, mtt), 1)]
    table = report.cost_table(rows)
    assert f"### tiny-cost on {mtt['device']}" in table and "| mtt-digits-ipc1 |" in table
    assert "| **total** (2 jobs) |" in table and f"**{mtt['node_hours'] + experts['node_hours']:.3g}**" in table


def test_a_lost_teacher_is_rebuilt_after_its_experts_and_recorded_again_when_it_differs(tmp_path, capsys):
    """A run folder lost (a fresh machine): a job that needs a recorded teacher rebuilds the experts and
    the teacher first; the teacher is recorded again only when it is not the recorded one."""
    common = ["--iterations", "1", "method_config.batch_real=16", "method_config.model=convnet_w32",
              "eval.preset=smoke", "eval.epochs=1", "eval.n_models=1", "eval.model=convnet_w32"]
    jobs = [{"id": "experts-digits", "kind": "experts", "results": "tiny.jsonl", "dataset": "digits",
             "args": ["--model", "convnet_w32", "--experts", "1", "--epochs", "1", "--out", "{runs}/experts/digits"]},
            {"id": "teacher-digits", "kind": "teacher", "results": "tiny.jsonl", "dataset": "digits",
             "needs": "experts-digits", "args": ["--from-experts", "{runs}/experts/digits",
                                                 "--out", "{runs}/teachers/digits.safetensors"]}]
    jobs += [{"id": f"dm-digits-ipc1-{k}", "kind": "distill", "results": "tiny.jsonl", "method": "dm",
              "dataset": "digits", "ipc": 1, "setting": k, "needs": "teacher-digits", "args": common}
             for k in ("a", "b", "c")]
    suite, results, runs = tmp_path / "tiny.yaml", tmp_path / "tiny.jsonl", tmp_path / "runs"
    suite.write_text(yaml.safe_dump({"suite": "tiny", "filling": True, "jobs": jobs}, sort_keys=False))
    argv = [str(suite), "--results", str(results), "--runs", str(runs), "--only"]

    def teachers() -> list[dict]:
        return [r for r in map(json.loads, results.read_text().splitlines()) if r["job"] == "teacher-digits"]

    assert run.main([*argv, "dm-digits-ipc1-a"]) == 0
    first = teachers()
    assert len(first) == 1 and first[0]["path"] == str(runs / "teachers" / "digits.safetensors")
    shutil.rmtree(runs)  # the same machine rebuilds the same teacher: no second record
    assert run.main([*argv, "dm-digits-ipc1-b"]) == 0
    assert teachers() == first and (runs / "teachers" / "digits.safetensors").is_file()
    shutil.rmtree(runs)  # a record made elsewhere (another digest): the rebuilt teacher is recorded again
    lines = results.read_text().splitlines()
    results.write_text("".join((x.replace(first[0]["sha256"], "0" * 64) if '"teacher-digits"' in x else x) + "\n"
                               for x in lines))
    capsys.readouterr()
    assert run.main([*argv, "dm-digits-ipc1-c"]) == 0
    assert "is not the recorded one (00000000): recorded again" in capsys.readouterr().out
    now = teachers()
    assert len(now) == 2 and now[-1]["sha256"] == first[0]["sha256"]

    def experts() -> list[dict]:
        return [r for r in map(json.loads, results.read_text().splitlines()) if r["job"] == "experts-digits"]

    assert len(experts()) == 1 and len(experts()[0]["sha256"]) == 64  # rebuilt twice, the same trajectories
    # experts recorded elsewhere (or before records had a digest): the ones built here are recorded again
    lines = results.read_text().splitlines()
    results.write_text("".join((x.replace(experts()[0]["sha256"], "0" * 64) if '"experts-digits"' in x else x) + "\n"
                               for x in lines))
    shutil.rmtree(runs)
    capsys.readouterr()
    assert run.main([*argv, "dm-digits-ipc1-a", "--rerun"]) == 0
    assert "experts-digits: the experts here (sha256 " in capsys.readouterr().out  # against 00000000
    assert len(experts()) == 2 and experts()[-1]["sha256"] == first_experts_digest(runs)


def test_a_finished_teacher_of_the_jobs_settings_is_recorded_not_trained_again(tmp_path, capsys):
    """A teacher job without a record (its records kept by another checkout) whose --out is a teacher
    trained with its settings records that file; one of other settings is trained again."""
    def suite(epochs: int) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump({"suite": "tiny", "filling": True, "jobs": [
            {"id": "teacher-digits", "kind": "teacher", "results": "tiny.jsonl", "dataset": "digits",
             "args": ["--model", "convnet_w32", "--epochs", str(epochs), "--no-augment", "--force",
                      "--out", "{runs}/teachers/digits.safetensors"]}]}))
        return path

    results, runs = tmp_path / "tiny.jsonl", tmp_path / "runs"
    argv = ["--results", str(results), "--runs", str(runs)]
    assert run.main([str(suite(1)), *argv]) == 0
    first = json.loads(results.read_text())
    teacher = runs / "teachers" / "digits.safetensors"
    made = teacher.stat().st_mtime_ns
    results.unlink()
    capsys.readouterr()
    assert run.main([str(suite(1)), *argv]) == 0
    assert "is a finished teacher of this job's settings: recorded from it, not trained again" in capsys.readouterr().out
    again = json.loads(results.read_text())
    assert teacher.stat().st_mtime_ns == made and again["sha256"] == first["sha256"]
    assert again["test_accuracy"] == first["test_accuracy"] and again["command"] == first["command"]
    results.unlink()
    assert run.main([str(suite(2)), *argv]) == 0  # 2 epochs: not the file's settings, trained again
    assert "recorded from it" not in capsys.readouterr().out and teacher.stat().st_mtime_ns != made


def first_experts_digest(runs: Path) -> str:
    return run.experts_digest(runs / "experts" / "digits")


def test_the_soft_tables_storage_is_one_for_an_images_only_set_and_the_records_ratio_otherwise():
    soft = load_suite(SUITES_DIR / "soft.yaml")
    # dm's set holds images only; its record (cpu suite) predates ``stored_floats``
    assert report.set_how(soft, soft.job("score-dm-mnist-ipc10"))["storage"] == 1.0
    datm = report.set_how(soft, soft.job("score-datm-mnist-ipc1"))  # images plus 10 label vectors and an lr
    src = latest_record(load_suite(SUITES_DIR / "soft.yaml").job("datm-mnist-ipc1"))
    assert datm["storage"] == pytest.approx(src["stored_floats"] / (10 * 28 * 28)) and datm["storage"] > 1.0


def test_a_runs_folder_linked_into_the_checkout_keeps_its_name_in_records(tmp_path, monkeypatch):
    checkout, shared = tmp_path / "checkout", tmp_path / "shared"
    (checkout / "benchmarks").mkdir(parents=True)
    shared.mkdir()
    (checkout / "benchmarks" / "runs").symlink_to(shared)
    monkeypatch.setattr(run, "ROOT", checkout)
    assert run.repo_name(checkout / "benchmarks" / "runs" / "job") == "benchmarks/runs/job"
    assert run.repo_name(shared / "job") == str(shared / "job")  # outside the checkout: absolute
    runner = run.Runner(load_suite(SUITES_DIR / "cpu.yaml"), checkout / "benchmarks" / "runs", None)
    job = runner.suite.jobs[0]
    assert run.repo_name(runner.run_dir(job)) == f"benchmarks/runs/{job.id}"


def test_the_plot_legend_names_the_series_that_train_on_other_labels(monkeypatch, tmp_path):
    import datadistill.viz as viz

    seen = {}
    monkeypatch.setattr(viz, "plot_acc_vs_ipc", lambda top, out, **kw: seen.update(kw, top=top))
    report.plot(report.records(), tmp_path / "p.png")
    legend, methods = seen["legend"], {f["method"] for f in seen["top"]}
    assert legend["rded"] == "rded (teacher's labels)" and legend["datm"] == "datm (learned soft labels)"
    assert {"dm", "mtt", "random"} <= methods and not {"dm", "mtt", "random"} & set(legend)  # hard labels: plain


def test_a_record_of_a_protocol_of_steps_names_its_steps_not_the_unused_epochs():
    from datadistill.evaluation.protocol import get_protocol

    frepo = get_protocol("frepo-paper").sized(10).to_dict()  # FRePo's table: 10 images -> 1000 steps
    assert run._steps(frepo) == {"steps": 1000}
    assert run._steps(get_protocol("dc").to_dict()) == {}
    r = {"protocol": "frepo-paper", "epochs": 300, "n_models": 5, "model": "convnet_frepo_eval", **run._steps(frepo)}
    assert report.length(r) == "1000 steps" and "1000 steps" in report._evaluation(r)
    assert report.length({"epochs": 300}) == "300 ep"


# holds the lock file argv[1] (`process_lock`) and says so, for argv[2] seconds
HOLD_JOB = """import sys, time
from pathlib import Path
from datadistill.rundir import process_lock
with process_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    print("released", flush=True)
"""


def test_a_job_another_process_is_running_is_skipped_not_run_twice(tmp_path, capsys):
    import subprocess

    suite, results, runs = one_job_suite(tmp_path / "tiny.yaml", 0.0), tmp_path / "tiny.jsonl", tmp_path / "runs"
    argv = [str(suite), "--results", str(results), "--runs", str(runs)]
    job = run.load_suite(suite).job("dm-digits-ipc1-2it")
    lock = run.Runner(run.load_suite(suite), runs, results).lock_file(job)
    assert lock == runs / ".locks" / "tiny.dm-digits-ipc1-2it.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_JOB, str(lock), "120"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run.main(argv) == 0  # skipped, not failed: the other process will record it
        assert f"skip dm-digits-ipc1-2it: process {holder.pid} on " in capsys.readouterr().out
        assert not results.exists() and not (runs / "dm-digits-ipc1-2it").exists()
    finally:
        holder.kill()  # SIGKILL: the kernel lets the lock go
        holder.wait()
    assert run.main(argv) == 0
    assert len(results.read_text().splitlines()) == 1 and not lock.exists()


def test_a_prerequisite_another_process_is_building_is_waited_for(tmp_path, capsys):
    import subprocess

    suite, results, runs = one_job_suite(tmp_path / "tiny.yaml", 0.0), tmp_path / "tiny.jsonl", tmp_path / "runs"
    runner = run.Runner(run.load_suite(suite), runs, results)
    job = runner.suite.job("dm-digits-ipc1-2it")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_JOB, str(runner.lock_file(job)), "1.5"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with runner.hold(job, wait=True):  # as `ensure` takes a teacher or experts
            assert time.monotonic() - start > 1.0  # only once the holder's 1.5 s were over
            assert holder.stdout.readline().strip() == "released"
            with runner.hold(job):  # held here already: no second lock, no deadlock
                pass
    finally:
        holder.kill()
        holder.wait()
    assert f"process {holder.pid} on " in capsys.readouterr().out
    assert not runner.held

"""The executor's backends (serial, process, ray on a local 2-CPU cluster) and the grids built on
them: the same files and accuracies as the serial path, resumption, retries of killed tasks, and
one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import executor_tasks as tasks
from datadistill.evaluation import evaluate, get_protocol
from datadistill.executor import ExecutorError, Task, TaskError, make_executor
from datadistill.experts import ExpertConfig, train_experts
from datadistill.grids import evaluate_on, open_for_evaluation, train_experts_on
from datadistill.synset import PixelSet, save_synset

OPTS = {"num_classes": 3, "size": 12, "per_class": 24}
CFG = ExpertConfig(dataset="procedural", model="convnet_w32", n_experts=3, epochs=2, augment="dsa", batch_size=16,
                   dataset_options=OPTS)


@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray")
    ex = make_executor("ray", workers=2, threads=1, progress=False)
    yield ex
    ex.close()


def backends(ray_executor):
    return {"process": make_executor("process", workers=2, threads=1, progress=False), "ray": ray_executor}


def _square_tasks(d: Path, log: Path, n: int = 4) -> list[Task]:
    return [Task(f"square {i}", tasks.square, (i, str(log)), out=d / f"sq-{i}.txt") for i in range(n)]


@pytest.mark.parametrize("name", ["serial", "process", "ray"])
def test_grid_writes_files_and_second_launch_does_nothing(name, ray_executor, tmp_path):
    ex = ray_executor if name == "ray" else make_executor(name, workers=2, threads=1, progress=False)
    log = tmp_path / "calls.log"
    out = ex.run(_square_tasks(tmp_path, log))
    assert [Path(p).read_text() for p in out.values()] == ["0", "1", "4", "9"]
    assert sorted(log.read_text().split()) == ["0", "1", "2", "3"]
    (tmp_path / "sq-2.txt").unlink()  # a lost result: only that task runs again
    ex.run(_square_tasks(tmp_path, log))
    assert sorted(log.read_text().split()) == ["0", "1", "2", "2", "3"]
    before = log.read_text()
    again = ex.run(_square_tasks(tmp_path, log))
    assert log.read_text() == before and again == out  # finished grid: no task runs
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.parametrize("name", ["process", "ray"])
def test_killed_task_is_retried_and_grid_completes(name, ray_executor, tmp_path):
    ex = ray_executor if name == "ray" else make_executor(name, workers=2, threads=1, progress=False)
    grid = [Task(f"t{i}", tasks.dies_once, (i, str(tmp_path / f"marker-{i}")), out=tmp_path / f"r{i}")
            for i in range(3)]
    grid[1:] = [Task(f"t{i}", tasks.square, (i, str(tmp_path / "log")), out=tmp_path / f"r{i}") for i in (1, 2)]
    out = ex.run(grid)
    assert (tmp_path / "marker-0").read_text() == "killed once"  # it did die once
    assert [Path(p).read_text() for p in out.values()] == ["0", "1", "4"]


@pytest.mark.parametrize("name", ["serial", "process", "ray"])
def test_failing_task_reports_its_key_and_keeps_the_rest(name, ray_executor, tmp_path):
    ex = ray_executor if name == "ray" else make_executor(name, workers=2, threads=1, progress=False)
    grid = [Task("good", tasks.square, (3, str(tmp_path / "log")), out=tmp_path / "good"),
            Task("bad", tasks.fails, (7,), out=tmp_path / "bad")]
    with pytest.raises(TaskError, match=r"1 of 2 .*bad: ValueError: task 7 is broken") as err:
        ex.run(grid)
    assert not isinstance(err.value, ExecutorError)  # a bug, not a user error: the CLI keeps its traceback
    # the worker's own traceback, naming the function that raised, whichever process ran it
    assert "Traceback" in str(err.value) and 'in fails\n    raise ValueError(f"task {x} is broken")' in str(err.value)
    assert (tmp_path / "good").read_text() == "9" and not (tmp_path / "bad").exists()
    record = json.loads((tmp_path / "bad.error.json").read_text())  # the failure is kept beside the result
    assert (record["key"], record["type"], record["user_error"]) == ("bad", "ValueError", False)
    assert "in fails" in record["traceback"]
    # the same task fixed: it runs, and its error record goes
    ex.run([Task("bad", tasks.square, (7, str(tmp_path / "log")), out=tmp_path / "bad")])
    assert (tmp_path / "bad").read_text() == "49" and not (tmp_path / "bad.error.json").exists()


@pytest.mark.parametrize("name", ["serial", "process"])
def test_a_task_user_error_stays_one_line(name, tmp_path):
    ex = make_executor(name, workers=2, threads=1, progress=False)
    with pytest.raises(ExecutorError, match=r"^1 of 1 tasks failed: t: ConfigError: task 3: no such option;") as err:
        ex.run([Task("t", tasks.asks_badly, (3,), out=tmp_path / "t")])
    assert "Traceback" not in str(err.value)
    assert json.loads((tmp_path / "t.error.json").read_text())["user_error"] is True


@pytest.mark.parametrize("name", ["serial", "process", "ray"])
def test_tasks_run_with_the_pinned_threads(name, ray_executor):
    ex = ray_executor if name == "ray" else make_executor(name, workers=2, threads=1, progress=False)
    assert ex.run([Task("t", tasks.threads)])["t"] == 1


def _tensors(d: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {p.name: load_file(str(p)) for p in sorted(d.glob("expert-*.safetensors"))}


def test_expert_grid_same_shards_as_serial(ray_executor, tmp_path):
    torch.set_num_threads(1)  # the thread count the executors' tasks run with
    train_experts(CFG, tmp_path / "serial")
    ref = _tensors(tmp_path / "serial")
    assert len(ref) == 3
    for name, ex in backends(ray_executor).items():
        buf = train_experts_on(ex, CFG, tmp_path / name)
        got = _tensors(tmp_path / name)
        assert got.keys() == ref.keys() and buf.complete
        for shard in ref:  # bit-identical trajectories
            assert all(torch.equal(ref[shard][k], got[shard][k]) for k in ref[shard]), (name, shard)
        assert json.loads((tmp_path / name / "manifest.json").read_text())["finished"] == 3


@pytest.fixture(scope="module")
def set_file(tmp_path_factory):
    from datadistill.data import load_dataset

    data = load_dataset("procedural", **OPTS)
    s = PixelSet.from_real(data.train, 2, torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("set") / "set.safetensors"
    save_synset(path, s, data.spec, method="random")
    return path


def test_evaluation_grid_same_accuracies_as_serial(ray_executor, set_file, tmp_path):
    torch.set_num_threads(1)
    protocol = get_protocol("dc", epochs=4, n_models=3)
    f, data, _ = open_for_evaluation(set_file)
    ref = {m: evaluate(f.synset, data, protocol, model=m).accuracies for m in ("convnet_w32", "mlp")}
    for name, ex in {"serial": make_executor("serial", threads=1, progress=False), **backends(ray_executor)}.items():
        reports = evaluate_on(ex, set_file, protocol, ["convnet_w32", "mlp"], work_dir=tmp_path / name)
        assert {m: r.accuracies for m, r in reports.items()} == ref, name
        assert len(list((tmp_path / name).glob("*.json"))) == 6


def test_evaluation_grid_batches_models_as_evaluate_does(set_file, tmp_path):
    """--batch-models through an executor: one task per group of B models trained together, the
    accuracies of `evaluate(batch_models=B)` on the same indices, and a resumed grid reruns nothing."""
    torch.set_num_threads(1)
    protocol = get_protocol("dc", epochs=3, n_models=3)
    f, data, _ = open_for_evaluation(set_file)
    ref = evaluate(f.synset, data, protocol, model="mlp", batch_models=2)
    ex = make_executor("serial", threads=1, progress=False)
    got = evaluate_on(ex, set_file, protocol, ["mlp"], work_dir=tmp_path, batch_models=2)["mlp"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["mlp-000-x2.json", "mlp-002-x1.json"]
    assert got.seeds == ref.seeds and got.accuracies[2] == ref.accuracies[2]
    assert got.accuracies[:2] == pytest.approx(ref.accuracies[:2], abs=1e-6)
    stamp = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")}
    again = evaluate_on(ex, set_file, protocol, ["mlp"], work_dir=tmp_path, batch_models=2)["mlp"]
    assert again.accuracies == got.accuracies and stamp == {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.json")}


def test_a_bug_inside_an_evaluation_task_prints_its_traceback_and_exits_1(set_file, tmp_path):
    # the CLI as a user runs it, with the evaluation broken from inside the executor's task
    script = ("import sys, datadistill.grids as g\n"
              "def broken(*a, **k):\n    raise RuntimeError('injected bug')\n"
              "g.evaluate = broken\n"
              "from datadistill.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    argv = ["evaluate", str(set_file), "--models", "mlp", "--executor", "serial", "epochs=1", "n_models=1"]
    (tmp_path / "broken_cli.py").write_text(script)
    p = subprocess.run([sys.executable, "broken_cli.py", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("RuntimeError: injected bug") == 2  # the summary line and the worker's traceback
    assert p.stderr.count("in broken\n    raise RuntimeError('injected bug')") == 1  # the traceback, once
    assert "datadistill: error:" not in p.stderr


def test_indices_train_the_same_models(set_file):
    protocol = get_protocol("dc", epochs=3, n_models=3)
    f, data, _ = open_for_evaluation(set_file)
    whole = evaluate(f.synset, data, protocol, model="mlp")
    parts = [evaluate(f.synset, data, protocol, model="mlp", indices=[i]) for i in (2, 0, 1)]
    assert [p.accuracies[0] for p in (parts[1], parts[2], parts[0])] == whole.accuracies
    with pytest.raises(ValueError, match="out of range"):
        evaluate(f.synset, data, protocol, model="mlp", indices=[3])


def test_bad_executor_input_is_one_clear_error():
    with pytest.raises(ExecutorError, match="unknown executor 'dask'; valid: serial, process, ray"):
        make_executor("dask")
    with pytest.raises(ExecutorError, match="workers must be a positive integer"):
        make_executor("process", workers=0)
    with pytest.raises(ExecutorError, match="Ray address is for --executor ray"):
        make_executor("process", address="auto")


def test_unreachable_ray_address_fails_in_one_line(tmp_path):
    pytest.importorskip("ray")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "datadistill.cli", "experts", "--dataset", "procedural", "--experts", "1",
                        "--epochs", "1", "--out", str(tmp_path / "e"), "--executor", "ray",
                        "--ray-address", "127.0.0.1:1", "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("datadistill: error: cannot reach the Ray cluster at 127.0.0.1:1")
    assert time.perf_counter() - t < 60
    assert not (tmp_path / "e").exists()

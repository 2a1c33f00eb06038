"""Sweeps: the grid, the validation split they are scored on (carved from the training data, never
the test set), resumption, and the same ranking under serial and Ray Tune."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from datadistill.cli import main
from datadistill.config import ConfigError
from datadistill.data import DatasetOptionError, load_dataset
from datadistill.executor import make_executor
from datadistill.studies import StudyError, run_study
from datadistill.studies.sweep import SweepConfig, grid_points, parse_grid

BASE = SweepConfig(grid=("method_config.lr_img=0.1,10.0",), method="dm", dataset="digits", ipc=1, iterations=2,
                   overrides=("method_config.batch_real=16", "method_config.model=convnet_w32", "eval.preset=smoke",
                              "eval.epochs=2", "eval.n_models=1", "eval.model=convnet_w32"))


def test_grid_is_every_combination_in_order():
    grid = parse_grid(["method_config.lr_img=0.1,1", "iterations=5,10,20"])
    assert grid == {"method_config.lr_img": [0.1, 1], "iterations": [5, 10, 20]}
    points = grid_points(grid)
    assert len(points) == 6 and points[0] == {"method_config.lr_img": 0.1, "iterations": 5}
    assert points[-1] == {"method_config.lr_img": 1, "iterations": 20}


@pytest.mark.parametrize("items, message", [
    ([], "at least one --grid"), (["lr"], "key=value1,value2"), (["a=1", "a=2"], "twice"),
])
def test_bad_grid_is_one_clear_error(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_validation_split_is_carved_from_the_training_set():
    full = load_dataset("digits")
    val = load_dataset("digits", validation=0.2)
    assert len(val.train) + len(val.test) == len(full.train)
    # stratified: about a fifth of every class is held out
    for c in range(10):
        n = int((full.train.labels == c).sum())
        assert abs(int((val.test.labels == c).sum()) - 0.2 * n) <= 1
    # the held-out images are training images, none of them in the new training part or the test set
    key = lambda x: {tuple(r.tolist()) for r in x.images.flatten(1)}  # noqa: E731
    held, kept, train, test = key(val.test), key(val.train), key(full.train), key(full.test)
    assert held <= train and not held & kept and not held & test
    again = load_dataset("digits", validation=0.2)
    assert torch.equal(again.test.images, val.test.images)  # the same split every time
    assert val.spec.ref.validation == 0.2
    with pytest.raises(DatasetOptionError, match="between 0 and 1"):
        load_dataset("digits", validation=1.5)


def test_sweep_ranks_points_resumes_and_matches_under_ray(tmp_path):
    torch.set_num_threads(1)
    summary = run_study("sweep", BASE, tmp_path / "s", make_executor("serial", threads=1, progress=False))
    results = summary["results"]
    assert [r["val_acc"] for r in results] == sorted((r["val_acc"] for r in results), reverse=True)
    assert {r["point"]["method_config.lr_img"] for r in results} == {0.1, 10.0}
    assert all(r["validation"] == 0.1 for r in results)
    files = sorted((tmp_path / "s" / "jobs").glob("*.json"))
    assert len(files) == 2 and (tmp_path / "s" / "summary.md").is_file() and len(list((tmp_path / "s" / "runs").iterdir())) == 2
    stamps = [f.stat().st_mtime_ns for f in files]
    assert run_study("sweep", BASE, tmp_path / "s", make_executor("serial", progress=False)) == summary  # nothing reruns
    assert [f.stat().st_mtime_ns for f in files] == stamps
    with pytest.raises(StudyError, match="other settings"):  # never a silent reuse of another sweep's points
        run_study("sweep", replace(BASE, validation=0.2), tmp_path / "s", make_executor("serial", progress=False))
    pytest.importorskip("ray")
    with make_executor("ray", workers=2, threads=1, progress=False) as ex:
        tuned = run_study("sweep", BASE, tmp_path / "t", ex)["results"]
    assert [(r["point"], r["accuracies"]) for r in tuned] == [(r["point"], r["accuracies"]) for r in results]


def test_sweep_cli(tmp_path, capsys):
    assert main(["sweep", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "1",
                 "--grid", "method_config.lr_img=1,10", "method_config.batch_real=16", "eval.preset=smoke",
                 "eval.epochs=1", "eval.n_models=1", "--out", str(tmp_path / "s"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| method_config.lr_img | validation accuracy (%)" in out and "best on the validation split" in out
    rows = [json.loads(p.read_text()) for p in (tmp_path / "s" / "jobs").glob("*.json")]
    assert len(rows) == 2
    # the same study through the generated command, its overrides as --set
    assert main(["study", "sweep", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "1",
                 "--grid", "method_config.lr_img=1,10", "--set", "method_config.batch_real=16", "--set",
                 "eval.preset=smoke", "--set", "eval.epochs=1", "--set", "eval.n_models=1", "--out", str(tmp_path / "s"),
                 "--threads", "1"]) == 0  # the same settings: every point is done already
    assert "| method_config.lr_img |" in capsys.readouterr().out

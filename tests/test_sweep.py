"""Sweeps: the grid, the validation split they are scored on (carved from the training data, never
the test set), resumption, and the same ranking under serial and Ray Tune."""

from __future__ import annotations

import json

import pytest
import torch

from datadistill.cli import main
from datadistill.config import ConfigError
from datadistill.data import DatasetOptionError, load_dataset
from datadistill.executor import make_executor
from datadistill.sweep import grid_points, parse_grid, sweep

BASE = {"method": "dm", "dataset": "digits", "ipc": 1, "iterations": 2,
        "method_config": {"batch_real": 16, "model": "convnet_w32"},
        "eval": {"preset": "smoke", "epochs": 2, "n_models": 1, "model": "convnet_w32"}}


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
    assert val.spec.extra["validation"] == 0.2
    with pytest.raises(DatasetOptionError, match="between 0 and 1"):
        load_dataset("digits", validation=1.5)


def test_sweep_ranks_points_resumes_and_matches_under_ray(tmp_path):
    torch.set_num_threads(1)
    grid = {"method_config.lr_img": [0.1, 10.0]}
    results = sweep(BASE, grid, tmp_path / "s", make_executor("serial", threads=1, progress=False))
    assert [r["val_acc"] for r in results] == sorted((r["val_acc"] for r in results), reverse=True)
    assert {r["point"]["method_config.lr_img"] for r in results} == {0.1, 10.0}
    assert all(r["validation"] == 0.1 for r in results)
    files = sorted((tmp_path / "s" / "trials").glob("*.json"))
    assert len(files) == 2 and (tmp_path / "s" / "sweep.md").is_file()
    stamps = [f.stat().st_mtime_ns for f in files]
    assert sweep(BASE, grid, tmp_path / "s", make_executor("serial", progress=False)) == results  # nothing reruns
    assert [f.stat().st_mtime_ns for f in files] == stamps
    pytest.importorskip("ray")
    with make_executor("ray", workers=2, threads=1, progress=False) as ex:
        tuned = sweep(BASE, grid, tmp_path / "t", ex)
    assert [(r["point"], r["accuracies"]) for r in tuned] == [(r["point"], r["accuracies"]) for r in results]


def test_sweep_cli(tmp_path, capsys):
    assert main(["sweep", "--method", "dm", "--dataset", "digits", "--ipc", "1", "--iterations", "1",
                 "--grid", "method_config.lr_img=1,10", "method_config.batch_real=16", "eval.preset=smoke",
                 "eval.epochs=1", "eval.n_models=1", "--out", str(tmp_path / "s"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "| method_config.lr_img | validation accuracy (%)" in out and "best on the validation split" in out
    rows = [json.loads(p.read_text()) for p in (tmp_path / "s" / "trials").glob("*.json")]
    assert len(rows) == 2

"""Bad input never leaves a half-made run (issue 15, item 4).

Every subcommand, given bad names, values or files, answers with one line ``datadistill: error: ...``
and exit status 2: no traceback, and nothing created on disk. Runs that fail after they started
without a checkpoint leave no folder that would ask the next try to ``--resume``; a diverging DD run
stops with `DivergenceError` and keeps its last good checkpoint.
"""

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from datadistill.cli import main
from datadistill.config import ConfigError, RunConfig, from_dict
from datadistill.data import load_dataset
from datadistill.engine import run
from datadistill.methods import DivergenceError
from datadistill.methods.dd import method as dd_module
from datadistill.seeding import make_generator
from datadistill.synset import PixelSet, save_synset

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is there: --device cuda is valid")
VALID_MODELS = "Valid model names: alexnet, alexnet_bn, convnet"

D = ["distill", "--dataset", "digits", "--out", "X"]  # the run folder every distill case must not create
# (command line, what the one line must say); {file} is a valid distilled set
CASES = [
    (["distill", "--dataset", "digits", "--method", "dm", "--ipc", "100000", "--out", "X"],
     "ipc 100000 is more than the smallest class of digits has (133 images, class 9); valid: 1..133"),
    (["distill", "--dataset", "digits", "--method", "random", "--ipc", "134", "--out", "X"], "valid: 1..133"),
    (["distill", "--dataset", "digits", "--method", "dd", "--ipc", "500", "--out", "X"], "valid: 1..133"),
    ([*D, "--method", "nope"], "unknown method 'nope'. Valid method names: datm, dc, dd, dm, dsa, frepo, haba"),
    (["distill", "--dataset", "nope", "--out", "X"], "Valid dataset names: cifar10, cifar100, digits"),
    ([*D, "--ipc", "0"], "ipc must be >= 1"),
    ([*D, "--ipc", "-3"], "ipc must be >= 1 (images per class), got -3"),
    ([*D, "--ipc", "abc"], "argument --ipc: invalid int value: 'abc'"),
    ([*D, "--iterations", "-1"], "iterations must be >= 0"),
    ([*D, "--eval-every", "-1"], "eval_every must be >= 0"),
    ([*D, "checkpoint_every=-1"], "checkpoint_every must be >= 0"),
    ([*D, "eval_models_during=0"], "eval_models_during must be >= 1"),
    ([*D, "seed=abc"], "config.seed: expected an integer, got 'abc'"),
    ([*D, "nokey=3"], "unknown key(s) ['nokey'] in config; valid keys: dataset"),
    ([*D, "--models", "nope"], VALID_MODELS),
    ([*D, "--models", "convnet,nope"], VALID_MODELS),
    ([*D, "--preset", "nope"], "unknown preset 'nope'; valid presets: "),
    ([*D, "--preset", "bad.yaml"], "bad.yaml is not valid YAML"),
    ([*D, "--preset", "missing.yaml"], "config file not found: missing.yaml"),
    ([*D, "--preset", "./adir.safetensors"], "is a folder"),
    ([*D, "eval.epochs=-5"], "eval: epochs must be >= 1, got -5"),
    ([*D, "eval.n_models=0"], "eval: n_models must be >= 1, got 0"),
    ([*D, "eval.lr=abc"], "eval.lr: expected a number, got 'abc'"),
    ([*D, "eval.decay_at=[2]"], "decay_at must be fractions of the epochs in [0, 1]"),
    ([*D, "eval.preset=nope"], "Valid evaluation protocol names: dc, dc-paper, dd, dsa, dsa-paper, frepo-paper, haba-paper, mtt, mtt-paper, rded-paper, smoke"),
    ([*D, "eval.preset=[]"], "evaluation protocol must be a name, got []; valid evaluation protocol names: dc, "),  # fuzz.jsonl L3
    ([*D, "eval.model=nope"], VALID_MODELS),
    ([*D, "eval.augment=dsa", "eval.dsa_strategy=nope"], "Valid DSA op names: color, crop"),
    ([*D, "method_config.lr_img=abc"], "method_config (dm).lr_img: expected a number, got 'abc'"),
    ([*D, "method_config.batch_real=-4"], "batch_real must be >= 1, got -4"),
    ([*D, "method_config.model=nope"], VALID_MODELS),
    ([*D, "method_config.lr_img=["], "cannot parse the value as YAML"),
    ([*D, "dataset_options.foo=1"], "dataset 'digits' takes no option(s) ['foo']; valid options: none"),
    (["distill", "--dataset", "procedural", "dataset_options.size=abc", "--out", "X"],
     "procedural: size must be an integer >= 1, got 'abc'"),
    (["distill", "--dataset", "procedural", "dataset_options.per_class=-1", "--out", "X"],
     "per_class must be an integer >= 1"),
    pytest.param([*D, "--device", "cuda"], "no CUDA GPU is available", marks=NO_CUDA),
    ([*D, "--device", "banana"], "unknown device 'banana'"),
    ([*D, "--zca", "-1"], "zca must be a positive regularization"),
    ([*D, "--method", "mtt", "--ipc", "1"], "no expert trajectories in"),
    ([*D, "--method", "haba", "--ipc", "1"], "no expert trajectories in"),
    ([*D, "--method", "mtt", "--ipc", "1", "method_config.experts=notes.txt"], "no expert trajectories in notes.txt"),
    ([*D, "--method", "mtt", "method_config.model=convnet_bn"], "does not support BatchNorm models"),
    ([*D, "--method", "mtt", "method_config.lr_img=-5"], "lr_img must be >= 0, got -5.0"),
    ([*D, "--method", "haba", "method_config.extractor=nope"], VALID_MODELS),
    ([*D, "--method", "dd", "--ipc", "1", "--net-init", "pretrained_fixed", "method_config.pretrained=nopool"],
     "no pretrained pool at nopool"),
    ([*D, "--method", "dd", "--ipc", "1", "--net-init", "pretrained_random", "--source-dataset", "nope"],
     "Valid dataset names"),
    ([*D, "--method", "dd", "--ipc", "1", "--net-init", "pretrained_random", "--source-dataset", "mnist", "--root",
      "nodata"], "datadistill data prepare mnist --root nodata"),
    ([*D, "--method", "dd", "--net-init", "nope"], "unknown net_init 'nope'; valid: fixed, random, pretrained_fixed"),
    ([*D, "--method", "dd", "--image-init", "nope"], "image_init 'nope' is not an image initialization of dd; valid: "
     "noise, real, kmeans, average"),
    ([*D, "--method", "dd", "--ipc", "3", "method_config.steps=2"], "ipc must be a multiple of steps"),
    ([*D, "--method", "dd", "--ipc", "1", "method_config.model=convnet_bn"], "has BatchNorm"),
    ([*D, "--method", "dd", "--ipc", "1", "method_config.objective=poison", "method_config.attack_class=20"],
     "attack_class=20 is not a class of digits (0..9)"),
    ([*D, "--method", "dd", "method_config.lr=-1"], "lr must be > 0 or null, got -1.0"),
    ([*D, "--method", "dd", "method_config.weight_init=nope"], "Valid weight initialization names"),
    ([*D, "--method", "dsa", "method_config.dsa_strategy=nope"], "Valid DSA op names"),
    ([*D, "--method", "herding", "method_config.features=nope"], "valid features"),
    (["distill", "--dataset", "digits", "--out", "notes.txt"], "run directory notes.txt is a file"),
    (["distill", "--dataset", "digits", "--out", "notes.txt/run"], "cannot write run directory notes.txt/run"),
    (["distill", "--dataset", "digits", "--resume", "--out", "badrun"], "badrun/config.yaml is not valid YAML"),
    (["distill", "--dataset", "digits", "--resume", "--out", "badckpt"],
     "cannot resume: badckpt/checkpoint.pt is not a readable checkpoint"),
    (["distill", "--dataset", "digits", "--ipc", "0", "--force", "--out", "oldrun"], "ipc must be >= 1"),
    ([*D, "--method", "herding", "method_config.train_lr=-1"], "train_lr must be > 0, got -1.0"),
    ([*D, "--method", "haba", "--ipc", "2", "method_config.bases_per_class=500"],
     "bases_per_class 500 is more than the smallest class of digits has (133 images); valid: 1..133"),
    ([*D, "--method", "haba", "method_config.temperature=0"], "temperature must be > 0"),
    (["evaluate", "missing.safetensors"], "no such file: missing.safetensors"),
    (["evaluate", "notes.txt"], "notes.txt is not a safetensors file"),
    (["evaluate", "fake.safetensors"], "fake.safetensors is not a safetensors file"),
    (["evaluate", "adir.safetensors"], "adir.safetensors is a folder, not a distilled-set file"),
    (["evaluate", "nometa.safetensors"], "nometa.safetensors is a safetensors file but has no datadistill metadata"),
    (["evaluate", "{file}", "--models", "nope"], VALID_MODELS),
    (["evaluate", "{file}", "epochs=0"], "epochs must be >= 1, got 0"),
    (["evaluate", "{file}", "lr=abc"], "eval.lr: expected a number, got 'abc'"),
    (["evaluate", "{file}", "nokey=1"], "unknown evaluation field(s) ['nokey']; valid: augment"),
    (["evaluate", "{file}", "augment=dsa", "dsa_strategy=nope"], "Valid DSA op names"),
    (["evaluate", "{file}", "--protocol", "nope"], "Valid evaluation protocol names"),
    (["evaluate", "--full", "--dataset", "nope"], "Valid dataset names"),
    (["evaluate", "--full", "--dataset", "digits", "--models", "nope"], VALID_MODELS),
    (["evaluate", "--full"], "--full needs --dataset"),
    (["show", "missing"], "no such file: missing"),
    (["show", "{file}", "--out", "notes.txt/grid.png"], "cannot write notes.txt/grid.png"),
    (["show", "{file}", "--out", "adir.safetensors"], "cannot write file adir.safetensors: it is a folder"),
    (["export", "missing", "out"], "no such file: missing"),
    (["export", "{file}", "notes.txt"], "export folder notes.txt is a file"),
    (["export", "{file}", "notes.txt/images"], "cannot write export folder notes.txt/images"),
    (["data", "prepare", "nope"], "Valid dataset names"),
    (["data", "prepare", "mnist", "--root", "notes.txt/data"], "cannot write data root notes.txt/data"),
    (["pretrain", "--dataset", "digits", "--nets", "0", "--out", "X"], "n_nets >= 1 and 0 <= held_out < n_nets"),
    (["pretrain", "--dataset", "digits", "--held-out", "40", "--nets", "30", "--out", "X"], "held_out=40"),
    (["pretrain", "--dataset", "digits", "--epochs", "0", "--out", "X"], "epochs must be >= 1, got 0"),
    (["pretrain", "--dataset", "digits", "--lr", "-1", "--out", "X"], "lr must be > 0, got -1.0"),
    (["pretrain", "--dataset", "digits", "--batch-size", "0", "--out", "X"], "batch_size must be >= 1, got 0"),
    (["pretrain", "--dataset", "digits", "--model", "nope", "--out", "X"], VALID_MODELS),
    (["pretrain", "--dataset", "nope", "--out", "X"], "Valid dataset names"),
    (["pretrain", "--dataset", "digits", "--nets", "1", "--held-out", "0", "--epochs", "1", "--out", "notes.txt"],
     "pool folder notes.txt is a file"),
    (["experts", "--dataset", "digits", "--experts", "0", "--out", "X"], "n_experts must be a positive integer"),
    (["experts", "--dataset", "digits", "--indices", "5-2", "--out", "X"], "range 5-2 is empty"),
    (["experts", "--dataset", "digits", "--indices", "0-99", "--experts", "3", "--out", "X"],
     "expert indices 3, 4, 5, 6, 7 ... (97 in all) are out of range 0..2"),
    (["experts", "--dataset", "digits", "--epochs", "0", "--out", "X"], "epochs must be a positive integer"),
    (["experts", "--dataset", "digits", "--model", "nope", "--out", "X"], VALID_MODELS),
    (["experts", "--dataset", "digits", "--experts", "1", "--epochs", "1", "--out", "notes.txt"],
     "expert folder notes.txt is a file"),
    (["list", "nope"], "invalid choice: 'nope' (choose from 'models', 'methods', 'datasets', 'presets', 'protocols')"),
]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A valid distilled-set file (one real digit per class)."""
    data = load_dataset("digits")
    path = tmp_path_factory.mktemp("file") / "set.safetensors"
    save_synset(path, PixelSet.from_real(data.train, 1, make_generator(0, "init")), data.spec, method="random")
    return path


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder with bad files in it; caches and the data root point inside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DATADISTILL_DATA", str(tmp_path / "data"))
    (tmp_path / "notes.txt").write_text("notes\n")
    (tmp_path / "fake.safetensors").write_text("not a safetensors file\n")
    (tmp_path / "adir.safetensors").mkdir()
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n  b: :\n")
    (tmp_path / "badrun").mkdir()
    (tmp_path / "badrun" / "config.yaml").write_text("method: [\n")
    (tmp_path / "badckpt").mkdir()
    (tmp_path / "badckpt" / "config.yaml").write_text("dataset: digits\nmethod: dm\nipc: 1\niterations: 2\n")
    (tmp_path / "badckpt" / "checkpoint.pt").write_text("not a checkpoint\n")
    (tmp_path / "oldrun").mkdir()
    (tmp_path / "oldrun" / "distilled.safetensors").write_text("a user's earlier result\n")
    save_file({"x": torch.zeros(1)}, str(tmp_path / "nometa.safetensors"))
    return tmp_path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's errors exit
        return int(e.code)


@pytest.mark.parametrize("argv, message", CASES, ids=lambda v: " ".join(v)[:80] if isinstance(v, list) else None)
def test_bad_input_is_one_line_and_leaves_nothing(argv, message, place, distilled, capsys):
    before = _tree(place)
    argv = [a.replace("{file}", str(distilled)) for a in argv]
    assert _main(argv) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("datadistill: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in out.err + out.out
    assert not (place / "X").exists()
    assert _tree(place) == before  # nothing created: no run folder, lock, cache or data folder


def _dd_cfg(**method):
    return from_dict(RunConfig, {
        "dataset": "digits", "method": "dd", "ipc": 1, "iterations": 5, "checkpoint_every": 1,
        "method_config": {"batch_real": 32, "epochs": 1, **method},
        "eval": {"preset": "smoke", "epochs": 1, "n_models": 1, "model": "lenet"}})


def test_a_diverging_dd_run_stops_with_divergence_error_and_keeps_its_last_good_state(tmp_path, capsys):
    # a step size of 1e30 sends the unrolled network's weights, and with them the loss, to inf or nan
    # in the first iteration: the state the engine keeps is the initial one
    with pytest.raises(DivergenceError, match=r"dd: the loss became (nan|inf) at iteration 1.*last good state "
                                               r"\(iteration 0\)"):
        run(_dd_cfg(lr_init=1e30), tmp_path / "api", progress=False, log=lambda *_: None)
    state = torch.load(tmp_path / "api" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 0 and torch.isfinite(state["synset"]["images"]).all()
    assert not (tmp_path / "api" / "distilled.safetensors").exists()
    # the command says so in one line and keeps the folder with the checkpoint
    argv = ["distill", "--method", "dd", "--dataset", "digits", "--ipc", "1", "--iterations", "5",
            "--out", str(tmp_path / "cli"), "--no-progress", "method_config.lr_init=1e30", "method_config.epochs=1",
            "method_config.batch_real=32", "eval.preset=smoke", "eval.model=lenet", "eval.n_models=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("datadistill: error: dd: the loss became")
    assert "lower method_config.lr or lr_init" in err[0] and str(tmp_path / "cli" / "checkpoint.pt") in err[0]


def test_divergence_after_progress_keeps_the_checkpoint_of_the_last_good_iteration(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = dd_module.evaluate_params

    def third_is_nan(*a, **kw):  # the outer loss of the third iteration is not finite
        calls["n"] += 1
        loss = real(*a, **kw)
        return loss * float("nan") if calls["n"] == 3 else loss

    assert run(_dd_cfg(), tmp_path / "ref", progress=False, stop_after=2, log=lambda *_: None) is None
    monkeypatch.setattr(dd_module, "evaluate_params", third_is_nan)
    with pytest.raises(DivergenceError, match=r"iteration 3.*last good state \(iteration 2\)"):
        run(_dd_cfg(), tmp_path / "r", progress=False, log=lambda *_: None)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    ref = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 2
    assert torch.equal(state["synset"]["images"], ref["synset"]["images"])  # the update was never applied
    assert torch.equal(state["synset"]["raw_lrs"], ref["synset"]["raw_lrs"])


def _failing_step(monkeypatch, at: int):
    """DM's step raises a RuntimeError (standing for any failure found only once a run is going)."""
    from datadistill.methods.dm import DM

    real = DM.step

    def step(self, iteration):
        if iteration == at:
            raise RuntimeError("boom")
        return real(self, iteration)

    monkeypatch.setattr(DM, "step", step)


def _dm_cfg(**kw):
    base = {"dataset": "digits", "method": "dm", "ipc": 1, "iterations": 4, "checkpoint_every": 2,
            "method_config": {"batch_real": 8, "model": "convnet_w32"},
            "eval": {"preset": "smoke", "epochs": 1, "n_models": 1, "model": "convnet_w32"}}
    base.update(kw)
    return from_dict(RunConfig, base)


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch):
    _failing_step(monkeypatch, at=1)
    out = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError, match="boom"):
        run(_dm_cfg(), out, progress=False, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []  # the run folder, the folders above it and the lock are gone
    # so the corrected next try starts without --resume or --force
    monkeypatch.undo()
    assert run(_dm_cfg(iterations=1), out, progress=False, log=lambda *_: None) is not None


def test_a_failed_fresh_run_empties_but_keeps_a_folder_the_user_made(tmp_path, monkeypatch):
    _failing_step(monkeypatch, at=0)
    out = tmp_path / "mine"
    out.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        run(_dm_cfg(), out, progress=False, log=lambda *_: None)
    assert out.is_dir() and list(out.iterdir()) == []


def test_a_failed_run_with_a_checkpoint_or_a_resumed_run_keeps_everything(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _failing_step(monkeypatch, at=3)  # after the checkpoint of iteration 2
    with pytest.raises(RuntimeError, match="boom"):
        run(_dm_cfg(), out, progress=False, log=lambda *_: None)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["iteration"] == 2
    assert (out / "config.yaml").is_file()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    with pytest.raises(RuntimeError, match="boom"):  # resuming fails again: the user's run stays as it was
        run(_dm_cfg(), out, resume=True, progress=False, log=lambda *_: None)
    assert (out / "checkpoint.pt").is_file() and (out / "config.yaml").is_file()


def test_a_check_of_a_method_runs_before_the_run_folder_exists(tmp_path, monkeypatch):
    """The engine asks each method for its own requirements (`MethodEntry.check`) before it writes."""
    from datadistill.methods import METHODS

    seen = {}

    def check(cfg, ctx):
        seen.update(ctx=ctx, exists=(tmp_path / "run").exists())
        raise ConfigError("dd: nothing here")

    monkeypatch.setitem(METHODS._entries, "dd", dataclasses.replace(METHODS.get("dd"), check=check))
    with pytest.raises(ConfigError, match="nothing here"):
        run(_dd_cfg(), tmp_path / "run", progress=False, log=lambda *_: None)
    assert seen["exists"] is False and seen["ctx"].synset is None and seen["ctx"].ipc == 1
    assert list(tmp_path.iterdir()) == []


def test_output_into_a_closed_pipe_ends_quietly():
    """`datadistill list methods | head -0`: the reader is gone before the first line; no traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "datadistill.cli", "list", "methods"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader stops before anything is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and err == ""

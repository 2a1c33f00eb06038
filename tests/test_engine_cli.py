import json

import pytest
import torch

from datadistill.cli import main
from datadistill.config import RunConfig, from_dict
from datadistill.engine import RunDirError, run
from datadistill.synset import load_synset

FAST = ["method_config.batch_real=16", "method_config.model=convnet_w32", "eval.preset=smoke", "eval.epochs=5",
        "eval.n_models=1", "eval.model=convnet_w32"]


def _cfg(**kw):
    base = {"dataset": "procedural", "dataset_options": {"num_classes": 3, "size": 12, "per_class": 24},
            "method": "dm", "ipc": 2, "iterations": 6, "checkpoint_every": 2,
            "method_config": {"batch_real": 8, "model": "convnet_w32"},
            "eval": {"preset": "smoke", "epochs": 3, "n_models": 1, "model": "convnet_w32"}}
    base.update(kw)
    return from_dict(RunConfig, base)


def test_resume_reaches_the_same_result_as_an_uninterrupted_run(tmp_path):
    whole = run(_cfg(), tmp_path / "a", progress=False, log=lambda *_: None)
    assert run(_cfg(), tmp_path / "b", progress=False, stop_after=3, log=lambda *_: None) is None
    assert not (tmp_path / "b" / "distilled.safetensors").exists()
    resumed = run(_cfg(), tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    assert torch.equal(whole.synset.images.detach(), resumed.synset.images.detach())
    assert whole.reports["convnet_w32"].accuracies == resumed.reports["convnet_w32"].accuracies
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]  # each iteration logged once
    losses_a = [json.loads(x)["loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(x)]
    assert losses_a == [r["loss"] for r in rows if "loss" in r]


def test_existing_run_directory_is_never_overwritten_without_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("user data")
    with pytest.raises(RunDirError, match="--resume.*--force"):
        run(_cfg(iterations=1), out, progress=False)
    assert (out / "precious.txt").read_text() == "user data"
    run(_cfg(iterations=1), out, force=True, progress=False, log=lambda *_: None)
    assert not (out / "precious.txt").exists() and (out / "distilled.safetensors").is_file()


def test_cli_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--iterations", "2",
                 "--out", str(out), "--no-progress", *FAST]) == 0
    for name in ("config.yaml", "metrics.jsonl", "distilled.safetensors", "grid.png", "loss.png", "report.md",
                 "checkpoint.pt"):
        assert (out / name).is_file(), name
    assert "final accuracy convnet_w32" in capsys.readouterr().out
    f = load_synset(out / "distilled.safetensors")
    assert f.method == "dm" and f.meta["iterations"] == 2 and "convnet_w32" in f.meta["evaluation"]
    assert f.meta["method_config"]["batch_real"] == 16 and f.spec.name == "digits"

    assert main(["evaluate", str(out / "distilled.safetensors"), "--models", "convnet_w32,mlp",
                 "--protocol", "smoke", "epochs=2", "n_models=1", "--save"]) == 0
    table = capsys.readouterr().out
    assert "| convnet_w32 |" in table and "| mlp |" in table
    assert "mlp" in load_synset(out / "distilled.safetensors").meta["evaluation"]

    assert main(["show", str(out / "distilled.safetensors"), "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["export", str(out / "distilled.safetensors"), str(tmp_path / "tree")]) == 0
    assert len(list((tmp_path / "tree").rglob("*.png"))) == 10


def test_cli_random_baseline_and_full_baseline(tmp_path, capsys):
    assert main(["distill", "--method", "random", "--dataset", "digits", "--ipc", "2", "--out",
                 str(tmp_path / "r"), "--no-progress", "eval.preset=smoke", "eval.epochs=3", "eval.n_models=1",
                 "eval.model=convnet_w32"]) == 0
    assert load_synset(tmp_path / "r" / "distilled.safetensors").meta["iterations"] == 0
    assert main(["evaluate", "--full", "--dataset", "digits", "--protocol", "smoke", "epochs=1", "n_models=1",
                 "model=mlp"]) == 0
    assert "| mlp |" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["distill", "--method", "dmm"], "Valid method names: datm, dc, dd, dm, dsa, frepo, haba, herding, kcenter, mtt, random, rded"),
    (["distill", "--dataset", "mnst"], "Did you mean 'mnist'"),
    (["distill", "--preset", "nope"], "valid presets"),
    (["distill", "ipcs=3"], "unknown key(s) ['ipcs']"),
    (["distill", "--dataset", "digits", "method_config.lr=3"], "valid keys: lr_img"),
    (["evaluate", "missing.safetensors"], "no such file"),
    (["evaluate", "--full", "--dataset", "digits", "epoch=3"], "unknown evaluation field"),
    (["distill", "--dataset", "mnist", "--root", "/nonexistent/root", "--iterations", "1"],
     "datadistill data prepare mnist --root /nonexistent/root"),
])
def test_cli_errors_are_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("datadistill: error: ") and message in err and "Traceback" not in err


def test_cli_lists_and_data_commands(capsys, tmp_path):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "convnet_d4 (ConvNetD4)" in out and "resnet18_bn_ap" in out
    assert main(["list", "presets"]) == 0 and "dm-cpu" in capsys.readouterr().out
    assert main(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[ ] mnist" in out and "datadistill data prepare mnist" in out and "[x] digits" in out
    assert main(["data", "prepare", "digits"]) == 0


@pytest.mark.parametrize("method", __import__("datadistill.methods", fromlist=["METHODS"]).METHODS.names())
def test_every_registered_method_runs_through_the_engine(method, tmp_path, request):
    from datadistill.methods import METHODS

    entry = METHODS.get(method)
    mc = {"model": "convnet_w32", "batch_real": 16} if method in ("dd", "frepo") else {}
    if method in ("mtt", "haba", "datm"):  # trajectory matching needs experts
        mc = {"experts": request.getfixturevalue("tiny_experts"), "model": "convnet_w32", "syn_steps": 2,
              "expert_epochs": 1, "max_start_epoch": 1, **({"extractor": "convnet_w32"} if method == "haba" else {}),
              **({"sequential": False} if method == "datm" else {})}
    if method == "rded":  # RDED needs a teacher
        mc = {"teacher": request.getfixturevalue("tiny_teacher"), "num_crop": 2}
    # HaBa whitens by default; the tiny experts saw un-whitened data (test_haba covers the default)
    cfg = _cfg(method=method, iterations=min(entry.iterations, 2), method_config=mc,
               **({"zca": None} if method == "haba" else {}))
    if method == "dm":
        cfg = _cfg(iterations=2)
    result = run(cfg, tmp_path / method, progress=False, log=lambda *_: None)
    f = load_synset(tmp_path / method / "distilled.safetensors")
    budget = f.meta.get("budget_ipc", f.synset.ipc)  # HaBa: the image budget its bases x hallucinators stand for
    assert f.method == method and budget == 2 and result.reports["convnet_w32"].accuracies
    if method == "rded":  # the file names its teacher and keeps the soft labels
        assert f.meta["teacher"]["model"] == "convnet_w32" and len(f.meta["teacher"]["sha256"]) == 64
        assert f.synset.soft_labels.shape == (6, 3) and f.synset.label_loss == "kl"


def test_resume_says_which_requested_settings_it_ignores(tmp_path):
    lines = []
    assert run(_cfg(), tmp_path / "r", progress=False, stop_after=2, log=lines.append) is None
    run(_cfg(iterations=8), tmp_path / "r", resume=True, progress=False, log=lines.append)
    note = [x for x in lines if x.startswith("resuming with")][0]
    assert "ignoring the requested iterations=8 (saved: iterations=6" in note


def test_a_run_killed_while_writing_its_metrics_resumes_with_one_warning(tmp_path):
    from datadistill.fileio import TornLineWarning

    out = tmp_path / "r"
    assert run(_cfg(), out, progress=False, stop_after=2, log=lambda *_: None) is None
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 3, "loss": 0.12')  # the line a SIGKILL cut short
    with pytest.warns(TornLineWarning) as caught:
        run(_cfg(), out, resume=True, progress=False, log=lambda *_: None)
    torn = [w for w in caught if issubclass(w.category, TornLineWarning)]
    assert len(torn) == 1 and "torn last line" in str(torn[0].message)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]  # each iteration once


def test_a_run_directory_in_use_by_a_live_process_is_refused(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    lock = tmp_path / ".run.lock"
    lock.write_text("999999 elsewhere\n")  # a lock file left by a process long gone: no one holds it
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"in use by process {holder.pid} "):
            run(_cfg(iterations=1), out, force=True, progress=False)
    finally:
        holder.kill()  # SIGKILL: the kernel releases its lock, nothing of it is left to clean
        holder.wait()
    run(_cfg(iterations=1), out, force=True, progress=False, log=lambda *_: None)
    assert (out / "distilled.safetensors").is_file()
    assert not lock.exists()


# holds the run lock of argv[1] (a stale lock file is taken over) and says so, until killed
HOLD = """import sys, time
from pathlib import Path
from datadistill.rundir import run_dir_lock
with run_dir_lock(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""

# waits for the start signal, then tries to take the lock and holds it a while: prints won or lost
RACE = """import sys, time
from pathlib import Path
from datadistill.rundir import RunDirError, run_dir_lock
go = Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    with run_dir_lock(Path(sys.argv[1])):
        time.sleep(5.0)  # long enough for every racer to try, even on a loaded machine
        print("won", flush=True)
except RunDirError:
    print("lost", flush=True)
"""


def test_eight_processes_racing_on_a_stale_lock_exactly_one_runs(tmp_path):
    import subprocess
    import sys

    out, go = tmp_path / "run", tmp_path / "go"
    (tmp_path / ".run.lock").write_text("999999 elsewhere\n")  # stale: its process is gone
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(out), str(go)], stdout=subprocess.PIPE, text=True)
              for _ in range(8)]
    try:
        assert all(p.stdout.readline().strip() == "ready" for p in racers)
        go.touch()
        results = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    finally:
        for p in racers:
            p.kill()
    assert results == ["lost"] * 7 + ["won"]
    assert not (tmp_path / ".run.lock").exists()


def test_the_lock_is_released_when_a_run_fails(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(RunDirError):
        run(_cfg(iterations=1), out, progress=False)  # exists, no --resume/--force
    assert not (tmp_path / ".run.lock").exists()


def test_a_run_folder_saved_with_the_old_init_keys_resumes(tmp_path):
    """A ``config.yaml`` written before ``init`` became ``image_init`` (and DD's ``init`` became
    ``net_init``) still resumes, as the same run, with one deprecation message per old key."""
    import yaml

    from datadistill.config import DeprecatedKeyWarning

    cfg = _cfg(method="dd", iterations=2, method_config={"model": "convnet_w32", "batch_real": 16, "net_init": "random"})
    assert run(cfg, tmp_path / "r", progress=False, stop_after=1, log=lambda *_: None) is None
    path = tmp_path / "r" / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    assert saved["image_init"] == "noise" and saved["method_config"]["net_init"] == "random"
    saved["init"] = saved.pop("image_init")
    saved["method_config"]["init"] = saved["method_config"].pop("net_init")
    path.write_text(yaml.safe_dump(saved, sort_keys=False))
    lines = []
    with pytest.warns(DeprecatedKeyWarning) as caught:
        result = run(cfg, tmp_path / "r", resume=True, progress=False, log=lines.append)
    assert {str(w.message).split()[0] for w in caught if issubclass(w.category, DeprecatedKeyWarning)} == {"'init'"}
    assert lines[0].startswith("resuming with") and "ignoring" not in lines[0]  # the same settings, renamed
    f = load_synset(tmp_path / "r" / "distilled.safetensors")
    assert result is not None and f.meta["init"] == "noise" and f.meta["net_init"]["setting"] == "random"


def test_evaluate_file_asks_the_method_named_in_the_file(tmp_path, capsys, monkeypatch):
    import dataclasses

    from datadistill.data import load_dataset
    from datadistill.methods import METHODS, FileEvaluation
    from datadistill.seeding import make_generator
    from datadistill.synset import PixelSet, save_synset

    data = load_dataset("procedural", None, num_classes=3, size=12, per_class=24)
    path = tmp_path / "s.safetensors"
    save_synset(path, PixelSet.from_real(data.train, 1, make_generator(0, "x")), data.spec, method="random")
    asked = []

    def from_file(meta, spec):
        asked.append((meta["method"], spec.name))
        return FileEvaluation(preset="smoke", protocol={"epochs": 2, "n_models": 3},
                              final_metrics=lambda s, d, dev: {"probe": {"mean": 12.0, "std": 0.5}})

    monkeypatch.setitem(METHODS._entries, "random", dataclasses.replace(METHODS.get("random"), from_file=from_file))
    assert main(["evaluate", str(path), "n_models=1", "model=convnet_w32", "--json"]) == 0
    out = capsys.readouterr().out
    assert set(asked) == {("random", "procedural")}  # asked by the command and again by each model's task
    assert out.splitlines()[0] == "final metrics: probe 12.00 ± 0.50"
    report = json.loads(out[out.index("{"):])["convnet_w32"]
    # the preset and the fields the set was made for, under the explicit overrides
    assert report["protocol"]["name"] == "smoke" and report["protocol"]["epochs"] == 2 and report["n_models"] == 1


def test_a_file_without_a_known_method_is_evaluated_the_generic_way():
    from datadistill.data import load_dataset
    from datadistill.methods import default_from_file, file_evaluation

    spec = load_dataset("procedural", None).spec
    assert default_from_file({"learned_lr": 0.01}, spec).preset == "mtt"  # trains with its learned step size
    assert default_from_file({"learned_lr": None}, spec).preset == "dc"
    for meta in ({}, {"method": "no_such_method"}, {"method": 3}):
        how = file_evaluation(meta, spec)
        assert how.preset == "dc" and how.networks is None and how.final_metrics is None
    dd = file_evaluation({"method": "dd", "net_init": {"setting": "random", "weight_init": "kaiming"}}, spec)
    assert dd.preset == "dd" and dd.networks is None and dd.protocol == {"weight_init": "kaiming"}


def test_cli_lists_methods_with_their_papers_and_pretrain_is_for_dd(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("dd ") and "Wang et al. 2018" in line for line in out.splitlines())
    assert main(["pretrain", "--method", "dm", "--dataset", "digits", "--out", "x"]) == 2
    assert "method 'dm' starts from no pretrained networks; pretrain is for: dd" in capsys.readouterr().err


@pytest.mark.parametrize("method,iterations", [("dm", 2), ("random", 0)])
def test_a_run_stopped_during_its_final_evaluation_resumes_at_the_next_network(tmp_path, monkeypatch, method,
                                                                                iterations):
    import datadistill.engine as engine

    cfg = _cfg(method=method, iterations=iterations, method_config={} if method == "random" else _cfg().method_config,
               eval={"preset": "smoke", "epochs": 2, "n_models": 3, "model": "convnet_w32"})
    whole = run(cfg, tmp_path / "a", progress=False, log=lambda *_: None)
    trained, real = [], engine.evaluate

    def stop_at_network_2(*args, indices, **kw):
        trained.append(indices[0])
        if indices[0] == 2 and len(trained) < 4:
            raise KeyboardInterrupt
        return real(*args, indices=indices, **kw)

    monkeypatch.setattr(engine, "evaluate", stop_at_network_2)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "b", progress=False, log=lambda *_: None)
    assert trained == [0, 1, 2] and not (tmp_path / "b" / "distilled.safetensors").exists()
    resumed = run(cfg, tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    assert trained == [0, 1, 2, 2]  # networks 0 and 1 were kept, not trained again
    assert resumed.reports["convnet_w32"].accuracies == whole.reports["convnet_w32"].accuracies
    assert resumed.reports["convnet_w32"].seeds == whole.reports["convnet_w32"].seeds
    rows = sorted((tmp_path / "b" / "final").glob("*.json"))
    assert [p.name for p in rows] == ["convnet_w32-000.json", "convnet_w32-001.json", "convnet_w32-002.json"]
    # a kept result of another set or protocol is not reused
    stale = json.loads(rows[0].read_text())
    rows[0].write_text(json.dumps({**stale, "key": "0" * 64}))
    again = run(cfg, tmp_path / "b", resume=True, progress=False, log=lambda *_: None)
    assert trained[4:] == [0]  # only the network whose result did not match
    assert again.reports["convnet_w32"].accuracies == whole.reports["convnet_w32"].accuracies


def test_a_new_subcommand_is_one_module(tmp_path, monkeypatch, capsys):
    """The command finds its subcommands in the cli package: a module with ``add_parsers``,
    ``HANDLERS`` and ``ORDER`` dropped into it is a subcommand, with nothing edited elsewhere."""
    import sys

    import datadistill.cli as cli

    (tmp_path / "hello.py").write_text(
        "def add_parsers(sub):\n"
        "    p = sub.add_parser('hello', help='say hello')\n"
        "    p.add_argument('--name', default='world')\n\n\n"
        "def cmd_hello(args):\n"
        "    print(f'hello {args.name}')\n"
        "    return 0\n\n\n"
        "ORDER = 5\n"
        "HANDLERS = {'hello': cmd_hello}\n")
    monkeypatch.setattr(cli, "__path__", [*cli.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, "datadistill.cli.hello", raising=False)
    assert main(["hello", "--name", "digits"]) == 0
    assert capsys.readouterr().out == "hello digits\n"
    assert [m.__name__.rsplit(".", 1)[-1] for m in cli.subcommand_modules()][:2] == ["hello", "distill"]  # ORDER

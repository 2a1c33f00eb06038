"""`datadistill import`: the files the authors' reference code saves, built here in miniature with
torch.save on the digits spec (10 classes, 1x28x28), read back through the CLI into our sets."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from datadistill.cli import main
from datadistill.data import whiten_dataset
from datadistill.synset import FactorizedSet, Hallucinator, PixelSet, StepSet, load_synset
from datadistill.synset.importers import IMPORTERS

C, SHAPE = 10, (1, 28, 28)


class NeedsCode:  # an object only a full unpickler can rebuild
    pass


def images(n: int, seed: int = 0, shape=SHAPE) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def run_import(path, fmt: str, out, *extra: str) -> int:
    return main(["import", str(path), "--from", fmt, "--dataset", "digits", "--out", str(out), *extra])


def assert_refused(capsys, path, fmt: str, out, *extra: str, match: str) -> None:
    """One line on stderr naming the problem, exit status 2, nothing written."""
    assert run_import(path, fmt, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("datadistill: error: ") and err.count("\n") == 1, err
    assert match in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))  # no temporary file left either


# ------------------------------------------------------------------------------------------------ dc
def test_dc_round_trip_picks_the_experiment(tmp_path, capsys):
    x0, x1 = images(C, 0), images(C, 1)
    y = torch.arange(C)
    accs = {"ConvNet": [np.float64(0.5), np.float64(0.25)]}  # DC keeps its accuracies as NumPy floats
    src = tmp_path / "res_DSA_digits_ConvNet_1ipc.pt"
    torch.save({"data": [[x0, y], [x1, y]], "accs_all_exps": accs}, src)

    assert run_import(src, "dc", tmp_path / "first.safetensors") == 0
    assert "score it with `datadistill evaluate" in capsys.readouterr().out
    f = load_synset(tmp_path / "first.safetensors")
    assert isinstance(f.synset, PixelSet) and f.synset.ipc == 1 and f.synset.learned_lr() is None
    assert torch.equal(f.synset.images.detach(), x0) and torch.equal(f.synset.labels, y)
    assert f.meta["method"] == "dsa" and f.spec.name == "digits" and f.zca is None
    assert f.meta["imported"]["experiment"] == 0 and f.meta["imported"]["experiments"] == 2
    assert f.meta["imported"]["normalization"]["converted"] is False

    assert run_import(src, "dm", tmp_path / "last.safetensors", "--experiment", "-1") == 0
    assert torch.equal(load_synset(tmp_path / "last.safetensors").synset.images.detach(), x1)


def test_dc_labels_out_of_class_order_are_sorted(tmp_path):
    x = images(2 * C)
    y = torch.arange(C).repeat(2)  # 0..9, 0..9
    src = tmp_path / "res.pt"
    torch.save({"data": [[x, y]], "accs_all_exps": {}}, src)
    assert run_import(src, "dc", tmp_path / "o.safetensors") == 0
    f = load_synset(tmp_path / "o.safetensors")
    order = torch.argsort(y, stable=True)
    assert f.meta["method"] == "dc" and f.synset.ipc == 2
    assert torch.equal(f.synset.images.detach(), x[order]) and torch.equal(f.synset.labels, y[order])


# ----------------------------------------------------------------------------------------------- mtt
def test_mtt_round_trip_with_lr(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    x, y = images(2 * C), torch.arange(C).repeat_interleave(2)
    torch.save(x, run / "images_best.pt")
    torch.save(y, run / "labels_best.pt")
    torch.save(x + 1, run / "images_500.pt")
    torch.save(y, run / "labels_500.pt")

    assert run_import(run, "mtt", tmp_path / "best.safetensors", "--lr", "0.01") == 0  # a folder: images_best.pt
    f = load_synset(tmp_path / "best.safetensors")
    assert torch.equal(f.synset.images.detach(), x) and torch.equal(f.synset.labels, y)
    assert f.synset.learned_lr() == pytest.approx(0.01) and f.meta["method"] == "mtt"
    assert [d["name"] for d in f.meta["imported"]["files"]] == ["images_best.pt", "labels_best.pt"]

    assert run_import(run / "images_500.pt", "mtt", tmp_path / "it500.safetensors") == 0
    g = load_synset(tmp_path / "it500.safetensors")
    assert torch.equal(g.synset.images.detach(), x + 1) and g.synset.learned_lr() is None
    assert g.meta["imported"]["iteration"] == "500"


def test_mtt_zca_records_the_transform(tmp_path):
    from datadistill.data import load_dataset
    from datadistill.grids import open_for_evaluation

    toy = load_dataset("procedural")  # 4 classes of 1x16x16: a quick fit
    x, y = images(4, shape=(1, 16, 16)), torch.arange(4)
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    out = tmp_path / "o.safetensors"
    assert main(["import", str(tmp_path / "images_best.pt"), "--from", "mtt", "--dataset", "procedural", "--out",
                 str(out), "--zca", "0.1", "--lr", "0.02"]) == 0
    f = load_synset(out)
    assert torch.equal(f.synset.images.detach(), x)  # whitened images are taken as they are
    assert f.zca is not None and f.zca.same_as(whiten_dataset(toy, 0.1).zca)
    assert "normalization" not in f.meta["imported"]
    _, data, how = open_for_evaluation(out)  # evaluation whitens the real data with the stored transform
    assert data.zca is not None and how.preset == "mtt"


# ---------------------------------------------------------------------------------------------- datm
def test_datm_round_trip_soft_labels(tmp_path):
    normal = tmp_path / "run" / "Normal"
    normal.mkdir(parents=True)
    x = images(2 * C)
    logits = torch.randn(2 * C, C, generator=torch.Generator().manual_seed(3)).requires_grad_()  # a learned leaf
    torch.save(x, normal / "images_best.pt")
    torch.save(logits, normal / "labels_best.pt")
    torch.save(torch.tensor(0.0125), normal / "lr_best.pt")

    assert run_import(tmp_path / "run", "datm", tmp_path / "o.safetensors") == 0
    f = load_synset(tmp_path / "o.safetensors")
    s = f.synset
    assert torch.equal(s.images.detach(), x) and torch.equal(s.labels, torch.arange(C).repeat_interleave(2))
    assert torch.allclose(s.soft_labels, torch.softmax(logits.detach(), dim=1))
    assert s.label_loss == "soft_ce" and s.label_temperature == 1.0
    assert s.learned_lr() == pytest.approx(0.0125) and f.meta["method"] == "datm"


# ---------------------------------------------------------------------------------------------- haba
def style_translators(n: int, cin: int = 1, cout: int = 1, size: int = 28, k: int = 3) -> torch.nn.ModuleList:
    """HaBa's ``nn.ModuleList`` of hallucinators, with weights away from their initial values."""
    torch.manual_seed(0)
    hals = torch.nn.ModuleList(Hallucinator(cin, cout, (size, size), k) for _ in range(n))
    with torch.no_grad():
        for p in hals.parameters():
            p.add_(torch.randn(p.shape) * 0.1)
    return hals


def test_haba_round_trip(tmp_path):
    bases = images(2 * C)
    hals = style_translators(3)
    torch.save(bases, tmp_path / "images_best.pt")
    torch.save(hals.state_dict(), tmp_path / "weights_best.pt")
    torch.save(bases + 1, tmp_path / "images_2000.pt")
    torch.save(hals.state_dict(), tmp_path / "styles_2000.pt")

    assert run_import(tmp_path / "images_best.pt", "haba", tmp_path / "o.safetensors", "--lr", "0.003",
                      "--ipc", "3") == 0
    f = load_synset(tmp_path / "o.safetensors")
    s = f.synset
    assert isinstance(s, FactorizedSet) and s.bases_per_class == 2 and s.n_hallucinators == 3 and s.ipc == 3
    assert torch.equal(s.bases.detach(), bases) and s.learned_lr() == pytest.approx(0.003)
    for mine, theirs in zip(s.hallucinators, hals):
        for k, v in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[k], v)
    x, _ = s.materialize()
    with torch.no_grad():
        assert torch.allclose(x.view(2 * C, 3, *SHAPE)[:, 1], hals[1](bases))
    assert [d["name"] for d in f.meta["imported"]["files"]] == ["images_best.pt", "weights_best.pt"]

    assert run_import(tmp_path / "images_2000.pt", "haba", tmp_path / "it.safetensors") == 0
    assert torch.equal(load_synset(tmp_path / "it.safetensors").synset.bases.detach(), bases + 1)


def test_haba_folds_a_source_normalization_into_the_hallucinators(tmp_path, digits):
    bases, hals = images(C), style_translators(2)
    torch.save(bases, tmp_path / "images_best.pt")
    torch.save(hals.state_dict(), tmp_path / "weights_best.pt")
    assert run_import(tmp_path / "images_best.pt", "haba", tmp_path / "o.safetensors", "--mean", "0.5",
                      "--std", "0.25") == 0
    s = load_synset(tmp_path / "o.safetensors").synset
    (m,), (sd,) = digits.spec.mean, digits.spec.std
    with torch.no_grad():
        theirs = hals[0](bases)
        assert torch.allclose(s.hallucinators[0](bases), (theirs * 0.25 + 0.5 - m) / sd, atol=1e-5)


def test_haba_architecture_that_differs_is_an_error(tmp_path, capsys):
    torch.save(images(C), tmp_path / "images_best.pt")
    for_32 = style_translators(2, size=32)  # HaBa's StyleTranslator sizes scale/shift for 32x32 by default
    torch.save(for_32.state_dict(), tmp_path / "weights_best.pt")
    assert_refused(capsys, tmp_path / "images_best.pt", "haba", tmp_path / "o.safetensors", match="scale is 1x1x30x30")

    state = collections.OrderedDict(style_translators(2).state_dict())
    state["0.norm.weight"] = torch.ones(1)
    torch.save(state, tmp_path / "weights_best.pt")
    assert_refused(capsys, tmp_path / "images_best.pt", "haba", tmp_path / "o.safetensors",
                   match="extra ['norm.weight']")


# ------------------------------------------------------------------------------------------------ dd
def test_dd_round_trip(tmp_path):
    steps, epochs, per_step = 2, 3, 2
    data = [images(C * per_step, seed=s) for s in range(steps)]
    label = torch.arange(C).repeat_interleave(per_step)
    lrs = [0.01 * (i + 1) for i in range(steps * epochs)]
    saved = [(data[i % steps], label, torch.tensor([lrs[i]])) for i in range(steps * epochs)]  # as get_steps
    torch.save(saved, tmp_path / "results.pth", _use_new_zipfile_serialization=False)  # DD predates the zip format

    assert run_import(tmp_path, "dd", tmp_path / "o.safetensors") == 0
    f = load_synset(tmp_path / "o.safetensors")
    s = f.synset
    assert isinstance(s, StepSet) and (s.steps, s.epochs, s.per_step) == (steps, epochs, per_step)
    assert torch.equal(s.images.detach(), torch.cat(data)) and f.meta["method"] == "dd"
    assert torch.allclose(s.lrs().detach(), torch.tensor(lrs), rtol=1e-5)
    for (x, y, lr), (dx, dy, dlr) in zip(s.schedule(), saved):
        assert torch.equal(x.detach(), dx) and torch.equal(y, dy) and float(lr.detach()) == pytest.approx(float(dlr))


def test_mean_std_maps_images_into_the_spec(tmp_path, digits):
    x = images(C)
    torch.save([(x, torch.arange(C), torch.tensor([0.02]))], tmp_path / "results.pth")
    assert run_import(tmp_path / "results.pth", "dd", tmp_path / "o.safetensors", "--mean", "0.1307",
                      "--std", "0.3081") == 0
    f = load_synset(tmp_path / "o.safetensors")
    (m,), (s,) = digits.spec.mean, digits.spec.std
    assert torch.allclose(f.synset.images.detach(), (x * 0.3081 + 0.1307 - m) / s, atol=1e-6)
    assert f.meta["imported"]["normalization"] == {"mean": [0.1307], "std": [0.3081], "converted": True}


# -------------------------------------------------------------------------------------------- errors
def test_a_pickle_that_needs_code_is_refused(tmp_path, capsys):
    src = tmp_path / "res.pt"
    torch.save({"data": [[images(C), torch.arange(C)]], "accs_all_exps": NeedsCode()}, src)
    assert_refused(capsys, src, "dc", tmp_path / "o.safetensors", match="need code to load")


def test_a_wrong_shape_is_refused(tmp_path, capsys):
    src = tmp_path / "res.pt"
    torch.save({"data": [[images(C, shape=(3, 32, 32)), torch.arange(C)]]}, src)
    assert_refused(capsys, src, "dc", tmp_path / "o.safetensors", match="shape 10x3x32x32")


def test_a_missing_key_is_refused(tmp_path, capsys):
    src = tmp_path / "res.pt"
    torch.save({"images": images(C), "accs_all_exps": {}}, src)
    assert_refused(capsys, src, "dc", tmp_path / "o.safetensors", match="the key 'data'")


@pytest.mark.parametrize("case", ["count", "datm-labels", "no-labels", "no-lr", "zca-copy", "unknown-format",
                                  "option", "garbage", "uneven"])
def test_other_bad_input_is_one_line(tmp_path, capsys, case):
    x = images(C)
    fmt, src, extra = "mtt", tmp_path / "images_best.pt", []
    torch.save(x, src)
    torch.save(torch.arange(C), tmp_path / "labels_best.pt")
    match = {"count": "9 labels for 10 images", "datm-labels": "use --from datm", "no-labels": "labels_best.pt",
             "no-lr": "lr_best.pt", "zca-copy": "un-whitened copy", "unknown-format": "Did you mean 'mtt'",
             "option": "takes no --experiment", "garbage": "not a file written by torch.save",
             "uneven": "images per class"}[case]
    if case == "count":
        torch.save(torch.arange(C - 1), tmp_path / "labels_best.pt")
    elif case == "datm-labels":
        torch.save(torch.randn(C, C), tmp_path / "labels_best.pt")
    elif case == "no-labels":
        (tmp_path / "labels_best.pt").unlink()
    elif case == "no-lr":
        fmt = "datm"
        torch.save(torch.randn(C, C), tmp_path / "labels_best.pt")
    elif case == "zca-copy":
        src = tmp_path / "images_zca_100.pt"
        torch.save(x, src)
    elif case == "unknown-format":
        fmt = "mt"
    elif case == "option":
        extra = ["--experiment", "1"]
    elif case == "garbage":
        fmt, src = "dc", tmp_path / "res.pt"
        src.write_bytes(b"not a torch file at all")
    elif case == "uneven":
        torch.save(torch.cat([torch.zeros(2, dtype=torch.long), torch.arange(2, C)]), tmp_path / "labels_best.pt")
    assert_refused(capsys, src, fmt, tmp_path / "o.safetensors", *extra, match=match)


def test_an_existing_output_is_kept_unless_forced(tmp_path, capsys):
    src = tmp_path / "res.pt"
    torch.save({"data": [[images(C), torch.arange(C)]]}, src)
    out = tmp_path / "o.safetensors"
    out.write_text("keep me")
    assert run_import(src, "dc", out) == 2
    err = capsys.readouterr().err
    assert "--force" in err and err.count("\n") == 1 and out.read_text() == "keep me"
    assert run_import(src, "dc", out, "--force") == 0
    assert isinstance(load_synset(out).synset, PixelSet)


def test_every_format_is_registered():
    assert IMPORTERS.names() == ["datm", "dc", "dd", "haba", "mtt"]
    assert IMPORTERS.get("dm") is IMPORTERS.get("dsa") is IMPORTERS.get("dc")


def test_a_plain_pickle_is_one_line_and_no_warning(tmp_path, capsys):
    """A pickle of an object (not a torch.save file): torch's own warning about the file's pickle
    protocol is not passed on; the refusal is one line."""
    import pickle
    import warnings

    src = tmp_path / "res.pt"
    src.write_bytes(pickle.dumps(NeedsCode(), protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_refused(capsys, src, "dc", tmp_path / "o.safetensors", match="res.pt")
    assert not [w for w in caught if "pickle protocol" in str(w.message)]

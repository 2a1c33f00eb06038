import json

import numpy as np
import pytest
import torch

import datadistill.evaluation.evaluator as evaluator
from datadistill.cli import main
from datadistill.config import ConfigError, RunConfig, apply_overrides, from_dict
from datadistill.data import ZCAError, fit_zca, load_dataset, whiten_dataset
from datadistill.resolve import resolve
from datadistill.evaluation import evaluate, evaluate_models, get_protocol
from datadistill.synset import PixelSet, SynsetFileError, load_synset, save_synset, update_meta
from datadistill.viz import save_grid

OPTS = {"num_classes": 3, "channels": 1, "size": 12, "per_class": 24, "seed": 0}  # the `toy` fixture


def _cov_error(x: torch.Tensor) -> float:
    flat = x.flatten(1).double()
    return float((torch.cov(flat.T) - torch.eye(flat.shape[1], dtype=torch.float64)).abs().max())


def test_whitened_training_images_have_identity_covariance():
    # D = 36 values per image < N = 120 images, so the covariance has full rank
    small = load_dataset("procedural", num_classes=3, channels=1, size=6, per_class=40, seed=1)
    assert _cov_error(small.train.images) > 0.5
    assert _cov_error(fit_zca(small.train.images, 1e-9).apply(small.train.images)) < 1e-4
    assert _cov_error(whiten_dataset(small, 1e-9).train.images) < 1e-4
    # MTT's eps = 0.1 damps the weak directions: no longer the identity
    assert _cov_error(whiten_dataset(small, 0.1).train.images) > 0.1


def test_fit_is_float64_and_matches_mtt_pixel_scale_reference():
    # eigenvalues from 1 down to 1e-6 around an offset: a float32 fit is off by ~1e-2 relative
    g = torch.Generator().manual_seed(0)
    n, d = 200, 16
    q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    x = ((torch.randn(n, d, generator=g, dtype=torch.float64) * torch.logspace(0, -3, d, dtype=torch.float64)) @ q
         + 5).float().view(n, 1, 4, 4)
    z = fit_zca(x, 1e-9)
    flat = x.flatten(1).numpy().astype(np.float64)
    s, u = np.linalg.eigh(np.cov(flat, rowvar=False))  # unbiased covariance, as kornia's default
    ref = (u / np.sqrt(s + 1e-9)) @ u.T
    assert np.abs(z.matrix.numpy() - ref).max() / np.abs(ref).max() < 1e-5
    assert torch.equal(z.matrix, fit_zca(x, 1e-9).matrix) and torch.equal(z.mean, fit_zca(x, 1e-9).mean)


def test_whiten_dataset_fits_in_pixel_units_like_mtt(toy):
    # MTT fits kornia's ZCA on ToTensor images in [0, 1]; our normalized images must give the same result
    wd = whiten_dataset(toy, 0.1)
    x = toy.spec.denormalize(toy.train.images).flatten(1).double().numpy()
    mu = x.mean(0)
    s, u = np.linalg.eigh(np.cov(x, rowvar=False))
    w = (u / np.sqrt(np.clip(s, 0, None) + 0.1)) @ u.T
    t = toy.spec.denormalize(toy.test.images).flatten(1).double().numpy()
    np.testing.assert_allclose(wd.test.images.flatten(1).numpy(), (t - mu) @ w, atol=2e-5)


def test_invert_undoes_apply(toy):
    z = whiten_dataset(toy, 0.1).zca
    x = toy.test.images
    assert torch.allclose(z.invert(z.apply(x)), x, atol=1e-4)
    assert not torch.allclose(z.apply(x), x, atol=0.1)
    # batching does not change the result
    assert torch.allclose(z.apply(x, batch_size=5), z.apply(x), atol=1e-6)


def test_whiten_dataset_whitens_test_with_train_statistics(toy):
    wd = whiten_dataset(toy, 0.1)
    assert wd.spec.extra["zca"] == {"regularization": 0.1} and "zca" not in toy.spec.extra
    assert wd.spec.name == toy.spec.name and wd.spec.mean == toy.spec.mean
    assert torch.equal(wd.test.images, wd.zca.apply(toy.test.images))
    refit_on_test = fit_zca(toy.test.images, 0.1, spec=toy.spec).apply(toy.test.images)
    assert not torch.allclose(wd.test.images, refit_on_test, atol=1e-2)
    assert torch.equal(wd.train.labels, toy.train.labels) and torch.equal(wd.test.labels, toy.test.labels)
    assert whiten_dataset(toy, 0.1) is wd  # cached: no refit
    assert whiten_dataset(toy, 0.2) is not wd
    with pytest.raises(ZCAError, match="already ZCA-whitened"):
        whiten_dataset(wd, 0.1)
    with pytest.raises(ZCAError, match="positive"):
        whiten_dataset(toy, 0.0)


def _zca_file(toy, tmp_path):
    wd = whiten_dataset(toy, 0.1)
    s = PixelSet.from_real(wd.train, 2, torch.Generator().manual_seed(0))
    path = save_synset(tmp_path / "z.safetensors", s, wd.spec, zca=wd.zca, method="test")
    return wd, s, path


def test_file_round_trip_keeps_the_transform(toy, tmp_path):
    wd, s, path = _zca_file(toy, tmp_path)
    f = load_synset(path)
    assert f.meta["zca"] == {"regularization": 0.1} and f.meta["format_version"] == 2
    assert f.spec.extra["zca"] == {"regularization": 0.1}
    assert torch.equal(f.zca.matrix, wd.zca.matrix) and torch.equal(f.zca.mean, wd.zca.mean)
    assert torch.allclose(f.zca.invert(s.images.detach()), wd.zca.invert(s.images.detach()), atol=1e-4)
    assert torch.equal(f.synset.images, s.images)
    update_meta(path, note="kept")  # rewriting the metadata keeps the transform
    assert torch.equal(load_synset(path).zca.matrix, wd.zca.matrix)
    # a set without whitening has no transform and stays format version 1
    plain = save_synset(tmp_path / "p.safetensors", PixelSet.from_real(toy.train, 1, torch.Generator()), toy.spec)
    assert load_synset(plain).zca is None and load_synset(plain).meta["format_version"] == 1
    with pytest.raises(ValueError, match="zca=data.zca"):
        save_synset(tmp_path / "bad.safetensors", s, wd.spec)
    update_meta(plain, zca={"regularization": 0.1})  # metadata claims whitening, tensors are missing
    with pytest.raises(SynsetFileError, match="incomplete"):
        load_synset(plain)


@pytest.fixture
def seen_test(monkeypatch):
    """The test images every evaluated model is scored on."""
    seen = []
    monkeypatch.setattr(evaluator, "accuracy", lambda net, test, *a, **k: seen.append(test.images.cpu()) or 0.5)
    return seen


def test_evaluate_on_a_loaded_file_whitens_the_test_data(toy, tmp_path, seen_test):
    wd, _, path = _zca_file(toy, tmp_path)
    f = load_synset(path)
    protocol = get_protocol("smoke", epochs=1, n_models=1, model="mlp")
    evaluate(f, toy, protocol)  # Python path: the file's transform is applied to the raw data
    evaluate_models(f, toy, protocol, ["mlp"])
    evaluate(f, wd, protocol)  # data already whitened the same way passes
    assert len(seen_test) == 3 and all(torch.equal(x, wd.test.images) for x in seen_test)
    seen_test.clear()
    assert main(["evaluate", str(path), "--protocol", "smoke", "epochs=1", "n_models=1", "model=mlp"]) == 0
    assert len(seen_test) == 1 and torch.equal(seen_test[0], wd.test.images)
    plain = load_synset(save_synset(tmp_path / "p.safetensors", PixelSet.from_real(toy.train, 1, torch.Generator()),
                                    toy.spec))
    with pytest.raises(ZCAError, match="unwhitened"):
        evaluate(plain, wd, protocol)  # mixing is refused
    with pytest.raises(ZCAError, match="whitened differently"):
        evaluate(f, whiten_dataset(toy, 0.2), protocol)
    assert main(["evaluate", str(path), "--zca", "0.1"]) == 2


def test_full_baseline_with_zca_whitens_train_and_test(toy, seen_test, monkeypatch):
    trained_on = []
    real_train = evaluator.train_classifier

    def spy(net, batches, **kw):
        trained_on.extend(x for x, _ in batches(10_000, torch.Generator()))
        return real_train(net, batches, **kw)

    monkeypatch.setattr(evaluator, "train_classifier", spy)
    assert main(["evaluate", "--full", "--dataset", "procedural", "--zca", "0.1", "--protocol", "smoke", "epochs=1",
                 "n_models=1", "model=mlp"]) == 0
    wd = whiten_dataset(load_dataset("procedural"), 0.1)
    assert torch.equal(seen_test[0], wd.test.images)
    assert torch.equal(torch.cat(trained_on).sort(0)[0], wd.train.images.sort(0)[0])


def test_zca_config_key_and_validation():
    assert from_dict(RunConfig, apply_overrides({}, ["zca=0.1"])).zca == 0.1
    assert RunConfig().zca == "auto" and resolve(RunConfig()).zca is None  # the method's default: dm does not whiten
    assert resolve(from_dict(RunConfig, {"zca": None, "method": "haba"})).zca is None
    with pytest.raises(ConfigError, match="zca must be a positive"):
        resolve(from_dict(RunConfig, {"zca": -1.0, "dataset": "procedural"}))


def test_cli_distill_with_zca_then_show(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill", "--dataset", "procedural", "--method", "dm", "--ipc", "1", "--iterations", "2",
                 "--zca", "0.1", "--out", str(out), "--no-progress",
                 *[f"dataset_options.{k}={v}" for k, v in OPTS.items()],
                 "method_config.batch_real=8", "method_config.model=convnet_w32", "eval.preset=smoke",
                 "eval.epochs=2", "eval.n_models=1", "eval.model=convnet_w32"]) == 0
    f = load_synset(out / "distilled.safetensors")
    assert f.meta["zca"] == {"regularization": 0.1} and f.zca is not None
    assert f.spec.extra["zca"] == {"regularization": 0.1}
    assert "zca: 0.1" in (out / "config.yaml").read_text()
    assert "ZCA whitening" in (out / "report.md").read_text()
    capsys.readouterr()
    png = tmp_path / "g.png"
    assert main(["show", str(out / "distilled.safetensors"), "--out", str(png)]) == 0
    assert "ZCA whitening inverted" in capsys.readouterr().out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = save_grid(f.synset, f.spec, tmp_path / "raw.png")  # without inversion: a different picture
    assert raw.read_bytes() != png.read_bytes()
    assert main(["export", str(out / "distilled.safetensors"), str(tmp_path / "tree")]) == 2  # refused
    assert not (tmp_path / "tree").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1].get("final")


def test_data_ref_is_the_one_typed_reader_of_provenance(tmp_path):
    """`DataRef`: which data a set was made from (options, split, validation, ZCA), written by the loaders
    and by whitening, saved in the file's spec and read back the same; `load_ref` loads the raw data."""
    from pathlib import Path

    import datadistill
    from datadistill.data import DataRef
    from datadistill.data.registry import load_ref
    from datadistill.data.zca import unwhitened_spec

    opts = {"num_classes": 3, "size": 8, "per_class": 12}
    data = load_dataset("procedural", None, validation=0.25, **opts)
    white = whiten_dataset(data, 0.1)
    ref = white.spec.ref
    assert ref == DataRef("procedural", ref.options, None, 0.25, 0.1) and opts.items() <= ref.options.items()
    assert DataRef.of(white.spec.with_ref(ref)) == ref and unwhitened_spec(white.spec).ref.zca is None
    path = tmp_path / "s.safetensors"
    save_synset(path, PixelSet.from_real(white.train, 1, torch.Generator().manual_seed(0)), white.spec,
                zca=white.zca, method="random")
    f = load_synset(path)
    assert f.spec.ref == ref  # saved with the file, read back the same
    raw = load_ref(f.spec.ref, None)
    assert raw.spec.ref == ref.with_(zca=None) and torch.equal(raw.train.images, data.train.images)
    # no module but the spec reads the untyped mapping behind it
    src = Path(datadistill.__file__).parent
    readers = sorted(str(p.relative_to(src)) for p in src.rglob("*.py")
                     if p.name != "spec.py" and "spec.extra" in p.read_text())
    assert not readers, f"read provenance through DatasetSpec.ref, not spec.extra: {readers}"

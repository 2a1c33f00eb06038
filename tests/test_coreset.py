"""Coreset baselines: herding and k-center selection of real images."""

import pytest
import torch

from datadistill.config import ConfigError, RunConfig, from_dict
from datadistill.data.spec import DatasetSpec, LoadedDataset, RealData
from datadistill.engine import run
from datadistill.resolve import resolve
from datadistill.methods import METHODS
from datadistill.methods.coreset import CoresetConfig, herding, k_center, select_indices
from datadistill.synset import PixelSet, load_synset

PIXELS = CoresetConfig(features="pixels")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    # trained feature networks are cached under $XDG_CACHE_HOME: never the user's during tests
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _hand_made() -> LoadedDataset:
    """Two classes of six 1x2x2 images, interleaved, with known geometry (pixel features)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 1, 2, 2, generator=g)
    x[0] = torch.tensor([10.0, 10.0, 10.0, 10.0]).view(1, 2, 2)  # class 0's far outlier
    x[4] = torch.tensor([-6.0, 6.0, -6.0, 6.0]).view(1, 2, 2)  # class 0's second outlier
    y = torch.tensor([0, 1] * 6)
    spec = DatasetSpec("hand", 2, 1, (2, 2), (0.0,), (1.0,), ("a", "b"), allow_flip=False)
    train = RealData(x, y, 2)
    return LoadedDataset(spec, train, train)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1)


def test_herding_first_pick_is_closest_to_the_class_mean_and_tracks_the_mean():
    data = _hand_made()
    idx = select_indices(PIXELS, data, 3, _gen(), herding)
    for c in range(2):
        cls = data.train.class_indices(c)
        f = data.train.images[cls].flatten(1)
        closest = cls[torch.linalg.vector_norm(f - f.mean(0), dim=1).argmin()]
        assert idx[3 * c] == closest
    # brute force of the greedy rule on plain features: every step minimizes the running-mean error
    f = torch.randn(10, 4, generator=_gen())
    picks = herding(f, 4).tolist()
    for k in range(1, 5):
        rest = [i for i in range(10) if i not in picks[: k - 1]]
        err = {i: float((f[picks[: k - 1] + [i]].mean(0) - f.mean(0)).norm()) for i in rest}
        assert picks[k - 1] == min(err, key=err.get)


def test_k_center_second_pick_is_the_farthest_point_from_the_first():
    data = _hand_made()
    idx = select_indices(PIXELS, data, 3, _gen(), k_center)
    cls = data.train.class_indices(0)
    f = data.train.images[cls].flatten(1)
    first = cls[torch.linalg.vector_norm(f - f.mean(0), dim=1).argmin()]
    assert idx[0] == first
    assert idx[1] == 0  # the (10, 10, 10, 10) outlier is farthest from the central first center
    assert idx[2] == 4  # then the point farthest from both centers
    # brute force: each pick maximizes the distance to its nearest chosen center
    pts = torch.randn(12, 3, generator=_gen())
    picks = k_center(pts, 5).tolist()
    for k in range(1, 5):
        d = torch.cdist(pts, pts[picks[:k]]).min(1).values
        assert float(d[picks[k]]) == pytest.approx(float(d.max()))


@pytest.mark.parametrize("method", ["herding", "kcenter"])
def test_factories_return_ipc_distinct_real_images_per_class(method, toy):
    entry = METHODS.get(method)
    s = entry.select(PIXELS, toy, 4, "real", _gen()).synset
    assert isinstance(s, PixelSet) and s.ipc == 4 and len(s) == 12
    assert s.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    flat = toy.train.images.flatten(1)
    for c in range(3):
        rows = s.per_class()[c].detach().flatten(1)
        match = (rows[:, None] == flat[None]).all(-1)  # [ipc, N]: which training image each row is
        hits = match.float().argmax(1)
        assert match.any(1).all() and len(set(hits.tolist())) == 4
        assert (toy.train.labels[hits] == c).all()


def test_network_features_are_deterministic_and_recorded(toy):
    cfg = CoresetConfig(features="random", model="lenet", batch_size=16)
    a = select_indices(cfg, toy, 3, _gen(), k_center)
    assert torch.equal(a, select_indices(cfg, toy, 3, _gen(), k_center))
    trained = CoresetConfig(features="trained", model="lenet", batch_size=16)
    b = select_indices(trained, toy, 3, _gen(), herding)
    assert len(set(b.tolist())) == 9 and torch.equal(b, select_indices(trained, toy, 3, _gen(), herding))
    chosen = METHODS.get("herding").select(trained, toy, 3, "real", _gen())  # the set and what its file records
    assert torch.equal(chosen.synset.images, toy.train.images[b].cpu())
    assert chosen.meta == {"selection": {"method": "herding", "features": "trained", "model": "lenet",
                                         "train_epochs": 1, "train_lr": 0.01}}


def test_config_errors_are_clear(toy):
    with pytest.raises(ConfigError, match="valid features: pixels, random, trained"):
        CoresetConfig(features="sift")
    with pytest.raises(ConfigError, match="valid features"):
        resolve(from_dict(RunConfig, {"method": "herding", "method_config": {"features": "sift"}}))
    with pytest.raises(ConfigError, match="fewer than ipc=30"):
        select_indices(PIXELS, toy, 30, _gen(), herding)
    with pytest.raises(ConfigError, match="init"):
        resolve(from_dict(RunConfig, {"method": "kcenter", "image_init": "noise"}))
    with pytest.raises(ConfigError, match="has no iterations"):
        resolve(from_dict(RunConfig, {"method": "herding", "iterations": 3}))
    assert {"herding", "kcenter", "random"} <= set(METHODS.names()) and METHODS.get("k-center").name == "kcenter"


def test_herding_end_to_end_writes_selection_metadata(tmp_path):
    cfg = from_dict(RunConfig, {
        "dataset": "procedural", "dataset_options": {"num_classes": 3, "size": 12, "per_class": 24},
        "method": "herding", "ipc": 2, "iterations": 0,
        "method_config": {"features": "trained", "model": "convnet_w32", "batch_size": 32},
        "eval": {"preset": "smoke", "epochs": 3, "n_models": 1, "model": "convnet_w32"}})
    result = run(cfg, tmp_path / "herding", progress=False, log=lambda *_: None)
    f = load_synset(tmp_path / "herding" / "distilled.safetensors")
    assert f.method == "herding" and f.meta["iterations"] == 0 and f.synset.ipc == 2
    assert f.meta["selection"] == {"method": "herding", "features": "trained", "model": "convnet_w32",
                                   "train_epochs": 1, "train_lr": 0.01}
    assert result.reports["convnet_w32"].accuracies


def test_trained_features_are_cached_and_reused_exactly(toy, tmp_path, monkeypatch):
    import datadistill.methods.coreset as cs

    trained = CoresetConfig(features="trained", model="lenet", batch_size=16)
    calls = []
    real_train = cs.train_classifier
    monkeypatch.setattr(cs, "train_classifier", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    first = select_indices(trained, toy, 3, _gen(), herding)
    cached = list((tmp_path / "cache" / "datadistill" / "coreset-features").glob("*.safetensors"))
    assert len(calls) == 1 and len(cached) == 1
    # k-center and another size reuse the same network: no training, same features as a fresh one
    again = select_indices(trained, toy, 3, _gen(), k_center)
    assert len(calls) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "fresh"))
    assert torch.equal(again, select_indices(trained, toy, 3, _gen(), k_center)) and len(calls) == 2
    assert torch.equal(first, select_indices(trained, toy, 3, _gen(), herding)) and len(calls) == 2
    # another seed is another network
    select_indices(trained, toy, 3, torch.Generator().manual_seed(99), herding)
    assert len(calls) == 3

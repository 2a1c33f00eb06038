"""HaBa on a tiny procedural set with a hand-made expert trajectory (see test_mtt.Trajectories)."""

import pytest
import torch
import torch.nn.functional as F

from datadistill.functional import supervised_contrastive_loss
from datadistill.methods import Context, DivergenceError
from datadistill.methods.haba import HaBa, HaBaConfig
from datadistill.seeding import make_generator
from datadistill.synset.factorized import factorized_synset

from test_mtt import Trajectories


@pytest.fixture(scope="module")
def experts(toy):
    return Trajectories(toy, "mlp")


def make(toy, experts, ipc=3, seed=0, **kw):
    cfg = HaBaConfig(**{"model": "mlp", "extractor": "mlp", "syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 2,
                        "lr_img": 10.0, "lr_hallucinator": 1.0, "lr_lr": 1e-4, "lr_teacher": 0.05, "dsa": False,
                        "n_hallucinators": 3, **kw})
    s = factorized_synset(cfg, toy, ipc, "real", make_generator(seed, "init"))
    ctx = Context(toy, s, torch.device("cpu"), make_generator(seed, "m"), seed, ipc, iterations=10)
    return HaBa(cfg, ctx, experts=experts), s


def reference_supcon(features, labels, t=0.07):
    """Direct double loop over anchors and positives."""
    n, v, _ = features.shape
    z = torch.cat([features[:, i] for i in range(v)])
    lab = labels.repeat(v)
    total = 0.0
    for a in range(len(z)):
        others = [k for k in range(len(z)) if k != a]
        denom = torch.logsumexp(torch.stack([z[a] @ z[k] / t for k in others]), 0)
        pos = [k for k in others if lab[k] == lab[a]]
        total = total + sum(-(z[a] @ z[p] / t - denom) for p in pos) / len(pos)
    return total / len(z)


def test_supervised_contrastive_loss_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(5, 2, 4, generator=g), dim=-1)
    y = torch.tensor([0, 1, 0, 2, 1])
    assert float(supervised_contrastive_loss(f, y)) == pytest.approx(float(reference_supcon(f, y)), rel=1e-5)


def test_budget_maps_to_bases_and_the_file_states_storage(toy, experts):
    h, s = make(toy, experts, ipc=3)
    assert s.bases_per_class == 2 and s.n_hallucinators == 3 and s.learned_lr() == pytest.approx(0.05)
    meta = h.file_meta()
    assert s.ipc == 3 and "budget_ipc" not in meta and meta["stored_floats"] == s.storage_numel()
    assert meta["budget_floats"] == 3 * 3 * 12 * 12


def test_one_iteration_updates_bases_hallucinators_step_size_and_extractor(toy, experts):
    h, s = make(toy, experts)
    before = [p.detach().clone() for p in (*s.base_parameters(), *s.hallucinator_parameters())]
    ext0 = [p.detach().clone() for p in h.extractor.parameters()]
    m = h.step(0)
    after = [p.detach() for p in (*s.base_parameters(), *s.hallucinator_parameters())]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))  # every tensor of the set moved
    assert any(not torch.equal(a, b.detach()) for a, b in zip(ext0, h.extractor.parameters()))
    assert m["lr"] != pytest.approx(0.05) and s.learned_lr() == pytest.approx(m["lr"])
    assert {"param_loss", "club", "extractor_loss"} <= set(m)


def test_haba_reduces_its_trajectory_loss(toy, experts):
    h, _ = make(toy, experts)

    def fixed():
        saved, h.match.chunks = h.match.chunks, []
        v = float(h.trajectory_loss(0, 1, torch.Generator().manual_seed(7)).detach())
        h.match.chunks = saved
        return v

    first = fixed()
    for it in range(12):
        h.step(it)
    assert fixed() < first


def test_extractor_step_does_not_touch_the_set(toy, experts):
    h, s = make(toy, experts)
    loss, _ = h.extractor_loss(torch.Generator().manual_seed(0))
    loss.backward(inputs=list(h.extractor.parameters()))
    assert s.bases.grad is None


def test_state_dict_round_trip_includes_the_extractor(toy, experts):
    a, _ = make(toy, experts)
    a.step(0)
    b, s2 = make(toy, experts)
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.extractor.parameters(), b.extractor.parameters()):
        assert torch.equal(p, q)
    assert s2.learned_lr() == pytest.approx(float(a.match.alpha.detach()))


def test_non_finite_trajectory_stops_before_any_update(toy, experts):
    bad = Trajectories.__new__(Trajectories)
    bad.traj = [[{k: torch.full_like(v, float("nan")) for k, v in st.items()} for st in experts.traj[0]]]
    h, s = make(toy, bad)
    b0 = s.bases.detach().clone()
    with pytest.raises(DivergenceError):
        h.step(0)
    assert torch.equal(b0, s.bases.detach())


def test_config_validation():
    with pytest.raises(ValueError, match="n_hallucinators"):
        HaBaConfig(n_hallucinators=1)
    with pytest.raises(ValueError, match="hallucinator init 'delta'; valid: default, identity"):
        HaBaConfig(hallucinator_init="delta")

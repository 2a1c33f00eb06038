"""HaBa on a tiny procedural set with a hand-made expert trajectory (see test_mtt.Trajectories)."""

import json

import pytest
import torch
import torch.nn.functional as F

from datadistill.functional import supervised_contrastive_loss
from datadistill.methods import Context, DivergenceError
from datadistill.methods.haba import HaBa, HaBaConfig
from datadistill.seeding import make_generator
from datadistill.methods.haba import haba_synset

from test_mtt import Trajectories


@pytest.fixture(scope="module")
def experts(toy):
    return Trajectories(toy, "mlp")


def make(toy, experts, ipc=3, seed=0, **kw):
    cfg = HaBaConfig(**{"model": "mlp", "extractor": "mlp", "syn_steps": 4, "expert_epochs": 1, "max_start_epoch": 2,
                        "lr_img": 10.0, "lr_hallucinator": 1.0, "lr_lr": 1e-4, "lr_teacher": 0.05, "dsa": False,
                        "n_hallucinators": 3, **kw})
    s = haba_synset(cfg, toy, ipc, "real", make_generator(seed, "init"))
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
    per_hal = (9 + 1) + 2 * 10 * 10 + (9 + 1)  # 3x3 conv, scale and shift on 10x10, transposed conv (1 channel)
    for rule, bases in (("ipc", 3), ("ipc-1", 2)):
        h, s = make(toy, experts, ipc=3, bases_rule=rule)
        assert s.bases_per_class == bases and s.n_hallucinators == 3 and s.learned_lr() == pytest.approx(0.05)
        meta = h.file_meta()
        stored = 3 * bases * 12 * 12 + 3 * per_hal + 1  # bases, hallucinators, the learned step size
        assert s.ipc == 3 and "budget_ipc" not in meta and meta["stored_floats"] == s.storage_numel() == stored
        assert meta["budget_floats"] == 3 * 3 * 12 * 12
        assert meta["storage_ratio"] == pytest.approx(stored / (3 * 3 * 12 * 12), abs=1e-4)
        assert h.final_metrics(s, toy, torch.device("cpu"))["storage_ratio"] == meta["storage_ratio"]
    with pytest.raises(ValueError, match="unknown haba bases_rule 'ipc-2'; valid: ipc, ipc-1"):
        HaBaConfig(bases_rule="ipc-2")


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


# ---------------------------------------------------------------------- as the authors run it
def test_storage_ratio_of_each_bases_rule_on_digits(digits):
    """10 images per class of 28x28 digits: the authors' rule stores 10 bases, ``ipc-1`` nine."""
    per_hal = (9 + 1) + 2 * 26 * 26 + (9 + 1)
    plain = 10 * 10 * 28 * 28
    for rule, bases in (("ipc", 10), ("ipc-1", 9)):
        cfg = HaBaConfig(bases_rule=rule, lr_teacher=0.01)
        s = haba_synset(cfg, digits, 10, "real", make_generator(0, "init"))
        assert s.bases_per_class == bases
        assert s.storage_ratio() == pytest.approx((10 * bases * 28 * 28 + 5 * per_hal + 1) / plain)
    assert haba_synset(HaBaConfig(), digits, 10, "noise", make_generator(0, "i")).storage_ratio() > 1.08


def test_haba_whitens_by_default_and_runs_without_zca_when_told():
    from datadistill.config import RunConfig, from_dict
    from datadistill.resolve import resolve

    def zca(**kw):
        return resolve(from_dict(RunConfig, {"dataset": "digits", **kw})).zca

    assert zca(method="haba") == 0.1 and zca(method="haba", zca=None) is None and zca(method="haba", zca=0.05) == 0.05
    assert zca(method="mtt") is None and zca(method="dm") is None  # the others do not whiten unless told
    assert resolve(from_dict(RunConfig, {"dataset": "digits", "method": "haba"})).to_dict()["zca"] == 0.1


def test_cli_zca_off_is_no_whitening():
    from datadistill.cli import distill_config, parse_args

    assert distill_config(parse_args(["distill", "--method", "haba", "--zca", "off"])).zca is None
    assert distill_config(parse_args(["distill", "--method", "haba"])).zca == "auto"
    assert distill_config(parse_args(["distill", "--method", "haba", "--zca", "0.2"])).zca == 0.2


@pytest.fixture(scope="module")
def digit_experts(tmp_path_factory):
    """One one-epoch MLP expert on digits, ZCA-whitened (0.1) and not."""
    from datadistill.experts import ExpertConfig, train_experts

    out = {}
    for zca in (0.1, None):
        d = tmp_path_factory.mktemp(f"experts-zca{zca}")
        train_experts(ExpertConfig(dataset="digits", model="mlp", n_experts=1, epochs=1, augment="none",
                                   batch_size=256, zca=zca), d)
        out[zca] = str(d)
    return out


TINY = ["--dataset", "digits", "--method", "haba", "--ipc", "2", "--iterations", "2", "--no-progress",
        "method_config.model=mlp", "method_config.extractor=mlp", "method_config.syn_steps=2",
        "method_config.expert_epochs=1", "method_config.max_start_epoch=1", "method_config.dsa=false",
        "method_config.lr_hallucinator=1", "eval.preset=smoke", "eval.epochs=2", "eval.n_models=1", "eval.model=mlp"]


@pytest.mark.parametrize("experts_zca, run_zca, says", [
    (None, [], "zca: stored None vs requested 0.1, the experts were trained on un-whitened data (train experts "
               "with --zca 0.1, or run with zca=null (no whitening))"),
    (0.1, ["--zca", "off"], "zca: stored 0.1 vs requested None, the experts were trained on ZCA-whitened data "
                            "(train experts without --zca, or run with zca=0.1)"),
])
def test_experts_of_another_whitening_are_a_one_line_error(digit_experts, experts_zca, run_zca, says, tmp_path,
                                                           capsys):
    from datadistill.cli import main

    argv = ["distill", *TINY, f"method_config.experts={digit_experts[experts_zca]}", *run_zca, "--out",
            str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("datadistill: error: the expert trajectories in")
    assert says in err and not (tmp_path / "run").exists()


def test_a_default_run_whitens_and_records_storage_and_collapse(digit_experts, tmp_path, capsys):
    from datadistill.cli import main
    from datadistill.synset import load_synset

    out = tmp_path / "run"
    assert main(["distill", *TINY, f"method_config.experts={digit_experts[0.1]}", "--eval-every", "1",
                 "--out", str(out)]) == 0
    f = load_synset(out / "distilled.safetensors")
    assert f.zca is not None and f.zca.regularization == 0.1 and f.synset.bases_per_class == 2  # the authors' rule
    assert f.meta["storage_ratio"] == pytest.approx(f.synset.storage_ratio(), abs=1e-4) and f.meta["storage_ratio"] > 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    during = [r["set"] for r in rows if "eval" in r and not r.get("final")]
    final = [r["extra"] for r in rows if r.get("final")][0]
    assert len(during) == 1 and len(during[0]["per_hallucinator"]) == 5
    assert final["storage_ratio"] == f.meta["storage_ratio"] and -1 <= final["hallucination_corr"]["mean"] <= 1
    assert f.meta["extra_report"]["hallucination_hf_ratio"] == final["hallucination_hf_ratio"]
    report = (out / "report.md").read_text()
    assert "ZCA whitening, regularization 0.1" in report and "| storage_ratio |" in report
    assert "| hallucinator | correlation with its base | high-frequency ratio |" in report


# ---------------------------------------------------------------------- the collapse diagnostic
def _sharp_digits(digits, n=20):
    """Digits as black-and-white strokes: sharp edges, so real high-frequency energy."""
    return (digits.train.images[:n] > 0).float()


def _blur(x):
    k = torch.tensor([1.0, 4, 6, 4, 1])
    k = (k[:, None] * k[None]) / 256
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k[None, None])


def test_diagnostic_tells_a_blurred_copy_from_an_independent_image(digits):
    from datadistill.synset.collapse import collapse_of

    base = _sharp_digits(digits)
    noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(0))
    other = base.roll(1, 0)  # another digit
    r = collapse_of(base, torch.stack([_blur(base), 3 * base + 1, noise, other], dim=1), torch.zeros(len(base)))
    (blur, scaled, indep, another) = r.per_hallucinator()
    assert blur["corr"] > 0.9 and blur["hf_ratio"] < 0.2  # a low-pass copy
    assert scaled["corr"] == pytest.approx(1.0) and scaled["hf_ratio"] == pytest.approx(1.0)  # scale-free
    assert abs(indep["corr"]) < 0.1 and indep["hf_ratio"] > 2  # unrelated detail
    assert another["corr"] < 0.7 and another["hf_ratio"] > 0.5
    assert r.low_pass() == [0] and r.summary()["low_pass_hallucinators"] == 1


def test_diagnostic_of_a_set_whose_hallucinator_blurs(digits):
    """Hallucinator 0 is a 3x3 box blur (the released architecture can be one); hallucinator 1
    ignores its base (scale 0) and draws a fixed noise image."""
    from datadistill.synset import FactorizedSet, collapse_diagnostic

    base = _sharp_digits(digits, 30)
    labels = digits.train.labels[:30]
    order = torch.argsort(labels, stable=True)
    keep = torch.cat([order[labels[order] == c][:1] for c in range(10)])  # one base per class
    s = FactorizedSet.from_bases(base[keep], labels[keep], 10, 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        blur, indep = s.hallucinators
        for conv in (blur.enc, blur.dec, indep.enc, indep.dec):
            conv.weight.zero_()
            conv.bias.zero_()
        blur.enc.weight.fill_(1 / 9)
        blur.dec.weight[0, 0, 1, 1] = 1.0
        indep.scale.zero_()
        indep.shift.copy_(torch.randn(indep.shift.shape, generator=torch.Generator().manual_seed(1)))
        indep.dec.weight[0, 0, 1, 1] = 1.0
    r = collapse_diagnostic(s)
    (b, i) = r.per_hallucinator()
    assert b["corr"] > 0.8 and b["hf_ratio"] < 0.5 and abs(i["corr"]) < 0.3 and i["hf_ratio"] > 1
    assert r.low_pass() == [0] and "1 of 2 hallucinators are low-pass copies" in r.lines()[-1]
    assert len(r.of_class(3)) == 2


def test_show_draws_one_compact_panel_per_class_and_prints_the_diagnostic(digits, tmp_path, capsys):
    from PIL import Image

    from datadistill.cli import main
    from datadistill.synset import FactorizedSet, save_synset

    s = FactorizedSet.from_real(digits.train, 10, 5, torch.Generator().manual_seed(0), lr=0.01, ipc=10)
    save_synset(tmp_path / "h.safetensors", s, digits.spec, method="haba")
    assert main(["show", str(tmp_path / "h.safetensors"), "--out", str(tmp_path / "h.png")]) == 0
    w, h = Image.open(tmp_path / "h.png").size
    # five panels of 10 bases x (base + 5 hallucinations) to a row, two rows: one screen, not 90 rows of tiles
    assert 900 <= w <= 1300 and 700 <= h <= 1050
    out = capsys.readouterr().out
    assert "10 bases x 5 hallucinators per class; storage" in out and "h4: correlation with its base" in out


def test_a_run_saved_before_bases_rule_resumes_with_its_own(tmp_path):
    import yaml

    from datadistill.config import RunConfig, from_dict
    from datadistill.resolve import saved_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"dataset": "digits", "method": "haba", "zca": None,
                                                          "method_config": {"bases_per_class": None}}))
    cfg = saved_config(from_dict(RunConfig, {"method": "haba"}), tmp_path, lambda *_: None)
    assert cfg.method_config["bases_rule"] == "ipc-1" and cfg.zca is None

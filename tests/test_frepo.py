import copy
import dataclasses

import pytest
import torch
from torch import nn

from datadistill.config import ConfigError, from_dict, load_preset
from datadistill.evaluation import get_protocol
from datadistill.evaluation.labels import label_plan
from datadistill.functional import feature_krr, krr_predict, trace_ridge
from datadistill.functional.labels import label_loss, per_sample_loss
from datadistill.methods import METHODS, Context
from datadistill.methods.frepo import (FRePo, FRePoConfig, Lamb, frepo_synset, half_squared_error, initial_labels,
                                       margin_loss)
from datadistill.models import create_model
from datadistill.seeding import make_generator
from datadistill.synset import PixelSet, load_synset, save_synset
from datadistill.synset.io import read_meta

FAST = dict(model="convnet_w32", batch_real=64)


def _frepo(data, ipc=1, seed=0, iterations=10, **cfg):
    cfg = FRePoConfig(**{**FAST, **cfg})
    s = frepo_synset(cfg, data, ipc, "real", make_generator(seed, "init"))
    ctx = Context(data, s, torch.device("cpu"), make_generator(seed, "method"), seed, ipc, iterations=iterations)
    return s, FRePo(cfg, ctx)


def test_krr_equals_the_primal_ridge_solved_by_lstsq():
    g = torch.Generator().manual_seed(0)
    f_s, f_t, y = (torch.randn(6, 9, generator=g, dtype=torch.float64), torch.randn(4, 9, generator=g, dtype=torch.float64),
                   torch.randn(6, 3, generator=g, dtype=torch.float64))
    reg = 0.3
    mu = reg * torch.trace(f_s @ f_s.T) / 6
    # primal ridge: min_w ||f_s w - y||^2 + mu ||w||^2, as least squares on the stacked system
    a = torch.cat([f_s, mu.sqrt() * torch.eye(9, dtype=torch.float64)])
    b = torch.cat([y, torch.zeros(9, 3, dtype=torch.float64)])
    w = torch.linalg.lstsq(a, b).solution
    assert torch.allclose(feature_krr(f_t, f_s, y, reg), f_t @ w, atol=1e-10)
    assert torch.allclose(trace_ridge(f_s @ f_s.T, reg) - f_s @ f_s.T, mu * torch.eye(6, dtype=torch.float64))


def test_krr_interpolates_its_support_and_ignores_the_feature_scale():
    g = torch.Generator().manual_seed(1)
    f, y = torch.randn(5, 20, generator=g, dtype=torch.float64), torch.randn(5, 10, generator=g, dtype=torch.float64)
    assert torch.allclose(feature_krr(f, f, y, 1e-10), y, atol=1e-6)
    q = torch.randn(3, 20, generator=g, dtype=torch.float64)
    assert torch.allclose(feature_krr(q, f, y, 1e-2), feature_krr(10 * q, 10 * f, y, 1e-2))
    assert torch.allclose(krr_predict(q @ f.T, f @ f.T, y, 1e-2), feature_krr(q, f, y, 1e-2))


def test_labels_start_centered_and_the_margin_term_saturates_at_1_over_c():
    y = initial_labels(torch.tensor([0, 1, 2]), 10)
    assert torch.allclose(y.sum(1), torch.zeros(3), atol=1e-6) and float(y[0, 0]) == pytest.approx(0.9)
    assert float(margin_loss(y)) == pytest.approx(-0.1)  # margin 1 is capped at 1/C
    assert float(margin_loss(torch.tensor([[0.5, 0.48, 0.0]]))) == pytest.approx(-0.02)


def test_lamb_moves_each_tensor_by_lr_times_its_norm_on_the_first_step():
    p = torch.nn.Parameter(torch.randn(4, 5, generator=torch.Generator().manual_seed(0)))
    before = p.detach().clone()
    opt = Lamb([p], lr=0.01)
    p.grad = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    opt.step()
    assert float((p.detach() - before).norm()) == pytest.approx(0.01 * float(before.norm()), rel=1e-3)


def test_step_learns_images_and_labels_and_leaves_the_global_rng(digits):
    s, m = _frepo(digits)
    img, lab = s.images.detach().clone(), m.labels.detach().clone()
    state = torch.random.get_rng_state()
    out = m.step(0)
    assert torch.equal(state, torch.random.get_rng_state())
    assert {"loss", "kernel_loss", "label_loss", "krr_acc", "lr"} <= set(out)
    assert not torch.equal(img, s.images.detach()) and not torch.equal(lab, m.labels.detach())
    assert sum(m.pool_steps) == sum(range(0, 100, 10)) + 1  # staggered 0, 10, ..., 90; one network trained


def test_the_meta_loss_decreases_on_digits(digits):
    """With one fixed network (never replaced) and a fixed real batch, 15 Adam steps on the images
    and labels lower the KRR loss of that batch."""
    s, m = _frepo(digits, num_models=1, max_online_updates=10**6, optimizer="adam", lr=0.01, batch_real=128)
    net = m.pool[0]

    def fixed_loss():
        return float(m.meta_loss(net, torch.Generator().manual_seed(7))[1]["kernel_loss"])

    before = fixed_loss()
    for i in range(15):
        m.step(i)
    assert fixed_loss() < 0.8 * before


def test_resume_gives_identical_results(digits):
    kw = dict(num_models=2, max_online_updates=1, batch_real=32)
    s1, m1 = _frepo(digits, **kw)
    for i in range(5):
        m1.step(i)

    s2, m2 = _frepo(digits, **kw)
    for i in range(3):
        m2.step(i)
    saved = copy.deepcopy({"method": m2.state_dict(), "images": s2.images.detach().clone(),
                           "gen": m2.ctx.generator.get_state()})
    s3, m3 = _frepo(digits, seed=5, **kw)  # a different seed: everything must come from the state
    with torch.no_grad():
        s3.images.copy_(saved["images"])
    m3.load_state_dict(saved["method"])
    m3.ctx.generator.set_state(saved["gen"])
    for i in range(3, 5):
        m3.step(i)
    assert torch.equal(s1.images, s3.images) and torch.equal(m1.labels, m3.labels)
    assert m1.pool_steps == m3.pool_steps
    for a, b in zip(m1.pool, m3.pool):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("bad, field", [(dict(num_models=0), "num_models"), (dict(lr=-1.0), "lr"),
                                        (dict(optimizer="sgd"), "optimizer"), (dict(bn_momentum=1.0), "bn_momentum"),
                                        (dict(lr_final=2.0), "lr_final"), (dict(batch_real=0), "batch_real")])
def test_bad_config_values_are_clear_errors(bad, field):
    with pytest.raises(ConfigError, match=f"frepo: .*{field}"):
        FRePoConfig(**bad)


def test_frepo_is_registered_with_the_reference_defaults():
    entry = METHODS.get("frepo")
    cfg = entry.config()
    assert (cfg.lr, cfg.optimizer, cfg.batch_real, cfg.reg) == (3e-4, "lamb", 1024, 1e-6)
    assert (cfg.num_models, cfg.max_online_updates, cfg.lr_online) == (10, 100, 3e-4)
    assert (cfg.model, cfg.weight_init, cfg.label_loss) == ("convnet_frepo_prenorm", "lecun", "sse_half")
    assert entry.iterations == 500000 and entry.image_init == "real" and entry.eval_preset == "dsa"


def test_the_cosine_schedule_ends_at_a_tenth(digits):
    _, m = _frepo(digits, iterations=100)
    assert m.lr_at(0) == pytest.approx(3e-4) and m.lr_at(100) == pytest.approx(3e-5)
    assert m.lr_at(50) == pytest.approx(3e-4 * 0.55)


def test_the_learned_labels_are_the_sets_soft_labels_for_the_squared_loss(digits):
    s, m = _frepo(digits)
    assert s.label_loss == "sse_half" and torch.equal(s.soft_labels, m.labels.detach())
    m.step(0)
    assert torch.equal(s.soft_labels, m.labels.detach())


# ---------------------------------------------------------------------- fidelity to the reference code
def test_sse_half_is_half_the_summed_squared_error_by_hand():
    z = torch.tensor([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]], requires_grad=True)
    y = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 1.0]])
    per = per_sample_loss("sse_half", z, y)  # rows: 1/2 (0.25 + 4) and 1/2 (1 + 4)
    assert per.tolist() == pytest.approx([2.125, 2.5])
    per.mean().backward()
    # d/dz of 1/B sum_b 1/2 ||z_b - y_b||^2 is (z - y) / B
    assert torch.allclose(z.grad, torch.tensor([[0.25, 1.0, 0.0], [0.0, -0.5, 1.0]]))
    assert float(half_squared_error(z.detach(), y)) == pytest.approx(2.3125)


def test_sse_half_has_five_times_the_gradient_of_mse_at_10_classes():
    g = torch.Generator().manual_seed(0)
    z0, y = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    grads = {}
    for name in ("sse_half", "mse"):
        z = z0.clone().requires_grad_(True)
        label_loss(name)(z, y).backward()
        grads[name] = z.grad
    assert torch.allclose(grads["sse_half"], 5 * grads["mse"])
    assert not torch.allclose(grads["sse_half"], grads["mse"])


def _layers(net):
    return [(type(m).__name__, getattr(m, "in_channels", getattr(m, "num_features", None)),
             getattr(m, "out_channels", None)) for m in net.features]


def test_the_feature_network_is_the_references_conv():
    """Conv (bias), ReLU, average pooling per block; BatchNorm on the inputs of blocks 2 and 3 only;
    widths 128 / 256 / 512; one linear layer on the flattened 512 x 4 x 4 features (28x28 padded to 32)."""
    net = create_model("convnet_frepo_prenorm", 1, 10, 28)
    assert _layers(net) == [("Conv2d", 1, 128), ("ReLU", None, None), ("AvgPool2d", None, None),
                            ("BatchNorm2d", 128, None), ("Conv2d", 128, 256), ("ReLU", None, None),
                            ("AvgPool2d", None, None), ("BatchNorm2d", 256, None), ("Conv2d", 256, 512),
                            ("ReLU", None, None), ("AvgPool2d", None, None)]
    assert net.features[0].padding == (3, 3) and all(m.bias is not None for m in net.features if isinstance(m, nn.Conv2d))
    assert isinstance(net.classifier, nn.Linear) and net.classifier.in_features == 512 * 4 * 4
    rgb = create_model("convnet_frepo_prenorm", 3, 100, 32)
    assert rgb.features[0].padding == (1, 1) and rgb.classifier.in_features == 512 * 4 * 4
    assert rgb(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    # the old name keeps its meaning: the DC zoo's order, BatchNorm after every conv
    old = create_model("convnet_frepo", 1, 10, 28)
    assert [t for t, _, _ in _layers(old)][:4] == ["Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d"]


def test_lecun_init_is_flaxs_default():
    net = create_model("convnet_frepo_prenorm", 1, 10, 28, seed=0, weight_init="lecun").requires_grad_(False)
    for m in (net.features[4], net.classifier):  # fan-in 128 * 9 and 8192
        fan_in = m.weight[0].numel()
        assert float(m.weight.std()) * fan_in ** 0.5 == pytest.approx(1.0, rel=0.03)
        assert float(m.weight.abs().max()) <= 2 / 0.87962566103423978 / fan_in ** 0.5 + 1e-6
        assert not m.bias.any()
    default = create_model("convnet_frepo_prenorm", 1, 10, 28, seed=0).requires_grad_(False)  # PyTorch's: uniform, std 1/sqrt(3 fan_in)
    assert float(default.classifier.weight.std()) * 8192 ** 0.5 == pytest.approx(3 ** -0.5, rel=0.03)


def test_the_presets_take_the_references_loss_and_network():
    frepo = from_dict(FRePoConfig, load_preset("frepo")["method_config"])
    assert (frepo.model, frepo.weight_init, frepo.label_loss) == ("convnet_frepo_prenorm", "lecun", "sse_half")
    cpu = from_dict(FRePoConfig, load_preset("frepo-cpu")["method_config"])  # pinned: its records were made so
    assert (cpu.model, cpu.weight_init, cpu.label_loss) == ("convnet_bn", "default", "mse")
    with pytest.raises(KeyError, match="Valid"):
        FRePoConfig(label_loss="sse")


def test_an_old_mse_file_keeps_its_meaning(digits, tmp_path):
    """Sets saved before ``label_loss`` was a setting say ``mse`` in their metadata: evaluation reads it
    and trains on the mean over classes, not on the reference's sse_half."""
    cfg = FRePoConfig(**FAST)
    s = frepo_synset(cfg, digits, 1, "real", make_generator(0, "init"))
    old = PixelSet(s.images.detach(), s.labels, s.num_classes, soft_labels=s.soft_labels, label_loss="mse")
    old_cfg = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("label_loss", "weight_init")}
    paths = {"old": save_synset(tmp_path / "old.safetensors", old, digits.spec, method="frepo", method_config=old_cfg),
             "new": save_synset(tmp_path / "new.safetensors", s, digits.spec, method="frepo",
                                method_config=dataclasses.asdict(cfg))}
    assert read_meta(paths["old"])["synset_config"]["label_loss"] == "mse"
    z, y = torch.randn(3, 10), torch.randn(3, 10)
    want = {"old": ((z - y) ** 2).mean(1), "new": 0.5 * ((z - y) ** 2).sum(1)}
    for kind, path in paths.items():
        loaded = load_synset(path).synset
        plan = label_plan(loaded, get_protocol("dc"), digits.spec)
        assert plan.info["label_loss"] == {"old": "mse", "new": "sse_half"}[kind]
        assert torch.allclose(plan.loss(z, y), want[kind])

"""The fused instance-norm + ReLU + 2x2 average-pooling kernel (`datadistill.kernels`): exact gradients
(first and second order) in double, the eager ops' results in float on either memory layout, the same
ConvNet parameters, and the eager fallback where the extension cannot be built."""

import shutil
from pathlib import Path

import pytest
import torch

from datadistill import kernels
from datadistill.config import ConfigError
from datadistill.kernels import FusedInstanceNorm, eager, in_relu_pool
from datadistill.models import create_model

LAYOUTS = [torch.contiguous_format, torch.channels_last]


@pytest.fixture(scope="module")
def built():
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler on this machine: the eager ops run (tested below)")
    ext = kernels.extension()
    assert ext is not None, "a compiler is here, so the extension must build"
    return ext


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("hw", [(6, 6), (5, 7), (2, 3)])
def test_gradients_are_exact_in_double(built, layout, hw):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.double, generator=g).contiguous(memory_format=layout).requires_grad_()
    w = (torch.rand(3, dtype=torch.double, generator=g) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.double, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(in_relu_pool, (x, w, b))
    assert torch.autograd.gradgradcheck(in_relu_pool, (x, w, b))  # DC's gradient matching differentiates twice
    y = in_relu_pool(x, w, b)
    assert y.is_contiguous(memory_format=layout) and torch.allclose(y, eager(x, w, b), atol=1e-12)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
def test_float_results_match_the_eager_ops(built, layout):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 16, 12, 12, generator=g).contiguous(memory_format=layout)
    w, b = torch.rand(16, generator=g) + 0.5, torch.randn(16, generator=g)
    gy = torch.randn(8, 16, 6, 6, generator=g)
    out = []
    for f in (in_relu_pool, eager):
        xs, ws, bs = (t.clone().requires_grad_() for t in (x, w, b))
        y = f(xs, ws, bs)
        y.backward(gy)
        out.append((y, xs.grad, ws.grad, bs.grad))
    for got, want in zip(*out):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5), (got - want).abs().max()


def test_a_fused_convnet_has_the_same_parameters_and_outputs(built, monkeypatch):
    monkeypatch.setenv("DATADISTILL_KERNELS", "eager")
    ref = create_model("convnet_w32", 1, 4, (12, 12), seed=0)
    monkeypatch.setenv("DATADISTILL_KERNELS", "fused")
    net = create_model("convnet_w32", 1, 4, (12, 12), seed=0)
    assert sum(isinstance(m, FusedInstanceNorm) for m in net.modules()) == 3
    assert list(net.state_dict()) == list(ref.state_dict())  # same names: experts and teachers load either way
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))
    x = torch.randn(5, 1, 12, 12, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(net(x), ref(x), atol=1e-5)
    net(x).sum().backward()
    ref(x).sum().backward()
    for (name, p), q in zip(net.named_parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5), name
    monkeypatch.setenv("DATADISTILL_KERNELS", "fast")
    with pytest.raises(ConfigError, match="valid: auto, eager, fused"):
        create_model("convnet_w32", 1, 4, (12, 12), seed=0)


def test_the_batched_evaluation_sees_through_the_fused_blocks(built, monkeypatch):
    """torch.func's vmap (`--batch-models`) cannot enter the C++ kernel: the block runs its eager ops
    there, and the models train as they do one at a time."""
    from datadistill.data import load_dataset
    from datadistill.evaluation import evaluate, get_protocol
    from datadistill.synset import PixelSet

    monkeypatch.setenv("DATADISTILL_KERNELS", "fused")
    data = load_dataset("procedural", num_classes=3, size=12, per_class=24)
    s = PixelSet.from_real(data.train, 2, torch.Generator().manual_seed(0))
    p = get_protocol("dc", epochs=3, n_models=2, model="convnet_w32")
    one, two = evaluate(s, data, p), evaluate(s, data, p, batch_models=2)
    assert two.accuracies == pytest.approx(one.accuracies, abs=1 / len(data.test) + 1e-9)


def test_auto_uses_the_kernel_only_where_it_agrees_with_eager(built, monkeypatch, capsys):
    monkeypatch.delenv("DATADISTILL_KERNELS", raising=False)
    assert kernels.check() is None and kernels.use_fused()  # built, and it agrees on this machine
    monkeypatch.setattr(kernels, "check", lambda: "differ from the eager ops by 0.5 (relative) on this machine")
    kernels._say_once.cache_clear()
    assert not kernels.use_fused() and not kernels.use_fused()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["datadistill: the fused CPU kernels differ from the eager ops by 0.5 (relative) on this machine; "
                   "using the eager ops"]  # once
    assert not any(isinstance(m, FusedInstanceNorm) for m in create_model("convnet_w32", 1, 4, (12, 12)).modules())


def test_without_a_compiler_the_eager_ops_run_and_say_so(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "broken.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(kernels, "SOURCE", bad)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    kernels.extension.cache_clear()
    try:
        x, w, b = torch.randn(2, 3, 4, 4), torch.ones(3), torch.zeros(3)
        assert torch.equal(in_relu_pool(x, w, b), eager(x, w, b))
        in_relu_pool(x, w, b)
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("datadistill: the fused CPU kernels could not be built (")
        assert err[0].endswith("; using the eager ops")
    finally:
        kernels.extension.cache_clear()


def test_every_checkout_shares_one_build_of_the_same_source(tmp_path, monkeypatch):
    """Two checkouts (the same source at two paths) build in one folder from one path, so a fresh clone
    reuses the cached build; a changed source builds apart."""
    from torch.utils import cpp_extension

    calls = []
    monkeypatch.setattr(cpp_extension, "load", lambda **k: calls.append(k) or object())
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = kernels.SOURCE.read_bytes()
    for checkout, text in (("a", code), ("b", code), ("c", code + b"\n// changed\n")):
        src = tmp_path / checkout / "in_relu_pool.cpp"
        src.parent.mkdir()
        src.write_bytes(text)
        monkeypatch.setattr(kernels, "SOURCE", src)
        kernels.extension.cache_clear()
        try:
            assert kernels.extension() is not None
        finally:
            kernels.extension.cache_clear()
    (a, b, c) = [(k["build_directory"], k["sources"]) for k in calls]
    assert a == b and a != c
    assert Path(a[1][0]).read_bytes() == code and Path(c[1][0]).read_bytes() == code + b"\n// changed\n"
    assert Path(a[1][0]).parent == Path(a[0]) and not list(Path(a[0]).glob(".*.tmp"))

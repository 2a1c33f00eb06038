"""Chunked forward/backward gives the gradient of the whole batch (functional.chunked)."""

import torch
from torch.func import functional_call

from datadistill.functional import chunked_backward, mean_ce_grads, pick_chunk
from datadistill.models import create_model


def _net_and_batch():
    net = create_model("convnet_w32", 1, 3, (12, 12), seed=0).double()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 1, 12, 12, generator=g, dtype=torch.float64)  # 37: the last chunk is short
    y = torch.randint(0, 3, (37,), generator=g)
    return net, x, y


def test_chunked_gradients_equal_the_whole_batch_in_float64():
    net, x, y = _net_and_batch()
    params = {k: v.detach().requires_grad_() for k, v in net.named_parameters()}

    def logits(xb):
        return functional_call(net, params, (xb,))

    whole = mean_ce_grads(logits, list(params.values()), x, y, None)
    for chunk in (1, 5, 16, 36):
        parts = mean_ce_grads(logits, list(params.values()), x, y, chunk)
        assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(whole, parts))


def test_chunked_gradients_keep_the_graph_to_the_inputs():
    net, x, y = _net_and_batch()
    params = {k: v.detach().requires_grad_() for k, v in net.named_parameters()}
    x.requires_grad_()

    def second_order(chunk):
        grads = mean_ce_grads(lambda xb: functional_call(net, params, (xb,)), list(params.values()), x, y, chunk,
                              create_graph=True)
        return torch.autograd.grad(sum((g**2).sum() for g in grads), x)[0]

    assert torch.allclose(second_order(None), second_order(8), rtol=1e-9, atol=1e-12)


def test_chunked_backward_accumulates_the_batch_gradient():
    net, x, y = _net_and_batch()
    loss = chunked_backward(net, x, y, None)
    whole = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    assert torch.allclose(chunked_backward(net, x, y, 10), loss, rtol=1e-12)
    assert all(torch.allclose(p.grad, w, rtol=1e-10, atol=1e-12) for p, w in zip(net.parameters(), whole))


def test_chunks_only_on_the_cpu_and_for_independent_samples():
    assert pick_chunk("cpu", independent=True) is not None
    assert pick_chunk("cpu", independent=False) is None  # BatchNorm in training mode spans the batch
    assert pick_chunk(torch.device("cuda"), independent=True) is None

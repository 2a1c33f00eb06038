import pytest
import torch
import torch.nn.functional as F

from datadistill.functional.unroll import evaluate_params, params_of, schedule, sgd_step, unrolled_sgd
from datadistill.models import create_model


def _setup(model="lenet"):
    net = create_model(model, 1, 3, (12, 12), seed=0)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(3, 1, 12, 12, generator=g, requires_grad=True) for _ in range(2)]
    ys = [torch.arange(3), torch.tensor([2, 0, 1])]  # labels differ per step (a checkpoint must not mix them up)
    raw_lr = torch.full((4,), -4.0, requires_grad=True)
    xr, yr = torch.randn(8, 1, 12, 12, generator=g), torch.randint(0, 3, (8,), generator=g)
    return net, xs, ys, raw_lr, xr, yr


def test_one_step_matches_an_optimizer_step():
    net, xs, ys, _, _, _ = _setup()
    p0 = params_of(net)
    new = sgd_step(net, p0, {}, xs[0].detach(), ys[0], torch.tensor(0.1), create_graph=False)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    F.cross_entropy(net(xs[0].detach()), ys[0]).backward()
    opt.step()
    for name, p in net.named_parameters():
        assert torch.allclose(new[name], p, atol=1e-6), name


@pytest.mark.parametrize("model", ["lenet", "convnet_w32"])
def test_checkpointing_gives_the_same_gradients(model):
    grads = []
    for ckpt in (False, True):
        net, xs, ys, raw_lr, xr, yr = _setup(model)
        steps = schedule(xs, ys, raw_lr.exp(), epochs=2)
        final = unrolled_sgd(net, params_of(net, requires_grad=False), steps, grad_checkpoint=ckpt)
        loss = evaluate_params(net, final, xr, yr)
        gx0, gx1, glr = torch.autograd.grad(loss, [xs[0], xs[1], raw_lr])
        grads.append((float(loss.detach()), gx0, gx1, glr))
    (l0, *a), (l1, *b) = grads
    assert abs(l0 - l1) < 1e-6
    for u, v in zip(a, b):
        assert u.abs().sum() > 0 and torch.allclose(u, v, atol=1e-6, rtol=1e-4)


def test_gradients_match_finite_differences_for_the_step_size():
    net, xs, ys, raw_lr, xr, yr = _setup()
    net = net.double()
    xs = [x.detach().double() for x in xs]
    xr = xr.double()

    def outer(lr0: torch.Tensor) -> torch.Tensor:
        lrs = torch.stack([lr0, torch.tensor(0.02, dtype=torch.float64)])
        final = unrolled_sgd(net, params_of(net, requires_grad=False), schedule(xs, ys, lrs, epochs=1))
        return evaluate_params(net, final, xr, yr)

    lr0 = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(outer(lr0), [lr0])
    eps = 1e-5
    fd = (outer(torch.tensor(0.05 + eps, dtype=torch.float64)) - outer(torch.tensor(0.05 - eps, dtype=torch.float64))) / (2 * eps)
    assert torch.allclose(g, fd, rtol=1e-4, atol=1e-8)


def test_schedule_checks_the_number_of_step_sizes():
    with pytest.raises(ValueError, match="need 6 step sizes"):
        schedule([torch.zeros(1)] * 3, [torch.zeros(1)] * 3, torch.zeros(5), epochs=2)


def test_the_old_checkpoint_keyword_is_gone():

    lin = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0, 1])
    steps = [(x, y, torch.tensor(0.1))]
    new = unrolled_sgd(lin, params_of(lin), steps, grad_checkpoint=True)
    with pytest.raises(TypeError, match="checkpoint"):  # the old keyword is gone (CHANGELOG)
        unrolled_sgd(lin, params_of(lin), steps, checkpoint=True)
    assert all(torch.isfinite(v).all() for v in new.values())

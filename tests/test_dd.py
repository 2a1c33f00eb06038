"""Dataset Distillation pieces (issue 3, in progress): the step-grouped set, replayed evaluation,
the method's guards and one outer step."""

import pytest
import torch

from datadistill.config import ConfigError
from datadistill.evaluation import evaluate, get_protocol
from datadistill.methods import Context
from datadistill.methods.dd import DD, DDConfig, make_set, networks_from_meta
from datadistill.models import create_model
from datadistill.seeding import make_generator
from datadistill.synset import StepSet, load_synset, save_synset
from datadistill.train import replay_steps


def test_stepset_layout_schedule_and_positive_step_sizes(toy):
    s = StepSet.from_real(toy.train, 2, 3, 2, torch.Generator().manual_seed(0), lrs=0.05)
    assert s.ipc == 6 and len(s) == 18 and s.per_step == 2
    x, y = s.step_images(1)
    assert x.shape == (6, 1, 12, 12) and y.tolist() == [0, 0, 1, 1, 2, 2]
    sched = s.schedule()
    assert len(sched) == 6 and torch.allclose(torch.stack([lr for _, _, lr in sched]), torch.full((6,), 0.05))
    with torch.no_grad():
        s.raw_lrs.fill_(-50.0)
    assert bool((s.lrs() > 0).all())  # softplus keeps step sizes positive
    with pytest.raises(ValueError, match="positive step sizes"):
        StepSet(torch.zeros(6, 1, 2, 2), 3, 2, 1, lrs=-1.0)


def test_stepset_round_trips_through_the_file(toy, tmp_path):
    s = StepSet.from_noise(toy.spec, 1, 2, 3, torch.Generator().manual_seed(0), lrs=0.03)
    with torch.no_grad():
        s.raw_lrs[2] += 1.0
    f = load_synset(save_synset(tmp_path / "dd.safetensors", s, toy.spec, method="dd"))
    assert isinstance(f.synset, StepSet) and (f.synset.steps, f.synset.epochs) == (2, 3)
    assert torch.equal(f.synset.images, s.images.detach()) and torch.allclose(f.synset.lrs(), s.lrs())


def test_replay_is_plain_gradient_descent_along_the_schedule(toy):
    s = StepSet.from_real(toy.train, 1, 2, 1, torch.Generator().manual_seed(0), lrs=0.1)
    a = create_model("lenet", 1, 3, (12, 12), seed=0)
    b = create_model("lenet", 1, 3, (12, 12), seed=0)
    replay_steps(a, [(x.detach(), y, lr.detach()) for x, y, lr in s.schedule()])
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    for x, y, _ in s.schedule():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(b(x.detach()), y).backward()
        opt.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), n


def _dd(toy, **kw):
    cfg = DDConfig(batch_real=32, **kw)
    s = make_set(cfg, toy, 2, "noise", make_generator(0, "init"))
    return s, DD(cfg, Context(toy, s, torch.device("cpu"), make_generator(0, "m"), 0, 2, iterations=10))


def test_dd_refuses_batchnorm_and_bad_step_counts(toy):
    with pytest.raises(ConfigError, match="BatchNorm"):
        _dd(toy, model="convnet_bn")
    with pytest.raises(ConfigError, match="multiple of steps"):
        make_set(DDConfig(steps=3), toy, 2, "noise", make_generator(0, "x"))


@pytest.mark.parametrize("net_init", ["fixed", "random"])
def test_dd_step_updates_images_and_step_sizes(toy, net_init):
    s, dd = _dd(toy, net_init=net_init, grad_checkpoint=(net_init == "random"))
    x0, lr0 = s.images.detach().clone(), s.lrs().detach().clone()
    m = dd.step(0)
    assert m["loss"] > 0 and not torch.equal(x0, s.images.detach()) and not torch.equal(lr0, s.lrs().detach())


def test_fixed_init_evaluation_replays_on_the_distillation_network(toy):
    s, dd = _dd(toy, net_init="fixed")
    init = networks_from_meta(dd.file_meta(), toy.spec)
    net = init(0, "lenet")
    for (n, p) in net.named_parameters():
        assert torch.equal(p.detach(), dd.theta0[n]), n
    r = evaluate(s, toy, get_protocol("dd", n_models=2), networks=init)
    assert len(r.accuracies) == 1  # one fixed network: a second replay would only repeat the number
    assert isinstance(init(0, "LeNet"), torch.nn.Module)  # the paper's alias names the same model
    with pytest.raises(ConfigError, match="fixed initialization"):
        init(0, "convnet")


def test_show_draws_one_row_per_step(toy, tmp_path):
    from datadistill.viz import save_grid

    s = StepSet.from_noise(toy.spec, 1, 3, 2, torch.Generator().manual_seed(0))
    out = save_grid(s, toy.spec, tmp_path / "steps.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""An in-memory stand-in for an `ExpertBuffer` (what MTT's and DATM's tests match against)."""

import torch
import torch.nn.functional as F

from datadistill.models import create_model
from datadistill.seeding import make_generator


class Trajectories:
    """``params(e, t)``: expert ``e``'s parameters after ``t`` epochs of plain SGD (batches of ``batch``)."""

    def __init__(self, data, model: str = "mlp", n: int = 2, epochs: int = 4, lr: float = 0.05, batch: int = 16):
        s = data.spec
        self.epochs, self.traj = epochs, []
        for e in range(n):
            net = create_model(model, s.channels, s.num_classes, s.image_size, seed=100 + e)
            g = make_generator(e, "expert")
            states = [{k: v.detach().clone() for k, v in net.named_parameters()}]
            opt = torch.optim.SGD(net.parameters(), lr=lr)
            x, y = data.train.images, data.train.labels
            for _ in range(epochs):
                for idx in torch.randperm(len(y), generator=g).split(batch):
                    opt.zero_grad()
                    F.cross_entropy(net(x[idx]), y[idx]).backward()
                    opt.step()
                states.append({k: v.detach().clone() for k, v in net.named_parameters()})
            self.traj.append(states)

    def __len__(self) -> int:
        return len(self.traj)

    def params(self, expert: int, epoch: int, device="cpu"):
        return {k: v.to(device) for k, v in self.traj[expert][epoch].items()}

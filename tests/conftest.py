import pytest
import torch

from datadistill.data import load_dataset


@pytest.fixture(autouse=True)
def _threads():
    # tests are many small ops: two threads on two cores, never more
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def toy():
    return load_dataset("procedural", num_classes=3, channels=1, size=12, per_class=24, seed=0)


@pytest.fixture(scope="session")
def tiny_experts(tmp_path_factory):
    """Two 2-epoch expert trajectories of convnet_w32 on the engine tests' procedural set."""
    from datadistill.experts import ExpertConfig, train_experts

    d = tmp_path_factory.mktemp("experts")
    opts = {"num_classes": 3, "size": 12, "per_class": 24}
    train_experts(ExpertConfig(dataset="procedural", model="convnet_w32", n_experts=2, epochs=2, augment="none",
                               batch_size=16, dataset_options=opts), d)
    return str(d)

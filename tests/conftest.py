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


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory):
    """An (untrained) convnet_w32 teacher file for the engine tests' procedural set: RDED's input."""
    from datadistill.data import load_dataset
    from datadistill.models import create_model
    from datadistill.teachers import Teacher, save_teacher

    spec = load_dataset("procedural", num_classes=3, size=12, per_class=24).spec
    net = create_model("convnet_w32", spec.channels, spec.num_classes, spec.image_size, seed=0)
    path = tmp_path_factory.mktemp("teacher") / "procedural.safetensors"
    return str(save_teacher(path, Teacher(net.eval(), "convnet_w32", spec, {"test_accuracy": 1 / 3})))


# Modules whose assertions depend on trained networks or long floating-point accumulations. They run
# twice in `make test`: on this CPU's path and on another (tests/alt_capability.py).
NUMERIC_MODULES = {
    "test_augment.py", "test_coreset.py", "test_dc.py", "test_dd.py", "test_dd_settings.py", "test_dm.py",
    "test_engine_cli.py", "test_evaluation.py", "test_experts.py", "test_factorized.py", "test_haba.py",
    "test_linear_case.py", "test_mtt.py", "test_unroll.py", "test_zca.py", "test_chunked.py",
    "test_soft_labels.py", "test_rded.py", "test_datm.py", "test_frepo.py", "test_apps.py", "test_batched_eval.py",
    "test_kernels.py",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in NUMERIC_MODULES:
            item.add_marker(pytest.mark.numeric)


def pytest_report_header(config):
    return f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}"


def pytest_configure(config):
    # registered here, not in pyproject.toml: that file keys the cached environment (Makefile)
    config.addinivalue_line("markers", "numeric: assertions on trained or accumulated floating-point results; "
                                       "`make test` reruns them on a second CPU path (tests/alt_capability.py)")

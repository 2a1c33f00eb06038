"""datadistill: dataset distillation methods, a faithful evaluation protocol and benchmarks.

Public API::

    from datadistill import load_dataset, create_model, distill, evaluate, load_synset, save_synset
"""

from .version import __version__  # noqa: E402
from .data import DatasetSpec, RealData, load_dataset  # noqa: E402
from .evaluation import EvalProtocol, evaluate, get_protocol  # noqa: E402
from .models import create_model  # noqa: E402
from .synset import PixelSet, load_synset, save_synset  # noqa: E402
from .evaluation import score_set  # noqa: E402
from .teachers import load_teacher, train_teacher  # noqa: E402


def distill(out, **config):
    """Run a distillation (see `datadistill.config.RunConfig` for keys) into directory ``out``.

    Example: ``distill("runs/dm", dataset="digits", method="dm", ipc=1, iterations=50)``.
    """
    from .config import RunConfig, from_dict
    from .engine import run

    opts = {k: config.pop(k) for k in ("resume", "force", "progress") if k in config}
    return run(from_dict(RunConfig, config), out, **opts)


__all__ = ["DatasetSpec", "RealData", "EvalProtocol", "PixelSet", "create_model", "distill", "evaluate",
           "get_protocol", "load_dataset", "load_synset", "load_teacher", "save_synset", "score_set", "train_teacher",
           "__version__"]

"""Dataset Distillation (Wang et al. 2018) as a package: `method` (config, set, the loop),
`baselines`, `pools` (pretrained networks), `networks` (evaluation's starting networks) and
`report` (before/after metrics). Importing it registers ``dd`` with its hooks; nothing outside
this package imports it: the engine and the CLI reach it through `METHODS` and the hooks."""

from ..base import MethodEntry, MethodFlag, config_model, register_method
from .baselines import IMAGE_INITS, baseline_images, kmeans
from .method import DD, NET_INITS, DDConfig, check_dd, make_set
from .networks import Fixed, fixed_init, networks_from_meta
from .pools import Pool, PoolConfig, PoolError, PoolNets, pretrain, pretrain_pool
from .report import before_after, format_before_after, format_metrics, from_file

register_method(MethodEntry(
    name="dd", config=DDConfig, build=DD, iterations=2000, image_init="noise", eval_preset="dd", synset=make_set,
    image_inits=IMAGE_INITS, check=check_dd, from_file=from_file, format_metrics=format_metrics, pretrain=pretrain,
    network=config_model,
    flags=(MethodFlag("--net-init", "net_init", "how the networks start: " + ", ".join(NET_INITS)),
           MethodFlag("--source-dataset", "source_dataset", "pretrained settings: the dataset the starting "
                      "networks are trained on (another than --dataset: domain adaptation)",
                      implies={"net_init": "pretrained_random"})),
    pretrain_flags=(MethodFlag("--nets", "nets", "networks in the pool (default 30)", type=int),
                    MethodFlag("--held-out", "held_out", "the last N networks are kept for evaluation only (default 20)",
                               type=int)),
    description="Dataset Distillation (Wang et al. 2018): unrolled GD steps with learned step sizes",
))

__all__ = ["DD", "DDConfig", "Fixed", "IMAGE_INITS", "NET_INITS", "Pool", "PoolConfig", "PoolError", "PoolNets",
           "baseline_images", "before_after", "fixed_init", "format_before_after",
           "kmeans", "make_set", "networks_from_meta", "pretrain", "pretrain_pool"]

"""Pure math shared by the methods: distances, losses, unrolled updates on parameter dicts."""

from .chunked import chunked_backward, mean_ce_grads, pick_chunk
from .contrastive import supervised_contrastive_loss
from .distances import class_mean_distance
from .gradmatch import METRICS, gradient_distance
from .krr import feature_krr, krr_predict, trace_ridge
from .trajectory import squared_distance, trajectory_loss

__all__ = ["METRICS", "chunked_backward", "class_mean_distance", "feature_krr", "gradient_distance", "krr_predict", "mean_ce_grads", "pick_chunk", "squared_distance", "supervised_contrastive_loss", "trace_ridge",
           "trajectory_loss"]

"""Pure math shared by the methods: distances, losses, unrolled updates on parameter dicts."""

from .distances import class_mean_distance
from .gradmatch import METRICS, gradient_distance

__all__ = ["METRICS", "class_mean_distance", "gradient_distance"]

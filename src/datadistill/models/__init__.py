"""Model zoo: importing this package registers every model family."""

from . import alexnet, convnet, lenet, mlp, resnet, vgg  # noqa: F401  (registers)
from .registry import MODELS, WEIGHT_INITS, create_model, has_batchnorm, register_model, register_preset

__all__ = ["MODELS", "WEIGHT_INITS", "create_model", "has_batchnorm", "register_model", "register_preset"]

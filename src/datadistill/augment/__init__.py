"""Differentiable augmentations for dataset distillation."""

from .classic import CLASSIC_OPS, ClassicAugment, dc_strategy
from .dsa import (
    DSA_OP_REGISTRY,
    MODES,
    OP_CHOICES,
    DSAConfig,
    DSAOp,
    DSAParams,
    parse_strategy,
    register_op,
    sample_params,
    siamese_params_for_classes,
)
from .dsa_ops import DSA_OPS, apply
from .training import dsa_augment

__all__ = [
    "CLASSIC_OPS",
    "ClassicAugment",
    "dc_strategy",
    "DSA_OPS",
    "DSA_OP_REGISTRY",
    "MODES",
    "OP_CHOICES",
    "DSAConfig",
    "DSAOp",
    "DSAParams",
    "apply",
    "parse_strategy",
    "register_op",
    "sample_params",
    "siamese_params_for_classes",
    "dsa_augment",
]

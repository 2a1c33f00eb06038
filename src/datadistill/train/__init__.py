"""The standard training loop."""

from .loop import accuracy, real_batches, replay_steps, train_classifier
from .optim import lr_at
from .sam import SharpnessAware, sharpness_aware_grads

__all__ = ["SharpnessAware", "accuracy", "lr_at", "real_batches", "replay_steps", "sharpness_aware_grads",
           "train_classifier"]

"""Expert trajectories for trajectory matching.

Cazenavette, Wang, Torralba, Efros, Zhu, "Dataset Distillation by Matching Training Trajectories",
CVPR 2022, Section 3 ("expert trajectories"): networks trained on the real data, their parameters
theta*_t saved after every epoch t, from which MTT samples a start epoch t and the target
theta*_{t+M}. `train_experts` trains them (resumable, parallel by expert index), `ExpertBuffer`
reads them one epoch at a time.
"""

from .buffer import ExpertBuffer
from .config import ExpertConfig, ExpertError, default_experts_dir
from .train import train_experts

__all__ = ["ExpertBuffer", "ExpertConfig", "ExpertError", "default_experts_dir", "train_experts"]

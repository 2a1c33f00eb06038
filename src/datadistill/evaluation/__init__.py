"""Evaluation: protocols, the evaluator, label plans, DD-Ranking's scores and cross-architecture tables."""

from .evaluator import EvalReport, RealSet, evaluate, evaluate_full, evaluate_models, format_table
from .protocol import PROTOCOLS, Augmentation, EvalProtocol, Labels, Optimizer, Schedule, get_protocol
from .scores import Scores, augmentation_robust_score, label_robust_score, random_subset, score_set

__all__ = ["Augmentation", "EvalProtocol", "Labels", "Optimizer", "Schedule", "EvalReport", "PROTOCOLS", "RealSet",
           "Scores", "augmentation_robust_score", "evaluate",
           "evaluate_full", "evaluate_models", "format_table", "get_protocol", "label_robust_score", "random_subset",
           "score_set"]

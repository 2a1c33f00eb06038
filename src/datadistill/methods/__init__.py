"""Distillation methods: importing this package registers each one."""

from . import coreset, datm, dc, dd, dm, frepo, haba, mtt, rded  # noqa: F401  (register)
from .base import (METHODS, Context, DivergenceError, FileEvaluation, Method, MethodEntry, MethodFlag, MethodHooks,
                   OneShot,
                   Selected, default_from_file, file_description, file_evaluation, format_metrics,
                   register_method)

__all__ = ["METHODS", "Context", "DivergenceError", "FileEvaluation", "Method", "MethodEntry", "MethodFlag", "MethodHooks",
           "OneShot", "Selected", "default_from_file", "file_description", "file_evaluation", "format_metrics", "register_method"]

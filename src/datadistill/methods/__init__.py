"""Distillation methods: importing this package registers each one."""

from . import coreset, dc, dd, dm, haba, mtt  # noqa: F401  (register)
from .base import METHODS, Context, DivergenceError, Method, MethodEntry, MethodHooks, register_method

__all__ = ["METHODS", "Context", "DivergenceError", "Method", "MethodEntry", "register_method"]

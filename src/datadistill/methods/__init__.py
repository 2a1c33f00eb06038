"""Distillation methods: importing this package registers each one."""

from . import coreset, dc, dd, dm  # noqa: F401  (register)
from .base import METHODS, Context, Method, MethodEntry, register_method

__all__ = ["METHODS", "Context", "Method", "MethodEntry", "register_method"]

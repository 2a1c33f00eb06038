"""`UserError`: the base of every error about what a user asked for (a bad flag, a missing dataset, a
run folder in use). The command line prints such an error as one line and exits 2; any other exception
is a bug and keeps its traceback (exit 1). It imports nothing, so every layer can use it."""

from __future__ import annotations


class UserError(Exception):
    """An error in the user's request or input, worth one clear line, never a traceback. Each concrete
    error also derives from the builtin it refines (`ConfigError` is a `ValueError`, ...)."""

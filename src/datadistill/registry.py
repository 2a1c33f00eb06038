"""One generic name -> object registry used for datasets, models, methods and augmentations.

Registration is by decorator; paper names live on as aliases. A duplicate name is an error and an
unknown name is an error that lists the close matches and every valid choice.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """Raised for a name that is not registered; the message lists the valid choices."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class Registry(Generic[T]):
    """Case-insensitive registry of named entries with aliases.

    ``-`` and ``_`` are interchangeable in look-ups (``fashion-mnist`` finds ``fashion_mnist``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._names: dict[str, str] = {}  # normalized name or alias -> canonical name
        self._aliases: dict[str, list[str]] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("convnet", "ConvNet")``."""

        def deco(obj: T) -> T:
            self.add(name, obj, aliases=aliases)
            return obj

        return deco

    def add(self, name: str, obj: T, aliases: tuple[str, ...] | list[str] = ()) -> None:
        for key in (name, *aliases):
            k = _norm(key)
            if k in self._names:
                raise ValueError(
                    f"duplicate {self.kind} name {key!r}: already registered as {self._names[k]!r}"
                )
        self._entries[name] = obj
        self._aliases[name] = list(aliases)
        for key in (name, *aliases):
            self._names[_norm(key)] = name

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases (`UnknownNameError` for anything else,
        a value that is not a name included: a config's ``[]`` or ``3``)."""
        if not isinstance(name, str):
            raise UnknownNameError(f"{self.kind} must be a name, got {name!r}; valid {self.kind} names: "
                                   f"{', '.join(sorted(self._entries))}")
        k = _norm(name)
        if k not in self._names:
            choices = sorted(self._entries)
            close = difflib.get_close_matches(k, list(self._names), n=3, cutoff=0.5)
            hint = ""
            if close:
                hint = " Did you mean " + ", ".join(repr(self._names[c]) for c in close) + "?"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: {', '.join(choices)}"
            )
        return self._names[k]

    def get(self, name: str) -> T:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _norm(name) in self._names

    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted(self._entries)

    def aliases(self, name: str) -> list[str]:
        return list(self._aliases[self.canonical(name)])

    def all_names(self) -> list[str]:
        """Canonical names and aliases."""
        out: list[str] = []
        for n in self.names():
            out.append(n)
            out.extend(self._aliases[n])
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

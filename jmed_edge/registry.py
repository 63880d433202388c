"""Name -> implementation tables with lazy imports and "did you mean" errors."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from jmed_edge.errors import ConfigError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """A registered object named by ``module:attribute``, imported on first use."""

    name: str
    target: str
    help: str = ""


class Registry(Generic[T]):
    """A small registry: ``what`` names the kind of thing in error messages ("runtime", ...)."""

    def __init__(self, what: str, error: type[Exception] = ConfigError) -> None:
        self.what = what
        self.error = error
        self._entries: dict[str, Entry] = {}
        self._loaded: dict[str, T] = {}

    def add(self, name: str, target: str, help: str = "") -> None:
        self._entries[name] = Entry(name, target, help)

    def register(self, name: str, help: str = ""):
        """Decorator form for objects defined where the registry is imported."""

        def wrap(obj: T) -> T:
            self._entries[name] = Entry(name, f"{obj.__module__}:{obj.__qualname__}", help)
            self._loaded[name] = obj
            return obj

        return wrap

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> Iterator[Entry]:
        yield from (self._entries[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            known = ", ".join(self.names())
            raise self.error(
                f'unknown {self.what} "{name}"{did_you_mean(name, self._entries)}; known: {known}'
            )
        if name not in self._loaded:
            module, _, attr = self._entries[name].target.partition(":")
            obj = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._loaded[name] = obj  # type: ignore[assignment]
        return self._loaded[name]

"""A tiny name -> object registry that refuses duplicate names (torchvision's model registry idea).

Integration strategies and fusion operators are looked up by the names that appear in configs,
so a typo or a second registration under the same name must fail loudly, never shadow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from seqablate.config import ConfigError
from seqablate.sequences import suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is used in error messages, e.g. ``'model.fusion'``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("input")``. Raises ``ValueError`` if ``name`` is taken."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(
                    f"{self.kind}: {name!r} is already registered "
                    f"(by {self._entries[name]!r}); pick another name"
                )
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The entry called ``name``; :class:`ConfigError` naming the valid choices otherwise."""
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(
                f"{self.kind}: unknown value {name!r}{suggest(str(name), self._entries)}; "
                f"valid choices: {self.names()}"
            ) from None

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

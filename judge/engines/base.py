"""The types every engine shares: the batch function and the :class:`Engine` interface.

They live apart from :mod:`judge.engines` (the table of engines, which imports
:mod:`judge.engines.ray` when that engine is chosen) so an engine's module can name them without
importing the package that picks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

BatchFn = Callable[[list[Any]], Sequence[Any]]
"""Takes a batch of items, returns one result per item, in the same order."""


class Engine(Protocol):
    """Runs a batch function over items and yields one result per item, in input order."""

    name: str

    def start(self) -> None:
        """Get ready to run (connect to a cluster); called once before the first :meth:`map`, from the main thread."""
        ...

    def map(self, factory: Callable[[], BatchFn], items: Iterable[Any], *, batch_size: int) -> Iterator[Any]:
        """Build the batch function with ``factory()`` (once per worker) and stream its results in input order."""
        ...


__all__ = ["BatchFn", "Engine"]

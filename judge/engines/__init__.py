"""Engines: where batches of local-model work run. One interface, one table of implementations.

An engine maps a *batch function* over items and yields the results in input order. The batch
function is built by a picklable, zero-argument ``factory`` once per worker (so a model loads once
per worker, not once per batch) and takes a list of items to a list of results of the same length.

* ``local`` -- in this process, batch after batch (the default; today's behaviour).
* ``ray`` -- Ray Data ``map_batches`` over an actor pool, one model per actor, on a local Ray
  instance or a cluster (``--address``). Needs ``pip install 'judge[scale]'``; ``ray`` is imported
  only when this engine runs.

Code that runs local models asks :func:`current` for the engine; ``judge eval`` and the baseline
commands choose it with :func:`using` / :func:`get_engine`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Literal, TypeVar, get_args

from judge.engines.base import BatchFn, Engine
from judge.errors import ConfigError

T = TypeVar("T")
R = TypeVar("R")


class LocalEngine:
    """In this process: one batch function, called on consecutive batches of ``batch_size`` items."""

    name = "local"

    def start(self) -> None:
        """Nothing to start: batches run in this process."""

    def map(self, factory: Callable[[], BatchFn], items: Iterable[Any], *, batch_size: int) -> Iterator[Any]:
        """Yield ``fn(batch)`` results batch by batch, so a caller can stream them to disk."""
        fn: BatchFn | None = None
        batch: list[Any] = []
        for item in items:
            batch.append(item)
            if len(batch) >= batch_size:
                fn = fn or factory()
                yield from _checked(fn, batch)
                batch = []
        if batch:
            fn = fn or factory()
            yield from _checked(fn, batch)


def _checked(fn: BatchFn, batch: list[Any]) -> Sequence[Any]:
    results = fn(batch)
    if len(results) != len(batch):
        raise RuntimeError(f"a batch function returned {len(results)} results for {len(batch)} items")
    return results


EngineName = Literal["local", "ray"]
ENGINES: tuple[EngineName, ...] = get_args(EngineName)
"""Every engine (CLI choices and the suite's ``engine:`` derive from it)."""


def get_engine(name: str = "local", address: str | None = None, *, workers: int | None = None) -> Engine:
    """The engine called ``name`` (``local`` or ``ray``); ``address`` is a Ray cluster (ray engine only)."""
    if name == "local":
        if address is not None:
            raise ConfigError("--address is for --engine ray; the local engine runs in this process")
        return LocalEngine()
    if name == "ray":
        from judge.engines.ray import RayEngine

        return RayEngine(address, workers=workers)
    raise ConfigError(f"unknown engine '{name}' (engines: {', '.join(ENGINES)})")


_CURRENT: contextvars.ContextVar[Engine | None] = contextvars.ContextVar("judge_engine", default=None)


def current() -> Engine:
    """The engine chosen by the innermost :func:`using` block, else the local one."""
    return _CURRENT.get() or LocalEngine()


@contextlib.contextmanager
def using(engine: Engine) -> Iterator[Engine]:
    """Run the local-model work inside the block on ``engine``."""
    token = _CURRENT.set(engine)
    try:
        yield engine
    finally:
        _CURRENT.reset(token)


__all__ = ["ENGINES", "BatchFn", "EngineName", "Engine", "LocalEngine", "current", "get_engine", "using"]

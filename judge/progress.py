"""Progress bars for long commands: one helper, :func:`progress_bar`, that every stage calls.

A bar goes to stderr (stdout stays for results), shows items/s and the ETA, and is shown only where
someone watches: by default when stderr is a terminal; ``--progress/--no-progress``
(:func:`judge.cli_options.progress_option`) force either. When it is off nothing is written and tqdm is not
imported::

    with progress_bar(len(items), "perplexity base", enabled) as bar:
        for batch in batches:
            ...
            bar.update(len(batch))
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

#: where :func:`items_done` reports: set by :func:`reporting_to` around one long call
_SINK: ContextVar[Callable[[int], None] | None] = ContextVar("judge_progress_sink", default=None)


def progress_enabled(flag: bool | None) -> bool:
    """``--progress``/``--no-progress`` as given, else whether stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


class _Silent:
    """The bar of a run nobody watches: every call does nothing."""

    total: int | None = None

    def update(self, n: int = 1) -> None:
        pass

    def set_description(self, desc: str) -> None:
        pass

    def refresh(self) -> None:
        pass


@contextmanager
def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "item") -> Iterator[Any]:
    """A tqdm bar over ``total`` units named ``desc`` (``update(n)``, ``set_description``), closed on exit;
    a silent stand-in when ``enabled`` is false."""
    if not enabled:
        yield _Silent()
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc or None, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def reporting_to(bar: Any, items: int = 0) -> Iterator[Callable[[], int]]:
    """Around one long call over ``items`` items (a metric over a system's items): the call's
    :func:`items_done` advance ``bar``, and when the call is done the bar moves by the items it did not report
    (a call that reports nothing moves the bar at its end). Yields how many items were reported so far."""
    reported = 0

    def sink(n: int) -> None:
        nonlocal reported
        reported += n
        bar.update(n)

    token = _SINK.set(sink)
    try:
        yield lambda: reported
    finally:
        _SINK.reset(token)
    bar.update(max(0, items - reported))


def items_done(n: int = 1) -> None:
    """A long computation's inner loop says ``n`` more items are done; nothing happens unless a bar listens."""
    sink = _SINK.get()
    if sink is not None and n > 0:
        sink(n)

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
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


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

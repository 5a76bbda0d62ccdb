"""``judge batches list|status|cancel``: the Batch API jobs that ``--batch`` runs submitted from a cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from judge.cli import EXIT_CODES
from judge.errors import ConfigError

cache_dir_option = click.option(
    "--cache-dir", type=click.Path(path_type=Path), default=None, help="Cache folder (default ~/.cache/judge)."
)
base_url_option = click.option(
    "--base-url", default=None, help="Server to ask (default: the one the batch was submitted to)."
)


def _store(cache_dir: Path | None) -> Any:
    from judge.batch import BatchStore
    from judge.cache import Cache

    return BatchStore(Cache.in_dir(cache_dir))


def _row(store: Any, batch_id: str) -> dict[str, Any]:
    row = store.get(batch_id)
    if row is None:
        raise ConfigError(f"no batch '{batch_id}' was submitted from this cache (see `judge batches list`)")
    return row


def _ask(row: dict[str, Any], base_url: str | None, what: str) -> dict[str, Any]:
    """Retrieve or cancel a batch on the server it was submitted to."""
    from judge.providers.registry import get_provider
    from judge.runner import run_sync

    provider: Any = get_provider(row["provider"], base_url=base_url or row.get("base_url"))

    async def go() -> dict[str, Any]:
        try:
            if what == "cancel":
                return await provider.batch_cancel(row["id"])
            return await provider.batch_retrieve(row["id"])
        finally:
            await provider.aclose()

    return run_sync(go())


@click.group(
    epilog="""\b
Examples:
  judge batches list
  judge batches status batch_abc123
  judge batches cancel batch_abc123

"""
    + EXIT_CODES
)
def batches() -> None:
    """List, inspect and cancel the Batch API jobs that `judge score --batch` submitted.

    Batches are recorded in the cache (next to the cached calls) the moment they are created; a rerun of
    the same `--batch` command collects the ones still open instead of submitting again.
    """


@batches.command("list")
@cache_dir_option
def batches_list(cache_dir: Path | None) -> None:
    """The batches submitted from this cache, newest first (no request made)."""
    store = _store(cache_dir)
    rows = store.rows()
    if not rows:
        click.echo("no batches submitted from this cache")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        state = "collected" if r["reconciled"] else "open"
        click.echo(f"{r['id']}  {r['status']:<11} {state:<9} {r['lines']:>7} lines  {when}  {r['provider']}")


@batches.command("status")
@click.argument("batch_id")
@cache_dir_option
@base_url_option
def batches_status(batch_id: str, cache_dir: Path | None, base_url: str | None) -> None:
    """Ask the server for BATCH_ID's state and request counts."""
    store = _store(cache_dir)
    batch = _ask(_row(store, batch_id), base_url, "status")
    store.update(batch_id, batch["status"], done=bool(_row(store, batch_id)["reconciled"]))
    keep = ("id", "status", "request_counts", "output_file_id", "error_file_id", "errors", "created_at")
    click.echo(json.dumps({k: batch.get(k) for k in keep}, indent=2))


@batches.command("cancel")
@click.argument("batch_id")
@cache_dir_option
@base_url_option
def batches_cancel(batch_id: str, cache_dir: Path | None, base_url: str | None) -> None:
    """Cancel BATCH_ID; a rerun of its command then unscores what it had not run (a later rerun submits those)."""
    store = _store(cache_dir)
    row = _row(store, batch_id)
    batch = _ask(row, base_url, "cancel")
    store.update(batch_id, batch["status"], done=bool(row["reconciled"]))
    click.echo(f"{batch_id}: {batch['status']}")

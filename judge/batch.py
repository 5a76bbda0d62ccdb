"""Judge calls through a provider's Batch API: half the price, no rate limits, answers within 24 h.

The grader stays the one place that turns completions into verdicts. :class:`BatchAPI`, an executor of
:func:`judge.pipeline.run` (so ``--repeats`` and ``--both-orders`` work as in process), grades every item
in rounds with a caller (:class:`BatchCollector`) that answers from what the batches brought
back and records every other call: round 1 records the first call of every item not already final
in the cache, the next rounds the re-asks of unparseable answers and the lines worth resubmitting.
Each round's calls go out as JSONL input files (``custom_id`` = the call's cache key), split within
the API's limits, are polled to a terminal state and reconciled into the cache; then the grader
runs again. Verdicts, parse failures and unscored reasons are therefore exactly the synchronous
path's.

Resumable: every submitted batch and the keys it carries are recorded in the cache database
(tables ``batches`` and ``batch_calls``) the moment it is created, so a rerun of the same command
after a crash or Ctrl-C polls the batches already submitted instead of paying again.

How each way a batch can end is handled (never an item lost):

* ``completed``: output lines (any order) are cached; a line in the error file with HTTP 400/422 is
  cached as a rejection (like a synchronous 400); any other line error (429, 5xx) and a line in
  neither file are resubmitted in the next round, up to ``max_submissions`` times, then unscored
  with the reason.
* ``expired``: the partial output is cached, the lines not run are resubmitted (as above).
* ``failed`` (the input did not validate, or the provider refused it, e.g. an enqueued-token limit):
  its items are unscored with the batch's errors; a rerun submits them again.
* ``cancelled`` (``judge batches cancel``): what ran is cached; the rest are unscored as cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from judge.cache import Cache
from judge.calls import REJECTED_STATUSES, CachedCaller, CallResult
from judge.config import GenerateConfig, Message
from judge.errors import ConfigError, ProviderError
from judge.pricing import cost_usd
from judge.providers._base import ModelOutput, Provider
from judge.retry import RetryPolicy, with_retries
from judge.textfmt import redact_url

if TYPE_CHECKING:
    from judge.pipeline import GraderLike

TERMINAL = ("completed", "failed", "expired", "cancelled")
MAX_LINES = 50_000
"""Requests per batch input file (OpenAI's limit)."""
MAX_BYTES = 200 * 1024 * 1024
"""Bytes per batch input file (OpenAI's limit: 200 MB)."""


class BatchSettings(BaseModel):
    """How a batch run submits and waits."""

    poll_interval: float = Field(30.0, gt=0, description="Seconds between two looks at the open batches.")
    max_lines: int = Field(MAX_LINES, ge=1, le=MAX_LINES, description="Requests per input file.")
    max_bytes: int = Field(MAX_BYTES, ge=1024, le=MAX_BYTES, description="Bytes per input file.")
    max_submissions: int = Field(
        3, ge=1, description="Times one call is submitted (line errors, expiry, missing lines) before it is unscored."
    )
    timeout: float | None = Field(
        None, gt=0, description="Stop waiting after this many seconds (the batches keep running; rerun to collect)."
    )


class BatchLineError(ProviderError):
    """The Batch API gave no completion for one call: a line error, an expired, failed or cancelled batch,
    or a line missing from the output."""


class BatchWaitTimeout(ProviderError):
    """The batches did not end within ``BatchSettings.timeout``; they keep running on the server."""

    fatal = True


class _Pending(ProviderError):
    """A call the collector has no answer for yet: it goes into the next batch."""


@dataclass
class BatchReport:
    """What a batch run did, for the summary."""

    batches_submitted: int = 0
    batches_resumed: int = 0
    lines_submitted: int = 0
    lines_resubmitted: int = 0
    lines_unanswered: int = 0
    rounds: int = 0
    cost_usd: float | None = 0.0
    sync_cost_usd: float | None = 0.0
    batch_ids: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One summary line: batches, lines, what the run cost and what it would have cost synchronously."""
        cost = "unknown" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        sync = "unknown" if self.sync_cost_usd is None else f"${self.sync_cost_usd:.4f}"
        resumed = f" (+{self.batches_resumed} resumed)" if self.batches_resumed else ""
        return (
            f"batch API: {self.batches_submitted} batches{resumed}, {self.lines_submitted} lines "
            f"({self.lines_resubmitted} resubmitted, {self.lines_unanswered} unanswered) in {self.rounds} rounds; "
            f"cost {cost} (synchronously {sync})"
        )


class BatchStore:
    """The batches submitted from this cache, and the call keys each carries (tables in the cache DB)."""

    def __init__(self, cache: Cache) -> None:
        # its own connection to the same WAL database: the cache's migrations created the tables
        self._conn = sqlite3.connect(cache.path, isolation_level=None, timeout=30, check_same_thread=False)

    def record(self, batch: dict[str, Any], provider: Provider, keys: list[str]) -> None:
        # credentials in the URL stay out of the cache database: `judge batches` then needs --base-url again
        info = {"provider": provider.id, "base_url": redact_url(getattr(provider, "base_url", None))}
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.execute(
                "INSERT OR REPLACE INTO batches (id, status, provider, created, n_lines, info, done) "
                "VALUES (?, ?, ?, ?, ?, ?, 0)",
                (
                    batch["id"],
                    batch.get("status") or "validating",
                    provider.id,
                    time.time(),
                    len(keys),
                    json.dumps(info),
                ),
            )
            self._conn.executemany(
                "INSERT OR IGNORE INTO batch_calls (key, batch) VALUES (?, ?)", [(k, batch["id"]) for k in keys]
            )

    def open_for(self, keys: set[str], provider: Provider) -> dict[str, set[str]]:
        """Batches not yet reconciled, of this provider, that carry any of ``keys``: id -> all its keys."""
        rows = self._conn.execute("SELECT id FROM batches WHERE done = 0 AND provider = ?", (provider.id,)).fetchall()
        found: dict[str, set[str]] = {}
        for (bid,) in rows:
            carried = {k for (k,) in self._conn.execute("SELECT key FROM batch_calls WHERE batch = ?", (bid,))}
            if carried & keys:
                found[bid] = carried
        return found

    def keys(self, batch_id: str) -> set[str]:
        return {k for (k,) in self._conn.execute("SELECT key FROM batch_calls WHERE batch = ?", (batch_id,))}

    def update(self, batch_id: str, status: str, *, done: bool = False) -> None:
        self._conn.execute("UPDATE batches SET status = ?, done = ? WHERE id = ?", (status, int(done), batch_id))

    def rows(self) -> list[dict[str, Any]]:
        """Every recorded batch, newest first."""
        cur = self._conn.execute(
            "SELECT id, status, provider, created, n_lines, info, done FROM batches ORDER BY created DESC"
        )
        return [
            {
                "id": r[0],
                "status": r[1],
                "provider": r[2],
                "created": r[3],
                "lines": r[4],
                **json.loads(r[5]),
                "reconciled": bool(r[6]),
            }
            for r in cur.fetchall()
        ]

    def get(self, batch_id: str) -> dict[str, Any] | None:
        return next((r for r in self.rows() if r["id"] == batch_id), None)

    def close(self) -> None:
        self._conn.close()


class BatchCollector(CachedCaller):
    """The :class:`~judge.calls.Caller` of a batch run: serves what the cache holds and what batches brought
    back (this run, or an interrupted earlier one), and records every other call for the next batch."""

    def __init__(self, cache: Cache, *, keep_failed: bool = False) -> None:
        super().__init__(cache, keep_failed=keep_failed)
        self.answered: set[str] = set()  # keys whose completion came back in this run
        self.failed: dict[str, str] = {}  # key -> why the Batch API gave no completion
        self.pending: dict[str, bytes] = {}  # key -> its batch input line
        self.misses = 0
        self.used: dict[str, tuple[int, int]] = {}  # key -> (prompt, completion) tokens of a batch answer served

    def tokens(self) -> tuple[int, int]:
        """Prompt and completion tokens of the batch answers this run used (each line once)."""
        return sum(p for p, _ in self.used.values()), sum(c for _, c in self.used.values())

    async def send(
        self,
        provider: Provider,
        messages: list[Message],
        config: GenerateConfig,
        key: str,
        limiter: Any,
        key_parts: dict[str, Any],
    ) -> CallResult:
        if key in self.failed:
            exc = BatchLineError(self.failed[key])
            exc.attempts = 1
            raise exc
        assert self.cache is not None
        entry = self.cache.get(key)
        if entry is not None and "rejected" not in entry and (key in self.answered or "batch" in entry):
            self.answered.add(key)
            out = ModelOutput.model_validate(entry)
            self.used[key] = (out.usage.prompt_tokens, out.usage.completion_tokens)
            return CallResult(out, False, 1, key, None)
        if key not in self.pending:
            body = provider.batch_body(messages, config)  # type: ignore[attr-defined]
            line = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}
            self.pending[key] = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        self.misses += 1
        waiting = _Pending("waiting for a batch")
        waiting.attempts = 1
        raise waiting


def check_batch_support(provider: Provider, cache: Cache | None, role: str = "judge") -> None:
    """Fail before any work when batch mode cannot run here (``role``: what the provider is to the user)."""
    if not provider.supports_batch:
        raise ConfigError(f"--batch: provider '{provider.name}' has no batch API (use an openai/* {role})")
    if cache is None:
        raise ConfigError("--batch keeps the batches' answers and ids in the cache; drop --no-cache")


class BatchAPI:
    """The :class:`~judge.pipeline.Executor` of a batch run (see the module docstring): the run's units are
    worked on graders whose caller is a :class:`BatchCollector`, in rounds; a unit that needed a call not
    answered yet is worked again after the next round, so verdicts are exactly the synchronous path's.
    Reports a :class:`BatchReport`."""

    name = "batch"
    shows_progress = True

    def __init__(self, settings: BatchSettings | None = None) -> None:
        self.settings = settings or BatchSettings()

    def check(self, grader: GraderLike, *, budget: Any = None) -> None:
        check_batch_support(grader.provider, grader.cache)
        if budget is not None:
            raise ConfigError(
                "--max-cost cannot be enforced with --batch: the budget checks each call before it is sent, but a "
                "batch's calls are all submitted at once and what each cost is known only when the batch has run; "
                "estimate the cost with --dry-run instead"
            )

    async def map(
        self,
        graders: Sequence[GraderLike],
        work: Callable[[Sequence[Any]], Callable[[Any], Awaitable[Any]]],
        units: Iterable[Any],
        done: Callable[[int, Any], None],
        *,
        progress: bool = False,
    ) -> BatchReport:
        grader = graders[0]
        self.check(grader)
        assert grader.cache is not None
        cache = grader.cache
        collector = BatchCollector(cache, keep_failed=grader.keep_failed)
        settings = grader.batch or self.settings
        # priced at the batch price: the graders carry the batch settings
        fn = work([g.with_caller(collector, batch=g.batch or settings) for g in graders])
        store = BatchStore(cache)
        driver = _Driver(grader.provider, grader.config, cache, store, collector, settings, progress)
        todo = list(enumerate(units))
        try:
            while todo:
                collector.pending = {}
                waiting = []
                for i, unit in todo:
                    before = collector.misses
                    result = await fn(unit)
                    if collector.misses > before:
                        waiting.append((i, unit))
                        continue
                    done(i, result)
                todo = waiting
                if todo:
                    await driver.round(collector.pending)
        finally:
            store.close()
        report = driver.report
        report.lines_unanswered = len(collector.failed)
        prompt, completion = collector.tokens()
        report.cost_usd = _cost(cost_usd(grader.provider.id, prompt, completion, grader.prices, batch=True))
        report.sync_cost_usd = _cost(cost_usd(grader.provider.id, prompt, completion, grader.prices))
        return report


def _cost(value: float | None) -> float | None:
    return None if value is None else round(value, 9)


class _Driver:
    """Submits one round's calls, waits for the batches and reconciles their files into the cache."""

    def __init__(
        self,
        provider: Provider,
        config: GenerateConfig,
        cache: Cache,
        store: BatchStore,
        collector: BatchCollector,
        settings: BatchSettings,
        progress: bool,
    ) -> None:
        self.api: Any = provider  # the batch_* methods of a provider with supports_batch
        self.provider = provider
        self.config = config
        self.cache = cache
        self.store = store
        self.collector = collector
        self.settings = settings
        self.progress = progress
        self.submissions: dict[str, int] = {}
        self.report = BatchReport()
        self.retry = RetryPolicy()

    async def _call(self, fn: Callable[[], Any]) -> Any:
        """A control-plane call (upload, create, poll, download) with the transport retries."""
        return await with_retries(fn, self.provider.should_retry, self.retry)

    def _say(self, text: str) -> None:
        if self.progress:
            print(text, file=sys.stderr)

    async def round(self, pending: dict[str, bytes]) -> None:
        self.report.rounds += 1
        keys = set(pending)
        open_batches = self.store.open_for(keys, self.provider)
        covered: set[str] = set().union(*open_batches.values()) if open_batches else set()
        if open_batches:
            self.report.batches_resumed += len(open_batches)
            self._say(f"resuming {len(open_batches)} submitted batch(es): {', '.join(open_batches)}")
        ids = list(open_batches)
        for chunk in self._chunks([k for k in pending if k not in covered], pending):
            ids.append(await self._submit(chunk, pending))
        batches = await self._wait(ids)
        retry: dict[str, str] = {}
        for b in batches:
            retry.update(await self._reconcile(b))
        for key in keys - self.collector.answered:
            entry = self.cache.get(key)
            if key in self.collector.failed or (entry is not None and "rejected" in entry):
                continue
            reason = retry.get(key, "not in any batch's output")
            n = self.submissions.get(key, 0)
            if n >= self.settings.max_submissions:
                self.collector.failed[key] = f"{reason} (submitted {n} times)"
            elif n > 0:
                self.report.lines_resubmitted += 1

    def _chunks(self, keys: list[str], lines: dict[str, bytes]) -> list[list[str]]:
        chunks: list[list[str]] = []
        current: list[str] = []
        size = 0
        for k in keys:
            n = len(lines[k])
            if current and (len(current) >= self.settings.max_lines or size + n > self.settings.max_bytes):
                chunks.append(current)
                current, size = [], 0
            current.append(k)
            size += n
        if current:
            chunks.append(current)
        return chunks

    async def _submit(self, keys: list[str], lines: dict[str, bytes]) -> str:
        data = b"".join(lines[k] for k in keys)
        name = f"judge-{int(time.time())}-{len(keys)}.jsonl"
        file_id = await self._call(lambda: self.api.batch_upload(data, name))
        meta = {"tool": "judge", "judge": self.provider.id}
        batch = await self._call(lambda: self.api.batch_create(file_id, meta))
        self.store.record(batch, self.provider, keys)  # recorded before anything else can go wrong
        for k in keys:
            self.submissions[k] = self.submissions.get(k, 0) + 1
        self.report.batches_submitted += 1
        self.report.lines_submitted += len(keys)
        self.report.batch_ids.append(batch["id"])
        self._say(f"submitted batch {batch['id']}: {len(keys)} requests, {len(data) / 1e6:.1f} MB")
        return str(batch["id"])

    async def _wait(self, ids: list[str]) -> list[dict[str, Any]]:
        """Poll until every batch is terminal, with a progress bar over their lines."""
        if not ids:
            return []
        state: dict[str, dict[str, Any]] = {}
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=0, unit="req", file=sys.stderr, dynamic_ncols=True, leave=False, desc="batch")
        start = time.monotonic()
        try:
            while True:
                for bid in ids:
                    if bid not in state or state[bid]["status"] not in TERMINAL:
                        state[bid] = await self._call(functools.partial(self.api.batch_retrieve, bid))
                        self.store.update(bid, state[bid]["status"])
                if bar is not None:
                    counts = [b.get("request_counts") or {} for b in state.values()]
                    bar.total = sum(c.get("total") or 0 for c in counts)
                    bar.n = sum((c.get("completed") or 0) + (c.get("failed") or 0) for c in counts)
                    statuses = sorted({b["status"] for b in state.values()})
                    bar.set_description(f"batch {'/'.join(statuses)}")
                    bar.refresh()
                if all(b["status"] in TERMINAL for b in state.values()):
                    return [state[bid] for bid in ids]
                timeout = self.settings.timeout
                if timeout is not None and time.monotonic() - start > timeout:
                    raise BatchWaitTimeout(
                        f"batches still running after {timeout:g} s: {', '.join(ids)}; they keep running on the "
                        "server: rerun the same command to collect them, or `judge batches cancel ID`"
                    )
                await asyncio.sleep(self.settings.poll_interval)
        finally:
            if bar is not None:
                bar.close()

    async def _lines(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        data = await self._call(lambda: self.api.file_content(file_id))
        lines = []
        for raw in data.decode("utf-8", "replace").splitlines():
            if raw.strip():
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError:
                    continue  # an unreadable line counts as missing: its call is resubmitted
        return lines

    async def _reconcile(self, batch: dict[str, Any]) -> dict[str, str]:
        """Cache what ``batch`` answered; return the keys worth resubmitting, with why. Marks the batch done."""
        bid, status = batch["id"], batch["status"]
        carried = self.store.keys(bid)
        retry: dict[str, str] = {}
        for line in await self._lines(batch.get("output_file_id")) + await self._lines(batch.get("error_file_id")):
            key = line.get("custom_id")
            if key not in carried:
                continue
            response = line.get("response") or {}
            code = response.get("status_code")
            body = response.get("body")
            if code == 200:
                try:
                    out = self.api.batch_output(body, self.config)
                except ProviderError as exc:
                    retry[key] = f"batch {bid}: unreadable output line: {exc}"
                    continue
                self.cache.put(key, {**out.to_cache(), "final": False, "batch": bid})
                self.collector.answered.add(key)
            elif code in REJECTED_STATUSES:
                message = _error_message(body)
                self.cache.put(key, {"rejected": f"HTTP {code} in batch {bid}: {message}", "status": code})
            elif status == "cancelled" and response == {}:
                self.collector.failed[key] = f"batch {bid} was cancelled before this request ran"
            else:
                err = line.get("error") or {}
                why = f"HTTP {code}: {_error_message(body)}" if code else f"{err.get('code')}: {err.get('message')}"
                retry[key] = f"batch {bid}: {why}"
        if status == "failed":
            errors = (batch.get("errors") or {}).get("data") or []
            said = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors[:3]) or "no reason given"
            for key in carried - self.collector.answered:
                self.collector.failed.setdefault(key, f"batch {bid} failed ({said}); rerun to submit it again")
        elif status == "cancelled":
            for key in carried - self.collector.answered - set(retry):
                self.collector.failed.setdefault(key, f"batch {bid} was cancelled before this request ran")
        self.store.update(bid, status, done=True)
        return retry


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("message") or err)
        if err:
            return str(err)
    return json.dumps(body)[:200]

"""The Ray engine: Ray Data ``map_batches`` over an actor pool, one model per actor.

Items travel pickled in an Arrow binary column next to their position; each actor builds the batch
function once (loading its model), and the driver streams the results back and yields them in input
order (Ray Data's ``preserve_order``, plus a reorder buffer keyed by position, so order never depends
on it). ``ray`` is imported only here, only when the engine runs: ``pip install 'judge[scale]'``.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from judge.engines.base import BatchFn
from judge.errors import ConfigError, JudgeError


class _Worker:
    """One actor of the pool: builds the batch function once, then maps Arrow batches through it."""

    def __init__(self, factory: Callable[[], BatchFn]) -> None:
        self.fn = factory()

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        items = [pickle.loads(b) for b in batch["p"].to_pylist()]
        try:
            results = list(self.fn(items))
        except JudgeError as exc:
            # Ray re-raises a worker's exception as a RayTaskError that keeps only its text: send the
            # user's error (a missing model, a bad option) back as a result, to be raised as itself
            results = [_Raised(exc)] * len(items)
        if len(results) != len(items):
            raise RuntimeError(f"a batch function returned {len(results)} results for {len(items)} items")
        payload = pa.array([pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in results], type=pa.binary())
        return pa.table({"i": batch["i"], "r": payload})


class _Raised:
    """A judge error raised by a worker's batch function, carried back to the driver as a result."""

    def __init__(self, exc: JudgeError) -> None:
        try:
            self.blob = pickle.dumps(exc)
            pickle.loads(self.blob)
        except Exception:  # an error whose __init__ does not round-trip: keep its class name and text
            self.blob = pickle.dumps(ConfigError(f"{type(exc).__name__}: {exc}"))

    def error(self) -> JudgeError:
        return pickle.loads(self.blob)


class RayEngine:
    """Runs batches on a Ray actor pool: a local Ray instance, or the cluster at ``address``.

    Args:
        address: ``ray://head:10001``, ``auto`` or ``host:6379``; default: ``$RAY_ADDRESS`` if set, else
            an existing ``ray.init()`` of this process, else a new local instance.
        workers: actors in the pool (default: the cluster's CPUs / ``cpus_per_worker``, at most one per batch).
        cpus_per_worker: CPUs reserved per actor (torch in an actor uses that many threads).
        gpus_per_worker: GPUs per actor (e.g. 1 to put one model on each GPU).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
    ) -> None:
        try:  # fail at once, before any work, when the extra is missing
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError("--engine ray needs Ray: pip install 'judge[scale]'") from None
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker

    def start(self) -> None:
        """Start a local Ray instance or connect to the cluster at ``address`` (if this process has not yet)."""
        self._ray()

    def _ray(self) -> Any:
        try:
            import ray
            import ray.data
        except ImportError:
            raise ConfigError("--engine ray needs Ray: pip install 'judge[scale]'") from None
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, configure_logging=False)
            except ConnectionError as exc:
                raise ConfigError(f"--engine ray: could not reach the Ray cluster at {self.address}: {exc}") from None
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # one INFO line per dataset otherwise
        return ray

    def map(self, factory: Callable[[], BatchFn], items: Iterable[Any], *, batch_size: int) -> Iterator[Any]:
        """Stream ``fn(batch)`` results from the actor pool, in input order."""
        payloads = [{"i": k, "p": pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL)} for k, x in enumerate(items)]
        if not payloads:
            return
        ray = self._ray()
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        n_batches = math.ceil(len(payloads) / batch_size)
        size = self.workers or max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))
        size = max(1, min(size, n_batches))
        ds = ray.data.from_items(payloads, override_num_blocks=n_batches)
        del payloads  # the object store holds them now
        out = ds.map_batches(
            _Worker,
            fn_constructor_args=(factory,),
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=size),
            num_cpus=self.cpus_per_worker,
            num_gpus=self.gpus_per_worker or None,
        )
        pending: dict[int, Any] = {}
        nxt = 0
        for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
            for i, r in zip(batch["i"].to_pylist(), batch["r"].to_pylist(), strict=True):
                result = pickle.loads(r)
                if isinstance(result, _Raised):
                    raise result.error()
                pending[i] = result
            while nxt in pending:
                yield pending.pop(nxt)
                nxt += 1
        if pending:
            raise RuntimeError(f"ray engine: {len(pending)} results arrived without their predecessors")

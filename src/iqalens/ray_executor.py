"""A :class:`concurrent.futures.Executor` whose tasks run on a Ray cluster.

Code that already spreads work over a process pool (``bench build``: one task per reference photo)
runs on a cluster by being handed this executor instead: each ``submit`` becomes a Ray task with one
CPU, and its result comes back as an ordinary :class:`~concurrent.futures.Future` (Ray's
``ObjectRef.future()``), so ``as_completed`` and friends work unchanged. Scheduling, placement and
retries are Ray's: a task whose worker process dies is run again (``max_retries``, default 3), which
is safe for tasks that write their outputs atomically and reuse what exists (as ``bench build`` does).

Everything a task reads or writes must be reachable from every node (a shared file system); ``ray`` is
an optional dependency (``pip install iqalens[ray]``), imported when the executor is created.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

from iqalens.errors import ConfigError

__all__ = ["RayExecutor"]


class RayExecutor(Executor):
    """Ray tasks as futures: joins the cluster at ``address`` (None: the Ray of this process, else a new
    local one, shut down by :meth:`shutdown`); each task gets ``num_cpus`` CPUs and ``max_retries``
    retries if its worker dies."""

    def __init__(self, address: str | None = None, num_cpus: float = 1.0, max_retries: int = 3) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError(f"the Ray engine needs ray: pip install 'iqalens[ray]' ({exc})") from exc
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
        self._options = {"num_cpus": num_cpus, "max_retries": max_retries}
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        remote = self._remote.get(fn)
        if remote is None:
            remote = self._remote[fn] = self._ray.remote(fn).options(**self._options)
        future: Future[Any] = remote.remote(*args, **kwargs).future()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop the local Ray this executor started (a joined cluster is left running)."""
        if self._started:
            self._ray.shutdown()
            self._started = False

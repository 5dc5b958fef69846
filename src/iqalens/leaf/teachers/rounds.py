"""Many independent items through one async handler, for teachers that ask a remote server.

:func:`run_items` runs ``handler(i)`` for every item on a fixed pool of workers (memory bounded by
the concurrency, not by the number of items) and reports each item exactly once, as it finishes,
through ``emit(i, result)``. What the handler's outcome becomes:

- a value: the item's answer, emitted at once;
- ``ImageLoadError``: an unreadable input, emitted as the result (asking again cannot help);
- an *item failure* (``is_item_failure(exc)``, e.g. a request that outlasted its own retries): not
  emitted yet; the run goes on with the other items, and after the first pass the failed ones are
  asked again in up to ``deferred_rounds`` rounds, round r after ``deferred_wait(r)`` seconds.
  An item that never succeeds is emitted as :class:`Unanswered` after the last round;
- any other exception stops the run: the workers are cancelled and it is raised.

In the first pass, ``failure_limit`` item failures in a row with no answer in between (or all the
items of a shorter run) stop the run too, with the exception ``breaker(last_failure, what)``
builds: a server that fails everything is not ground through item by item. Deferred rounds have no
such breaker; they only re-ask what failed, a bounded number of times.

:func:`iterate_in_thread` runs such a coroutine on an event loop in a worker thread and yields its
results in the calling thread (whose SQLite connection, say, stores them).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from iqalens.images import ImageLoadError

T = TypeVar("T")
Emit = Callable[[int, Any], None]


@dataclass(frozen=True)
class Unanswered:
    """An item still failing after the deferred rounds.

    ``reason`` is the short kind of its last failure (the exception's ``reason`` attribute if it
    has one, else its type name), ``problem`` the exception's message and ``error`` the exception.
    """

    reason: str
    problem: str
    error: BaseException = field(repr=False, compare=False)


@dataclass
class RoundStats:
    """What :func:`run_items` counted."""

    item_failures: int = 0  # failures of an item in a pass, recovered later or not
    deferred_items: int = 0  # items that failed the first pass (so went to the deferred rounds)
    deferred_rounds: int = 0  # deferred rounds run
    unanswered: int = 0  # items emitted as Unanswered


async def run_items(
    n: int,
    handler: Callable[[int], Awaitable[Any]],
    emit: Emit,
    *,
    concurrency: int,
    failure_limit: int,
    deferred_rounds: int,
    deferred_wait: Callable[[int], float],
    is_item_failure: Callable[[BaseException], bool],
    breaker: Callable[[BaseException, str], BaseException],
    stats: RoundStats,
) -> None:
    """Run ``handler(i)`` for i in range(n); see the module docstring."""
    if n == 0:
        return
    passes = _Passes(handler, emit, concurrency, is_item_failure, breaker, stats)
    failed = await passes.run(range(n), min(failure_limit, n))
    stats.deferred_items = len(failed)
    while failed and stats.deferred_rounds < deferred_rounds:
        stats.deferred_rounds += 1
        await asyncio.sleep(deferred_wait(stats.deferred_rounds))
        failed = await passes.run(sorted(failed), None)
    for i in sorted(failed):
        exc = failed[i]
        stats.unanswered += 1
        emit(i, Unanswered(str(getattr(exc, "reason", "") or type(exc).__name__), str(exc), exc))


@dataclass
class _Passes:
    handler: Callable[[int], Awaitable[Any]]
    emit: Emit
    concurrency: int
    is_item_failure: Callable[[BaseException], bool]
    breaker: Callable[[BaseException, str], BaseException]
    stats: RoundStats

    async def run(self, indices: Sequence[int], failure_limit: int | None) -> dict[int, BaseException]:
        """One pass over ``indices``; returns the items that failed, with their failure."""
        failed: dict[int, BaseException] = {}
        in_a_row = 0
        tripped: list[BaseException] = []  # the breaker's error, raised once, by the first worker to trip it
        todo = iter(indices)

        async def worker() -> None:
            nonlocal in_a_row
            for i in todo:  # shared iterator: each index is taken by exactly one worker
                if tripped:
                    return
                try:
                    result = await self.handler(i)
                except ImageLoadError as exc:
                    self.emit(i, exc)
                    continue
                except Exception as exc:
                    if not self.is_item_failure(exc):
                        raise
                    failed[i] = exc
                    self.stats.item_failures += 1
                    in_a_row += 1
                    if tripped:  # failed in flight after the run was stopped: reported by the first
                        return
                    if failure_limit is not None and in_a_row >= failure_limit:
                        tripped.append(self.breaker(exc, _describe(in_a_row, len(indices))))
                        raise tripped[0] from None
                    continue
                in_a_row = 0
                self.emit(i, result)

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, len(indices)))]
        try:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            if tripped:
                raise tripped[0]
            for t in finished:
                if t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return failed


def _describe(in_a_row: int, n: int) -> str:
    if in_a_row == n:
        return "the one item asked" if n == 1 else f"all {n} items asked"
    return f"{in_a_row} items in a row, none answered in between,"


async def gather_settled(
    aws: Sequence[Awaitable[T]], is_item_failure: Callable[[BaseException], bool]
) -> list[T]:
    """Like ``asyncio.gather``, but an item failure of one awaitable waits for the others to finish
    (their results may be kept by the caller, e.g. the answered order of a pair) before it is
    raised; any other exception cancels the others at once (no orphaned requests)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        pending = set(tasks)
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            for t in finished:
                exc = t.exception()
                if exc is not None and not is_item_failure(exc):
                    raise exc
        for t in tasks:
            if t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()


_DONE = object()


@dataclass(frozen=True)
class _Raised:
    """An exception of the worker thread, on its way to the consuming thread."""

    exc: BaseException


def iterate_in_thread(run: Callable[[Emit], Awaitable[None]]) -> Iterator[tuple[int, Any]]:
    """Yield the ``(i, result)`` that ``run(emit)`` emits, running it on an event loop in a worker
    thread; an exception of ``run`` is raised here. Closing the iterator early (the caller was
    interrupted or failed) cancels ``run``."""
    results: queue.Queue[Any] = queue.Queue()
    started = threading.Event()
    running: dict[str, Any] = {}

    async def main() -> None:
        running["loop"], running["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        await run(lambda i, r: results.put((i, r)))

    def target() -> None:
        try:
            asyncio.run(main())
            results.put(_DONE)
        except BaseException as exc:  # handed over to the consuming thread
            results.put(_Raised(exc))
        finally:
            started.set()

    thread = threading.Thread(target=target, name="iqalens-teacher-requests", daemon=True)
    thread.start()
    finished = False
    try:
        while True:
            try:
                item = results.get(timeout=0.25)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if item is _DONE:
                finished = True
                return
            if isinstance(item, _Raised):
                finished = True
                raise item.exc
            yield item
    finally:
        if not finished:
            started.wait()
            loop, task = running.get("loop"), running.get("task")
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # RuntimeError: the loop already ended
                    loop.call_soon_threadsafe(task.cancel)
        thread.join(timeout=30.0)


def run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, also inside a running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]

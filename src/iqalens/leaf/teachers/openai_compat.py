"""Teacher backend for any OpenAI-compatible inference server (vLLM, SGLang, llama.cpp server).

This is the backend for labelling at scale: the GPUs sit behind a server that batches requests
itself, so the client's job is to keep it busy (many concurrent requests, bounded), to survive the
faults of a long run (rate limits, restarts, slow replies) and to fail loudly on configuration
mistakes (a server that returns no log-probabilities can never produce a judgment).

The request and reply formats (what is sent, how the answer is read from the top log-probabilities,
why images go as PNG) are in :mod:`iqalens.leaf.teachers.openai_protocol`.

Faults, per request: HTTP 408, 429 and 5xx (but 501), timeouts (a whole-request deadline, not
httpx's per-read one) and connection errors are retried in place with exponential backoff and
jitter, honouring ``Retry-After``, up to ``max_retries`` times; a 200 body that is not a chat
completion is retried up to ``max_malformed_retries`` times. Every error names the server and the
model, and never holds the API key (it is masked in any text a server echoes back).

Faults, per item (an image, or a pair asked in both orders): an item whose request still fails
after those retries, or gets another 4xx (400, 413, 422: e.g. one image too large for the model's
context), does not stop the run. The run goes on with the other items and asks the failed ones
again in up to ``max_deferred_rounds`` deferred rounds at its end, the first after
``deferred_backoff_s`` seconds, each later one after twice the wait of the one before (at most
5 minutes). Of a pair, an order already answered is kept and only the other is asked again.
What is still unanswered after the last round is reported as :class:`Unanswered` (streaming API)
or raised (list API); it is never guessed.

Faults that stop the run (fail fast, one message): a configuration error that no item can
survive stops it at once: HTTP 401, 403, 407 (credentials), 404, 405, 501 (wrong model, base URL
or route), and a 200 reply without log-probabilities (:class:`NoLogprobsError`, a server option).
In the first pass, ``max_consecutive_failures`` items in a row failing with none answered in
between (default ``max(16, 2 * max_concurrency)``; for a shorter run, all of its items) stop it
too: a server that is down, or fails every request the same way, is not ground through item by
item. Deferred rounds have no such limit; they are bounded by their number.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from iqalens.errors import InvalidInputError
from iqalens.images import ImageLoadError
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.prompts import Prompt, pair_prompt, point_prompt, prompt_version
from iqalens.leaf.teachers.base import TeacherError
from iqalens.leaf.teachers.openai_protocol import (
    ImageEncoding,
    build_messages,
    choice_logprobs,
    encode_data_url,
    first_token_logprobs,
    retry_after_seconds,
)
from iqalens.leaf.teachers.rounds import (
    Emit,
    RoundStats,
    Unanswered,
    gather_settled,
    iterate_in_thread,
    run_items,
    run_sync,
)

PrefillMode = Literal["continue_final_message", "trailing_assistant", "none"]
T = TypeVar("T")

#: HTTP statuses no item can get past (credentials; model, base URL or route wrong): stop at once.
FATAL_STATUSES = frozenset({401, 403, 404, 405, 407, 501})
#: Longest wait before a deferred round, in seconds.
MAX_DEFERRED_WAIT_S = 300.0


class TeacherServerError(TeacherError):
    """A request to the inference server failed; the message names the server and the model.

    ``reason`` is the short kind of the failure ("malformed", "timeout", "connection", "429",
    "HTTP 400", ...); ``fatal`` says it stops the whole run (no item can get past it).
    """

    always_fatal = False

    def __init__(
        self, server: str, model: str, problem: str, *, reason: str = "", fatal: bool = False
    ) -> None:
        self.server = server
        self.model = model
        self.problem = problem
        self.reason = reason
        self.fatal = fatal or self.always_fatal
        super().__init__(f"{server} (model {model!r}): {problem}")


class NoLogprobsError(TeacherServerError):
    """The server answered without log-probabilities, so no judgment can be read from it."""

    always_fatal = True


class MalformedResponseError(TeacherServerError):
    """The server kept answering with bodies that are not a chat completion."""


class RequestFailedError(TeacherServerError):
    """A non-retryable HTTP error, or retryable faults that outlasted ``max_retries``."""


@dataclass
class RunStats(RoundStats):
    """Counters of one ``judge_*`` call (for progress reports and tests); see also
    :class:`~iqalens.leaf.teachers.rounds.RoundStats` (item failures, deferred rounds, unanswered)."""

    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    replies: int = 0  # answers read (two per pair)
    unmatched: int = 0  # replies with no answer word among the top tokens

    def note_retry(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1


class OpenAITeacher:
    """A :class:`~iqalens.leaf.teachers.base.Teacher` backed by an OpenAI-compatible server.

    ``base_url`` is the API root that ``/chat/completions`` is appended to (vLLM:
    ``http://HOST:8000/v1``). Pair requests carry two images: vLLM needs
    ``--limit-mm-per-prompt '{"image": 2}'`` (or its older ``image=2`` form) for that.
    ``api_key`` defaults to the ``OPENAI_API_KEY`` environment variable (sent as a bearer token;
    never printed). ``judge_images``/``judge_pairs`` are synchronous and return one judgment per
    item or raise; ``ajudge_images`` and ``ajudge_pairs`` are the same for callers already in an
    event loop. For long runs, ``iter_judge_images``/``iter_judge_pairs`` yield each result as it
    comes and report what stayed unanswered instead of raising (see the module docstring for the
    retries, the deferred rounds and what stops a run).
    """

    supports_pairs = True

    def __init__(
        self,
        model: str,
        base_url: str = "http://127.0.0.1:8000/v1",
        *,
        api_key: str | None = None,
        max_concurrency: int = 64,
        max_retries: int = 6,
        max_malformed_retries: int = 2,
        max_deferred_rounds: int = 3,
        deferred_backoff_s: float = 10.0,
        max_consecutive_failures: int | None = None,
        timeout_s: float = 120.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        top_logprobs: int = 20,
        prefill: PrefillMode = "continue_final_message",
        floor_prob: float = 1e-6,
        extra_body: Mapping[str, Any] | None = None,
        trust_env: bool = True,
        seed: int | None = None,
        progress: Callable[[int], None] | None = None,
        image_encoding: ImageEncoding = "png",
    ) -> None:
        if max_concurrency < 1 or max_retries < 0 or max_malformed_retries < 0 or top_logprobs < 1:
            raise InvalidInputError("max_concurrency and top_logprobs must be >= 1, retry counts >= 0")
        if max_deferred_rounds < 0 or deferred_backoff_s < 0:
            raise InvalidInputError("max_deferred_rounds and deferred_backoff_s must be >= 0")
        if max_consecutive_failures is not None and max_consecutive_failures < 1:
            raise InvalidInputError("max_consecutive_failures must be >= 1 (or None for the default)")
        if prefill not in ("continue_final_message", "trailing_assistant", "none"):
            raise InvalidInputError(f"unknown prefill mode {prefill!r}")
        if image_encoding not in ("png", "source"):
            raise InvalidInputError(f"unknown image encoding {image_encoding!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.max_malformed_retries = max_malformed_retries
        self.max_deferred_rounds = max_deferred_rounds
        self.deferred_backoff_s = deferred_backoff_s
        self.max_consecutive_failures = max_consecutive_failures
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.top_logprobs = top_logprobs
        self.prefill: PrefillMode = prefill
        self.floor_prob = floor_prob
        self.extra_body = dict(extra_body or {})
        self.trust_env = trust_env
        self.image_encoding: ImageEncoding = image_encoding
        self._rng = random.Random(seed)
        self.teacher_id = f"openai:{model}"
        self.prompt_version = prompt_version(prefill != "none")
        self.last_stats = RunStats()
        #: Called with 1 after each finished image or pair (answered, unreadable or unanswered).
        self.progress = progress

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.model!r}, base_url={self.base_url!r}, prefill={self.prefill!r})"

    @property
    def consecutive_failure_limit(self) -> int:
        """Items failing in a row (none answered between) that stop the first pass."""
        if self.max_consecutive_failures is not None:
            return self.max_consecutive_failures
        return max(16, 2 * self.max_concurrency)

    # ---------------------------------------------------------------------------------- public API

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """One point-wise judgment per image, in input order (runs its own event loop).

        Raises the first unreadable image's ``ImageLoadError`` and, if some images stay unanswered
        after the deferred rounds, a :class:`TeacherServerError` counting them.
        """
        return run_sync(lambda: self.ajudge_images(paths))

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """One judgment per ordered pair, each asked in both orders, in input order."""
        return run_sync(lambda: self.ajudge_pairs(pairs))

    async def ajudge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """Async :meth:`judge_images`."""
        return await self._collect(len(paths), self._image_handler(paths), "image")

    async def ajudge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """Async :meth:`judge_pairs`."""
        return await self._collect(len(pairs), self._pair_handler(pairs), "pair")

    def iter_judge_images(
        self, paths: Sequence[Path]
    ) -> Iterator[tuple[int, PointJudgment | Unanswered | ImageLoadError]]:
        """Judge images for a long run: ``(index, result)`` for each image as it finishes.

        ``result`` is the judgment, the ``ImageLoadError`` of an unreadable file (yielded, not
        raised) or, after the last deferred round, :class:`Unanswered`. Every index comes exactly
        once, in completion order. Fatal errors (see the module docstring) are raised. The requests
        run on an event loop in a worker thread, so the caller's thread (and e.g. its SQLite
        connection) does the storing; closing the iterator early cancels the requests in flight.
        """
        return self._iterate(len(paths), self._image_handler(paths))

    def iter_judge_pairs(
        self, pairs: Sequence[tuple[Path, Path]]
    ) -> Iterator[tuple[int, PairJudgment | Unanswered | ImageLoadError]]:
        """:meth:`iter_judge_images` for ordered pairs, each asked in both orders."""
        return self._iterate(len(pairs), self._pair_handler(pairs))

    def request_body(self, prompt: Prompt, data_urls: Sequence[str]) -> dict[str, Any]:
        """The JSON body sent for one question (public so users can inspect what is sent)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": build_messages(prompt, data_urls),
            "temperature": 0.0,
            "max_tokens": 1,
            "n": 1,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        if self.prefill == "continue_final_message":
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body.update(self.extra_body)
        return body

    # ---------------------------------------------------------------------------------- handlers

    def _image_handler(self, paths: Sequence[Path]) -> _Handler[PointJudgment]:
        prompt = point_prompt(self.prefill != "none")

        async def one(session: _Session, i: int) -> PointJudgment:
            url = await asyncio.to_thread(encode_data_url, paths[i], self.image_encoding)
            logits = await self._ask(session, prompt, [url])
            return PointJudgment.from_logits(logits)

        return one

    def _pair_handler(self, pairs: Sequence[tuple[Path, Path]]) -> _Handler[PairJudgment]:
        prompt = pair_prompt(self.prefill != "none")
        # P(first) of an order already answered while the other order failed: a deferred retry of
        # the pair asks only the missing order.
        answered: dict[tuple[int, int], float] = {}

        async def one(session: _Session, i: int) -> PairJudgment:
            a, b = pairs[i]
            url_a, url_b = await asyncio.to_thread(
                lambda: (encode_data_url(a, self.image_encoding), encode_data_url(b, self.image_encoding))
            )

            async def order(k: int, urls: list[str]) -> float:
                if (i, k) not in answered:
                    answered[(i, k)] = _first_prob(await self._ask(session, prompt, urls))
                return answered[(i, k)]

            p_ab, p_ba = await gather_settled(
                [order(0, [url_a, url_b]), order(1, [url_b, url_a])], _is_item_failure
            )
            answered.pop((i, 0), None)
            answered.pop((i, 1), None)
            return PairJudgment.from_orders(p_ab, p_ba)

        return one

    # ---------------------------------------------------------------------------------- scheduling

    def _error(
        self, cls: type[TeacherServerError], problem: str, *, reason: str = "", fatal: bool = False
    ) -> TeacherServerError:
        return cls(self.base_url, self.model, self._redact(problem), reason=reason, fatal=fatal)

    def _redact(self, text: str) -> str:
        """``text`` without the API key (a server's error page may echo the Authorization header)."""
        if self._api_key and len(self._api_key) >= 4:
            return text.replace(self._api_key, "[api key]")
        return text

    async def _collect(self, n: int, handler: _Handler[T], what: str) -> list[T]:
        """All results in input order, or raise (list API)."""
        results: list[Any] = [None] * n
        unanswered: dict[int, Unanswered] = {}

        def emit(i: int, result: Any) -> None:
            if isinstance(result, ImageLoadError):
                raise result  # stops the call, as an unreadable input always has
            if isinstance(result, Unanswered):
                unanswered[i] = result
            else:
                results[i] = result

        await self._stream(n, handler, emit)
        self._warn_unmatched()
        if unanswered:
            last = unanswered[max(unanswered)].error
            assert isinstance(last, TeacherServerError)
            rounds = self.last_stats.deferred_rounds
            raise self._error(
                type(last),
                f"{len(unanswered)} of {n} {what}(s) unanswered after {rounds} deferred round(s); "
                f"last failure: {last.problem}",
                reason=last.reason,
            )
        return results

    def _iterate(self, n: int, handler: _Handler[Any]) -> Iterator[tuple[int, Any]]:
        yield from iterate_in_thread(lambda emit: self._stream(n, handler, emit))
        self._warn_unmatched()

    async def _stream(self, n: int, handler: _Handler[Any], emit: Emit) -> None:
        """Call ``emit(i, result)`` once per item as it finishes: the first pass, the deferred rounds,
        then :class:`Unanswered` for what is left (see :func:`~iqalens.leaf.teachers.rounds.run_items`)."""
        stats = self.last_stats = RunStats()
        if n == 0:
            return
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        timeout = httpx.Timeout(self.timeout_s, pool=None)

        def done(i: int, result: Any) -> None:
            emit(i, result)
            if self.progress is not None:
                self.progress(1)

        async with httpx.AsyncClient(
            limits=limits, headers=headers, timeout=timeout, trust_env=self.trust_env
        ) as client:
            session = _Session(client, asyncio.Semaphore(self.max_concurrency), stats)
            await run_items(
                n,
                lambda i: handler(session, i),
                done,
                concurrency=self.max_concurrency,
                failure_limit=self.consecutive_failure_limit,
                deferred_rounds=self.max_deferred_rounds,
                deferred_wait=self._deferred_wait,
                is_item_failure=_is_item_failure,
                breaker=self._breaker_error,
                stats=stats,
            )

    def _breaker_error(self, last: BaseException, what: str) -> TeacherServerError:
        assert isinstance(last, TeacherServerError)
        return self._error(
            type(last),
            f"{what} failed, so the run stops here (answered items are kept); last failure: {last.problem}",
            reason=last.reason,
            fatal=True,
        )

    def _deferred_wait(self, round_number: int) -> float:
        """Seconds before deferred round ``round_number`` (1, 2, ...): doubling, capped."""
        return min(MAX_DEFERRED_WAIT_S, self.deferred_backoff_s * 2.0 ** (round_number - 1))

    def _warn_unmatched(self) -> None:
        stats = self.last_stats
        if stats.unmatched:
            warnings.warn(
                f"{self.base_url} (model {self.model!r}): {stats.unmatched} of {stats.replies} replies had "
                "no answer word among the top tokens and were judged uniform (reliability 0); check the "
                "prefill mode and the server's chat template",
                RuntimeWarning,
                stacklevel=3,
            )

    # ---------------------------------------------------------------------------------- requests

    async def _ask(self, session: _Session, prompt: Prompt, data_urls: Sequence[str]) -> list[float]:
        """Send one question and return the answer words' log-probabilities."""
        top = await self._post(session, self.request_body(prompt, data_urls))
        logits, matched = choice_logprobs(top, prompt.choices, self.floor_prob)
        session.stats.replies += 1
        if not matched:
            session.stats.unmatched += 1
        return logits

    async def _post(self, session: _Session, body: dict[str, Any]) -> dict[str, float]:
        """POST with retries; returns the first token's top log-probabilities.

        Transient faults count against ``max_retries``, malformed bodies against
        ``max_malformed_retries``; the backoff sleep happens outside the concurrency bound.
        """
        attempt = 0
        malformed = 0
        while True:
            outcome = await self._attempt(session, body)
            if isinstance(outcome, dict):
                return outcome
            if outcome.malformed:
                malformed += 1
                if malformed > self.max_malformed_retries:
                    raise self._error(
                        MalformedResponseError,
                        f"malformed reply {malformed} times: {outcome.problem}",
                        reason=outcome.reason,
                    )
                delay = self._backoff(malformed - 1)
            else:
                if attempt >= self.max_retries:
                    raise self._error(
                        RequestFailedError,
                        f"gave up after {attempt + 1} attempts; last: {outcome.problem}",
                        reason=outcome.reason,
                    )
                delay = self._backoff(attempt)
                if outcome.retry_after is not None:
                    delay = max(delay, min(outcome.retry_after, self.backoff_max_s))
                attempt += 1
            session.stats.note_retry(outcome.reason)
            await asyncio.sleep(delay)

    async def _attempt(self, session: _Session, body: dict[str, Any]) -> dict[str, float] | _Retry:
        """One HTTP attempt under the concurrency bound: the parsed answer, a retry verdict, or raise."""
        async with session.semaphore:
            session.stats.requests += 1
            try:
                async with asyncio.timeout(self.timeout_s):
                    response = await session.client.post(self.url, json=body)
            except (TimeoutError, httpx.TimeoutException):
                return _Retry("timeout", f"no reply within {self.timeout_s:g} s")
            except httpx.TransportError as exc:
                return _Retry("connection", f"connection error: {type(exc).__name__}: {exc}")
        status = response.status_code
        if status == 200:
            try:
                return first_token_logprobs(response.json())
            except LookupError as exc:
                raise self._error(
                    NoLogprobsError,
                    f"{exc}; the server must support 'logprobs'/'top_logprobs' on chat completions",
                    reason="no logprobs",
                ) from None
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                text = self._redact(response.text)  # before cutting, so no piece of the key is left
                return _Retry("malformed", f"{exc}; body starts {text[:200]!r}", malformed=True)
        text = self._redact(response.text)
        if status in (408, 429) or (status >= 500 and status not in FATAL_STATUSES):
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
            return _Retry(str(status), f"HTTP {status}: {text[:300]}", retry_after)
        hint = " (does base_url end with the API root, e.g. /v1?)" if status == 404 else ""
        raise self._error(
            RequestFailedError,
            f"HTTP {status}{hint}: {text[:500]}",
            reason=f"HTTP {status}",
            fatal=status in FATAL_STATUSES,
        )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries spread out."""
        d = min(self.backoff_max_s, self.backoff_base_s * (2.0**attempt))
        return d / 2.0 + self._rng.uniform(0.0, d / 2.0)


def from_spec(arg: str, **options: Any) -> OpenAITeacher:
    """The teacher of ``openai:MODEL@BASE_URL`` (its registry entry): ``arg`` is ``MODEL@BASE_URL``."""
    model, _, base_url = arg.rpartition("@")
    return OpenAITeacher(model, base_url, **options)


_Handler = Callable[["_Session", int], Awaitable[T]]


@dataclass(frozen=True)
class _Retry:
    """Why an attempt should be retried."""

    reason: str  # "timeout", "connection", "malformed" or the HTTP status
    problem: str
    retry_after: float | None = None
    malformed: bool = False


@dataclass
class _Session:
    """What one ``judge_*`` call's workers share: the HTTP client, the request bound, the counters."""

    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    stats: RunStats


def _first_prob(logits: Sequence[float]) -> float:
    """P(first) from the (first, second) log-probabilities, renormalised to the two words."""
    a, b = logits
    return 1.0 / (1.0 + math.exp(b - a))


def _is_item_failure(exc: BaseException) -> bool:
    """A failure of one item (asked again later), not of the whole run."""
    return isinstance(exc, TeacherServerError) and not exc.fatal

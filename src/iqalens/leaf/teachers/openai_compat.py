"""Teacher backend for any OpenAI-compatible inference server (vLLM, SGLang, llama.cpp server).

This is the backend for labelling at scale: the GPUs sit behind a server that batches requests
itself, so the client's job is to keep it busy (many concurrent requests, bounded), to survive the
faults of a long run (rate limits, restarts, slow replies) and to fail loudly on configuration
mistakes (a server that returns no log-probabilities can never produce a judgment).

Protocol subset used (``POST {base_url}/chat/completions``):

- ``messages``: one user turn with the image(s) as ``image_url`` parts holding base64 *data URLs*
  and the question text (see :mod:`iqalens.leaf.prompts`); with pre-fill, a final assistant turn
  holding the answer prefix ("The quality of the image is").
- ``temperature=0``, ``max_tokens=1``, ``logprobs=true``, ``top_logprobs=k`` (default 20, the
  OpenAI and vLLM default maximum): one generated token, and the k most likely first tokens.
- Pre-fill modes (``prefill=``):
  ``"continue_final_message"`` (default) also sends vLLM's extra parameters
  ``continue_final_message=true, add_generation_prompt=false``, which format the chat so the model
  continues the assistant prefix instead of opening a new turn; ``"trailing_assistant"`` only sends
  the trailing assistant turn, for servers that continue a final assistant message on their own
  (llama.cpp server does by default); ``"none"`` sends no prefix and a question that asks for a
  one-word answer (its own prompt version).
- Reply: ``choices[0].logprobs.content[0].top_logprobs`` (a list of ``{token, logprob}``), plus the
  sampled token itself.

Reading the answer: each returned token is normalised (leading space, the tokenizers' ``Ġ``/``▁``
word markers and case removed) and matched to an answer word: exactly, as the word followed by
punctuation ("good."), or as a word piece that is a prefix of exactly one answer word ("excell").
Log-probabilities of tokens matching the same word are summed (log-sum-exp). A word absent from
the top k gets a floor log-probability, ``min(log(floor_prob), smallest returned log-prob)``: its true
probability is below every returned one, and the floor keeps it from being overstated. The five
level log-probabilities then go through :meth:`PointJudgment.from_logits` (a softmax over the
levels, i.e. renormalised to the answer words). A reply with no answer word at all gives a uniform
judgment (reliability 0), is counted in :attr:`OpenAITeacher.last_stats`, and triggers a warning.

Images are sent as **PNG** (lossless) re-encodings of :func:`iqalens.images.load_rgb`'s output:
the teacher is judging quality, and a JPEG re-encode would add compression artefacts of its own
(and blur away mild ones already there), changing the very thing being measured. ``load_rgb`` also
normalises every input (orientation, CMYK, 16-bit, alpha) so the server sees exactly the pixels the
rest of iqalens sees. The price is size and client CPU: on the CBSD68 photos (481x321) the PNG
data URL averages 360 kB against 75 kB for a JPEG q90 copy sent as it is, and the re-encode costs
17-22 ms per image on one core (zlib level 1; PNG's filtering dominates).
``image_encoding="source"`` avoids that where it is safe: a JPEG, PNG or WebP file already holding
8-bit RGB with no EXIF rotation decodes to exactly ``load_rgb``'s pixels, so its original bytes are
sent as they are; every other file is re-encoded as PNG.

Faults: HTTP 429 and 5xx, timeouts (a whole-request deadline, not httpx's per-read one) and
connection errors are retried with exponential backoff and jitter, honouring ``Retry-After``; other
4xx fail at once with the server's message. A body that is not JSON or lacks ``choices`` is retried
at most ``max_malformed_retries`` times. A reply without log-probabilities raises
:class:`NoLogprobsError` at once. Every error names the server and the model.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import io
import math
import os
import random
import warnings
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from PIL import Image

from iqalens.images import load_rgb
from iqalens.leaf.judgments import PairJudgment, PointJudgment
from iqalens.leaf.prompts import Prompt, pair_prompt, point_prompt, prompt_version
from iqalens.leaf.teachers.base import TeacherError

PrefillMode = Literal["continue_final_message", "trailing_assistant", "none"]
T = TypeVar("T")

#: Characters tokenizers put in front of a word: space, GPT-2 byte-level "Ġ", SentencePiece "▁".
_WORD_MARKERS = " \t\n\u0120\u2581"
#: Log-probs at or below this stand for -inf (vLLM reports masked tokens as -9999.0).
_NEG_INF_SENTINEL = -1000.0
#: Shortest word piece accepted as a prefix match ("ex" -> excellent); single letters are too vague.
MIN_PIECE_CHARS = 2


class TeacherServerError(TeacherError):
    """A request to the inference server failed; the message names the server and the model."""

    def __init__(self, server: str, model: str, problem: str) -> None:
        self.server = server
        self.model = model
        self.problem = problem
        super().__init__(f"{server} (model {model!r}): {problem}")


class NoLogprobsError(TeacherServerError):
    """The server answered without log-probabilities, so no judgment can be read from it."""


class MalformedResponseError(TeacherServerError):
    """The server kept answering with bodies that are not a chat completion."""


class RequestFailedError(TeacherServerError):
    """A non-retryable HTTP error, or retryable faults that outlasted ``max_retries``."""


@dataclass
class RunStats:
    """Counters of one ``judge_*`` call (for progress reports and tests)."""

    requests: int = 0  # HTTP attempts, retries included
    retries: int = 0
    retry_reasons: dict[str, int] = field(default_factory=dict)
    replies: int = 0  # answers read (two per pair)
    unmatched: int = 0  # replies with no answer word among the top tokens

    def note_retry(self, reason: str) -> None:
        self.retries += 1
        self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1


# --------------------------------------------------------------------------------------------------
# Reading answers from top log-probabilities


def normalise_token(token: str) -> str:
    """Lower-case ``token`` without leading word markers or surrounding whitespace."""
    return token.lstrip(_WORD_MARKERS).strip().lower()


def match_choice(token: str, choices: Sequence[str]) -> int | None:
    """Index of the answer word ``token`` stands for, or None (see module docstring for the rules)."""
    t = normalise_token(token)
    if not t:
        return None
    for i, word in enumerate(choices):
        if t == word or (t.startswith(word) and not t[len(word)].isalnum()):
            return i
    if len(t) >= MIN_PIECE_CHARS:
        hits = [i for i, word in enumerate(choices) if word.startswith(t)]
        if len(hits) == 1:
            return hits[0]
    return None


def choice_logprobs(
    top: Mapping[str, float], choices: Sequence[str], floor_prob: float = 1e-6
) -> tuple[list[float], bool]:
    """Log-probability of each answer word from a token -> log-prob map; also whether any matched.

    Tokens matching the same word are combined by log-sum-exp; absent words get
    ``min(log(floor_prob), min(top.values()))``.
    """
    per_word: list[list[float]] = [[] for _ in choices]
    for token, lp in top.items():
        i = match_choice(token, choices)
        if i is not None and lp > _NEG_INF_SENTINEL:
            per_word[i].append(lp)
    finite = [v for v in top.values() if v > _NEG_INF_SENTINEL]
    floor = min([math.log(floor_prob), *finite])
    out = [_logsumexp(v) if v else floor for v in per_word]
    return out, any(per_word)


def _logsumexp(values: Sequence[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def first_token_logprobs(data: Any) -> dict[str, float]:
    """token -> log-prob of the first generated position of a chat-completion body.

    Raises ``ValueError`` for a body that is not a chat completion (retried as malformed) and
    ``LookupError`` for a completion without log-probabilities (a configuration problem).
    """
    if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
        raise ValueError("body has no 'choices' list")
    choice = data["choices"][0]
    if not isinstance(choice, dict):
        raise ValueError("choices[0] is not an object")
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        raise LookupError("the reply has no logprobs (choices[0].logprobs.content is missing or empty)")
    first = content[0]
    if not isinstance(first, dict):
        raise ValueError("logprobs.content[0] is not an object")
    top = first.get("top_logprobs") or []
    if isinstance(top, dict):  # the legacy completions form {token: logprob}
        top = [{"token": k, "logprob": v} for k, v in top.items()]
    entries = list(top)
    if "token" in first and "logprob" in first:
        entries.append(first)
    out: dict[str, float] = {}
    for e in entries:
        try:
            token, lp = str(e["token"]), float(e["logprob"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"malformed top_logprobs entry {e!r}") from None
        out.setdefault(token, lp)
    if not out:
        raise LookupError("the reply's logprobs list no tokens")
    return out


# --------------------------------------------------------------------------------------------------
# Requests


ImageEncoding = Literal["png", "source"]
_PASSTHROUGH_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_EXIF_ORIENTATION = 0x0112


def encode_png_data_url(path: str | os.PathLike[str]) -> str:
    """``data:image/png;base64,...`` of ``load_rgb(path)`` (lossless; see module docstring)."""
    buf = io.BytesIO()
    Image.fromarray(load_rgb(path)).save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def encode_data_url(path: str | os.PathLike[str], encoding: ImageEncoding = "png") -> str:
    """Data URL of an image: always a PNG of ``load_rgb``'s pixels, or (``"source"``) the file's own
    bytes when they decode to exactly those pixels (8-bit RGB JPEG/PNG/WebP without EXIF rotation)."""
    if encoding == "source":
        mime = _passthrough_mime(path)
        if mime is not None:
            data = Path(path).read_bytes()
            return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")
    return encode_png_data_url(path)


def _passthrough_mime(path: str | os.PathLike[str]) -> str | None:
    """MIME type if the file can be sent unchanged, else None (header only; no pixel decoding)."""
    try:
        with Image.open(path) as im:
            mime = _PASSTHROUGH_FORMATS.get(im.format or "")
            if mime is None or im.mode != "RGB" or getattr(im, "n_frames", 1) != 1:
                return None
            if "transparency" in im.info:  # a tRNS colour key: another decoder may honour it
                return None
            if im.format == "PNG" and _png_bit_depth(path) != 8:  # Pillow shows 16-bit RGB as "RGB"
                return None
            if im.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                return None
            return mime
    except Exception:  # unreadable: let load_rgb raise its ImageLoadError naming the file
        return None


def _png_bit_depth(path: str | os.PathLike[str]) -> int:
    """Bit depth from a PNG's IHDR chunk (byte 24 of the file)."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 else -1


def build_messages(prompt: Prompt, data_urls: Sequence[str]) -> list[dict[str, Any]]:
    """OpenAI chat messages for ``prompt`` with its images given as data URLs."""
    if len(data_urls) != prompt.n_images:
        raise ValueError(f"prompt takes {prompt.n_images} images, got {len(data_urls)}")
    content: list[dict[str, Any]] = []
    for kind, value in prompt.parts:
        if kind == "image":
            content.append({"type": "image_url", "image_url": {"url": data_urls[int(value)]}})
        else:
            content.append({"type": "text", "text": str(value)})
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if prompt.answer_prefix is not None:
        messages.append({"role": "assistant", "content": prompt.answer_prefix})
    return messages


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent/invalid."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
        return max(0.0, (when - datetime.datetime.now(when.tzinfo or datetime.UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


class OpenAITeacher:
    """A :class:`~iqalens.leaf.teachers.base.Teacher` backed by an OpenAI-compatible server.

    ``base_url`` is the API root that ``/chat/completions`` is appended to (vLLM:
    ``http://HOST:8000/v1``). Pair requests carry two images: vLLM needs
    ``--limit-mm-per-prompt '{"image": 2}'`` (or its older ``image=2`` form) for that.
    ``api_key`` defaults to the ``OPENAI_API_KEY`` environment variable (sent as a bearer token;
    never printed). ``judge_images``/``judge_pairs`` are synchronous; ``ajudge_images`` and
    ``ajudge_pairs`` are the same for callers already in an event loop.
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
            raise ValueError("max_concurrency and top_logprobs must be >= 1, retry counts >= 0")
        if prefill not in ("continue_final_message", "trailing_assistant", "none"):
            raise ValueError(f"unknown prefill mode {prefill!r}")
        if image_encoding not in ("png", "source"):
            raise ValueError(f"unknown image encoding {image_encoding!r}")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self._api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.max_malformed_retries = max_malformed_retries
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
        #: Called with 1 after each finished image or pair (e.g. a tqdm bar's ``update``).
        self.progress = progress

    def __repr__(self) -> str:
        return f"OpenAITeacher(model={self.model!r}, base_url={self.base_url!r}, prefill={self.prefill!r})"

    # ---------------------------------------------------------------------------------- public API

    def judge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """One point-wise judgment per image, in input order (runs its own event loop)."""
        return _run_sync(lambda: self.ajudge_images(paths))

    def judge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """One judgment per ordered pair, each asked in both orders, in input order."""
        return _run_sync(lambda: self.ajudge_pairs(pairs))

    async def ajudge_images(self, paths: Sequence[Path]) -> list[PointJudgment]:
        """Async :meth:`judge_images`."""
        prompt = point_prompt(self.prefill != "none")

        async def one(session: _Session, i: int) -> PointJudgment:
            url = await asyncio.to_thread(encode_data_url, paths[i], self.image_encoding)
            logits = await self._ask(session, prompt, [url])
            return PointJudgment.from_logits(logits)

        return await self._run(len(paths), one)

    async def ajudge_pairs(self, pairs: Sequence[tuple[Path, Path]]) -> list[PairJudgment]:
        """Async :meth:`judge_pairs`."""
        prompt = pair_prompt(self.prefill != "none")

        async def one(session: _Session, i: int) -> PairJudgment:
            a, b = pairs[i]
            url_a, url_b = await asyncio.to_thread(
                lambda: (encode_data_url(a, self.image_encoding), encode_data_url(b, self.image_encoding))
            )
            l_ab, l_ba = await _gather_or_cancel(
                self._ask(session, prompt, [url_a, url_b]), self._ask(session, prompt, [url_b, url_a])
            )
            return PairJudgment.from_orders(_first_prob(l_ab), _first_prob(l_ba))

        return await self._run(len(pairs), one)

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

    # ---------------------------------------------------------------------------------- internals

    def _error(self, cls: type[TeacherServerError], problem: str) -> TeacherServerError:
        return cls(self.base_url, self.model, problem)

    async def _run(self, n: int, handler: Callable[[_Session, int], Awaitable[T]]) -> list[T]:
        """Run ``handler(i)`` for i in range(n) on a pool of workers; results in input order.

        A fixed pool (instead of one task per item) keeps memory bounded by the concurrency for
        millions of items: at most ``max_concurrency`` images are encoded and held at once.
        The first exception cancels the remaining work and is re-raised.
        """
        self.last_stats = RunStats()
        if n == 0:
            return []
        results: list[T | None] = [None] * n
        indices = iter(range(n))
        limits = httpx.Limits(
            max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency
        )
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        timeout = httpx.Timeout(self.timeout_s, pool=None)
        async with httpx.AsyncClient(
            limits=limits, headers=headers, timeout=timeout, trust_env=self.trust_env
        ) as client:
            session = _Session(client, asyncio.Semaphore(self.max_concurrency), self.last_stats)

            async def worker() -> None:
                for i in indices:  # shared iterator: each index is taken by exactly one worker
                    results[i] = await handler(session, i)
                    if self.progress is not None:
                        self.progress(1)

            tasks = [asyncio.create_task(worker()) for _ in range(min(self.max_concurrency, n))]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    if t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        stats = self.last_stats
        if stats.unmatched:
            warnings.warn(
                f"{self.base_url} (model {self.model!r}): {stats.unmatched} of {stats.replies} replies had "
                "no answer word among the top tokens and were judged uniform (reliability 0); check the "
                "prefill mode and the server's chat template",
                RuntimeWarning,
                stacklevel=3,
            )
        return results  # type: ignore[return-value]

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
                        f"malformed reply {malformed} times in a row: {outcome.problem}",
                    )
                delay = self._backoff(malformed - 1)
            else:
                if attempt >= self.max_retries:
                    raise self._error(
                        RequestFailedError, f"gave up after {attempt + 1} attempts; last: {outcome.problem}"
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
                ) from None
            except ValueError as exc:  # json.JSONDecodeError is a ValueError too
                return _Retry("malformed", f"{exc}; body starts {response.text[:200]!r}", malformed=True)
        if status == 429 or (status >= 500 and status != 501):  # 501: the server lacks the route
            retry_after = _retry_after_seconds(response.headers.get("retry-after"))
            return _Retry(str(status), f"HTTP {status}: {response.text[:300]}", retry_after)
        hint = " (does base_url end with the API root, e.g. /v1?)" if status == 404 else ""
        raise self._error(RequestFailedError, f"HTTP {status}{hint}: {response.text[:500]}")

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries spread out."""
        d = min(self.backoff_max_s, self.backoff_base_s * (2.0**attempt))
        return d / 2.0 + self._rng.uniform(0.0, d / 2.0)


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


async def _gather_or_cancel(*aws: Awaitable[T]) -> list[T]:
    """Like ``asyncio.gather`` but cancels the siblings when one fails (no orphaned requests)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous code, also inside a running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()  # type: ignore[arg-type]

"""A small OpenAI-compatible chat-completions server for testing the server teacher offline.

It speaks the subset :mod:`iqalens.leaf.teachers.openai_compat` uses (``POST /v1/chat/completions``
with ``logprobs``/``top_logprobs``) on 127.0.0.1 only, and answers deterministically from the
images' content so tests can check what the client makes of the answers:

- point-wise (one image): level distribution centred on ``4 * (1 - brightness)`` (bright images
  are "excellent", dark ones "bad"), see :func:`level_probs`;
- pair-wise (two images): ``P(first) = sigmoid(SLOPE * (b1 - b2) + POSITION_BIAS)``, a constant
  bias towards the first image that asking in both orders must cancel.

Faults are injected on demand, one per request, from a FIFO queue (``server.faults``) or for every
request (``server.always``): ``"slow"`` (sleeps ``slow_s`` before answering), ``"429"`` (with
``Retry-After: retry_after``), any other HTTP status as digits (``"500"``, ``"503"``),
``"malformed"`` (HTTP 200 with a body that is not JSON), ``"nologprobs"`` (a completion whose
``logprobs`` is null) and ``"drop"`` (closes the connection without a reply). Every request is
recorded (brightness of its images, its order, its body) and the number of requests in flight is
tracked, so tests can see concurrency. Requests past
``max_requests`` get HTTP 400, which the client does not retry, so a runaway client stops.

Random faults, like a flaky server under load (``fault_rates``, e.g. ``{"429": 0.08, "html500": 0.08,
"malformed": 0.06, "slow": 0.04, "drop": 0.04}``): the fault of a request is drawn from
``fault_seed``, the request body and how many times that same body was asked before, so it does not
depend on the order in which concurrent requests arrive: a seed gives the same faults every run.
``"html500"`` is an HTML error page with HTTP 500 that echoes the request's headers, as a debug
page might (the Authorization header included: the client must not pass it on); ``"stall"``
sleeps ``stall_s`` and then answers (slow but within a client's timeout). ``poison``, a function of
the brightness values of a request's images returning a fault or None, gives the requests of
chosen items a fault every time: items that can never be answered.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

LEVEL_TOKENS = (" excellent", " good", " fair", " poor", " bad")
PAIR_TOKENS = (" first", " second")
LEVEL_MASS = 0.9  # the rest goes to distractor tokens
DISTRACTORS = (("The", 0.06), (" very", 0.04))
SLOPE = 6.0
POSITION_BIAS = 0.4
SPREAD = 0.6


def level_probs(brightness: float) -> np.ndarray:
    """Probabilities of the five levels (excellent..bad), renormalised to the levels, for a brightness."""
    centre = 4.0 * (1.0 - brightness)
    z = -((np.arange(5.0) - centre) ** 2) / (2.0 * SPREAD**2)
    p = np.exp(z - z.max())
    return p / p.sum()


def pair_first_prob(b_first: float, b_second: float) -> float:
    """P(first image better) as this server answers it (position bias included)."""
    return 1.0 / (1.0 + math.exp(-(SLOPE * (b_first - b_second) + POSITION_BIAS)))


@dataclass
class Seen:
    """One request as the server saw it."""

    brightness: tuple[float, ...]
    body: dict[str, Any]
    fault: str | None
    authorization: str | None


@dataclass
class ServerState:
    """Configuration and observations shared between the test and the handler threads."""

    model: str = "fake-vlm"
    faults: deque[str] = field(default_factory=deque)
    always: str | None = None
    delay_s: float = 0.0  # added to every answer, so concurrent requests overlap
    slow_s: float = 2.0
    stall_s: float = 0.05
    retry_after: str = "0"
    fault_rates: dict[str, float] = field(default_factory=dict)
    fault_seed: int = 0
    poison: Callable[[tuple[float, ...]], str | None] | None = None
    asked: dict[str, int] = field(default_factory=dict)  # request body digest -> times asked
    max_requests: int = 2000
    admitted: int = 0  # requests let past the budget check, counted under the same lock as the check
    level_tokens: tuple[str, ...] = LEVEL_TOKENS
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def n_requests(self) -> int:
        with self.lock:
            return len(self.seen)


class FakeOpenAIServer:
    """Context manager running the server in a daemon thread on 127.0.0.1 (an ephemeral port)."""

    def __init__(self, **config: Any) -> None:
        self.state = ServerState(**config)
        state = self.state

        class Handler(_Handler):
            shared = state

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent connects from the client

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped and timed-out connections are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's connection pool expects
    shared: ServerState

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence per-request logs
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        st = self.shared
        with st.lock:
            if st.admitted >= st.max_requests:
                over = True
            else:
                over = False
                st.admitted += 1  # counted here, not when recorded, so concurrent requests cannot overshoot
                fault = st.faults.popleft() if st.faults else st.always
                st.in_flight += 1
                st.max_in_flight = max(st.max_in_flight, st.in_flight)
        if over:
            self._send(400, {"error": {"message": "request budget of the fake server exhausted"}})
            return
        try:
            self._answer(raw, fault)
        finally:
            with st.lock:
                st.in_flight -= 1

    def _answer(self, raw: bytes, fault: str | None) -> None:
        st = self.shared
        body = json.loads(raw)
        brightness = tuple(_image_brightness(url) for msg in body["messages"] for url in _image_urls(msg))
        with st.lock:
            if fault is None and st.poison is not None:
                fault = st.poison(brightness)
            if fault is None and st.fault_rates:
                fault = self._draw_fault(raw)
            st.seen.append(Seen(brightness, body, fault, self.headers.get("Authorization")))
        if body.get("model") != st.model:
            self._send(404, {"error": {"message": f"model {body.get('model')!r} does not exist"}})
            return
        if st.delay_s:
            st.stop.wait(st.delay_s)
        if fault == "slow":
            st.stop.wait(st.slow_s)
        elif fault == "stall":
            st.stop.wait(st.stall_s)
        elif fault == "html500":
            echoed = sorted(self.headers.items(), key=lambda kv: kv[0].lower() != "authorization")
            headers = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in echoed)
            page = f"<html><body><h1>500 Internal Server Error</h1><ul>{headers}</ul></body></html>"
            self._send_raw(500, page.encode(), "text/html")
            return
        elif fault == "429":
            self._send(429, {"error": {"message": "injected rate limit"}}, {"Retry-After": st.retry_after})
            return
        elif fault is not None and fault.isdigit():
            self._send(int(fault), {"error": {"message": f"injected HTTP {fault}"}})
            return
        elif fault == "malformed":
            self._send_raw(200, b'{"choices": [ this is not json', "application/json")
            return
        elif fault == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        top = self._top_tokens(body, brightness)
        k = int(body.get("top_logprobs") or 0)
        entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[:k]]
        logprobs = (
            None
            if fault == "nologprobs" or not body.get("logprobs")
            else {
                "content": [
                    {"token": top[0][0], "logprob": top[0][1], "bytes": None, "top_logprobs": entries}
                ]
            }
        )
        reply = {
            "id": f"chatcmpl-{len(st.seen)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": st.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": top[0][0]},
                    "logprobs": logprobs,
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
        }
        self._send(200, reply)

    def _draw_fault(self, raw: bytes) -> str | None:
        """The random fault of this request (call with the lock held); see the module docstring."""
        st = self.shared
        digest = hashlib.sha256(raw).hexdigest()
        n = st.asked.get(digest, 0)
        st.asked[digest] = n + 1
        u = random.Random(f"{st.fault_seed}:{digest}:{n}").random()
        for fault, rate in st.fault_rates.items():
            if u < rate:
                return fault
            u -= rate
        return None

    def _top_tokens(self, body: dict[str, Any], brightness: tuple[float, ...]) -> list[tuple[str, float]]:
        """(token, logprob) pairs, most likely first, as a model would return them."""
        prefilled = body["messages"][-1]["role"] == "assistant"
        if len(brightness) == 1:
            words = self.shared.level_tokens
            probs = LEVEL_MASS * level_probs(brightness[0])
        else:
            words = PAIR_TOKENS
            p = pair_first_prob(brightness[0], brightness[1])
            probs = LEVEL_MASS * np.array([p, 1.0 - p])
        if not prefilled:  # a fresh answer starts capitalised and without a leading space
            words = tuple(w.strip().capitalize() for w in words)
        pairs = [(w, float(p)) for w, p in zip(words, probs, strict=True)] + list(DISTRACTORS)
        pairs.sort(key=lambda wp: -wp[1])
        return [(w, math.log(max(p, 1e-300))) for w, p in pairs]

    def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test); nothing to do


def _image_urls(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [part["image_url"]["url"] for part in content if part.get("type") == "image_url"]


def _image_brightness(data_url: str) -> float:
    """Mean of the decoded image in [0, 1]."""
    header, _, payload = data_url.partition(",")
    if not header.startswith("data:image/") or not header.endswith(";base64"):
        raise ValueError(f"not a base64 image data URL: {header[:40]!r}")
    with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
        return float(np.asarray(im.convert("RGB"), dtype=np.float64).mean() / 255.0)

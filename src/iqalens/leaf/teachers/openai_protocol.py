"""The request and reply formats of the OpenAI-compatible server teacher (no networking here).

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
judgment (reliability 0), is counted in ``OpenAITeacher.last_stats``, and triggers a warning.

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
"""

from __future__ import annotations

import base64
import datetime
import io
import math
import os
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from iqalens.errors import InvalidInputError
from iqalens.images import load_rgb
from iqalens.leaf.prompts import Prompt

#: Characters tokenizers put in front of a word: space, GPT-2 byte-level "Ġ", SentencePiece "▁".
_WORD_MARKERS = " \t\n\u0120\u2581"
#: Log-probs at or below this stand for -inf (vLLM reports masked tokens as -9999.0).
_NEG_INF_SENTINEL = -1000.0
#: Shortest word piece accepted as a prefix match ("ex" -> excellent); single letters are too vague.
MIN_PIECE_CHARS = 2

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
        raise InvalidInputError("body has no 'choices' list")
    choice = data["choices"][0]
    if not isinstance(choice, dict):
        raise InvalidInputError("choices[0] is not an object")
    logprobs = choice.get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not content:
        raise LookupError("the reply has no logprobs (choices[0].logprobs.content is missing or empty)")
    first = content[0]
    if not isinstance(first, dict):
        raise InvalidInputError("logprobs.content[0] is not an object")
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
            raise InvalidInputError(f"malformed top_logprobs entry {e!r}") from None
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
        raise InvalidInputError(f"prompt takes {prompt.n_images} images, got {len(data_urls)}")
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


def retry_after_seconds(value: str | None) -> float | None:
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

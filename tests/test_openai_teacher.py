"""The OpenAI-compatible server teacher against a real local HTTP server with injected faults."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fake_openai_server import FakeOpenAIServer, level_probs, pair_first_prob
from iqalens.images import ImageLoadError, load_rgb
from iqalens.leaf.judgments import LEVELS
from iqalens.leaf.prompts import ANSWER_PREFIX, PAIR_ANSWER_PREFIX, PROMPT_VERSION
from iqalens.leaf.teachers.base import Teacher
from iqalens.leaf.teachers.openai_compat import (
    MalformedResponseError,
    NoLogprobsError,
    OpenAITeacher,
    RequestFailedError,
    choice_logprobs,
    encode_data_url,
    first_token_logprobs,
    match_choice,
)


def _write_images(folder: Path, brightness: list[float], size: int = 16) -> list[Path]:
    """Small textured images whose mean brightness is (close to) the given values."""
    rng = np.random.default_rng(0)
    paths = []
    for i, b in enumerate(brightness):
        noise = rng.integers(-6, 7, size=(size, size, 3))
        arr = np.clip(np.round(b * 255) + noise, 0, 255).astype(np.uint8)
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths


def _brightness(path: Path) -> float:
    return float(load_rgb(path).astype(np.float64).mean() / 255.0)


def _teacher(server: FakeOpenAIServer, **kw: object) -> OpenAITeacher:
    options: dict[str, object] = dict(
        max_concurrency=8, timeout_s=2.0, backoff_base_s=0.01, backoff_max_s=0.05, seed=0, trust_env=False
    )
    options.update(kw)
    return OpenAITeacher("fake-vlm", server.base_url, **options)  # type: ignore[arg-type]


@pytest.fixture
def server():
    with FakeOpenAIServer() as srv:
        yield srv


# ------------------------------------------------------------------------------------ token reading


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (" good", 1),
        ("Good", 1),
        ("\u0120excellent", 0),  # GPT-2 byte-level marker
        ("\u2581poor", 3),  # SentencePiece marker
        (" BAD", 4),
        ("fair.", 2),
        (" excell", 0),  # word piece, prefix of one level only
        ("po", 3),
        ("The", None),
        (" goods", None),  # a different word, not a level followed by punctuation
        ("g", None),  # a single letter is too vague
        ("", None),
    ],
)
def test_match_choice(token: str, expected: int | None) -> None:
    assert match_choice(token, LEVELS) == expected


def test_choice_logprobs_sums_variants_and_floors_absent_words() -> None:
    top = {" good": math.log(0.5), "good": math.log(0.2), " fair": math.log(0.1), "The": math.log(0.05)}
    logits, matched = choice_logprobs(top, LEVELS, floor_prob=1e-6)
    assert matched
    assert logits[1] == pytest.approx(math.log(0.7))
    assert logits[2] == pytest.approx(math.log(0.1))
    assert logits[0] == logits[3] == logits[4] == pytest.approx(math.log(1e-6))
    # The floor never exceeds the least likely listed token: an absent word is less likely than it.
    logits, _ = choice_logprobs({" good": -1.0, "x": -20.0}, LEVELS, floor_prob=1e-3)
    assert logits[0] == -20.0


def test_first_token_logprobs_distinguishes_malformed_from_missing_logprobs() -> None:
    with pytest.raises(ValueError):
        first_token_logprobs({"object": "error"})
    with pytest.raises(LookupError):
        first_token_logprobs({"choices": [{"message": {"content": "good"}, "logprobs": None}]})
    body = {"choices": [{"logprobs": {"content": [{"token": " good", "logprob": -0.1, "top_logprobs": []}]}}]}
    assert first_token_logprobs(body) == {" good": -0.1}
    legacy = {"choices": [{"logprobs": {"content": [{"top_logprobs": {" bad": -0.2, " poor": -2.0}}]}}]}
    assert first_token_logprobs(legacy) == {" bad": -0.2, " poor": -2.0}


def test_masked_tokens_do_not_lower_the_floor() -> None:
    """vLLM reports -inf as -9999.0; such a token must not push absent words' floor towards 0."""
    logits, _ = choice_logprobs({" good": -0.1, "x": -9999.0}, LEVELS, floor_prob=1e-6)
    assert logits[0] == pytest.approx(math.log(1e-6))


# ------------------------------------------------------------------------------------ point-wise


def test_point_judgments_follow_image_content_in_input_order(
    server: FakeOpenAIServer, tmp_path: Path
) -> None:
    levels = [0.15, 0.85, 0.5, 0.3, 0.7, 0.95, 0.05, 0.6, 0.4, 0.2]
    paths = _write_images(tmp_path, levels)
    teacher = _teacher(server)
    judgments = teacher.judge_images(paths)
    assert len(judgments) == len(paths)
    for path, j in zip(paths, judgments, strict=True):
        # The client's probabilities are the server's level distribution (all five are in the top 20).
        np.testing.assert_allclose(j.probs, level_probs(_brightness(path)), atol=1e-9)
    by_brightness = sorted(zip(levels, judgments, strict=True), key=lambda t: t[0])
    scores = [j.expected for _, j in by_brightness]
    assert all(a < b for a, b in zip(scores, scores[1:], strict=False))
    assert teacher.last_stats.requests == len(paths) and teacher.last_stats.retries == 0


def test_request_body_follows_the_protocol(server: FakeOpenAIServer, tmp_path: Path) -> None:
    (path,) = _write_images(tmp_path, [0.5])
    _teacher(server, api_key="sk-test-123").judge_images([path])
    (seen,) = server.state.seen
    body = seen.body
    assert body["model"] == "fake-vlm"
    assert body["temperature"] == 0 and body["max_tokens"] == 1
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": ANSWER_PREFIX}
    assert seen.authorization == "Bearer sk-test-123"
    (image_part,) = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    np.testing.assert_array_equal(decoded, load_rgb(path))  # lossless: the server sees the same pixels


def _decode_data_url(url: str) -> tuple[str, np.ndarray]:
    header, payload = url.split(",", 1)
    with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
        return header, np.asarray(im.convert("RGB"))


def test_source_encoding_sends_safe_files_unchanged_and_re_encodes_the_rest(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    jpeg = tmp_path / "plain.jpg"
    Image.fromarray(rgb).save(jpeg, quality=80)
    png = tmp_path / "plain.png"
    Image.fromarray(rgb).save(png)
    rgba = tmp_path / "alpha.png"
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(rgba)
    grey = tmp_path / "grey.png"
    Image.fromarray(rgb[..., 0]).save(grey)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(rgb).save(rotated, quality=80, exif=exif)

    url = encode_data_url(jpeg, "source")
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == jpeg.read_bytes()
    assert encode_data_url(png, "source").startswith("data:image/png;base64,")
    for path in (jpeg, png, rgba, grey, rotated):
        header, pixels = _decode_data_url(encode_data_url(path, "source"))
        np.testing.assert_array_equal(pixels, load_rgb(path))  # what the server decodes == load_rgb
        if path in (rgba, grey, rotated):
            assert header == "data:image/png;base64"  # re-encoded, not passed through
        _, pixels = _decode_data_url(encode_data_url(path, "png"))
        np.testing.assert_array_equal(pixels, load_rgb(path))


def test_prefill_modes_and_extra_body_shape_the_request() -> None:
    from iqalens.leaf.prompts import point_prompt

    url = "data:image/png;base64,AAAA"
    trailing = OpenAITeacher("m", prefill="trailing_assistant", extra_body={"top_k": 1})
    body = trailing.request_body(point_prompt(True), [url])
    assert body["messages"][-1] == {"role": "assistant", "content": ANSWER_PREFIX}
    assert "continue_final_message" not in body and body["top_k"] == 1
    assert trailing.prompt_version == PROMPT_VERSION  # same question as continue_final_message
    with pytest.raises(ValueError, match="prefill"):
        OpenAITeacher("m", prefill="bogus")  # type: ignore[arg-type]


def test_concurrency_is_used_and_bounded(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, list(np.linspace(0.1, 0.9, 24)))
    with FakeOpenAIServer(delay_s=0.2) as srv:
        start = time.perf_counter()
        judgments = _teacher(srv, max_concurrency=6).judge_images(paths)
        elapsed = time.perf_counter() - start
        assert srv.state.max_in_flight == 6  # overlapping requests, never more than the bound
    assert len(judgments) == 24
    assert elapsed < 0.5 * 24 * 0.2  # sequential would take 4.8 s; 6-way takes ~0.8 s


def test_fifty_images_finish_quickly(server: FakeOpenAIServer, tmp_path: Path) -> None:
    paths = _write_images(tmp_path, list(np.linspace(0.05, 0.95, 50)), size=64)
    start = time.perf_counter()
    judgments = _teacher(server, max_concurrency=16).judge_images(paths)
    elapsed = time.perf_counter() - start
    assert len(judgments) == 50 and server.state.n_requests == 50
    print(f"\n50 images via the local server, 16 concurrent: {elapsed:.3f} s")
    assert elapsed < 5.0, f"50 images took {elapsed:.2f} s"


def test_transient_faults_are_retried(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, [0.2, 0.4, 0.6, 0.8])
    faults = ["500", "429", "drop", "malformed", "slow", "503"]
    with FakeOpenAIServer() as clean:
        expected = _teacher(clean).judge_images(paths)
    with FakeOpenAIServer(slow_s=3.0) as srv:
        srv.state.faults.extend(faults)
        teacher = _teacher(srv, max_concurrency=2, timeout_s=0.4)
        judgments = teacher.judge_images(paths)
        assert srv.state.n_requests == len(paths) + len(faults)
    assert judgments == expected
    reasons = teacher.last_stats.retry_reasons
    assert teacher.last_stats.retries == len(faults)
    assert {"500", "429", "connection", "malformed", "timeout"} <= set(reasons)


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    (path,) = _write_images(tmp_path, [0.5])
    with FakeOpenAIServer(retry_after="0.3") as srv:
        srv.state.faults.append("429")
        start = time.perf_counter()
        _teacher(srv, backoff_max_s=1.0).judge_images([path])
        assert time.perf_counter() - start >= 0.3
        assert srv.state.n_requests == 2


def test_gives_up_after_max_retries_naming_server_and_model(tmp_path: Path) -> None:
    (path,) = _write_images(tmp_path, [0.5])
    with FakeOpenAIServer(always="500") as srv:
        with pytest.raises(RequestFailedError) as err:
            _teacher(srv, max_retries=2, api_key="sk-secret").judge_images([path])
        assert srv.state.n_requests == 3
    message = str(err.value)
    assert srv.base_url in message and "fake-vlm" in message and "3 attempts" in message
    assert "sk-secret" not in message


def test_missing_logprobs_is_a_clear_error_without_retries(tmp_path: Path) -> None:
    (path,) = _write_images(tmp_path, [0.5])
    with FakeOpenAIServer(always="nologprobs") as srv:
        with pytest.raises(NoLogprobsError) as err:
            _teacher(srv).judge_images([path])
        assert srv.state.n_requests == 1
    message = str(err.value)
    assert srv.base_url in message and "fake-vlm" in message and "logprobs" in message


def test_malformed_bodies_are_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    (path,) = _write_images(tmp_path, [0.5])
    with FakeOpenAIServer(always="malformed") as srv:
        with pytest.raises(MalformedResponseError, match="malformed reply 3 times") as err:
            _teacher(srv, max_malformed_retries=2).judge_images([path])
        assert srv.state.n_requests == 3
    assert srv.base_url in str(err.value)


def test_client_errors_fail_fast(server: FakeOpenAIServer, tmp_path: Path) -> None:
    (path,) = _write_images(tmp_path, [0.5])
    teacher = OpenAITeacher("no-such-model", server.base_url, backoff_base_s=0.01, trust_env=False)
    with pytest.raises(RequestFailedError, match="HTTP 404") as err:
        teacher.judge_images([path])
    assert "no-such-model" in str(err.value) and server.state.n_requests == 1


def test_unreadable_image_raises_image_load_error(server: FakeOpenAIServer, tmp_path: Path) -> None:
    paths = _write_images(tmp_path, [0.3, 0.6])
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageLoadError, match="broken.png"):
        _teacher(server).judge_images([paths[0], bad, paths[1]])


def test_word_pieces_and_a_short_top_list(tmp_path: Path) -> None:
    """A tokenizer that splits "excellent", and a server that returns only the top 3 tokens."""
    paths = _write_images(tmp_path, [0.97, 0.5])
    tokens = (" excell", " good", " fair", " poor", " bad")
    with FakeOpenAIServer(level_tokens=tokens) as srv:
        bright, mid = _teacher(srv, top_logprobs=3).judge_images(paths)
    assert int(np.argmax(bright.probs)) == 0  # " excell" was read as "excellent"
    assert int(np.argmax(mid.probs)) == 2
    # Absent from the top 3, so only the floor: poor and bad for the bright image, the extremes for mid.
    assert max(bright.probs[3:]) < 1e-5
    assert max(mid.probs[0], mid.probs[4]) < 1e-5 and min(mid.probs[1:4]) > 0.1


def test_replies_without_answer_words_warn_and_give_no_signal(tmp_path: Path) -> None:
    paths = _write_images(tmp_path, [0.2, 0.8])
    with FakeOpenAIServer(level_tokens=(" one", " two", " three", " four", " five")) as srv:
        teacher = _teacher(srv)
        with pytest.warns(RuntimeWarning, match="2 of 2 replies had no answer word"):
            judgments = teacher.judge_images(paths)
    assert teacher.last_stats.unmatched == 2
    for j in judgments:
        np.testing.assert_allclose(j.probs, 0.2)
        assert j.reliability == pytest.approx(0.0)


def test_no_prefill_mode_asks_for_one_word(server: FakeOpenAIServer, tmp_path: Path) -> None:
    paths = _write_images(tmp_path, [0.1, 0.9])
    teacher = _teacher(server, prefill="none")
    dark, bright = teacher.judge_images(paths)
    assert bright.expected > dark.expected  # capitalised, space-less tokens ("Good") were matched
    body = server.state.seen[0].body
    assert "continue_final_message" not in body and body["messages"][-1]["role"] == "user"
    assert teacher.prompt_version != PROMPT_VERSION


# ------------------------------------------------------------------------------------ pair-wise


def test_pairs_are_asked_in_both_orders(server: FakeOpenAIServer, tmp_path: Path) -> None:
    paths = _write_images(tmp_path, [0.2, 0.5, 0.8])
    b = [_brightness(p) for p in paths]
    pairs = [(paths[0], paths[1]), (paths[2], paths[0]), (paths[1], paths[2])]
    idx = [(0, 1), (2, 0), (1, 2)]
    done: list[int] = []
    judgments = _teacher(server, progress=done.append).judge_pairs(pairs)
    assert done == [1, 1, 1]
    seen_orders = {tuple(round(v, 6) for v in s.brightness) for s in server.state.seen}
    assert server.state.n_requests == 2 * len(pairs)
    for (i, k), j in zip(idx, judgments, strict=True):
        assert (round(b[i], 6), round(b[k], 6)) in seen_orders
        assert (round(b[k], 6), round(b[i], 6)) in seen_orders
        assert j.p_ab == pytest.approx(pair_first_prob(b[i], b[k]), abs=1e-9)
        assert j.p_ba == pytest.approx(pair_first_prob(b[k], b[i]), abs=1e-9)
        assert (j.p_first_better > 0.5) == (b[i] > b[k])
        assert not j.derived
    body = server.state.seen[0].body
    assert sum(p["type"] == "image_url" for p in body["messages"][0]["content"]) == 2
    assert body["messages"][-1] == {"role": "assistant", "content": PAIR_ANSWER_PREFIX}


def test_both_orders_cancel_position_bias(server: FakeOpenAIServer, tmp_path: Path) -> None:
    a, b = _write_images(tmp_path, [0.5, 0.55])
    ab, ba = _teacher(server).judge_pairs([(a, b), (b, a)])
    # The server favours the first position; one order alone would say a > b, both orders do not.
    assert ab.p_ab > 0.5
    assert ab.p_first_better < 0.5
    assert ab.p_first_better + ba.p_first_better == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ interface


def test_teacher_interface_and_empty_input(server: FakeOpenAIServer) -> None:
    teacher = _teacher(server)
    assert isinstance(teacher, Teacher)
    assert teacher.teacher_id == "openai:fake-vlm" and teacher.prompt_version == PROMPT_VERSION
    assert teacher.supports_pairs
    assert teacher.judge_images([]) == [] and teacher.judge_pairs([]) == []
    assert server.state.n_requests == 0


def test_sync_api_works_inside_a_running_event_loop(server: FakeOpenAIServer, tmp_path: Path) -> None:
    paths = _write_images(tmp_path, [0.3])

    async def inside() -> int:
        return len(_teacher(server).judge_images(paths))  # e.g. from a notebook cell

    assert asyncio.run(inside()) == 1

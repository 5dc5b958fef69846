"""The teacher prompts, shared by every model backend (HF models and OpenAI-compatible servers).

One place for the texts keeps judgments from different backends comparable: a Qwen2-VL served by
vLLM and the same checkpoint run through transformers see the same question and the same answer
prefix, so they differ only by numerics. Any change to a text below must bump ``PROMPT_VERSION``,
because the judgments store keys judgments by prompt version and would otherwise mix answers to
different questions.

The point-wise prompt follows the Q-Align/LEAF recipe: the user turn holds the image and a
question, the assistant turn is *pre-filled* with ``ANSWER_PREFIX`` ("The quality of the image
is"), and the teacher reads the next-token probabilities of the five level words. Pre-filling makes
the level word the very next token, so one forward step (``max_tokens=1``) suffices and the
probabilities are not spread over paraphrases ("I", "The", "Overall", ...).

Backends that cannot continue an assistant turn use the *no-prefill* variant: the question itself
asks for a one-word answer, and the level word is expected as the first generated token. That is a
different prompt, so it has its own version string (see :func:`prompt_version`).

The prompts are :class:`iqalens.models.prompts.Prompt` values (user-turn parts, answer prefix,
answer words); each backend turns the parts into its own message format.
"""

from __future__ import annotations

from iqalens.leaf.judgments import LEVELS
from iqalens.models.prompts import Prompt

#: Bump whenever a text, the parts' order or the choice words change.
PROMPT_VERSION = "leaf-q1"

#: Assistant-turn prefix after which the next token is read (point-wise).
ANSWER_PREFIX = "The quality of the image is"
#: Point-wise question (with a pre-filled answer).
POINT_QUESTION = "Can you evaluate the quality of the image?"
#: Point-wise question when the backend cannot pre-fill the answer: it asks for the word itself.
POINT_QUESTION_NO_PREFILL = (
    "Can you evaluate the quality of the image? Answer with exactly one word: "
    "excellent, good, fair, poor, or bad."
)

#: Pair-wise choice words, in the order (first better, second better).
PAIR_CHOICES: tuple[str, str] = ("first", "second")
#: Pair-wise question; the images are introduced as "first"/"second" so the words are unambiguous.
PAIR_QUESTION = "Which image has better quality? Answer first or second."
#: Assistant-turn prefix for pairs; the next token should be " first" or " second".
PAIR_ANSWER_PREFIX = "The image with better quality is the"
PAIR_QUESTION_NO_PREFILL = "Which image has better quality? Answer with exactly one word: first or second."

#: The five level words (best first), re-exported so backends import all prompt vocabulary here.
LEVEL_WORDS: tuple[str, ...] = LEVELS


def point_prompt(prefill: bool = True) -> Prompt:
    """The point-wise question about one image (image first, then the question)."""
    question = POINT_QUESTION if prefill else POINT_QUESTION_NO_PREFILL
    return Prompt(
        parts=(("image", 0), ("text", question)),
        answer_prefix=ANSWER_PREFIX if prefill else None,
        choices=LEVEL_WORDS,
        n_images=1,
    )


def pair_prompt(prefill: bool = True) -> Prompt:
    """The pair-wise question: both images, each labelled, in one user turn, then the question."""
    question = PAIR_QUESTION if prefill else PAIR_QUESTION_NO_PREFILL
    return Prompt(
        parts=(
            ("text", "First image:"),
            ("image", 0),
            ("text", "Second image:"),
            ("image", 1),
            ("text", question),
        ),
        answer_prefix=PAIR_ANSWER_PREFIX if prefill else None,
        choices=PAIR_CHOICES,
        n_images=2,
    )


def prompt_version(prefill: bool = True) -> str:
    """Version string keying judgments: the no-prefill variant is a different question."""
    return PROMPT_VERSION if prefill else f"{PROMPT_VERSION}-noprefill"

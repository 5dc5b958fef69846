"""Free-text answers -> one of the 8 classes: the aliases table and the parser.

A generative model asked "Which distortion does this image have?" may write "blurry", "Gaussian
noise", "JPEG artifacts" or "it is over-exposed" instead of the exact class word. Free generation
and the sampling consistency diagnostic therefore parse answers with one table of aliases per class
(:data:`ANSWER_ALIASES`, keyed by the taxonomy's class words, so a new class cannot be forgotten:
the table is checked against :data:`iqalens.taxonomy.CLASSES` at import).

Rules (all deterministic, documented because they decide accuracy):

- case-insensitive; an alias matches whole words only ("noisy" is not found in "annoisyance"),
  and the words of a multi-word alias may be separated by spaces, hyphens or underscores;
- the **first mention wins**: "blur, maybe noise" is blur. At one position the longest alias wins,
  so "color block" (KADID's spatial group) is jitter, not colorfulness;
- no alias anywhere -> :data:`UNPARSED`, which counts as a wrong answer in accuracy and is reported
  as the parse rate;
- a **negated mention is skipped**: "not blurry but noisy" is noise, "no blur, some noise" is
  noise. A mention is negated when one of the up to :data:`NEGATION_WINDOW` words before it, in
  the same clause (clauses end at ``. , ; : ! ?`` and at "but"), is a negator (:data:`NEGATORS`,
  or any word ending in "n't"); "not only" does not negate. Aliases that contain their own
  negation ("no distortion", "not distorted") are aliases of clean and match as a whole. An answer
  whose every mention is negated ("neither blurry nor noisy") is :data:`UNPARSED`: it says what
  the image is not, not what it is. A negation *after* the mention ("noise is not visible") is
  not understood; the answer prefix makes short answers the common case, where it does not arise.

The aliases follow the taxonomy's mapping of distortion types onto classes (KADID groups): e.g.
"pixelated", "quantization" and "color block" are spatial distortions, hence jitter; "sharpened" is
in KADID's sharpness-and-contrast group, hence contrast. Custom class words passed to ``perceive``
are added as aliases of their class.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from iqalens.errors import InvalidInputError
from iqalens.taxonomy import CLASSES

__all__ = ["ANSWER_ALIASES", "NEGATORS", "NEGATION_WINDOW", "UNPARSED", "AnswerParser", "parse_answer"]

#: Label of an answer that names no class.
UNPARSED = "unparsed"

#: Per class, the words and phrases that name it in a free answer (lower case).
ANSWER_ALIASES: Mapping[str, tuple[str, ...]] = {
    "blur": (
        "blur", "blurs", "blurry", "blurred", "blurring", "blurriness", "motion blur", "gaussian blur",
        "lens blur", "out of focus", "unfocused", "defocus", "defocused", "soft focus",
    ),
    "noise": (
        "noise", "noisy", "noises", "gaussian noise", "white noise", "impulse noise", "salt and pepper",
        "grain", "grainy", "graininess", "speckle", "speckles", "speckled", "denoising", "denoised",
        "color noise", "colour noise",
    ),
    "brightness": (
        "brightness", "bright", "brighter", "brighten", "brightened", "darkness", "dark", "darker",
        "darkened",
        "too dark", "too bright", "exposure", "overexposed", "over-exposed", "underexposed",
        "under-exposed", "overexposure", "underexposure", "mean shift", "dim", "dimmed", "lighting",
    ),
    "compression": (
        "compression", "compressed", "jpeg", "jpg", "jpeg2000", "jpeg 2000", "jp2k", "blocking",
        "blocky", "blockiness", "block artifacts", "compression artifacts", "ringing", "banding",
    ),
    "contrast": (
        "contrast", "low contrast", "high contrast", "contrast change", "washed out", "flat",
        "sharpen", "sharpened", "sharpening", "oversharpened", "over-sharpened", "oversharpening",
    ),
    "colorfulness": (
        "colorfulness", "colourfulness", "colorful", "colourful", "color", "colour", "colors",
        "colours", "saturation", "saturated", "desaturated", "oversaturated", "undersaturated",
        "desaturation", "color shift", "colour shift", "color cast", "colour cast", "hue", "tint",
        "tinted", "chromatic", "chromatic aberration", "color quantization", "colour quantization",
        "grayscale", "greyscale",
    ),
    "jitter": (
        "jitter", "jittered", "jittering", "jitters", "pixelated", "pixelation", "pixelate",
        "color block", "colour block", "color blocks", "colour blocks", "quantization", "quantized",
        "non-eccentricity", "non eccentricity", "shifted pixels", "pixel shift", "displaced",
        "displacement", "misaligned", "scrambled",
    ),
    "clean": (
        "clean", "none", "no distortion", "no distortions", "not distorted", "undistorted",
        "pristine", "no visible distortion", "no noticeable distortion", "high quality", "good quality",
    ),
}  # fmt: skip

#: Words that negate a class mention that follows them in the same clause.
NEGATORS: frozenset[str] = frozenset(
    {"no", "not", "without", "never", "neither", "nor", "none", "lacks", "lacking", "free", "absence",
     "cannot", "hardly"}
)  # fmt: skip
#: How many words before a mention are searched for a negator.
NEGATION_WINDOW = 3
_CLAUSE_END = re.compile(r"[.,;:!?]|\bbut\b")
_WORD = re.compile(r"[a-z0-9']+")

if tuple(ANSWER_ALIASES) != CLASSES:
    raise RuntimeError("ANSWER_ALIASES must list the taxonomy's classes in canonical order")


def _pattern(alias: str) -> str:
    words = re.split(r"[\s_-]+", alias.strip().lower())
    return r"[\s_-]+".join(re.escape(w) for w in words if w)


class AnswerParser:
    """Maps answer texts to class names (or :data:`UNPARSED`) by the rules in the module doc.

    ``class_words``: the words the model was offered, one per class in :data:`CLASSES` order;
    they are added to their class's aliases. An alias claimed by two classes is an error (the
    parse would depend on the table's order).
    """

    def __init__(
        self,
        class_words: Sequence[str] = CLASSES,
        aliases: Mapping[str, Sequence[str]] = ANSWER_ALIASES,
    ) -> None:
        if len(class_words) != len(CLASSES):
            raise InvalidInputError(f"need one class word per class ({len(CLASSES)}), got {len(class_words)}")
        self.classes = list(CLASSES)
        owner: dict[str, str] = {}
        for name, word in zip(CLASSES, class_words, strict=True):
            for alias in (*aliases.get(name, ()), word):
                key = " ".join(re.split(r"[\s_-]+", alias.strip().lower()))
                if owner.setdefault(key, name) != name:
                    raise InvalidInputError(f"alias {alias!r} names both {owner[key]} and {name}")
        # Longest first, so that at one position the longest alias is the one the regex takes.
        ordered = sorted(owner, key=lambda a: (-len(a), a))
        self._owner = owner
        self._regex = re.compile(
            r"(?<![a-z0-9])(" + "|".join(_pattern(a) for a in ordered) + r")(?![a-z0-9])"
        )

    def __call__(self, text: str) -> str:
        """The class the answer names first (negated mentions skipped), or :data:`UNPARSED`."""
        lowered = text.lower().replace("\u2019", "'").replace("\u2018", "'")  # typographic apostrophes
        for match in self._regex.finditer(lowered):
            alias = " ".join(re.split(r"[\s_-]+", match.group(1)))
            # An alias that carries its own negation ("no distortion") is read as a whole, whatever
            # negator an earlier mention left in the window ("no blur and no distortion" is clean).
            self_negating = alias.split()[0] in NEGATORS
            if self_negating or not _negated(lowered[: match.start()]):
                return self._owner[alias]
        return UNPARSED

    def index(self, text: str) -> int:
        """Class index of the answer; ``len(CLASSES)`` for :data:`UNPARSED`."""
        name = self(text)
        return len(self.classes) if name == UNPARSED else self.classes.index(name)


def _negated(before: str) -> bool:
    """Whether the clause that ends where a mention starts negates it (rules in the module doc)."""
    clause = _CLAUSE_END.split(before)[-1]
    words = _WORD.findall(clause)[-NEGATION_WINDOW:]
    for i, word in enumerate(words):
        negator = word in NEGATORS or word.endswith("n't")
        not_only = i + 1 < len(words) and words[i + 1] == "only"
        if negator and not not_only:
            return True
    return False


_DEFAULT_PARSER: AnswerParser | None = None


def parse_answer(text: str) -> str:
    """The class a free answer names (default class words and aliases), or :data:`UNPARSED`."""
    global _DEFAULT_PARSER
    if _DEFAULT_PARSER is None:
        _DEFAULT_PARSER = AnswerParser()
    return _DEFAULT_PARSER(text)

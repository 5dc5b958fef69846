"""The 8 perception classes of the forced-choice task and the one table that maps distortions onto them.

Every distortion type iqalens knows, synthetic (KADID-10k ids 1-25) or from a public database
(TID2013, TID2008, CSIQ, LIVE Release 2), maps to exactly one of the classes or to ``excluded``
when no class describes it (transmission errors, fast fading). Keeping the mapping in one place
means the benchmark builder, the importers and the reports can never disagree about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from iqalens.errors import InvalidInputError, UnknownNameError


class PerceptionClass(StrEnum):
    """The closed answer set of the forced-choice task."""

    BLUR = "blur"
    NOISE = "noise"
    BRIGHTNESS = "brightness"
    COMPRESSION = "compression"
    CONTRAST = "contrast"
    COLORFULNESS = "colorfulness"
    JITTER = "jitter"
    CLEAN = "clean"


#: Class names in their canonical order (the order of confusion matrices and reports).
CLASSES: tuple[str, ...] = tuple(c.value for c in PerceptionClass)

#: Marker for a database distortion that no class describes.
EXCLUDED = "excluded"

#: KADID-10k group -> perception class (the paper's mapping of KADID's seven groups).
KADID_GROUP_TO_CLASS: dict[str, PerceptionClass] = {
    "blur": PerceptionClass.BLUR,
    "color": PerceptionClass.COLORFULNESS,
    "compression": PerceptionClass.COMPRESSION,
    "noise": PerceptionClass.NOISE,
    "brightness_change": PerceptionClass.BRIGHTNESS,
    "spatial": PerceptionClass.JITTER,
    "sharpness_contrast": PerceptionClass.CONTRAST,
}


@dataclass(frozen=True)
class DatabaseDistortion:
    """One distortion of a public database and the class it maps to (or ``excluded``)."""

    database: str
    code: str  # the database's own id or folder/label name
    name: str
    target: str  # a class value or EXCLUDED
    reason: str = ""


def _tid(code: int, name: str, target: PerceptionClass | str, reason: str = "") -> DatabaseDistortion:
    return DatabaseDistortion("TID2013", f"{code:02d}", name, str(target), reason)


# TID2013's 24 types (TID2008 uses the first 17 with the same ids). Types that have a KADID
# counterpart follow KADID's group (denoising -> noise, non-eccentricity and block-wise
# distortions -> jitter like KADID's spatial group, colour quantisation -> colorfulness).
TID2013_TYPES: tuple[DatabaseDistortion, ...] = (
    _tid(1, "additive Gaussian noise", PerceptionClass.NOISE),
    _tid(2, "additive noise in colour components", PerceptionClass.NOISE),
    _tid(3, "spatially correlated noise", PerceptionClass.NOISE),
    _tid(4, "masked noise", PerceptionClass.NOISE),
    _tid(5, "high frequency noise", PerceptionClass.NOISE),
    _tid(6, "impulse noise", PerceptionClass.NOISE),
    _tid(7, "quantization noise", PerceptionClass.NOISE, "visible as banding-like noise; TID names it noise"),
    _tid(8, "Gaussian blur", PerceptionClass.BLUR),
    _tid(9, "image denoising", PerceptionClass.NOISE, "KADID puts denoising in its noise group"),
    _tid(10, "JPEG compression", PerceptionClass.COMPRESSION),
    _tid(11, "JPEG2000 compression", PerceptionClass.COMPRESSION),
    _tid(12, "JPEG transmission errors", EXCLUDED, "channel errors, not a perceptual class"),
    _tid(13, "JPEG2000 transmission errors", EXCLUDED, "channel errors, not a perceptual class"),
    _tid(14, "non eccentricity pattern noise", PerceptionClass.JITTER, "KADID's spatial group"),
    _tid(15, "local block-wise distortions", PerceptionClass.JITTER, "like KADID colour block (spatial)"),
    _tid(16, "mean shift (intensity shift)", PerceptionClass.BRIGHTNESS),
    _tid(17, "contrast change", PerceptionClass.CONTRAST),
    _tid(18, "change of colour saturation", PerceptionClass.COLORFULNESS),
    _tid(19, "multiplicative Gaussian noise", PerceptionClass.NOISE),
    _tid(20, "comfort noise", EXCLUDED, "codec artefact mixing noise and compression"),
    _tid(21, "lossy compression of noisy images", EXCLUDED, "mixes noise and compression"),
    _tid(
        22, "colour quantization with dither", PerceptionClass.COLORFULNESS, "like KADID colour quantization"
    ),
    _tid(23, "chromatic aberrations", PerceptionClass.COLORFULNESS, "like KADID colour shift"),
    _tid(24, "sparse sampling and reconstruction", EXCLUDED, "reconstruction artefacts, no class fits"),
)

CSIQ_TYPES: tuple[DatabaseDistortion, ...] = (
    DatabaseDistortion("CSIQ", "awgn", "additive white Gaussian noise", "noise"),
    DatabaseDistortion("CSIQ", "jpeg", "JPEG compression", "compression"),
    DatabaseDistortion("CSIQ", "jpeg2000", "JPEG2000 compression", "compression"),
    DatabaseDistortion("CSIQ", "fnoise", "additive pink Gaussian noise", "noise"),
    DatabaseDistortion("CSIQ", "blur", "Gaussian blur", "blur"),
    DatabaseDistortion("CSIQ", "contrast", "global contrast decrements", "contrast"),
)

LIVE_TYPES: tuple[DatabaseDistortion, ...] = (
    DatabaseDistortion("LIVE", "jp2k", "JPEG2000 compression", "compression"),
    DatabaseDistortion("LIVE", "jpeg", "JPEG compression", "compression"),
    DatabaseDistortion("LIVE", "wn", "white Gaussian noise", "noise"),
    DatabaseDistortion("LIVE", "gblur", "Gaussian blur", "blur"),
    DatabaseDistortion(
        "LIVE",
        "fastfading",
        "JPEG2000 + Rayleigh fast-fading channel errors",
        EXCLUDED,
        "transmission errors",
    ),
)

DATABASE_TYPES: dict[str, tuple[DatabaseDistortion, ...]] = {
    "TID2013": TID2013_TYPES,
    "TID2008": TID2013_TYPES[:17],
    "CSIQ": CSIQ_TYPES,
    "LIVE": LIVE_TYPES,
}


def kadid_class(type_id: int, level: int | None = None, identity_as: str = "clean") -> str:
    """Perception class of KADID type ``type_id`` (at ``level``).

    A (type, level) whose parameter leaves the image unchanged is not a distortion a model could
    see: ``identity_as`` decides whether it counts as ``clean`` (default) or ``excluded``. The only
    such cell in KADID-10k is mean shift (18) at level 3 (parameter 0, output == input, measured on
    the golden data and in the tests); contrast change (25) at parameter 0 is still a mild contrast
    increase in the original code and keeps its class.
    """
    from iqalens.distortions import get_type

    if identity_as not in ("clean", EXCLUDED):
        raise InvalidInputError(f"identity_as must be 'clean' or 'excluded', got {identity_as!r}")
    dist = get_type(type_id)
    if level is not None and (dist.id, level) in IDENTITY_CELLS:
        return identity_as
    return KADID_GROUP_TO_CLASS[dist.group].value


#: KADID (type, level) cells whose output equals the input for every image.
IDENTITY_CELLS: frozenset[tuple[int, int]] = frozenset({(18, 3)})

#: Cells that are byte-identical to the input for most photos, measured on 512x384 versions of the
#: bundled and pristine photos: Gaussian blur sigma 0.1, motion blur of length 1 and Lab saturation
#: x1 change nothing once rounded to 8 bits when the photo spans 0..255 (the generator's min-max
#: mapping is then the identity). The benchmark builder detects identity per rendered image; this
#: set is what the balanced mode leaves out up front.
USUALLY_IDENTITY_CELLS: frozenset[tuple[int, int]] = IDENTITY_CELLS | {(1, 1), (3, 1), (8, 1)}


def database_class(database: str, code: str) -> str:
    """Class (or ``excluded``) of a public database's distortion, by its id or label name."""
    key = database.upper()
    if key not in DATABASE_TYPES:
        raise UnknownNameError(
            f"no class table for database {database!r}; known: {', '.join(DATABASE_TYPES)}"
        )
    wanted = code.strip().lower()
    for d in DATABASE_TYPES[key]:
        if wanted in (d.code.lower(), d.name.lower()):
            return d.target
    known = ", ".join(d.code for d in DATABASE_TYPES[key])
    raise UnknownNameError(f"unknown {database} distortion {code!r}; known codes: {known}")


def class_table_rows() -> list[tuple[str, str, str, str]]:
    """(source, distortion, class, note) rows of the whole mapping, for ``bench classes`` and reports."""
    from iqalens.distortions import all_types

    rows = [
        (
            "KADID-10k",
            f"{t.id:02d} {t.name}",
            KADID_GROUP_TO_CLASS[t.group].value,
            f"group {t.group}" + ("; level 3 is the identity -> clean/excluded" if t.id == 18 else ""),
        )
        for t in all_types()
    ]
    for db in ("TID2013", "CSIQ", "LIVE"):
        rows += [(db, f"{d.code} {d.name}", d.target, d.reason) for d in DATABASE_TYPES[db]]
    return rows

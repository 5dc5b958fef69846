"""KADID-10k compression group: JPEG 2000 (9) and JPEG (10).

Both originals are an ``imwrite``/``imread`` round trip of the double image, i.e. of its ``im2uint8``
conversion, through a file. Pillow wraps the same codec libraries as the reference run (OpenJPEG and
libjpeg-turbo), so an in-memory round trip with matching encoder settings reproduces those outputs.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from iqalens.distortions._registry import DistortionType, register, to_uint8

_UNIT_CODES = np.arange(256, dtype=np.float64) / 255.0  # im2double of the decoded bytes


def _im2uint8_codes(codes: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``im2uint8(values[codes])``; the identity (skipped) when the input spans 0..255."""
    table = to_uint8(values)
    return codes if np.array_equal(table, np.arange(256)) else np.take(table, codes)


def _codec_round_trip(rgb8: np.ndarray, fmt: str, options: dict[str, object]) -> np.ndarray:
    """Encode 8-bit RGB with Pillow in memory and decode it again."""
    buffer = io.BytesIO()
    Image.fromarray(rgb8, mode="RGB").save(buffer, format=fmt, **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded if decoded.mode == "RGB" else decoded.convert("RGB"))


def _jpeg2000_options(ratio: float) -> dict[str, object]:
    # MATLAB's 'CompressionRatio' is one quality layer at that rate with the lossy 9/7 wavelet and
    # the RGB->YCC component transform; OpenJPEG's defaults cover the rest (6 resolutions, 64x64 blocks).
    return {"quality_mode": "rates", "quality_layers": [ratio], "irreversible": True, "mct": 1}


def _jpeg_options(quality: float) -> dict[str, object]:
    # imwrite's 'Quality' is the IJG quality scale; MATLAB and GraphicsMagick both subsample chroma 4:2:0.
    return {"quality": int(quality), "subsampling": 2}


def _jpeg2000(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    return _codec_round_trip(to_uint8(x), "JPEG2000", _jpeg2000_options(ratio)) / 255.0


def _jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    return _codec_round_trip(to_uint8(x), "JPEG", _jpeg_options(quality)) / 255.0


def _jpeg2000_codes(
    codes: np.ndarray, values: np.ndarray, ratio: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_jpeg2000` on codes: im2uint8 of the input is a table lookup, the codec works on bytes."""
    return _codec_round_trip(
        _im2uint8_codes(codes, values), "JPEG2000", _jpeg2000_options(ratio)
    ), _UNIT_CODES


def _jpeg_codes(
    codes: np.ndarray, values: np.ndarray, quality: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_jpeg` on codes (see :func:`_jpeg2000_codes`)."""
    return _codec_round_trip(_im2uint8_codes(codes, values), "JPEG", _jpeg_options(quality)), _UNIT_CODES


register(
    DistortionType(
        id=9,
        name="jpeg2000",
        group="compression",
        helper="imcompressjp2k",
        levels=(16, 32, 45, 120, 400),
        stochastic=False,
        kernel=_jpeg2000,
        code_kernel=_jpeg2000_codes,
        description="Round-trips the image through a JPEG 2000 encoder at the level's compression ratio.",
        deviation=(
            "Uses OpenJPEG (via Pillow) like the Octave reference run, which it matches; MATLAB encodes "
            "with Kakadu, whose rate control and wavelet code differ, so MATLAB's own outputs are of "
            "similar strength but not pixel-identical."
        ),
    )
)

register(
    DistortionType(
        id=10,
        name="jpeg",
        group="compression",
        helper="imcompressjpeg",
        levels=(43, 36, 24, 7, 4),
        stochastic=False,
        kernel=_jpeg,
        code_kernel=_jpeg_codes,
        description="Round-trips the image through a JPEG encoder at the level's IJG quality (4:2:0).",
        deviation=(
            "Uses libjpeg-turbo (via Pillow), which matches the Octave reference run bit for bit; "
            "bit-exactness with MATLAB's own IJG libjpeg build is not established."
        ),
    )
)

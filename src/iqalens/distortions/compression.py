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


def _round_trip(x: np.ndarray, fmt: str, **options: object) -> np.ndarray:
    """Encode ``x`` (float in [0, 1]) as 8-bit RGB with Pillow, decode it, return float in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(x), mode="RGB").save(buffer, format=fmt, **options)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        rgb = np.asarray(decoded.convert("RGB"))
    return rgb.astype(np.float64) / 255.0


def _jpeg2000(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    # MATLAB's 'CompressionRatio' is one quality layer at that rate with the lossy 9/7 wavelet and
    # the RGB->YCC component transform; OpenJPEG's defaults cover the rest (6 resolutions, 64x64 blocks).
    return _round_trip(x, "JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True, mct=1)


def _jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    # imwrite's 'Quality' is the IJG quality scale; MATLAB and GraphicsMagick both subsample chroma 4:2:0.
    return _round_trip(x, "JPEG", quality=int(quality), subsampling=2)


register(
    DistortionType(
        id=9,
        name="jpeg2000",
        group="compression",
        helper="imcompressjp2k",
        levels=(16, 32, 45, 120, 400),
        stochastic=False,
        kernel=_jpeg2000,
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
        description="Round-trips the image through a JPEG encoder at the level's IJG quality (4:2:0).",
        deviation=(
            "Uses libjpeg-turbo (via Pillow), which matches the Octave reference run bit for bit; "
            "bit-exactness with MATLAB's own IJG libjpeg build is not established."
        ),
    )
)

"""One robust image loader for every part of iqalens.

Everything downstream (distortions, models, metrics) assumes H x W x 3 uint8 sRGB with the
camera's orientation applied. Real collections contain greyscale scans, palette GIFs, PNGs with
alpha, CMYK JPEGs from print workflows, 16-bit TIFFs and truncated downloads; converting them
here, once, keeps every other module simple, and failing here with one message that names the
file keeps a batch job's error readable.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from iqalens.errors import InvalidInputError, IqalensError
from iqalens.files import sibling_tempfile

#: Extensions ``iter_image_files`` treats as images when scanning folders.
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".ppm", ".pgm", ".pnm", ".jp2"}
)


class ImageLoadError(IqalensError):
    """An image could not be read; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageLoadError], tuple[str, str]]:
        # Worker processes send exceptions back pickled; the default pickling would call
        # __init__ with the message only and fail.
        return (type(self), (self.path, self.reason))


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any Pillow-readable file as H x W x 3 uint8 RGB with EXIF orientation applied.

    Conversions: greyscale and palette images are expanded to RGB; alpha is composited over
    white (the usual display background, so transparent regions do not turn black); CMYK goes
    through Pillow's conversion (inverted Adobe CMYK JPEGs are handled by Pillow's decoder);
    16-bit and float images are scaled from their actual bit depth to 8 bits instead of being
    clipped. Raises :class:`ImageLoadError` for a missing, truncated or non-image file.
    """
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(p, "file not found")
    if p.is_dir():
        raise ImageLoadError(p, "is a directory, not an image file")
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 MP (e.g. 108 MP phone photos, which are legitimate) and
            # refuses above twice that; only the refusal is an error here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                return to_rgb_array(ImageOps.exif_transpose(im) or im)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(p, "not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(p, f"too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated files surface as OSError("image file is truncated") or decoder errors.
        raise ImageLoadError(p, f"corrupt or truncated ({exc})") from None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert an opened Pillow image of any mode to H x W x 3 uint8 RGB."""
    if im.width == 0 or im.height == 0:
        raise InvalidInputError("image has zero size")
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        return _high_depth_to_uint8(arr, mode)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode == "RGB":
        return np.asarray(im).copy()
    return np.asarray(im.convert("RGB"))


def _high_depth_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float single-channel image to uint8 grey RGB."""
    if mode == "F":
        # Float images are conventionally in [0, 1]; anything else is min-max scaled.
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        scaled = arr if lo >= 0.0 and hi <= 1.0 else (arr - lo) / max(hi - lo, 1e-12)
        grey = np.round(np.clip(np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0) * 255.0)
    else:
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        grey = np.round(np.clip(arr, 0, peak) / peak * 255.0)
    grey8 = grey.astype(np.uint8)
    return np.repeat(grey8[..., None], 3, axis=2)


def save_rgb(image: np.ndarray, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Write uint8 RGB atomically (temp file + rename), so a crash never leaves a half-written file."""
    out = Path(path)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (use overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise InvalidInputError(f"{out}: unknown image extension {out.suffix!r}")
    fd, tmp = sibling_tempfile(out, suffix=out.suffix)
    os.close(fd)
    # zlib level 1 instead of Pillow's 6: on photos it encodes 3-4x faster for files 8-20% larger
    # (measured on the bundled photos), which matters when a benchmark writes thousands of PNGs.
    options: dict[str, object] = {"compress_level": 1} if fmt == "PNG" else {}
    try:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format=fmt, **options)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def iter_image_files(root: str | os.PathLike[str]) -> list[Path]:
    """Image files under ``root`` (recursive, sorted, hidden files skipped) by extension."""
    base = Path(root)
    return sorted(
        p
        for p in base.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )

"""Rebuild the bundled sample photos from the PyPI packages that ship the originals.

Run once by a maintainer (needs scikit-image, plus the unpacked scikit-learn and matplotlib
wheels, or those packages installed); the result is committed under
``src/iqalens/data/samples``. Each photo is centre-cropped to 4:3 (3:4 for portrait
originals) and resized with Lanczos to 512x384 (KADID-10k's image size) or 384x512
(384x288 for originals too small to be downsized), then saved as PNG so that no new
compression artefacts are added. Provenance and licences: NOTICE.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

#: output name -> (package, path inside the package)
SOURCES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "cat": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "palace": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "portrait": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}


def crop_resize(im: Image.Image) -> Image.Image:
    w, h = im.size
    landscape = w >= h
    target = (512, 384) if landscape else (384, 512)
    if min(w, h) < min(target):  # never upscale: small originals become 384x288 / 288x384
        target = (384, 288) if landscape else (288, 384)
    ratio = target[0] / target[1]
    if w / h > ratio:
        new_w = round(h * ratio)
        box = ((w - new_w) // 2, 0, (w - new_w) // 2 + new_w, h)
    else:
        new_h = round(w / ratio)
        box = (0, (h - new_h) // 2, w, (h - new_h) // 2 + new_h)
    return im.convert("RGB").crop(box).resize(target, Image.Resampling.LANCZOS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--roots", nargs="+", required=True, help="site-packages-like folders to search")
    parser.add_argument("-o", "--out", default="src/iqalens/data/samples")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (package, rel) in SOURCES.items():
        src = next(Path(r) / package / rel for r in args.roots if (Path(r) / package / rel).is_file())
        crop_resize(Image.open(src)).save(out / f"{name}.png", optimize=True)
        print(f"{name}.png <- {package}/{rel}")


if __name__ == "__main__":
    main()

"""The robust loader: odd modes convert sensibly, bad files fail with one message naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqalens.images import ImageLoadError, iter_image_files, load_rgb, save_rgb
from iqalens.samples import sample_paths


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), (xx + yy) * 255 // (w + h - 2)], -1).astype(
        np.uint8
    )


def test_rgb_png_roundtrip(tmp_path: Path) -> None:
    arr = _gradient()
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, arr)


def test_greyscale_is_replicated_to_three_channels(tmp_path: Path) -> None:
    grey = _gradient()[..., 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    assert out.shape == (24, 32, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_palette_image_expands_to_its_colours(tmp_path: Path) -> None:
    arr = _gradient()
    Image.fromarray(arr).quantize(colors=16).save(tmp_path / "p.png")
    out = load_rgb(tmp_path / "p.png")
    assert out.shape == (24, 32, 3)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) <= 16
    assert np.abs(out.astype(int) - arr.astype(int)).mean() < 20


def test_alpha_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red-ish
    rgba[:2, :, 3] = 255  # top half opaque, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "t.png")
    out = load_rgb(tmp_path / "t.png")
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[3, 3], [255, 255, 255])


def test_cmyk_jpeg_converts_to_rgb(tmp_path: Path) -> None:
    arr = np.zeros((16, 16, 3), np.uint8)
    arr[..., 2] = 255  # pure blue
    Image.fromarray(arr).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    out = load_rgb(tmp_path / "c.jpg")
    assert out.shape == (16, 16, 3)
    assert out[..., 2].mean() > 200 and out[..., 0].mean() < 60


def test_16bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "d.png")
    out = load_rgb(tmp_path / "d.png")
    assert out.shape == (8, 8, 3)
    assert out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) > 32  # scaled: a clipped 16-bit image would be almost all 255


def test_float_tiff_in_unit_range(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    Image.fromarray(ramp, mode="F").save(tmp_path / "f.tif")
    out = load_rgb(tmp_path / "f.tif")
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # white left half of a landscape image
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_rgb(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3)  # displayed as portrait
    assert out[:5].mean() > 200 and out[-5:].mean() < 50  # left half rotated to the top


def test_tiny_image_loads(tmp_path: Path) -> None:
    Image.new("RGB", (1, 1), (1, 2, 3)).save(tmp_path / "tiny.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "tiny.png"), [[[1, 2, 3]]])


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.png", None, "file not found"),
        ("notes.png", b"this is not an image", "not a recognised image format"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, name: str, content: bytes | None, reason: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_rgb(path)
    assert str(path) in str(info.value)


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    Image.fromarray(_gradient(64, 64)).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated") as info:
        load_rgb(tmp_path / "cut.jpg")
    assert "cut.jpg" in str(info.value)


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="directory"):
        load_rgb(tmp_path)


def test_save_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    arr = _gradient()
    out = save_rgb(arr, tmp_path / "x.png")
    np.testing.assert_array_equal(load_rgb(out), arr)
    with pytest.raises(FileExistsError):
        save_rgb(arr, out)
    save_rgb(arr[::-1].copy(), out, overwrite=True)
    np.testing.assert_array_equal(load_rgb(out), arr[::-1])
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]  # no temp files left


def test_iter_image_files_recurses_and_filters(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for rel in ["a.png", "sub/b.JPG", "notes.txt", ".hidden.png"]:
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_image_files(tmp_path)] == ["a.png", "sub/b.JPG"]


def test_bundled_samples_are_natural_colour_photos() -> None:
    paths = sample_paths()
    assert len(paths) >= 8
    for p in paths:
        img = load_rgb(p)
        h, w = img.shape[:2]
        assert max(h, w) >= 384 and min(h, w) >= 256, p
        # colour photos: the channels differ noticeably somewhere
        assert np.abs(img[..., 0].astype(int) - img[..., 2].astype(int)).mean() > 3, p

"""Images for neural fields: samples, decoding (formats, grayscale, RGBA, 16-bit), limits, resizing, grids,
pixel splits, and bad files through the real `l335q fit` and `l335q submit` (exit 2, one line)."""
from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from l335q import UserError
from l335q.data import images
from l335q.data.images import decode_image, grid, load_image, resize, split_pixels
from tests.conftest import l335q_cmd


def encoded(a: np.ndarray, fmt: str = "PNG", mode: str | None = None, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a, mode=mode).save(buf, format=fmt, **options)
    return buf.getvalue()


def test_samples_are_rgb_in_unit_range_and_sky_is_smoother_than_grass():
    def roughness(img):      # mean absolute difference between neighbouring pixels
        g = img.mean(2)
        return np.abs(np.diff(g, axis=0)).mean() + np.abs(np.diff(g, axis=1)).mean()

    for name in ("astronaut", "camera", "sky", "grass", "coffee"):
        img = load_image(f"sample:{name}")
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
        assert 0.0 <= img.min() and img.max() <= 1.0 and img.std() > 0.01
    sky, grass = resize(load_image("sample:sky"), 64), resize(load_image("sample:grass"), 64)
    assert roughness(sky) * 5 < roughness(grass)
    with pytest.raises(UserError, match="unknown sample"):
        load_image("sample:nope")


def test_decoding_formats_grayscale_rgba_and_16_bit(caplog):
    rgb = (np.random.default_rng(0).random((9, 7, 3)) * 255).astype(np.uint8)
    assert np.array_equal(decode_image(encoded(rgb)), rgb / np.float32(255))
    assert np.array_equal(decode_image(encoded(rgb, "TIFF")), rgb / np.float32(255))
    smooth = (resize(load_image("sample:coffee"), 32) * 255).astype(np.uint8)
    assert np.abs(decode_image(encoded(smooth, "JPEG", quality=95)) - smooth / 255).mean() < 0.02
    gray = decode_image(encoded(rgb[..., 0]))
    assert gray.shape == (9, 7, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    with caplog.at_level(logging.WARNING, logger="l335q.images"):
        rgba = decode_image(encoded(np.dstack([rgb, np.full((9, 7), 7, np.uint8)])), "x.png")
    assert rgba.shape == (9, 7, 3) and np.array_equal(rgba, rgb / np.float32(255))
    assert "alpha channel dropped" in caplog.text
    deep = np.array([[0, 32768], [65535, 1000]], dtype=np.uint16)
    img = decode_image(encoded(deep))                  # PIL writes a 16-bit grayscale PNG
    assert img[..., 0] == pytest.approx(deep / 65535.0, abs=1e-6)


@pytest.mark.parametrize("data,message", [
    (b"", "empty"),
    (b"hello, I am text\n" * 10, "not an image"),
    (encoded(np.zeros((1, 1, 3), np.uint8)), "too small"),
    (encoded((np.random.default_rng(3).random((40, 40, 3)) * 255).astype(np.uint8))[:2000], "cannot decode"),
])
def test_bad_bytes_are_user_errors(data, message):
    with pytest.raises(UserError, match=message):
        decode_image(data)


def test_resize_is_square_and_anti_aliased():
    stripes = np.zeros((64, 96, 3), np.float32)
    stripes[:, ::2] = 1.0                      # one-pixel stripes: a naive 4x decimation aliases to 0 or 1
    small = resize(stripes, 16)
    assert small.shape == (16, 16, 3)
    assert np.abs(small - 0.5).max() < 0.1
    assert resize(stripes, None) is stripes


def test_grid_and_splits_follow_the_practical():
    g = grid(4, 8)
    assert g.shape == (4, 8, 2)
    assert g[2, 3].tolist() == [3 / 8, 2 / 4]           # (x, y) = (j / w, i / h)
    assert g.min() == 0.0 and g.max() < 1.0
    img = np.random.default_rng(1).random((6, 6, 3)).astype(np.float32)
    (c, rgb), held = split_pixels(img, "all")
    assert held is None and c.shape == (36, 2) and np.array_equal(rgb, img.reshape(-1, 3))
    (tc, tr), (hc, hr) = split_pixels(img, "every-other")
    assert len(tc) == 9 and len(hc) == 27
    assert np.array_equal(tr, img[::2, ::2].reshape(-1, 3))
    coords = {tuple(x) for x in tc} | {tuple(x) for x in hc}
    assert len(coords) == 36                              # disjoint and together every pixel
    with pytest.raises(UserError):
        split_pixels(img, "random")


def test_bad_files_exit_2_with_one_line(tmp_path, monkeypatch):
    noise = (np.random.default_rng(2).random((40, 40, 3)) * 255).astype(np.uint8)
    files = {"corrupt.png": encoded(noise)[:2000],          # cut inside the pixel data
             "dot.png": encoded(np.zeros((1, 1, 3), np.uint8)),
             "huge.png": encoded(np.zeros((images.MAX_PIXELS // 4096 + 1, 4096), np.uint8)),
             "notes.png": b"this is not an image\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    for name, why in (("corrupt.png", "cannot decode"), ("dot.png", "too small"), ("huge.png", "too large"),
                      ("notes.png", "not an image"), ("missing.png", "not found")):
        p = l335q_cmd("fit", tmp_path / name, "--steps", "1")
        assert p.returncode == 2, (name, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], (name, p.stderr)
    spec = tmp_path / "spec.yaml"
    spec.write_text("task: inr-init\nimage: dot.png\n")
    p = l335q_cmd("submit", spec)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [p.stderr.strip()] and "too small" in p.stderr

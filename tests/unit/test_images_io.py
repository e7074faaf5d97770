"""Image reading/writing conventions and atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from udc_edge.core.errors import InputError, OutputError
from udc_edge.core.fileio import atomic_dir, write_json_atomic
from udc_edge.data.images import read_image, write_png


def test_16bit_png_round_trip_is_exact(tmp_path, rng):
    img = rng.integers(0, 65536, (9, 11, 3)).astype(np.float32) / 65535
    write_png(tmp_path / "a.png", img, 16)
    back, info = read_image(tmp_path / "a.png")
    assert info.bit_depth == 16 and back.dtype == np.float32 and back.shape == (9, 11, 3)
    np.testing.assert_array_equal(np.round(back * 65535), np.round(img * 65535))


def test_8bit_png_quantises_to_1_over_255(tmp_path, rng):
    img = rng.random((5, 7, 3)).astype(np.float32)
    write_png(tmp_path / "a.png", img, 8)
    back, info = read_image(tmp_path / "a.png")
    assert info.bit_depth == 8
    assert np.abs(back - img).max() <= 0.5 / 255 + 1e-6


def test_grayscale_and_rgba_become_rgb(tmp_path):
    Image.fromarray(np.full((4, 6), 128, np.uint8), "L").save(tmp_path / "g.png")
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    g, gi = read_image(tmp_path / "g.png")
    a, ai = read_image(tmp_path / "a.png")
    assert g.shape == a.shape == (4, 6, 3) and gi.channels == 1 and ai.channels == 4
    np.testing.assert_allclose(g[..., 0], g[..., 2])
    np.testing.assert_allclose(a[..., 0], 1.0)  # alpha dropped, colour kept


def test_16bit_grayscale_png(tmp_path):
    Image.fromarray(np.full((3, 3), 40000, np.uint16)).save(tmp_path / "g16.png")
    g, info = read_image(tmp_path / "g16.png")
    assert info.bit_depth == 16
    np.testing.assert_allclose(g, 40000 / 65535, rtol=1e-6)


def test_non_image_file_is_a_clear_error(tmp_path):
    (tmp_path / "x.png").write_text("not a picture")
    with pytest.raises(InputError, match="x.png"):
        read_image(tmp_path / "x.png")
    with pytest.raises(InputError, match="does not exist"):
        read_image(tmp_path / "missing.png")


def test_nan_image_is_not_written(tmp_path):
    img = np.zeros((4, 4, 3), np.float32)
    img[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_png(tmp_path / "n.png", img)
    assert not list(tmp_path.iterdir())


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_non_empty_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"), atomic_dir(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_output_under_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot create folder"):
        write_json_atomic(tmp_path / "file" / "x.json", {})


def test_read_only_output_folder_is_refused(tmp_path):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits
            pytest.skip("running as root: permission bits are not enforced")
        with pytest.raises(OutputError, match="not writable"):
            write_json_atomic(ro / "x.json", {})
    finally:
        ro.chmod(0o700)

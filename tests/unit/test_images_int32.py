"""A 32-bit integer TIFF is read exactly when its values fit 16 bits and refused otherwise,
never wrapped modulo 65536 (issue 15: 67 % of the pixels changed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from udc_edge.core.errors import InputError
from udc_edge.data.images import read_image_raw


def _tiff(path, values: np.ndarray) -> None:
    Image.fromarray(values.astype(np.int32), mode="I").save(path)


def test_int32_tiff_within_16_bits_is_read_exactly(tmp_path):
    v = np.arange(0, 65536, 1024, dtype=np.int32).reshape(8, 8)
    _tiff(tmp_path / "a.tif", v)
    arr, info = read_image_raw(tmp_path / "a.tif")
    assert info.bit_depth == 16 and np.array_equal(arr[:, :, 0], v)


def test_int32_tiff_beyond_16_bits_is_refused_not_wrapped(tmp_path):
    v = np.full((8, 8), 70000, np.int32)
    _tiff(tmp_path / "b.tif", v)
    with pytest.raises(InputError, match="32-bit integers"):
        read_image_raw(tmp_path / "b.tif")

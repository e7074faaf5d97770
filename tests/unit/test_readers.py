"""Paired-dataset readers: pixel values, pairing by name, tone mapping, bad inputs, dispatch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from udc_edge.core.errors import DataError, InputError, UsageError
from udc_edge.data.images import write_png
from udc_edge.data.readers import (
    DiscNetNpyDataset,
    FolderPairDataset,
    Pair,
    PairedDataset,
    UDC2020MatDataset,
    open_paired_dataset,
)
from udc_edge.data.tonemap import tone_map

H, W = 12, 16


def _img(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3), dtype=np.float32)


def _write_pairs(root: Path, names, lq_dir="lq", gt_dir="gt", bit_depth=16) -> dict:
    """Write lq/gt PNG pairs with distinct content per name; return {name: (lq, gt)}."""
    written = {}
    for i, name in enumerate(names):
        lq, gt = _img(2 * i), _img(2 * i + 1)
        write_png(root / lq_dir / f"{name}.png", lq, bit_depth)
        if gt_dir:
            write_png(root / gt_dir / f"{name}.png", gt, bit_depth)
        written[name] = (lq, gt)
    return written


def _mat_header_v73(path: Path) -> None:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5"
    path.write_bytes((text.ljust(116) + b"\0" * 8 + b"\x00\x02IM").ljust(512, b"\0"))


# ------------------------------------------------------------------ image folders


@pytest.mark.parametrize("bit_depth, lq_dir, gt_dir", [(16, "lq", "gt"), (8, "input", "GT")])
def test_folder_pairs_values_and_names(tmp_path, bit_depth, lq_dir, gt_dir):
    written = _write_pairs(tmp_path, ["b", "a", "c"], lq_dir, gt_dir, bit_depth)
    ds = FolderPairDataset(tmp_path)
    assert isinstance(ds, PairedDataset) and ds.has_gt
    assert ds.names == ("a", "b", "c") and len(ds) == 3
    tol = 0.5 / (255 if bit_depth == 8 else 65535) + 1e-6
    for pair in ds:
        assert isinstance(pair, Pair)
        lq, gt = written[pair.name]
        assert pair.lq.dtype == np.float32 and pair.lq.shape == (H, W, 3)
        assert np.abs(pair.lq - lq).max() <= tol
        assert np.abs(pair.gt - gt).max() <= tol
        assert pair.meta["lq_bit_depth"] == bit_depth
        assert Path(pair.meta["gt_path"]).parent.name == gt_dir
    assert ds[-1].name == "c"
    with pytest.raises(IndexError):
        ds[3]
    info = ds.describe()
    assert info["format"] == "folder" and info["count"] == 3 and info["root"] == str(tmp_path)
    ds.validate()


def test_folder_pairs_matched_by_stem_across_suffixes(tmp_path):
    lq, gt = _img(0), _img(1)
    write_png(tmp_path / "lq" / "scene.png", lq, 8)
    (tmp_path / "gt").mkdir()
    Image.fromarray(np.round(gt * 255).astype(np.uint8)).save(tmp_path / "gt" / "scene.bmp")
    pair = FolderPairDataset(tmp_path)[0]
    assert pair.name == "scene"
    assert np.abs(pair.gt - gt).max() <= 0.5 / 255 + 1e-6


def test_lq_only_folder(tmp_path):
    write_png(tmp_path / "x.png", _img(0), 16)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = FolderPairDataset(tmp_path)
    assert not ds.has_gt and ds.names == ("x",)
    assert ds[0].gt is None and ds[0].lq.shape == (H, W, 3)
    assert ds.describe()["has_gt"] is False


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_grayscale_and_rgba_become_rgb(tmp_path, bit_depth):
    gray = _img(0)[:, :, 0]
    write_png(tmp_path / "lq" / "g.png", gray, bit_depth)
    write_png(tmp_path / "gt" / "g.png", _img(1), bit_depth)
    rgba = np.round(_img(2) * 255).astype(np.uint8)
    rgba = np.dstack([rgba, np.full((H, W), 7, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "lq" / "r.png")
    write_png(tmp_path / "gt" / "r.png", _img(3), bit_depth)
    ds = FolderPairDataset(tmp_path)
    g, r = ds[0], ds[1]
    assert g.lq.shape == (H, W, 3) and g.meta["lq_channels"] == 1
    tol = 0.5 / (255 if bit_depth == 8 else 65535) + 1e-6
    for c in range(3):
        assert np.abs(g.lq[:, :, c] - gray).max() <= tol
    assert r.lq.shape == (H, W, 3) and r.meta["lq_channels"] == 4
    np.testing.assert_allclose(r.lq, rgba[:, :, :3] / 255.0, atol=1e-6)


def test_unpaired_names_are_listed(tmp_path):
    _write_pairs(tmp_path, ["a", "b"])
    for i in range(7):
        write_png(tmp_path / "lq" / f"extra{i}.png", _img(9), 8)
    write_png(tmp_path / "gt" / "orphan.png", _img(9), 8)
    with pytest.raises(DataError) as err:
        FolderPairDataset(tmp_path)
    msg = str(err.value)
    assert "extra0" in msg and "extra4" in msg and "extra5" not in msg and "2 more" in msg
    assert "orphan" in msg and "7 files in" in msg


def test_size_mismatch_names_pair_and_sizes(tmp_path):
    write_png(tmp_path / "lq" / "p1.png", _img(0), 16)
    write_png(tmp_path / "gt" / "p1.png", _img(1, 10, 14), 16)
    ds = FolderPairDataset(tmp_path)  # names match: construction succeeds
    for check in (lambda: ds[0], ds.validate):
        with pytest.raises(DataError) as err:
            check()
        msg = str(err.value)
        assert "'p1'" in msg and f"{H}x{W}" in msg and "10x14" in msg


@pytest.mark.parametrize("layout", ["plain", "lq"])
def test_empty_folder(tmp_path, layout):
    root = tmp_path / "ds"
    (root / "lq" if layout == "lq" else root).mkdir(parents=True)
    with pytest.raises(DataError) as err:
        FolderPairDataset(root)
    assert "no images" in str(err.value) and ".png" in str(err.value)


def test_unreadable_image_names_file(tmp_path):
    _write_pairs(tmp_path, ["a"])
    (tmp_path / "lq" / "a.png").write_bytes(b"this is not a png")
    ds = FolderPairDataset(tmp_path)
    with pytest.raises(InputError, match="a.png"):
        ds[0]
    with pytest.raises(InputError, match="a.png"):
        ds.validate()


def test_duplicate_stem_and_gt_without_lq(tmp_path):
    _write_pairs(tmp_path / "dup", ["a"])
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "dup" / "lq" / "a.jpg")
    with pytest.raises(DataError, match="a.jpg"):
        FolderPairDataset(tmp_path / "dup")
    write_png(tmp_path / "gtonly" / "gt" / "a.png", _img(0), 8)
    with pytest.raises(InputError, match="no lq/ or input/"):
        FolderPairDataset(tmp_path / "gtonly")


def test_missing_or_file_root(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        FolderPairDataset(tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        FolderPairDataset(tmp_path / "f.png")


# ------------------------------------------------------------------ UDC 2020 .mat


def _stack(seed: int, n: int = 3, h: int = H, w: int = W, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def test_mat_pairs_values(tmp_path):
    lq, gt = _stack(0), _stack(1)
    scipy.io.savemat(tmp_path / "poled_val_display.mat", {"val_display": lq, "note": np.ones(3)})
    scipy.io.savemat(tmp_path / "poled_val_gt.mat", {"val_gt": gt})
    ds = UDC2020MatDataset(tmp_path / "poled_val_display.mat", tmp_path / "poled_val_gt.mat")
    assert ds.has_gt and len(ds) == 3 and ds.names == ("0000", "0001", "0002")
    for i, pair in enumerate(ds):
        assert pair.lq.dtype == np.float32 and pair.lq.shape == (H, W, 3)
        np.testing.assert_allclose(pair.lq, lq[i] / 255.0, atol=1e-6)
        np.testing.assert_allclose(pair.gt, gt[i] / 255.0, atol=1e-6)
    info = ds.describe()
    assert info["format"] == "udc2020-mat" and info["lq_key"] == "val_display"
    assert info["gt_key"] == "val_gt" and info["count"] == 3


def test_mat_lq_only_grayscale_and_key(tmp_path):
    gray = _stack(0, c=1)
    scipy.io.savemat(tmp_path / "t.mat", {"a": gray, "b": _stack(1)})
    with pytest.raises(DataError, match="several 4-D"):
        UDC2020MatDataset(tmp_path / "t.mat")
    ds = UDC2020MatDataset(tmp_path / "t.mat", lq_key="a")
    assert not ds.has_gt and ds[1].gt is None
    np.testing.assert_allclose(ds[1].lq, np.repeat(gray[1], 3, axis=2) / 255.0, atol=1e-6)
    with pytest.raises(InputError, match="'zzz'"):
        UDC2020MatDataset(tmp_path / "t.mat", lq_key="zzz")


@pytest.mark.parametrize("gt_shape", [(2, H, W, 3), (3, H, W + 2, 3)])
def test_mat_mismatched_stacks(tmp_path, gt_shape):
    scipy.io.savemat(tmp_path / "lq.mat", {"val_display": _stack(0)})
    n, h, w, c = gt_shape
    scipy.io.savemat(tmp_path / "gt.mat", {"val_gt": _stack(1, n, h, w, c)})
    with pytest.raises(DataError) as err:
        UDC2020MatDataset(tmp_path / "lq.mat", tmp_path / "gt.mat")
    assert "lq.mat" in str(err.value) and "gt.mat" in str(err.value)


def test_mat_bad_files(tmp_path):
    _mat_header_v73(tmp_path / "v73.mat")
    with pytest.raises(InputError) as err:
        UDC2020MatDataset(tmp_path / "v73.mat")
    assert "v73.mat" in str(err.value) and "HDF5" in str(err.value) and "-v7" in str(err.value)
    (tmp_path / "text.mat").write_text("hello, not a mat file at all " * 10)
    with pytest.raises(InputError, match="text.mat"):
        UDC2020MatDataset(tmp_path / "text.mat")
    scipy.io.savemat(tmp_path / "flat.mat", {"x": np.ones((4, 4))})
    with pytest.raises(DataError, match="no 4-D"):
        UDC2020MatDataset(tmp_path / "flat.mat")
    scipy.io.savemat(tmp_path / "float.mat", {"x": np.ones((1, 4, 4, 3))})
    with pytest.raises(DataError, match="dtype"):
        UDC2020MatDataset(tmp_path / "float.mat")


# ------------------------------------------------------------------ DISCNet .npy


def _write_npy_pairs(root: Path, names, peak: float = 8.0, gt: bool = True) -> dict:
    written = {}
    for i, name in enumerate(names):
        lq, g = _img(2 * i) * peak, _img(2 * i + 1) * peak
        (root / "input").mkdir(parents=True, exist_ok=True)
        np.save(root / "input" / f"{name}.npy", lq)
        if gt:
            (root / "GT").mkdir(exist_ok=True)
            np.save(root / "GT" / f"{name}.npy", g)
        written[name] = (lq, g)
    return written


def test_npy_pairs_tone_mapped(tmp_path):
    written = _write_npy_pairs(tmp_path, ["s2", "s1"])
    psf = np.random.default_rng(5).random((9, 9, 3)).astype(np.float32)
    np.save(tmp_path / "psf.npy", psf)
    ds = DiscNetNpyDataset(tmp_path)
    assert ds.names == ("s1", "s2") and ds.has_gt
    np.testing.assert_array_equal(ds.psf, psf)
    for pair in ds:
        lq, gt = written[pair.name]
        assert lq.max() > 1  # HDR input
        np.testing.assert_allclose(pair.lq, lq / (lq + 0.25), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(pair.gt, tone_map(gt), rtol=1e-6)
        assert pair.lq.dtype == np.float32 and 0 <= pair.lq.min() and pair.lq.max() < 1
        assert pair.meta["hdr_max"] == pytest.approx(float(lq.max()))
    info = ds.describe()
    assert info["format"] == "discnet-npy" and info["psf_shape"] == [9, 9, 3]


def test_npy_explicit_psf_and_lq_only(tmp_path):
    _write_npy_pairs(tmp_path / "ds", ["a"], gt=False)
    np.save(tmp_path / "k.npy", np.ones((5, 5, 3), np.float32))
    ds = DiscNetNpyDataset(tmp_path / "ds", psf=tmp_path / "k.npy")
    assert not ds.has_gt and ds[0].gt is None and ds.psf.shape == (5, 5, 3)
    with pytest.raises(InputError, match="missing.npy"):
        DiscNetNpyDataset(tmp_path / "ds", psf=tmp_path / "missing.npy")
    assert DiscNetNpyDataset(tmp_path / "ds").psf is None


@pytest.mark.parametrize("bad", [np.ones((H, W)), np.ones((H, W, 4)), np.full((H, W, 3), np.nan)])
def test_npy_bad_arrays(tmp_path, bad):
    _write_npy_pairs(tmp_path, ["ok", "bad"])
    np.save(tmp_path / "GT" / "bad.npy", bad)
    ds = DiscNetNpyDataset(tmp_path)
    ds[ds.names.index("ok")]
    with pytest.raises(DataError, match="bad.npy"):
        ds[ds.names.index("bad")]


def test_npy_bad_files(tmp_path):
    _write_npy_pairs(tmp_path, ["a", "b"])
    np.save(tmp_path / "input" / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "GT" / "b.npy", _img(0, H + 1, W))
    ds = DiscNetNpyDataset(tmp_path)
    with pytest.raises(InputError, match="a.npy"):  # pickled objects are refused, not loaded
        ds[0]
    with pytest.raises(DataError, match="'b'"):
        ds[1]
    np.save(tmp_path / "psf.npy", -np.ones((3, 3, 3)))
    with pytest.raises(DataError, match="psf.npy"):
        DiscNetNpyDataset(tmp_path)
    (tmp_path / "nolq").mkdir()
    with pytest.raises(InputError, match="no lq/ or input/"):
        DiscNetNpyDataset(tmp_path / "nolq")


def test_npy_folder_given_to_image_reader(tmp_path):
    _write_npy_pairs(tmp_path, ["a"])
    with pytest.raises(DataError, match=".npy"):
        FolderPairDataset(tmp_path)


# ------------------------------------------------------------------ dispatch


def test_open_dispatches_each_layout(tmp_path):
    _write_pairs(tmp_path / "pairs", ["a"])
    _write_pairs(tmp_path / "udc", ["a"], "input", "GT")
    _write_npy_pairs(tmp_path / "npy", ["a"])
    write_png(tmp_path / "plain" / "a.png", _img(0), 8)
    (tmp_path / "mat").mkdir()
    scipy.io.savemat(tmp_path / "mat" / "toled_val_display.mat", {"val_display": _stack(0)})
    scipy.io.savemat(tmp_path / "mat" / "toled_val_gt.mat", {"val_gt": _stack(1)})
    scipy.io.savemat(tmp_path / "mat" / "toled_test_display.mat", {"test_display": _stack(2)})

    assert type(open_paired_dataset(tmp_path / "pairs")) is FolderPairDataset
    udc = open_paired_dataset(tmp_path / "udc")
    assert type(udc) is FolderPairDataset and udc.has_gt
    npy = open_paired_dataset(tmp_path / "npy")
    assert type(npy) is DiscNetNpyDataset and npy.has_gt
    plain = open_paired_dataset(tmp_path / "plain")
    assert type(plain) is FolderPairDataset and not plain.has_gt
    mat = open_paired_dataset(str(tmp_path / "mat" / "toled_val_display.mat"))
    assert type(mat) is UDC2020MatDataset and mat.has_gt
    assert mat.gt_path.name == "toled_val_gt.mat"
    assert not open_paired_dataset(tmp_path / "mat" / "toled_test_display.mat").has_gt
    np.save(tmp_path / "k.npy", np.ones((3, 3, 3)))
    assert open_paired_dataset(tmp_path / "npy", psf=tmp_path / "k.npy").psf.shape == (3, 3, 3)


def test_open_bad_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        open_paired_dataset(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("hi")
    with pytest.raises(InputError, match="accepted layouts") as err:
        open_paired_dataset(tmp_path / "junk")
    assert "junk" in str(err.value)
    (tmp_path / "x.csv").write_text("1,2")
    with pytest.raises(InputError, match="accepted layouts"):
        open_paired_dataset(tmp_path / "x.csv")
    with pytest.raises(InputError, match="does not exist"):
        open_paired_dataset(tmp_path / "nope")
    _write_pairs(tmp_path / "pairs", ["a"])
    with pytest.raises(UsageError, match="PSF"):
        open_paired_dataset(tmp_path / "pairs", psf=tmp_path / "x.csv")
    with pytest.raises(UsageError, match="ground-truth"):
        open_paired_dataset(tmp_path / "pairs", gt=tmp_path / "x.csv")

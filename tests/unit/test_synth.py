"""Synthetic datasets: reproducible, complete, and readable by the paired reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from udc_edge.core.errors import DataError, InputError, UsageError
from udc_edge.core.metrics import psnr
from udc_edge.data.readers import open_paired_dataset
from udc_edge.data.sources import dead_leaves, make_source, photo_names
from udc_edge.data.synth import SynthSpec, write_synthetic_dataset


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    spec = SynthSpec(display="poled", count=3, size=48, source="photos", seed=7)
    write_synthetic_dataset(tmp_path / "a", spec)
    write_synthetic_dataset(tmp_path / "b", spec)
    write_synthetic_dataset(tmp_path / "c", SynthSpec(display="poled", count=3, size=48, source="photos", seed=8))
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert a == b
    assert a[next(k for k in a if str(k).startswith("lq"))] != c[next(k for k in c if str(k).startswith("lq"))]


def test_dataset_layout_and_metadata(tmp_path):
    meta = write_synthetic_dataset(
        tmp_path / "d", SynthSpec(display="toled", count=2, size=40, source="deadleaves", seed=1)
    )
    root = tmp_path / "d"
    assert sorted(p.name for p in (root / "lq").iterdir()) == ["0000.png", "0001.png"]
    assert sorted(p.name for p in (root / "gt").iterdir()) == ["0000.png", "0001.png"]
    psf = np.load(root / "psf.npy", allow_pickle=False)
    assert psf.shape == (63, 63, 3)
    on_disk = json.loads((root / "dataset.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert on_disk["display"]["name"] == "toled" and on_disk["spec"]["seed"] == 1
    assert on_disk["psf"]["wavelengths_nm"] == [610.0, 530.0, 470.0]
    ds = open_paired_dataset(root)
    pair = ds[0]
    assert pair.lq.shape == pair.gt.shape == (40, 40, 3)
    st = meta["stats"]
    assert st["psnr_lq_vs_gt_min"] - 0.01 <= psnr(pair.lq, pair.gt) <= st["psnr_lq_vs_gt_max"] + 0.01


def test_image_i_does_not_depend_on_count(tmp_path):
    write_synthetic_dataset(tmp_path / "a", SynthSpec(count=1, size=40, seed=3))
    write_synthetic_dataset(tmp_path / "b", SynthSpec(count=2, size=40, seed=3))
    assert (tmp_path / "a/lq/0000.png").read_bytes() == (tmp_path / "b/lq/0000.png").read_bytes()


def test_size_too_small_for_psf_writes_nothing(tmp_path):
    with pytest.raises(UsageError, match="too small"):
        write_synthetic_dataset(tmp_path / "d", SynthSpec(count=1, size=16))
    assert not (tmp_path / "d").exists()


def test_bad_counts_are_usage_errors():
    with pytest.raises(UsageError, match="count"):
        SynthSpec(count=0)


def test_user_folder_source(tmp_path):
    from udc_edge.data.images import write_png

    (tmp_path / "imgs").mkdir()
    write_png(tmp_path / "imgs" / "a.png", np.full((50, 60, 3), 0.3, np.float32), 8)
    sample, desc = make_source(tmp_path / "imgs")
    img = sample(40, np.random.default_rng(0))
    assert img.shape == (40, 40, 3) and desc["count"] == 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        make_source(tmp_path / "empty")
    with pytest.raises(InputError, match="unknown source"):
        make_source(tmp_path / "nope")


def test_photo_splits_are_disjoint_and_load_offline():
    train, test = set(photo_names("train")), set(photo_names("test"))
    assert train and test and not train & test
    assert len(train | test) >= 18
    sample, _ = make_source("photos:test")
    assert sample(64, np.random.default_rng(0)).shape == (64, 64, 3)


def test_dead_leaves_has_many_occluding_discs():
    img = dead_leaves(64, np.random.default_rng(0))
    assert img.shape == (64, 64, 3) and 0 <= img.min() and img.max() <= 1
    assert len(np.unique(img.reshape(-1, 3).round(3), axis=0)) > 20


def test_synth_pairs_are_reproducible_and_image_i_does_not_depend_on_count():
    """The one recipe behind held-out sets, calibration and export examples."""
    from udc_edge.data.synth import UDCSimulator, synth_pairs

    a = synth_pairs("toled", "photos:test", 3, 8, seed=4)
    b = synth_pairs("toled", "photos:test", 2, 8, seed=4)
    assert all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=False) for k in (0, 1))
    side = UDCSimulator.for_display("toled").min_size
    assert a[0][0].shape == (side, side, 3)  # raised to the PSF's minimum size
    c = synth_pairs("toled", "photos:test", 1, 8, seed=5)
    assert not np.array_equal(a[0][0], c[0][0])

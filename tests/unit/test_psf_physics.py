"""Physics of the display PSF and of UDC image formation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from udc_edge.core.errors import DataError, LayoutError
from udc_edge.data.formation import SensorNoise, convolve_psf, degrade, hdr_scene
from udc_edge.data.layouts import PRESETS, Opening, get_layout
from udc_edge.data.psf import compute_psf
from udc_edge.data.sources import bundled_photo, random_crop
from udc_edge.data.tonemap import inverse_tone_map, tone_map


@pytest.mark.parametrize("name", ["poled", "toled"])
def test_each_channel_sums_to_one(name):
    psf, _ = compute_psf(PRESETS[name])
    assert psf.shape == (63, 63, 3) and psf.dtype == np.float32
    np.testing.assert_allclose(psf.sum(axis=(0, 1)), 1.0, atol=1e-5)
    assert (psf >= 0).all()


def _first_order_position(profile: np.ndarray, lo: int) -> float:
    """Sub-pixel position of the strongest peak beyond the central lobe."""
    i = lo + int(np.argmax(profile[lo:]))
    w = profile[i - 2 : i + 3]
    return float(np.sum(np.arange(i - 2, i + 3) * w) / w.sum())


def test_psf_widens_in_proportion_to_wavelength():
    # Monochromatic, unbinned, no haze: the slit grating's first horizontal order sits at
    # lambda * f / (pitch * pixel), so R/B must be 610/470.
    lay = PRESETS["toled"]
    optics = replace(lay.optics, binning=1, psf_size=127, bandwidth_nm=0.0, spectral_samples=1)
    psf, _ = compute_psf(replace(lay, optics=optics), haze=False)
    c = psf.shape[0] // 2
    r = _first_order_position(psf[c, c:, 0], lo=10)
    b = _first_order_position(psf[c, c:, 2], lo=10)
    assert r / b == pytest.approx(610 / 470, rel=0.03)


def test_toled_transmits_more_light_than_poled():
    t, p = PRESETS["toled"].light_transmission, PRESETS["poled"].light_transmission
    assert all(tc > pc for tc, pc in zip(t, p, strict=True))
    # P-OLED's polyimide absorbs blue most.
    assert p[2] < p[1] < p[0]


def _grad_energy(img: np.ndarray) -> float:
    return float(np.mean(np.diff(img, axis=0) ** 2) + np.mean(np.diff(img, axis=1) ** 2))


@pytest.mark.parametrize("name", ["poled", "toled"])
def test_degraded_images_are_blurrier_than_ground_truth(name):
    psf, _ = compute_psf(PRESETS[name])
    rng = np.random.default_rng(0)
    for photo in ("astronaut", "brick", "coffee"):
        clean = random_crop(bundled_photo(photo), 96, rng)
        x = hdr_scene(clean, rng, lights=False)
        y = degrade(x, psf, PRESETS[name].light_transmission, rng, noise=None)
        assert _grad_energy(tone_map(y)) < 0.7 * _grad_energy(tone_map(x))


def test_hdr_light_sources_flare_far_more_than_clipped_ones():
    psf, info = compute_psf(PRESETS["toled"])
    x = np.full((96, 96, 3), 0.05, np.float32)
    x[48, 48] = 200.0  # a point light far above the display range
    t = PRESETS["toled"].light_transmission
    rng = np.random.default_rng(0)
    hdr = degrade(x, psf, t, rng, noise=None)
    ldr = degrade(np.minimum(x, 1.0), psf, t, rng, noise=None)
    d = round(info.first_order_px[1])  # first horizontal diffraction order of the slits, green
    ring = hdr[48, 48 + d, 1] - 0.05
    assert ring > 0.5, "a bright source must throw visible light into its diffraction orders"
    assert ldr[48, 48 + d, 1] - 0.05 < 0.2 * ring


def test_noise_is_stronger_for_the_dimmer_panel():
    rng = np.random.default_rng(0)
    x = np.full((64, 64, 3), 0.2, np.float32)
    flat = np.full((63, 63, 3), 0.0, np.float32)
    flat[31, 31] = 1.0
    stds = {}
    for name in ("poled", "toled"):
        y = degrade(x, flat, PRESETS[name].light_transmission, rng, noise=SensorNoise())
        stds[name] = float(y.std())
    assert stds["poled"] > stds["toled"]


def test_tone_map_round_trip_and_range():
    x = np.array([0.0, 0.25, 1.0, 100.0], np.float32)
    y = tone_map(x)
    assert y[1] == pytest.approx(0.5) and (y < 1).all()
    np.testing.assert_allclose(inverse_tone_map(y), x, rtol=1e-3)


def test_layout_without_openings_is_refused():
    with pytest.raises(LayoutError, match="no openings"):
        replace(PRESETS["poled"], openings=())


def test_all_black_mask_is_refused(tmp_path):
    from udc_edge.data.images import write_png

    write_png(tmp_path / "cell.png", np.zeros((16, 16, 3), np.float32), 8)
    with pytest.raises(LayoutError, match="no open"):
        get_layout(tmp_path / "cell.png")


def test_mask_png_and_json_layouts(tmp_path):
    from udc_edge.data.images import write_png

    mask = np.zeros((32, 32, 3), np.float32)
    mask[8:24, 12:20] = 1.0
    write_png(tmp_path / "cell.png", mask, 8)
    lay = get_layout(tmp_path / "cell.png")
    assert lay.open_fraction == pytest.approx(0.125, abs=0.02)
    (tmp_path / "panel.json").write_text(
        '{"name": "mine", "pitch_um": 50, "openings": [{"cx": 0.5, "cy": 0.5, "w": 0.5, "h": 0.5}],'
        ' "transmittance": [0.9, 0.9, 0.9], "haze": 0.0}'
    )
    lay2 = get_layout(tmp_path / "panel.json")
    assert lay2.name == "mine" and lay2.open_fraction == pytest.approx(0.25, abs=0.01)
    psf, _ = compute_psf(lay2)
    np.testing.assert_allclose(psf.sum(axis=(0, 1)), 1.0, atol=1e-5)


def test_bad_layout_json_names_the_key(tmp_path):
    (tmp_path / "bad.json").write_text('{"pitch_um": 50, "colour": 3, "openings": []}')
    with pytest.raises(LayoutError, match="colour"):
        get_layout(tmp_path / "bad.json")


def test_pupil_too_large_for_sampling_is_refused():
    lay = PRESETS["toled"]
    big = replace(lay, optics=replace(lay.optics, pupil_diameter_mm=3.0))
    with pytest.raises(LayoutError, match="too large"):
        compute_psf(big)


def test_unknown_display_lists_presets():
    with pytest.raises(LayoutError, match="poled, toled"):
        get_layout("oled")


def test_image_smaller_than_psf_is_refused():
    psf = np.zeros((63, 63, 3), np.float32)
    with pytest.raises(DataError, match="too small"):
        convolve_psf(np.zeros((20, 40, 3), np.float32), psf)


def test_opening_shapes_are_validated():
    with pytest.raises(LayoutError, match="bad opening"):
        replace(PRESETS["toled"], openings=(Opening(0.5, 0.5, 0.2, 0.2, "star"),))

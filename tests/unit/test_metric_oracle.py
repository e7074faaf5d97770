"""PSNR and SSIM against closed-form values and an independent SSIM written here (issue 15).

A PSNR computed with data_range 2 reads +6 dB everywhere, an SSIM with data_range 255 reads
~1 for any pair: both pass "psnr > 0"-style tests, neither passes these.
"""

from __future__ import annotations

import numpy as np
import pytest

from udc_edge.core.metrics import psnr, ssim


def _gauss_ssim(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, crop: int = 3) -> float:
    """Wang et al. 2004 SSIM with a Gaussian window (data range 1, population covariance),
    written from the formula: separable 11-tap Gaussian (radius int(3.5 sigma + 0.5)),
    half-sample symmetric borders, the map averaged after cropping ``crop`` pixels."""
    radius = int(3.5 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()

    def blur(img: np.ndarray) -> np.ndarray:
        pad = np.pad(img, radius, mode="symmetric")
        rows = sum(k[i] * pad[i : i + img.shape[0], :] for i in range(k.size))
        return sum(k[i] * rows[:, i : i + img.shape[1]] for i in range(k.size))

    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        vals.append(s[crop:-crop, crop:-crop].mean())
    return float(np.mean(vals))


def test_psnr_of_a_constant_offset_is_exactly_20_db():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.9, (32, 40, 3)).astype(np.float64)  # x + 0.1 stays in [0, 1]: no clipping
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-9)
    assert psnr(x + 0.01, x) == pytest.approx(40.0, abs=1e-9)
    # CHW and NCHW give the same number
    assert psnr((x + 0.1).transpose(2, 0, 1)[None], x.transpose(2, 0, 1)[None]) == pytest.approx(20.0, abs=1e-9)


def test_psnr_matches_the_mse_formula_on_random_images():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, (24, 24, 3)), rng.uniform(0, 1, (24, 24, 3))
    assert psnr(a, b) == pytest.approx(10 * np.log10(1.0 / np.mean((a - b) ** 2)), abs=1e-9)


@pytest.mark.parametrize("noise", [0.02, 0.1, 0.3])
def test_ssim_matches_an_independent_gaussian_window_implementation(noise):
    rng = np.random.default_rng(2)
    gt = np.clip(rng.uniform(0, 1, (40, 48, 3)) * 0.5 + np.linspace(0, 0.5, 48)[None, :, None], 0, 1)
    pred = np.clip(gt + rng.normal(0, noise, gt.shape), 0, 1)
    assert ssim(pred, gt) == pytest.approx(_gauss_ssim(pred, gt), abs=1e-6)
    assert ssim(gt, gt) == pytest.approx(1.0, abs=1e-12)


def test_ssim_falls_with_noise():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 1, (32, 32, 3))
    vals = [ssim(np.clip(gt + rng.normal(0, s, gt.shape), 0, 1), gt) for s in (0.01, 0.05, 0.2)]
    assert vals[0] > vals[1] > vals[2] and vals[0] > 0.99 and vals[2] < 0.9

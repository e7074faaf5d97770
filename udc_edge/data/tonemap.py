"""The tone map between linear HDR radiance and the network domain.

DISCNet's synthetic UDC set uses the Reinhard-style curve ``x / (x + 0.25)``: it maps
[0, inf) to [0, 1), keeps mid-tones well resolved (0.25 -> 0.5) and compresses
highlights smoothly, so flare around light sources far above the display range stays
visible instead of clipping flat. Restorers see and produce tone-mapped images.
"""

from __future__ import annotations

import numpy as np

TONE_MAP_K = 0.25


def tone_map(x: np.ndarray) -> np.ndarray:
    """Linear HDR (>= 0) to the network domain [0, 1)."""
    x = np.maximum(np.asarray(x, dtype=np.float32), 0.0)
    return x / (x + np.float32(TONE_MAP_K))


def inverse_tone_map(y: np.ndarray, max_value: float = 0.999) -> np.ndarray:
    """Network domain back to linear HDR; ``y`` is clipped below 1 to stay finite."""
    y = np.clip(np.asarray(y, dtype=np.float32), 0.0, max_value)
    return np.float32(TONE_MAP_K) * y / (1.0 - y)

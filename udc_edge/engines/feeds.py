"""Values for a graph's extra inputs (a PSF code, a noise level, a mask) at run time.

``udc-edge export --extra-input psf_code=1x8:code.npy`` keeps ``psf_code`` a graph input
whose dim 0 follows the image's batch, and records it (name, shape, example value when
small) in the ONNX metadata ``udc_edge.extra_inputs``; ``build`` copies that into the
engine manifest. ``build`` (calibration), ``restore``, ``bench`` and ``verify`` take
``--input NAME=FILE.npy`` or ``--input NAME=VALUE`` (every element VALUE) per display; an
input not given falls back to the recorded example value, and one with neither is an error
naming the option.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from udc_edge.core.errors import InputError, UsageError
from udc_edge.core.fileio import read_npy

EXTRA_INPUTS_KEY = "udc_edge.extra_inputs"


def recorded_extras(meta: dict[str, str]) -> list[dict]:
    """The unfrozen extra inputs export recorded in an ONNX's metadata (``[]`` if none)."""
    try:
        items = json.loads(meta.get(EXTRA_INPUTS_KEY, "[]"))
    except json.JSONDecodeError:
        return []
    return [e for e in items if isinstance(e, dict) and not e.get("frozen", True)]


def parse_input_options(texts: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """``NAME=FILE.npy|VALUE`` options into ``{name: source}``."""
    out: dict[str, str] = {}
    for text in texts or ():
        name, eq, src = text.partition("=")
        if not eq or not name.isidentifier() or not src:
            raise UsageError(f"--input {text!r} is not NAME=FILE.npy or NAME=VALUE", "e.g. --input psf_code=code.npy")
        out[name] = src
    return out


def _load(name: str, src: str, shape: tuple[int, ...]) -> np.ndarray:
    if src.endswith(".npy"):
        path = Path(src)
        arr = read_npy(path, f"--input {name}")
        if tuple(arr.shape) == tuple(shape[1:]):
            arr = arr[None]
        if tuple(arr.shape) != tuple(shape):
            raise InputError(f"--input {name}: {path} has shape {tuple(arr.shape)}, the graph takes {tuple(shape)}",
                             "give an array of that shape (dim 0, the batch, may be left out)")
        return np.ascontiguousarray(arr, dtype=np.float32)
    try:
        return np.full(shape, float(src), dtype=np.float32)
    except ValueError as exc:
        raise UsageError(f"--input {name}={src}: neither a .npy file nor a number") from exc


def extra_values(recorded: list[dict], given: dict[str, str], where: str) -> dict[str, np.ndarray]:
    """``{name: batch-1 array}`` for every recorded extra input: ``given`` first, else the
    recorded example; ``where`` names the engine/ONNX in errors."""
    known = {e["name"]: e for e in recorded}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise UsageError(f"--input {', '.join(unknown)}: {where} has no such extra input",
                         f"its extra inputs: {', '.join(known) or 'none'}")
    out = {}
    for name, e in known.items():
        shape = tuple(e["shape"])
        if name in given:
            out[name] = _load(name, given[name], shape)
        elif e.get("example") is not None:
            out[name] = np.asarray(e["example"], dtype=np.float32).reshape(shape)
        else:
            raise UsageError(f"{where} takes the extra input {name} {shape} and no example value was recorded",
                             f"give --input {name}=FILE.npy or --input {name}=VALUE")
    return out


def batched(value: np.ndarray, n: int) -> np.ndarray:
    """A batch-1 extra input repeated for a batch of ``n`` images."""
    return value if value.shape[0] == n else np.repeat(value[:1], n, axis=0)

"""Resolve what a user names as a model: a shipped name, a checkpoint, or their own class.

Shipped weights live in ``udc_edge/weights/NAME/`` (``model.safetensors``, ``config.json``,
``CARD.md``); they are produced by this project's own ``udc-edge train`` commands, and
nothing is ever downloaded.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from torch import nn

from udc_edge.core.errors import ModelError
from udc_edge.models.checkpoint import CONFIG_NAME, WEIGHTS_NAME, load_checkpoint, load_weights
from udc_edge.models.registry import create, list_models

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def shipped_models() -> dict[str, Path]:
    """Names of the weights that ship with the package, and their folders."""
    if not WEIGHTS_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(WEIGHTS_DIR.iterdir()) if (p / WEIGHTS_NAME).is_file()}


def shipped_card(name: str) -> dict[str, Any]:
    """The shipped model's config.json (architecture, training command, metrics)."""
    return json.loads((shipped_models()[name] / CONFIG_NAME).read_text())


def _checkpoint_path(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".safetensors":
        return path
    if path.is_dir():
        for cand in (path, path / "best", path / "last"):
            if (cand / WEIGHTS_NAME).is_file():
                return cand
    return None


def load_model(
    model: str,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    weights: str | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Return ``(model in eval mode, description)`` for a shipped name, a checkpoint folder
    (or a training run's folder: its ``best/``), a ``.safetensors`` file, or ``--arch``
    (a preset, architecture or ``package.module:Class``) with ``--weights``."""
    if arch:
        net = create(arch, **(arch_kwargs or {}))
        if not weights:
            raise ModelError(f"--arch {arch} given without --weights", "give the weights file to load into it")
        load_weights(net, weights)
        return net.eval(), {"source": "bring-your-own", "arch": arch, "kwargs": arch_kwargs or {}, "weights": weights}
    shipped = shipped_models()
    if model in shipped:
        net, cfg = load_checkpoint(shipped[model])
        return net, {"source": "shipped", "name": model, **cfg}
    ckpt = _checkpoint_path(Path(model))
    if ckpt is not None:
        net, cfg = load_checkpoint(ckpt)
        return net, {"source": "checkpoint", "path": str(ckpt), **cfg}
    if model in list_models():
        raise ModelError(
            f"{model!r} is an architecture preset without trained weights",
            f"use a shipped model ({', '.join(shipped) or 'none installed'}), a checkpoint folder, "
            "or --arch with --weights",
        )
    close = difflib.get_close_matches(model, list(shipped), n=2, cutoff=0.5)
    raise ModelError(
        f"model {model!r} is neither a shipped model nor a checkpoint",
        (f"did you mean {' or '.join(close)}? " if close else "")
        + f"shipped: {', '.join(shipped) or 'none'}; or a folder with {WEIGHTS_NAME}",
    )

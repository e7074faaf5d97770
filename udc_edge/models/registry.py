"""The one model registry: preset names, architecture names and bring-your-own classes.

A *preset* (``unet-s``) is an architecture name plus kwargs; a checkpoint stores exactly
that pair (``{"arch": "unet", "kwargs": {...}}``) so :func:`build` can rebuild it. A
bring-your-own architecture is ``package.module:Class``, imported and called with the
kwargs. Every built model has an int ``multiple`` attribute (1 when a class lacks it).
"""

from __future__ import annotations

import copy
import difflib
import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from udc_edge.core.errors import ModelError
from udc_edge.models.nafnet import NAFNet
from udc_edge.models.padding import model_multiple
from udc_edge.models.unet import UNet

ARCHS: dict[str, Callable[..., nn.Module]] = {"unet": UNet, "nafnet": NAFNet}

PRESETS: dict[str, dict[str, Any]] = {
    "unet-t": {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}},
    "unet-s": {"arch": "unet", "kwargs": {"width": 16, "depth": 3, "blocks": 2}},
    "nafnet-t": {
        "arch": "nafnet",
        "kwargs": {"width": 4, "enc_blocks": [1, 1], "middle_blocks": 1, "dec_blocks": [1, 1]},
    },
    "nafnet-s": {
        "arch": "nafnet",
        "kwargs": {
            "width": 16,
            "enc_blocks": [1, 1, 2],
            "middle_blocks": 2,
            "dec_blocks": [1, 1, 1],
        },
    },
}


def list_models() -> list[str]:
    """Preset names, sorted."""
    return sorted(PRESETS)


def _unknown(name: str) -> ModelError:
    known = list_models() + sorted(ARCHS)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    hint += (" " if hint else "") + (
        f"known models: {', '.join(known)}; or give a class as package.module:Class"
    )
    return ModelError(f"unknown model {name!r}", hint)


def model_config(name: str) -> dict[str, Any]:
    """``{"arch": ..., "kwargs": {...}}`` of a preset or a bare architecture name (a copy)."""
    if name in PRESETS:
        return copy.deepcopy(PRESETS[name])
    if name in ARCHS:
        return {"arch": name, "kwargs": {}}
    raise _unknown(name)


def create(name: str, **overrides: Any) -> nn.Module:
    """Build a preset (``unet-s``), an architecture (``unet``) or ``package.module:Class``."""
    if ":" in name:
        return build(name, overrides)
    cfg = model_config(name)
    return build(cfg["arch"], {**cfg["kwargs"], **overrides})


# Checkpoints name an architecture by its module path; a moved module keeps loading.
RENAMED_ARCHS = {"udc_edge.models.purifier:Purifier": "udc_edge.diffusion.purifier:Purifier"}


def _import_class(spec: str) -> Callable[..., nn.Module]:
    module_name, _, attr = RENAMED_ARCHS.get(spec, spec).partition(":")
    if not module_name or not attr:
        raise ModelError(
            f"bring-your-own architecture {spec!r} is not of the form package.module:Class",
            "e.g. --arch mypkg.nets:MyNet",
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error raised while importing it
        raise ModelError(
            f"cannot import module {module_name!r} for architecture {spec!r}: "
            f"{type(exc).__name__}: {exc}",
            "check the module is on PYTHONPATH (or installed) and imports cleanly",
        ) from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(module) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=3)
            raise ModelError(
                f"module {module_name!r} has no class {attr!r} (architecture {spec!r})",
                f"did you mean {', '.join(close)}?" if close else "check the class name",
            )
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise ModelError(
            f"{spec!r} is not a torch.nn.Module subclass (got {type(obj).__name__})",
            "point --arch at an nn.Module class",
        )
    return obj


def build(arch: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Build an architecture (``unet``, ``nafnet``) or a ``package.module:Class`` with kwargs."""
    kwargs = dict(kwargs or {})
    if ":" in arch:
        cls = _import_class(arch)
    elif arch in ARCHS:
        cls = ARCHS[arch]
    else:
        raise _unknown(arch)
    try:
        model = cls(**kwargs)
    except TypeError as exc:
        raise ModelError(
            f"cannot build architecture {arch!r} with kwargs {kwargs}: {exc}",
            "fix the architecture kwargs (--arch-kwargs)",
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{arch!r} did not return a torch.nn.Module", "use an nn.Module class")
    if not hasattr(model, "multiple"):
        model.multiple = 1
    model_multiple(model)  # validates the attribute
    return model

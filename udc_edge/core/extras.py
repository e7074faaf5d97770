"""Which optional libraries come with which install extra, and the one way to ask for torch.

A device-side install (``pip install "udc-edge[runtime]"``) has no PyTorch: it builds,
benchmarks, verifies and runs engines. Training, export, white-box attacks and torch
models need the ``torch`` extra. :func:`require_torch` imports torch or raises one line
naming that extra; :func:`missing_extra` turns an ``ImportError`` of such a library,
raised anywhere below a command, into the same one-line error (the CLI applies it once,
so no module needs its own try/except).
"""

from __future__ import annotations

import importlib.util
from types import ModuleType

from udc_edge.core.errors import BackendUnavailableError

TORCH_INSTALL = 'pip install "udc-edge[torch]"'

#: Top-level modules that only the ``torch`` extra installs.
TORCH_EXTRA_MODULES = frozenset({"torch", "torchvision", "diffusers", "safetensors", "onnxscript"})


def has_torch() -> bool:
    """Whether PyTorch can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def torch_missing(what: str, module: str = "torch") -> BackendUnavailableError:
    """The one-line error for ``what`` needing a library of the ``torch`` extra."""
    return BackendUnavailableError(
        f"{what} needs PyTorch ({module} is not installed here: a runtime-only install runs engines, "
        "not torch models)",
        f"install it: {TORCH_INSTALL}",
    )


def require_torch(what: str = "this command") -> ModuleType:
    """``import torch``, or raise :func:`torch_missing` for ``what``."""
    try:
        import torch
    except ImportError as exc:
        raise torch_missing(what) from exc
    return torch


def missing_extra(exc: ImportError, what: str) -> BackendUnavailableError | None:
    """The one-line error for an ImportError of a ``torch``-extra library, else None."""
    top = (exc.name or "").split(".")[0]
    return torch_missing(what, top) if top in TORCH_EXTRA_MODULES else None

"""udc-edge: under-display-camera restorers from PyTorch to robust edge engines.

The public API (``udc_edge.api``) is importable from here: ``udc_edge.load_model``,
``restore``, ``attack``, ``build``, ``load_engine``, ``bench``, ``verify`` (``export`` is
``udc_edge.api.export``: ``udc_edge.export`` is the export package). It is loaded on first
use, so ``import udc_edge`` stays cheap (no torch until a call needs it).
"""

from typing import Any

from udc_edge.core.version import __version__

__all__ = ["__version__", "attack", "bench", "build", "load_engine", "load_model", "restore", "verify"]


def __getattr__(name: str) -> Any:
    if name in __all__ and name != "__version__":
        from udc_edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'udc_edge' has no attribute {name!r}")

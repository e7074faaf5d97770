"""Resumable training state in safetensors (never pickle): optimizer, scheduler, step.

The optimizer's state dict is flattened into named tensors plus a JSON skeleton of its
non-tensor parts (param groups, step counts), stored as safetensors metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from udc_edge.errors import ModelError
from udc_edge.fileio import atomic_path


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, prefix, tensors), _flatten(v, prefix, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, prefix, tensors) for v in obj]
    return obj


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Save a nested dict of tensors and JSON values atomically as safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"udc_edge.state": json.dumps(skeleton)})


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no training state at {path}", "train without --resume first")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            skeleton = json.loads(f.metadata()["udc_edge.state"])
    except (SafetensorError, KeyError, OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"training state {path} is corrupt: {exc}", "delete it and train afresh") from exc
    return _unflatten(skeleton, tensors)

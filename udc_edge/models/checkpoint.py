"""Checkpoints: safetensors weights plus a JSON config, and bring-your-own weight files.

A checkpoint is a folder with ``model.safetensors`` (the weights, with the config JSON
also in its metadata, so the file alone is enough) and ``config.json`` (architecture,
kwargs, training data summary, metrics), written atomically. Weight files a user hands
us are never unpickled: ``.safetensors``, or a state dict ``torch.load`` can read with
``weights_only=True``; anything else is refused with a way to convert it.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from udc_edge.core.errors import InputError, ModelError
from udc_edge.core.fileio import atomic_dir, write_json_atomic
from udc_edge.models.registry import build

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
META_KEY = "udc_edge_config"
FORMAT_VERSION = 1
NESTED_KEYS = ("state_dict", "params", "params_ema")

# Whether a checkpoint's config may name code to import (``"arch": "pkg.mod:Class"``).
# Off unless the user opts in: ``load_checkpoint(..., trust_code=True)``, the context
# manager below, or the CLI's ``udc-edge --trust-code``.
_TRUST_CODE: ContextVar[bool] = ContextVar("udc_edge_trust_code", default=False)


@contextmanager
def trusting_checkpoint_code(trust: bool = True) -> Iterator[None]:
    """Within the block, checkpoints whose config names ``pkg.mod:Class`` may import it."""
    token = _TRUST_CODE.set(trust)
    try:
        yield
    finally:
        _TRUST_CODE.reset(token)


def _refuse_untrusted_code(config: Mapping[str, Any], source: Path, trust_code: bool | None) -> None:
    """A file must never make us import a module unless the user asked for their own code."""
    trusted = _TRUST_CODE.get() if trust_code is None else trust_code
    module = config["arch"].partition(":")[0]
    own = module == "udc_edge" or module.startswith("udc_edge.")  # e.g. the shipped purifiers
    if ":" in config["arch"] and not own and not trusted:
        raise ModelError(
            f"checkpoint {source} names code to import (arch {config['arch']!r}); "
            "udc-edge never imports a module a file names",
            "if it is your own network and you trust the folder, rerun as "
            "'udc-edge --trust-code ...' (Python: load_checkpoint(path, trust_code=True)), "
            "or give the class yourself with --arch pkg.mod:Class --weights FILE",
        )


def _key_list(keys: Iterable[str], limit: int = 10) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... (+{len(keys) - limit} more)" if len(keys) > limit else shown


def _check_config(config: Any, source: str) -> dict[str, Any]:
    if (
        not isinstance(config, Mapping)
        or not isinstance(config.get("arch"), str)
        or not isinstance(config.get("kwargs", {}), Mapping)
    ):
        raise ModelError(
            f"config of {source} has no valid 'arch' (string) and 'kwargs' (object)",
            'it must look like {"arch": "unet", "kwargs": {...}}',
        )
    return {**config, "kwargs": dict(config.get("kwargs", {}))}


def _jsonable(obj: Any) -> Any:
    """Paths and numpy/torch scalars (e.g. metrics) as plain JSON values."""
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def save_checkpoint(
    out_dir: str | os.PathLike,
    model: nn.Module,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``out_dir/model.safetensors`` and ``out_dir/config.json`` atomically.

    ``config`` is ``{"arch": ..., "kwargs": {...}}`` (see ``registry.model_config``);
    ``extra`` (training data summary, metrics, ...) is merged into ``config.json`` and the
    safetensors metadata. An existing non-empty ``out_dir`` needs ``overwrite=True``.
    """
    cfg = _check_config(config, "save_checkpoint")
    extra = dict(extra or {})
    clash = {"arch", "kwargs", "format_version"} & set(extra)
    if clash:
        raise ValueError(f"extra may not override {sorted(clash)}")
    doc = {"format_version": FORMAT_VERSION, **cfg, **extra}
    try:
        doc_json = json.dumps(doc, default=_jsonable)
    except TypeError as exc:
        raise ValueError(f"checkpoint config is not JSON-serialisable: {exc}") from exc
    state = {}
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"state dict entry {key!r} is not a tensor", "cannot store it")
        # clone: safetensors refuses tensors that share storage (tied weights, views)
        state[key] = value.detach().cpu().clone().contiguous()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite, owned_names=(WEIGHTS_NAME, CONFIG_NAME, "CARD.md")) as tmp:
        save_file(state, tmp / WEIGHTS_NAME, metadata={"format": "pt", META_KEY: doc_json})
        write_json_atomic(tmp / CONFIG_NAME, json.loads(doc_json))
    return out_dir


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # SafetensorError, OSError, ...: the file is not usable
        raise ModelError(
            f"cannot read weights file {path}: it is corrupt, truncated or not safetensors "
            f"({type(exc).__name__}: {exc})",
            "re-save or re-copy the checkpoint",
        ) from exc
    return tensors, meta


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(f"checkpoint {path} does not exist", "give a checkpoint folder or file")
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise InputError(
                f"{path} is not a checkpoint folder: it has no {WEIGHTS_NAME}",
                "give a folder written by udc-edge train, or a .safetensors file",
            )
        return weights
    if path.suffix != ".safetensors":
        raise InputError(
            f"checkpoint {path} is not a folder or a .safetensors file",
            "for other weight files use --arch ARCH --weights FILE",
        )
    return path


def _read_config(weights: Path, meta: Mapping[str, str]) -> dict[str, Any]:
    meta_cfg = sidecar_cfg = None
    if META_KEY in meta:
        try:
            meta_cfg = _check_config(json.loads(meta[META_KEY]), f"{weights} metadata")
        except json.JSONDecodeError as exc:
            raise ModelError(f"config in the metadata of {weights} is not JSON: {exc}") from exc
    sidecar = weights.parent / CONFIG_NAME
    if sidecar.is_file():
        try:
            sidecar_cfg = _check_config(json.loads(sidecar.read_text("utf-8")), str(sidecar))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{sidecar} is not valid JSON: {exc}", "fix or delete it") from exc
    if meta_cfg is None and sidecar_cfg is None:
        raise ModelError(
            f"{weights} has no config (no {CONFIG_NAME} beside it, none in its metadata)",
            "load it with --arch ARCH --arch-kwargs JSON --weights FILE instead",
        )
    if meta_cfg is not None and sidecar_cfg is not None:
        for key in ("arch", "kwargs"):
            if meta_cfg[key] != sidecar_cfg[key]:
                raise ModelError(
                    f"{sidecar} says {key}={sidecar_cfg[key]!r} but the metadata of {weights} "
                    f"says {meta_cfg[key]!r}",
                    f"the files do not belong together; delete the wrong {CONFIG_NAME}",
                )
    return sidecar_cfg if sidecar_cfg is not None else meta_cfg


def load_checkpoint(
    path: str | os.PathLike, trust_code: bool | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint folder or its ``.safetensors`` file; returns ``(model, config)``.

    The config comes from ``config.json`` beside the weights or, failing that, from the
    safetensors metadata. The model is in eval mode on the CPU. A config naming
    ``pkg.mod:Class`` is refused unless ``trust_code`` (default: the
    :func:`trusting_checkpoint_code` setting, off) says the user asked for their own code.
    """
    weights = _resolve(path)
    tensors, meta = _read_safetensors(weights)
    config = _read_config(weights, meta)
    _refuse_untrusted_code(config, weights, trust_code)
    model = build(config["arch"], config["kwargs"])
    apply_state_dict(model, tensors, str(weights))
    return model.eval(), config


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ModelError(
            f"{source} holds a {type(obj).__name__}, not a state dict",
            "save model.state_dict() (ideally as .safetensors)",
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"{source} has non-tensor entries: {_key_list(bad)} ({len(bad)} in all)",
            f"give a state dict, or a dict with one under {' / '.join(NESTED_KEYS)}",
        )
    return {str(k): v for k, v in obj.items()}


def _strip_ddp_prefix(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` prefix DistributedDataParallel adds, when the model lacks it."""
    prefix = "module."
    own = model.state_dict()
    if (
        state
        and all(k.startswith(prefix) for k in state)
        and not any(k.startswith(prefix) for k in own)
    ):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _unpickling_reason(msg: str) -> str:
    """The useful part of torch's long weights_only error (e.g. 'Unsupported global: ...')."""
    found = re.search(r"WeightsUnpickler error:\s*([^\n]*?)(?:\. Please|\n|$)", msg)
    if found:
        return found.group(1).strip()
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in msg.splitlines()]
    return next((ln for ln in reversed(lines) if ln), "unpickling error")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(str(exc))
        raise ModelError(
            f"refusing to load {path}: torch.load(weights_only=True) cannot read it ({reason}); "
            "udc-edge will not unpickle arbitrary objects from a file",
            "if you trust the file, load it in your own code and save its state dict with "
            "safetensors.torch.save_file(state_dict, 'weights.safetensors'), then pass that file",
        ) from exc
    except Exception as exc:  # not a torch file at all, truncated zip, ...
        raise ModelError(
            f"cannot read weights file {path} as a PyTorch state dict "
            f"({type(exc).__name__}: {exc})",
            "give a .safetensors file or a state dict saved with torch.save",
        ) from exc


def load_weights(model: nn.Module, file: str | os.PathLike) -> nn.Module:
    """Load a user's weight file (``.safetensors`` or a state dict) into ``model``, strictly.

    A torch file is read only with ``weights_only=True``; a dict holding the state dict
    under ``state_dict``/``params``/``params_ema`` is accepted, and a DDP ``module.``
    prefix is stripped. Returns ``model``.
    """
    path = Path(file)
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist", "check the --weights path")
    with open(path, "rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # u64 header size, then JSON
        state, _ = _read_safetensors(path)
    elif head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save zip, or a legacy pickle
        state = _unwrap(_torch_load(path), str(path))
    else:
        raise ModelError(
            f"cannot read weights file {path}: it is neither safetensors nor a PyTorch file",
            "give a .safetensors file or a state dict saved with torch.save",
        )
    apply_state_dict(model, _strip_ddp_prefix(state, model), str(path))
    return model


def apply_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``; missing/unexpected keys or shape mismatches are errors."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_key_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_key_list(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {_key_list(shapes)}")
    if problems:
        raise ModelError(
            f"weights in {source} do not fit {type(model).__name__}: " + "; ".join(problems),
            "check --arch and --arch-kwargs match the model the weights came from",
        )
    with torch.no_grad():
        model.load_state_dict(dict(state), strict=True)

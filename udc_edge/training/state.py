"""Resumable training state in safetensors (never pickle): optimizer, scheduler, step.

The optimizer's state dict is flattened into named tensors plus a JSON skeleton of its
non-tensor parts (param groups, step counts), stored as safetensors metadata.

``save_train_state``/``load_train_state`` are the trainers' shared layout of
``OUT/state.safetensors`` (optimizer, step, JSON history and best-so-far) next to the
``OUT/last`` checkpoint; ``spec_changes`` compares a resumed run's spec with the
interrupted run's (refusing changes of the fields that define the run).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from udc_edge.core.errors import ModelError, UsageError
from udc_edge.core.fileio import atomic_path


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, tensors) for v in obj]
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
    skeleton = _flatten(state, tensors)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"udc_edge.state": json.dumps(skeleton)})


def load_state(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no training state at {path}", "train without --resume first")
    try:
        with safe_open(str(path), framework="pt") as f:
            skeleton = json.loads(f.metadata()["udc_edge.state"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, KeyError, TypeError, OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"training state {path} is corrupt: {exc}", "delete it and train afresh") from exc
    return _unflatten(skeleton, tensors)


STATE_NAME = "state.safetensors"


def save_train_state(path: str | os.PathLike, opt: torch.optim.Optimizer, step: int, history: list[dict],
                     best: Any) -> None:
    """The trainers' state layout: optimizer, step, JSON history and best-so-far metric."""
    save_state(path, {"optimizer": opt.state_dict(), "step": step, "history": json.dumps(history),
                      "best": json.dumps(best)})


def load_train_state(out: str | os.PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer
                     ) -> tuple[int, list[dict], Any]:
    """Resume from ``out``: OUT/last weights into ``model`` (in place: ``opt`` holds its
    parameters) and the optimizer state; returns (step, history, best). A folder without
    state is the clear "no training state" error, before anything is loaded."""
    from udc_edge.models.checkpoint import load_weights

    out = Path(out)
    st = load_state(out / STATE_NAME)
    last_step = last_config(out).get("training", {}).get("step")
    if last_step is not None and int(last_step) != int(st["step"]):
        raise ModelError(f"{out}/last is from step {last_step} but {out / STATE_NAME} from step {st['step']} "
                         "(the run stopped while saving)", "start a new run, or delete the newer of the two")
    load_weights(model, out / "last" / "model.safetensors")
    opt.load_state_dict(st["optimizer"])
    return int(st["step"]), json.loads(st["history"]), json.loads(st["best"])


def last_config(out: str | os.PathLike) -> dict[str, Any]:
    """OUT/last/config.json (kwargs, ``training`` with the run's spec, ...); {} when absent."""
    try:
        doc = json.loads((Path(out) / "last" / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def spec_changes(saved: Mapping[str, Any], current: Mapping[str, Any], must_match: Mapping[str, str],
                 ignore: Iterable[str] = ("out", "resume", "overwrite", "threads")) -> dict[str, list]:
    """Fields of ``current`` that differ from the interrupted run's ``saved`` spec.

    A field of ``must_match`` (field -> its option name) that differs is a UsageError
    naming the option; the other differences are returned as {field: [saved, current]}
    (to record in the log). Values are compared as JSON (tuples == lists); fields the
    saved spec lacks are not compared.
    """
    now = json.loads(json.dumps(dict(current), default=str))
    skip = set(ignore)
    changed: dict[str, list] = {}
    for name, value in now.items():
        if name in skip or name not in saved or saved[name] == value:
            continue
        if name in must_match:
            raise UsageError(f"--resume: {must_match[name]} is {value!r} but the interrupted run used "
                             f"{saved[name]!r}", "resume with the same options, or start a new run "
                             "(another --out, or --overwrite)")
        changed[name] = [saved[name], value]
    return changed


def options(*names: str, **labels: str) -> dict[str, str]:
    """A must-match map for :func:`resume_run`: spec field -> the option that sets it
    (``--field-name`` unless ``labels`` says otherwise)."""
    return {**{n: f"--{n.replace('_', '-')}" for n in names}, **labels}


def resume_run(out: str | os.PathLike, model: torch.nn.Module, opt: torch.optim.Optimizer,
               current: Mapping[str, Any], must_match: Mapping[str, str]) -> tuple[int, list[dict], Any, dict]:
    """Resume the run in ``out`` (every trainer's ``--resume``).

    ``current`` is the new run's spec (``asdict``) plus any values the trainer records
    beside it in OUT/last's ``training`` record (weight digests of the teacher or
    purifier, ...). A ``must_match`` field that differs from the interrupted run is
    refused before anything loads; other differences are returned in the ``resumed``
    record for the log. Returns (step, history, best, resumed).
    """
    saved = last_config(out).get("training", {})
    saved = {**{k: v for k, v in saved.items() if k != "spec"}, **saved.get("spec", {})}
    changed = spec_changes(saved, current, must_match)
    step, history, best = load_train_state(out, model, opt)
    return step, history, best, {"from_step": step, "changed": changed}

"""Bring your own restorer: load a user's ``package.module:Class`` on a CPU machine and wrap
it into the one-image-in, one-image-out network the exporter and engines expect.

* :func:`cpu_only` turns hard-coded ``.cuda()`` (on tensors and modules) into no-ops and
  records each call site (file, line, code), so research code written for one GPU loads,
  runs and exports here; the report says which lines to fix.
* :func:`import_module` imports the user's module, reporting a missing CUDA-only extension
  by module name and the line that imports it, the heavy packages it pulled in, and
  (``stub_modules``) replacing named modules with stubs so the class can still load.
* :class:`ExtraInput` and :class:`ByoWrapper`: named extra inputs of ``forward`` (a PSF code)
  frozen as constants from a value or a ``.npy`` file, and an output selector for tuple
  outputs (``--output-index``).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import linecache
import os
import sys
import time
import traceback
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from udc_edge.core.errors import InputError, ModelError, UsageError
from udc_edge.models.padding import model_multiple

# Packages that make a restorer slow to import or impossible to load on a CPU edge box.
HEAVY_MODULES = ("tensorflow", "jax", "mmcv", "mmengine", "mmdet", "cupy", "apex", "deepspeed", "triton",
                 "tensorrt", "pycuda", "numba", "transformers", "timm", "kornia", "cv2", "lpips", "basicsr")
_LIBRARY_PARTS = ("site-packages", "dist-packages", "/torch/", "/importlib/", "<frozen", "/udc_edge/", "/contextlib.py")


def user_frame(tb: types.TracebackType | None) -> str:
    """``file:line: code`` of the deepest traceback frame in the user's code (not torch, not us)."""
    all_frames = traceback.extract_tb(tb)
    frames = [f for f in all_frames if not any(p in f.filename for p in _LIBRARY_PARTS)]
    frames = frames or [f for f in all_frames if not any(p in f.filename for p in _LIBRARY_PARTS[2:])]
    if not frames:
        return ""
    f = frames[-1]
    return f"{f.filename}:{f.lineno}: {(f.line or '').strip()}"


def is_cuda_error(exc: BaseException) -> bool:
    """Whether an exception means 'this code wanted a CUDA device'."""
    text = str(exc)
    return any(s in text for s in ("not compiled with CUDA", "No CUDA GPUs", "NVIDIA driver", "CUDA driver",
                                   "cuda:", "device type cuda", "CUDA error", "Expected all tensors to be on"))


@contextlib.contextmanager
def cpu_only(record: list[dict] | None = None, phase: str = "") -> Iterator[list[dict]]:
    """Make ``Tensor.cuda()`` and ``Module.cuda()`` return their object unchanged, recording
    each distinct call site as ``{"where", "code", "phase"}``. Re-entrant."""
    record = [] if record is None else record
    if getattr(torch.Tensor.cuda, "_udc_edge_patch", False):
        yield record
        return
    seen = {r["where"] for r in record}

    def note() -> None:
        frame = sys._getframe(2)
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
        if where not in seen:
            seen.add(where)
            record.append({"where": where, "code": linecache.getline(frame.f_code.co_filename, frame.f_lineno).strip(),
                           "phase": phase})

    def tensor_cuda(self, *args, **kwargs):
        note()
        return self

    def module_cuda(self, *args, **kwargs):
        note()
        return self

    tensor_cuda._udc_edge_patch = True  # type: ignore[attr-defined]
    old_t, old_m = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda, nn.Module.cuda = tensor_cuda, module_cuda
    try:
        yield record
    finally:
        torch.Tensor.cuda, nn.Module.cuda = old_t, old_m


class _Stub(types.ModuleType):
    """A stand-in for a module that cannot be imported here; using it raises a clear error."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        full = f"{self.__name__}.{name}"

        def call(*args, **kwargs):
            raise ModelError(f"{full} was called, but module {self.__name__!r} is only a stub here (--stub-module)",
                             "the model's CPU path must not use it; stub only modules the exported path never calls")
        return call


def _install_stubs(names: tuple[str, ...]) -> list[str]:
    added = []
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sub = ".".join(parts[:i])
            if sub not in sys.modules:
                sys.modules[sub] = _Stub(sub)
                added.append(sub)
                if i > 1:
                    setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[sub])
    return added


@dataclass
class LoadReport:
    """What loading a user's class met: import time, heavy imports, stubs, ``.cuda()`` sites."""

    arch: str
    kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    import_seconds: float = 0.0
    heavy_modules: list[str] = field(default_factory=list)
    stubbed: list[str] = field(default_factory=list)
    cuda_calls: list[dict] = field(default_factory=list)  # {"where", "code", "phase"}

    def to_dict(self) -> dict:
        return asdict(self)


def import_module(name: str, stub_modules: tuple[str, ...] = (), report: LoadReport | None = None):
    """Import ``name`` on this (CPU) machine, naming the culprit when it cannot be imported."""
    report = report or LoadReport(arch=name)
    report.stubbed = _install_stubs(stub_modules)
    before = set(sys.modules)
    t0 = time.perf_counter()
    try:
        with cpu_only(report.cuda_calls, "import"):
            module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if missing == name or name.startswith(missing + "."):
            top = Path(missing.replace(".", os.sep))
            here = (top.with_suffix(".py").is_file() or (top / "__init__.py").is_file())
            raise ModelError(f"cannot import module {name!r}: it is not on PYTHONPATH"
                             + (" (it is in this folder, but the udc-edge command does not import from the "
                                "current folder)" if here else ""),
                             "put the folder that holds it on the path, e.g. PYTHONPATH=. udc-edge ... when "
                             "you are in that folder, or pip install your package") from exc
        raise ModelError(f"module {name!r} imports {missing!r} at module level, which is not installed here "
                         f"({user_frame(exc.__traceback__)})",
                         f"move that import into the code path that needs it, or give --stub-module {missing} "
                         "if the exported path never calls it (CUDA-only extensions)") from exc
    except Exception as exc:  # the user's module raised while importing
        where = user_frame(exc.__traceback__)
        kind = "needs CUDA at import time" if is_cuda_error(exc) else "raised while importing"
        raise ModelError(f"module {name!r} {kind}: {type(exc).__name__}: {str(exc)[:200]} ({where})",
                         "make the module import without a GPU (no CUDA work at module level)") from exc
    report.import_seconds = time.perf_counter() - t0
    new = {m.split(".")[0] for m in set(sys.modules) - before}
    report.heavy_modules = sorted(new & set(HEAVY_MODULES))
    return module


def load_byo(arch: str, kwargs: dict | None = None, weights: str | None = None,
             stub_modules: tuple[str, ...] = ()) -> tuple[nn.Module, LoadReport]:
    """Build ``package.module:Class(**kwargs)`` on the CPU (``.cuda()`` patched out), load
    ``weights`` if given (random initialisation otherwise), and return it in eval mode."""
    from udc_edge.models.checkpoint import load_weights
    from udc_edge.models.registry import build

    if ":" not in arch:
        raise UsageError(f"--arch {arch!r} is not of the form package.module:Class", "e.g. --arch mypkg.nets:MyNet")
    report = LoadReport(arch=arch, kwargs=dict(kwargs or {}), weights=weights)
    import_module(arch.partition(":")[0], stub_modules, report)
    try:
        with cpu_only(report.cuda_calls, "init"):
            net = build(arch, kwargs)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{arch}(**{kwargs or {}}) failed on this CPU machine: {type(exc).__name__}: "
                         f"{str(exc)[:200]} ({user_frame(exc.__traceback__)})",
                         "use device='cpu' there, or .to(x.device) instead of hard-coded devices") from exc
    if weights:
        load_weights(net, weights)
    return net.eval(), report


@dataclass(frozen=True)
class ExtraInput:
    """A named extra argument of ``forward`` (e.g. ``psf_code``), frozen into the graph as a
    constant: ``value`` everywhere, or the array in ``file`` (.npy, never unpickled)."""

    name: str
    shape: tuple[int, ...]
    value: float = 0.0
    file: str | None = None

    @classmethod
    def parse(cls, text: str) -> ExtraInput:
        """``NAME=SHAPE[:FILE.npy|:VALUE]``, SHAPE like ``1x8``."""
        name, eq, rest = text.partition("=")
        shape_txt, _, src = rest.partition(":")
        if not eq or not name.isidentifier() or not shape_txt:
            raise UsageError(f"--extra-input {text!r} is not NAME=SHAPE[:FILE.npy|:VALUE]",
                             "e.g. --extra-input psf_code=1x8:code.npy or psf_code=1x8:0.5")
        try:
            shape = tuple(int(d) for d in shape_txt.lower().split("x"))
        except ValueError as exc:
            raise UsageError(f"--extra-input {text!r}: shape {shape_txt!r} is not like 1x8") from exc
        if not shape or min(shape) < 1:
            raise UsageError(f"--extra-input {text!r}: shape dims must be >= 1")
        if src.endswith(".npy"):
            return cls(name, shape, file=src)
        try:
            return cls(name, shape, value=float(src) if src else 0.0)
        except ValueError as exc:
            raise UsageError(f"--extra-input {text!r}: {src!r} is neither a .npy file nor a number") from exc

    def tensor(self) -> torch.Tensor:
        if self.file is None:
            return torch.full(self.shape, self.value, dtype=torch.float32)
        path = Path(self.file)
        if not path.is_file():
            raise InputError(f"--extra-input {self.name}: file {path} does not exist", "give a .npy array")
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"--extra-input {self.name}: {path} is not a plain .npy array ({exc})",
                             "save it with np.save(path, array) (object arrays are refused)") from exc
        if tuple(arr.shape) != self.shape:
            raise InputError(f"--extra-input {self.name}: {path} has shape {tuple(arr.shape)}, not {self.shape}",
                             "fix the SHAPE in NAME=SHAPE:FILE or the file")
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    def describe(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "source": self.file or f"constant {self.value}"}


def forward_params(model: nn.Module) -> tuple[list[str], list[str]]:
    """(required, optional) parameter names of ``forward`` after the image."""
    params = [p for p in inspect.signature(model.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][1:]
    return ([p.name for p in params if p.default is p.empty], [p.name for p in params if p.default is not p.empty])


def check_extra_inputs(model: nn.Module, extra: tuple[ExtraInput, ...]) -> None:
    """Every required ``forward`` argument has an extra input, and every extra input exists."""
    required, optional = forward_params(model)
    given = {e.name for e in extra}
    unknown = sorted(given - set(required) - set(optional))
    if unknown:
        raise UsageError(f"--extra-input {', '.join(unknown)}: {type(model).__name__}.forward has no such argument",
                         f"its arguments after the image: {', '.join(required + optional) or 'none'}")
    missing = [n for n in required if n not in given]
    if missing:
        raise UsageError(f"{type(model).__name__}.forward needs {', '.join(missing)} besides the image",
                         " ".join(f"give --extra-input {n}=SHAPE[:FILE.npy]" for n in missing))


def select_output(out: Any, index: int | None) -> torch.Tensor:
    """The image output of ``forward``: ``out`` itself, or ``out[index]`` of a tuple/list."""
    if isinstance(out, torch.Tensor):
        if index not in (None, 0):
            raise UsageError(f"--output-index {index} given, but forward returns a single tensor")
        return out
    if isinstance(out, (tuple, list)):
        if index is None:
            shapes = ", ".join(f"[{i}] {describe_output(o)}" for i, o in enumerate(out))
            raise UsageError(f"forward returns a {type(out).__name__} of {len(out)} ({shapes})",
                             "choose the restored image with --output-index N")
        if not -len(out) <= index < len(out) or not isinstance(out[index], torch.Tensor):
            raise UsageError(f"--output-index {index} does not pick a tensor of forward's {len(out)} outputs")
        return out[index]
    raise UsageError(f"forward returns a {type(out).__name__}, not a tensor or a tuple of tensors",
                     "wrap the model so forward returns the restored image")


def describe_output(o: Any) -> str:
    return f"tensor {tuple(o.shape)}" if isinstance(o, torch.Tensor) else type(o).__name__


class ByoWrapper(nn.Module):
    """``model(x, **extra_inputs)[output_index]`` with ``.cuda()`` patched out: one image in,
    one image out. Extra inputs are buffers, so they become constants of the graph."""

    def __init__(self, model: nn.Module, output_index: int | None = None, extra_inputs: tuple[ExtraInput, ...] = (),
                 cpu_patch: bool = True):
        super().__init__()
        check_extra_inputs(model, extra_inputs)
        self.model = model
        self.output_index = output_index
        self.extra_names = [e.name for e in extra_inputs]
        self.cpu_patch = cpu_patch
        self.cuda_calls: list[dict] = []
        for e in extra_inputs:
            self.register_buffer(f"extra_{e.name}", e.tensor())
        self.multiple = model_multiple(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = {n: getattr(self, f"extra_{n}") for n in self.extra_names}
        ctx = cpu_only(self.cuda_calls, "forward") if self.cpu_patch else contextlib.nullcontext()
        with ctx:
            out = self.model(x, **extra)
        return select_output(out, self.output_index)


def wrap(model: nn.Module, output_index: int | None = None, extra_inputs: tuple[ExtraInput, ...] = (),
         cpu_patch: bool = False) -> nn.Module:
    """``model`` itself when nothing is asked for (its extra ``forward`` arguments, if any, stay
    graph inputs, e.g. a purifier's ``noise``), else a :class:`ByoWrapper`."""
    if output_index is None and not extra_inputs and not cpu_patch:
        return model
    return ByoWrapper(model, output_index, extra_inputs, cpu_patch)

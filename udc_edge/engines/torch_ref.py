"""The torch backend: the PyTorch model itself behind the Engine interface (the reference)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from udc_edge.engines.base import Engine, EngineInfo, IOSpec
from udc_edge.export.onnxrt import NOISE_INPUT
from udc_edge.models.padding import model_multiple


class TorchEngine(Engine):
    """Eager PyTorch, float32, no grad; inputs are padded to the model's multiple."""

    backend = "torch"

    def __init__(self, model: nn.Module, threads: int = 0, n_inputs: int = 1):
        super().__init__(None, model_multiple(model))
        self.model = model.eval()
        self.threads = threads
        self._n = n_inputs

    def _activate(self) -> None:
        self._old_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)

    def _deactivate(self) -> None:
        torch.set_num_threads(self._old_threads)

    def info(self) -> EngineInfo:
        names = ["input", NOISE_INPUT][: self._n]
        return EngineInfo("torch", torch.__version__, "fp32", "fp32",
                          [IOSpec(n, (None, 3, None, None)) for n in names], [IOSpec("output", (None, 3, None, None))])

    def _infer(self, *inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]).numpy()

"""Restorer architectures, the registry, padding, parameter/MAC counts and checkpoints."""

from udc_edge.models.checkpoint import load_checkpoint, load_weights, save_checkpoint
from udc_edge.models.flops import count_macs, count_params
from udc_edge.models.padding import run_padded
from udc_edge.models.registry import build, create, list_models, model_config

__all__ = [
    "build",
    "count_macs",
    "count_params",
    "create",
    "list_models",
    "load_checkpoint",
    "load_weights",
    "model_config",
    "run_padded",
    "save_checkpoint",
]

"""The purifier's denoiser: a diffusers ``UNet2DModel`` (epsilon prediction) with plain
Down/UpBlock2D and no attention, so it is fully convolutional at any resolution."""

from __future__ import annotations

from typing import Any

from torch import nn

from udc_edge.core.errors import ModelError, UsageError

#: UNet presets: ``purifier-t`` for tests, ``purifier-s`` for the shipped weights.
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "purifier-t": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
    "purifier-s": {"block_out_channels": [16, 32, 32], "layers_per_block": 1, "norm_num_groups": 8},
}


def build_unet(cfg: dict[str, Any]) -> nn.Module:
    """A diffusers ``UNet2DModel`` with plain Down/UpBlock2D and no attention anywhere."""
    from diffusers import UNet2DModel

    channels = list(cfg.get("block_out_channels", ()))
    groups = cfg.get("norm_num_groups", 8)
    layers = cfg.get("layers_per_block", 1)
    unknown = set(cfg) - {"block_out_channels", "layers_per_block", "norm_num_groups"}
    if unknown:
        raise ModelError(f"purifier unet config has unknown keys {sorted(unknown)}",
                         "use block_out_channels, layers_per_block, norm_num_groups")
    if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ModelError(f"purifier unet block_out_channels={channels!r} is invalid",
                         "give a list of positive channel counts, e.g. [16, 32, 32]")
    if not isinstance(groups, int) or groups < 1 or any(c % groups for c in channels):
        raise ModelError(f"purifier unet norm_num_groups={groups!r} does not divide every channel count "
                         f"{channels}", "pick a group count that divides them all")
    if not isinstance(layers, int) or layers < 1:
        raise ModelError(f"purifier unet layers_per_block={layers!r} is invalid", "use an integer >= 1")
    n = len(channels)
    return UNet2DModel(in_channels=3, out_channels=3, block_out_channels=tuple(channels),
                       layers_per_block=layers, norm_num_groups=groups,
                       down_block_types=("DownBlock2D",) * n, up_block_types=("UpBlock2D",) * n,
                       add_attention=False)


def unet_config(preset_or_json: str | dict[str, Any]) -> dict[str, Any]:
    """A UNet preset name (``purifier-t``/``purifier-s``) or an explicit config dict."""
    if isinstance(preset_or_json, dict):
        return dict(preset_or_json)
    if preset_or_json not in UNET_PRESETS:
        raise UsageError(f"unknown purifier preset {preset_or_json!r}",
                         f"use {' or '.join(UNET_PRESETS)}, or give --unet-kwargs JSON")
    return {k: list(v) if isinstance(v, list) else v for k, v in UNET_PRESETS[preset_or_json].items()}

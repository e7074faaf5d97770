"""Model cards for shipped restorer weights: held-out evaluation and the card itself.

Held-out = photos the restorer never saw in training (``photos:test``), degraded with a
seed never used in training or validation. The card records the exact training command,
steps, wall time and these metrics, so anyone can reproduce or check them.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from udc_edge.core.fileio import write_text_atomic

HELDOUT_SEED = 2026


def heldout_pairs(display: str, count: int = 16, size: int = 128, seed: int = HELDOUT_SEED):
    """(lq, gt) pairs of held-out photos for ``display`` (same as ``data synth --source photos:test``)."""
    from udc_edge.data.synth import synth_pairs

    return synth_pairs(display, "photos:test", count, size, seed)


def heldout_metrics(model: nn.Module, display: str, count: int = 16, size: int = 128) -> dict:
    from udc_edge.training.restorer import evaluate_pairs

    m = evaluate_pairs(model, heldout_pairs(display, count, size))
    return {**{k: round(v, 3) if "psnr" in k else round(v, 4) for k, v in m.items()},
            "images": count, "size": size, "source": "photos:test", "seed": HELDOUT_SEED, "display": display}


def ship_restorer(run_dir: str | Path, name: str, command: str, display: str, out_root: str | Path) -> Path:
    """Copy a run's best checkpoint to ``out_root/name`` with held-out metrics and a CARD.md."""
    from udc_edge.models.checkpoint import load_checkpoint, save_checkpoint

    run_dir = Path(run_dir)
    model, cfg = load_checkpoint(run_dir / "best")
    log = json.loads((run_dir / "train_log.json").read_text())
    ho = heldout_metrics(model, display)
    extra = {"name": name, "command": command, "training": cfg.get("training", {}), "validation": cfg.get("metrics"),
             "wall_seconds": round(log["seconds"], 1), "steps": log["steps"], "torch": log.get("torch"),
             "threads": log.get("threads"), "heldout": ho}
    out = Path(out_root) / name
    save_checkpoint(out, model, {"arch": cfg["arch"], "kwargs": cfg["kwargs"]}, extra, overwrite=True)
    v = cfg.get("metrics", {})
    card = f"""# {name}

`{cfg['arch']}` restorer ({', '.join(f'{k}={val}' for k, val in cfg['kwargs'].items())}) for the
`{display}` display preset, trained by this project's own command on synthetic UDC pairs
(bundled training photos + dead leaves, physically simulated {display} degradation). Nothing was
downloaded.

## How it was made

```bash
{command}
```

- steps: {log['steps']}, wall time: {log['seconds'] / 60:.1f} min on a shared 2-core CPU ({log.get('threads')} torch thread)
- torch {log.get('torch')}; best checkpoint by validation PSNR (step {v.get('step')})

## Measured

| set | input PSNR | output PSNR | gain | input SSIM | output SSIM |
|---|---|---|---|---|---|
| validation (training photos, seed {cfg.get('training', {}).get('spec', {}).get('seed', 0) + 100003}) | {v.get('input_psnr', 0):.2f} | {v.get('psnr', 0):.2f} | {v.get('psnr', 0) - v.get('input_psnr', 0):+.2f} dB | {f"{v['input_ssim']:.4f}" if 'input_ssim' in v else '-'} | {v.get('ssim', 0):.4f} |
| held-out (`photos:test`, seed {ho['seed']}, {ho['images']} x {ho['size']} px) | {ho['input_psnr']:.2f} | {ho['psnr']:.2f} | {ho['psnr'] - ho['input_psnr']:+.2f} dB | {ho['input_ssim']:.4f} | {ho['ssim']:.4f} |

Reproduce the held-out row: `udc-edge data synth heldout --display {display} --source photos:test
--seed {ho['seed']} --count {ho['images']} --size {ho['size']}` then
`udc-edge restore {name} heldout/lq --out out --gt heldout/gt` (PNG quantisation moves the numbers by
a few hundredths of a dB).
"""
    write_text_atomic(out / "CARD.md", card)
    return out

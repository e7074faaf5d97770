"""Weight hashes of a short CPU run of each trainer (restorer, purifier, distill with and
without --targets, finetune with target gt and restorer): the check that a change to the
training loop keeps every trainer's result bit-identical.

    PYTHONPATH=$PWD python benchmarks/trainer_hashes.py RUNS_DIR > hashes.json

RUNS_DIR must be new or empty. Prints, per run, a SHA-256 (16 hex digits) over the tensors
of best/, last/ and the optimizer state (the files' bytes differ between runs: their
metadata records timings), and each validation history without its timings. Compare the
JSON of two commits.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from udc_edge.diffusion.purifier import Purifier, save_purifier
from udc_edge.models import create, save_checkpoint
from udc_edge.training.distill import DistillSpec, distill
from udc_edge.training.finetune import FinetuneSpec, finetune_restorer
from udc_edge.training.purifier import PurifierTrainSpec, train_purifier
from udc_edge.training.restorer import TrainSpec, train_restorer
from udc_edge.training.state import load_state


def cpu(spec_class: type) -> dict:
    """``device="cpu"`` where the spec has the option (older commits lack it: CPU was their only device)."""
    return {"device": "cpu"} if "device" in spec_class.__dataclass_fields__ else {}


RUNS = ("restorer", "purifier", "distill", "distill-targets", "finetune", "finetune-ref")


def train_all(root: Path) -> None:
    """The six tiny runs (seed 3, 10-12 steps, validation every 5)."""
    torch.manual_seed(0)
    teacher, rst = str(root / "teacher"), str(root / "rst")
    save_purifier(teacher, Purifier(unet="purifier-t", t_star=0.1, steps=3, resolution=32, t_max=0.2))
    save_checkpoint(rst, create("unet-t"), {"arch": "unet", "kwargs": {"width": 4, "depth": 2, "blocks": 1}})
    common = {"data": "synth:toled", "batch": 4, "pool": 4, "val_count": 2, "threads": 1, "seed": 3,
              "val_every": 5, "warmup": 4}
    train_restorer(TrainSpec(arch="unet-t", patch=48, steps=12, out=str(root / "restorer"), **common, **cpu(TrainSpec)))
    train_purifier(PurifierTrainSpec(unet="purifier-t", patch=32, steps=12, out=str(root / "purifier"), **common,
                                     **cpu(PurifierTrainSpec)))
    two = {**common, "batch": 2, "patch": 32, "lr": 2e-3}
    dcpu, fcpu = cpu(DistillSpec), cpu(FinetuneSpec)
    distill(DistillSpec(teacher=teacher, k=1, train_steps=12, out=str(root / "distill"), **two, **dcpu))
    distill(DistillSpec(teacher=teacher, k=2, train_steps=10, targets=4, out=str(root / "distill-targets"), **two,
                        **dcpu))
    finetune_restorer(FinetuneSpec(restorer=rst, purifier=teacher, steps=12, mix=("clean", "purified", "adversarial"),
                                   attack_steps=1, out=str(root / "finetune"), **{**two, "batch": 3},
                                   **fcpu))
    finetune_restorer(FinetuneSpec(restorer=rst, purifier=teacher, steps=10, mix=("clean", "purified-adversarial"),
                                   attack_steps=1, target="restorer", out=str(root / "finetune-ref"), **two,
                                   **fcpu))


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def digests(root: Path) -> dict:
    res: dict = {}
    for run in RUNS:
        for part in ("best/model.safetensors", "last/model.safetensors"):
            res[f"{run}/{part}"] = tensors_digest(load_file(str(root / run / part)))
        state = load_state(root / run / "state.safetensors")["optimizer"]["state"]
        res[f"{run}/state.safetensors"] = tensors_digest({f"{k}.{n}": v for k, d in state.items()
                                                         for n, v in d.items()})
        log = json.loads((root / run / "train_log.json").read_text())
        res[f"{run}/history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in log["history"]]
    return res


def main() -> None:
    root = Path(sys.argv[1])
    if root.exists() and any(root.iterdir()):
        sys.exit(f"{root} is not empty: give a new folder")
    root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    train_all(root)
    print(json.dumps(digests(root), indent=1))


if __name__ == "__main__":
    main()

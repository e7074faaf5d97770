"""Copy a finished training run into udc_edge/weights/NAME with held-out metrics and a card.

    python tools/ship_restorer.py RUN_DIR NAME DISPLAY "exact training command"
"""

import sys
from pathlib import Path

from udc_edge.training.card import ship_restorer

if __name__ == "__main__":
    run, name, display, command = sys.argv[1:5]
    out = ship_restorer(run, name, command, display, Path(__file__).resolve().parent.parent / "udc_edge" / "weights")
    print((out / "CARD.md").read_text())

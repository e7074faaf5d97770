"""Third-party chatter off the terminal: Python ``logging`` records and ``warnings`` from the
libraries udc-edge drives (ONNX Runtime's quantiser logs "Expected bias '...' to be an
initializer" once per tensor, the exporters warn about tracing) are dropped while a command
runs, unless ``--debug``; udc-edge's own output goes through its consoles, not logging.
ANSI colour codes in third-party error text are stripped before it reaches a report."""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (terminal colours)."""
    return _ANSI.sub("", text)


@contextlib.contextmanager
def quiet_third_party(debug: bool = False) -> Iterator[None]:
    """Drop every ``logging`` record and ``warnings`` message inside the block (not with ``debug``)."""
    if debug:
        yield
        return
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)

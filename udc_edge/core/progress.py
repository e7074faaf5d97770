"""Progress bars for long work: one rich bar with an ETA, silent with ``quiet``.

Library functions take an optional ``progress`` callable (``advance(n=1)``) so they stay
free of terminal code; the CLI passes the one made here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

Advance = Callable[..., None]


def noop(n: int = 1, **_: object) -> None:
    """The progress callback that reports nowhere (the default when no bar is shown)."""


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, quiet: bool = False) -> Iterator[Advance]:
    """Yield ``advance(n=1, status=None)``; draws a bar on stderr unless ``quiet``."""
    if quiet:
        yield noop
        return
    from rich.console import Console

    bar = Progress(
        TextColumn("{task.description}", style="bold", markup=False),  # names keep their [brackets]
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}", markup=False),
        console=Console(stderr=True),
        transient=False,
    )
    state: dict = {}

    def advance(n: int = 1, status: str | None = None) -> None:
        if not state:  # start drawing on first progress, so early errors print cleanly
            bar.start()
            state["task"] = bar.add_task(description, total=total, status="")
        if status is None:
            bar.update(state["task"], advance=n)
        else:
            bar.update(state["task"], advance=n, status=status)

    try:
        yield advance
    finally:
        if state:
            bar.stop()

"""Interrupting a training run mid-way (a progress callback that raises), for the resume
tests. Imported as ``interrupt`` (the ``tests`` folder is on ``sys.path`` via conftest.py)."""

from __future__ import annotations


class Interrupted(Exception):
    pass


def stop_after(steps: int):
    """A progress callback that interrupts the run during step ``steps + 1``."""
    done = [0]

    def advance(n: int = 1, **_: object) -> None:
        done[0] += n
        if done[0] > steps:
            raise Interrupted

    return advance

"""Atomic file and folder writes, output-target checks, temp work folders, JSON helpers.

Nothing the toolkit writes is ever left half-written: a file is written next to its
target under a temporary name and renamed into place; a folder is built under a
temporary name and renamed when complete; several files that belong together (an engine
and its manifest) are all written first and renamed in a stated order. Temporary names
carry the writer's PID, so the next run removes what a killed run left (never a live
run's). Outputs get the umask's permissions, not tempfile's private 0600/0700.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from udc_edge.core.errors import OutputError

MARKER = ".udc-edge-output"  # in every folder atomic_dir makes: only such folders may be replaced
STALE_AGE_S = 24 * 3600  # a leftover without a PID (older udc-edge) is stale after this
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OutputError):
    """The disk filled up while an output was written; nothing of it was left behind."""

    def __init__(self, path: Path):
        self.path = path
        super().__init__(f"no space left on the device while writing {path}; nothing was written",
                         "free some space or choose an output on another disk")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _chmod_default(path: Path, folder: bool) -> None:
    """Give a tempfile-made path the permissions a plain ``open``/``mkdir`` would have."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_stale(path: Path, pid: str | None) -> bool:
    if pid is not None:
        return not _pid_alive(int(pid))
    try:
        return time.time() - path.lstat().st_mtime > STALE_AGE_S
    except OSError:
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _clean_stale(folder: Path, pattern: re.Pattern[str]) -> None:
    """Remove entries of ``folder`` whose name matches ``pattern`` (group ``pid``) and are stale."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for p in entries:
        m = pattern.match(p.name)
        if m and _is_stale(p, m.group("pid")):
            _remove(p)


def _sibling_pattern(name: str) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(name)}\.(?:udc(?P<pid>\d+)\.)?[A-Za-z0-9_]{{8}}\.tmp$")


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}.udc{os.getpid()}."


def _check_parent_writable(path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create folder {parent} for output {path}: {exc.strerror}",
            "choose an output path in a writable folder",
        ) from exc
    if not os.access(parent, os.W_OK):
        raise OutputError(
            f"output folder {parent} is not writable", "choose an output path in a writable folder"
        )


@contextlib.contextmanager
def _disk_full_names(path: Path) -> Iterator[None]:
    """Turn a full disk inside the block into one :class:`DiskFullError` naming ``path``."""
    try:
        yield
    except DiskFullError as exc:
        raise DiskFullError(path) from exc
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(path) from exc
        raise


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """Yield a temporary sibling for each of ``paths``; rename them in order if the block succeeds.

    All temporaries are complete before the first rename, so a full disk or an error
    leaves every target as it was and no temporary behind. Leftovers of killed runs
    beside each target are removed first.
    """
    targets = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        with _disk_full_names(targets[0]):
            for t in targets:
                _check_parent_writable(t)
                _clean_stale(t.parent, _sibling_pattern(t.name))
                fd, name = tempfile.mkstemp(prefix=_tmp_prefix(t), suffix=".tmp", dir=t.parent)
                os.close(fd)
                tmps.append(Path(name))
                _chmod_default(tmps[-1], folder=False)
            yield list(tmps)
            for tmp, t in zip(tmps, targets, strict=True):
                os.replace(tmp, t)
    finally:
        for tmp in tmps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def json_text(obj: Any) -> str:
    """``obj`` as the indented JSON every udc-edge file uses."""
    return json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text_atomic(path, json_text(obj))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _made_by_us(folder: Path, owned_names: Iterable[str] = ()) -> bool:
    if (folder / MARKER).is_file():
        return True
    names = set(owned_names)  # a folder an older udc-edge wrote, holding only these files
    return bool(names) and all(p.name in names and p.is_file() for p in folder.iterdir())


def _check_replaceable(path: Path, overwrite: bool, kind: str, owned_names: Iterable[str] = ()) -> None:
    if kind == "dir":
        if path.exists() and not path.is_dir():
            raise OutputError(f"output {path} exists and is not a folder", "choose another output path")
        if path.is_dir() and any(path.iterdir()):
            if not overwrite:
                raise OutputError(f"output folder {path} exists and is not empty",
                                  "choose a new folder or pass --overwrite")
            if not _made_by_us(path, owned_names):
                raise OutputError(f"output folder {path} was not made by udc-edge (it has no {MARKER}); "
                                  "--overwrite replaces only udc-edge's own output folders",
                                  "choose a new folder, or empty or remove this one yourself")
    elif path.exists() or path.is_symlink():
        if path.is_dir():
            raise OutputError(f"output {path} is a folder", "give a file name")
        if not overwrite:
            raise OutputError(f"output {path} exists", "choose another name or pass --overwrite")


def _resolved(p: str | os.PathLike) -> Path:
    return Path(os.path.realpath(os.path.abspath(p)))


def check_output(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                 overwrite: bool = False, kind: str = "dir") -> Path:
    """The one output-target check every command runs before it starts working.

    Refused always (even with ``overwrite``): an output that is, holds or lies inside one
    of ``inputs`` (those that exist as paths), and the current folder or one that holds it.
    Refused without ``overwrite``: an existing file (``kind="file"``) or non-empty folder;
    with it, a non-empty folder only if udc-edge made it (it has the :data:`MARKER`).
    """
    out = Path(out)
    real = _resolved(out)
    for given in inputs:
        if given is None or str(given) == "" or not os.path.exists(given):
            continue
        inp = _resolved(given)
        same = real == inp or (out.exists() and os.path.samefile(out, given))
        if same or inp.is_relative_to(real) or real.is_relative_to(inp):
            how = "is" if same else "holds" if inp.is_relative_to(real) else "lies inside"
            raise OutputError(f"output {out} {how} the input {given}; udc-edge never writes over its inputs",
                              "choose an output outside the inputs")
    cwd = _resolved(os.getcwd())
    if cwd.is_relative_to(real):
        raise OutputError(f"output {out} is or holds the current folder", "choose a new folder for the output")
    _check_replaceable(out, overwrite, kind)
    return out


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False,
               owned_names: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it onto ``path`` when the block succeeds.

    If the block raises (or is interrupted), the temporary folder is removed and ``path``
    is untouched. An existing non-empty ``path`` is refused unless ``overwrite`` is set,
    and even then unless udc-edge made it (:data:`MARKER`, written into every folder made
    here, or, for folders older than the marker, nothing but ``owned_names`` in it).
    """
    path = Path(path)
    owned_names = tuple(owned_names)
    _check_replaceable(path, overwrite, "dir", owned_names)
    _check_parent_writable(path)
    _clean_stale(path.parent, _sibling_pattern(path.name))
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        with _disk_full_names(path):
            _chmod_default(tmp, folder=True)
            yield tmp
            (tmp / MARKER).write_text(json_text({"made_by": "udc-edge", "pid": os.getpid()}))
            _check_replaceable(path, overwrite, "dir", owned_names)  # again: it may have changed meanwhile
            if path.is_dir() and any(path.iterdir()):
                old = path.with_name(f"{_tmp_prefix(path)}{secrets.token_hex(4)}.tmp")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_WORK_PATTERN = re.compile(r"^udc-edge-[a-z]+-(?:(?P<pid>\d+)-[A-Za-z0-9_]{8}|[A-Za-z0-9_]{8})$")


def new_work_dir(kind: str) -> Path:
    """Make a private scratch folder ``udc-edge-KIND-PID-XXXXXXXX`` in the system temp folder.

    The caller removes it; the ones killed runs left (dead PID, or older than a day for
    names without a PID) are removed first.
    """
    base = Path(tempfile.gettempdir())
    _clean_stale(base, _WORK_PATTERN)
    return Path(tempfile.mkdtemp(prefix=f"udc-edge-{kind}-{os.getpid()}-", dir=base))


@contextlib.contextmanager
def work_dir(kind: str) -> Iterator[Path]:
    """:func:`new_work_dir` for the length of a ``with`` block."""
    tmp = new_work_dir(kind)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

"""The project's exceptions.

Every error a user can cause is a :class:`UdcEdgeError`: its message names the input,
what was wrong and what to do. The CLI prints it as one line and exits with
``exit_code`` (1, or 2 for usage errors); the traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class UdcEdgeError(Exception):
    """Base class of all errors the CLI reports as one clear line."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message} ({hint})")


class UsageError(UdcEdgeError):
    """Options that contradict each other or are out of range (exit code 2)."""

    exit_code = 2


class InputError(UdcEdgeError):
    """A file or folder the user gave is missing, unreadable or of the wrong kind."""


class DataError(UdcEdgeError):
    """A dataset is inconsistent: mismatched pairs, empty, wrong sizes."""


class LayoutError(UdcEdgeError):
    """A display layout or optics description that cannot produce a PSF."""


class ModelError(UdcEdgeError):
    """Unknown architecture, bad checkpoint, incompatible weights."""


class ExportError(UdcEdgeError):
    """ONNX export failed or the exported graph does not match the model."""


class EngineError(UdcEdgeError):
    """An engine file is corrupt, mismatched with its manifest, or given bad input."""


class ManifestError(EngineError):
    """An engine's manifest is missing, malformed, edited by hand, or of another format."""


class BackendUnavailableError(UdcEdgeError):
    """The requested backend (e.g. TensorRT) is not installed on this machine."""


class OutputError(UdcEdgeError):
    """An output path cannot be written (read-only folder, exists and would be lost)."""

"""One exception tree for the whole engine.

Every message is one line that says what was asked and what exists, so that the CLI can print it
and a page can show it with ``st.error`` without a traceback.
"""
from __future__ import annotations

#: How a user allows a file that runs code when loaded (the end of every refusal message).
TRUST_OPT_IN = ("Only if you trust the file, allow it with --trust-pickle (CLI) or 'I trust this file' "
                "(dashboard)")


class BenchmarkError(Exception):
    """Base of every error Slimbench raises on purpose (bad input, missing backend, ...)."""


class ModelLoadError(BenchmarkError):
    """A model file could not be read: empty, truncated, wrong format, failed the checker."""


class UnsafeModelError(ModelLoadError):
    """Loading the file would execute code from it (a full pickle) and the user did not opt in."""


class ConfigError(BenchmarkError):
    """A configuration value is out of range or unknown; the message names the allowed values."""


class DataError(BenchmarkError):
    """A dataset does not match the model's inputs, is empty or cannot be read safely."""


class ExportError(BenchmarkError):
    """A PyTorch model could not be exported to ONNX; the message names the construct."""


class BackendUnavailableError(BenchmarkError):
    """The backend (or device) asked for is not usable on this machine; the message says why."""


class CompressionError(BenchmarkError):
    """A compression method failed or could not apply to this model."""


class ConversionError(BenchmarkError):
    """An ONNX graph could not be converted to a PyTorch module, or the module does not match
    ONNX Runtime; the message names the op(s) and node(s). ``ops`` lists the reasons one by one."""

    def __init__(self, message: str, ops: list[str] | None = None):
        super().__init__(message)
        self.ops = list(ops or [])


class MeasurementError(BenchmarkError):
    """A measurement failed: NaN/Inf outputs, a crashed run, a timed-out job."""


class StoreError(BenchmarkError):
    """The results database cannot be opened or written."""


class UnsafeArchiveError(DataError):
    """An uploaded archive tries to write outside its folder or expands beyond the size bound."""


class ResourceError(BenchmarkError):
    """Not enough memory or disk space for a step; the message names what is needed and what is free."""


def one_line(exc: BaseException, limit: int = 300, *, typed: bool = False) -> str:
    """The first non-empty line of ``exc``'s message, cut to ``limit`` characters.

    An empty message gives the exception's class name. ``typed`` puts the class name first
    (``"ValueError: bad shape"``), for errors whose class says something the message does not.
    """
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")[:limit]
    if typed:
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first or type(exc).__name__


def memory_error(exc: BaseException, doing: str | None = None) -> "ResourceError | None":
    """A :class:`ResourceError` for an allocation that failed (``MemoryError``, or torch's
    "can't allocate memory" ``RuntimeError``), naming what was being allocated; None for anything else."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, MemoryError) and not (isinstance(exc, RuntimeError) and "allocate" in text
                                                 and ("can't" in text or "out of memory" in text.lower())):
        return None
    what = f" while {doing}" if doing else ""
    return ResourceError(f"not enough memory{what}: {text[:300] or 'MemoryError'}; use smaller inputs, batch "
                         "sizes or samples")


def error_class(name: str | None) -> type[BenchmarkError]:
    """The engine's exception class called ``name`` (as a child process reports it), else
    :class:`BenchmarkError`: a parent re-raises a child's bad-input error as the same class."""
    cls = globals().get(name or "")
    return cls if isinstance(cls, type) and issubclass(cls, BenchmarkError) else BenchmarkError

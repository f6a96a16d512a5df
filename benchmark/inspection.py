"""What a model is — inputs, outputs, parameters, MACs/FLOPs, size, per-layer rows — as one JSON-ready dict.

:func:`model_info` loads and counts in the calling process (a library call).
:func:`inspect_isolated` does the same in a spawned child through
:func:`benchmark.jobs.run_isolated`, so a trusted pickle's code, an ONNX file that crashes its
parser, a load that hangs or inputs too large for memory never run in (or take down) the caller:
``slimbench info`` and the dashboard's Model page inspect every model (samples too) only this way. Counting conventions are those of :mod:`benchmark.measure.flops`
(``macs`` = multiply-accumulates, ``flops = 2 x macs``, counted at ``batch_size``).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import BenchmarkError, ModelLoadError, ResourceError

DEFAULT_INSPECT_TIMEOUT_S = 120.0
_COUNT_KEYS = ("params", "macs", "flops", "size_bytes", "sparsity", "unsupported_ops", "counter", "by_module",
               "by_operator")


def model_info(source: str, inputs: list[str] | tuple[str, ...] | None = None, arch: str | None = None,
               trust_pickle: bool = False, batch_size: int = 1, *, strict: bool = True,
               batch_axes: list[str] | tuple[str, ...] | None = None, data: str | None = None) -> dict[str, Any]:
    """Load ``source`` (a file or ``sample:NAME``) in this process and count it at ``batch_size``.

    ``inputs``: overrides ``name:1x3x32x32[:float32]`` (a bare ``1x3x32x32`` for a single-input
    model); ``batch_axes``: ``NAME:AXIS`` / ``NAME:none``; ``data``: a dataset name or ``.npz``
    file whose first feed fills the dynamic dims the overrides leave open. Returns ``model,
    format, framework, inputs`` (shapes as lists, each with its ``batch_axis``), ``outputs,
    dataset, num_classes, batch_size, params, macs, flops, size_bytes, sparsity, unsupported_ops,
    counter, by_module`` (per-layer rows ``{name, op_type, macs, params}``), ``by_operator``,
    ``notes``, and what applies: ``applicability`` (one row ``{name, kind, available, reason}`` per
    compression and backend, :mod:`benchmark.applicability`), ``conversion`` / ``conversion_error``
    (the ONNX->PyTorch conversion's record, or why there is none). A load failure raises; a
    counting failure raises too unless ``strict=False``, which returns the load facts with
    ``count_error`` (the message) and the counts set to None; inputs too large for the available
    memory always raise :class:`~benchmark.errors.ResourceError`.
    """
    from .applicability import model_applicability
    from .config import InputSpec
    from .measure.flops import count_model
    from .models import describe_io, load_model

    overrides = [InputSpec.parse(t) for t in (inputs or [])]
    model = load_model(source, inputs=overrides, arch=arch, trust_pickle=trust_pickle, batch_axes=batch_axes)
    values = None
    if data:
        from .data import resolve_dataset
        from .models.batch_axes import fit_to_data

        dataset = resolve_dataset(data, model, "test")
        model, filled = fit_to_data(model, dataset)
        model.notes.extend(filled)
        values = dataset.first_feed() if dataset is not None else None
    model = describe_io(model)
    info: dict[str, Any] = {
        "model": model.name,
        "format": model.format,
        "framework": model.framework,
        "inputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "batch_axis": s.batch_axis}
                   for s in model.inputs],
        "outputs": [{"name": s.name, "shape": list(s.shape), "dtype": s.dtype} for s in model.outputs],
        "dataset": model.dataset,
        "num_classes": model.num_classes,
        "batch_size": int(batch_size),
        "notes": list(model.notes),
    }
    info.update(model_applicability(model, values))  # what applies: each compression and backend, or why not
    try:
        report = count_model(model, batch_size=batch_size, values=values)
    except BenchmarkError as exc:
        if strict or isinstance(exc, ResourceError):  # inputs too large for memory: an error, not a gap
            raise
        info.update({k: None for k in _COUNT_KEYS}, count_error=str(exc))
        return _json_ready(info)
    info.update(
        params=report.params, macs=report.macs, flops=report.flops, size_bytes=report.size_bytes,
        sparsity=report.sparsity, unsupported_ops=dict(report.unsupported_ops), counter=report.counter,
        by_module=[dict(r) for r in report.by_module], by_operator=dict(report.by_operator),
    )
    info["notes"] += list(report.warnings)
    return _json_ready(info)


def _json_ready(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` through JSON (numpy numbers become Python ones), so the child and the caller agree."""
    return json.loads(json.dumps(info, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def _inspect_job(payload: dict, emit) -> dict:
    """Child entry of :func:`inspect_isolated`."""
    emit({"type": "step", "message": f"inspecting {payload['label']}"})
    return model_info(payload["source"], payload["inputs"], payload["arch"], payload["trust_pickle"],
                      payload["batch_size"], strict=payload["strict"], batch_axes=payload.get("batch_axis"),
                      data=payload.get("data"))


def inspect_isolated(source: str, inputs: list[str] | tuple[str, ...] | None = None, arch: str | None = None,
                     trust_pickle: bool = False, timeout_s: float = DEFAULT_INSPECT_TIMEOUT_S, *,
                     batch_size: int = 1, strict: bool = True, batch_axes: list[str] | tuple[str, ...] | None = None,
                     data: str | None = None) -> dict[str, Any]:
    """:func:`model_info` in a spawned child process; returns the same dict.

    The caller never unpickles or parses the file. Bad input comes back as the child's error class
    with its one-line message (``UnsafeModelError`` for an untrusted pickle, ``ModelLoadError``,
    ``ConfigError``...). A crash ("killed by signal 11 (SIGSEGV) while inspecting x.onnx"), a
    process that exits without an answer, or ``timeout_s`` seconds without one raises
    :class:`ModelLoadError` naming the file and the cause; anything else the child raised is a
    :class:`BenchmarkError` with its one line.
    """
    from . import errors
    from .jobs import run_isolated
    from .paths import work_root

    label = str(source) if str(source).startswith("sample:") else Path(source).name
    payload = {"source": str(source), "inputs": list(inputs or ()), "arch": arch, "trust_pickle": bool(trust_pickle),
               "batch_size": int(batch_size), "strict": bool(strict), "label": label,
               "batch_axis": list(batch_axes or ()), "data": None if data is None else str(data)}
    fd, log_path = tempfile.mkstemp(prefix="inspect-", suffix=".log", dir=work_root())
    os.close(fd)
    try:
        outcome = run_isolated("benchmark.inspection:_inspect_job", payload, timeout_s=timeout_s, log_path=log_path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(log_path)
    if outcome.ok:
        return outcome.value
    message = outcome.error or "failed without a message"
    if outcome.is_bad_input:
        raise errors.error_class(outcome.error_type)(message)
    if outcome.error_type in ("signal", "timeout", "exit"):
        raise ModelLoadError(f"{label}: the model could not be inspected: {message}")
    raise BenchmarkError(f"{label}: inspecting the model failed: {message}")


__all__ = ["DEFAULT_INSPECT_TIMEOUT_S", "inspect_isolated", "model_info"]

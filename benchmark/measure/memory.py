"""Memory and size.

Conventions:

- ``peak_rss_mb``: the peak resident set size of the current process in MiB (2**20 bytes): on
  Linux ``VmHWM``, which ``reset_peak_rss`` restarts so that several runs in one child process
  each get their own peak; elsewhere ``getrusage`` ``ru_maxrss`` (process-wide). ``run_in_child``
  runs a function in a spawned child and returns its peak RSS, the RSS when the function started
  (imports, interpreter) and the GPU peak.
- ``gpu_peak_mb``: ``torch.cuda.max_memory_allocated`` since the last ``reset_gpu_peak`` in MiB
  (memory allocated through PyTorch's caching allocator; ONNX Runtime/TensorRT allocations are
  not seen by it). None without CUDA.
- ``file_size_bytes``: bytes on disk of a model file, including the external data files an ONNX
  model references (``.onnx.data``); for a folder, the sum of its files.
- ``module_size_bytes``: bytes of a PyTorch module's parameters and buffers (its in-memory weights).
"""
from __future__ import annotations

import importlib.util
import multiprocessing
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import MeasurementError

_MIB = 2**20


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window for this process (Linux: ``/proc/self/clear_refs`` <- 5).

    After it, :func:`peak_rss_mb` reports the peak since this call instead of since the process
    started, so several runs in one process do not inherit each other's peaks. Returns False
    where the kernel does not allow it (the peak then stays process-wide).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """Peak RSS in MiB since :func:`reset_peak_rss` (``VmHWM``), else since the process started."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass  # not Linux: fall back to getrusage below
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MIB if sys.platform == "darwin" else peak / 1024.0


def current_rss_mb() -> float:
    """Current RSS of this process, in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / _MIB


def _cuda_ready() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def reset_gpu_peak() -> None:
    """Reset PyTorch's CUDA peak-memory counter (no-op without CUDA)."""
    if _cuda_ready():
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def gpu_peak_mb() -> float | None:
    """Peak CUDA memory allocated through PyTorch since ``reset_gpu_peak``, in MiB; None without CUDA."""
    if not _cuda_ready():
        return None
    import torch

    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / _MIB


@dataclass
class MemoryReport:
    """Memory of one function call run in a fresh child process (MiB)."""

    peak_rss_mb: float
    rss_before_mb: float
    gpu_peak_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _child_main(conn, fn: Callable, args: tuple, kwargs: dict) -> None:
    """Child side of ``run_in_child``: run, then send ("ok", result, report) or ("error", exc, text)."""
    import traceback

    try:
        before = current_rss_mb()
        reset_gpu_peak()
        result = fn(*args, **kwargs)
        report = MemoryReport(peak_rss_mb=peak_rss_mb(), rss_before_mb=before, gpu_peak_mb=gpu_peak_mb())
        conn.send(("ok", result, report))
    except BaseException as exc:  # forwarded to the parent, which re-raises it
        text = traceback.format_exc()
        try:
            conn.send(("error", exc, text))
        except (TypeError, AttributeError, ValueError):  # exception not picklable
            conn.send(("error", None, text))
    finally:
        conn.close()


def run_in_child(fn: Callable, *args, timeout_s: float | None = None, **kwargs) -> tuple[Any, MemoryReport]:
    """Run ``fn(*args, **kwargs)`` in a spawned child process; return its result and memory.

    ``fn`` must be importable (a module-level function) and its arguments and result picklable.
    An exception in the child is raised here; a crash or timeout raises ``MeasurementError``.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(child, fn, args, kwargs), daemon=True)
    proc.start()
    child.close()
    name = getattr(fn, "__name__", repr(fn))
    try:
        if not parent.poll(timeout_s):
            proc.kill()
            raise MeasurementError(f"{name} did not finish within {timeout_s} s in the child process")
        try:
            status, payload, extra = parent.recv()
        except EOFError:
            proc.join(5)
            raise MeasurementError(
                f"the child process running {name} died (exit code {proc.exitcode}; out of memory or a crash)"
            ) from None
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
        parent.close()
    if status == "ok":
        return payload, extra
    if isinstance(payload, BaseException):
        raise payload
    raise MeasurementError(f"{name} failed in the child process: {extra.strip().splitlines()[-1]}")


def onnx_external_files(path: str | Path) -> list[Path]:
    """External data files an ONNX model references (existing ones, relative to its folder)."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    files: list[Path] = []
    seen: set[str] = set()
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                f = path.parent / entry.value
                if f.is_file():
                    files.append(f)
    return files


def _all_tensors(graph):
    """Initializers and tensor attributes of ``graph`` and its subgraphs."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for sub in attr.graphs:
                yield from _all_tensors(sub)


def file_size_bytes(path: str | Path) -> int:
    """Bytes on disk of a model: the file plus an ONNX model's external data files; a folder's files."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if not path.is_file():
        raise MeasurementError(f"cannot size {path}: no such file")
    size = path.stat().st_size
    if path.suffix.lower() == ".onnx":
        size += sum(f.stat().st_size for f in onnx_external_files(path))
    return size


def module_size_bytes(module) -> int:
    """Bytes of a PyTorch module's parameters and buffers (quantized packed weights included
    through its ``state_dict``)."""
    import torch

    seen: set[tuple[int, int]] = set()

    def nbytes(value) -> int:
        if isinstance(value, torch.Tensor):
            if not value.is_quantized:
                key = (value.data_ptr(), value.numel())
                if key in seen:  # tied weights count once
                    return 0
                seen.add(key)
            return value.numel() * value.element_size()
        if isinstance(value, (tuple, list)):
            return sum(nbytes(v) for v in value)
        return 0

    return sum(nbytes(v) for v in module.state_dict().values())

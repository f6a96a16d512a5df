"""Memory and size.

Conventions:

- ``peak_rss_mb``: the peak resident set size of the current process in MiB (2**20 bytes): on
  Linux ``VmHWM``, which ``reset_peak_rss`` restarts so that several runs in one child process
  each get their own peak; elsewhere ``getrusage`` ``ru_maxrss`` (process-wide).
- ``gpu_peak_mb``: ``torch.cuda.max_memory_allocated`` since the last ``reset_gpu_peak`` in MiB
  (memory allocated through PyTorch's caching allocator; ONNX Runtime/TensorRT allocations are
  not seen by it). None without CUDA.
- ``file_size_bytes``: bytes on disk of a model file, including the external data files an ONNX
  model references (``.onnx.data``); for a folder, the sum of its files. ``first_file_bytes``:
  the same for the first of a model's files that exists.
- ``module_size_bytes``: bytes of a PyTorch module's parameters and buffers (its in-memory weights).
"""
from __future__ import annotations

import importlib.util
import resource
import sys
from pathlib import Path

from ..errors import MeasurementError
from ..onnx_graph import external_data_files

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


def file_size_bytes(path: str | Path) -> int:
    """Bytes on disk of a model: the file plus an ONNX model's external data files; a folder's files."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if not path.is_file():
        raise MeasurementError(f"cannot size {path}: no such file")
    size = path.stat().st_size
    if path.suffix.lower() == ".onnx":
        size += sum(f.stat().st_size for f in external_data_files(path))
    return size


def first_file_bytes(paths) -> int | None:
    """:func:`file_size_bytes` of the first of ``paths`` (None entries allowed) that is a file; None
    when none is (the model then lives only in memory)."""
    for p in paths:
        if p and Path(p).is_file():
            return file_size_bytes(p)
    return None


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

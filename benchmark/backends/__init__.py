"""Backends: registry and the built-ins (pytorch, onnxruntime, onnxruntime-trt, tensorrt, torch-tensorrt).

Importing this package registers the built-in backends without importing torch, onnxruntime or
tensorrt: each backend imports its package inside its methods.
"""
from __future__ import annotations

from typing import Any

from .base import BACKENDS, Backend, Session, SessionInfo, get_backend, register_backend
from .onnxruntime import OnnxRuntimeBackend, OnnxRuntimeTensorRTBackend
from .pytorch import PyTorchBackend
from .tensorrt import TensorRTBackend
from .torch_tensorrt import TorchTensorRTBackend

for _backend in (PyTorchBackend(), OnnxRuntimeBackend(), OnnxRuntimeTensorRTBackend(), TensorRTBackend(),
                 TorchTensorRTBackend()):
    if _backend.name not in BACKENDS:
        register_backend(_backend)
del _backend


def backend_names() -> list[str]:
    """Names of the registered backends, in registration order."""
    return BACKENDS.names()


def backend_status(devices: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """``{backend, device, available, reason}`` for every registered backend and device.

    Reasons are short and self-contained ("TensorRT: package not installed", "CUDA: no GPU").
    """
    from ..config import DEVICES

    rows = []
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)
        for device in devices or DEVICES:
            ok, reason = backend.availability(device)
            rows.append({"backend": name, "device": device, "available": bool(ok), "reason": "" if ok else reason})
    return rows


__all__ = [
    "BACKENDS", "Backend", "Session", "SessionInfo", "get_backend", "register_backend", "backend_names",
    "backend_status",
    "PyTorchBackend", "OnnxRuntimeBackend", "OnnxRuntimeTensorRTBackend", "TensorRTBackend", "TorchTensorRTBackend",
]

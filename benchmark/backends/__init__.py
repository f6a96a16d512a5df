"""Backends: registry and the built-ins (pytorch, onnxruntime, onnxruntime-trt, tensorrt, torch-tensorrt).

Importing this package registers the built-in backends without importing torch, onnxruntime or
tensorrt: each backend imports its package inside its methods.
"""
from __future__ import annotations

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


__all__ = [
    "BACKENDS", "Backend", "Session", "SessionInfo", "get_backend", "register_backend", "backend_names",
    "PyTorchBackend", "OnnxRuntimeBackend", "OnnxRuntimeTensorRTBackend", "TensorRTBackend", "TorchTensorRTBackend",
]

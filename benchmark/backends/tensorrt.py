"""TensorRT backend (CUDA only): availability checks.

The ``tensorrt`` package is looked up with ``importlib.util.find_spec`` and never imported at
module import. TensorRT's wheels fetch their libraries from NVIDIA's package index::

    pip install --extra-index-url https://pypi.nvidia.com "slimbench[tensorrt]"

Engine building is not part of this class yet: where the package and a GPU are present,
``availability`` says so and ``prepare`` raises ``BackendUnavailableError``.
"""
from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import BackendUnavailableError
from .base import Backend, Session


class TensorRTBackend(Backend):
    """TensorRT on CUDA. Reports why it cannot run here; it never pretends to run."""

    name = "tensorrt"
    devices = ("cuda",)

    def availability_impl(self, device: str) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "TensorRT: package not installed"
        from ..measure.environment import cuda_device_status

        ok, reason = cuda_device_status()
        if not ok:
            return ok, reason
        return False, "TensorRT: engine building is not implemented in this version of Slimbench"

    def prepare_impl(self, variant, device: str, threads: int, workdir, options: dict[str, Any]) -> Session:
        ok, reason = self.availability(device)
        raise BackendUnavailableError(f"tensorrt on {device}: {reason or 'engine building is not implemented'}")

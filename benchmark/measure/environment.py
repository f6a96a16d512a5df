"""The machine a result was measured on.

``collect_environment`` is recorded with every result row: CPU model, cores, the CPU flags that
decide INT8 speed (AVX2, AVX-512, VNNI, AMX), the instruction set read on any platform (``isa``:
:meth:`benchmark.measure.hardware.IsaInfo.to_dict`), GPU name and compute capability, package
versions, thread count, the git revision of this Slimbench checkout, host name and a UTC timestamp;
with ``peaks``, this device's measured peaks (``peaks``: :func:`peaks_record`).
Package versions come from installed distribution metadata, so nothing heavy is imported for
them; the GPU fields import torch (if installed) once. The static part is cached per process.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import platform
import socket
import sys
from datetime import datetime, timezone
from typing import Any

from ..machine import cpu_info, cuda_device_status, git_revision, package_version

#: CPU flags (as /proc/cpuinfo names them) that matter for the speed of low-precision kernels.
CPU_FLAGS_OF_INTEREST = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
)


def _gpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"gpu_name": None, "gpu_compute_capability": None, "gpu_count": 0, "gpu_memory_mb": None}
    ok, _ = cuda_device_status()
    if not ok or importlib.util.find_spec("torch") is None:
        return info
    import torch

    props = torch.cuda.get_device_properties(0)
    info.update(
        gpu_name=props.name,
        gpu_compute_capability=f"{props.major}.{props.minor}",
        gpu_count=torch.cuda.device_count(),
        gpu_memory_mb=round(props.total_memory / 2**20),
    )
    return info


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    cpu_model, flags = cpu_info()
    flagset = set(flags)
    physical = None
    if importlib.util.find_spec("psutil") is not None:
        import psutil

        physical = psutil.cpu_count(logical=False)
    torch_cuda = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_cuda = torch.version.cuda
    env: dict[str, Any] = {
        "cpu_model": cpu_model,
        "cpu_arch": platform.machine(),
        "cores": os.cpu_count(),
        "cores_physical": physical,
        "cpu_flags": [f for f in CPU_FLAGS_OF_INTEREST if f in flagset],
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "torch_cuda": torch_cuda,
        "onnxruntime": package_version("onnxruntime"),
        "onnx": package_version("onnx"),
        "tensorrt": package_version("tensorrt"),
        "numpy": package_version("numpy"),
        "git_revision": git_revision(),
        "python_executable": sys.executable,
    }
    env.update(_gpu_info())
    from .hardware import detect_isa

    env["isa"] = detect_isa().to_dict()
    return env


def peaks_record(peaks) -> dict[str, Any]:
    """The compact record of :class:`benchmark.measure.roofline.Peaks` a row carries: the cache key,
    GMAC/s per precision and per kernel, memory bandwidth (GB/s), thread count, when it was measured
    and the load average then, and the notes (kernels that could not run)."""
    d = peaks.to_dict()
    return {"key": d["key"], "peak_gmacs_per_s": d["peak_gmacs_per_s"], "gmacs_per_s": d["gmacs_per_s"],
            "memory_bandwidth_gb_per_s": d["memory_bandwidth_gb_per_s"], "threads": d["threads"],
            "measured_at": d["measured_at"], "load_average_1m": (d.get("settings") or {}).get("load_average_1m"),
            "notes": list(d.get("notes") or [])}


def collect_environment(threads: int | None = None, peaks=None) -> dict[str, Any]:
    """The environment of a measurement (a fresh dict; the static part is computed once).

    ``threads`` is the intra-op thread count the run used (recorded as given; 0 means "all cores"
    and is recorded as ``os.cpu_count()``). ``peaks`` (:class:`~benchmark.measure.roofline.Peaks`,
    or a record of :func:`peaks_record`) adds this device's peaks under ``peaks``.
    """
    import copy

    env = copy.deepcopy(_static_environment())
    env["threads"] = (os.cpu_count() if threads == 0 else threads)
    env["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if peaks is not None:
        env["peaks"] = peaks if isinstance(peaks, dict) else peaks_record(peaks)
    return env

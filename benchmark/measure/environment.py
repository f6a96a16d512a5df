"""The machine a result was measured on, and which backends can run here.

``collect_environment`` is recorded with every result row: CPU model, cores, the CPU flags that
decide INT8 speed (AVX2, AVX-512, VNNI, AMX), GPU name and compute capability, package versions,
thread count, the git revision of this Slimbench checkout, host name and a UTC timestamp.
Package versions come from installed distribution metadata, so nothing heavy is imported for
them; the GPU fields import torch (if installed) once. The static part is cached per process.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

#: CPU flags (as /proc/cpuinfo names them) that matter for the speed of low-precision kernels.
CPU_FLAGS_OF_INTEREST = (
    "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
)

#: Distribution names under which a module may be installed (first match wins).
_DISTRIBUTIONS = {
    "torch": ("torch",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime", "onnxruntime-openvino", "onnxruntime-directml"),
    "onnx": ("onnx",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
    "numpy": ("numpy",),
}


def package_version(module: str) -> str | None:
    """Installed version of ``module`` (None if not importable), without importing it."""
    if importlib.util.find_spec(module) is None:
        return None
    for dist in _DISTRIBUTIONS.get(module, (module,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _cpuinfo() -> tuple[str | None, list[str]]:
    """(model name, flags) from /proc/cpuinfo; falls back to ``platform.processor()``."""
    model, flags = None, []
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if model is None and key in ("model name", "Model Name", "cpu model"):
            model = value.strip()
        elif not flags and key in ("flags", "Features"):
            flags = value.split()
        if model is not None and flags:
            break
    return model or platform.processor() or None, flags


def cpu_flags() -> set[str]:
    """The CPU feature flags from ``/proc/cpuinfo`` (empty where unreadable)."""
    return set(_cpuinfo()[1])


def cuda_device_status() -> tuple[bool, str]:
    """(ok, reason) for "is there a usable CUDA GPU?": torch.cuda if torch is installed, else nvidia-smi."""
    return _cuda_device_status()


@functools.lru_cache(maxsize=1)
def _cuda_device_status() -> tuple[bool, str]:
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            return True, ""
        if torch.version.cuda is None and shutil.which("nvidia-smi"):
            return False, "CUDA: torch is a CPU-only build (install a CUDA build of torch)"
        return False, "CUDA: no GPU"
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False, "CUDA: no GPU"
    proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    if proc.returncode == 0 and "GPU" in proc.stdout:
        return True, ""
    return False, "CUDA: no GPU (nvidia-smi lists none)"


def gpu_has_native_bf16() -> bool:
    """Whether the CUDA GPU computes in bfloat16 natively (compute capability 8.0+), not emulated."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch releases without the argument
        return torch.cuda.get_device_capability()[0] >= 8


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


def git_revision(folder: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` in the Slimbench package's folder; None if it is not a git checkout."""
    folder = folder or Path(__file__).resolve().parents[1]
    exe = shutil.which("git")
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    rev = proc.stdout.strip()
    return rev if proc.returncode == 0 and rev else None


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    cpu_model, flags = _cpuinfo()
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
    return env


def collect_environment(threads: int | None = None) -> dict[str, Any]:
    """The environment of a measurement (a fresh dict; the static part is computed once).

    ``threads`` is the intra-op thread count the run used (recorded as given; 0 means "all cores"
    and is recorded as ``os.cpu_count()``).
    """
    env = dict(_static_environment())
    env["cpu_flags"] = list(env["cpu_flags"])
    env["threads"] = (os.cpu_count() if threads == 0 else threads)
    env["timestamp"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return env


def backend_status(devices: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """``{backend, device, available, reason}`` for every registered backend and device.

    Reasons are short and self-contained ("TensorRT: package not installed", "CUDA: no GPU").
    """
    from ..backends import BACKENDS
    from ..config import DEVICES

    rows = []
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)
        for device in devices or DEVICES:
            ok, reason = backend.availability(device)
            rows.append({"backend": name, "device": device, "available": bool(ok), "reason": "" if ok else reason})
    return rows

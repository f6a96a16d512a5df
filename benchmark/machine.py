"""What this machine has: CPU model and feature flags, a usable CUDA GPU, installed package versions
and the git revision of this Slimbench checkout.

These probes sit below everything that asks about the machine: the backends (is CUDA usable? does
the GPU compute BF16 natively?), the compressions (which INT8 format suits this CPU?) and the
environment recorded with every result (:mod:`benchmark.measure.environment`). Package versions
come from distribution metadata, so nothing heavy is imported for them; the CUDA status imports
torch (if installed) once and is cached per process.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess
from pathlib import Path

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


def cpu_info() -> tuple[str | None, list[str]]:
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
    return set(cpu_info()[1])


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


def git_revision(folder: Path | None = None) -> str | None:
    """``git rev-parse HEAD`` in the Slimbench package's folder; None if it is not a git checkout."""
    folder = folder or Path(__file__).resolve().parent
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

"""The CPU's instruction set, as far as it decides how fast low-precision kernels run.

What matters for the speed of compressed models on a CPU:

- **AVX2** / **AVX-512** (F, BW, VL): the width of the float and integer vector units.
- **VNNI** (``avx512_vnni`` with AVX-512, ``avx_vnni`` on AVX2-only cores): one instruction multiplies
  uint8 by int8 and accumulates in int32. Without it INT8 GEMMs need three instructions per step and
  often run no faster than FP32.
- **AVX512-BF16** (``avx512_bf16``) and **AMX** (``amx_tile`` / ``amx_int8`` / ``amx_bf16``): native
  bfloat16 dot products and matrix tiles. Without them BF16 is converted to FP32 and back.
- On ARM: NEON (``neon``), the dot-product extension (``dotprod``: INT8 dot products), ``i8mm``
  (INT8 matrix multiply), ``bf16``, ``sve``.

Sources, combined (each one reports what it can see; a flag no source could see is *unknown*,
never assumed absent):

- Linux: ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on ARM). Authoritative.
- macOS: ``sysctl`` (``machdep.cpu.features`` / ``machdep.cpu.leaf7_features`` on Intel Macs,
  ``hw.optional.*`` including ``hw.optional.arm.FEAT_*`` on Apple silicon).
- Every platform: numpy's own CPUID probe (``__cpu_features__``): AVX2, AVX-512, AVX512-VNNI,
  AVX512-BF16 on x86; NEON / dot product on ARM. It cannot see AVX-VNNI or AMX.
- Every platform with torch: ``torch.backends.cpu.get_cpu_capability()`` ("AVX512", "AVX2",
  "DEFAULT", "ZVECTOR", "SVE256"...): the vector code torch dispatches to; it implies a lower bound
  (AVX512 implies AVX-512 F/BW/VL/DQ and AVX2) and is recorded as it is.

The parsing functions take text (or numpy's dict), so every platform's input is testable anywhere;
:func:`detect_isa` reads this machine once per process.
"""
from __future__ import annotations

import functools
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

#: Flags that decide low-precision speed, by architecture (normalized names, /proc/cpuinfo style).
X86_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni",
             "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")
ARM_FLAGS = ("neon", "fp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "sme")

#: Linux ARM ``Features`` names -> normalized names.
_LINUX_ARM = {"asimd": "neon", "neon": "neon", "asimdhp": "fp16", "fphp": "fp16", "asimddp": "dotprod",
              "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "sve2": "sve2", "sme": "sme"}

#: macOS sysctl tokens (upper-cased, from machdep.cpu.* lists and hw.optional.* keys) -> normalized names.
_SYSCTL = {
    "AVX2": "avx2", "AVX2_0": "avx2", "FMA": "fma", "F16C": "f16c", "AVX512F": "avx512f", "AVX512BW": "avx512bw",
    "AVX512VL": "avx512vl", "AVX512DQ": "avx512dq", "AVX512VNNI": "avx512_vnni", "AVXVNNI": "avx_vnni",
    "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16", "AMXTILE": "amx_tile", "AMXINT8": "amx_int8",
    "AMXBF16": "amx_bf16",
    "NEON": "neon", "ADVSIMD": "neon", "FEAT_FP16": "fp16", "FEAT_DOTPROD": "dotprod", "FEAT_I8MM": "i8mm",
    "FEAT_BF16": "bf16", "FEAT_SVE": "sve", "FEAT_SVE2": "sve2", "FEAT_SME": "sme",
}

#: numpy ``__cpu_features__`` keys -> normalized names (numpy probes these with CPUID on every OS).
_NUMPY = {"AVX2": "avx2", "FMA3": "fma", "F16C": "f16c", "AVX512F": "avx512f", "AVX512BW": "avx512bw",
          "AVX512VL": "avx512vl", "AVX512DQ": "avx512dq", "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16",
          "AVX512FP16": "avx512_fp16", "ASIMD": "neon", "NEON": "neon", "ASIMDHP": "fp16", "ASIMDDP": "dotprod",
          "SVE": "sve"}

#: What torch's CPU capability implies (a lower bound: torch may be told to use less).
_TORCH_CAPABILITY = {
    "AVX2": ("avx2", "fma"),
    "AVX512": ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "SVE": ("sve",), "SVE128": ("sve",), "SVE256": ("sve",), "SVE512": ("sve",),
}


def normalize_arch(machine: str | None) -> str:
    """``x86_64`` / ``arm64`` / the name as given (``AMD64``, ``aarch64`` and friends are folded)."""
    m = (machine or "").strip().lower()
    if m in ("x86_64", "amd64", "x64", "i386", "i686", "x86"):
        return "x86_64"
    if m in ("arm64", "aarch64", "armv8", "armv8l", "arm64e"):
        return "arm64"
    return m or "unknown"


def _flags_of_interest(arch: str) -> tuple[str, ...]:
    return X86_FLAGS if arch == "x86_64" else ARM_FLAGS if arch == "arm64" else ()


@dataclass(frozen=True)
class IsaReading:
    """What one source says: ``present`` flags, and ``seen`` = the flags it can tell apart (present
    or absent). A flag outside ``seen`` is unknown to this source."""

    source: str
    present: frozenset[str]
    seen: frozenset[str]
    cpu_model: str | None = None


def parse_proc_cpuinfo(text: str, arch: str = "x86_64") -> IsaReading:
    """Linux ``/proc/cpuinfo``: the first ``flags`` (x86) or ``Features`` (ARM) line, and the model
    name (``model name``, ``Model Name``, ``cpu model``, ``Hardware``). Empty text sees nothing."""
    model, tokens = None, None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if model is None and key in ("model name", "Model Name", "cpu model", "Hardware"):
            model = value.strip() or None
        elif tokens is None and key in ("flags", "Features"):
            tokens = value.split()
    if tokens is None:
        return IsaReading("/proc/cpuinfo", frozenset(), frozenset(), model)
    if arch == "arm64":
        present = {_LINUX_ARM[t] for t in tokens if t in _LINUX_ARM}
    else:
        present = {t for t in tokens if t in X86_FLAGS}
    return IsaReading("/proc/cpuinfo", frozenset(present), frozenset(_flags_of_interest(arch)), model)


def parse_sysctl(text: str, arch: str = "x86_64") -> IsaReading:
    """macOS ``sysctl`` output (``name: value`` lines): ``machdep.cpu.features`` /
    ``machdep.cpu.leaf7_features`` / ``machdep.cpu.extfeatures`` list tokens; ``hw.optional.X: 1``
    (and ``hw.optional.arm.FEAT_X: 1``) say yes, ``0`` says no; ``machdep.cpu.brand_string`` is
    the model. An Intel Mac's feature lists see every x86 flag; Apple silicon's ``hw.optional.arm``
    keys see the ARM ones."""
    present: set[str] = set()
    seen: set[str] = set()
    model = None
    lists_read = False
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            key, sep, value = line.partition("=")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "machdep.cpu.brand_string":
            model = value or None
        elif key in ("machdep.cpu.features", "machdep.cpu.leaf7_features", "machdep.cpu.extfeatures"):
            lists_read = True
            for token in value.upper().replace(".", "_").split():
                if token in _SYSCTL:
                    present.add(_SYSCTL[token])
        elif key.startswith("hw.optional."):
            name = key[len("hw.optional."):].split(".")[-1].upper()
            flag = _SYSCTL.get(name)
            if flag is not None and value in ("0", "1"):
                seen.add(flag)
                if value == "1":
                    present.add(flag)
    if lists_read and arch == "x86_64":
        seen |= set(X86_FLAGS)
    return IsaReading("sysctl", frozenset(present), frozenset(seen | present), model)


def parse_numpy_features(features: Mapping[str, Any]) -> IsaReading:
    """numpy's ``__cpu_features__`` dict (feature name -> bool)."""
    present = {flag for key, flag in _NUMPY.items() if features.get(key)}
    seen = {flag for key, flag in _NUMPY.items() if key in features}
    return IsaReading("numpy", frozenset(present), frozenset(seen))


def parse_torch_capability(capability: str | None) -> IsaReading:
    """torch's CPU capability string; it proves a lower bound only, so it sees what it implies."""
    implied = frozenset(_TORCH_CAPABILITY.get((capability or "").strip().upper(), ()))
    return IsaReading("torch", implied, implied)


@dataclass(frozen=True)
class IsaInfo:
    """The CPU's instruction set as far as it matters for low-precision speed (see module docstring).

    ``flags``: normalized flags present; ``unknown``: flags of interest no source could tell apart.
    The properties are True / False, or None where the sources cannot tell.
    """

    arch: str
    cpu_model: str | None
    flags: frozenset[str]
    unknown: frozenset[str]
    sources: tuple[str, ...]
    torch_capability: str | None = None

    def _has(self, *names: str) -> bool | None:
        if any(n in self.flags for n in names):
            return True
        if any(n in self.unknown for n in names):
            return None
        return False

    def _all(self, *names: str) -> bool | None:
        if all(n in self.flags for n in names):
            return True
        if any(n not in self.flags and n not in self.unknown for n in names):
            return False
        return None

    @property
    def avx2(self) -> bool | None:
        return self._has("avx2") if self.arch == "x86_64" else False

    @property
    def avx512(self) -> bool | None:
        """AVX-512 F, BW and VL (what ONNX Runtime's and oneDNN's AVX-512 kernels need)."""
        return self._all("avx512f", "avx512bw", "avx512vl") if self.arch == "x86_64" else False

    @property
    def vnni(self) -> bool | None:
        """AVX512-VNNI or AVX-VNNI (x86 INT8 dot products)."""
        return self._has("avx512_vnni", "avx_vnni") if self.arch == "x86_64" else False

    @property
    def amx(self) -> bool | None:
        return self._has("amx_tile", "amx_int8", "amx_bf16") if self.arch == "x86_64" else False

    @property
    def int8_fast(self) -> bool | None:
        """Whether the CPU has INT8 dot-product instructions: VNNI or AMX-INT8 on x86, the
        dot-product or i8mm extension on ARM. None where no source could tell."""
        if self.arch == "x86_64":
            return self._has("avx512_vnni", "avx_vnni", "amx_int8")
        if self.arch == "arm64":
            return self._has("dotprod", "i8mm")
        return None

    @property
    def bf16_native(self) -> bool | None:
        """Whether the CPU computes bfloat16 dot products natively (AVX512-BF16 / AMX-BF16, ARM bf16)."""
        if self.arch == "x86_64":
            return self._has("avx512_bf16", "amx_bf16")
        if self.arch == "arm64":
            return self._has("bf16")
        return None

    def features(self) -> list[str]:
        """Readable feature names present, in a fixed order (``AVX2``, ``AVX-512``, ``AVX512-VNNI``...)."""
        names = {"avx2": "AVX2", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX512-BF16",
                 "avx512_fp16": "AVX512-FP16", "amx_tile": "AMX", "amx_int8": "AMX-INT8", "amx_bf16": "AMX-BF16",
                 "neon": "NEON", "fp16": "FP16", "dotprod": "DotProd", "i8mm": "I8MM", "bf16": "BF16", "sve": "SVE",
                 "sve2": "SVE2", "sme": "SME"}
        out = []
        for flag in _flags_of_interest(self.arch):
            if flag == "avx512f" and self.avx512:
                out.append("AVX-512")
            elif flag in names and flag in self.flags:
                out.append(names[flag])
        return out

    def summary(self) -> str:
        """One line, e.g. ``x86_64 AMD EPYC: AVX2, AVX-512, AVX512-VNNI, AVX-VNNI, AVX512-BF16; no AMX;
        INT8 dot products: yes; native BF16: yes (torch: AVX512)``."""
        def word(value: bool | None) -> str:
            return "unknown" if value is None else "yes" if value else "no"

        head = f"{self.arch} {self.cpu_model}" if self.cpu_model else self.arch
        feats = ", ".join(self.features())
        if not feats and self.arch == "x86_64" and self.avx2 is False:
            feats = "no AVX2"
        missing = []
        if self.arch == "x86_64":
            for label, value in (("VNNI", self.vnni), ("AMX", self.amx)):
                if value is False:
                    missing.append(f"no {label}")
                elif value is None:
                    missing.append(f"{label} unknown")
        parts = [p for p in (feats, "; ".join(missing)) if p]
        text = f"{head}: {'; '.join(parts) or 'no flags read'}; INT8 dot products: {word(self.int8_fast)}; " \
               f"native BF16: {word(self.bf16_native)}"
        if self.torch_capability:
            text += f" (torch: {self.torch_capability})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the fields (sets as sorted lists), the derived properties and the summary."""
        d = asdict(self)
        d["flags"], d["unknown"], d["sources"] = sorted(self.flags), sorted(self.unknown), list(self.sources)
        for name in ("avx2", "avx512", "vnni", "amx", "int8_fast", "bf16_native"):
            d[name] = getattr(self, name)
        d["summary"] = self.summary()
        return d


def combine(arch: str, readings: Iterable[IsaReading], torch_capability: str | None = None,
            cpu_model: str | None = None) -> IsaInfo:
    """One :class:`IsaInfo` from several sources: a flag is present if any source says so, absent if
    some source can see it and none says so, unknown otherwise."""
    arch = normalize_arch(arch)
    interest = set(_flags_of_interest(arch))
    readings = [r for r in readings if r.seen or r.present or r.cpu_model]
    present: set[str] = set()
    seen: set[str] = set()
    for r in readings:
        present |= set(r.present) & interest
        seen |= set(r.seen) & interest
        cpu_model = cpu_model or r.cpu_model
    return IsaInfo(arch=arch, cpu_model=cpu_model, flags=frozenset(present),
                   unknown=frozenset(interest - seen - present), sources=tuple(r.source for r in readings),
                   torch_capability=torch_capability)


def isa_from_texts(arch: str, *, cpuinfo: str | None = None, sysctl: str | None = None,
                   numpy_features: Mapping[str, Any] | None = None, torch_capability: str | None = None,
                   cpu_model: str | None = None) -> IsaInfo:
    """Parse whichever inputs are given (the pure entry point behind :func:`detect_isa`)."""
    arch = normalize_arch(arch)
    readings = []
    if cpuinfo is not None:
        readings.append(parse_proc_cpuinfo(cpuinfo, arch))
    if sysctl is not None:
        readings.append(parse_sysctl(sysctl, arch))
    if numpy_features is not None:
        readings.append(parse_numpy_features(numpy_features))
    if torch_capability:
        readings.append(parse_torch_capability(torch_capability))
    return combine(arch, readings, torch_capability=torch_capability or None, cpu_model=cpu_model)


# --------------------------------------------------------------------------------------------
# reading this machine
# --------------------------------------------------------------------------------------------
def _read_cpuinfo() -> str | None:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None


def _read_sysctl() -> str | None:
    try:
        proc = subprocess.run(["sysctl", "machdep.cpu", "hw.optional"], capture_output=True, text=True,
                              timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout or None


def numpy_cpu_features() -> dict[str, bool] | None:
    """numpy's CPUID probe (``numpy._core`` in numpy 2, ``numpy.core`` in numpy 1), or None."""
    import importlib

    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            features = getattr(importlib.import_module(module), "__cpu_features__", None)
        except ImportError:
            continue
        if isinstance(features, dict):
            return {str(k): bool(v) for k, v in features.items()}
    return None


def torch_cpu_capability() -> str | None:
    """``torch.backends.cpu.get_cpu_capability()`` (None without torch or on old releases)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    getter = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return str(getter()) if callable(getter) else None


def _windows_cpu_model() -> str | None:
    try:
        import winreg

        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"HARDWARE\DESCRIPTION\System\CentralProcessor\0")
        return str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip() or None
    except (ImportError, OSError):
        return None


@functools.lru_cache(maxsize=1)
def detect_isa() -> IsaInfo:
    """This machine's :class:`IsaInfo` (computed once per process)."""
    arch = normalize_arch(platform.machine())
    cpu_model = None
    if sys.platform == "win32":
        cpu_model = _windows_cpu_model()
    return isa_from_texts(
        arch,
        cpuinfo=_read_cpuinfo() if sys.platform.startswith("linux") else None,
        sysctl=_read_sysctl() if sys.platform == "darwin" else None,
        numpy_features=numpy_cpu_features(),
        torch_capability=torch_cpu_capability(),
        cpu_model=cpu_model or (re.sub(r"\s+", " ", platform.processor()).strip() or None
                                if sys.platform not in ("linux", "darwin") else None),
    )


__all__ = ["ARM_FLAGS", "X86_FLAGS", "IsaInfo", "IsaReading", "combine", "detect_isa", "isa_from_texts",
           "normalize_arch", "numpy_cpu_features", "parse_numpy_features", "parse_proc_cpuinfo", "parse_sysctl",
           "parse_torch_capability", "torch_cpu_capability"]

"""This device's peaks: GEMM throughput per precision and memory bandwidth, measured once per machine.

A row's or a layer's *achieved* throughput means little alone: 40 GMAC/s is near the peak of one
CPU and a tenth of another's. :func:`device_peaks` measures what this CPU reaches on dense GEMMs in
each precision, with the libraries the benchmarks use, and the memory bandwidth; the achieved
throughput of a row or a layer is then a fraction of the peak of its precision.

Conventions:

- **GEMM peaks** in GMAC/s (1 MAC = one multiply-add; GFLOP/s = 2 x GMAC/s) on square ``n x n``
  matrices (default ``n = 1024``; ``M x K`` activations times a ``K x N`` weight):
  ``fp32``: ``torch.matmul`` and ONNX Runtime ``MatMul`` (weight as an initializer, prepacked);
  ``bf16`` / ``fp16``: ``torch.matmul`` on bfloat16 / float16 tensors, and ONNX Runtime ``MatMul``
  on float16 (its CPU provider may have no such kernel: then the reason is in ``notes``);
  ``int8``: ONNX Runtime ``MatMulInteger`` (uint8 activations x int8 weights, U8S8, the format of
  its fast x86 kernels; also int8 x int8, S8S8) and ``QLinearMatMul`` (U8S8, requantized output).
  Each kernel warms up twice, then runs until ``seconds_per_kernel`` (at least 3 runs); its GMAC/s
  is ``n^3`` over the **fastest** run (a peak, not a typical time). The peak of a precision is its
  fastest kernel. It is one GEMM shape, not a hardware bound: a convolution kernel can beat it
  (ONNX Runtime's NCHWc convs of the digits CNN ran at 1.06x the FP32 MatMul peak), so a peak
  fraction can exceed 1.
- **Memory bandwidth** in GB/s (1 GB = 1e9 bytes) on arrays of ``memory_bytes`` each (default
  128 MiB, far larger than the caches): ``numpy.copyto`` (one thread; read + write = 2 x bytes)
  and ``torch.add(a, b, out=c)`` with the thread count (3 x bytes). Bytes the program moves,
  fastest run; write-allocate traffic is not counted.
- Threads: ``threads`` intra-op threads for torch and ONNX Runtime (0 = ``os.cpu_count()``),
  recorded. The device lock (:func:`benchmark.measure.latency.device_lock`) is held while measuring.
- The 1-minute load average around the measurement is recorded (``settings["load_average_1m"]``);
  above half the core count a note says the peaks may be low (other work shared the CPU).
- Cache: ``<data folder>/roofline.json`` (or ``$SLIMBENCH_ROOFLINE_CACHE``), keyed by CPU model, architecture, ISA flags, thread count,
  torch / onnxruntime / numpy versions and the sizes. A different key measures again.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, MeasurementError

ROOFLINE_VERSION = 1
DEFAULT_GEMM_N = 1024
DEFAULT_MEMORY_BYTES = 128 * 2**20
DEFAULT_SECONDS_PER_KERNEL = 0.25
PEAK_PRECISIONS = ("fp32", "bf16", "fp16", "int8")

#: Row precisions (and PyTorch session precisions) -> the peak they are compared with.
_PRECISION_FAMILY = {
    "fp32": "fp32", "bf16": "bf16", "autocast-bf16": "bf16", "fp16": "fp16", "autocast-fp16": "fp16",
    "int8": "int8", "int8-static": "int8", "int8-dynamic": "int8", "mixed": "int8",
}


def peak_precision(precision: str | None) -> str | None:
    """The peak a precision is compared with: ``int8-static`` / ``int8-dynamic`` / ``mixed`` ->
    ``int8``; ``autocast-bf16`` -> ``bf16``; None for an unknown precision."""
    return _PRECISION_FAMILY.get(str(precision or "").strip().lower())


@dataclass(frozen=True)
class Peaks:
    """Measured peaks of this device (see the module docstring).

    ``gmacs_per_s``: precision -> kernel -> GMAC/s. ``memory_gb_per_s``: method -> GB/s.
    ``notes``: kernels that could not run here, with the reason.
    """

    gmacs_per_s: dict[str, dict[str, float]]
    memory_gb_per_s: dict[str, float]
    threads: int
    key: str
    settings: dict[str, Any] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    measured_at: str = ""
    measure_s: float = 0.0
    notes: tuple[str, ...] = ()
    cached: bool = False

    def peak(self, precision: str | None) -> float | None:
        """GMAC/s of the fastest kernel of ``precision``'s family (None if none was measured)."""
        kernels = self.gmacs_per_s.get(peak_precision(precision) or "", {})
        return max(kernels.values()) if kernels else None

    def peak_kernel(self, precision: str | None) -> str | None:
        kernels = self.gmacs_per_s.get(peak_precision(precision) or "", {})
        return max(kernels, key=kernels.get) if kernels else None

    @property
    def memory_bandwidth_gb_per_s(self) -> float | None:
        return max(self.memory_gb_per_s.values()) if self.memory_gb_per_s else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["notes"] = list(self.notes)
        d["peak_gmacs_per_s"] = {p: self.peak(p) for p in PEAK_PRECISIONS if self.peak(p) is not None}
        d["memory_bandwidth_gb_per_s"] = self.memory_bandwidth_gb_per_s
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], cached: bool = False) -> "Peaks":
        return cls(
            gmacs_per_s={str(p): {str(k): float(v) for k, v in ks.items()} for p, ks in data["gmacs_per_s"].items()},
            memory_gb_per_s={str(k): float(v) for k, v in data["memory_gb_per_s"].items()},
            threads=int(data["threads"]), key=str(data["key"]), settings=dict(data.get("settings") or {}),
            identity=dict(data.get("identity") or {}), measured_at=str(data.get("measured_at", "")),
            measure_s=float(data.get("measure_s", 0.0)), notes=tuple(data.get("notes") or ()), cached=cached,
        )


def achieved_gmacs_per_s(macs: int | float | None, batch_size: int, latency_ms: float | None) -> float | None:
    """Achieved GMAC/s = ``macs`` (counted at batch 1) x ``batch_size`` / latency. None when a number
    is missing or the latency is not positive."""
    if macs is None or latency_ms is None or not latency_ms > 0 or not macs > 0:
        return None
    return float(macs) * int(batch_size) / (float(latency_ms) * 1e-3) / 1e9


def peak_fraction(achieved_gmacs: float | None, peaks: Peaks | None, precision: str | None) -> float | None:
    """``achieved_gmacs`` over the peak of ``precision`` (None when either is unknown)."""
    if achieved_gmacs is None or peaks is None:
        return None
    peak = peaks.peak(precision)
    return None if not peak else float(achieved_gmacs) / peak


# --------------------------------------------------------------------------------------------
# microbenchmarks
# --------------------------------------------------------------------------------------------
def _fastest_s(fn: Callable[[], Any], seconds: float, min_runs: int = 3,
               give_up_s: float | None = None) -> tuple[float, int]:
    """(fastest run in seconds, runs) of ``fn``: one warm-up call (the only run when it alone takes
    ``give_up_s``, default ``seconds``), a second warm-up, then runs until ``min_runs`` and ``seconds``."""
    t0 = time.perf_counter_ns()
    fn()
    first = (time.perf_counter_ns() - t0) / 1e9
    if first >= (seconds if give_up_s is None else give_up_s):
        return first, 1
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e9)
        if len(times) >= 10000:
            break
    return min(times), len(times)


def _gemm_gmacs(factory: Callable[[int, int], Callable[[], Any]], n: int, threads: int,
                seconds: float) -> tuple[float, int]:
    """(GMAC/s, size used) of one GEMM kernel. A probe at ``min(n, 128)`` estimates its speed; a
    kernel too slow for one ``n``-sized run in a quarter of ``seconds`` (an emulated precision) is
    measured at a smaller size, so every kernel stays within its time budget."""
    probe_n = min(n, 128)
    probe_s, _ = _fastest_s(factory(probe_n, threads), seconds / 10, min_runs=2, give_up_s=seconds)
    rate = probe_n ** 3 / max(probe_s, 1e-9)
    size = n
    if n ** 3 / rate > seconds / 4:
        size = max(probe_n, min(n, int((rate * seconds / 4) ** (1 / 3)) // 16 * 16))
    best_s, _ = _fastest_s(factory(size, threads), seconds)
    return size ** 3 / best_s / 1e9, size


def _ort_gemm_model(kind: str, n: int) -> tuple[bytes, dict[str, Any]]:
    """(serialized ONNX model, feeds) of one n x n x n GEMM of ``kind``: ``MatMul`` (float32),
    ``MatMul-fp16``, ``MatMulInteger`` (U8S8), ``MatMulInteger-s8s8`` or ``QLinearMatMul`` (U8S8)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    act = np.int8 if kind.endswith("s8s8") else np.uint8
    if kind.startswith("MatMul") and not kind.startswith("MatMulInteger"):
        dt = np.float16 if kind.endswith("fp16") else np.float32
        elem = TensorProto.FLOAT16 if dt == np.float16 else TensorProto.FLOAT
        x = rng.standard_normal((n, n)).astype(dt)
        inits = [numpy_helper.from_array(rng.standard_normal((n, n)).astype(dt), "w")]
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        out_elem = elem
    else:
        x = rng.integers(0 if act == np.uint8 else -64, 64, (n, n)).astype(act)
        elem = TensorProto.UINT8 if act == np.uint8 else TensorProto.INT8
        w = rng.integers(-64, 64, (n, n)).astype(np.int8)
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(0, dtype=act), "x_zp"),
                 numpy_helper.from_array(np.array(0, dtype=np.int8), "w_zp")]
        if kind == "QLinearMatMul":
            inits += [numpy_helper.from_array(np.array(0.01, dtype=np.float32), s) for s in ("x_s", "w_s", "y_s")]
            inits.append(numpy_helper.from_array(np.array(128, dtype=np.uint8), "y_zp"))
            node = helper.make_node("QLinearMatMul", ["x", "x_s", "x_zp", "w", "w_s", "w_zp", "y_s", "y_zp"], ["y"])
            out_elem = TensorProto.UINT8
        else:
            node = helper.make_node("MatMulInteger", ["x", "w", "x_zp", "w_zp"], ["y"])
            out_elem = TensorProto.INT32
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", elem, [n, n])],
                              [helper.make_tensor_value_info("y", out_elem, [n, n])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString(), {"x": x}


def _ort_kernel(kind: str, n: int, threads: int) -> Callable[[], Any]:
    import onnxruntime as ort

    model, feeds = _ort_gemm_model(kind, n)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    return lambda: sess.run(None, feeds)


def _torch_kernel(dtype_name: str, n: int) -> Callable[[], Any]:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)

    def run():
        with torch.inference_mode():
            return torch.matmul(a, b)

    return run


#: (precision, kernel label, factory(n, threads)) of every GEMM microbenchmark.
_GEMM_KERNELS: tuple[tuple[str, str, Callable[[int, int], Callable[[], Any]]], ...] = (
    ("fp32", "torch.matmul", lambda n, t: _torch_kernel("fp32", n)),
    ("fp32", "onnxruntime MatMul", lambda n, t: _ort_kernel("MatMul", n, t)),
    ("bf16", "torch.matmul", lambda n, t: _torch_kernel("bf16", n)),
    ("fp16", "torch.matmul", lambda n, t: _torch_kernel("fp16", n)),
    ("fp16", "onnxruntime MatMul", lambda n, t: _ort_kernel("MatMul-fp16", n, t)),
    ("int8", "onnxruntime MatMulInteger U8S8", lambda n, t: _ort_kernel("MatMulInteger", n, t)),
    ("int8", "onnxruntime MatMulInteger S8S8", lambda n, t: _ort_kernel("MatMulInteger-s8s8", n, t)),
    ("int8", "onnxruntime QLinearMatMul U8S8", lambda n, t: _ort_kernel("QLinearMatMul", n, t)),
)


def _numpy_copy_gb_per_s(count: int, seconds: float) -> float:
    import numpy as np

    src = np.ones(count, dtype=np.float32)
    dst = np.zeros_like(src)  # pages touched before timing
    best, _ = _fastest_s(lambda: np.copyto(dst, src), seconds, give_up_s=20 * seconds)
    return 2 * src.nbytes / best / 1e9


def _torch_add_gb_per_s(count: int, seconds: float) -> float:
    import torch

    a, b, c = torch.ones(count), torch.ones(count), torch.zeros(count)
    best, _ = _fastest_s(lambda: torch.add(a, b, out=c), seconds, give_up_s=20 * seconds)
    return 3 * a.numel() * a.element_size() / best / 1e9


def _memory_bandwidth(nbytes: int, seconds: float) -> dict[str, float]:
    count = max(1, nbytes // 4)
    return {"numpy copy": _numpy_copy_gb_per_s(count, seconds), "torch add": _torch_add_gb_per_s(count, seconds)}


def _settings(gemm_n: int, memory_bytes: int, seconds_per_kernel: float) -> dict[str, Any]:
    return {"gemm_n": int(gemm_n), "memory_bytes": int(memory_bytes), "seconds_per_kernel": float(seconds_per_kernel)}


def _load_average() -> float | None:
    """The 1-minute load average (None where the OS has none, e.g. Windows)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def _resolve_threads(threads: int) -> int:
    if int(threads) < 0:
        raise ConfigError(f"threads must be >= 0; got {threads}")
    return int(threads) or (os.cpu_count() or 1)


def measure_peaks(threads: int = 0, *, gemm_n: int = DEFAULT_GEMM_N, memory_bytes: int = DEFAULT_MEMORY_BYTES,
                  seconds_per_kernel: float = DEFAULT_SECONDS_PER_KERNEL, lock: bool = True) -> Peaks:
    """Measure the peaks now (no cache; see the module docstring). A kernel that cannot run here
    (a library missing, no such kernel in the provider) is left out with its reason in ``notes``."""
    import contextlib
    import importlib.util

    n_threads = _resolve_threads(threads)
    load_before = _load_average()
    if int(gemm_n) < 8 or int(memory_bytes) < 1024 or not float(seconds_per_kernel) > 0:
        raise ConfigError(f"need gemm_n >= 8, memory_bytes >= 1024 and seconds_per_kernel > 0; got {gemm_n}, "
                          f"{memory_bytes}, {seconds_per_kernel}")
    from .latency import device_lock

    have = {m: importlib.util.find_spec(m) is not None for m in ("torch", "onnxruntime", "onnx")}
    gmacs: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    notes: list[str] = []
    t_start = time.perf_counter()
    torch_threads = None
    if have["torch"]:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(n_threads)
    try:
        with device_lock("cpu") if lock else contextlib.nullcontext():
            for precision, label, factory in _GEMM_KERNELS:
                needs = ("torch",) if label.startswith("torch") else ("onnxruntime", "onnx")
                missing = [m for m in needs if not have[m]]
                if missing:
                    notes.append(f"{precision} {label}: not measured ({', '.join(missing)} not installed)")
                    continue
                try:
                    rate, size = _gemm_gmacs(factory, int(gemm_n), n_threads, float(seconds_per_kernel))
                except Exception as exc:  # a kernel this build/CPU lacks: recorded, the others go on
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    notes.append(f"{precision} {label}: cannot run here ({first[:200]})")
                    continue
                gmacs.setdefault(precision, {})[label] = round(rate, 3)
                if size != int(gemm_n):
                    sizes[f"{precision} {label}"] = size
            memory = {} if not have["torch"] else {
                k: round(v, 3) for k, v in _memory_bandwidth(int(memory_bytes), float(seconds_per_kernel)).items()}
    finally:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
    if not gmacs:
        raise MeasurementError("no GEMM microbenchmark could run: " + "; ".join(notes))
    identity = machine_identity(n_threads)
    settings = _settings(gemm_n, memory_bytes, seconds_per_kernel)
    key = peaks_key(identity, settings)
    load = max((x for x in (load_before, _load_average()) if x is not None), default=None)
    if load is not None:
        settings["load_average_1m"] = round(load, 2)
        cores = os.cpu_count() or 1
        if load > 0.5 * cores:
            notes.append(f"measured while the 1-minute load average was {load:.1f} on {cores} core(s): other work "
                         "shared the CPU, so these peaks may be low; measure again on a quiet machine (refresh)")
    if sizes:
        settings["smaller_gemm_n"] = sizes  # slow kernels measured at a smaller size (see _gemm_gmacs)
    return Peaks(gmacs_per_s=gmacs, memory_gb_per_s=memory, threads=n_threads, key=key,
                 settings=settings, identity=identity,
                 measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 measure_s=round(time.perf_counter() - t_start, 2), notes=tuple(notes))


def machine_identity(threads: int) -> dict[str, Any]:
    """What the cache key is made of: CPU model, architecture, ISA flags, threads, library versions."""
    from ..machine import package_version
    from .hardware import detect_isa

    isa = detect_isa()
    return {"cpu_model": isa.cpu_model, "arch": isa.arch, "flags": sorted(isa.flags),
            "torch_capability": isa.torch_capability, "threads": int(threads),
            "torch": package_version("torch"), "onnxruntime": package_version("onnxruntime"),
            "numpy": package_version("numpy"), "roofline_version": ROOFLINE_VERSION}


def peaks_key(identity: dict[str, Any], settings: dict[str, Any]) -> str:
    blob = json.dumps({"identity": identity, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: Environment variable naming another peaks cache file (default ``<data folder>/roofline.json``).
CACHE_ENV = "SLIMBENCH_ROOFLINE_CACHE"


def cache_path() -> Path:
    """The peaks cache: ``$SLIMBENCH_ROOFLINE_CACHE``, else ``<data folder>/roofline.json``."""
    from ..paths import data_dir

    if os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV])
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
    return data_dir() / "roofline.json"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}  # unreadable or corrupt: measured again and rewritten
    return data.get("entries", {}) if isinstance(data, dict) and isinstance(data.get("entries"), dict) else {}


def device_peaks(threads: int = 0, *, refresh: bool = False, gemm_n: int = DEFAULT_GEMM_N,
                 memory_bytes: int = DEFAULT_MEMORY_BYTES,
                 seconds_per_kernel: float = DEFAULT_SECONDS_PER_KERNEL) -> Peaks:
    """This device's :class:`Peaks` at ``threads``, from the cache when its key matches (``cached``
    is then True), else measured (a few seconds) and stored. ``refresh`` measures again."""
    from filelock import FileLock

    n_threads = _resolve_threads(threads)
    settings = _settings(gemm_n, memory_bytes, seconds_per_kernel)
    key = peaks_key(machine_identity(n_threads), settings)
    path = cache_path()
    with FileLock(str(path) + ".lock"):
        entries = _read_cache(path)
        if not refresh and key in entries:
            try:
                return Peaks.from_dict(entries[key], cached=True)
            except (KeyError, TypeError, ValueError):
                pass  # a malformed entry is measured again
        peaks = measure_peaks(n_threads, gemm_n=gemm_n, memory_bytes=memory_bytes,
                              seconds_per_kernel=seconds_per_kernel)
        entries[peaks.key] = peaks.to_dict()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"version": ROOFLINE_VERSION, "entries": entries}, indent=1))
        os.replace(tmp, path)
    return peaks


def cached_peaks(threads: int = 0) -> Peaks | None:
    """This device's :class:`Peaks` at ``threads`` with the default settings when they are in the
    cache, else None (nothing is measured)."""
    n_threads = _resolve_threads(threads)
    key = peaks_key(machine_identity(n_threads), _settings(DEFAULT_GEMM_N, DEFAULT_MEMORY_BYTES,
                                                           DEFAULT_SECONDS_PER_KERNEL))
    entry = _read_cache(cache_path()).get(key)
    try:
        return None if entry is None else Peaks.from_dict(entry, cached=True)
    except (KeyError, TypeError, ValueError):
        return None


def _peaks_job(payload: dict, emit) -> dict:
    """Child entry of :func:`peaks_isolated`."""
    emit({"type": "step", "message": f"measuring this CPU's peaks ({payload['threads'] or 'all'} thread(s))",
          "fraction": 0.1})
    return device_peaks(int(payload["threads"]), refresh=bool(payload["refresh"])).to_dict()


def peaks_isolated(threads: int = 0, *, refresh: bool = False, on_progress=None, on_wait=None,
                   timeout_s: float | None = 300.0) -> Peaks:
    """:func:`device_peaks` in a spawned child holding the CPU queue slot (never beside a timed run,
    never in the dashboard's own process); returns the peaks (cached for every later call)."""
    from ..jobs import run_queued_job

    _resolve_threads(threads)
    payload = {"threads": int(threads), "refresh": bool(refresh), "label": "this CPU"}
    data = run_queued_job("benchmark.measure.roofline:_peaks_job", payload, "peaks", on_progress, on_wait,
                          timeout_s, True)
    return Peaks.from_dict(data)


def describe_peaks(peaks: Peaks) -> list[str]:
    """Readable lines: one per precision (fastest kernel first) and the bandwidth."""
    lines = []
    for precision in PEAK_PRECISIONS:
        kernels = peaks.gmacs_per_s.get(precision)
        if not kernels:
            continue
        ranked = sorted(kernels.items(), key=lambda kv: -kv[1])
        lines.append(f"{precision}: " + ", ".join(f"{k} {v:.1f} GMAC/s" for k, v in ranked))
    if peaks.memory_gb_per_s:
        lines.append("memory: " + ", ".join(f"{k} {v:.1f} GB/s" for k, v in peaks.memory_gb_per_s.items()))
    return lines


__all__ = ["DEFAULT_GEMM_N", "DEFAULT_MEMORY_BYTES", "PEAK_PRECISIONS", "Peaks", "achieved_gmacs_per_s", "cache_path",
           "cached_peaks", "describe_peaks", "device_peaks", "machine_identity", "measure_peaks", "peak_fraction",
           "peak_precision", "peaks_isolated", "peaks_key"]

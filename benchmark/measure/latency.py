"""Latency: warm-up, then timed iterations until both a minimum count and a minimum duration.

Conventions (also shown in the UI):

- Inputs are prepared once (``session.bind(feeds)``: dtype conversion, device copy, IO binding,
  under the device lock);
  each timed iteration is one ``session.run_bound()`` call plus ``session.synchronize()``.
- Warm-up runs until at least ``warmup_iters`` iterations **and** ``warmup_s`` seconds are done.
- Timed iterations run until at least ``min_iters`` iterations **and** ``min_duration_s`` seconds
  are done, and stop at ``max_iters``.
- On CPU each iteration is timed with ``time.perf_counter_ns``. On CUDA each iteration is timed with
  a pair of ``torch.cuda.Event(enable_timing=True)`` recorded on the current stream around the call
  (a backend that runs on its own stream synchronizes it before ``run_bound`` returns).
- Reported: mean, std (sample, ddof=1), min, p50, p90, p95, p99 (linear interpolation), max, CV
  (std / mean), iteration count, the wall time of the timed interval and its UTC start/end.
  Throughput = batch size / mean latency, in samples per second.
- With an energy ``meter`` (:mod:`benchmark.measure.energy`, CUDA only) the GPU board's energy
  and mean power over the timed iterations are recorded in ``energy`` (None otherwise; a failed
  reading leaves None and its reason in ``energy_note``).
- A device lock (per device, across threads and processes) is held around warm-up and the timed
  loop, so two timed measurements never share a device.
"""
from __future__ import annotations

import re
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import ConfigError, MeasurementError
from ..paths import locks_dir

Progress = Callable[[str, "float | None"], None]  # (message, fraction in [0, 1] or None)

_PERCENTILES = (50, 90, 95, 99)


@dataclass
class LatencyStats:
    """Per-iteration latency statistics in milliseconds (see the module docstring)."""

    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    cv: float
    iterations: int
    total_s: float
    samples_ms: list[float] = field(default_factory=list, repr=False)
    started_at: str = ""
    finished_at: str = ""
    timer: str = "perf_counter_ns"
    energy: Any = None  # EnergyReading over the timed iterations, or None
    energy_note: str = ""

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            d.pop("samples_ms")
        return d

    def throughput_sps(self, batch_size: int) -> float:
        return throughput_sps(batch_size, self.mean_ms)


def throughput_sps(batch_size: int, mean_ms: float) -> float:
    """Samples per second = batch size / mean latency."""
    if mean_ms <= 0:
        raise MeasurementError(f"mean latency must be > 0 ms to compute throughput; got {mean_ms}")
    return float(batch_size) * 1000.0 / float(mean_ms)


def summarize(samples_ms: Sequence[float], total_s: float = 0.0, started_at: str = "", finished_at: str = "",
              timer: str = "perf_counter_ns") -> LatencyStats:
    """Statistics of per-iteration latencies in milliseconds."""
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        raise MeasurementError("no timed iterations to summarize")
    if not np.all(np.isfinite(arr)):
        raise MeasurementError("latency samples contain NaN/Inf")
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    p = np.percentile(arr, _PERCENTILES)
    return LatencyStats(
        mean_ms=mean,
        std_ms=std,
        min_ms=float(arr.min()),
        p50_ms=float(p[0]),
        p90_ms=float(p[1]),
        p95_ms=float(p[2]),
        p99_ms=float(p[3]),
        max_ms=float(arr.max()),
        cv=std / mean if mean > 0 else 0.0,
        iterations=int(arr.size),
        total_s=float(total_s),
        samples_ms=[float(x) for x in arr],
        started_at=started_at,
        finished_at=finished_at,
        timer=timer,
    )


# --- device lock ----------------------------------------------------------------------------------
_thread_locks: dict[str, threading.RLock] = {}
_file_locks: dict[str, Any] = {}
_registry_lock = threading.Lock()


def lock_path(device: str) -> Path:
    """The lock file of ``device`` (``cuda:0`` -> ``cuda_0.lock``) in :func:`benchmark.paths.locks_dir`."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device) or "device"
    return locks_dir() / f"{safe}.lock"


@contextmanager
def device_lock(device: str, timeout_s: float | None = None) -> Iterator[Path]:
    """Hold ``device`` exclusively: a per-device thread lock in this process plus a file lock
    across processes. Re-entrant in the same thread. ``timeout_s`` None waits for ever; on timeout
    raises ``MeasurementError``. Yields the lock file path.
    """
    from filelock import FileLock, Timeout

    path = lock_path(device)
    key = str(path)
    with _registry_lock:
        tlock = _thread_locks.setdefault(key, threading.RLock())
        if key not in _file_locks:
            path.parent.mkdir(parents=True, exist_ok=True)
            _file_locks[key] = FileLock(key, thread_local=False)
        flock = _file_locks[key]
    got = tlock.acquire(timeout=-1 if timeout_s is None else timeout_s)
    if not got:
        raise MeasurementError(
            f"device {device!r} is busy in this process (waited {timeout_s} s); wait for the running measurement"
        )
    try:
        try:
            flock.acquire(timeout=-1 if timeout_s is None else timeout_s)
        except Timeout as exc:
            raise MeasurementError(
                f"device {device!r} is busy: another process holds {path} (waited {timeout_s} s); "
                "wait for the running measurement"
            ) from exc
        try:
            yield path
        finally:
            flock.release()
    finally:
        tlock.release()


# --- timing loop ----------------------------------------------------------------------------------
def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class _Reporter:
    def __init__(self, progress: Progress | None, every_s: float = 0.25):
        self.progress = progress
        self.every_ns = int(every_s * 1e9)
        self.last = 0

    def __call__(self, message: str, fraction: float | None, now_ns: int, force: bool = False) -> None:
        if self.progress is None or (not force and now_ns - self.last < self.every_ns):
            return
        self.last = now_ns
        self.progress(message, None if fraction is None else max(0.0, min(1.0, fraction)))


def _use_cuda_events(device: str) -> bool:
    if not device.startswith("cuda"):
        return False
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def measure_latency(session, feeds: dict[str, np.ndarray], cfg, device: str = "cpu",
                    progress: Progress | None = None, lock: bool = True, meter=None) -> LatencyStats:
    """Time ``session`` on ``feeds`` under ``cfg`` (a ``RunConfig``); see the module docstring.

    ``lock=False`` skips the device lock (only for callers that already hold it). ``meter``: an
    :class:`~benchmark.measure.energy.EnergyMeter` read over the timed iterations.
    """
    warmup_iters = int(cfg.warmup_iters)
    warmup_ns = int(float(cfg.warmup_s) * 1e9)
    min_iters = int(cfg.min_iters)
    max_iters = int(cfg.max_iters)
    min_ns = int(float(cfg.min_duration_s) * 1e9)
    if min_iters < 1 or max_iters < min_iters:
        raise ConfigError(f"need 1 <= min_iters <= max_iters; got {min_iters}, {max_iters}")

    events = _use_cuda_events(device)
    report = _Reporter(progress)

    ctx = timing_lock(device) if lock else _null()
    with ctx:
        # bind inside the lock: it may build a TensorRT engine or capture a CUDA graph, GPU work
        # that must not overlap another process's timed loop
        session.bind(feeds)
        session.synchronize()
        # warm-up
        start = time.perf_counter_ns()
        i = 0
        while i < warmup_iters or time.perf_counter_ns() - start < warmup_ns:
            session.run_bound()
            session.synchronize()
            i += 1
            now = time.perf_counter_ns()
            frac = min(i / warmup_iters if warmup_iters else 1.0, (now - start) / warmup_ns if warmup_ns else 1.0)
            report("warming up", frac, now)

        # timed iterations
        started_at = _now_iso()
        energy, energy_note = None, ""
        if meter is not None:
            try:
                meter.start()
            except MeasurementError as exc:
                meter.abort()
                meter, energy_note = None, str(exc)
        t_begin = time.perf_counter_ns()
        try:
            samples, timer = _timed_loop(session, events, min_iters, max_iters, min_ns, t_begin, report,
                                         progress is not None)
        except BaseException:
            if meter is not None:
                meter.abort()
            raise
        total_s = (time.perf_counter_ns() - t_begin) / 1e9
        finished_at = _now_iso()
        if meter is not None:
            energy, energy_note = _read_meter(meter)
    report("done", 1.0, time.perf_counter_ns(), force=True)
    stats = summarize(samples, total_s, started_at, finished_at, timer)
    stats.energy, stats.energy_note = energy, energy_note
    return stats


def _read_meter(meter):
    """(reading, note) of the interval the meter is in; a failed reading gives (None, why)."""
    try:
        return meter.stop(), ""
    except MeasurementError as exc:
        meter.abort()
        return None, str(exc)


def _timed_loop(session, events: bool, min_iters: int, max_iters: int, min_ns: int, t_begin: int,
                report: "_Reporter", reporting: bool) -> tuple[list[float], str]:
    """Per-iteration latencies (ms) and the timer's name (see the module docstring)."""
    if events:
        import torch

        pairs = []
        while len(pairs) < max_iters:
            t_now = time.perf_counter_ns()
            if len(pairs) >= min_iters and t_now - t_begin >= min_ns:
                break
            ev0 = torch.cuda.Event(enable_timing=True)
            ev1 = torch.cuda.Event(enable_timing=True)
            ev0.record()
            session.run_bound()
            ev1.record()
            session.synchronize()
            ev1.synchronize()
            pairs.append((ev0, ev1))
            report("timing", _fraction(len(pairs), min_iters, t_now - t_begin, min_ns), t_now)
        return [float(a.elapsed_time(b)) for a, b in pairs], "cuda_events"
    samples: list[float] = []
    perf = time.perf_counter_ns
    run = session.run_bound
    sync = session.synchronize
    while len(samples) < max_iters:
        t0 = perf()
        if len(samples) >= min_iters and t0 - t_begin >= min_ns:
            break
        run()
        sync()
        t1 = perf()
        samples.append((t1 - t0) / 1e6)
        if reporting:
            report("timing", _fraction(len(samples), min_iters, t1 - t_begin, min_ns), t1)
    return samples, "perf_counter_ns"


def timing_lock(device: str):
    """The lock a timed loop on ``device`` holds (:func:`device_lock`; every ``cuda:N`` shares ``cuda``)."""
    return device_lock(device.split(":")[0] if device.startswith("cuda") else device)


def _fraction(n: int, min_iters: int, elapsed_ns: int, min_ns: int) -> float:
    by_count = n / min_iters if min_iters else 1.0
    by_time = elapsed_ns / min_ns if min_ns else 1.0
    return min(by_count, by_time)


@contextmanager
def _null():
    yield None

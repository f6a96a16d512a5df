"""Is a latency measurement trustworthy? Noise shown, not hidden.

A timed run is **unstable** when any of these holds (thresholds in :class:`Thresholds`, named so
the UI and the docs can quote them):

- ``cv > max_cv``: the iterations spread widely (std / mean), so the mean and the throughput
  (batch / mean) carry other work's time;
- ``p99 / p50 > max_p99_over_p50``: a heavy tail of slow iterations;
- ``min / p50 < min_min_over_p50``: the fastest iterations were much faster than the median,
  so the median itself was slowed down (the machine was doing something else);
- other processes used CPU during the run: ``other_cpu_cores > max_other_cpu_cores``, with
  ``other_cpu_cores`` = (CPU time of every process - CPU time of the measuring process) / wall
  time, sampled around the timed loop by :class:`LoadProbe` (psutil), and the 1-minute load
  average recorded beside it. The threshold scales with the cores the run leaves free:
  ``max(0.5, cores - threads used)``.

:func:`measure_until_stable` times again, up to ``Thresholds.max_attempts`` in all, while a run
is unstable; it keeps the attempt with the fewest failed checks (then the lowest CV) and records
every attempt, so a row that stays unstable says so with its reasons.

The defaults are chosen so that a quiet machine does not flag ordinary runs: ``max_cv`` is 1.0,
not lower, because a handful of preempted iterations among thousands of sub-millisecond ones
(a CI virtual machine's usual hiccups) push the CV past 0.5 without moving the median; noise that
moves the median shows as ``min / p50``, a heavy tail as ``p99 / p50``, and other work on the
machine as ``other_cpu_cores``, which no distribution check can see when it slows every
iteration alike.

The record stored on a row (``RunResult.stability``) is :meth:`Stability.to_dict`:
``{unstable, reasons, cv, p99_over_p50, min_over_p50, other_cpu_cores, loadavg_1m, cores,
attempts, attempts_p50_ms, attempts_cv, attempts_reasons, thresholds}`` (``attempts_reasons``: each
attempt's failed checks, in order).
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from ..errors import ConfigError


@dataclass(frozen=True)
class Thresholds:
    """Limits beyond which a timed run is unstable, and how many attempts a run gets."""

    max_cv: float = 1.0
    max_p99_over_p50: float = 4.0
    min_min_over_p50: float = 0.5
    min_other_cpu_cores: float = 0.5  # the smallest allowance for other processes' CPU use
    max_attempts: int = 3

    def __post_init__(self):
        if self.max_cv <= 0 or self.max_p99_over_p50 <= 1 or not 0 < self.min_min_over_p50 <= 1:
            raise ConfigError("stability thresholds need max_cv > 0, max_p99_over_p50 > 1 and 0 < min_min_over_p50 <= 1")
        if int(self.max_attempts) < 1:
            raise ConfigError(f"max_attempts must be >= 1; got {self.max_attempts}")

    def max_other_cpu_cores(self, cores: int | None, threads: int | None) -> float:
        """Other processes' CPU use (in cores) allowed beside a run using ``threads`` of ``cores``."""
        if not cores:
            return self.min_other_cpu_cores
        used = cores if not threads or threads <= 0 else min(int(threads), int(cores))
        return max(self.min_other_cpu_cores, float(cores - used))


DEFAULT_THRESHOLDS = Thresholds()


@dataclass
class LoadSample:
    """CPU use seen over one interval: by every process, by the measuring process, by the others."""

    wall_s: float
    cores: int | None
    busy_cores: float | None  # all processes, in cores (1.0 = one core busy the whole interval)
    own_cores: float | None  # this process (all its threads)
    loadavg_1m: float | None

    @property
    def other_cores(self) -> float | None:
        if self.busy_cores is None or self.own_cores is None:
            return None
        return max(0.0, self.busy_cores - self.own_cores)


class LoadProbe:
    """Samples CPU use around a block (``with LoadProbe() as probe: ...``; then ``probe.sample``).

    Uses ``psutil.cpu_times()`` (all processes) and ``psutil.Process().cpu_times()`` (this one, all
    threads); where psutil cannot read them the values are None and only the load average is kept.
    """

    def __init__(self):
        self.sample: LoadSample | None = None
        self._start: tuple | None = None

    @staticmethod
    def _read() -> tuple[float, float | None, float | None]:
        try:
            import psutil

            sys_t = psutil.cpu_times()
            busy = sum(getattr(sys_t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
            proc = psutil.Process().cpu_times()
            return time.perf_counter(), float(busy), float(proc.user + proc.system)
        except (ImportError, OSError, AttributeError):
            return time.perf_counter(), None, None

    def __enter__(self) -> "LoadProbe":
        self._start = self._read()
        return self

    def __exit__(self, *exc) -> None:
        t1, busy1, own1 = self._read()
        t0, busy0, own0 = self._start
        wall = max(t1 - t0, 1e-9)
        busy = None if busy0 is None or busy1 is None else (busy1 - busy0) / wall
        own = None if own0 is None or own1 is None else (own1 - own0) / wall
        try:
            load = os.getloadavg()[0]
        except (OSError, AttributeError):
            load = None
        self.sample = LoadSample(wall_s=wall, cores=os.cpu_count(), busy_cores=busy, own_cores=own, loadavg_1m=load)


def _stat(stats: Any, key: str) -> float | None:
    """``p50``/``p99``/``min``/``cv``/``iterations`` from a LatencyStats or a ``latency_ms`` dict."""
    if isinstance(stats, Mapping):
        value = stats.get(key)
    else:
        value = getattr(stats, key if key in ("cv", "iterations") else f"{key}_ms", None)
    return None if value is None else float(value)


@dataclass
class Stability:
    """The verdict on one timed run (or the kept attempt of several)."""

    unstable: bool
    reasons: list[str] = field(default_factory=list)
    cv: float | None = None
    p99_over_p50: float | None = None
    min_over_p50: float | None = None
    other_cpu_cores: float | None = None
    loadavg_1m: float | None = None
    cores: int | None = None
    attempts: int = 1
    attempts_p50_ms: list[float] = field(default_factory=list)
    attempts_cv: list[float] = field(default_factory=list)
    attempts_reasons: list[list[str]] = field(default_factory=list)  # each attempt's failed checks
    thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """One line for tables and hovers ('' when stable)."""
        return "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess(stats: Any, load: LoadSample | None = None, thresholds: Thresholds = DEFAULT_THRESHOLDS,
           threads: int | None = None) -> Stability:
    """Check one timed run (``LatencyStats`` or a row's ``latency_ms`` dict) against ``thresholds``."""
    p50, p99, lo, cv = (_stat(stats, k) for k in ("p50", "p99", "min", "cv"))
    reasons = []
    p99_ratio = p99 / p50 if p50 and p99 is not None else None
    min_ratio = lo / p50 if p50 and lo is not None else None
    if cv is not None and cv > thresholds.max_cv:
        reasons.append(f"CV {cv:.2f} > {thresholds.max_cv:g}")
    if p99_ratio is not None and p99_ratio > thresholds.max_p99_over_p50:
        reasons.append(f"p99/p50 {p99_ratio:.1f} > {thresholds.max_p99_over_p50:g}")
    if min_ratio is not None and min_ratio < thresholds.min_min_over_p50:
        reasons.append(f"min/p50 {min_ratio:.2f} < {thresholds.min_min_over_p50:g} (the median was slowed down)")
    other = load.other_cores if load is not None else None
    if other is not None:
        allowed = thresholds.max_other_cpu_cores(load.cores, threads)
        if other > allowed:
            reasons.append(f"other processes used {other:.1f} CPU cores during the run (> {allowed:g})")
    return Stability(
        unstable=bool(reasons), reasons=reasons, cv=cv, p99_over_p50=p99_ratio, min_over_p50=min_ratio,
        other_cpu_cores=other, loadavg_1m=None if load is None else load.loadavg_1m,
        cores=None if load is None else load.cores,
        attempts_p50_ms=[p50] if p50 is not None else [], attempts_cv=[cv] if cv is not None else [],
        attempts_reasons=[list(reasons)],
        thresholds=asdict(thresholds),
    )


def should_remeasure(stability: Stability, attempt: int, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> bool:
    """True while the run is unstable and fewer than ``max_attempts`` attempts were made (``attempt`` counts from 1)."""
    return bool(stability.unstable and attempt < int(thresholds.max_attempts))


def measure_until_stable(measure: Callable[[], Any], thresholds: Thresholds = DEFAULT_THRESHOLDS,
                         threads: int | None = None,
                         on_retry: Callable[[int, Stability], None] | None = None) -> tuple[Any, Stability]:
    """Run ``measure()`` (returns ``LatencyStats``) under a :class:`LoadProbe`; while the result is
    unstable and attempts are left, run it again. Returns the kept attempt's stats and its
    :class:`Stability`, whose ``attempts*`` fields list every attempt. ``on_retry(attempt, verdict)``
    is called before each new attempt (for progress messages)."""
    tried: list[tuple[Any, Stability]] = []
    attempt = 0
    while True:
        attempt += 1
        with LoadProbe() as probe:
            stats = measure()
        verdict = assess(stats, probe.sample, thresholds, threads)
        tried.append((stats, verdict))
        if not should_remeasure(verdict, attempt, thresholds):
            break
        if on_retry is not None:
            on_retry(attempt, verdict)
    stats, kept = min(tried, key=lambda sv: (len(sv[1].reasons), sv[1].cv if sv[1].cv is not None else 0.0))
    kept.attempts = len(tried)
    kept.attempts_p50_ms = [p for _, v in tried for p in v.attempts_p50_ms[:1]]
    kept.attempts_cv = [c for _, v in tried for c in v.attempts_cv[:1]]
    kept.attempts_reasons = [list(v.reasons) for _, v in tried]
    return stats, kept


def machine_busy(interval_s: float = 0.5, thresholds: Thresholds = DEFAULT_THRESHOLDS) -> tuple[bool, str]:
    """(busy, one line) for the whole machine: CPU use of every process over ``interval_s`` seconds
    (this process included, since it is idle while it samples)."""
    with LoadProbe() as probe:
        time.sleep(float(interval_s))
    sample = probe.sample
    if sample is None or sample.busy_cores is None:
        load = sample.loadavg_1m if sample else None
        return False, ("CPU use unknown" + (f"; load average {load:.2f}" if load is not None else ""))
    allowed = thresholds.min_other_cpu_cores
    busy = sample.busy_cores > allowed
    text = (f"{sample.busy_cores:.1f} of {sample.cores} CPU cores busy"
            + (f", 1-minute load average {sample.loadavg_1m:.2f}" if sample.loadavg_1m is not None else ""))
    return busy, text


__all__ = ["Thresholds", "DEFAULT_THRESHOLDS", "LoadSample", "LoadProbe", "Stability", "assess",
           "should_remeasure", "measure_until_stable", "machine_busy"]

"""What a sweep adds to explain its numbers: this CPU's peaks in every row's environment (measured
once per machine and cached, :func:`benchmark.measure.roofline.device_peaks`), and, once every row
is in, each row's achieved GMAC/s, fraction of the peak and measured explanations
(:func:`benchmark.explain.explain_results`)."""
from __future__ import annotations

from typing import Callable

from ..errors import BenchmarkError


def sweep_peaks(device: str, threads: int, skip: bool, step: Callable[[str], None]) -> tuple[dict | None, str | None]:
    """(this CPU's peaks record, a note when they are missing) for a job's rows. The peaks are CPU
    GEMM peaks: measured for ``cpu`` sweeps only, from the cache after the first time (a few seconds,
    holding the CPU lock, never inside a timed loop)."""
    from ..measure.environment import peaks_record
    from ..measure.roofline import device_peaks

    if skip or device != "cpu":
        return None, None
    step("reading this CPU's peaks (measured once per machine, then cached)")
    try:
        return peaks_record(device_peaks(int(threads))), None
    except BenchmarkError as exc:
        return None, f"this CPU's peaks could not be measured ({exc}): rows carry no fraction of peak"


def explain_sweep(store, sweep_id: int | None) -> int:
    """Fill the speedup, roofline and explanation fields of a sweep's ok rows and store the rows that
    changed; returns how many."""
    from ..explain import explain_results

    if sweep_id is None:
        return 0
    changed = explain_results(store.get_results(sweep_id))
    for row in changed:
        store.add_result(row)
    return len(changed)


__all__ = ["explain_sweep", "sweep_peaks"]

"""GPU energy over a timed loop (benchmark.measure.energy) and its wiring into latency and rows.

The arithmetic is checked with counters whose values are known; the NVML path itself needs an
NVIDIA GPU (``gpu`` marker).
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from benchmark.config import RunConfig
from benchmark.errors import MeasurementError
from benchmark.measure.energy import MIN_RELIABLE_S, EnergyMeter, nvml_meter, time_weighted_mean
from benchmark.measure.latency import measure_latency


def _sequence(values):
    it = iter(values)
    return lambda: next(it)


def test_energy_counter_difference_over_the_interval():
    meter = EnergyMeter(read_energy_mj=_sequence([1_000.0, 6_000.0]), clock=_sequence([10.0, 12.0]), gpu="test")
    meter.start()
    assert meter.running
    reading = meter.stop()
    assert not meter.running
    assert reading.method == "energy_counter"
    assert reading.interval_s == pytest.approx(2.0)
    assert reading.energy_j == pytest.approx(5.0)
    assert reading.mean_power_w == pytest.approx(2.5)
    assert reading.note == ""
    row = reading.for_run(iterations=10, batch_size=4)
    assert row["joules_per_batch"] == pytest.approx(0.5)
    assert row["joules_per_sample"] == pytest.approx(0.125)
    assert row["gpu"] == "test"


def test_short_interval_is_flagged_and_a_backwards_counter_is_an_error():
    meter = EnergyMeter(read_energy_mj=_sequence([0.0, 300.0]), clock=_sequence([0.0, MIN_RELIABLE_S / 4]))
    meter.start()
    assert "coarse" in meter.stop().note
    meter = EnergyMeter(read_energy_mj=_sequence([5_000.0, 1_000.0]), clock=_sequence([0.0, 2.0]))
    meter.start()
    with pytest.raises(MeasurementError, match="went backwards"):
        meter.stop()


def test_time_weighted_mean_by_hand():
    # 10 W for 1 s ramping to 20 W (area 15), then 20 W for 2 s (area 40): 55 J over 3 s
    assert time_weighted_mean([(0.0, 10.0), (1.0, 20.0), (3.0, 20.0)]) == pytest.approx(55.0 / 3.0)
    assert time_weighted_mean([(5.0, 42.0)]) == 42.0
    with pytest.raises(MeasurementError):
        time_weighted_mean([])


def test_power_sampling_thread_reads_during_the_interval():
    calls = []

    def power_mw():
        calls.append(time.perf_counter())
        return 150_000.0  # 150 W

    meter = EnergyMeter(read_power_mw=power_mw, sample_every_s=0.01)
    meter.start()
    time.sleep(0.2)
    reading = meter.stop()
    assert reading.method == "power_sampling"
    assert reading.power_samples >= 5  # start + thread samples + stop
    assert reading.mean_power_w == pytest.approx(150.0)
    assert reading.energy_j == pytest.approx(150.0 * reading.interval_s)
    assert 0.15 < reading.interval_s < 2.0
    n = len(calls)
    time.sleep(0.05)
    assert len(calls) == n  # the thread stopped with the interval


def test_a_failing_power_reading_is_an_error_not_a_number():
    state = {"n": 0}

    def power_mw():
        state["n"] += 1
        if state["n"] > 2:
            raise RuntimeError("NVML went away")
        return 100_000.0

    meter = EnergyMeter(read_power_mw=power_mw, sample_every_s=0.005)
    meter.start()
    time.sleep(0.05)
    with pytest.raises(MeasurementError, match="NVML went away"):
        meter.stop()


def test_meter_needs_a_reader_and_start_before_stop():
    with pytest.raises(MeasurementError):
        EnergyMeter()
    meter = EnergyMeter(read_energy_mj=lambda: 0.0)
    with pytest.raises(MeasurementError, match="before start"):
        meter.stop()


class _SleepSession:
    """A CPU session whose run takes about 2 ms (enough to see the meter's interval match the loop)."""

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def bind(self, feeds):
        self.feeds = feeds

    def run_bound(self):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise MeasurementError("boom")
        time.sleep(0.002)

    def synchronize(self):
        pass


def _cfg(**kw):
    base = dict(backend="pytorch", warmup_iters=2, warmup_s=0.0, min_iters=20, min_duration_s=0.1, max_iters=1000)
    base.update(kw)
    return RunConfig(**base)


def test_measure_latency_reads_the_meter_over_the_timed_loop_only():
    session = _SleepSession()
    meter = EnergyMeter(read_power_mw=lambda: 80_000.0, sample_every_s=0.01)
    # 0.4 s of warm-up, 0.1 s timed: a meter that also saw the warm-up would report >= 0.5 s
    stats = measure_latency(session, {"x": np.zeros((1, 2), np.float32)}, _cfg(warmup_s=0.4), "cpu", meter=meter,
                            lock=False)
    assert stats.energy is not None and stats.energy_note == ""
    assert stats.energy.interval_s < 0.4
    assert stats.energy.interval_s == pytest.approx(stats.total_s, rel=0.2, abs=0.01)
    assert stats.energy.mean_power_w == pytest.approx(80.0)
    assert stats.to_dict(samples=False)["energy"]["method"] == "power_sampling"
    assert not meter.running
    plain = measure_latency(_SleepSession(), {"x": np.zeros((1, 2), np.float32)}, _cfg(), "cpu", lock=False)
    assert plain.energy is None


def test_a_failed_timed_loop_leaves_the_meter_ready_for_the_next_run():
    meter = EnergyMeter(read_power_mw=lambda: 50_000.0, sample_every_s=0.01)
    with pytest.raises(MeasurementError, match="boom"):
        measure_latency(_SleepSession(fail_after=5), {"x": np.zeros((1, 2), np.float32)}, _cfg(), "cpu",
                        meter=meter, lock=False)
    assert not meter.running
    stats = measure_latency(_SleepSession(), {"x": np.zeros((1, 2), np.float32)}, _cfg(), "cpu", meter=meter,
                            lock=False)
    assert stats.energy.mean_power_w == pytest.approx(50.0)


def test_nvml_errors_become_one_line_notes_and_the_latency_stays():
    """A reader that raises what NVML raises (not a MeasurementError) is wrapped the way nvml_meter wraps it."""
    from benchmark.measure.energy import _checked

    class NVMLError(Exception):
        pass

    def broken():
        raise NVMLError("Unknown Error")

    with pytest.raises(MeasurementError, match="reading the GPU's energy/power from NVML failed: Unknown Error"):
        _checked(broken)()
    assert _checked(lambda: 7)() == 7.0
    # failing at the start of the interval
    stats = measure_latency(_SleepSession(), {"x": np.zeros((1, 2), np.float32)}, _cfg(), "cpu",
                            meter=EnergyMeter(read_energy_mj=_checked(broken)), lock=False)
    assert stats.iterations >= 20 and stats.energy is None and "Unknown Error" in stats.energy_note
    # failing at the end of the interval
    calls = iter([1.0])
    late = _checked(lambda: next(calls))  # the second read fails
    meter = EnergyMeter(read_energy_mj=lambda: late())
    stats = measure_latency(_SleepSession(), {"x": np.zeros((1, 2), np.float32)}, _cfg(), "cpu", meter=meter,
                            lock=False)
    assert stats.energy is None and "NVML failed" in stats.energy_note and not meter.running


def test_a_failed_reading_keeps_the_latency_and_says_why():
    meter = EnergyMeter(read_energy_mj=_sequence([9_000.0, 1_000.0]))
    stats = measure_latency(_SleepSession(), {"x": np.zeros((1, 2), np.float32)}, _cfg(), "cpu", meter=meter,
                            lock=False)
    assert stats.iterations >= 20 and stats.energy is None
    assert "went backwards" in stats.energy_note


def test_nvml_meter_says_why_not_without_a_gpu():
    meter, reason = nvml_meter("cpu")
    assert meter is None and "CUDA devices only" in reason
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: the no-GPU answer cannot be checked here")
    import importlib.util

    meter, reason = nvml_meter("cuda")
    assert meter is None
    if importlib.util.find_spec("pynvml") is None:
        assert reason == "GPU energy not measured: nvidia-ml-py is not installed (pip install 'slimbench[gpu]')"
    else:  # the real pynvml on a machine without an NVIDIA driver
        assert reason.startswith("GPU energy not measured: NVML did not start (")


@pytest.mark.gpu
def test_nvml_reads_board_energy_during_gpu_work():
    pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed (pip install 'slimbench[gpu]')")
    import torch

    meter, reason = nvml_meter("cuda")
    assert meter is not None, reason
    a = torch.randn(4096, 4096, device="cuda")
    try:
        meter.start()
        t_end = time.perf_counter() + 1.5
        while time.perf_counter() < t_end:
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
        reading = meter.stop()
    finally:
        meter.close()
    assert reading.interval_s >= 1.5
    assert reading.mean_power_w > 10.0  # a busy datacenter GPU draws far more than 10 W
    assert reading.energy_j == pytest.approx(reading.mean_power_w * reading.interval_s, rel=1e-6)

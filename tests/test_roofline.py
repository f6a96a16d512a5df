"""Device peaks: small GEMM / bandwidth microbenchmarks, the cache, and the achieved-fraction helpers."""
from __future__ import annotations

import json

import pytest

from benchmark.errors import ConfigError
from benchmark.measure import roofline
from benchmark.measure.roofline import (
    Peaks, achieved_gmacs_per_s, cache_path, device_peaks, measure_peaks, peak_fraction, peak_precision,
)

SMALL = {"gemm_n": 64, "memory_bytes": 1 << 20, "seconds_per_kernel": 0.02}


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch):
    """These tests check the cache itself: each uses its data folder's, not the session's shared one."""
    monkeypatch.delenv(roofline.CACHE_ENV, raising=False)


@pytest.fixture(scope="module")
def small_peaks():
    return measure_peaks(1, **SMALL)


def test_measured_peaks_are_positive_for_every_precision_that_ran(small_peaks):
    assert small_peaks.threads == 1
    for precision in ("fp32", "int8"):
        kernels = small_peaks.gmacs_per_s[precision]
        assert kernels and all(v > 0 for v in kernels.values())
    assert set(small_peaks.gmacs_per_s["fp32"]) == {"torch.matmul", "onnxruntime MatMul"}
    assert "onnxruntime MatMulInteger U8S8" in small_peaks.gmacs_per_s["int8"]
    assert small_peaks.gmacs_per_s.get("bf16", {}).get("torch.matmul", 0) > 0
    assert all(v > 0 for v in small_peaks.memory_gb_per_s.values())
    assert set(small_peaks.memory_gb_per_s) == {"numpy copy", "torch add"}
    assert small_peaks.peak("int8-static") == max(small_peaks.gmacs_per_s["int8"].values())
    assert small_peaks.peak_kernel("fp32") in small_peaks.gmacs_per_s["fp32"]
    # a kernel missing here is reported, never silently absent
    measured = {f"{p} {k}" for p, ks in small_peaks.gmacs_per_s.items() for k in ks}
    missing = [n for n in small_peaks.notes if "cannot run here" in n or "not measured" in n]
    assert len(measured) + len(missing) == len(roofline._GEMM_KERNELS)
    assert small_peaks.settings["load_average_1m"] >= 0


def test_peaks_round_trip_through_a_dict(small_peaks):
    d = json.loads(json.dumps(small_peaks.to_dict()))
    again = Peaks.from_dict(d)
    assert again.gmacs_per_s == small_peaks.gmacs_per_s and again.key == small_peaks.key
    assert d["peak_gmacs_per_s"]["fp32"] == small_peaks.peak("fp32")
    assert d["memory_bandwidth_gb_per_s"] == max(small_peaks.memory_gb_per_s.values())


def test_device_peaks_are_cached_per_machine_and_thread_count():
    first = device_peaks(1, **SMALL)
    assert not first.cached and cache_path().is_file()
    second = device_peaks(1, **SMALL)
    assert second.cached and second.key == first.key and second.gmacs_per_s == first.gmacs_per_s
    other = device_peaks(2, **SMALL)
    assert not other.cached and other.key != first.key and other.threads == 2
    stored = json.loads(cache_path().read_text())["entries"]
    assert {first.key, other.key} <= set(stored)
    refreshed = device_peaks(1, refresh=True, **SMALL)
    assert not refreshed.cached and refreshed.key == first.key


def test_a_corrupt_cache_is_measured_again():
    cache_path().write_text("{not json")
    peaks = device_peaks(1, **SMALL)
    assert not peaks.cached
    assert peaks.key in json.loads(cache_path().read_text())["entries"]


def test_the_cache_file_can_live_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv(roofline.CACHE_ENV, str(tmp_path / "sub" / "peaks.json"))
    assert cache_path() == tmp_path / "sub" / "peaks.json"
    peaks = device_peaks(1, **SMALL)
    assert peaks.key in json.loads((tmp_path / "sub" / "peaks.json").read_text())["entries"]


def test_identity_names_what_the_key_depends_on():
    ident = roofline.machine_identity(3)
    assert ident["threads"] == 3
    assert {"cpu_model", "arch", "flags", "torch", "onnxruntime", "numpy"} <= set(ident)
    assert roofline.peaks_key(ident, SMALL) != roofline.peaks_key({**ident, "onnxruntime": "0.0"}, SMALL)


def test_achieved_throughput_and_fraction():
    # 1e9 MACs per sample, batch 4, 20 ms -> 200 GMAC/s
    assert achieved_gmacs_per_s(1e9, 4, 20.0) == pytest.approx(200.0)
    assert achieved_gmacs_per_s(None, 1, 1.0) is None and achieved_gmacs_per_s(10, 1, 0.0) is None
    peaks = Peaks(gmacs_per_s={"fp32": {"a": 100.0, "b": 400.0}, "int8": {"c": 800.0}}, memory_gb_per_s={},
                  threads=1, key="k")
    assert peak_fraction(200.0, peaks, "fp32") == pytest.approx(0.5)
    assert peak_fraction(200.0, peaks, "int8-dynamic") == pytest.approx(0.25)
    assert peak_fraction(200.0, peaks, "bf16") is None and peak_fraction(None, peaks, "fp32") is None


def test_precision_families():
    assert peak_precision("int8-static") == "int8" and peak_precision("mixed") == "int8"
    assert peak_precision("autocast-bf16") == "bf16" and peak_precision("fp16") == "fp16"
    assert peak_precision("int4") is None


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="threads must be >= 0"):
        measure_peaks(-1, **SMALL)
    with pytest.raises(ConfigError, match="gemm_n >= 8"):
        measure_peaks(1, gemm_n=2, memory_bytes=1 << 20, seconds_per_kernel=0.01)

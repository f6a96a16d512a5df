"""A sweep explains its numbers: the ISA and this CPU's peaks in every row's environment, achieved
GMAC/s and fraction of peak on every ok row, measured explanations, and the CLI's 'why' lines."""
from __future__ import annotations

import pytest

from benchmark.config import SweepConfig
from benchmark.measure.environment import collect_environment, peaks_record
from benchmark.measure.roofline import Peaks, peak_precision


def test_environment_carries_the_isa_and_a_compact_peaks_record():
    env = collect_environment(1)
    assert env["isa"]["arch"] and env["isa"]["summary"] and isinstance(env["isa"]["flags"], list)
    assert "peaks" not in env
    peaks = Peaks(gmacs_per_s={"fp32": {"a": 10.0, "b": 12.0}, "int8": {"c": 30.0}}, memory_gb_per_s={"copy": 5.0},
                  threads=1, key="k1", settings={"load_average_1m": 0.5}, measured_at="2026-01-01T00:00:00+00:00")
    env = collect_environment(1, peaks=peaks)
    assert env["peaks"] == {"key": "k1", "peak_gmacs_per_s": {"fp32": 12.0, "int8": 30.0},
                            "gmacs_per_s": {"fp32": {"a": 10.0, "b": 12.0}, "int8": {"c": 30.0}},
                            "memory_bandwidth_gb_per_s": 5.0, "threads": 1, "measured_at": "2026-01-01T00:00:00+00:00",
                            "load_average_1m": 0.5, "notes": []}
    assert collect_environment(1, peaks=env["peaks"])["peaks"] == env["peaks"]
    env["isa"]["flags"].append("changed")  # a fresh copy every time
    assert "changed" not in collect_environment(1)["isa"]["flags"]


@pytest.fixture
def swept(tmp_path):
    """A small sweep (function-scoped: the data folder and peaks cache fixtures must be in place)."""
    from benchmark.store import Store
    from benchmark.sweep import run_sweep

    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", precisions=("fp32", "int8-static"), backends=("onnxruntime",),
                      batch_sizes=(4,), min_duration_s=0.05, min_iters=5, eval_samples=64, threads=1, calib_samples=32)
    sweep_id = run_sweep(cfg, store)
    return store, sweep_id, {r.variant: r for r in store.get_results(sweep_id)}


def test_rows_carry_isa_peaks_roofline_fields_and_explanations_and_the_cli_prints_them(swept, capsys):
    from benchmark.__main__ import main
    from benchmark.measure.roofline import cached_peaks

    store, sweep_id, rows = swept
    fp32, int8 = rows["fp32"], rows["int8-static[minmax]"]
    assert fp32.status == int8.status == "ok", (fp32.error, int8.error)
    peaks = int8.env["peaks"]
    assert peaks == fp32.env["peaks"] and peaks["threads"] == 1
    assert peaks == peaks_record(cached_peaks(1))  # the machine's cached measurement, not a new one per job
    assert int8.env["isa"]["summary"] and int8.env["isa"] == fp32.env["isa"]
    for row in (fp32, int8):
        expected = row.macs * row.batch_size / (row.latency_ms["p50"] * 1e-3) / 1e9
        assert row.achieved_gmacs_per_s == pytest.approx(expected)
        family = peak_precision(row.precision)
        assert row.peak_fraction == pytest.approx(expected / max(peaks["gmacs_per_s"][family].values()))
        assert "roofline" in {e["topic"] for e in row.explanations}
    assert int8.speedup_vs_fp32 == pytest.approx(fp32.latency_ms["p50"] / int8.latency_ms["p50"])
    topics = {e["topic"]: e["text"] for e in int8.explanations}
    assert f"{int8.speedup_vs_fp32:.2f}x FP32 speed" in topics["int8"]
    assert "INT8 format" in topics["int8_format"] and "S8S8" in topics["int8_format"]  # measured on 64 samples
    choice = int8.compression[-1]["details"]["onnx"]["int8_choice"]
    assert choice["mode"] == "measure" and choice["samples"] == 64 and len(choice["candidates"]) >= 2

    assert main(["results", "--db", str(store.path), "--sweep", str(sweep_id)]) == 0
    out = capsys.readouterr().out
    assert "why (measured):" in out and "- this device's peaks (1 thread(s)" in out
    assert "- int8-static[minmax] on onnxruntime, batch 4: int8-static on onnxruntime ran at" in out


def test_skip_peaks_runs_without_them(tmp_path):
    from benchmark.store import Store
    from benchmark.sweep import run_sweep

    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", backends=("onnxruntime",), min_duration_s=0.05, min_iters=3,
                      eval_samples=32, threads=1, skip_peaks=True)
    (row,) = store.get_results(run_sweep(cfg, store))
    assert row.status == "ok" and "peaks" not in row.env and row.env["isa"]["summary"]
    assert row.achieved_gmacs_per_s > 0 and row.peak_fraction is None

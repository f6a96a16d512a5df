"""Dashboard parts that explain the numbers, driven by AppTest against the real engine and store:
runtime settings on Compress & run, the Profile tab of Results, this CPU's ISA and peaks on Home."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from benchmark.config import CompressionConfig
from benchmark.results import RunResult
from benchmark.store import Store

PAGES = Path(__file__).resolve().parents[1] / "app_pages"


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=180)


def test_run_page_runtime_settings_become_runs_named_by_their_setting():
    at = page("run").run()
    assert not at.exception and not at.error
    assert any(i.value.startswith("8 runs: 2 variants x 2 backends x 2 batch sizes;") for i in at.info)
    assert next(s for s in at.selectbox if s.label == "INT8 format").value == "measure"
    levels = next(w for w in at.multiselect if w.label == "ONNX Runtime graph optimization levels")
    levels.set_value(["all", "basic"]).run()
    assert not at.error
    # ONNX Runtime rows run once per level; PyTorch rows do not depend on it
    assert any(i.value.startswith("12 runs: 2 variants x 2 backends x 2 batch sizes, plus 4 runs for the runtime")
               for i in at.info)
    assert at.session_state["run.ort_opt"] == ["all", "basic"]
    next(w for w in at.multiselect if w.label == "ONNX Runtime execution modes").set_value([]).run()
    assert any("choose at least one ONNX Runtime execution mode" in e.value for e in at.error)


def _profile_sweep() -> int:
    store = Store()
    cfg = {"sweep": {"model": "sample:digits-cnn", "precisions": ["fp32"], "backends": ["onnxruntime"],
                     "batch_sizes": [1], "threads": 1, "min_duration_s": 0.1, "min_iters": 5}}
    sid = store.create_sweep("sample:digits-cnn", cfg, status="done", total_runs=1)
    peaks = {"key": "k", "peak_gmacs_per_s": {"fp32": 50.0}, "gmacs_per_s": {"fp32": {"onnxruntime MatMul": 50.0}},
             "memory_bandwidth_gb_per_s": 20.0, "threads": 1, "measured_at": "2026-01-01T00:00:00+00:00",
             "load_average_1m": 0.3, "notes": []}
    store.add_result(RunResult(
        model="digits-cnn", variant="fp32", backend="onnxruntime", batch_size=1, status="ok", sweep_id=sid,
        config=dataclasses.asdict(CompressionConfig()), macs=7_000_000, latency_ms={"p50": 0.2, "mean": 0.2},
        latency_samples_ms=[0.2, 0.21], throughput_sps=5000.0, started_at=time.time(), finished_at=time.time(),
        runtime={"ort_graph_opt_level": "basic", "ort_inter_op_threads": 1, "ort_execution_mode": "sequential"},
        env={"cpu_model": "test cpu", "isa": {"summary": "x86_64 test cpu: AVX2; no VNNI"}, "peaks": peaks}))
    return sid


@pytest.mark.slow
def test_results_profile_tab_profiles_the_chosen_row_in_a_child():
    _profile_sweep()
    at = page("results").run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == 6  # nothing profiled yet
    choice = next(s for s in at.selectbox if s.label == "Variant to profile")
    assert choice.value == "fp32|onnxruntime|1"
    assert any("Instruction set** x86_64 test cpu: AVX2; no VNNI" in m.value for m in at.markdown)
    assert any("GEMM GMAC/s FP32 50.0; memory 20.0 GB/s" in m.value for m in at.markdown)
    # the Sensitivity page's table for this model joins the profile; one for another model does not
    table = [{"layer": "node_conv2d_2", "delta": 1.5}]
    at.session_state["sensitivity"] = (("sample:other", (), None, None, ()), "int8", {"table": table})
    at.button(key="results.profile").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    layers = next(d.value for d in at.dataframe if "layer" in d.value.columns)
    assert "drop alone (points)" not in layers.columns
    at.session_state["sensitivity"] = (("sample:digits-cnn", (), None, None, ()), "int8", {"table": table})
    at.button(key="results.profile").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["End-to-end p50 (timed run)"].endswith(" ms") and metrics["Sum of the per-layer times"].endswith(" ms")
    assert len(at.get("plotly_chart")) == 8
    layers = next(d.value for d in at.dataframe if "layer" in d.value.columns)
    assert {"kernel", "time (%)", "MACs (%)", "achieved GMAC/s", "of peak (%)"} <= set(layers.columns)
    assert layers["MACs (%)"].sum() > 0
    drops = dict(zip(layers["layer"], layers["drop alone (points)"]))
    assert drops["node_conv2d_2"] == 1.5 and sum(d == d for d in drops.values()) == 1  # the other layers: NaN
    # the row's explanations with the profile: 7e6 MACs in 0.2 ms = 35 GMAC/s, 70 % of the 50 GMAC/s peak
    why = next(m.value for m in at.markdown if m.value.startswith("**Why (measured, with this profile)**"))
    assert "35.0 GMAC/s" in why and "70.0 %" in why
    profile = at.session_state["profile_result"][2]
    # the row's runtime settings were used: at level basic Relu is not fused into Conv and there is no
    # NCHWc re-layout (level all runs ReorderOutput and no separate Relu on this model)
    assert profile["runtime"]["ort_graph_opt_level"] == "basic"
    kernels = {k for r in profile["layers"] for k in r.get("kernels") or []}
    assert "Relu" in kernels and not any(k.startswith("Reorder") for k in kernels)


@pytest.mark.slow
def test_home_shows_the_isa_and_measures_the_peaks_on_request(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_ROOFLINE_CACHE", str(tmp_path / "fresh.json"))
    at = page("home").run()
    assert not at.exception
    assert any(m.value.startswith("**Instruction set** ") and "INT8 dot products" in m.value for m in at.markdown)
    assert any("not measured yet" in c.value for c in at.caption)
    at.button(key="home.peaks").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    peaks = next(m.value for m in at.markdown if m.value.startswith("**Peaks**"))
    assert "GEMM GMAC/s FP32" in peaks and "INT8" in peaks and "GB/s" in peaks
    assert (tmp_path / "fresh.json").is_file()
    assert next(b for b in at.button if b.key == "home.peaks").label == "Measure the peaks again"

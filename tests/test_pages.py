"""Dashboard pages driven by streamlit.testing.v1.AppTest against the real engine and store."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from benchmark.results import RunResult
from benchmark.store import Store

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "app_pages"
TIMEOUT = 120


def page(name: str) -> AppTest:
    return AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=TIMEOUT)


def tiny_onnx(path: Path, spatial=(8, 8)) -> Path:
    """Conv(1->4, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3); input x[N,1,H,W].

    MACs per sample at 8x8: conv 4*8*8 outputs x 9 = 2304, gemm 4*3 = 12 -> 2316.
    Params: 36 + 4 + 12 + 3 = 55.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype("float32"), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype("float32"), "b"),
        numpy_helper.from_array(rng.standard_normal((3, 4)).astype("float32"), "fw"),
        numpy_helper.from_array(rng.standard_normal(3).astype("float32"), "fb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, *spatial])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def stored_sweep(model="sample:digits-cnn", rows=None) -> int:
    """A sweep written through the real store: two ok variants on two backends, one failed row."""
    store = Store()
    cfg = {"sweep": {"model": model, "precisions": ["fp32", "int8-static"], "prune_ratios": [0.0],
                     "backends": ["pytorch", "onnxruntime"], "batch_sizes": [1]}}
    sid = store.create_sweep(model, cfg, status="done", total_runs=5)
    rows = rows or [
        ("fp32", "pytorch", "fp32", 1.0, 0.95, "ok", None),
        ("fp32", "onnxruntime", "fp32", 0.5, 0.95, "ok", None),
        ("int8-static[minmax]", "pytorch", "int8-static", 2.0, 0.94, "ok", None),
        ("int8-static[minmax]", "onnxruntime", "int8-static", 0.2, 0.94, "ok", None),
        ("bf16", "onnxruntime", "bf16", None, None, "skipped", "bf16 is not supported by onnxruntime on cpu"),
    ]
    for variant, backend, precision, p50, acc, status, error in rows:
        store.add_result(RunResult(
            model=model, variant=variant, backend=backend, batch_size=1, precision=precision, status=status,
            error=error, sweep_id=sid, macs=7_000_000, flops=14_000_000, size_bytes=700_000, params=168_170,
            latency_ms={"mean": p50, "p50": p50, "p95": p50, "iterations": 20} if p50 else None,
            latency_samples_ms=[p50, p50 * 1.1, p50 * 0.9] if p50 else None,
            throughput_sps=1000.0 / p50 if p50 else None, accuracy={"top1": acc, "n": 360} if acc else None,
            env={"cpu_model": "test cpu", "cores": 2}, started_at=time.time(), finished_at=time.time()))
    return sid


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_app_navigation_renders_home():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT).run()
    assert not at.exception
    assert texts(at.title) == ["Slimbench"]
    at.switch_page(str(PAGES / "results.py")).run()
    assert not at.exception
    assert "Results" in texts(at.title)


def test_home_shows_backends_samples_and_demo_button():
    at = page("home").run()
    assert not at.exception
    assert any(b.label == "Try the demo" for b in at.button)
    samples = at.dataframe[0].value
    assert "sample:digits-cnn" in list(samples["sample"])
    backends = at.dataframe[1].value
    ort = backends[(backends["backend"] == "onnxruntime") & (backends["device"] == "cpu")]
    assert list(ort["available"]) == ["yes"]
    # every unavailable combination says why
    assert (backends[backends["available"] == "no"]["why not"].str.len() > 0).all()


@pytest.mark.slow
def test_home_demo_button_starts_the_demo_sweep():
    at = page("home").run()
    next(b for b in at.button if b.label == "Try the demo").click().run()
    assert not at.exception and not at.error
    sid = at.session_state["demo_sweep_id"]
    store = Store()
    rec = store.get_sweep(sid)
    cfg = rec.config["sweep"]
    assert rec.model == "sample:digits-cnn"
    assert cfg["precisions"] == ["fp32", "int8-static"] and cfg["batch_sizes"] == [1, 8]
    assert any("Demo sweep" in i.value for i in at.info) or any("Demo sweep" in s.value for s in at.success)
    deadline = time.time() + 60
    while store.get_sweep(sid).status == "pending" and time.time() < deadline:
        time.sleep(0.2)  # cancel once its runner has started (a cancel while pending is another test's business)
    store.request_cancel(sid)
    deadline = time.time() + 90
    while store.get_sweep(sid).active and time.time() < deadline:
        time.sleep(0.5)
    assert store.get_sweep(sid).status == "cancelled"


def test_model_page_shows_counts_for_sample():
    at = page("model").run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == "168.170 k"
    assert metrics["MACs (multiply-adds)"].endswith("M")
    macs = float(metrics["MACs (multiply-adds)"].split()[0])
    flops = float(metrics["FLOPs = 2 x MACs"].split()[0])
    assert flops == pytest.approx(2 * macs, rel=1e-3)
    assert at.session_state["model"]["source"] == "sample:digits-cnn"
    assert at.session_state["model"]["uploaded"] is False


def test_model_page_bad_upload_shows_one_line_error_and_keeps_working():
    at = page("model").run()
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].upload("broken.onnx", b"definitely not an onnx model").run()
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    assert "broken.onnx" in message and "\n" not in message
    assert "export the model again" in message  # says what to do next
    assert at.session_state["model"]["source"] == "sample:digits-cnn"  # the broken file is not handed on
    # the page still works: switch back to a sample
    at.radio[0].set_value("Built-in sample").run()
    assert not at.error and at.session_state["model"]["source"].startswith("sample:")


def test_model_page_uploaded_onnx_counts_and_session(tmp_path):
    data = tiny_onnx(tmp_path / "tiny.onnx").read_bytes()
    at = page("model").run()
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].upload("tiny.onnx", data).run()
    assert not at.exception and not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Parameters"] == "55"
    assert metrics["MACs (multiply-adds)"] == "2.316 k"
    assert metrics["FLOPs = 2 x MACs"] == "4.632 k"
    chosen = at.session_state["model"]
    assert chosen["uploaded"] and Path(chosen["source"]).is_file() and chosen["name"] == "tiny.onnx"


def test_model_page_dynamic_dims_are_editable(tmp_path):
    data = tiny_onnx(tmp_path / "dyn.onnx", spatial=("H", "W")).read_bytes()
    at = page("model").run()
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].upload("dyn.onnx", data).run()
    assert not at.exception
    assert any("not counted" in w.value for w in at.warning)
    shape = next(t for t in at.text_input if t.label.startswith("x "))
    assert shape.value == "Nx1xHxW"
    shape.set_value("Nx1x8x8").run()
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["MACs (multiply-adds)"] == "2.316 k"
    assert at.session_state["model"]["inputs"] == ["x:Nx1x8x8:float32"]


class _PickledCode:
    """Pickles as ``eval(code)``: unpickling the file runs ``code`` in that process."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def test_model_page_trusted_pickle_runs_only_outside_the_app_process(tmp_path):
    import io

    import torch

    marker = tmp_path / "marker.txt"
    buf = io.BytesIO()
    torch.save(_PickledCode(f"(open({str(marker)!r}, 'w').write(str(__import__('os').getpid())), "
                            "__import__('torch').nn.Linear(4, 2))[1]"), buf)
    at = page("model").run()
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].upload("whole.pt", buf.getvalue()).run()
    assert not at.exception and len(at.error) == 1
    assert "full pickle" in at.error[0].value and "Tick 'I trust this file'" in at.error[0].value
    assert not marker.exists()
    next(c for c in at.checkbox if c.label.startswith("I trust this file")).check().run()
    assert not at.exception and not at.error
    assert int(marker.read_text()) != os.getpid()  # unpickled in a child, never in the app process
    assert at.session_state["model"]["trust_pickle"] is True


def test_run_page_plan_and_bad_choice():
    at = page("run").run()
    assert not at.exception and not at.error
    labels = [w.label for w in at.multiselect]
    assert {"Precisions", "Backends", "Batch sizes (samples)", "Prune ratios (0 = unpruned)"} <= set(labels)
    assert any(b.label == "Run sweep" for b in at.button)
    assert any(i.value.startswith("8 runs: 2 variants x 2 backends x 2 batch sizes") for i in at.info)
    device = next(r for r in at.radio if r.label == "Device")
    if device.options == ["cpu"]:
        assert any("CUDA is not offered" in c.value for c in at.caption)
    assert not any(c.label.startswith("CUDA graphs") for c in at.checkbox)  # a GPU-only setting, hidden on cpu
    assert any("GPU-only settings" in c.value for c in at.caption)
    next(w for w in at.multiselect if w.label == "Batch sizes (samples)").set_value(["1"]).run()
    assert any(i.value.startswith("4 runs:") for i in at.info)
    next(w for w in at.multiselect if w.label == "Precisions").set_value([]).run()
    assert not at.exception
    assert any("choose at least one precision" in e.value for e in at.error)
    assert not any(b.label == "Run sweep" for b in at.button)


@pytest.mark.slow
def test_run_page_runs_a_tiny_sweep_to_the_store():
    at = page("run").run()
    next(w for w in at.multiselect if w.label == "Precisions").set_value(["fp32"])
    next(w for w in at.multiselect if w.label == "Backends").set_value(["onnxruntime"])
    next(w for w in at.multiselect if w.label == "Batch sizes (samples)").set_value(["1"])
    next(n for n in at.number_input if n.label.startswith("Timed seconds")).set_value(0.05)
    next(n for n in at.number_input if n.label.startswith("Timed iterations")).set_value(5)
    next(w for w in at.selectbox if w.label == "First output is").set_value("embeddings")  # scored by cosine
    next(n for n in at.number_input if n.label.startswith("Timings per run")).set_value(1)
    at.run()
    next(b for b in at.button if b.label == "Run sweep").click().run()
    assert not at.exception and not at.error
    sid = at.session_state["my_sweeps"][-1]
    store = Store()
    deadline = time.time() + 240
    while store.get_sweep(sid).active and time.time() < deadline:
        time.sleep(0.5)
    rec = store.get_sweep(sid)
    assert rec.status == "done", rec.error
    rows = store.get_results(sid)
    assert [(r.variant, r.backend, r.batch_size, r.status) for r in rows] == [("fp32", "onnxruntime", 1, "ok")]
    assert rows[0].quality["metric"] == "cosine" and rows[0].stability["attempts"] == 1
    assert (rec.config["sweep"]["output_kind"], rec.config["sweep"]["timing_attempts"]) == ("embeddings", 1)
    at.run()
    assert any("No sweep is running" in c.value for c in at.caption)


def test_results_page_renders_a_stored_sweep():
    sid = stored_sweep()
    at = page("results").run()
    assert not at.exception and not at.error
    assert at.session_state["results_sweep_id"] == sid
    table = at.dataframe[0].value
    assert len(table) == 4 and "p50 latency (ms)" in table.columns and "top-1 accuracy (%)" in table.columns
    failed = at.dataframe[1].value
    assert list(failed["reason"]) == ["bf16 is not supported by onnxruntime on cpu"]
    assert len(at.get("plotly_chart")) == 6
    assert any("4 runs ok, 1 failed" in c.value for c in at.caption)
    at.number_input[0].set_value(0.6).run()  # a latency budget
    assert not at.exception


def test_results_page_failed_sweep_without_rows():
    store = Store()
    sid = store.create_sweep("/nowhere/model.onnx", {"sweep": {"precisions": ["fp32"], "backends": ["onnxruntime"]}})
    store.update_sweep_status(sid, "failed", error="model.onnx: no such file")
    at = page("results").run()
    assert not at.exception
    assert [e.value for e in at.error] == [f"Sweep #{sid} failed: model.onnx: no such file"]
    assert len(at.get("plotly_chart")) == 6  # each says there is nothing to plot


def test_results_page_without_sweeps_says_what_to_do():
    at = page("results").run()
    assert not at.exception
    assert "Try the demo" in at.info[0].value


def test_history_page_compare_export_delete():
    first, second = stored_sweep(), stored_sweep()
    at = page("history").run()
    assert not at.exception and not at.error
    chosen = next(w for w in at.multiselect if w.label.startswith("Sweeps to compare"))
    assert sorted(chosen.value) == [first, second]
    assert len(at.get("plotly_chart")) == 2
    assert len(at.get("download_button")) == 2  # CSV and JSON
    next(b for b in at.button if b.label == "Build the HTML report").click().run()
    name, html = at.session_state["report_html"]
    assert html.startswith("<!DOCTYPE html>") and "p50 latency (ms)" in html
    assert not re.search(r"<script[^>]*\bsrc=", html) and len(html) > 1_000_000  # plotly.js inlined
    assert len(at.get("download_button")) == 3
    at.selectbox(key="delete_pick").set_value(next(s for s in at.selectbox(key="delete_pick").options if s.startswith(f"#{first} ")))
    at.checkbox(key="delete_sure").check()
    at.run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert not at.exception
    assert [s.id for s in Store().list_sweeps()] == [second]


def test_history_refuses_to_delete_a_running_sweep():
    sid = Store().create_sweep("sample:digits-cnn", {"sweep": {}}, status="running", pid=os.getpid())  # live owner
    at = page("history").run()
    at.checkbox(key="delete_sure").check()
    at.run()
    next(b for b in at.button if b.label == "Delete").click().run()
    assert any("still running" in e.value and "cancel it" in e.value for e in at.error)
    assert [s.id for s in Store().list_sweeps()] == [sid]


def test_sensitivity_page_widgets():
    at = page("sensitivity").run()
    assert not at.exception and not at.error
    assert {b.label for b in at.button} >= {"Run sensitivity analysis", "Run the search"}
    assert any("digits:test" in c.value for c in at.caption)


@pytest.mark.slow
def test_sensitivity_page_runs_two_layers():
    at = page("sensitivity").run()
    next(n for n in at.number_input if n.label.startswith("Layers to test")).set_value(2)
    next(b for b in at.button if b.label == "Run sensitivity analysis").click().run()
    assert not at.exception and not at.error
    table = at.dataframe[0].value
    assert len(table) == 2 and "drop (points)" in table.columns
    assert len(at.get("plotly_chart")) == 1


def test_sensitivity_page_runs_a_trusted_pickle_only_in_a_child(tmp_path):
    import io

    import torch

    marker = tmp_path / "marker.txt"
    buf = io.BytesIO()
    torch.save(_PickledCode(f"(open({str(marker)!r}, 'w').write(str(__import__('os').getpid())), "
                            "__import__('torch').nn.Sequential(__import__('torch').nn.Linear(4, 8), "
                            "__import__('torch').nn.Linear(8, 3)))[1]"), buf)
    path = tmp_path / "whole.pt"
    path.write_bytes(buf.getvalue())
    at = page("sensitivity")
    at.session_state["model"] = {"source": str(path), "inputs": ["input:1x4"], "arch": None, "trust_pickle": True,
                                 "name": "whole.pt", "uploaded": True}
    at.run()
    assert not at.exception and not at.error
    assert any("random inputs" in c.value for c in at.caption)
    assert not marker.exists()  # showing the page loads nothing
    at.radio[0].set_value("prune")
    next(b for b in at.button if b.label == "Run sensitivity analysis").click().run()
    assert not at.exception and not at.error
    assert int(marker.read_text()) != os.getpid()  # unpickled in a child, never in the app process
    table = at.dataframe[0].value
    assert len(table) == 2 and list(table["drop (points)"]) == sorted(table["drop (points)"], reverse=True)
    assert len(at.get("plotly_chart")) == 1


def test_sensitivity_page_job_error_is_one_line(tmp_path):
    at = page("sensitivity")
    at.session_state["model"] = {"source": str(tmp_path / "gone.onnx"), "inputs": [], "name": "gone.onnx"}
    at.run()
    next(b for b in at.button if b.label == "Run the search").click().run()
    assert not at.exception and len(at.error) == 1
    message = at.error[0].value
    assert message.startswith("Search failed: ") and "gone.onnx" in message and "\n" not in message
    assert not at.dataframe


def test_run_page_shows_the_device_queue_of_every_job():
    from benchmark.jobs import DeviceQueue

    sid = Store().create_sweep("sample:digits-cnn", {"sweep": {"precisions": ["fp32"], "backends": ["pytorch"]}},
                               status="queued", pid=os.getpid())
    with DeviceQueue("cpu").slot(label="int8 sensitivity analysis whole.pt"):
        at = page("run").run()
        assert not at.exception
        queue = [m.value for m in at.markdown if "CPU queue" in m.value]
        assert len(queue) == 1 and "1. int8 sensitivity analysis whole.pt - holds the device" in queue[0]
        bars = [p.proto.text for p in at.get("progress")]
        assert any(t.startswith("queued behind 1 job on cpu") for t in bars), bars
    assert Store().get_sweep(sid).status == "queued"
    at.run()
    assert not any("CPU queue" in m.value for m in at.markdown)


# --- state that survives a reload, typed batch sizes, dashboard words ------------------------------
def _with_token(name: str, token: str) -> AppTest:
    at = page(name)
    at.query_params["s"] = token
    return at.run()


def test_a_reload_keeps_model_data_and_settings():
    at = page("model").run()
    at.selectbox[0].set_value("digits-transformer").run()
    token = at.query_params["s"]
    assert at.session_state["model"]["source"] == "sample:digits-transformer"

    run = _with_token("run", token)  # another page of the same browser session
    assert any("sample:digits-transformer" in m.value for m in run.markdown)
    next(w for w in run.multiselect if w.label == "Precisions").set_value(["fp32"])
    next(w for w in run.multiselect if w.label == "Batch sizes (samples)").set_value(["1", "40"])
    next(s for s in run.selectbox if s.label == "Evaluation data").set_value("digits-tokens")
    next(n for n in run.number_input if n.label.startswith("Timed seconds")).set_value(0.5)
    run.run()
    assert not run.exception and any(i.value.startswith("2 runs: 1 variant x 1 backend x 2 batch sizes")
                                     or "2 batch sizes" in i.value for i in run.info)

    reloaded = _with_token("run", token)  # a reload: a new session with the same URL
    assert not reloaded.exception
    assert any("sample:digits-transformer" in m.value for m in reloaded.markdown)
    assert next(w for w in reloaded.multiselect if w.label == "Precisions").value == ["fp32"]
    assert next(w for w in reloaded.multiselect if w.label == "Batch sizes (samples)").value == ["1", "40"]
    assert next(s for s in reloaded.selectbox if s.label == "Evaluation data").value == "digits-tokens"
    assert next(n for n in reloaded.number_input if n.label.startswith("Timed seconds")).value == 0.5
    sens = _with_token("sensitivity", token)  # the same data choice on Sensitivity
    assert next(s for s in sens.selectbox if s.label == "Evaluation data").value == "digits-tokens"
    assert any("digits-tokens" in c.value for c in sens.caption)

    stranger = page("run").run()  # another browser: its own defaults
    assert stranger.query_params["s"] != token
    assert next(w for w in stranger.multiselect if w.label == "Precisions").value == ["fp32", "int8-static"]


def test_run_page_accepts_a_typed_batch_size_and_refuses_text():
    at = page("run").run()
    sizes = next(w for w in at.multiselect if w.label == "Batch sizes (samples)")
    sizes.set_value(["1", "40"]).run()  # typed 40, as accept_new_options gives it
    assert not at.exception and not at.error
    assert any(i.value.startswith("8 runs: 2 variants x 2 backends x 2 batch sizes") for i in at.info)
    assert "40" in next(w for w in at.multiselect if w.label == "Batch sizes (samples)").options
    next(w for w in at.multiselect if w.label == "Batch sizes (samples)").set_value(["1", "forty"]).run()
    assert any("whole number" in e.value and "forty" in e.value for e in at.error)
    assert not any(b.label == "Run sweep" for b in at.button)


def test_model_page_accepts_a_symbolic_shape_once_filled_and_speaks_dashboard(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype("float32"), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], name="/rec/conv/Conv")], "rec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["p2o.DynamicDimension.0", 3, None, 320])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["p2o.DynamicDimension.0", 4, None, 320])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.save(proto, str(tmp_path / "rec.onnx"))
    at = page("model").run()
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].upload("rec.onnx", (tmp_path / "rec.onnx").read_bytes()).run()
    warning = next(w.value for w in at.warning if "not counted" in w.value)
    assert "--input" not in warning and "shape field on the Model page" in warning
    shape = next(t for t in at.text_input if t.label.startswith("x "))
    assert shape.value.startswith("p2o.DynamicDimension.0x3x")
    shape.set_value(shape.value.replace("x3x" + shape.value.split("x")[2], "x3x48")).run()
    assert not at.exception and not at.error
    assert at.session_state["model"]["inputs"] == ["x:Nx3x48x320:float32"]
    assert {m.label: m.value for m in at.metric}["MACs (multiply-adds)"] == f"{4 * 48 * 320 * 27 / 1e6:.3f} M"


def test_results_page_switches_the_metric_and_shows_notices():
    store = Store()
    sid = store.create_sweep("m.onnx", {"sweep": {"precisions": ["fp32", "int8-static"], "backends": ["onnxruntime"]}},
                             status="done", total_runs=2)
    quality = {"metric": "cosine", "higher_is_better": True, "reference": 1.0, "n": 64}
    for variant, precision, p50, cos, agree, extra in (
            ("fp32", "fp32", 2.0, 1.0, 1.0, {}),
            ("int8-static[minmax]", "int8-static", 0.5, 0.853, 0.528, {
                "stability": {"unstable": True, "reasons": ["CV 1.70 > 0.5"], "attempts": 3},
                "compression": [{"summary": "int8", "details": {"onnx": {
                    "int8_format": "u8s8", "int8_format_reason": "auto: CPU has avx512_vnni",
                    "calibration": {"samples": 10}}}}], "config": {"calib_samples": 128}})):
        store.add_result(RunResult(
            model="m", variant=variant, backend="onnxruntime", batch_size=1, precision=precision, status="ok",
            sweep_id=sid, latency_ms={"p50": p50, "mean": p50}, throughput_sps=1000 / p50,
            fidelity={"top1_agreement": agree, "cosine": cos}, quality=dict(quality, value=cos), **extra))
    at = page("results").run()
    assert not at.exception and not at.error
    metric = next(s for s in at.selectbox if s.label == "Quality metric")
    assert metric.value == "cosine" and set(metric.options) == {"cosine similarity to FP32", "top-1 agreement with FP32"}
    table = at.dataframe[0].value
    assert table["quality: cosine similarity to FP32"].tolist() == pytest.approx([1.0, 0.853])
    assert table["speedup vs FP32 (x, p50)"].tolist() == pytest.approx([1.0, 4.0])
    warnings = " ".join(w.value for w in at.warning)
    assert "have unstable timings" in warnings and "10 of the 128 samples" in warnings
    assert any("atol = rtol" in c.value for c in at.caption)
    metric.set_value("top1_agreement").run()
    assert "quality: top-1 agreement with FP32 (%)" in at.dataframe[0].value.columns
    assert at.session_state[f"results.metric.{sid}"] == "top1_agreement"  # kept per sweep


def test_queue_shows_other_sessions_jobs_without_their_paths(tmp_path):
    from benchmark.jobs import DeviceQueue

    with DeviceQueue("cpu").slot(label=f"{tmp_path}/secret-folder/theirs.onnx int8-static[minmax]"):
        at = page("run").run()
        queue = next(m.value for m in at.markdown if "CPU queue" in m.value)
    assert "theirs.onnx int8-static[minmax]" in queue and "secret-folder" not in queue and str(tmp_path) not in queue


def test_run_page_lists_recent_finished_sweeps():
    sid = stored_sweep()
    at = page("run").run()
    assert any(m.value.startswith(f"#{sid} sample:digits-cnn") for m in at.markdown)
    next(b for b in at.button if b.key == f"open-{sid}").click().run()
    assert not at.exception and at.session_state["results_sweep_id"] == sid


def test_home_demo_status_follows_the_sweep_and_survives_a_reload():
    store = Store()
    sid = store.create_sweep("sample:digits-cnn", {"sweep": {}}, status="running", pid=os.getpid())
    at = page("home")
    at.session_state["demo_sweep_id"] = sid
    at.run()
    assert any(f"Demo sweep #{sid} is running" in i.value for i in at.info)
    token = at.query_params["s"]
    store.update_sweep_status(sid, "done")
    reloaded = _with_token("home", token)  # a reload later: the demo is remembered, its status is current
    assert any(f"Demo sweep #{sid} finished" in s.value for s in reloaded.success)
    assert any("Machine load now" in c.value for c in reloaded.caption) or any("busy" in w.value for w in reloaded.warning)


def test_results_page_documents_the_marker_legend():
    from benchmark import plots

    stored_sweep()
    at = page("results").run()
    assert any(m.value == plots.legend_markdown() for m in at.markdown)


# --- where a sweep runs: this machine or a Ray cluster ---------------------------------------------
def _run_on(at: AppTest, executor: str) -> AppTest:
    next(r for r in at.radio if r.label == "Run on").set_value(executor).run()
    return at


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs Ray: pip install 'slimbench[ray]'")
def test_run_page_shows_ray_settings_only_with_ray_and_checks_targets():
    at = page("run").run()
    run_on = next(r for r in at.radio if r.label == "Run on")
    assert run_on.value == "local" and run_on.options == ["this machine", "Ray cluster"]
    assert any("Ray settings (cluster address, target machines) appear with Ray cluster" in c.value for c in at.caption)
    assert not any(t.label == "Ray address" for t in at.text_input)
    _run_on(at, "ray")
    assert not at.exception and not at.error
    assert next(t for t in at.text_input if t.label == "Ray address").value == "auto"
    targets = next(w for w in at.multiselect if w.label == "Target machines")
    assert targets.value == ["all"]
    assert any(i.value.startswith("8 runs per target machine: 2 variants") for i in at.info)
    assert any(b.label == "Run sweep" for b in at.button)
    targets.set_value(["all", "resource=lab_t4"]).run()  # typed, as accept_new_options gives it
    assert not at.error and at.session_state["run.targets"] == ["all", "resource=lab_t4"]
    next(w for w in at.multiselect if w.label == "Target machines").set_value(["gpu-box"]).run()
    assert any("target must be all, resource=NAME or node=ID; got 'gpu-box'" in e.value for e in at.error)
    assert not any(b.label == "Run sweep" for b in at.button)
    next(t for t in at.text_input if t.label == "Ray address").set_value("127.0.0.1:9").run()
    next(b for b in at.button if b.label == "List the cluster's machines").click().run()
    assert any("cannot connect to a Ray cluster at '127.0.0.1:9': nothing answers there" in e.value for e in at.error)
    token = at.query_params["s"]
    reloaded = _with_token("run", token)  # the choice of Ray and its settings survive a reload
    assert next(r for r in reloaded.radio if r.label == "Run on").value == "ray"
    assert next(t for t in reloaded.text_input if t.label == "Ray address").value == "127.0.0.1:9"


def test_run_page_without_ray_says_how_to_install_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    at = _run_on(page("run").run(), "ray")
    assert not at.exception
    assert any("Ray is not installed here" in w.value and "pip install 'slimbench[ray]'" in w.value for w in at.warning)
    assert not any(b.label == "Run sweep" for b in at.button)
    _run_on(at, "local")
    assert any(b.label == "Run sweep" for b in at.button)


def _machine_sweep() -> int:
    """A stored sweep of two variants on two Ray nodes, one row lost with the second node."""
    store = Store()
    sid = store.create_sweep("sample:digits-cnn", {"sweep": {"precisions": ["fp32", "int8-static"],
                                                             "backends": ["onnxruntime"]}}, status="interrupted")
    for node, host, fp32_p50, int8_p50, int8_status in (("a" * 56, "vnni-box", 2.0, 1.0, "ok"),
                                                        ("b" * 56, "avx2-box", 1.0, None, "interrupted")):
        for variant, precision, p50, status in (("fp32", "fp32", fp32_p50, "ok"),
                                                ("int8-static[minmax]", "int8-static", int8_p50, int8_status)):
            store.add_result(RunResult(
                model="sample:digits-cnn", variant=variant, backend="onnxruntime", batch_size=1, precision=precision,
                status=status, error=None if status == "ok" else f"lost with {host} (node {node[:8]})", sweep_id=sid,
                target=f"node={node}", env={"hostname": host, "cpu_model": "same CPU"},
                latency_ms={"p50": p50, "mean": p50} if p50 else None, throughput_sps=1000 / p50 if p50 else None,
                accuracy={"top1": 0.95, "n": 360} if p50 else None, macs=7_000_000, size_bytes=700_000))
    return sid


def test_results_page_groups_and_colours_by_machine():
    sid = _machine_sweep()
    at = page("results").run()
    assert not at.exception and not at.error
    assert any("Measured on 2 machines: vnni-box (node aaaaaaaa); avx2-box (node bbbbbbbb)" in c.value for c in at.caption)
    assert any("1 run(s) were lost with the machine" in w.value and f"--resume {sid}" in w.value for w in at.warning)
    table = at.dataframe[0].value
    assert list(table["machine"]) == ["vnni-box (node aaaaaaaa)", "vnni-box (node aaaaaaaa)", "avx2-box (node bbbbbbbb)"]
    assert table["speedup vs FP32 (x, p50)"].tolist() == pytest.approx([1.0, 2.0, 1.0])  # within one machine
    lost = at.dataframe[1].value
    assert list(lost["machine"]) == ["avx2-box (node bbbbbbbb)"] and list(lost["status"]) == ["interrupted"]
    assert len(at.expander) >= 2 and any(e.label.endswith("avx2-box (node bbbbbbbb)") for e in at.expander)
    next(r for r in at.radio if r.label == "Colour by").set_value("machine").run()
    assert not at.exception and at.session_state["results.color_by"] == "machine"
    across = next(s for s in at.selectbox if s.label == "Compare one variant across machines")
    assert across.options == ["every variant", "fp32", "int8-static[minmax]"]
    across.set_value("fp32").run()
    assert not at.exception and not at.error
    assert at.session_state["results.across"] == "fp32"
    tradeoff = json.loads(at.get("plotly_chart")[0].proto.spec)
    points = {t["name"]: t["marker"]["color"] for t in tradeoff["data"] if not t["name"].startswith("Pareto")}
    assert set(points) == {"fp32 · onnxruntime @ vnni-box (node aaaaaaaa)", "fp32 · onnxruntime @ avx2-box (node bbbbbbbb)"}
    assert len(set(points.values())) == 2  # one colour per machine
    assert tradeoff["layout"]["title"]["text"] == "fp32 across machines (batch 1)"

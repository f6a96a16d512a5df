"""``slimbench recommend`` end to end on the CNN sample: real builds, real interleaved timing.

Each test restricts the search space with ``--axis`` and gives a small time budget, so a run takes
some tens of seconds; the numbers asserted are relations that hold on any CPU (static INT8 and 75 %
channel pruning both cut the work of this CNN several-fold), never absolute times.
"""
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from benchmark.__main__ import main
from benchmark.recommend import RecommendRequest, load_recommendation, run_recommendation
from benchmark.store import Store

SMALL = ("lowrank=0", "distill=off", "calib_method=minmax", "int8_format=u8s8", "threads=0",
         "graph_optimization_level=all")


def _axes(*extra):
    out = []
    for item in SMALL + extra:
        out += ["--axis", item]
    return out


@pytest.mark.slow
def test_cli_recommends_int8_and_not_the_faster_pruned_model_over_budget(tmp_path, capsys):
    db, save = tmp_path / "r.db", tmp_path / "chosen.onnx"
    code = main(["recommend", "sample:digits-cnn", "--budget", "1", "--backend", "onnxruntime", "--time-budget", "45",
                 "--repeats", "3", "--db", str(db), "--save", str(save), "--json",
                 *_axes("precision=fp32,int8-static", "prune=0,0.75")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("chosen", "candidates", "budget_points", "latency_budget_ms", "metric", "strategy", "elapsed_s"):
        assert key in out
    assert out["metric"] == "accuracy" and out["budget_points"] == 1.0 and out["latency_budget_ms"] is None
    cands = {c["variant"]: c for c in out["candidates"]}
    assert all("speedup_vs_fp32" in c and "quality_drop_points" in c for c in cands.values())
    chosen, pruned = out["chosen"], cands["fp32+prune-s0.75"]
    # the fastest candidate overall is the pruned one, and it is over the quality budget
    assert pruned["latency_ms"]["p50"] < chosen["latency_ms"]["p50"]
    assert pruned["quality_drop_points"] > 1.0 and pruned["outcome"] != "chosen"
    assert chosen["variant"] == "int8-static[minmax,u8s8]" and not out["keep_fp32"], (out["reason"], out["notes"])
    sig = chosen["significance"]
    assert sig["verdict"] == "faster" and sig["speedup_ci_low"] > 1.0 and sig["repeats"] == 3
    lat = chosen["latency_ms"]
    assert lat["p50_ci_low"] <= lat["p50"] <= lat["p50_ci_high"]
    assert chosen["quality_drop_points"] <= 1.0 and chosen["holdout_drop_points"] <= 1.0
    assert chosen["size_vs_fp32"] < 0.5
    fam = {f["family"]: f["reason"] for f in out["families"]}
    assert fam["prune 0.75"].startswith("-") and "points (budget 1)" in fam["prune 0.75"]
    # the saved model is the chosen INT8 file and classifies the digits
    import onnxruntime as ort

    from benchmark.data import get_dataset

    data = get_dataset("digits", "test")
    sess = ort.InferenceSession(out["saved_to"], providers=["CPUExecutionProvider"])
    pred = sess.run(None, {sess.get_inputs()[0].name: data.arrays["image"]})[0].argmax(-1)
    assert Path(out["saved_to"]) == save and (pred == data.labels).mean() > 0.95
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(save)).graph.node)
    # the rows are stored like a sweep's, one key each, and the record keeps the recommendation
    store = Store(db)
    rows = store.get_results(out["sweep_id"])
    assert len({r.key for r in rows}) == len(rows) == len(cands)
    assert store.get_sweep(out["sweep_id"]).status == "done"
    assert load_recommendation(store, out["sweep_id"])["chosen"]["variant"] == chosen["variant"]
    frame = store.results_frame(out["sweep_id"])
    row = frame[frame["variant"] == chosen["variant"]].iloc[0]
    assert row["significance"] == "faster" and row["latency_p50_ci_low_ms"] <= row["latency_p50_ms"]


@pytest.mark.slow
def test_nothing_significantly_faster_keeps_fp32(tmp_path, monkeypatch):
    """A runtime with a fixed cost per call (tests/plugins_floor.py) makes every variant take the
    same time: INT8 must not win on noise."""
    monkeypatch.setenv("SLIMBENCH_PLUGINS", str(Path(__file__).with_name("plugins_floor.py")))
    req = RecommendRequest(model="sample:digits-cnn", budget_points=1.0, backends=("floored",), time_budget_s=25,
                           repeats=3, axes=SMALL + ("precision=fp32,int8-static", "prune=0"))
    out = run_recommendation(req, Store(tmp_path / "r.db"))
    assert out["keep_fp32"] and out["chosen"]["variant"] == "fp32" and out["chosen"]["backend"] == "floored"
    assert out["reason"].startswith("keep FP32: no candidate within 1 points was significantly faster")
    int8 = next(c for c in out["candidates"] if c["variant"] == "int8-static[minmax,u8s8]")
    assert int8["quality_drop_points"] <= 1.0  # within the quality budget: it lost on speed alone
    assert 0.9 < int8["speedup_vs_fp32"] < 1.1
    assert out["artifact"]["format"] == "onnx" and Path(out["artifact"]["path"]).is_file()


@pytest.mark.slow
def test_background_recommendation_can_be_cancelled(tmp_path):
    from benchmark.recommend import start_recommend_background
    from benchmark.sweep import cancel_sweep

    db = tmp_path / "r.db"
    sweep_id = start_recommend_background(RecommendRequest(model="sample:digits-cnn", time_budget_s=300), db)
    store = Store(db)
    deadline = time.monotonic() + 120
    while store.get_sweep(sweep_id).status in ("pending", "queued") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.get_sweep(sweep_id).status == "running"
    cancel_sweep(store, sweep_id)
    while store.get_sweep(sweep_id).active and time.monotonic() < deadline:
        time.sleep(0.2)
    rec = store.get_sweep(sweep_id)
    assert rec.status == "cancelled" and load_recommendation(store, sweep_id) is None
    assert os.environ.get("SLIMBENCH_DATA_DIR")  # the runner wrote under the test's own data folder


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["recommend", "sample:digits-cnn", "--db", str(tmp_path / "r.db")]) == 2
    assert "needs --budget POINTS" in capsys.readouterr().err
    assert main(["recommend", "sample:digits-cnn", "--budget", "1", "--axis", "prune=2",
                 "--db", str(tmp_path / "r.db")]) == 2
    assert "[0, 1)" in capsys.readouterr().err
    code = main(["recommend", str(tmp_path / "missing.onnx"), "--budget", "1", "--db", str(tmp_path / "r.db")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing.onnx" in err
    assert np.isfinite(1.0)


def test_recommend_page_shows_the_form():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app_pages" / "recommend.py"),
                           default_timeout=60).run()
    assert not at.exception and not at.error
    assert any(b.label == "Recommend" for b in at.button)
    assert any(n.label == "Quality budget (points)" for n in at.number_input)
    assert any("No finished recommendation yet" in c.value for c in at.caption)


@pytest.mark.slow
def test_recommend_page_shows_a_finished_recommendation(tmp_path, monkeypatch):
    """An ONNX file without data (random inputs, agreement with FP32): the record is shown with its
    pick marked on the plot and the model file offered for download."""
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import tiny_onnx

    model = tiny_onnx(tmp_path / "tiny.onnx")
    monkeypatch.setenv("SLIMBENCH_DB", str(tmp_path / "r.db"))
    req = RecommendRequest(model=str(model), budget_points=5.0, backends=("onnxruntime",), time_budget_s=20, repeats=3,
                           axes=SMALL + ("precision=fp32,int8-dynamic", "prune=0"))
    out = run_recommendation(req, Store())
    assert out["metric"] == "top1_agreement" and out["splits"]["random_inputs"]
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app_pages" / "recommend.py"), default_timeout=60)
    at.session_state["model"] = {"source": str(model), "inputs": [], "name": "tiny.onnx"}
    at.run()
    assert not at.exception and not at.error
    banner = (at.success or at.info)[0].value
    assert ("Keep FP32" if out["keep_fp32"] else out["chosen"]["variant"]) in banner
    assert len(at.get("plotly_chart")) == 1 and len(at.get("download_button")) == 1
    assert any("gold star" in c.value for c in at.caption)
    families = at.dataframe[0].value
    assert list(families.columns[:2]) == ["family", "outcome"] and len(families) >= 1


def test_a_copied_onnx_model_keeps_its_external_data_loadable(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from benchmark.recommend.artifact import copy_model_file

    w = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(tmp_path / "src.onnx"), save_as_external_data=True, location="src.onnx.data",
                    size_threshold=0)
    (tmp_path / "out").mkdir()
    copy_model_file(tmp_path / "src.onnx", tmp_path / "out" / "chosen.onnx")  # another name, another folder
    out = ort.InferenceSession(str(tmp_path / "out" / "chosen.onnx")).run(None, {"x": np.ones((1, 64), np.float32)})
    assert float(out[0][0, 0]) == 64.0
    copy_model_file(tmp_path / "src.onnx", tmp_path / "same.onnx")  # beside the source: the data is shared
    assert ort.InferenceSession(str(tmp_path / "same.onnx")).run(None, {"x": np.ones((1, 64), np.float32)})

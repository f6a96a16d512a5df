"""Per-layer sensitivity (INT8 / prune one ONNX node at a time) and the accuracy-aware INT8 search."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.analysis import COLUMNS, accuracy_aware_search, layer_sensitivity
from benchmark.config import InputSpec
from benchmark.data import get_dataset
from benchmark.data.base import Dataset
from benchmark.errors import ConfigError, DataError
from benchmark.models.base import LoadedModel


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _flat(ds: Dataset, n: int | None = None) -> Dataset:
    ds = ds.subset(n)
    return Dataset(ds.name, {"x": ds.arrays["image"].reshape(len(ds), 64)}, ds.labels)


@pytest.fixture(scope="module")
def data():
    return _flat(get_dataset("digits", "test"), 200), _flat(get_dataset("digits", "calib"), 128)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An MLP trained on digits, then given an outlier channel that makes INT8 of fc1/fc2 fail.

    fc1's unit 0 outputs a constant 3000 that fc2 ignores (its weights are zero): FP32 results do
    not change, but a per-tensor uint8 scale over [0, 3000] wipes out the other activations of
    that tensor, so quantizing fc1 (its output) or fc2 (its input) ruins accuracy while
    quantizing ``out`` costs nearly nothing.
    """
    train = _flat(get_dataset("digits", "train"))
    torch.manual_seed(0)
    m = MLP()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x, y = torch.from_numpy(train.arrays["x"]), torch.from_numpy(train.labels)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        m.fc1.weight[0] = 0
        m.fc1.bias[0] = 3000.0
        m.fc2.weight[:, 0] = 0
    path = tmp_path_factory.mktemp("sens") / "mlp.onnx"
    torch.onnx.export(m, (torch.zeros(2, 64),), str(path), dynamo=False, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return LoadedModel("mlp", "onnx", "onnx", [InputSpec("x", ("batch", 64))], path=path, onnx_path=path,
                       torch_module=m, num_classes=10)


def test_int8_table_one_row_per_layer_sorted(model, data, tmp_path):
    ev, _ = data
    fractions = []
    df = layer_sensitivity(model, "int8", ev, tmp_path, lambda m, f: fractions.append(f))
    assert list(df.columns) == COLUMNS
    assert len(df) == 3 and set(df["op_type"]) == {"Gemm"}
    assert list(df["delta"]) == sorted(df["delta"], reverse=True)
    # MAC shares by hand: 64*32, 32*32, 32*10 multiply-adds per sample
    total = 64 * 32 + 32 * 32 + 32 * 10
    assert sorted(df["macs_share"]) == pytest.approx(sorted([2048 / total, 1024 / total, 320 / total]))
    np.testing.assert_allclose(df["delta"], (df["metric_before"] - df["metric_after"]) * 100)
    assert df["metric_before"].nunique() == 1 and df["metric_before"].iloc[0] > 0.8
    # the outlier makes fc1 / fc2 the sensitive layers; the small head is nearly free
    least = df.iloc[-1]
    assert least["macs_share"] == pytest.approx(320 / total) and least["delta"] < 2.0
    assert df["delta"].iloc[0] > 20.0
    assert df.attrs["metric"] == "accuracy" and df.attrs["samples"] == 200
    assert fractions[-1] == 1.0
    assert not list(Path(tmp_path).glob("sens-int8-*.onnx"))  # per-layer models are cleaned up


def test_prune_table_and_max_layers(model, data, tmp_path):
    ev, _ = data
    df = layer_sensitivity(model, "prune", ev, tmp_path, max_layers=2)
    assert len(df) == 2 and df.attrs["layers_not_tested"] == 1
    # the two layers with the most MACs were tested
    assert sorted(df["macs_share"], reverse=True) == pytest.approx([2048 / 3392, 1024 / 3392])
    assert list(df["delta"]) == sorted(df["delta"], reverse=True)


def test_unlabelled_data_measures_agreement(model, data, tmp_path):
    ev, _ = data
    unlabelled = dataclasses.replace(ev, labels=None)
    df = layer_sensitivity(model, "int8", unlabelled, tmp_path)
    assert df.attrs["metric"] == "top1_agreement"
    assert (df["metric_before"] == 1.0).all()
    assert df["metric_after"].min() < 0.9


def test_search_respects_the_budget_and_lists_every_trial(model, data, tmp_path):
    ev, calib = data
    res = accuracy_aware_search(model, ev, calib, budget_points=1.0, workdir=tmp_path, max_trials=5)
    tried = res.tried
    assert res.chosen is not None
    assert res.chosen["delta"] <= 1.0 and res.chosen["meets_budget"]
    # full INT8 first, then one more sensitive layer kept in FP32 per trial, in sensitivity order
    order = list(res.sensitivity["layer"])
    assert list(tried["trial"]) == list(range(len(tried)))
    for k, row in tried.iterrows():
        assert row["excluded_layers"] == order[:k]
    assert len(tried) >= 2 and tried["delta"].iloc[0] > 1.0
    assert (tried["delta"].iloc[:-1] > 1.0).all()  # the search stopped at the first trial within budget
    assert (tried["size_bytes"] > 0).all() and (tried["latency_p50_ms"] > 0).all()
    assert res.reference_metric > 0.8 and res.reference_latency_p50_ms > 0
    assert Path(res.chosen["onnx_path"]).is_file()
    assert len(list(Path(tmp_path).glob("search-trial-*.onnx"))) == 1  # only the chosen one is kept
    cfg = res.to_config()
    assert cfg.precision == "mixed" and list(cfg.exclude_layers) == res.chosen["excluded_layers"]


def test_search_without_a_fitting_configuration(model, data, tmp_path):
    ev, calib = data
    res = accuracy_aware_search(model, ev, calib, budget_points=0.5, workdir=tmp_path, max_trials=1)
    assert len(res.tried) == 1 and res.chosen is None
    assert res.tried["excluded_layers"].iloc[0] == []
    assert any("no tried configuration" in w for w in res.warnings)
    assert res.to_config() is None


def test_bad_input(model, data, tmp_path):
    ev, calib = data
    with pytest.raises(ConfigError, match="sensitivity method"):
        layer_sensitivity(model, "int4", ev, tmp_path)
    with pytest.raises(ConfigError, match="budget"):
        accuracy_aware_search(model, ev, calib, budget_points=-1, workdir=tmp_path)
    with pytest.raises(ConfigError, match="max_trials"):
        accuracy_aware_search(model, ev, calib, workdir=tmp_path, max_trials=0)
    with pytest.raises(ConfigError, match="max_layers"):
        layer_sensitivity(model, "int8", ev, tmp_path, max_layers=0)
    wrong = Dataset("wrong", {"x": np.zeros((4, 32), np.float32)}, np.zeros(4, np.int64))
    with pytest.raises(DataError, match="dim 1 must be 64"):
        layer_sensitivity(model, "int8", wrong, tmp_path)
    with pytest.raises(DataError, match="required"):
        layer_sensitivity(model, "int8", None, tmp_path)
    with pytest.raises(DataError, match="empty"):
        Dataset("empty", {"x": np.zeros((0, 64), np.float32)})


class TinyConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, padding=1, stride=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, image):
        return self.fc(torch.relu(self.c2(torch.relu(self.c1(image)))).mean(dim=(2, 3)))


def test_torch_model_is_exported_and_conv_macs_counted(tmp_path):
    torch.manual_seed(0)
    m = TinyConv().eval()
    model = LoadedModel("tiny-conv", "sample", "torch", [InputSpec("image", ("batch", 1, 8, 8))], torch_module=m, num_classes=10)
    ev = get_dataset("digits", "test").subset(64)
    df = layer_sensitivity(model, "prune", ev, tmp_path)
    # c1: 8*8 outputs x 4 channels x (1*3*3); c2: 4*4 x 8 x (4*3*3); fc: 8*10
    macs = {"Conv": [2304, 4608], "Gemm": [80]}
    total = 2304 + 4608 + 80
    assert sorted(df[df.op_type == "Conv"]["macs_share"]) == pytest.approx([m_ / total for m_ in macs["Conv"]])
    assert df[df.op_type == "Gemm"]["macs_share"].tolist() == pytest.approx([80 / total])
    assert df.attrs["total_macs"] == total
    assert len(df) == 3 and list(df["delta"]) == sorted(df["delta"], reverse=True)


# ---------------------------------------------------------------------------------------------
# Timing through the project's latency conventions, and the isolated (child-process) runs


def test_search_times_with_measure_latency_under_the_device_lock(model, data, tmp_path, monkeypatch):
    import benchmark.measure.latency as latency
    from benchmark.backends.base import Session

    real = latency.measure_latency
    calls = []

    def spy(session, feeds, cfg, device="cpu", progress=None, lock=True):
        calls.append({"session": session, "batch": next(iter(feeds.values())).shape[0], "cfg": cfg, "device": device,
                      "lock": lock})
        return real(session, feeds, cfg, device, progress=progress, lock=lock)

    monkeypatch.setattr(latency, "measure_latency", spy)
    ev, calib = data
    res = accuracy_aware_search(model, ev, calib, budget_points=100.0, workdir=tmp_path, max_trials=3)
    assert len(res.tried) == 1  # full INT8 is within a 100-point budget
    assert len(calls) == 2  # the FP32 reference and the one trial
    for call in calls:
        assert isinstance(call["session"], Session) and call["session"].info.backend == "onnxruntime"
        assert call["device"] == "cpu" and call["lock"] is True
        cfg = call["cfg"]
        assert (cfg.backend, cfg.threads, cfg.batch_size, cfg.min_iters, cfg.min_duration_s) == ("onnxruntime", 1, 8, 20, 0.2)
        assert call["batch"] == 8
    assert res.tried["latency_p50_ms"].iloc[0] > 0 and res.reference_latency_p50_ms > 0


@pytest.fixture(scope="module")
def npz_data(tmp_path_factory):
    """The digits test split flattened for the MLP, as a user's .npz file (arrays + labels)."""
    ev = _flat(get_dataset("digits", "test"), 200)
    path = tmp_path_factory.mktemp("npz") / "digits-flat.npz"
    np.savez(path, x=ev.arrays["x"], labels=ev.labels)
    return path


def test_sensitivity_isolated_is_json_ready_and_holds_the_queue(model, npz_data):
    import json
    import os

    from benchmark.analysis import sensitivity_isolated
    from benchmark.jobs import queue_state

    events, queued = [], []

    def progress(message, fraction):
        events.append((message, fraction))
        queued.extend(queue_state("cpu"))

    res = sensitivity_isolated(str(model.onnx_path), method="int8", data=str(npz_data), on_progress=progress)
    json.dumps(res, allow_nan=False)  # strict JSON: nothing the page or CLI cannot print
    assert res["columns"] == COLUMNS and len(res["table"]) == 3
    deltas = [r["delta"] for r in res["table"]]
    assert deltas == sorted(deltas, reverse=True) and deltas[0] > 20.0  # fc1/fc2 carry the outlier
    assert res["attrs"]["metric"] == "accuracy" and 0 < res["attrs"]["samples"] <= 200
    assert "digits-flat" in res["data_note"] and f"({res['attrs']['samples']} samples" in res["data_note"]
    assert events[-1] == ("int8 sensitivity done", 1.0)
    assert any(m.startswith("int8 sensitivity: layer 3/3") for m, _ in events)
    # the job held the CPU queue while it ran, and gave it back
    assert queued and all(e["pid"] == os.getpid() and "sensitivity" in e["label"] for e in queued)
    assert queue_state("cpu") == []


def test_search_isolated_keeps_only_the_chosen_model(model, npz_data, tmp_path):
    from benchmark.analysis import search_isolated

    work = tmp_path / "search"
    res = search_isolated(str(model.onnx_path), budget_points=1.0, max_trials=5, data=str(npz_data), workdir=work)
    assert res["chosen"] is not None and res["chosen"]["delta"] <= 1.0
    tried = res["tried"]
    assert tried[0]["excluded_layers"] == [] and tried[0]["delta"] > 1.0
    order = [r["layer"] for r in res["sensitivity"]]
    assert [t["excluded_layers"] for t in tried] == [order[:k] for k in range(len(tried))]
    assert res["chosen_config"] == {"precision": "mixed", "exclude_layers": res["chosen"]["excluded_layers"]}
    assert [p.name for p in work.iterdir()] == [Path(res["chosen"]["onnx_path"]).name]


def test_isolated_bad_input_and_crash_are_one_line_errors(model, tmp_path, monkeypatch):
    from benchmark.analysis import search_isolated, sensitivity_isolated
    from benchmark.errors import MeasurementError, ModelLoadError
    from benchmark.jobs import queue_state

    with pytest.raises(ConfigError, match="max_layers must be >= 1"):
        sensitivity_isolated(str(model.onnx_path), max_layers=0)
    with pytest.raises(ConfigError, match="budget"):
        search_isolated(str(model.onnx_path), budget_points=float("nan"))
    with pytest.raises(ModelLoadError):
        sensitivity_isolated(str(tmp_path / "missing.onnx"))
    plugin = tmp_path / "segv_plugin.py"
    plugin.write_text("import os, signal\nimport benchmark.analysis.sensitivity as s\n"
                      "s.layer_sensitivity = lambda *a, **k: os.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setenv("SLIMBENCH_PLUGINS", str(plugin))
    with pytest.raises(MeasurementError) as info:
        sensitivity_isolated(str(model.onnx_path))
    message = str(info.value)
    assert "\n" not in message and "SIGSEGV" in message and "mlp.onnx" in message
    assert queue_state("cpu") == []  # the slot is given back after a crash


def test_layers_keep_the_model_files_node_names_after_batchnorm_folding(tmp_path):
    """The optimizer folds BatchNorm into the Conv and names the result ``node_Conv_0``; sensitivity
    tables and kept-FP32 layer names must use the name the Model page shows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from benchmark.compress.onnx_prep import prepare_for_quantization
    from benchmark.analysis.prepared import prepare
    from benchmark.analysis.sensitivity import candidate_layers
    from benchmark.measure.flops import count_model
    from benchmark.models.loaders import load_model

    rng = np.random.default_rng(0)
    arrays = {"w": rng.standard_normal((4, 3, 3, 3)), "scale": np.ones(4) * 0.5, "bias": np.zeros(4), "mean": rng.random(4),
              "var": rng.random(4) + 0.5, "fw": rng.standard_normal((2, 4)), "fb": np.zeros(2)}
    inits = [numpy_helper.from_array(v.astype("float32"), k) for k, v in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="/layer1/conv1/Conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["b"], name="/layer1/bn1/BatchNormalization"),
             helper.make_node("Relu", ["b"], ["r"], name="/layer1/Relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="/pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="/flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="/fc/Gemm")]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "bn.onnx"
    onnx.save(proto, str(path))

    folded, _ = prepare_for_quantization(onnx.load(str(path)))
    assert "BatchNormalization" not in {n.op_type for n in folded.graph.node}  # it really was folded
    model = load_model(str(path))
    shown = {r["name"] for r in count_model(model, batch_size=1).by_module}  # the Model page's per-layer names
    prep = prepare(model, tmp_path / "work")
    layers = [n.name for n in candidate_layers(prep, "int8")]
    assert layers == ["/layer1/conv1/Conv", "/fc/Gemm"] and set(layers) <= shown

"""Per-layer profiles: ONNX Runtime traces mapped to the FLOPs table's node names, INT8 kernels seen as
such, PyTorch modules timed by torch.profiler, and the pure parsing / mapping helpers."""
from __future__ import annotations

import numpy as np
import pytest

from benchmark.compress import CompressContext, build_variant, reference_variant
from benchmark.config import CompressionConfig
from benchmark.data import random_dataset
from benchmark.measure.flops import count_model, count_onnx
from benchmark.measure.profile import (
    OUTSIDE_MODULES, RuntimeNode, kernel_precision, map_runtime_nodes, median_per_run, parse_ort_trace,
    quantized_graph_nodes,
)
from benchmark.models import load_model
from benchmark.profiling import profile_variant

BATCH = 4
QUICK = {"warmup_iters": 2, "warmup_s": 0.0, "min_iters": 10, "min_duration_s": 0.1}


def _conv_net(path):
    """input [N,8,16,16] -> Conv 16 -> BN -> Relu -> Conv 16 -> Relu -> GlobalAveragePool -> Flatten -> Gemm 10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array((0.2 * rng.standard_normal(shape)).astype(np.float32), name)

    inits = [init("w1", 16, 8, 3, 3), init("b1", 16), init("w2", 16, 16, 3, 3), init("b2", 16), init("fc_w", 10, 16),
             init("fc_b", 10), numpy_helper.from_array(np.ones(16, np.float32), "bn_s"),
             numpy_helper.from_array(np.zeros(16, np.float32), "bn_b"),
             numpy_helper.from_array(np.zeros(16, np.float32), "bn_m"),
             numpy_helper.from_array(np.ones(16, np.float32), "bn_v")]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "convnet",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def convnet(tmp_path_factory):
    return load_model(str(_conv_net(tmp_path_factory.mktemp("prof") / "convnet.onnx")))


def _feeds(model):
    return model.example_inputs(BATCH)


def test_ort_profile_names_match_the_flops_table(convnet, tmp_path):
    res = profile_variant(reference_variant(convnet), "onnxruntime", _feeds(convnet), batch_size=BATCH, threads=1,
                          workdir=tmp_path, runs=10, timing=QUICK, with_peaks=False)
    table = {r["name"]: r for r in count_onnx(convnet.onnx_path, {"x": (BATCH, 8, 16, 16)}).by_module}
    by_name = {r["name"]: r for r in res["layers"]}
    for name in ("conv1", "conv2", "fc"):  # every MAC node of the file is a layer, under its own name
        assert name in by_name, sorted(by_name)
        assert by_name[name]["macs"] == table[name]["macs"] > 0
        assert by_name[name]["time_ms"] > 0 and by_name[name]["gmacs_per_s"] > 0
        assert by_name[name]["precision"] == "fp32" and by_name[name]["int8_kernel"] is False
    assert res["missing_layers"] == []
    graph_names = {"conv1", "bn1", "relu1", "conv2", "relu2", "gap", "flatten", "fc"}
    for r in res["layers"]:
        assert r["in_graph"] == (r["name"] in graph_names)
        assert r["provider"] == "CPUExecutionProvider"
    assert sum(r["time_share"] for r in res["layers"]) == pytest.approx(1.0)
    assert sum(r["mac_share"] for r in res["layers"]) == pytest.approx(1.0)
    assert res["layers_total_ms"] == pytest.approx(sum(r["time_ms"] for r in res["layers"]))
    # the per-node sum is a real share of the end-to-end time (wide bounds: the machine is shared)
    assert 0.2 * res["end_to_end_p50_ms"] < res["layers_total_ms"] < 3.0 * res["end_to_end_p50_ms"]
    assert res["gap_ms"] == pytest.approx(res["end_to_end_p50_ms"] - res["layers_total_ms"])
    assert res["runs"] == 10 and res["peaks"] is None and res["isa"]["summary"]


def test_int8_static_profile_reports_int8_kernels(convnet, tmp_path):
    calib = random_dataset(convnet.inputs, 16)
    variant = build_variant(convnet, CompressionConfig(precision="int8-static", calib_samples=16),
                            CompressContext(workdir=tmp_path, calib_data=calib))
    res = profile_variant(variant, "onnxruntime", _feeds(convnet), batch_size=BATCH, threads=1, workdir=tmp_path,
                          runs=8, timing=QUICK, with_peaks=False)
    by_name = {r["name"]: r for r in res["layers"]}
    table = {r["name"]: r for r in count_onnx(variant.onnx_path, {"x": (BATCH, 8, 16, 16)}).by_module if r["macs"]}
    assert table and set(table) <= set(by_name)
    convs = [by_name[n] for n in table if by_name[n]["op_type"] == "Conv"]
    assert convs
    for layer in convs:
        assert layer["quantized_in_graph"] is True
        assert layer["int8_kernel"] is True and layer["precision"] == "int8"
        assert any(k in ("QLinearConv", "ConvInteger") for k in layer["kernels"]), layer["kernels"]
    kernels = res["kernels"]
    assert kernels["int8_kernel_layers"] >= len(convs) and kernels["quantized_but_float"] == []
    assert kernels["quant_time_share"] > 0  # the input still has to be quantized


def test_torch_profile_times_modules_of_the_flops_table(tmp_path):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(16)
            self.act = torch.nn.ReLU()
            self.fc = torch.nn.Linear(16, 4)

        def forward(self, x):
            y = self.act(self.bn(self.conv(x)))
            y = torch.nn.functional.adaptive_avg_pool2d(y * 2.0, 1).flatten(1)  # functional: outside modules
            return self.fc(y)

    from benchmark.config import InputSpec
    from benchmark.models.base import LoadedModel

    model = LoadedModel(name="net", format="torch", framework="torch", torch_module=Net().eval(),
                        inputs=[InputSpec("x", ("batch", 3, 16, 16), "float32")])
    variant = reference_variant(model)
    res = profile_variant(variant, "pytorch", model.example_inputs(BATCH), batch_size=BATCH, threads=1,
                          workdir=tmp_path, runs=6, timing=QUICK, with_peaks=False)
    by_name = {r["name"]: r for r in res["layers"]}
    table = {r["name"]: r for r in count_model(variant, batch_size=BATCH).by_module}
    assert {"conv", "bn", "act", "fc", OUTSIDE_MODULES} <= set(by_name)
    assert by_name["conv"]["macs"] == table["conv"]["macs"] > 0 and by_name["fc"]["macs"] == table["fc"]["macs"]
    assert by_name["conv"]["op_type"] == "Conv2d" and "conv" in by_name["conv"]["kernels"][0]
    assert by_name[OUTSIDE_MODULES]["time_ms"] > 0 and by_name[OUTSIDE_MODULES]["macs"] == 0
    assert all(r["time_ms"] >= 0 for r in res["layers"])
    assert any(op["name"].startswith("aten::") for op in res["ops"])
    assert 0.2 * res["end_to_end_p50_ms"] < res["layers_total_ms"] < 5.0 * res["end_to_end_p50_ms"]


def test_profile_refuses_other_backends_and_devices(convnet, tmp_path):
    from benchmark.errors import ConfigError

    with pytest.raises(ConfigError, match="backend onnxruntime or pytorch"):
        profile_variant(reference_variant(convnet), "tensorrt", {}, batch_size=1, workdir=tmp_path)
    with pytest.raises(ConfigError, match="device must be cpu"):
        profile_variant(reference_variant(convnet), "onnxruntime", {}, batch_size=1, device="cuda", workdir=tmp_path)


# --- pure helpers ------------------------------------------------------------------------------
def _event(cat, name, ts, dur, **args):
    return {"cat": cat, "name": name, "ts": ts, "dur": dur, "args": args}


def test_parse_trace_skips_warmup_runs_and_assigns_nodes_to_runs():
    events = []
    for run in range(4):
        t0 = run * 1000
        events.append(_event("Session", "model_run", t0, 500))
        events.append(_event("Node", "conv_kernel_time", t0 + 10, 100 + run, op_name="Conv",
                             provider="CPUExecutionProvider", input_type_shape=[{"float": [1, 3]}, {"float": [3]}]))
        events.append(_event("Node", "conv_fence_before", t0 + 5, 1))  # not a kernel event
        if run == 3:
            events.append(_event("Node", "conv_kernel_time", t0 + 200, 50, op_name="Conv"))  # a node run twice
    nodes, runs = parse_ort_trace(events, skip_runs=2)
    assert runs == [0.5, 0.5]
    (conv,) = nodes
    assert conv.kernel == "Conv" and conv.provider == "CPUExecutionProvider" and conv.input_types == ["float", "float"]
    assert conv.per_run_ms == {0: pytest.approx(0.102), 1: pytest.approx(0.153)}
    from benchmark.errors import MeasurementError

    with pytest.raises(MeasurementError, match="need more than 2"):
        parse_ort_trace(events[:3], skip_runs=2)


def test_median_per_run_counts_runs_a_node_missed_as_zero():
    assert median_per_run({0: 1.0, 1: 3.0, 2: 2.0}, 3) == 2.0
    assert median_per_run({0: 4.0}, 3) == 0.0


def test_runtime_names_map_back_to_graph_nodes():
    from onnx import helper

    g = helper.make_graph([
        helper.make_node("Conv", ["x", "w"], ["c"], name="node_conv"),
        helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn_out"], name="node_bn"),
        helper.make_node("Relu", ["bn_out"], ["relu"], name="node_relu"),
        helper.make_node("MaxPool", ["relu"], ["pool"], name="node_pool", kernel_shape=[2, 2]),
        helper.make_node("MatMul", ["pool", "w2"], ["mm"], name="node_matmul"),
        helper.make_node("Conv", ["mm", "w3"], ["c0"], name="node_Conv_0"),
    ], "g", [], [])
    runtime = [RuntimeNode("relu_nchwc", "Conv"), RuntimeNode("pool_nchwc", "MaxPool"),
               RuntimeNode("node_matmul/MatMulScaleFusion/", "FusedMatMul"),
               RuntimeNode("node_Conv_0_token_3", "QLinearConv"), RuntimeNode("ReorderOutput", "ReorderOutput"),
               RuntimeNode("relu_q", "QuantizeLinear"), RuntimeNode("node_relu", "Relu")]
    mapping = map_runtime_nodes(g, runtime, {"node_conv", "node_matmul", "node_Conv_0"})
    assert mapping == {"relu_nchwc": "node_conv",  # a Conv kernel named after the Relu output climbs to the Conv
                       "pool_nchwc": "node_pool", "node_matmul/MatMulScaleFusion/": "node_matmul",
                       "node_Conv_0_token_3": "node_Conv_0", "ReorderOutput": None, "relu_q": None,
                       "node_relu": "node_relu"}


def test_quantized_graph_nodes_and_kernel_precision():
    from onnx import helper

    g = helper.make_graph([
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="dq"),
        helper.make_node("Conv", ["x", "w"], ["y"], name="qconv"),
        helper.make_node("Conv", ["y", "w_f"], ["z2"], name="fconv"),
        helper.make_node("MatMulInteger", ["a", "b"], ["c"], name="mmi"),
    ], "g", [], [])
    assert quantized_graph_nodes(g) == {"qconv", "mmi"}
    assert kernel_precision("QLinearConv", ["uint8"]) == "int8"
    assert kernel_precision("MatMulInteger", ["uint8", "int8"]) == "int8"
    assert kernel_precision("DequantizeLinear", ["uint8"]) == "quant"
    assert kernel_precision("Conv", ["float16", "float16"]) == "fp16"
    assert kernel_precision("NhwcMaxPool", ["uint8"]) == "int8"
    assert kernel_precision("Reshape", ["int64"]) == "other"


def test_torchscript_profile_keeps_all_time_outside_modules(tmp_path):
    import torch

    from benchmark.config import InputSpec
    from benchmark.models.base import LoadedModel

    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU()).eval())
    model = LoadedModel(name="ts", format="torchscript", framework="torch", torch_module=scripted,
                        inputs=[InputSpec("x", ("batch", 3, 16, 16), "float32")])
    res = profile_variant(reference_variant(model), "pytorch", model.example_inputs(2), batch_size=2, threads=1,
                          workdir=tmp_path, runs=5, timing=QUICK, with_peaks=False)
    assert [r["name"] for r in res["layers"]] == [OUTSIDE_MODULES]
    assert res["layers"][0]["time_ms"] > 0
    assert any("TorchScript" in n for n in res["notes"])
    assert any("conv" in op["name"] for op in res["ops"])


def test_layer_times_median_and_mean():
    from benchmark.measure.profile import layer_times

    assert layer_times({0: 1.0, 1: 5.0, 2: 3.0}, 4) == {"time_ms": 2.0, "time_mean_ms": 2.25}

"""Precision compressions (fp16, bf16, int8-dynamic, int8-static, mixed) and real-world ONNX prep.

Tiny purpose-made models trained for a few steps on scikit-learn's digits: a conv-bn-relu net, an
attention-ish net (rows of the image as tokens, softmax attention, LayerNorm) and a conv-only net.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.compress import onnx_prep, quantize, reference_variant
from benchmark.compress.base import COMPRESSIONS, CompressContext
from benchmark.config import CompressionConfig, InputSpec
from benchmark.data import get_dataset
from benchmark.data.base import Dataset
from benchmark.errors import CompressionError, ConfigError
from benchmark.models.base import LoadedModel
from benchmark.models.export import ensure_onnx

IMAGE = InputSpec("image", ("batch", 1, 8, 8), "float32")


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, image):
        return self.fc(self.features(image).flatten(1))


class TinyAttention(nn.Module):
    """The 8 rows of the image are 8 tokens of width 8: embed, one softmax attention, LayerNorm, head."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, 10)

    def forward(self, image):
        x = self.embed(image.flatten(1, 2))
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) * 0.25, dim=-1)
        x = self.norm(x + att @ self.v(x))
        return self.head(x.mean(1))


class ConvOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 10, 3, padding=1),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, image):
        return self.body(image)


def _train(module: nn.Module, data: Dataset, steps: int = 120) -> nn.Module:
    """A few Adam steps on digits, single-threaded (tiny ops run fastest without thread hand-offs)."""
    torch.manual_seed(0)
    x = torch.from_numpy(data.arrays["image"])
    y = torch.from_numpy(data.labels)
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    module.train()
    gen = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(module(x[idx]), y[idx]).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return module.eval()


@pytest.fixture(scope="module")
def digits():
    return {"train": get_dataset("digits", "train"), "calib": get_dataset("digits", "calib"),
            "test": get_dataset("digits", "test")}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("quantize")


def _reference(name: str, module: nn.Module, workdir):
    model = LoadedModel(name=name, format="state_dict", framework="torch", inputs=[IMAGE], torch_module=module)
    ref = reference_variant(model)
    ensure_onnx(ref, workdir)
    assert ref.onnx_path is not None and ref.onnx_path.exists()
    return ref


@pytest.fixture(scope="module")
def cnn(digits, workdir):
    torch.manual_seed(0)
    return _reference("tiny-cnn", _train(TinyCNN(), digits["train"]), workdir)


@pytest.fixture(scope="module")
def attention(digits, workdir):
    torch.manual_seed(0)
    return _reference("tiny-attention", _train(TinyAttention(), digits["train"], steps=500), workdir)


@pytest.fixture(scope="module")
def conv_only(digits, workdir):
    torch.manual_seed(0)
    return _reference("conv-only", ConvOnly().eval(), workdir)


@pytest.fixture
def ctx(digits, tmp_path):
    return CompressContext(workdir=tmp_path, calib_data=digits["calib"])


def _apply(name: str, variant, ctx, **cfg):
    return COMPRESSIONS.get(name)(variant, CompressionConfig(precision=name, **cfg), ctx)


def onnx_logits(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 128]})[0] for i in range(0, len(x), 128)])


def torch_logits(variant, x: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(x)
    prec = variant.torch_precision
    with torch.no_grad():
        if prec in ("fp16", "bf16"):
            out = variant.torch_module(t.to(torch.float16 if prec == "fp16" else torch.bfloat16))
        elif prec.startswith("autocast-"):
            with torch.autocast("cpu", dtype=torch.bfloat16 if prec.endswith("bf16") else torch.float16):
                out = variant.torch_module(t)
        else:
            out = variant.torch_module(t)
    return out.float().numpy()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean())


def _unchanged(ref, onnx_path):
    assert ref.records == [] and ref.torch_precision == "fp32" and ref.onnx_path == onnx_path


# ---------------------------------------------------------------------------------------------
# int8-static


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_int8_static_conv_net_each_calibration_method(cnn, ctx, digits, method):
    src = cnn.onnx_path
    v = _apply("int8-static", cnn, ctx, calib_method=method, calib_samples=96)
    assert not [w for w in v.warnings if "calibration samples" in w]  # 96 of 96: nothing to say
    _unchanged(cnn, src)
    rec = v.records[-1]
    assert rec.changed and rec.method == "int8-static" and v.precision == "int8-static"
    d = rec.details["onnx"]
    assert d["nodes_quantized"] > 0 and d["quantized_ops"]["Conv"] == 2
    assert d["qdq"]["QuantizeLinear"] > 0 and d["qdq"]["int8_weight_initializers"] >= 3
    assert d["calibration"]["method"] == method and d["calibration"]["samples"] == 96
    assert len(v.calib_data) == 96  # kept on the variant: TensorRT calibrates on the same samples
    assert d["calibration"]["ranges"]["tensors"] > 0 and d["calibration"]["ranges"]["max"] > 0
    assert d["per_channel"] is True and d["int8_format"] in ("u8s8", "s8s8") and d["int8_format_reason"]
    assert v.onnx_path != src and onnx_prep.op_counts(onnx_prep.load_model(v.onnx_path)).get("QuantizeLinear", 0) > 0
    x, y = digits["test"].arrays["image"], digits["test"].labels
    fp32 = accuracy(onnx_logits(src, x), y)
    assert fp32 > 0.8, "the tiny CNN should have learned digits"
    assert accuracy(onnx_logits(v.onnx_path, x), y) >= fp32 - 0.03
    # PyTorch side: FX static INT8 with conv-bn-relu fused
    t = rec.details["torch"]
    assert v.torch_precision == "int8" and v.torch_module is not None
    assert t["fused_modules"] == 2 and t["batchnorms_folded"] == 2 and t["quantized_modules"] >= 3
    assert accuracy(torch_logits(v, x), y) >= accuracy(torch_logits(cnn, x), y) - 0.03
    assert method in rec.summary and "INT8" in rec.summary


def test_int8_static_attention_net_keeps_softmax_and_norm_float(attention, ctx, digits):
    v = _apply("int8-static", attention, ctx, calib_samples=64)
    rec = v.records[-1]
    d = rec.details["onnx"]
    assert "attention model" in d["recipe"]
    assert d["nodes_quantized"] > 0 and set(d["quantized_ops"]) <= {"MatMul", "Gemm"}
    assert "Softmax" in d["float_ops"] and "LayerNormalization" in d["float_ops"]
    x, y = digits["test"].arrays["image"], digits["test"].labels
    fp32 = accuracy(onnx_logits(attention.onnx_path, x), y)
    assert fp32 > 0.7, "the tiny attention net should have learned digits"
    assert accuracy(onnx_logits(v.onnx_path, x), y) >= fp32 - 0.03
    assert "attention model" in rec.details["torch"]["recipe"]
    if v.torch_module is not None:
        assert accuracy(torch_logits(v, x), y) >= accuracy(torch_logits(attention, x), y) - 0.03


def test_int8_static_s8s8_format_is_recorded_and_used(cnn, ctx):
    from onnx import TensorProto

    v = _apply("int8-static", cnn, ctx, int8_format="s8s8", calib_samples=32)
    d = v.records[-1].details["onnx"]
    assert d["int8_format"] == "s8s8" and "s8s8 asked for" in d["int8_format_reason"]
    assert d["calibration"]["samples"] == 32
    assert [w for w in v.records[-1].warnings if "32 calibration samples is below 64" in w]  # few samples: said
    model = onnx_prep.load_model(v.onnx_path)
    inits = {i.name: i for i in model.graph.initializer}
    zps = [inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
    assert zps and set(zps) == {TensorProto.INT8}
    implied = quantize.ranges_from_qdq(model)  # the fallback when ORT gives no calibration cache
    assert implied["tensors"] == len(zps) and implied["first"]["image"][1] == pytest.approx(1.0, abs=0.01)


def test_choose_int8_format_from_cpu_flags():
    fmt, rr, why = quantize.choose_int8_format("auto", {"avx2", "avx512_vnni"}, "x86_64")
    assert (fmt, rr) == ("u8s8", False) and "avx512_vnni" in why
    fmt, rr, why = quantize.choose_int8_format("auto", {"avx2"}, "x86_64")
    assert (fmt, rr) == ("u8s8", True) and "no VNNI" in why
    fmt, rr, why = quantize.choose_int8_format("auto", {"asimd"}, "aarch64")
    assert fmt == "u8s8" and not rr and "aarch64" in why
    assert quantize.choose_int8_format("s8s8", {"amx_int8"}, "x86_64")[0] == "s8s8"


# ---------------------------------------------------------------------------------------------
# Calibration data problems


def test_int8_static_without_calibration_data_is_a_config_error(cnn, tmp_path):
    with pytest.raises(ConfigError, match="needs calibration data: pass --data"):
        _apply("int8-static", cnn, CompressContext(workdir=tmp_path))


@pytest.mark.parametrize("arrays, needle", [
    ({"image": np.zeros((10, 1, 7, 7), np.float32)}, "dim 2 must be 8"),
    ({"image": np.zeros((10, 1, 8, 8), np.float32), "mask": np.zeros((10, 8), np.float32)}, "unknown array(s) 'mask'"),
    ({"image": np.zeros((10, 64), np.float32)}, "input 'image' expects"),
])
def test_bad_calibration_data_is_one_line_config_error(cnn, tmp_path, arrays, needle):
    ctx = CompressContext(workdir=tmp_path, calib_data=Dataset("bad", arrays))
    with pytest.raises(ConfigError) as err:
        _apply("int8-static", cnn, ctx)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg and "image" in msg


def test_fixed_batch_model_needs_a_full_batch(tmp_path):
    model = LoadedModel(name="fixed", format="onnx", framework="onnx", inputs=[InputSpec("x", (4, 16))])
    data = Dataset("two", {"x": np.zeros((2, 16), np.float32)})
    with pytest.raises(ConfigError, match="fixed batch size is 4"):
        quantize.calibration_batches(data, reference_variant(model))
    data = Dataset("ten", {"x": np.zeros((10, 16), np.float32)})
    assert [len(b["x"]) for b in quantize.calibration_batches(data, reference_variant(model))] == [4, 4]


# ---------------------------------------------------------------------------------------------
# Real-world ONNX: Constant-node weights, opset 12, subgraphs


def _constant_mlp_opset12(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (32,)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (32, 4)).astype(np.float32)
    const = lambda name, arr: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name + "_t"))  # noqa: E731
    nodes = [
        const("w1", w1), const("b1", b1), const("w2", w2),
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="add1"),
        helper.make_node("Relu", ["hb"], ["r"], name="relu1"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(nodes, "const_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=7)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model


@pytest.fixture
def const_mlp(tmp_path):
    path = tmp_path / "const_mlp_opset12.onnx"
    _constant_mlp_opset12(path)
    model = LoadedModel(name="const-mlp", format="onnx", framework="onnx", inputs=[InputSpec("x", ("N", 16))], onnx_path=path)
    data = Dataset("rand", {"x": np.random.default_rng(1).normal(size=(64, 16)).astype(np.float32)})
    return reference_variant(model), CompressContext(workdir=tmp_path / "work", calib_data=data)


def test_constant_weights_opset12_model_quantizes_to_valid_int8(const_mlp):
    import onnx

    ref, ctx = const_mlp
    v = _apply("int8-static", ref, ctx, calib_samples=64)
    rec = v.records[-1]
    d = rec.details["onnx"]
    assert rec.changed
    assert d["prep"]["constants_converted_to_initializers"] == 3
    assert d["prep"]["opset_before"] == 12 and d["prep"]["opset_after"] >= 13 and d["per_channel"] is True
    # constant folding may fuse MatMul + Add into Gemm
    assert d["quantized_ops"].get("MatMul", 0) + d["quantized_ops"].get("Gemm", 0) == 2
    assert d["qdq"]["int8_weight_initializers"] == 2
    assert any("upgraded" in w for w in rec.warnings)
    onnx.checker.check_model(str(v.onnx_path))
    x = np.random.default_rng(2).normal(size=(32, 16)).astype(np.float32)
    assert cosine(onnx_logits(v.onnx_path, x), onnx_logits(ref.onnx_path, x)) > 0.99
    assert rec.details["torch"]["skipped"] and v.torch_module is None


def test_opset_upgrade_failure_falls_back_to_per_tensor_and_says_so(const_mlp, monkeypatch):
    ref, ctx = const_mlp
    monkeypatch.setattr(onnx_prep, "upgrade_opset", lambda model, target=13: (model, "converter refused"))
    v = _apply("int8-static", ref, ctx, calib_samples=32)
    rec = v.records[-1]
    assert rec.details["onnx"]["per_channel"] is False and "per-tensor" in rec.summary
    assert any("per-tensor" in w and "converter refused" in w for w in rec.warnings)
    assert rec.details["onnx"]["nodes_quantized"] > 0


def test_constants_to_initializers_and_subgraph_report(tmp_path):
    from onnx import TensorProto, helper

    model = _constant_mlp_opset12(tmp_path / "m.onnx")
    out, n = onnx_prep.constants_to_initializers(model)
    assert n == 3 and not any(node.op_type == "Constant" for node in out.graph.node)
    assert sum(node.op_type == "Constant" for node in model.graph.node) == 3, "input model must not change"
    assert {i.name for i in out.graph.initializer} == {"w1", "b1", "w2"}

    branch = lambda name: helper.make_graph(  # noqa: E731
        [helper.make_node("Relu", ["x"], [name + "_r"]), helper.make_node("Neg", [name + "_r"], [name + "_y"])],
        name, [], [helper.make_tensor_value_info(name + "_y", TensorProto.FLOAT, ["N", 4])])
    g = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branch("then"), else_branch=branch("else"))], "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, []), helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    rep = onnx_prep.subgraph_report(m)
    assert rep == {"control_flow_nodes": {"If": 1}, "nodes_inside_subgraphs": 4}
    _, prep = onnx_prep.prepare_for_quantization(m)
    assert any("4 nodes inside their subgraphs stay float" in w for w in prep.warnings)


def test_topological_sort_fixes_node_order(tmp_path):
    model = _constant_mlp_opset12(tmp_path / "m.onnx")
    shuffled = onnx_prep.copy_model(model)
    nodes = list(shuffled.graph.node)[::-1]
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(nodes)
    with pytest.raises(CompressionError, match="topologically sorted"):
        onnx_prep.check_model(shuffled, "shuffled model")
    onnx_prep.check_model(onnx_prep.topological_sort(shuffled), "sorted model")


# ---------------------------------------------------------------------------------------------
# fp16 / bf16


def test_fp16_and_bf16_match_fp32(cnn, attention, ctx, digits):
    x = digits["test"].arrays["image"][:128]
    for ref in (cnn, attention):
        v16 = _apply("fp16", ref, ctx)
        rec = v16.records[-1]
        assert rec.changed and rec.details["onnx"]["fp16_nodes"] > 0
        assert "TopK" in rec.details["onnx"]["op_block_list"] and rec.details["onnx"]["keep_io_types"]
        assert cosine(onnx_logits(v16.onnx_path, x), onnx_logits(ref.onnx_path, x)) >= 0.999
        assert v16.torch_precision == "fp16" and next(v16.torch_module.parameters()).dtype == torch.float16
        assert next(ref.torch_module.parameters()).dtype == torch.float32, "the input module must stay FP32"
        assert cosine(torch_logits(v16, x), torch_logits(ref, x)) >= 0.999

        vb = _apply("bf16", ref, ctx)
        assert vb.onnx_path is None and any("ONNX Runtime" in w for w in vb.records[-1].warnings)
        assert vb.torch_precision == "bf16"
        assert cosine(torch_logits(vb, x), torch_logits(ref, x)) >= 0.999


def test_bf16_of_onnx_only_model_fails_clearly(const_mlp):
    ref, ctx = const_mlp
    with pytest.raises(CompressionError, match="bf16 needs a PyTorch FP32 module"):
        _apply("bf16", ref, ctx)


# ---------------------------------------------------------------------------------------------
# int8-dynamic


def test_int8_dynamic_conv_only_net_reports_nothing_quantized(conv_only, ctx):
    v = _apply("int8-dynamic", conv_only, ctx)
    rec = v.records[-1]
    assert rec.changed is False and "nothing" in rec.summary
    assert "no nn.Linear" in rec.details["torch"]["skipped"]
    assert rec.details["onnx"]["nodes_quantized"] == 0 and rec.details["onnx"]["float_ops"]["Conv"] == 2
    assert any("ConvInteger" in w for w in rec.warnings)
    # nothing changed: the variant is the unchanged model, and says so
    assert v.onnx_path == conv_only.onnx_path and v.torch_precision == "fp32"


def test_int8_dynamic_attention_net_quantizes_linear_layers(attention, ctx, digits):
    v = _apply("int8-dynamic", attention, ctx)
    rec = v.records[-1]
    assert rec.changed
    d = rec.details["onnx"]
    assert d["per_channel"] is True and d["nodes_quantized"] >= 5 and d["quantized_ops"].get("MatMulInteger", 0) >= 5
    assert rec.details["torch"]["linear_quantized"] == rec.details["torch"]["linear_modules"] == 5
    assert v.torch_precision == "int8"
    x = digits["test"].arrays["image"][:128]
    assert cosine(onnx_logits(v.onnx_path, x), onnx_logits(attention.onnx_path, x)) > 0.99
    assert cosine(torch_logits(v, x), torch_logits(attention, x)) > 0.99


def test_int8_dynamic_quantizes_recurrent_layers_on_both_sides(tmp_path):
    """The sequence-lstm look-alike as an eager model: PyTorch's LSTM and ORT's LSTM both become INT8."""
    from sample_models.lookalikes import build_lookalike

    la = build_lookalike("sequence-lstm", tmp_path)
    specs = [InputSpec("x", (40, 1, 40), batch_axis=None), InputSpec("h0", (1, 1, 128)), InputSpec("c0", (1, 1, 128))]
    model = LoadedModel("seq", "pickle", "torch", specs, torch_module=la.module)
    v = _apply("int8-dynamic", reference_variant(model), CompressContext(workdir=tmp_path / "w"))
    rec = v.records[-1]
    assert rec.details["torch"]["recurrent_quantized"] == rec.details["torch"]["recurrent_modules"] == 1
    assert "1/1 LSTM/GRU" in rec.summary and v.torch_precision == "int8"
    assert rec.details["onnx"]["quantized_ops"].get("DynamicQuantizeLSTM") == 1
    args = tuple(torch.from_numpy(a) for a in la.feeds.values())
    with torch.no_grad():
        ref, got = la.module(*args)[0], v.torch_module(*args)[0]
    assert 0 < float((ref - got).abs().max()) < 0.05  # really INT8, still close


# ---------------------------------------------------------------------------------------------
# mixed


def test_mixed_int8_keeps_named_layers_fp32(cnn, ctx):
    v = _apply("mixed", cnn, ctx, mixed_base="int8", exclude_layers=("fc",), calib_samples=32)
    rec = v.records[-1]
    d = rec.details["onnx"]
    assert d["excluded_layers"]["fc"] and d["float_ops"].get("Gemm") == 1 and "Gemm" not in d["quantized_ops"]
    assert d["quantized_ops"]["Conv"] == 2
    assert rec.details["torch"]["excluded_modules"] == ["fc"]
    assert type(dict(v.torch_module.named_modules())["fc"]) is nn.Linear
    assert "kept FP32" in rec.summary and rec.details["mixed_base"] == "int8"


def test_mixed_unknown_layer_is_config_error(cnn, ctx):
    with pytest.raises(ConfigError, match="'nope'"):
        _apply("mixed", cnn, ctx, mixed_base="int8", exclude_layers=("nope",))


def test_mixed_fp16_blocks_sensitive_ops_and_uses_autocast(attention, ctx, digits):
    v = _apply("mixed", attention, ctx, mixed_base="fp16", exclude_layers=("head",))
    rec = v.records[-1]
    d = rec.details["onnx"]
    assert {"Softmax", "LayerNormalization"} <= set(d["sensitive_ops_kept_fp32"])
    assert d["fp32_ops"].get("Softmax") == 1 and d["fp16_nodes"] > 0 and d["node_block_list"]
    assert v.torch_precision == "autocast-fp16" and rec.details["torch"]["modules_kept_fp32"] == ["head"]
    x = digits["test"].arrays["image"][:128]
    assert cosine(onnx_logits(v.onnx_path, x), onnx_logits(attention.onnx_path, x)) >= 0.999
    assert cosine(torch_logits(v, x), torch_logits(attention, x)) >= 0.999
    assert dataclasses.replace(v).records[-1].method == "mixed"


# ---------------------------------------------------------------------------------------------
# The built-in digits CNN sample (its real accuracy, on the held-out test split)


def _sample_ready(name: str) -> bool:
    from benchmark.models.samples import get_sample

    try:
        return get_sample(name).weights.exists()
    except ConfigError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _sample_ready("digits-cnn"), reason="sample digits-cnn has no trained weights here")
def test_digits_cnn_sample_int8_static_within_one_point(tmp_path, digits):
    from benchmark.models.loaders import load_sample

    model = load_sample("digits-cnn")
    ref = reference_variant(model)
    ensure_onnx(ref, tmp_path)
    ctx = CompressContext(workdir=tmp_path, calib_data=digits["calib"])
    x, y = digits["test"].arrays["image"], digits["test"].labels
    fp32 = accuracy(onnx_logits(ref.onnx_path, x), y)
    assert fp32 > 0.95
    for method in ("minmax", "entropy", "percentile"):
        v = _apply("int8-static", ref, ctx, calib_method=method)
        assert accuracy(onnx_logits(v.onnx_path, x), y) >= fp32 - 0.01, method
        assert accuracy(torch_logits(v, x), y) >= fp32 - 0.01, method


def test_preprocess_keeps_ort_temp_files_out_of_the_working_dir(cnn, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(cwd)
    notes: list[str] = []
    # the exported graph as is (not constant-folded): ORT's symbolic shape inference gives up on it
    out = quantize.preprocess(onnx_prep.load_model(cnn.onnx_path), work, notes)
    assert out.exists() and list(cwd.iterdir()) == []
    assert any("symbolic shape inference failed" in n for n in notes)

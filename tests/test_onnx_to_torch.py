"""ONNX -> PyTorch conversion on look-alikes of real models, verified against ONNX Runtime."""
from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from benchmark.compress.prune import prune_structured_module
from benchmark.errors import BenchmarkError, ConversionError
from benchmark.models import onnx_ops
from benchmark.models.onnx_to_torch import (
    ATOL,
    CACHE_FORMAT,
    RTOL,
    build_module,
    clean_graph,
    convert,
    convert_cached,
    convert_verified,
    load_conversion,
    resolve_identity_aliases,
    save_conversion,
    unsupported_nodes,
    verify,
)
from sample_models.lookalikes import SMALL, build_lookalike, export


@pytest.fixture(scope="module")
def lookalikes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lookalikes")
    return {name: build_lookalike(name, folder) for name in SMALL}


def _ort(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def _torch(module, feeds):
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


def _assert_close(got, ref):
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        assert np.abs(g.astype(np.float64) - r).max() <= ATOL + RTOL * np.abs(r).max()


# ---------------------------------------------------------------------------------------------
# Every look-alike converts and matches ONNX Runtime


@pytest.mark.parametrize("name", SMALL)
def test_lookalike_converts_and_matches_onnxruntime(lookalikes, name):
    la = lookalikes[name]
    conv = convert_verified(la.path, la.feeds)
    ver = conv.verification
    assert ver.ok and ver.reason is None
    assert len(ver.outputs) == len(onnx.load(str(la.path)).graph.output)
    for row in ver.outputs:
        assert row["max_abs_err"] <= row["limit"]
        assert row["cosine"] >= 0.9999
    assert ver.max_abs_err <= max(r["limit"] for r in ver.outputs)
    assert conv.record()["verification"]["max_abs_err"] == ver.max_abs_err
    assert conv.conversion_time_s > 0


def test_outputs_match_on_other_shapes_than_the_verification_feeds(lookalikes):
    """Dynamic axes stay dynamic: batch, sequence length and time differ from the verification feeds."""
    rng = np.random.default_rng(1)
    bert = convert(lookalikes["bert"].path).module
    feeds = {"input_ids": rng.integers(0, 1000, (3, 11)), "attention_mask": np.ones((3, 11), np.int64),
             "token_type_ids": np.zeros((3, 11), np.int64)}
    feeds["attention_mask"][0, 7:] = 0
    _assert_close(_torch(bert, feeds), _ort(lookalikes["bert"].path, feeds))
    seq = lookalikes["sequence-lstm"]
    feeds = dict(seq.feeds, x=rng.standard_normal((17, 1, 40)).astype(np.float32))
    _assert_close(_torch(convert(seq.path).module, feeds), _ort(seq.path, feeds))


def test_if_on_sample_rate_follows_the_input(lookalikes):
    """Both If branches are converted: 8 kHz audio (256 samples) takes the other front-end."""
    vad = lookalikes["silero-vad"]
    module = convert(vad.path).module
    rng = np.random.default_rng(2)
    feeds8k = {"input": rng.standard_normal((3, 256)).astype(np.float32),
               "state": np.zeros((2, 3, 128), np.float32), "sr": np.array(8000, dtype=np.int64)}
    got, ref = _torch(module, feeds8k), _ort(vad.path, feeds8k)
    _assert_close(got, ref)
    assert got[1].shape == (2, 3, 128)
    feeds16k = dict(feeds8k, input=rng.standard_normal((3, 512)).astype(np.float32), sr=np.array(16000, dtype=np.int64))
    assert not np.allclose(_torch(module, feeds16k)[0], got[0])
    _assert_close(_torch(module, feeds16k), _ort(vad.path, feeds16k))


@pytest.mark.parametrize("make", [
    lambda: nn.GRU(8, 16), lambda: nn.LSTM(8, 16, bidirectional=True), lambda: nn.LSTM(8, 16, batch_first=True),
    lambda: nn.GRU(8, 16, num_layers=2, bidirectional=True), lambda: nn.RNN(8, 16),
], ids=["gru", "bilstm", "lstm-batch-first", "bigru-2-layers", "rnn"])
def test_recurrent_layers_convert(tmp_path, make):
    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = make()

        def forward(self, x):
            y, h = self.rnn(x)
            return y, h[0] if isinstance(h, tuple) else h

    torch.manual_seed(0)
    x = torch.randn(5, 3, 8)
    path = export(Wrap().eval(), (x,), tmp_path / "rnn.onnx", ["x"], ["y", "h"], {"x": {0: "time"}})
    conv = convert_verified(path, {"x": x.numpy()})
    assert any(isinstance(m, (nn.LSTM, nn.GRU, nn.RNN)) for m in conv.module.modules())
    other = {"x": np.random.default_rng(0).standard_normal((9, 3, 8)).astype(np.float32)}
    assert verify(conv.module, path, other).ok


class KitchenSink(nn.Module):
    """Many ops at once: strided / dilated / depthwise / transposed convs, pools with ceil mode and
    padding, resize, BatchNorm, PReLU, InstanceNorm, reflect padding, split, LayerNorm, softmax on
    a non-last axis, top-k, arg-max, cumsum, einsum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.bn = nn.BatchNorm2d(4)
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 5)
        self.prelu = nn.PReLU(4)
        self.inorm = nn.InstanceNorm2d(4, affine=True)

    def forward(self, x):
        F = nn.functional
        y = F.leaky_relu(self.conv(x), 0.1)
        y = F.elu(self.dw(y)) + torch.tanh(y)
        y = F.avg_pool2d(F.max_pool2d(y, 3, 2, 1, ceil_mode=True), 2, 1, 1, count_include_pad=False)
        y = F.interpolate(F.interpolate(y, scale_factor=2.0, mode="nearest"), size=(16, 16), mode="bilinear")
        y = self.inorm(self.prelu(self.bn(self.up(y)) * torch.sigmoid(y[:, :4, :1, :1])))
        y = F.pad(y, (1, 2, 0, 1), mode="reflect")[..., :16, 1:17]
        a, b = torch.split(y, [1, 3], dim=1)
        z = self.ln(torch.cat([b, a.expand(-1, 1, -1, -1)], 1).mean(dim=(2,)))
        s = torch.softmax(self.fc(z), dim=-1) + torch.log_softmax(z[:, :, :5], dim=1)
        t = s.transpose(1, 2).reshape(s.shape[0], -1)
        k = torch.topk(t, 3, dim=1).values
        return torch.cat([torch.clamp(t, -0.5, 0.5).sum(1, keepdim=True), k, torch.argmax(t, 1, keepdim=True).float(),
                          torch.cumsum(t, 1)[:, -1:], torch.einsum("bi,bj->bij", k, k).flatten(1),
                          F.gelu(t[:, :3]), F.hardswish(t[:, :2]), torch.where(t > 0, t, t.abs().sqrt())], 1)


@pytest.mark.parametrize("opset", [12, 13, 17])
def test_many_ops_across_opsets(tmp_path, opset):
    """Attribute-vs-input forms (Squeeze/Unsqueeze/Split/ReduceSum axes, Clip bounds, legacy Softmax) all convert."""
    torch.manual_seed(0)
    model = KitchenSink().eval()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 16, 16)
    path = export(model, (x,), tmp_path / "ks.onnx", ["x"], ["y"], {"x": {0: "b"}}, opset=opset)
    conv = convert_verified(path, {"x": x.numpy()})
    assert conv.verification.ok
    assert len(conv.op_counts) > 35


# ---------------------------------------------------------------------------------------------
# Clean-ups


def test_identity_aliased_initializers_are_resolved(lookalikes):
    path = lookalikes["resnet-small"].path
    raw = onnx.load(str(path))
    aliases = [n for n in raw.graph.node if n.op_type == "Identity"]
    assert aliases, "the TorchScript exporter should have deduplicated the equal zero biases"
    with pytest.raises(ConversionError, match=r"Conv with a bias computed at run time \(.*node"):
        build_module(raw)
    fixed, n = resolve_identity_aliases(raw)
    assert n == len(aliases)
    assert not any(node.op_type == "Identity" for node in fixed.graph.node)
    inits = {i.name for i in fixed.graph.initializer}
    assert all(i in inits for node in fixed.graph.node if node.op_type == "Conv" for i in node.input[1:])
    assert any(node.op_type == "Identity" for node in raw.graph.node)  # the input model is untouched


def test_constant_node_weights_become_initializers(lookalikes):
    raw = onnx.load(str(lookalikes["paddle-convnet"].path))
    assert not raw.graph.initializer
    n_const = sum(n.op_type == "Constant" for n in raw.graph.node)
    cleaned, report = clean_graph(raw)
    assert report.constants_to_initializers == n_const > 0
    assert not any(n.op_type == "Constant" for n in cleaned.graph.node)
    module = build_module(cleaned)
    assert sum(isinstance(m, nn.Conv2d) for m in module.modules()) == 3
    assert any(isinstance(m, onnx_ops.AnyRankBatchNorm) for m in module.modules())  # BatchNorm on rank-2 features


def test_weights_land_in_pytorch_layers(lookalikes):
    bert = convert(lookalikes["bert"].path).module
    linears = [m for m in bert.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 12 and all(m.bias is not None for m in linears)  # MatMul + Add fused
    assert sum(isinstance(m, nn.Embedding) for m in bert.modules()) == 3
    assert sum(isinstance(m, nn.LayerNorm) for m in bert.modules()) == 5
    vad = convert(lookalikes["silero-vad"].path).module
    assert sum(isinstance(m, nn.LSTM) for m in vad.modules()) == 1
    assert sum(isinstance(m, nn.Conv1d) for m in vad.modules()) == 3  # encoder + one per If branch


# ---------------------------------------------------------------------------------------------
# Clear reasons


def _graph_with(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.example", 1)])


def test_missing_converters_are_named_in_one_line():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [])
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 2])
    model = _graph_with([
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Det", ["r"], ["y"], name="det_node"),
        helper.make_node("Foo", ["r"], ["z"], name="foo", domain="com.example"),
    ], [x], [y, z])
    with pytest.raises(ConversionError) as info:
        build_module(model)
    msg = str(info.value)
    assert msg == "no converter for Det (node det_node); no converter for com.example.Foo (node foo)"
    assert "\n" not in msg and isinstance(info.value, BenchmarkError)
    assert info.value.ops == ["no converter for Det", "no converter for com.example.Foo"]
    assert unsupported_nodes(model) == [("no converter for Det", "det_node"), ("no converter for com.example.Foo", "foo")]


def test_unsupported_variant_of_a_known_op_is_named(lookalikes):
    model = onnx.load(str(lookalikes["sequence-lstm"].path))
    lstm = next(n for n in model.graph.node if n.op_type == "LSTM")
    lstm.attribute.append(helper.make_attribute("clip", 3.0))
    with pytest.raises(ConversionError, match=rf"^LSTM with clip \(node {lstm.name}\)$"):
        build_module(clean_graph(model)[0])
    assert unsupported_nodes(onnx.load(str(lookalikes["sequence-lstm"].path))) == []


def test_mismatch_names_the_first_differing_node(lookalikes, monkeypatch):
    """A converter that computes the wrong thing is caught by verification, which names the node."""
    monkeypatch.setitem(onnx_ops.CONVERTERS, "Relu", lambda ctx: onnx_ops._op("Relu", torch.sigmoid, (0,)))
    la = lookalikes["resnet-small"]
    with pytest.raises(ConversionError) as info:
        convert_verified(la.path, la.feeds)
    msg = str(info.value)
    assert "output 'logits' differs from ONNX Runtime" in msg
    first_relu = next(n.name for n in onnx.load(str(la.path)).graph.node if n.op_type == "Relu")
    assert msg.endswith(f"first differing node: Relu ({first_relu})")
    assert "\n" not in msg


def test_bad_feeds_give_one_line_errors(lookalikes):
    la = lookalikes["resnet-small"]
    with pytest.raises(ConversionError, match="verification feeds lack input"):
        convert_verified(la.path, {})
    with pytest.raises(ConversionError, match="ONNX Runtime could not run the model"):
        convert_verified(la.path, {"input": np.zeros((1, 3, 64), np.float32)})


def test_runtime_failure_inside_the_module_names_the_node(lookalikes, monkeypatch):
    def broken(ctx):
        def fail(x):
            raise RuntimeError("shape '[7]' is invalid")
        return onnx_ops._op("Flatten", fail, (0,))

    monkeypatch.setitem(onnx_ops.CONVERTERS, "Flatten", broken)
    la = lookalikes["resnet-small"]
    with pytest.raises(ConversionError, match=r"failed on the verification inputs: ONNX node Flatten \(.*Flatten\): shape"):
        convert_verified(la.path, la.feeds)


# ---------------------------------------------------------------------------------------------
# Cache


def test_cache_roundtrip_loads_with_weights_only(lookalikes, tmp_path):
    la = lookalikes["mobilenetv2-small"]
    conv = convert_verified(la.path, la.feeds)
    cache = save_conversion(conv, tmp_path / "conv.pt")
    payload = torch.load(str(cache), weights_only=True)
    assert payload["format"] == CACHE_FORMAT and payload["onnx_sha256"] == conv.onnx_sha256
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())
    loaded = load_conversion(la.path, cache)
    assert loaded.from_cache and loaded.verification.max_abs_err == conv.verification.max_abs_err
    with torch.no_grad():
        conv.module.steps[next(iter(conv.module.steps))].weight.mul_(0)  # the cache holds its own weights
    np.testing.assert_array_equal(_torch(loaded.module, la.feeds)[0], _torch(convert(la.path).module, la.feeds)[0])


def test_cache_refuses_another_file_or_version(lookalikes, tmp_path):
    la, other = lookalikes["resnet-small"], lookalikes["paddle-convnet"]
    cache = save_conversion(convert_verified(la.path, la.feeds), tmp_path / "c.pt")
    with pytest.raises(ConversionError, match="another ONNX file"):
        load_conversion(other.path, cache)
    payload = torch.load(str(cache), weights_only=True)
    payload["converter_version"] = -1
    torch.save(payload, str(tmp_path / "old.pt"))
    with pytest.raises(ConversionError, match="converter v-1"):
        load_conversion(la.path, tmp_path / "old.pt")


def test_cache_key_covers_external_data(lookalikes, tmp_path):
    from benchmark.models.onnx_to_torch import cache_path_for

    la = lookalikes["resnet-small"]
    model = onnx.load(str(la.path))
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    conv = convert_verified(path, la.feeds)
    key = cache_path_for(path, tmp_path)
    data = (tmp_path / "ext.onnx.data").read_bytes()
    (tmp_path / "ext.onnx.data").write_bytes(data[:-4] + bytes(4))  # same .onnx file, other weights
    assert cache_path_for(path, tmp_path) != key
    assert convert(path).onnx_sha256 != conv.onnx_sha256


def test_convert_cached_converts_once(lookalikes, tmp_path):
    la = lookalikes["sequence-lstm"]
    first = convert_cached(la.path, la.feeds, tmp_path)
    second = convert_cached(la.path, la.feeds, tmp_path)
    assert not first.from_cache and second.from_cache
    assert len(list(tmp_path.glob("*.pt"))) == 1
    _assert_close(_torch(second.module, la.feeds), _ort(la.path, la.feeds))


# ---------------------------------------------------------------------------------------------
# Pruning a converted module


@pytest.mark.parametrize("name", ["resnet-small", "mobilenetv2-small"])
def test_structured_pruning_of_converted_module(lookalikes, name):
    la = lookalikes[name]
    module = convert_verified(la.path, la.feeds).module
    args = (torch.from_numpy(la.feeds["input"][:1]),)
    pruned, stats = prune_structured_module(copy.deepcopy(module), args, 0.5, "l2")
    assert stats["macs_after"] < 0.5 * stats["macs_before"]
    assert stats["params_after"] < 0.5 * stats["params_before"]
    assert not stats["groups_skipped"]
    assert stats["protected_layers"] == [next(n for n, m in module.named_modules() if isinstance(m, nn.Linear))]
    out = pruned(torch.from_numpy(la.feeds["input"]))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.slow
def test_pruned_converted_module_reexports_to_onnx(lookalikes, tmp_path):
    from benchmark.models.export import export_onnx
    from benchmark.models.loaders import load_model

    la = lookalikes["resnet-small"]
    module = convert(la.path).module
    pruned, _ = prune_structured_module(module, (torch.from_numpy(la.feeds["input"][:1]),), 0.5, "l2")
    info = export_onnx(pruned, load_model(la.path).inputs, tmp_path / "pruned.onnx")
    feeds = {"input": np.random.default_rng(3).standard_normal((3, 3, 64, 64)).astype(np.float32)}
    _assert_close(_ort(info.path, feeds), _torch(pruned, feeds))


# ---------------------------------------------------------------------------------------------
# Single-node edge cases against ONNX Runtime


_X = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) / 10 - 5
SINGLE_NODES = {
    "flatten-neg-axis": ("Flatten", {"axis": -1}, {}),
    "flatten-axis-0": ("Flatten", {"axis": 0}, {}),
    "slice-negative-step": ("Slice", {}, {"starts": [-1, 3], "ends": [-(2**63 - 1), 0], "axes": [1, 3], "steps": [-1, -2]}),
    "slice-clamped-end": ("Slice", {}, {"starts": [1], "ends": [2**63 - 1], "axes": [-2]}),
    "gather-negative-index": ("Gather", {"axis": 2}, {"indices": [[-1, 0], [1, -2]]}),
    "gather-scalar-index": ("Gather", {"axis": 1}, {"indices": np.array(-1)}),
    "unsqueeze-negative-axes": ("Unsqueeze", {}, {"axes": [-1, 0]}),
    "split-equal-parts": ("Split", {"axis": 3, "num_outputs": 3}, {}),
    "reduce-l2-keepdims-0": ("ReduceL2", {"keepdims": 0}, {"axes": [1, -1]}),
    "transpose-default": ("Transpose", {}, {}),
    "pad-edge": ("Pad", {"mode": "edge"}, {"pads": [0, 0, 1, 2, 0, 0, 2, 1]}),
    "cumsum-exclusive-reverse": ("CumSum", {"exclusive": 1, "reverse": 1}, {"axis": np.array(2)}),
    "maxpool-asymmetric-pads": ("MaxPool", {"kernel_shape": [2, 3], "pads": [0, 1, 1, 2], "strides": [1, 2]}, {}),
    "conv-same-upper": ("Conv", {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
                        {"w": np.random.default_rng(0).standard_normal((4, 3, 2, 3)).astype(np.float32)}),
}


@pytest.mark.parametrize("case", SINGLE_NODES)
def test_single_node_edge_cases(case):
    op, attrs, consts = SINGLE_NODES[case]
    inits = [onnx.numpy_helper.from_array(np.asarray(v, dtype=np.float32 if k == "w" else np.int64), k) for k, v in consts.items()]
    n_out = attrs.get("num_outputs", 1)
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, ["x", *consts], outs, name=f"{op}_node", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(_X.shape))],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    conv = convert_verified(model, {"x": _X})
    assert conv.verification.ok and len(conv.verification.outputs) == n_out

"""FLOPs/MACs, params, size and sparsity: hand-worked counts (fvcore style: 1 MAC = 1 "flop")
on tiny models, and the same counts from the ONNX graph of their exports."""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from benchmark.config import InputSpec
from benchmark.errors import ConfigError, MeasurementError
from benchmark.measure.flops import (
    recurrent_macs, recurrent_module_macs,
    FlopReport,
    conv_output_spatial,
    count_model,
    count_onnx,
    count_torch,
    einsum_macs,
    matmul_macs,
)
from benchmark.models.base import LoadedModel, Variant

# TorchScript inputs are part of what is counted; its deprecation notices are not under test.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


# ---------------------------------------------------------------- tiny models and helpers


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class LinearNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(x)


class GroupedConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, dilation=2, groups=4)

    def forward(self, x):
        return self.conv(x)


class BatchedMatMul(torch.nn.Module):
    def forward(self, a, b):
        return torch.matmul(a, b)


class ConvTransposeNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2)

    def forward(self, x):
        return self.up(x)


class MixedNet(torch.nn.Module):
    """Conv + BatchNorm + residual add + attention + linear head: ops that must not count as MACs
    (BN, add, softmax) next to ones that must (conv, linear, the two attention products)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 5)
        with torch.no_grad():  # non-trivial statistics so no exporter can drop the BN or zero biases
            for p in self.parameters():
                p.add_(torch.rand_like(p) * 0.1 + 0.05)
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x))) + x.mean(1, keepdim=True)
        t = y.flatten(2).transpose(1, 2)
        a, _ = self.attn(t, t, t, need_weights=False)
        return self.head(a.mean(1))


def export_ts(module, args, path, **kw):
    """TorchScript ONNX exporter (fast; fine for tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, **kw)
    return path


CONV_MACS = 8 * 8 * 8 * 3 * 3 * 3  # C_out * H_out * W_out * C_in * kH * kW = 13824
LINEAR_MACS = 4 * 16 * 10  # batch * in * out
# Grouped conv on 1x8x9x9: out = floor((9 + 2*1 - 2*(3-1) - 1) / 2) + 1 = 4; MACs = C_out*4*4*(C_in/groups)*3*3
GROUPED_MACS = 16 * 4 * 4 * (8 // 4) * 3 * 3
# (2,1,4,5) @ (3,5,6): batch broadcast to (2,3), M=4, K=5, N=6
MATMUL_MACS = 2 * 3 * 4 * 5 * 6
# ConvTranspose(4->6, k3, groups 2) on 1x4x5x5: each input element meets (6/2)*3*3 weights
CONVT_MACS = 4 * 5 * 5 * 3 * 3 * 3

CASES = {
    "conv": (ConvNet, (torch.randn(1, 3, 8, 8),), CONV_MACS, 8 * 3 * 9 + 8),
    "linear": (LinearNet, (torch.randn(4, 16),), LINEAR_MACS, 16 * 10 + 10),
    "grouped-conv": (GroupedConvNet, (torch.randn(1, 8, 9, 9),), GROUPED_MACS, 16 * 2 * 9 + 16),
    "batched-matmul": (BatchedMatMul, (torch.randn(2, 1, 4, 5), torch.randn(3, 5, 6)), MATMUL_MACS, 0),
    "conv-transpose": (ConvTransposeNet, (torch.randn(1, 4, 5, 5),), CONVT_MACS, 4 * 3 * 9 + 6),
}


# ---------------------------------------------------------------- hand-worked counts


@pytest.mark.parametrize("case", list(CASES))
def test_fvcore_counts_match_hand_worked(case):
    cls, args, macs, params = CASES[case]
    report = count_torch(cls().eval(), args)
    assert report.counter == "fvcore"
    assert report.macs == macs
    assert report.flops == 2 * macs
    assert report.params == params
    assert sum(r["macs"] for r in report.by_module) == macs


@pytest.mark.parametrize("case", list(CASES))
def test_onnx_export_gives_same_params_and_macs(case, tmp_path):
    cls, args, macs, params = CASES[case]
    path = export_ts(cls(), args, tmp_path / f"{case}.onnx")
    report = count_onnx(path)
    assert report.counter == "onnx-graph"
    assert (report.params, report.macs, report.flops) == (params, macs, 2 * macs)
    assert sum(r["macs"] for r in report.by_module) == macs
    assert report.size_bytes == path.stat().st_size


def test_conv_row_per_module():
    report = count_torch(ConvNet().eval(), (torch.randn(1, 3, 8, 8),))
    rows = {r["name"]: r for r in report.by_module}
    assert rows["conv"] == {"name": "conv", "op_type": "Conv2d", "macs": CONV_MACS, "params": 224}
    assert report.by_operator == {"conv": CONV_MACS}


def test_script_module_counts_with_flop_counter(tmp_path):
    scripted = torch.jit.script(ConvNet().eval())
    path = tmp_path / "conv.pt"
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path))
    report = count_torch(loaded, (torch.randn(1, 3, 8, 8),))
    assert report.counter == "torch.utils.flop_counter"
    assert report.macs == CONV_MACS  # FlopCounterMode's 2*MACs halved
    assert report.flops == 2 * CONV_MACS
    assert report.params == 224
    assert any("TorchScript" in w for w in report.warnings)
    assert [r["params"] for r in report.by_module] == [224]


def test_script_module_attention_on_cpu_is_counted():
    """PyTorch's counter has no formula for the CPU attention kernel; ours must add it."""

    class Attn(torch.nn.Module):
        def forward(self, q):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    q = torch.randn(2, 3, 16, 4)
    expected = 2 * 3 * 16 * 16 * (4 + 4)  # QK^T and AV
    assert count_torch(torch.jit.trace(Attn(), (q,)), (q,)).macs == expected
    assert count_torch(Attn(), (q,)).macs == expected


def test_exported_program_module_counts_with_fvcore_and_rows():
    model = MixedNet().eval()
    x = torch.randn(1, 3, 6, 6)
    eager = count_torch(model, (x,))
    gm = torch.export.export(model, (x,)).module()
    report = count_torch(gm, (x,))
    assert report.counter == "fvcore"
    assert report.macs == eager.macs > 0
    assert report.params == eager.params
    rows = {r["name"]: r for r in report.by_module}
    assert rows["conv"]["macs"] == 8 * 6 * 6 * 3 * 9
    assert sum(r["macs"] for r in report.by_module) == report.macs


def test_batchnorm_add_softmax_are_not_macs_and_are_listed(capfd):
    model = MixedNet().eval()
    x = torch.randn(2, 3, 6, 6)
    report = count_torch(model, (x,))
    n, l, e, h = 2, 36, 8, 2
    expected = (n * 8 * 36 * 3 * 9  # conv
                + 4 * n * l * e * e  # q, k, v, out projections
                + 2 * n * l * l * e  # QK^T and AV over all heads
                + n * e * 5)  # head
    assert report.macs == expected
    assert report.unsupported_ops.get("aten::batch_norm") == 1
    assert report.unsupported_ops.get("aten::add", 0) >= 1
    err = capfd.readouterr().err
    assert "fvcore" not in err and "unsupported" not in err.lower()


class AttnNet(torch.nn.Module):
    """Conv + ReLU + residual add + LayerNorm + attention + linear, no foldable BatchNorm."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.norm = torch.nn.LayerNorm(8)
        self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = torch.nn.Linear(8, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(torch.rand_like(p) * 0.1 + 0.05)

    def forward(self, x):
        y = torch.relu(self.conv(x)) + x.mean(1, keepdim=True)
        t = self.norm(y.flatten(2).transpose(1, 2))
        a, _ = self.attn(t, t, t, need_weights=False)
        return self.head(a.mean(1))


def _export_dynamo(model, args, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=True, external_data=False, verbose=False)
    return path


def test_fvcore_and_onnx_agree_exactly_without_batchnorm(tmp_path):
    model = AttnNet().eval()
    x = torch.randn(1, 3, 6, 6)
    torch_report = count_torch(model, (x,))
    assert "aten::layer_norm" in torch_report.unsupported_ops
    for name, path in (("dynamo", _export_dynamo(model, (x,), tmp_path / "attn-d.onnx")),
                       ("torchscript", export_ts(model, (x,), tmp_path / "attn-ts.onnx"))):
        onnx_report = count_onnx(path)
        assert onnx_report.params == torch_report.params, name
        assert abs(onnx_report.macs - torch_report.macs) <= 0.01 * torch_report.macs, name


def test_batchnorm_folding_changes_params_by_c_out_only(tmp_path):
    """Documented difference: exporters fold eval-mode BatchNorm into the preceding bias-free conv,
    which drops BN's 2*C_out parameters and adds a C_out bias; MACs do not change."""
    model = MixedNet().eval()
    x = torch.randn(1, 3, 6, 6)
    torch_report = count_torch(model, (x,))
    for path in (_export_dynamo(model, (x,), tmp_path / "mixed-d.onnx"),
                 export_ts(model, (x,), tmp_path / "mixed-ts.onnx")):
        onnx_report = count_onnx(path)
        assert abs(onnx_report.macs - torch_report.macs) <= 0.01 * torch_report.macs
        if "BatchNormalization" in onnx_report.unsupported_ops:
            assert onnx_report.params == torch_report.params
        else:
            assert onnx_report.params == torch_report.params - 8


def test_dynamic_batch_from_input_shapes(tmp_path):
    path = export_ts(ConvNet(), (torch.randn(1, 3, 8, 8),), tmp_path / "dyn.onnx",
                     input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    assert count_onnx(path, {"x": (4, 3, 8, 8)}).macs == 4 * CONV_MACS
    default = count_onnx(path)
    assert default.macs == CONV_MACS and default.batch_size == 1
    assert any("batch" in w for w in default.warnings)
    with pytest.raises(ConfigError, match="inputs: x"):
        count_onnx(path, {"images": (1, 3, 8, 8)})


def test_sparsity_of_half_zero_weight(tmp_path):
    model = torch.nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.arange(1.0, 17.0).reshape(4, 4))
        model.weight[:2] = 0.0
    report = count_torch(model, (torch.randn(1, 4),))
    assert report.sparsity == pytest.approx(0.5)
    assert count_onnx(export_ts(model, (torch.randn(1, 4),), tmp_path / "half.onnx")).sparsity == pytest.approx(0.5)


def test_sparsity_sees_pruning_masks():
    model = torch.nn.Linear(10, 10, bias=False)
    from torch.nn.utils import prune

    prune.l1_unstructured(model, "weight", amount=0.3)
    report = count_torch(model, (torch.randn(1, 10),))
    assert report.params == 100
    assert report.sparsity == pytest.approx(0.3)


# ---------------------------------------------------------------- ONNX graphs built by hand


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_constant_node_weights_count_as_params():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["W"], value=numpy_helper.from_array(w, "W")),
        helper.make_node("Constant", [], ["B"], value=numpy_helper.from_array(b, "B")),
        helper.make_node("Constant", [], ["scale"], value=numpy_helper.from_array(np.array(0.5, np.float32))),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([2, 3, 1], np.int64))),
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "B"], ["h2"]),
        helper.make_node("Mul", ["h2", "scale"], ["h3"]),
        helper.make_node("Reshape", ["h3", "shape"], ["y"]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    report = count_onnx(model)
    assert report.params == 4 * 3 + 3  # W and B; the scalar and the int64 shape are not weights
    assert report.macs == 2 * 4 * 3
    assert report.by_operator == {"MatMul": 24}
    assert {r["name"]: r["params"] for r in report.by_module} == {"mm": 12, "h2": 3}
    assert report.unsupported_ops == {"Add": 1, "Mul": 1}
    assert report.size_bytes is None


def test_gemm_transposes_and_conv_auto_pad():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 5])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 7, 7])
    bw = numpy_helper.from_array(np.ones((4, 3), np.float32), "bw")
    cw = numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "cw")
    nodes = [
        helper.make_node("Gemm", ["a", "bw"], ["g"], transA=1, transB=1),  # (5x3) @ (3x4)
        helper.make_node("Conv", ["x", "cw"], ["c"], strides=[2, 2], auto_pad="SAME_UPPER"),  # out 4x4
    ]
    model = _model(nodes, [a, x], [helper.make_tensor_value_info("g", TensorProto.FLOAT, None),
                                   helper.make_tensor_value_info("c", TensorProto.FLOAT, None)], [bw, cw])
    report = count_onnx(model)
    assert report.by_operator == {"Gemm": 5 * 3 * 4, "Conv": 4 * 4 * 4 * 2 * 9}
    assert report.params == 12 + 72


def test_conv_output_formula():
    assert conv_output_spatial([7, 7], [3, 3], [2, 2], [1, 1], [0, 0, 0, 0], "SAME_UPPER") == [4, 4]
    assert conv_output_spatial([7], [3], [2], [1], [0, 0], "VALID") == [3]
    assert conv_output_spatial([9], [3], [2], [2], [1, 1], "NOTSET") == [4]
    assert matmul_macs([5], [5]) == 5
    assert matmul_macs([2, 1, 4, 5], [3, 5, 6]) == MATMUL_MACS
    assert einsum_macs("bij,bkj->bik", [[2, 3, 4], [2, 5, 4]]) == 2 * 3 * 4 * 5


def _if_model():
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    then_graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["t"]), helper.make_node("Erf", ["t"], ["u"])],
                                   "then", [], [helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, 4])])
    else_graph = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 4])])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then_graph, else_branch=else_graph)]
    return _model(nodes, [helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
                          helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])


def test_if_costs_the_branch_its_condition_takes():
    taken = count_onnx(_if_model(), values={"cond": np.array(True)})
    assert taken.macs == 1 * 4 * 4 and taken.by_operator == {"MatMul": 16}
    assert taken.unsupported_ops == {"Erf": 1}  # the taken branch is costed like the main graph; If is not listed
    assert any("'branch'" in w and "then_branch" in w and "given values of cond" in w for w in taken.warnings)
    assert taken.params == 16
    other = count_onnx(_if_model(), values={"cond": np.array(False)})
    assert other.macs == 0 and any("else_branch" in w for w in other.warnings)
    zeros = count_onnx(_if_model())  # no values: the probe feeds zeros (False)
    assert zeros.macs == 0 and any("zero inputs" in w and "else_branch" in w for w in zeros.warnings)


def test_if_with_unknown_condition_costs_the_larger_branch(monkeypatch):
    from benchmark.measure.flops import onnx_counter

    monkeypatch.setattr(onnx_counter, "_probe_with_ort", lambda *args, **kwargs: None)
    report = count_onnx(_if_model())
    assert report.macs == 16 and report.by_operator == {"MatMul": 16}
    assert report.unsupported_ops == {"Erf (inside If)": 1}
    assert any("condition is unknown" in w and "then_branch" in w for w in report.warnings)


def test_dynamic_quantization_keeps_params_and_macs(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).eval()
    fp32 = export_ts(model, (torch.randn(2, 32),), tmp_path / "fp32.onnx")
    int8 = tmp_path / "int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    a, b = count_onnx(fp32), count_onnx(int8)
    assert a.macs == b.macs == 2 * (32 * 64 + 64 * 8)
    assert a.params == b.params == 32 * 64 + 64 + 64 * 8 + 8


def test_external_data_size_and_sparsity(tmp_path):
    w = np.zeros((64, 64), np.float32)
    w[:16] = 1.0
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                   [numpy_helper.from_array(w, "w")])
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    report = count_onnx(path)
    assert report.params == 64 * 64
    assert report.sparsity == pytest.approx(0.75)
    assert report.size_bytes == path.stat().st_size + (tmp_path / "ext.onnx.data").stat().st_size


# ---------------------------------------------------------------- LoadedModel / Variant


def _loaded(module, tmp_path=None):
    return LoadedModel(name="conv", format="state_dict", framework="torch",
                       inputs=[InputSpec("x", ("N", 3, 8, 8))], torch_module=module.eval())


def test_count_model_torch_and_onnx_paths(tmp_path):
    lm = _loaded(ConvNet())
    report = count_model(lm, batch_size=2)
    assert report.macs == 2 * CONV_MACS and report.batch_size == 2
    assert report.size_bytes and report.size_bytes > 224 * 4  # serialized state_dict

    weights = tmp_path / "conv.pt"
    torch.save(lm.torch_module.state_dict(), weights)
    lm.path = weights
    assert count_model(lm).size_bytes == weights.stat().st_size

    onnx_path = export_ts(lm.torch_module, (torch.randn(1, 3, 8, 8),), tmp_path / "conv.onnx",
                          input_names=["x"], dynamic_axes={"x": {0: "N"}})
    variant = Variant(name="onnx-only", model=lm, onnx_path=onnx_path)
    v_report = count_model(variant, batch_size=3)
    assert v_report.counter == "onnx-graph"
    assert v_report.macs == 3 * CONV_MACS and v_report.params == 224
    assert v_report.size_bytes == onnx_path.stat().st_size


def test_count_model_fp16_variant_size_halves():
    lm = _loaded(ConvNet())
    half = Variant(name="fp16", model=lm, precision="fp16", torch_module=ConvNet().eval().half(),
                   torch_precision="fp16")
    a, b = count_model(lm), count_model(half)
    assert b.macs == a.macs
    assert b.size_bytes < a.size_bytes


def test_count_model_without_weights_is_an_error():
    lm = LoadedModel(name="empty", format="onnx", framework="onnx", inputs=[InputSpec("x", (1, 3))])
    with pytest.raises(ConfigError, match="neither"):
        count_model(lm)


def test_report_to_dict_and_flops_invariant():
    report = count_torch(LinearNet().eval(), (torch.randn(4, 16),))
    d = report.to_dict()
    assert d["flops"] == 2 * d["macs"] == 2 * LINEAR_MACS
    assert set(d) >= {"params", "macs", "flops", "size_bytes", "sparsity", "by_module", "by_operator",
                      "unsupported_ops", "counter", "batch_size", "warnings"}
    with pytest.raises(ValueError):
        FlopReport(params=1, macs=2, flops=3, size_bytes=None, sparsity=0.0)


def test_quantized_torch_modules_keep_their_macs():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.fc = torch.nn.Linear(8 * 8 * 8, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1))

    from torch.ao.quantization import get_default_qconfig_mapping, quantize_dynamic, quantize_fx

    model = Net().eval()
    x = torch.randn(1, 3, 8, 8)
    expected = CONV_MACS + 8 * 8 * 8 * 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        prepared = quantize_fx.prepare_fx(Net().eval(), get_default_qconfig_mapping("x86"), (x,))
        prepared(x)
        static = quantize_fx.convert_fx(prepared)
    for quantized in (dynamic, static):
        report = count_torch(quantized, (x,))
        assert report.macs == expected
        assert report.params == count_torch(model, (x,)).params
        assert {r["name"]: r["macs"] for r in report.by_module}["fc"] == 8 * 8 * 8 * 10


def test_dict_inputs_map_to_forward_arguments():
    a, b = torch.randn(2, 1, 4, 5), torch.randn(3, 5, 6)
    report = count_torch(BatchedMatMul(), {"b": b, "a": a})
    assert report.counter == "fvcore"
    assert report.macs == MATMUL_MACS


def test_model_that_cannot_run_its_inputs_is_one_line_error():
    with pytest.raises(MeasurementError, match=r"inputs of shape 1x5") as info:
        count_torch(LinearNet().eval(), (torch.randn(1, 5),))
    assert "\n" not in str(info.value)


def test_static_qdq_quantization_keeps_params_and_macs(tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)}
                               for i in range(4)])

        def get_next(self):
            return next(self.items, None)

    model = torch.nn.Sequential(ConvNet(), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 64, 4)).eval()
    fp32 = export_ts(model, (torch.randn(1, 3, 8, 8),), tmp_path / "fp32.onnx", input_names=["x"])
    qdq = tmp_path / "qdq.onnx"
    quantize_static(str(fp32), str(qdq), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    a, b = count_onnx(fp32), count_onnx(qdq)
    assert "DequantizeLinear" in b.unsupported_ops  # really quantized
    assert a.macs == b.macs == CONV_MACS + 8 * 64 * 4
    assert a.params == b.params == 224 + 8 * 64 * 4 + 4


def test_model_proto_without_external_values_still_counts_params(tmp_path):
    w = np.ones((8, 8), np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                   [numpy_helper.from_array(w, "w")])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="m.data", size_threshold=0)
    report = count_onnx(onnx.load(str(path), load_external_data=False))
    assert report.params == 64 and report.macs == 64
    assert any("sparsity" in w for w in report.warnings)


# ---------------------------------------------------------------------------------------------
# Recurrent layers: per step, batch element and direction LSTM 4H(I+H), GRU 3H(I+H), RNN H(I+H)

# nn.LSTM(10, 20) over 7 steps, batch 3: 7 * 3 * 4 * 20 * (10 + 20)
LSTM_MACS = 7 * 3 * 4 * 20 * 30
# 2 layers, bidirectional, I = 16, H = 32, 5 steps, batch 2: layer 1 sees the 2 x 32 concatenated outputs
DEEP_MACS = {g: 5 * 2 * (2 * g * 32 * (16 + 32) + 2 * g * 32 * (64 + 32)) for g in (4, 3, 1)}


class _Recurrent(torch.nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


def test_recurrent_formulas_by_hand():
    assert recurrent_macs([7, 3, 10], [[80, 10], [80, 20]]) == LSTM_MACS == 50400
    assert recurrent_macs([7, 10], [[80, 10], [80, 20], [80]]) == 7 * 2400  # unbatched input; biases not counted
    assert recurrent_module_macs("LSTM", [7, 3, 10], 10, 20) == LSTM_MACS
    for mode, gates in (("LSTM", 4), ("GRU", 3), ("RNN_TANH", 1)):
        assert recurrent_module_macs(mode, [5, 2, 16], 16, 32, num_layers=2, bidirectional=True) == DEEP_MACS[gates]
    # proj_size P: the state fed back is P wide, and each step projects H -> P
    assert recurrent_module_macs("LSTM", [7, 3, 10], 10, 20, proj_size=5) == 7 * 3 * (80 * 10 + 80 * 5 + 5 * 20)


@pytest.mark.parametrize("cls, gates", [(torch.nn.LSTM, 4), (torch.nn.GRU, 3), (torch.nn.RNN, 1)])
def test_recurrent_layers_counted_alike_by_fvcore_flop_counter_and_onnx(cls, gates, tmp_path):
    model = _Recurrent(cls(16, 32, num_layers=2, bidirectional=True)).eval()
    x = torch.randn(5, 2, 16)
    eager = count_torch(model, (x,))
    assert eager.counter == "fvcore" and eager.macs == DEEP_MACS[gates] and not eager.unsupported_ops
    scripted = count_torch(torch.jit.script(model), (x,))
    assert scripted.counter == "torch.utils.flop_counter" and scripted.macs == DEEP_MACS[gates]
    exported = count_onnx(export_ts(model, (x,), tmp_path / "rnn.onnx"))
    assert exported.macs == DEEP_MACS[gates]
    assert exported.by_operator == {cls.__name__: DEEP_MACS[gates]}
    assert not exported.unsupported_ops


def test_lstm_batch_first_and_projection():
    x = torch.randn(3, 7, 10)
    first = count_torch(_Recurrent(torch.nn.LSTM(10, 20, batch_first=True)), (x,))
    assert first.macs == LSTM_MACS
    scripted = count_torch(torch.jit.script(_Recurrent(torch.nn.LSTM(10, 20, batch_first=True))), (x,))
    assert scripted.counter == "torch.utils.flop_counter" and scripted.macs == LSTM_MACS
    proj = _Recurrent(torch.nn.LSTM(10, 20, proj_size=5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert count_torch(proj, (torch.randn(7, 3, 10),)).macs == 7 * 3 * (80 * 10 + 80 * 5 + 5 * 20)


def test_quantized_lstms_keep_their_macs(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _Recurrent(torch.nn.LSTM(10, 20)).eval()
    x = torch.randn(7, 3, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM}, dtype=torch.qint8)
    torch_q = count_torch(qmodel, (x,))
    assert torch_q.macs == LSTM_MACS and torch_q.by_operator == {"quantized_lstm": LSTM_MACS}
    fp32 = export_ts(model, (x,), tmp_path / "lstm.onnx", input_names=["x"], dynamic_axes={"x": {0: "T", 1: "B"}})
    int8 = tmp_path / "lstm-int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"])
    report = count_onnx(int8, {"x": (7, 3, 10)})
    assert report.by_operator == {"com.microsoft.DynamicQuantizeLSTM": LSTM_MACS}


@pytest.mark.parametrize("name, macs", [
    # front-end conv (the 16 kHz If branch) 63 x 64 x 16, encoder conv 31 x 128 x 64 x 3, LSTM 4 x 128 x 256, decoder 128
    ("silero-vad", 63 * 64 * 16 + 31 * 128 * 64 * 3 + 4 * 128 * 256 + 128),
    ("sequence-lstm", 40 * (40 * 64 + 4 * 128 * (64 + 128) + 128)),  # 40 frames: Linear, LSTM, Linear
])
def test_detector_lookalikes_torch_and_onnx_counts_match_the_hand_count(name, macs, tmp_path):
    from sample_models.lookalikes import build_lookalike

    la = build_lookalike(name, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_report = count_torch(la.module, tuple(torch.from_numpy(v) for v in la.feeds.values()))
    onnx_report = count_onnx(la.path, {k: v.shape for k, v in la.feeds.items()}, values=la.feeds)
    assert torch_report.macs == onnx_report.macs == macs
    assert not any("LSTM" in k for k in onnx_report.unsupported_ops)

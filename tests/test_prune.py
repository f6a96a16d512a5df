"""Pruning: unstructured magnitude masks and structured channel removal (Torch-Pruning)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.compress.base import COMPRESSIONS, CompressContext
from benchmark.compress.prune import (
    NO_SPEEDUP_NOTE,
    count_params,
    example_args,
    prune_structured_module,
    prune_unstructured_module,
)
from benchmark.config import CompressionConfig, InputSpec
from benchmark.errors import CompressionError, ConfigError
from benchmark.models.base import LoadedModel, Variant


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ResConcatCNN(nn.Module):
    """conv-bn-relu stem, a residual block, a two-branch concat, global pooling, MLP head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.r1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.rb1 = nn.BatchNorm2d(16)
        self.r2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.rb2 = nn.BatchNorm2d(16)
        self.left = nn.Conv2d(16, 16, 1)
        self.right = nn.Conv2d(16, 16, 3, padding=1)
        self.mix = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32, 24)
        self.out = nn.Linear(24, 10)

    def forward(self, image):
        x = self.stem(image)
        x = torch.relu(x + self.rb2(self.r2(torch.relu(self.rb1(self.r1(x))))))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = torch.relu(self.mix(x)).mean(dim=(2, 3))
        return self.out(torch.relu(self.fc(x)))


class ConcatFlattenCNN(nn.Module):
    """Concatenation followed by flatten -> Linear: a coupling Torch-Pruning 1.6 maps wrongly."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 8, 1)
        self.b = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 32)
        self.out = nn.Linear(32, 10)

    def forward(self, image):
        x = torch.relu(self.c1(image))
        x = torch.cat([self.a(x), self.b(x)], 1)
        x = nn.functional.max_pool2d(x, 2).flatten(1)
        return self.out(torch.relu(self.fc(x)))


class MHATransformer(nn.Module):
    """Token ids -> embedding -> nn.TransformerEncoderLayer (nn.MultiheadAttention) -> mean -> head."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(17, 32)
        self.enc = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, tokens):
        return self.head(self.enc(self.emb(tokens)).mean(1))


class SelfAttention(nn.Module):
    def __init__(self, d: int = 32, heads: int = 4):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, t, _ = x.shape
        q, k, v = (p(x).reshape(b, t, self.heads, self.hd).transpose(1, 2) for p in (self.q, self.k, self.v))
        a = torch.softmax(q @ k.transpose(2, 3) / self.hd ** 0.5, -1)
        return self.o((a @ v).transpose(1, 2).reshape(b, t, -1))


class CustomTransformer(nn.Module):
    """Hand-written multi-head attention (reshape into heads) plus a feed-forward block."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(17, 32)
        self.ln1, self.ln2 = nn.LayerNorm(32), nn.LayerNorm(32)
        self.attn = SelfAttention()
        self.ff1, self.ff2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, tokens):
        x = self.emb(tokens)
        x = x + self.attn(self.ln1(x))
        x = x + self.ff2(torch.relu(self.ff1(self.ln2(x))))
        return self.head(x.mean(1))


def _variant(module, spec: InputSpec) -> Variant:
    torch.manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial BN scales/statistics so importances differ
            nn.init.uniform_(m.weight, 0.2, 1.5)
            nn.init.uniform_(m.running_var, 0.5, 2.0)
    module.eval()
    model = LoadedModel("tiny", "sample", "torch", [spec], torch_module=module, num_classes=10)
    return Variant("fp32", model, torch_module=module)


IMAGE = InputSpec("image", ("batch", 1, 8, 8))
TOKENS = InputSpec("tokens", ("batch", 12), "int64")


@pytest.fixture
def cnn():
    torch.manual_seed(0)
    return _variant(ResConcatCNN(), IMAGE)


@pytest.fixture
def ctx(tmp_path):
    return CompressContext(workdir=tmp_path)


def _run(name, variant, ctx, **cfg):
    return COMPRESSIONS.get(name)(variant, CompressionConfig(**cfg), ctx)


def _onnx_outputs(module, args, names, path):
    """Export with the TorchScript exporter (dynamic batch) and run with ONNX Runtime on CPU."""
    import onnxruntime as ort

    torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                      dynamic_axes={n: {0: "batch"} for n in names})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a.numpy() for n, a in zip(names, args)})[0]


# --------------------------------------------------------------------------------- structured


def test_structured_half_cuts_macs_and_params_and_exports(cnn, ctx, tmp_path):
    out = _run("prune-structured", cnn, ctx, prune_ratio=0.5, prune_importance="l2")
    rec = out.records[-1]
    d = rec.details
    assert rec.method == "prune-structured" and rec.changed
    # halving both in- and out-channels of the inner convs leaves about a quarter of their MACs
    assert d["macs_ratio"] < 0.4 and d["params_ratio"] < 0.4
    assert d["params_after"] == count_params(out.torch_module)
    assert d["params_before"] == count_params(cnn.torch_module)
    assert d["out_channels_removed"] > 0 and "stem.0" in d["layers"]
    assert d["layers"]["stem.0"]["out_after"] == 8
    assert out.prune_ratio == 0.5 and out.prune_kind == "structured" and out.onnx_path is None
    # classifier output protected
    assert out.torch_module.out.out_features == 10
    assert "out" in d["protected_layers"]
    # the pruned model runs and its ONNX export gives the same numbers
    args = example_args(cnn.model, 3)
    ref = out.torch_module(*args).detach().numpy()
    assert ref.shape == (3, 10)
    got = _onnx_outputs(out.torch_module, args, ["image"], tmp_path / "pruned.onnx")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_structured_keeps_residual_and_concat_consistent(cnn, ctx):
    out = _run("prune-structured", cnn, ctx, prune_ratio=0.5, prune_importance="l1")
    m = out.torch_module
    # residual add: the stem and the second residual conv keep the same width
    assert m.stem[0].out_channels == m.r2.out_channels == m.rb2.num_features == m.r1.in_channels
    # concatenation: the consumer reads exactly what the two branches produce
    assert m.mix.in_channels == m.left.out_channels + m.right.out_channels
    assert m.fc.in_features == m.mix.out_channels
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_structured_does_not_touch_the_input_variant(cnn, ctx):
    before = {k: v.clone() for k, v in cnn.torch_module.state_dict().items()}
    out = _run("prune-structured", cnn, ctx, prune_ratio=0.5)
    assert out.torch_module is not cnn.torch_module
    assert cnn.records == [] and cnn.torch_module.stem[0].out_channels == 16
    for k, v in cnn.torch_module.state_dict().items():
        assert torch.equal(v, before[k])


def test_structured_bn_scale_importance(cnn, ctx):
    out = _run("prune-structured", cnn, ctx, prune_ratio=0.25, prune_importance="bn-scale")
    assert out.records[-1].changed
    assert out.torch_module.r1.out_channels == 12
    # r1 -> rb1 -> r2 is a group with one BatchNorm: the channels kept have its largest |gamma|
    gamma = cnn.torch_module.rb1.weight.detach().abs()
    kept = out.torch_module.rb1.weight.detach().abs()
    assert torch.allclose(kept.sort().values, gamma.sort().values[-12:])


def test_structured_concat_flatten_is_run_checked(ctx):
    variant = _variant(ConcatFlattenCNN(), IMAGE)
    out = _run("prune-structured", variant, ctx, prune_ratio=0.5)
    d = out.records[-1].details
    y = out.torch_module(torch.randn(4, 1, 8, 8))
    assert y.shape == (4, 10)
    assert d["params_after"] < d["params_before"]
    # groups that broke the model were left whole and named
    if d["groups_skipped"]:
        assert any("unpruned" in w for w in out.records[-1].warnings)


@pytest.mark.parametrize("arch", [MHATransformer, CustomTransformer])
def test_structured_transformer_prunes_ffn_and_keeps_attention(arch, ctx, tmp_path):
    torch.manual_seed(0)
    variant = _variant(arch(), TOKENS)
    out = _run("prune-structured", variant, ctx, prune_ratio=0.5)
    rec = out.records[-1]
    m = out.torch_module
    assert rec.changed
    assert any("attention" in w for w in rec.warnings)
    if arch is MHATransformer:
        assert m.enc.linear1.out_features == 32 and m.enc.linear2.in_features == 32
        assert m.enc.self_attn.in_proj_weight.shape == (96, 32)
    else:
        assert m.ff1.out_features == 32 and m.ff2.in_features == 32
        assert all(p.weight.shape == (32, 32) for p in (m.attn.q, m.attn.k, m.attn.v, m.attn.o))
    assert m.head.out_features == 10
    args = example_args(variant.model, 2)
    ref = m(*args).detach().numpy()
    got = _onnx_outputs(m, args, ["tokens"], tmp_path / "t.onnx")
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_structured_ratio_zero_is_reported_unchanged(cnn, ctx):
    out = _run("prune-structured", cnn, ctx, prune_ratio=0.0)
    rec = out.records[-1]
    assert not rec.changed and "unchanged" in rec.summary
    assert out.prune_ratio == 0.0 and count_params(out.torch_module) == count_params(cnn.torch_module)


def test_structured_bad_input(cnn):
    args = example_args(cnn.model, 1)
    with pytest.raises(ConfigError, match="prune ratio"):
        prune_structured_module(cnn.torch_module, args, 1.0)
    with pytest.raises(ConfigError, match="prune ratio"):
        prune_structured_module(cnn.torch_module, args, -0.1)
    with pytest.raises(ConfigError, match="importance"):
        prune_structured_module(cnn.torch_module, args, 0.5, importance="taylor")
    no_bn = _variant(ConcatFlattenCNN(), IMAGE)
    with pytest.raises(ConfigError, match="BatchNorm"):
        prune_structured_module(no_bn.torch_module, args, 0.5, importance="bn-scale")


def test_pruning_needs_an_eager_module(cnn, ctx):
    scripted = Variant("fp32", cnn.model, torch_module=torch.jit.script(cnn.torch_module))
    with pytest.raises(CompressionError, match="structured pruning needs an editable PyTorch module and this variant "
                                               "holds a TorchScript module"):
        _run("prune-structured", scripted, ctx, prune_ratio=0.5)
    onnx_only = Variant("fp32", cnn.model, torch_module=None)
    with pytest.raises(CompressionError, match="editable PyTorch module and this variant holds an ONNX graph"):
        _run("prune-unstructured", onnx_only, ctx, prune_ratio=0.5, prune_kind="unstructured")
    # a model whose conversion failed: the reason is the conversion's own
    failed = dataclasses.replace(cnn.model, torch_module=None,
                                 conversion_error="the ONNX->PyTorch conversion failed: no converter for Foo (node /foo)")
    with pytest.raises(CompressionError, match=r"structured pruning needs an editable PyTorch module: the ONNX->PyTorch "
                                               r"conversion failed: no converter for Foo \(node /foo\)"):
        _run("prune-structured", Variant("fp32", failed, torch_module=None), ctx, prune_ratio=0.5)


# ------------------------------------------------------------------------------- unstructured


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_unstructured_global_reaches_the_sparsity_asked(cnn, ctx, ratio):
    out = _run("prune-unstructured", cnn, ctx, prune_ratio=ratio, prune_kind="unstructured", prune_scope="global")
    rec = out.records[-1]
    zeros = total = 0
    for m in out.torch_module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
            assert not hasattr(m, "weight_mask")  # masks made permanent
    assert abs(zeros / total - ratio) <= 0.01
    assert abs(rec.details["overall_sparsity"] - ratio) <= 0.01
    assert NO_SPEEDUP_NOTE in rec.summary
    assert out.prune_kind == "unstructured"
    # shapes unchanged; the input variant keeps its dense weights
    assert out.torch_module.stem[0].weight.shape == cnn.torch_module.stem[0].weight.shape
    assert int((cnn.torch_module.stem[0].weight == 0).sum()) == 0


def test_unstructured_layer_scope_prunes_every_layer_by_the_ratio(cnn):
    module = cnn.torch_module
    stats = prune_unstructured_module(module, 0.4, scope="layer")
    for name, s in stats["layers"].items():
        assert abs(s["sparsity"] - 0.4) <= 0.5 / s["total"] + 1e-9, name
    assert module(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_unstructured_bad_scope_and_ratio(cnn):
    with pytest.raises(ConfigError, match="prune scope"):
        prune_unstructured_module(cnn.torch_module, 0.5, scope="channel")
    with pytest.raises(ConfigError, match="prune ratio"):
        prune_unstructured_module(cnn.torch_module, 1.2)


def test_unstructured_ratio_zero_is_reported_unchanged(cnn, ctx):
    out = _run("prune-unstructured", cnn, ctx, prune_ratio=0.0, prune_kind="unstructured")
    assert not out.records[-1].changed and out.prune_kind is None

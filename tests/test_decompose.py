"""Low-rank (truncated SVD) factorization of Linear and Conv layers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.compress.base import COMPRESSIONS, CompressContext
from benchmark.compress.decompose import choose_rank, lowrank_module
from benchmark.compress.prune import count_params, example_args
from benchmark.config import CompressionConfig, InputSpec
from benchmark.errors import CompressionError, ConfigError
from benchmark.models.base import CompressionRecord, LoadedModel, Variant


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class ConvMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 32, 3, stride=2, padding=1)
        self.point = nn.Conv2d(32, 32, 1)
        self.group = nn.Conv2d(32, 32, 3, padding=1, groups=4)
        self.fc = nn.Linear(32 * 4 * 4, 64)
        self.small = nn.Linear(64, 4)
        self.out = nn.Linear(4, 10)

    def forward(self, x):
        x = torch.relu(self.group(torch.relu(self.point(torch.relu(self.conv(x))))))
        return self.out(torch.relu(self.small(torch.relu(self.fc(x.flatten(1))))))


def _rank_r(shape, r, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape[0], r, generator=g) @ torch.randn(r, int(np.prod(shape[1:])), generator=g)


@pytest.fixture
def variant():
    torch.manual_seed(0)
    module = ConvMLP().eval()
    model = LoadedModel("convmlp", "sample", "torch", [InputSpec("x", ("batch", 4, 8, 8))], torch_module=module, num_classes=10)
    return Variant("fp32", model, torch_module=module)


def test_exactly_low_rank_weights_are_reproduced():
    torch.manual_seed(0)
    lin = nn.Linear(48, 64)
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1)
    with torch.no_grad():
        lin.weight.copy_(_rank_r((64, 48), 4))
        conv.weight.copy_(_rank_r((16, 8, 3, 3), 3).reshape(16, 8, 3, 3))
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(16 * 4 * 4, 48), lin)
    x = torch.randn(5, 8, 8, 8)
    ref = model(x)
    stats = lowrank_module(model, rank=4, layers=["0", "3"])
    assert stats["layers"]["3"]["rank"] == 4
    assert stats["layers"]["3"]["params_after"] == 4 * (64 + 48) + 64
    assert stats["layers"]["3"]["energy_kept"] == pytest.approx(1.0, abs=1e-9)
    # the rank-3 conv keeps all of its energy at rank 4 too: kxk conv with r outputs, then 1x1
    first, second = model[0]
    assert (first.kernel_size, first.stride, first.padding, first.out_channels) == ((3, 3), (2, 2), (1, 1), 4)
    assert second.kernel_size == (1, 1) and second.out_channels == 16 and first.bias is None
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-4)


def test_ranks_follow_the_ratio_and_unprofitable_layers_are_skipped(variant):
    module = variant.torch_module
    stats = lowrank_module(module, ratio=0.25)
    layers, skipped = stats["layers"], stats["skipped"]
    # full rank = min(out, in * k * k): conv 32 x 36 -> 32; point 32 x 32; fc 64 x 512 -> 64
    assert layers["conv"]["rank"] == 8 and layers["point"]["rank"] == 8 and layers["fc"]["rank"] == 16
    assert layers["fc"]["params_after"] == 16 * (64 + 512) + 64
    assert "grouped conv" in skipped["group"]
    # out: 10 x 4, rank 1 -> 1 * (10 + 4) = 14 < 40 is factorized; small: 4 x 64, rank 1 -> 68 < 256 too
    assert layers["out"]["rank"] == 1
    assert isinstance(module.fc, nn.Sequential) and module.fc[0].out_features == 16
    assert module(torch.randn(2, 4, 8, 8)).shape == (2, 10)


def test_rank_that_does_not_reduce_params_is_skipped():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 6))
    stats = lowrank_module(model, ratio=0.9)
    assert stats["layers"] == {}
    assert "does not reduce parameters" in stats["skipped"]["0"]
    assert isinstance(model[0], nn.Linear)


def test_energy_picks_the_smallest_rank_that_keeps_it():
    torch.manual_seed(1)
    w = torch.randn(40, 30)
    s = torch.linalg.svdvals(w.double())
    share = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
    r = choose_rank(s, energy=0.8)
    assert share[r - 1] >= 0.8 - 1e-12 and share[r - 2] < 0.8
    assert choose_rank(s, energy=1.0) == 30
    assert choose_rank(s, ratio=0.5) == 15
    assert choose_rank(s, ratio=0.01) == 1


def test_registered_lowrank_records_ranks_params_and_macs(variant, tmp_path):
    ctx = CompressContext(workdir=tmp_path)
    out = COMPRESSIONS.get("lowrank")(variant, CompressionConfig(lowrank_ratio=0.25), ctx)
    rec = out.records[-1]
    assert rec.method == "lowrank" and rec.changed
    assert rec.details["params_before"] == count_params(variant.torch_module)
    assert rec.details["params_after"] == count_params(out.torch_module) < rec.details["params_before"]
    assert rec.details["macs_after"] < rec.details["macs_before"]
    assert rec.details["layers"]["fc"]["rank"] == 16 and "group" in rec.details["skipped"]
    assert out.onnx_path is None and isinstance(variant.torch_module.fc, nn.Linear)  # input untouched
    # exports and runs in ONNX Runtime
    import onnxruntime as ort

    args = example_args(variant.model, 2)
    path = tmp_path / "lr.onnx"
    torch.onnx.export(out.torch_module, args, str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "b"}})
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": args[0].numpy()})[0]
    np.testing.assert_allclose(got, out.torch_module(*args).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_energy_one_changes_nothing_and_says_so(variant, tmp_path):
    out = COMPRESSIONS.get("lowrank")(variant, CompressionConfig(lowrank_energy=1.0), CompressContext(tmp_path))
    rec = out.records[-1]
    # keeping all the energy of these random layers needs (near) full rank: nothing pays
    assert not rec.changed and "unchanged" in rec.summary
    assert count_params(out.torch_module) == count_params(variant.torch_module)


def test_disabled_and_bad_settings(variant, tmp_path):
    ctx = CompressContext(tmp_path)
    out = COMPRESSIONS.get("lowrank")(variant, CompressionConfig(), ctx)
    assert not out.records[-1].changed and "disabled" in out.records[-1].summary
    with pytest.raises(ConfigError, match="not both"):
        COMPRESSIONS.get("lowrank")(variant, CompressionConfig(lowrank_ratio=0.5, lowrank_energy=0.9), ctx)
    with pytest.raises(ConfigError, match="rank must be >= 1"):
        lowrank_module(nn.Linear(8, 8), rank=0)
    with pytest.raises(ConfigError, match=r"ratio must be in \(0, 1\]"):
        lowrank_module(nn.Linear(8, 8), ratio=1.5)
    with pytest.raises(ConfigError, match=r"ratio must be in \(0, 1\]"):
        lowrank_module(nn.Linear(8, 8), ratio=0.0)
    with pytest.raises(ConfigError):
        CompressionConfig(lowrank_ratio=1.5)
    with pytest.raises(ConfigError, match="no Linear/Conv layer named"):
        lowrank_module(nn.Sequential(nn.Linear(8, 8)), ratio=0.5, layers=["nope"])
    scripted = Variant("fp32", variant.model, torch_module=torch.jit.script(variant.torch_module))
    with pytest.raises(CompressionError, match="editable PyTorch module"):
        COMPRESSIONS.get("lowrank")(scripted, CompressionConfig(lowrank_ratio=0.5), ctx)


def test_records_are_appended_not_replaced(variant, tmp_path):
    earlier = CompressionRecord("prune-structured", True, "earlier step")
    v = Variant("fp32", variant.model, torch_module=variant.torch_module, records=[earlier])
    out = COMPRESSIONS.get("lowrank")(v, CompressionConfig(lowrank_ratio=0.5), CompressContext(tmp_path))
    assert [r.method for r in out.records] == ["prune-structured", "lowrank"]
    assert v.records == [earlier]

"""Built-in sample models: registration, committed weights, recorded accuracy, exportability."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import sample_models
from benchmark.data import get_dataset
from benchmark.models.archs import ARCHITECTURES, arch_names, get_arch
from benchmark.models.base import LoadedModel
from benchmark.models.samples import get_sample, sample_names
from sample_models.architectures import DIGITS_PAD_ID

NAMES = ["digits-cnn", "mnist1d-cnn", "digits-transformer"]


def _feeds(arch, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    return LoadedModel("t", "sample", "torch", list(arch.inputs)).example_inputs(batch, seed=seed)


def _accuracy(module, dataset, names) -> float:
    with torch.inference_mode():
        logits = module(*(torch.from_numpy(dataset.arrays[n]) for n in names))
    return float((logits.argmax(-1).numpy() == dataset.labels).mean())


def test_registered():
    assert set(NAMES) <= set(arch_names())
    assert set(NAMES) <= set(sample_names())
    for name in NAMES:
        spec = get_sample(name)
        arch = get_arch(spec.arch)
        assert spec.weights.is_file() and spec.weights.parent == sample_models.HERE
        assert spec.dataset == arch.dataset
        assert arch.num_classes == 10
        assert all(s.shape[0] == "batch" for s in arch.inputs)
        assert spec.metrics and 0.0 < spec.metrics["test_accuracy"] <= 1.0


def test_registration_is_light_and_builds_are_independent():
    code = (
        "import sys, sample_models, benchmark.data; "
        "from benchmark.models.samples import sample_names; "
        "print(len(sample_names()), 'torch' in sys.modules, 'sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(len(sample_names())), "False", "False"]
    arch = ARCHITECTURES.get("digits-cnn")
    a, b = arch.build(), arch.build()
    assert a is not b and not a.training


@pytest.mark.parametrize("name", NAMES)
def test_sample_reaches_recorded_accuracy(name):
    spec = get_sample(name)
    arch = get_arch(spec.arch)
    module = arch.build()
    state = torch.load(spec.weights, map_location="cpu", weights_only=True)
    module.load_state_dict(state, strict=True)
    module.eval()
    test = get_dataset(spec.dataset, "test")
    acc = _accuracy(module, test, [s.name for s in arch.inputs])
    assert acc >= spec.metrics["test_accuracy"] - 0.005, (acc, spec.metrics)
    assert len(test) == spec.metrics["test_samples"]
    if name == "digits-cnn":
        assert acc >= 0.95
    # An untrained network is near chance: the weights carry the accuracy.
    assert _accuracy(arch.build(), test, [s.name for s in arch.inputs]) < 0.5


@pytest.mark.parametrize("name", NAMES)
def test_arch_exports_to_onnx_with_dynamic_batch(name, tmp_path):
    import onnx
    import onnxruntime as ort

    arch = get_arch(name)
    module = arch.build()
    names = [s.name for s in arch.inputs]
    args = tuple(torch.from_numpy(v) for v in _feeds(arch, 2).values())
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                          dynamic_axes={n: {0: "batch"} for n in names}, opset_version=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == names
    feeds = _feeds(arch, 5, seed=1)
    out = sess.run(None, feeds)[0]
    with torch.inference_mode():
        ref = module(*(torch.from_numpy(feeds[n]) for n in names)).numpy()
    assert out.shape == (5, 10)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    if name == "digits-transformer":
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert ops.count("MatMul") >= 4 * 2  # q, k, v, out, ff and the two attention products per layer


def test_transformer_mask_semantics():
    arch = get_arch("digits-transformer")
    module = arch.build()
    module.load_state_dict(torch.load(get_sample("digits-transformer").weights, weights_only=True))
    ds = get_dataset("digits-tokens", "test").subset(16)
    ids = torch.from_numpy(ds.arrays["input_ids"])
    mask = torch.from_numpy(ds.arrays["attention_mask"])
    with torch.inference_mode():
        ref = module(ids, mask)
        # Tokens under mask 0 do not matter, whatever their id.
        noisy = torch.where(mask == 0, torch.randint_like(ids, 0, 17), ids)
        np.testing.assert_allclose(module(noisy, mask).numpy(), ref.numpy(), atol=1e-4)
        # Masking real tokens does change the output.
        half = mask.clone()
        half[:, 32:] = 0
        assert (module(torch.where(half == 0, DIGITS_PAD_ID, ids), half) - ref).abs().max() > 1e-2


def test_transformer_attention_visible_to_fvcore():
    arch = get_arch("digits-transformer")
    module = arch.build()
    feeds = _feeds(arch, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        counts = FlopCountAnalysis(module, tuple(torch.from_numpy(v) for v in feeds.values()))
        counts.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_op = counts.by_operator()
    # Per layer: q, k, v, out (64x64) and ff (64x128, 128x64) linears + q@k^T and attn@v.
    seq, d, ff = 64, 64, 128
    linear_macs = 2 * seq * (4 * d * d + 2 * d * ff) + d * 10
    attn_macs = 2 * 2 * seq * seq * d
    assert by_op["linear"] == linear_macs
    assert by_op["matmul"] == attn_macs


def test_digits_cnn_structured_pruning_keeps_residual_consistent():
    import torch_pruning as tp

    module = get_arch("digits-cnn").build()
    x = torch.randn(2, 1, 8, 8)
    base_macs, _ = tp.utils.count_ops_and_params(module, x)
    pruner = tp.pruner.MagnitudePruner(
        module, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
        ignored_layers=[module.fc],
    )
    pruner.step()
    macs, _ = tp.utils.count_ops_and_params(module, x)
    # The residual block's input and output channels are pruned together.
    assert module.res.conv1.in_channels == module.res.conv2.out_channels == module.conv2[0].out_channels == 32
    assert module(x).shape == (2, 10)
    assert base_macs / macs > 3.0

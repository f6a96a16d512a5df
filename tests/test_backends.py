"""Backends: registration, availability, precisions, providers, bind/run_bound, PyTorch vs ORT."""
from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import warnings

import numpy as np
import pytest

from benchmark.backends import BACKENDS, get_backend
from benchmark.config import InputSpec, RunConfig
from benchmark.errors import BackendUnavailableError, ConfigError, DataError
from benchmark.measure.compare import compare_outputs
from benchmark.models.base import LoadedModel, Variant

torch = pytest.importorskip("torch")


def _tiny_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(4, 10),
    ).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny conv net, its ONNX file (TorchScript exporter), a model record and feeds (batch 2)."""
    net = _tiny_net()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"], output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
        )
    model = LoadedModel("tiny", "sample", "torch", [InputSpec("x", ("N", 3, 8, 8))], torch_module=net)
    feeds = model.example_inputs(batch_size=2, seed=1)
    return net, path, model, feeds


def _variant(model, net=None, onnx_path=None, torch_precision="fp32", name="v"):
    return Variant(name, model, torch_module=net, torch_precision=torch_precision, onnx_path=onnx_path)


def test_builtins_registered_without_heavy_imports():
    assert {"pytorch", "onnxruntime", "tensorrt", "torch-tensorrt"} <= set(BACKENDS.names())
    code = (
        "import sys, benchmark.backends as b; "
        "print(sorted(m for m in ('torch', 'onnxruntime', 'onnx', 'tensorrt', 'torch_tensorrt', 'pynvml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_pytorch_matches_onnxruntime(tiny):
    net, path, model, feeds = tiny
    v = _variant(model, net, path)
    pt = get_backend("pytorch").prepare(v, "cpu", threads=1)
    ort_s = get_backend("onnxruntime").prepare(v, "cpu", threads=1)
    a, b = pt.run(feeds), ort_s.run(feeds)
    assert a[0].shape == (2, 10) and a[0].dtype == np.float32
    report = compare_outputs(b, a, atol=1e-4, rtol=1e-3, names=["logits"])
    assert report.passed, report.summary()
    assert report.outputs[0].name == "logits"
    pt.close()
    ort_s.close()


@pytest.mark.parametrize("precision", ["fp16", "bf16", "autocast-bf16", "autocast-fp16"])
def test_pytorch_low_precision_paths_run_on_cpu(tiny, precision):
    net, _, model, feeds = tiny
    ref = get_backend("pytorch").prepare(_variant(model, net), "cpu", threads=1).run(feeds)[0]
    sess = get_backend("pytorch").prepare(_variant(model, net, torch_precision=precision), "cpu", threads=1)
    out = sess.run(feeds)[0]
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert not np.array_equal(out, ref), "a lower precision should change the logits at least a little"
    np.testing.assert_allclose(out, ref, atol=0.05, rtol=0.05)
    assert sess.info.precision == precision
    # the variant's own module is never converted in place
    assert next(net.parameters()).dtype == torch.float32


def test_pytorch_threads_set_and_recorded(tiny):
    net, _, model, _ = tiny
    before = torch.get_num_threads()
    try:
        sess = get_backend("pytorch").prepare(_variant(model, net), "cpu", threads=1)
        assert sess.info.threads == 1 and torch.get_num_threads() == 1
        import os

        sess = get_backend("pytorch").prepare(_variant(model, net), "cpu", threads=0)
        assert sess.info.threads == os.cpu_count()
    finally:
        torch.set_num_threads(before)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_pytorch_int8_module_cpu_only(tiny):
    _, _, model, _ = tiny
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    q = torch.ao.quantization.quantize_dynamic(lin, {torch.nn.Linear}, dtype=torch.qint8)
    v = _variant(model, q, torch_precision="int8")
    backend = get_backend("pytorch")
    ok, reason = backend.supports_impl(v, "cuda")
    assert not ok and "CPU only" in reason
    assert backend.supports(v, "cpu") == (True, "")
    feeds = model.example_inputs(batch_size=3)
    out = backend.prepare(v, "cpu", threads=1).run(feeds)[0]
    ref = lin(torch.from_numpy(feeds["x"])).detach().numpy()
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out, ref, atol=0.1)


def test_pytorch_without_module_is_unsupported(tiny):
    _, path, model, _ = tiny
    ok, reason = get_backend("pytorch").supports(_variant(model, None, path), "cpu")
    assert not ok and reason == "no PyTorch module for this variant (its compression built an ONNX file only)"
    with pytest.raises(BackendUnavailableError, match="no PyTorch module for this variant"):
        get_backend("pytorch").prepare(_variant(model, None, path), "cpu")
    # an ONNX upload that could not be converted: the conversion's own reason
    failed = dataclasses.replace(model, framework="onnx", torch_module=None,
                                 conversion_error="the ONNX->PyTorch conversion failed: no converter for Det (node det)")
    ok, reason = get_backend("pytorch").supports(_variant(failed, None, path), "cpu")
    assert not ok and reason == "no PyTorch module: the ONNX->PyTorch conversion failed: no converter for Det (node det)"


def test_pytorch_bind_converts_once(tiny, monkeypatch):
    net, _, model, feeds = tiny
    sess = get_backend("pytorch").prepare(_variant(model, net), "cpu", threads=1)
    sess.bind(feeds)

    def boom(_feeds):
        raise AssertionError("run_bound must not convert inputs again")

    monkeypatch.setattr(sess, "convert", boom)
    out = sess.run_bound()
    assert tuple(out.shape) == (2, 10)


def test_pytorch_missing_input_names_the_inputs(tiny):
    net, _, model, feeds = tiny
    sess = get_backend("pytorch").prepare(_variant(model, net), "cpu", threads=1)
    with pytest.raises(DataError, match="model takes x"):
        sess.run({"a": feeds["x"], "b": feeds["x"]})
    # a single unnamed-looking feed for a single-input model is taken by position
    assert sess.run({"input": feeds["x"]})[0].shape == (2, 10)


def test_ort_records_real_providers_and_options(tiny):
    _, path, model, feeds = tiny
    sess = get_backend("onnxruntime").prepare(
        _variant(model, None, path), "cpu", threads=1, options={"graph_optimization_level": "basic"}
    )
    assert sess.info.providers == ["CPUExecutionProvider"]
    assert sess.info.threads == 1
    assert sess.info.options["intra_op_num_threads"] == 1
    assert sess.info.options["graph_optimization_level"] == "basic"
    assert sess.info.options["exported_from_torch"] is False
    sess.bind(feeds)
    bound = sess.run_bound()
    np.testing.assert_array_equal(bound[0], sess.run(feeds)[0])


def test_ort_rejects_unknown_option(tiny):
    _, path, model, _ = tiny
    with pytest.raises(ConfigError, match="known: graph_optimization_level"):
        get_backend("onnxruntime").prepare(_variant(model, None, path), "cpu", options={"fast": True})
    with pytest.raises(ConfigError, match="graph_optimization_level must be one of"):
        get_backend("onnxruntime").prepare(
            _variant(model, None, path), "cpu", options={"graph_optimization_level": "max"}
        )


def test_ort_supports_rules(tiny, tmp_path):
    net, _, model, _ = tiny
    backend = get_backend("onnxruntime")
    ok, reason = backend.supports(_variant(model, net, torch_precision="bf16"), "cpu")
    assert not ok and "not exported" in reason
    ok, reason = backend.supports(_variant(model, None, tmp_path / "missing.onnx"), "cpu")
    assert not ok and "does not exist" in reason
    assert backend.supports(_variant(model, net), "cpu") == (True, "")


def test_ort_casts_feeds_to_float16_graph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "half",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 4])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "half.onnx"
    onnx.save(proto, str(path))
    model = LoadedModel("half", "onnx", "onnx", [InputSpec("x", ("N", 4))], onnx_path=path)
    sess = get_backend("onnxruntime").prepare(_variant(model, None, path), "cpu", threads=1)
    x = np.array([[-1.0, 0.5, 2.0, -3.0]], dtype=np.float32)
    out = sess.run({"x": x})[0]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.maximum(x, 0))


@pytest.mark.slow
def test_ort_exports_torch_only_variant(tiny, tmp_path):
    net, _, model, feeds = tiny
    v = _variant(model, net)
    sess = get_backend("onnxruntime").prepare(v, "cpu", threads=1, workdir=tmp_path)
    assert sess.info.options["exported_from_torch"] is True
    assert str(tmp_path) in sess.info.options["onnx_path"]
    ref = get_backend("pytorch").prepare(v, "cpu", threads=1).run(feeds)
    assert compare_outputs(sess.run(feeds), ref, atol=1e-4, rtol=1e-3).passed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU answers")
def test_cuda_unavailable_reasons(tiny):
    net, path, model, _ = tiny
    for name in ("pytorch", "onnxruntime"):
        ok, reason = get_backend(name).availability("cuda")
        assert not ok and reason.startswith("CUDA")
    ok, reason = get_backend("onnxruntime").supports(_variant(model, net, path), "cuda")
    assert not ok


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="checks the not-installed answer")
def test_tensorrt_reports_package_missing(tiny):
    _, path, model, _ = tiny
    backend = get_backend("tensorrt")
    assert backend.availability("cuda") == (False, "TensorRT: package not installed")
    assert not backend.availability("cpu")[0]
    with pytest.raises(BackendUnavailableError, match="TensorRT: package not installed"):
        backend.prepare(_variant(model, None, path), "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "autocast-fp16"])
def test_pytorch_cuda_paths(tiny, precision):
    net, _, model, feeds = tiny
    ref = get_backend("pytorch").prepare(_variant(model, net), "cpu", threads=1).run(feeds)[0]
    sess = get_backend("pytorch").prepare(_variant(model, net, torch_precision=precision), "cuda")
    out = sess.run(feeds)[0]
    np.testing.assert_allclose(out, ref, atol=0.05, rtol=0.05)
    from benchmark.measure.latency import measure_latency

    stats = measure_latency(sess, feeds, RunConfig(device="cuda", min_iters=5, min_duration_s=0.05,
                                                   warmup_iters=2, warmup_s=0.0), device="cuda")
    assert stats.timer == "cuda_events" and stats.iterations >= 5 and stats.min_ms > 0
    assert next(net.parameters()).device.type == "cpu"


@pytest.mark.gpu
def test_ort_cuda_uses_cuda_provider_and_io_binding(tiny):
    _, path, model, feeds = tiny
    ok, reason = get_backend("onnxruntime").availability("cuda")
    if not ok:
        pytest.skip(reason)
    sess = get_backend("onnxruntime").prepare(_variant(model, None, path), "cuda")
    assert sess.info.providers[0] == "CUDAExecutionProvider"
    assert sess.info.options["io_binding"] is True
    cpu = get_backend("onnxruntime").prepare(_variant(model, None, path), "cpu", threads=1).run(feeds)
    assert compare_outputs(sess.run(feeds), cpu, atol=1e-3, rtol=1e-3).passed
    sess.bind(feeds)
    sess.run_bound()


def test_runtime_errors_become_one_line_measurement_errors(tmp_path):
    """A runtime's own exception (wrong batch for a fixed-shape graph) is a MeasurementError naming the inputs."""
    import onnx
    from onnx import TensorProto, helper

    from benchmark import MeasurementError
    from benchmark.compress import reference_variant
    from benchmark.models import load_model

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), tmp_path / "fixed.onnx")
    variant = reference_variant(load_model(tmp_path / "fixed.onnx"))
    sess = get_backend("onnxruntime").prepare(variant, "cpu", threads=1)
    bad = {"x": np.zeros((2, 4), np.float32)}
    with pytest.raises(MeasurementError, match=r"onnxruntime failed to run the model with inputs x 2x4") as info:
        sess.run(bad)
    assert "\n" not in str(info.value)
    sess.bind(bad)
    with pytest.raises(MeasurementError):
        sess.run_bound()
    assert sess.run({"x": np.ones((1, 4), np.float32)})[0].shape == (1, 4)

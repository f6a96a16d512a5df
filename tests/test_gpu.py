"""GPU paths: PyTorch on CUDA, ONNX Runtime's CUDA/TensorRT providers, the native TensorRT backend.

Tests marked ``gpu`` need a CUDA device and ``tensorrt`` the TensorRT package too; conftest skips
them otherwise, with the reason. The unmarked tests check the option handling of those paths,
which needs neither.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.backends import get_backend
from benchmark.backends.onnxruntime import tensorrt_ep_options
from benchmark.config import InputSpec, RunConfig
from benchmark.data.base import Dataset
from benchmark.errors import BackendUnavailableError, ConfigError, MeasurementError
from benchmark.measure.latency import measure_latency
from benchmark.models.base import CompressionRecord, LoadedModel, Variant


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    module = TinyNet().eval()
    return LoadedModel(name="tiny", format="sample", framework="torch",
                       inputs=[InputSpec("x", ("batch", 3, 16, 16))], torch_module=module)


def _variant(model, torch_precision="fp32", precision="fp32", onnx_path=None, records=()):
    return Variant(name=precision if torch_precision == "fp32" else torch_precision, model=model,
                   precision=precision, torch_module=model.torch_module, torch_precision=torch_precision,
                   onnx_path=onnx_path, records=list(records))


def _feeds(batch=4, seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32)}


def _reference(model, feeds):
    with torch.no_grad():
        return model.torch_module(torch.from_numpy(feeds["x"])).numpy()


def _timing(batch=4):
    return RunConfig(backend="x", device="cuda", batch_size=batch, warmup_iters=2, warmup_s=0.0,
                     min_iters=5, min_duration_s=0.0)


# --- option handling (no GPU needed) --------------------------------------------------------------
def test_pytorch_options_checked(tiny):
    backend = get_backend("pytorch")
    with pytest.raises(BackendUnavailableError, match="unknown pytorch option.*fast.*known: cuda_graph"):
        backend.prepare(_variant(tiny), "cpu", options={"fast": True})
    session = backend.prepare(_variant(tiny), "cpu", threads=1, options={"cuda_graph": True})
    assert session.info.options["cuda_graph"] is False
    assert any("cuda_graph applies to device cuda only" in w for w in session.info.warnings)
    np.testing.assert_allclose(session.run(_feeds())[0], _reference(tiny, _feeds()), rtol=1e-5, atol=1e-5)


def _onnx(path: Path, qdq: bool) -> Path:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    inits = []
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
                 helper.make_node("Relu", ["d"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_ort_tensorrt_ep_options_follow_the_variant(tmp_path):
    plain, qdq = _onnx(tmp_path / "plain.onnx", False), _onnx(tmp_path / "qdq.onnx", True)
    cache = tmp_path / "cache"
    opts, notes = tensorrt_ep_options("fp16", plain, {"trt_engine_cache_dir": cache})
    assert opts["trt_fp16_enable"] == "True" and opts["trt_int8_enable"] == "False" and notes == []
    assert opts["trt_engine_cache_path"] == str(cache) and cache.is_dir()
    opts, _ = tensorrt_ep_options("int8-static", qdq, {"trt_engine_cache": False})
    assert opts["trt_int8_enable"] == "True" and "trt_int8_calibration_table_name" not in opts
    with pytest.raises(ConfigError, match="QDQ model"):
        tensorrt_ep_options("int8-static", qdq, {"trt_engine_cache_dir": cache, "trt_calibration_table": "t.cache"})
    opts, _ = tensorrt_ep_options("int8-static", plain, {"trt_engine_cache_dir": cache,
                                                         "trt_calibration_table": "t.cache",
                                                         "trt_native_calibration_table": True})
    assert opts["trt_int8_calibration_table_name"] == "t.cache"
    assert opts["trt_int8_use_native_calibration_table"] == "True"
    opts, notes = tensorrt_ep_options("int8-dynamic", plain, {"trt_engine_cache": False})
    assert opts["trt_int8_enable"] == "False" and "CUDAExecutionProvider" in notes[0]


# --- PyTorch on CUDA ------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-4), ("fp16", 3e-2), ("bf16", 1e-1),
                                            ("autocast-fp16", 3e-2), ("autocast-bf16", 1e-1)])
def test_pytorch_cuda_precisions(tiny, precision, tol):
    backend = get_backend("pytorch")
    variant = _variant(tiny, precision)
    ok, reason = backend.supports(variant, "cuda")
    if not ok:
        pytest.skip(reason)
    session = backend.prepare(variant, "cuda")
    try:
        feeds = _feeds()
        out = session.run(feeds)[0]
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, _reference(tiny, feeds), rtol=tol, atol=tol)
        assert session.info.options["weights_gpu_mb"] > 0
        stats = measure_latency(session, feeds, _timing(), "cuda")
        assert stats.timer == "cuda_events" and stats.iterations >= 5 and stats.min_ms > 0
        assert torch.cuda.max_memory_allocated() > 0
    finally:
        session.close()
    assert next(tiny.torch_module.parameters()).device.type == "cpu"  # the variant's module is untouched


@pytest.mark.gpu
def test_pytorch_cuda_graph(tiny):
    session = get_backend("pytorch").prepare(_variant(tiny, "fp16"), "cuda", options={"cuda_graph": True,
                                                                                       "cuda_graph_max_batch": 4})
    try:
        feeds = _feeds(4)
        session.bind(feeds)
        assert session.info.options["cuda_graph_batches"] == [4]
        out = session.run_bound()
        session.synchronize()
        np.testing.assert_allclose(out.float().cpu().numpy(), _reference(tiny, feeds), rtol=3e-2, atol=3e-2)
        session.bind(_feeds(8))  # above the limit: eager calls
        assert session.info.options["cuda_graph_batches"] == [4]
        assert measure_latency(session, _feeds(4), _timing(), "cuda").iterations >= 5
    finally:
        session.close()


# --- ONNX Runtime on CUDA -------------------------------------------------------------------------
def _ort_cuda_or_skip():
    ok, reason = get_backend("onnxruntime").availability("cuda")
    if not ok:
        pytest.skip(reason)


@pytest.mark.gpu
def test_ort_cuda_ep_with_io_binding(tiny, tmp_path):
    _ort_cuda_or_skip()
    session = get_backend("onnxruntime").prepare(_variant(tiny), "cuda", workdir=tmp_path)
    try:
        assert session.info.providers[0] == "CUDAExecutionProvider"
        assert session.info.options["io_binding"] is True
        assert session.info.options["provider_options"]["CUDAExecutionProvider"] == {"device_id": "0"}
        feeds = _feeds()
        np.testing.assert_allclose(session.run(feeds)[0], _reference(tiny, feeds), rtol=1e-3, atol=1e-3)
        stats = measure_latency(session, feeds, _timing(), "cuda")
        assert stats.timer == "cuda_events" and stats.iterations >= 5
    finally:
        session.close()


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_ort_tensorrt_ep_uses_the_cache(tiny, tmp_path):
    _ort_cuda_or_skip()
    cache = tmp_path / "ort-trt"
    session = get_backend("onnxruntime").prepare(
        _variant(tiny), "cuda", workdir=tmp_path, options={"tensorrt_ep": True, "trt_engine_cache_dir": str(cache)})
    try:
        if "TensorrtExecutionProvider" not in session.info.providers:
            pytest.skip("TensorrtExecutionProvider did not load: " + "; ".join(session.info.warnings))
        opts = session.info.options["provider_options"]["TensorrtExecutionProvider"]
        assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(cache)
        feeds = _feeds()
        np.testing.assert_allclose(session.run(feeds)[0], _reference(tiny, feeds), rtol=1e-3, atol=1e-3)
        assert any(cache.iterdir())
    finally:
        session.close()


# --- native TensorRT ------------------------------------------------------------------------------
def _trt(tiny, tmp_path, precision="fp32", **options):
    options.setdefault("engine_cache_dir", str(tmp_path / "engines"))
    return get_backend("tensorrt").prepare(_variant(tiny, precision=precision), "cuda",
                                           workdir=tmp_path / "exports", options=options)


@pytest.mark.tensorrt
def test_trt_fp32_engine_runs_and_is_cached(tiny, tmp_path):
    feeds = _feeds(4)
    first = _trt(tiny, tmp_path)
    try:
        assert first.info.options["trt_precision"] == "fp32"
        assert first.info.options["engines"][0]["cache_hit"] is False
        assert first.info.options["build_time_s"] > 0
        assert any("built in" in w for w in first.info.warnings)
        np.testing.assert_allclose(first.run(feeds)[0], _reference(tiny, feeds), rtol=1e-3, atol=1e-3)
        # per-batch engines: batch 4 gets its own engine, tuned for it
        first.bind(feeds)
        assert [e["batch_sizes"] for e in first.info.options["engines"]][-1] == [4]
        stats = measure_latency(first, feeds, _timing(4), "cuda")
        assert stats.timer == "cuda_events" and stats.iterations >= 5
    finally:
        first.close()
    sidecars = list((tmp_path / "engines").glob("*.json"))
    assert len(sidecars) == 2
    meta = json.loads(sidecars[0].read_text())
    assert meta["gpu_name"] == torch.cuda.get_device_name(0) and meta["trt_version"]
    again = _trt(tiny, tmp_path)
    try:
        assert again.info.options["engines"][0]["cache_hit"] is True
        assert again.info.options["build_time_s"] == 0.0
        np.testing.assert_allclose(again.run(_feeds(1))[0], _reference(tiny, _feeds(1)), rtol=1e-3, atol=1e-3)
    finally:
        again.close()


@pytest.mark.tensorrt
def test_trt_refuses_an_engine_from_another_gpu(tiny, tmp_path):
    _trt(tiny, tmp_path).close()
    sidecar = next((tmp_path / "engines").glob("*.json"))
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "gpu_name": "Some Other GPU"}))
    session = _trt(tiny, tmp_path)
    try:
        assert session.info.options["engines"][0]["cache_hit"] is False
        assert any("Some Other GPU" in w and "rebuilding" in w for w in session.info.warnings)
    finally:
        session.close()


@pytest.mark.tensorrt
def test_trt_shared_profile(tiny, tmp_path):
    session = _trt(tiny, tmp_path, batch_sizes=[1, 8], opt_batch=8)
    try:
        assert session.info.options["profile_mode"] == "shared"
        for bs in (1, 3, 8):
            feeds = _feeds(bs, seed=bs)
            np.testing.assert_allclose(session.run(feeds)[0], _reference(tiny, feeds), rtol=1e-3, atol=1e-3)
        assert len(session.info.options["engines"]) == 1
        with pytest.raises(MeasurementError, match="outside the engine's optimization profile"):
            session.run(_feeds(9))
    finally:
        session.close()


@pytest.mark.tensorrt
def test_trt_fp16_and_int8(tiny, tmp_path):
    fp16 = _trt(tiny, tmp_path, "fp16")
    try:
        assert fp16.info.options["trt_precision"] == "fp16" and fp16.info.options["source"] == "fp32-graph"
        assert "FP16" in fp16.info.options["builder_flags"]
        feeds = _feeds(4)
        np.testing.assert_allclose(fp16.run(feeds)[0], _reference(tiny, feeds), rtol=5e-2, atol=5e-2)
    finally:
        fp16.close()
    with pytest.raises(BackendUnavailableError, match="calibration needs data"):
        _trt(tiny, tmp_path, "int8-static")
    calib = Dataset("calib", {"x": np.random.default_rng(1).standard_normal((64, 3, 16, 16)).astype(np.float32)})
    int8 = _trt(tiny, tmp_path, "int8-static", calib_data=calib, calib_batch_size=16)
    try:
        assert "INT8" in int8.info.options["builder_flags"]
        assert int8.info.options["calibration"]["samples"] == 64
        assert list((tmp_path / "engines").glob("calib-*.cache"))
        out = int8.run(_feeds(4))[0]
        assert np.isfinite(out).all() and out.shape == (4, 5)
    finally:
        int8.close()


@pytest.mark.tensorrt
def test_trt_skips_pruned_int8(tiny, tmp_path):
    pruned = CompressionRecord("prune-structured", True, "pruned")
    variant = _variant(tiny, precision="int8-static", onnx_path=tmp_path / "q.onnx", records=[pruned])
    ok, reason = get_backend("tensorrt").supports(variant, "cuda")
    assert not ok and "keeps no FP32 graph" in reason


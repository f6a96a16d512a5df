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
    # the engine cache prefix is the file's hash: same graph, other weights -> other engines
    from benchmark.backends.trt_engine import file_sha256

    opts, _ = tensorrt_ep_options("fp32", plain, {"trt_engine_cache_dir": cache})
    assert opts["trt_engine_cache_prefix"] == "sb_" + file_sha256(plain)[:16]


def test_ort_tensorrt_ep_warns_about_asymmetric_qdq(tmp_path):
    """TensorRT takes symmetric INT8 Q/DQ only; ORT's own static quantization writes uint8 zero points."""
    import onnx
    from onnx import TensorProto, helper

    from benchmark.backends.onnxruntime import qdq_report

    symmetric = _onnx(tmp_path / "sym.onnx", True)  # int8 zero point 0
    assert qdq_report(symmetric) == (True, [])
    assert qdq_report(_onnx(tmp_path / "plain.onnx", False)) == (False, [])
    _, notes = tensorrt_ep_options("int8-static", symmetric, {"trt_engine_cache": False})
    assert notes == []
    model = onnx.load(str(symmetric))
    model.graph.initializer[1].CopyFrom(helper.make_tensor("z", TensorProto.UINT8, [], [128]))
    model.graph.node[1].input[2] = "z"
    model.graph.node[0].name = "q0"
    onnx.save(model, str(tmp_path / "asym.onnx"))
    assert qdq_report(tmp_path / "asym.onnx") == (True, ["q0"])
    _, notes = tensorrt_ep_options("int8-static", tmp_path / "asym.onnx", {"trt_engine_cache": False})
    assert len(notes) == 1 and "symmetric INT8 Q/DQ" in notes[0] and "CUDAExecutionProvider" in notes[0]


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
        assert first.build()["cached"] is False and first.build()["build_time_s"] > 0
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
        again.bind(_feeds(1))
        assert again.build()["cached"] is True and again.build()["build_time_s"] > 0  # the recorded build time
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



# --- torch-tensorrt -------------------------------------------------------------------------------
def _params(**defaults):
    """A compile() signature: parameter name -> default, as ``inspect.signature(...).parameters`` gives."""
    import inspect

    return {name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
            for name, value in defaults.items()}


WEAK = _params(enabled_precisions={torch.float32})  # releases before explicit typing
EXPLICIT = _params(enabled_precisions={torch.float32}, use_explicit_typing=True, enable_autocast=False,
                   autocast_low_precision_type=None)
EXPLICIT_NO_AUTOCAST = _params(enabled_precisions={torch.float32}, use_explicit_typing=True)


def test_torch_tensorrt_compile_settings_follow_the_release():
    from benchmark.backends.torch_tensorrt import compile_settings

    assert compile_settings("fp32", EXPLICIT) == (None, {}, "")
    assert compile_settings("fp32", _params(disable_tf32=False)) == (None, {"disable_tf32": True}, "")
    # fp16/bf16: the cast is in the graph; weakly typed releases are also told the allowed precision
    assert compile_settings("fp16", EXPLICIT) == ("float16", {}, "")
    assert compile_settings("fp16", WEAK) == ("float16", {"enabled_precisions": ("float16",)}, "")
    assert compile_settings("bf16", WEAK) == ("bfloat16", {"enabled_precisions": ("bfloat16",)}, "")
    # autocast: Torch-TensorRT's own autocast where it exists, TensorRT's per-layer choice on weak typing
    assert compile_settings("autocast-fp16", EXPLICIT) == (
        None, {"enable_autocast": True, "autocast_low_precision_type": "float16", "use_explicit_typing": True}, "")
    assert compile_settings("autocast-bf16", WEAK) == (None, {"enabled_precisions": ("float32", "bfloat16")}, "")
    cast, kwargs, reason = compile_settings("autocast-fp16", EXPLICIT_NO_AUTOCAST)
    assert reason == "this torch-tensorrt release types explicitly and has no autocast; use the fp16 variant instead"
    assert "ModelOpt" in compile_settings("int8", EXPLICIT)[2]
    assert compile_settings("int4", EXPLICIT)[2].startswith("torch-tensorrt runs fp32, fp16")


def test_torch_tensorrt_is_registered_and_says_why_it_cannot_run():
    import importlib.util

    from benchmark.backends import backend_names
    from benchmark.backends.torch_tensorrt import TorchTensorRTBackend
    from benchmark.backends import backend_status

    assert "torch-tensorrt" in backend_names()
    backend = get_backend("torch-tensorrt")
    assert isinstance(backend, TorchTensorRTBackend)
    ok, reason = backend.availability("cpu")
    assert not ok and reason == "torch-tensorrt runs on NVIDIA GPUs only (device 'cuda'), not on cpu"
    if importlib.util.find_spec("torch_tensorrt") is None:
        ok, reason = backend.availability("cuda")
        assert not ok and reason.startswith("torch-tensorrt: package not installed (pip install \"torch-tensorrt==X.Y.*\"")
    rows = [r for r in backend_status() if r["backend"] == "torch-tensorrt"]
    assert {r["device"] for r in rows} == {"cpu", "cuda"} and not any(r["available"] for r in rows if r["device"] == "cpu")


def test_torch_tensorrt_options_checked_before_any_gpu_work(tiny):
    from benchmark.backends.torch_tensorrt import check_options

    with pytest.raises(ConfigError, match="unknown torch-tensorrt option.*known: min_block_size, workspace_mb"):
        check_options({"fast": 1})
    with pytest.raises(ConfigError, match="min_block_size must be >= 1"):
        check_options({"min_block_size": 0})
    with pytest.raises(ConfigError, match="workspace_mb must be > 0"):
        get_backend("torch-tensorrt").prepare(_variant(tiny), "cuda", options={"workspace_mb": -1})


@pytest.mark.gpu
@pytest.mark.parametrize("torch_precision, tol", [("fp32", 1e-3), ("fp16", 2e-2)])
def test_torch_tensorrt_compiles_runs_and_reports_build_time(tiny, torch_precision, tol):
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt is not installed")
    session = get_backend("torch-tensorrt").prepare(_variant(tiny, torch_precision=torch_precision), "cuda")
    try:
        assert session.info.options["compiled"][0]["max_batch"] == 1
        feeds = _feeds(4)
        np.testing.assert_allclose(session.run(feeds)[0], _reference(tiny, feeds), rtol=tol, atol=tol)
        stats = measure_latency(session, feeds, _timing(4), "cuda")
        assert stats.timer == "cuda_events" and stats.iterations >= 5
        build = session.build()
        assert build["build_time_s"] > 0 and build["cached"] is False
        assert [c["max_batch"] for c in session.info.options["compiled"]] == [1, 4]
    finally:
        session.close()


@pytest.mark.gpu
def test_cuda_sweep_records_graphs_memory_and_energy(tmp_path):
    """A whole sweep on CUDA: CUDA-graph replay recorded per row, GPU peak memory, and GPU energy
    (or, without nvidia-ml-py, the reason it was not measured)."""
    import importlib.util

    from benchmark.config import SweepConfig
    from benchmark.store import Store
    from benchmark.sweep import run_sweep

    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", precisions=("fp32", "fp16"), backends=("pytorch",), device="cuda",
                      batch_sizes=(1, 64), cuda_graph=True, min_duration_s=1.0, min_iters=20, eval_samples=64)
    sid = run_sweep(cfg, store, job_timeout_s=300)
    rows = {(r.variant, r.batch_size): r for r in store.get_results(sid)}
    assert all(r.status == "ok" for r in rows.values()), [r.error for r in rows.values()]
    for (variant, batch), row in rows.items():
        options = row.env["session"]["options"]
        assert options["cuda_graph"] is True
        assert row.gpu_peak_mb > 0 and row.accuracy["top1"] > 0.9
        assert row.build_time_s is None  # eager PyTorch builds nothing ahead
        if importlib.util.find_spec("pynvml") is not None:
            assert row.energy["mean_power_w"] > 0 and row.energy["joules_per_sample"] > 0
        else:
            assert row.energy is None and any("nvidia-ml-py is not installed" in w for w in row.warnings)
    assert 1 in rows[("fp32", 1)].env["session"]["options"]["cuda_graph_batches"]
    assert 64 not in rows[("fp32", 64)].env["session"]["options"]["cuda_graph_batches"]  # above the limit: eager


# --- onnxruntime-trt ------------------------------------------------------------------------------
def test_onnxruntime_trt_is_its_own_backend_and_says_why_it_cannot_run():
    from benchmark.backends import backend_names

    assert "onnxruntime-trt" in backend_names()
    backend = get_backend("onnxruntime-trt")
    ok, reason = backend.availability("cpu")
    assert not ok and reason == "onnxruntime-trt runs on NVIDIA GPUs only (device 'cuda'), not on cpu"
    if not torch.cuda.is_available():
        ok, reason = backend.availability("cuda")
        assert not ok and reason.startswith(("CUDA", "onnxruntime")), reason


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_onnxruntime_trt_rows_run_on_the_tensorrt_provider(tiny, tmp_path):
    _ort_cuda_or_skip()
    backend = get_backend("onnxruntime-trt")
    ok, reason = backend.availability("cuda")
    if not ok:
        pytest.skip(reason)
    session = backend.prepare(_variant(tiny), "cuda", workdir=tmp_path,
                              options={"trt_engine_cache_dir": str(tmp_path / "ort-trt")})
    try:
        assert session.info.backend == "onnxruntime-trt"
        assert session.info.providers[0] == "TensorrtExecutionProvider"
        feeds = _feeds()
        np.testing.assert_allclose(session.run(feeds)[0], _reference(tiny, feeds), rtol=1e-3, atol=1e-3)
    finally:
        session.close()

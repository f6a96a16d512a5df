"""TensorRT backend: the parts that need neither a GPU nor TensorRT.

Engine planning, optimization profiles, INT8 calibration batching, cache keys, the engine cache's
sidecar checks (with engine files written here: a test of the cache logic, not of TensorRT) and
the ONNX Runtime TensorRT/CUDA provider-option mapping. Building and running engines is in
tests/test_gpu.py (marked ``tensorrt``).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.backends import get_backend
from benchmark.backends import trt_engine as te
from benchmark.backends.tensorrt import TensorRTBackend, check_options
from benchmark.config import InputSpec
from benchmark.data.base import Dataset
from benchmark.errors import BackendUnavailableError, ConfigError, DataError
from benchmark.models.base import CompressionRecord, LoadedModel, Variant

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture
def image_model(tmp_path):
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not used by the planner")
    return LoadedModel(name="m", format="onnx", framework="onnx",
                       inputs=[InputSpec("image", ("batch", 3, 32, 32))], onnx_path=onnx_file, dataset="digits")


def _variant(model, precision="fp32", onnx_path="same", records=(), torch_module=None, torch_precision="fp32"):
    return Variant(name=precision, model=model, precision=precision,
                   onnx_path=model.onnx_path if onnx_path == "same" else onnx_path,
                   torch_module=torch_module, torch_precision=torch_precision, records=list(records))


PRUNED = CompressionRecord("prune-structured", True, "pruned 50% of channels")


# --- availability ---------------------------------------------------------------------------------
def test_registered_under_tensorrt():
    assert isinstance(get_backend("tensorrt"), TensorRTBackend)


@pytest.mark.skipif(HAS_TRT, reason="checks the answer without the tensorrt package")
def test_availability_without_package():
    assert get_backend("tensorrt").availability("cuda") == (False, "TensorRT: package not installed")


def test_cpu_is_refused_with_a_reason():
    ok, reason = get_backend("tensorrt").availability("cpu")
    assert not ok and "GPU" in reason and "cpu" in reason


def test_availability_without_cuda_names_cuda(monkeypatch):
    """The package being found is not enough: without a CUDA device the reason is the GPU."""
    if _cuda():
        pytest.skip("this machine has a CUDA device")
    import benchmark.backends.tensorrt as mod

    real = importlib.util.find_spec
    monkeypatch.setattr(mod.importlib.util, "find_spec",
                        lambda name, *a: real("json") if name == "tensorrt" else real(name, *a))
    assert TensorRTBackend().availability("cuda") == (False, "CUDA: no GPU")


def test_supports_and_prepare_refuse_here(image_model):
    if HAS_TRT and _cuda():
        pytest.skip("TensorRT is usable on this machine")
    backend = get_backend("tensorrt")
    ok, reason = backend.supports(_variant(image_model), "cuda")
    assert not ok and reason.startswith(("TensorRT", "CUDA"))
    with pytest.raises(BackendUnavailableError, match=r"^tensorrt on cuda: (TensorRT|CUDA)"):
        backend.prepare(_variant(image_model), "cuda")


def test_int8_calibrates_on_the_variants_own_data(image_model, monkeypatch):
    """A user's calibration data (the variant was calibrated on it) beats the model's dataset."""
    monkeypatch.setattr(te, "trt_version", lambda: "10.13.0")  # calibrator-based INT8 (the extra's version)
    rng = np.random.default_rng(0)
    user = Dataset("user.npz", {"image": rng.standard_normal((70, 3, 32, 32)).astype("float32")})
    v = dataclasses.replace(_variant(image_model, "int8-static"), calib_data=user)
    batches, digest, info = TensorRTBackend._calibration(v, {"calib_batch_size": 32})
    assert info["dataset"] == "user.npz" and "calibrated on" in info["source"]
    assert [b["image"].shape[0] for b in batches] == [32, 32] and info["samples"] == 64
    np.testing.assert_array_equal(batches[1]["image"], user.arrays["image"][32:64])
    assert digest == te.batches_sha256(batches)
    # Without a dataset on the model, the variant's data still lets TensorRT INT8 run.
    no_data = dataclasses.replace(image_model, dataset=None)
    ok, reason = get_backend("tensorrt").supports_impl(dataclasses.replace(v, model=no_data), "cuda")
    assert ok, reason
    ok, reason = get_backend("tensorrt").supports_impl(_variant(no_data, "int8-static"), "cuda")
    assert not ok and "needs data" in reason


def test_options_are_checked_before_any_gpu_work(image_model):
    backend = get_backend("tensorrt")
    with pytest.raises(ConfigError, match="unknown tensorrt option.*bogus.*known: batch_sizes"):
        backend.prepare(_variant(image_model), "cuda", options={"bogus": 1})
    with pytest.raises(ConfigError, match="opt_batch applies to the shared engine"):
        check_options({"opt_batch": 4})
    with pytest.raises(ConfigError, match=r"opt_batch must be in \[1, 8\]"):
        check_options({"batch_sizes": [1, 8], "opt_batch": 16})
    with pytest.raises(ConfigError, match="batch_sizes must be a non-empty list"):
        check_options({"batch_sizes": []})
    with pytest.raises(ConfigError, match="workspace_mb must be > 0"):
        check_options({"workspace_mb": 0})
    with pytest.raises(ConfigError, match="calib_data must be a benchmark.data.Dataset"):
        check_options({"calib_data": np.zeros(3)})
    check_options({"batch_sizes": [1, 8], "opt_batch": 8, "workspace_mb": 512, "engine_cache": False})


# --- engine plan ----------------------------------------------------------------------------------
def test_plan_fp32_from_the_variant(image_model):
    plan = te.plan_engine(_variant(image_model))
    assert (plan.precision, plan.source) == ("fp32", "variant")
    torch_only = _variant(image_model, onnx_path=None, torch_module=object())
    assert te.plan_engine(torch_only).precision == "fp32"
    nothing = _variant(image_model, onnx_path=None)
    assert not te.plan_engine(nothing).ok


def test_plan_reduced_precisions_use_the_fp32_graph(image_model):
    fp16 = te.plan_engine(_variant(image_model, "fp16"))
    int8 = te.plan_engine(_variant(image_model, "int8-static"))
    assert (fp16.precision, fp16.source) == ("fp16", "fp32-graph")
    assert (int8.precision, int8.source) == ("int8", "fp32-graph")


def test_plan_pruned_variants(image_model, tmp_path):
    fp16 = te.plan_engine(_variant(image_model, "fp16", onnx_path=tmp_path / "p16.onnx", records=[PRUNED]))
    assert (fp16.precision, fp16.source) == ("fp16", "variant") and "prune-structured" in fp16.note
    int8 = te.plan_engine(_variant(image_model, "int8-static", onnx_path=tmp_path / "q.onnx", records=[PRUNED]))
    assert not int8.ok and "keeps no FP32 graph" in int8.note
    # A record that changed nothing does not count as a structural step.
    noop = CompressionRecord("prune-structured", False, "nothing removed")
    assert te.plan_engine(_variant(image_model, "int8-static", records=[noop])).source == "fp32-graph"


@pytest.mark.parametrize("precision, words", [("int8-dynamic", "no dynamic"), ("mixed", "use fp16 or int8-static")])
def test_plan_refuses_what_tensorrt_has_no_equivalent_for(image_model, precision, words):
    plan = te.plan_engine(_variant(image_model, precision))
    assert not plan.ok and words in plan.note


def test_plan_tensorrt_11_is_strongly_typed(image_model, tmp_path):
    """TensorRT 11 removed the FP16/BF16/INT8 builder flags and the calibrators."""
    assert te.strongly_typed_only("11.4.0") and not te.strongly_typed_only("10.13.0")
    assert not te.strongly_typed_only(None)
    fp32 = te.plan_engine(_variant(image_model), "11.4.0", True)
    assert (fp32.precision, fp32.source) == ("fp32", "variant")
    fp16 = te.plan_engine(_variant(image_model, "fp16", onnx_path=tmp_path / "h.onnx"), "11.4.0", True)
    assert (fp16.precision, fp16.source) == ("fp16", "variant") and "strongly typed" in fp16.note
    pruned = te.plan_engine(_variant(image_model, "fp16", onnx_path=tmp_path / "p.onnx", records=[PRUNED]), "11.4.0")
    assert pruned.source == "variant" and "prune-structured" in pruned.note
    no_file = te.plan_engine(_variant(image_model, "fp16", onnx_path=None, torch_module=object()), "11.4.0")
    assert not no_file.ok and "has none" in no_file.note
    int8 = te.plan_engine(_variant(image_model, "int8-static"), "11.4.0", True)
    assert not int8.ok and "symmetric INT8" in int8.note and "tensorrt 10.x" in int8.note
    bf16 = te.plan_engine(_variant(image_model, "bf16", onnx_path=None), "11.4.0", True)
    assert not bf16.ok and "BF16-typed" in bf16.note
    # TensorRT 10 keeps its own conversion from the FP32 graph.
    assert te.plan_engine(_variant(image_model, "int8-static"), "10.13.0", True).source == "fp32-graph"


def test_tensorrt_extra_installs_10x():
    import tomllib

    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extra["tensorrt"] == ["tensorrt>=10,<11"]


def test_plan_bf16_needs_trt9_and_ampere(image_model):
    v = _variant(image_model, "bf16", onnx_path=None)
    assert "TensorRT >= 9" in te.plan_engine(v, "8.6.1", True).note
    assert "TensorRT >= 9" in te.plan_engine(v, None, True).note
    assert "compute capability >= 8.0" in te.plan_engine(v, "10.3.0", False).note
    plan = te.plan_engine(v, "10.3.0", True)
    assert (plan.precision, plan.source) == ("bf16", "fp32-graph")


# --- profiles -------------------------------------------------------------------------------------
def test_profile_shapes_cover_the_batch_sizes():
    specs = [InputSpec("image", ("batch", 3, 32, 32))]
    assert te.profile_shapes(specs, [8, 1, 64]) == {
        "image": ((1, 3, 32, 32), (64, 3, 32, 32), (64, 3, 32, 32))}
    assert te.profile_shapes(specs, [8, 64], opt_batch=8)["image"][1] == (8, 3, 32, 32)
    assert te.profile_shapes(specs, [4])["image"] == ((1, 3, 32, 32), (4, 3, 32, 32), (4, 3, 32, 32))


def test_profile_shapes_several_inputs_and_static_batch():
    specs = [InputSpec("input_ids", ("batch", 64), "int64"), InputSpec("attention_mask", ("batch", 64), "int64"),
             InputSpec("scale", (1,), "float32")]
    prof = te.profile_shapes(specs, [1, 16])
    assert prof["input_ids"] == prof["attention_mask"] == ((1, 64), (16, 64), (16, 64))
    assert prof["scale"] == ((1,), (1,), (1,))


def test_profile_shapes_errors():
    specs = [InputSpec("image", ("batch", 3, 32, 32))]
    with pytest.raises(ConfigError, match="at least one batch size"):
        te.profile_shapes(specs, [])
    with pytest.raises(ConfigError, match="must be >= 1"):
        te.profile_shapes(specs, [0, 4])
    with pytest.raises(ConfigError, match=r"opt batch must be in \[1, 4\]"):
        te.profile_shapes(specs, [4], opt_batch=5)
    with pytest.raises(ConfigError, match="dynamic dim 1"):
        te.profile_shapes([InputSpec("ids", ("batch", "seq"), "int64")], [1])


def test_profile_covers():
    prof = te.profile_shapes([InputSpec("x", ("b", 3))], [1, 8])
    assert te.profile_covers(prof, {"x": (8, 3)}) == []
    assert te.profile_covers(prof, {"x": (1, 3)}) == []
    bad = te.profile_covers(prof, {"x": (9, 3)})
    assert len(bad) == 1 and "9x3" in bad[0] and "1x3 .. 8x3" in bad[0]
    assert te.profile_covers(prof, {"x": (2, 3, 1)}) != []


# --- calibration data -----------------------------------------------------------------------------
def _dataset(n=70, **extra):
    rng = np.random.default_rng(0)
    arrays = {"image": rng.standard_normal((n, 3, 4, 4)), **extra}
    return Dataset("calib", arrays, labels=np.arange(n) % 3)


def test_calibration_batches_equal_sized_and_cast():
    specs = [InputSpec("image", ("batch", 3, 4, 4))]
    ds = _dataset(70)
    batches = te.calibration_batches(ds, specs, 32)
    assert [b["image"].shape[0] for b in batches] == [32, 32]  # the last 6 samples are dropped
    assert batches[0]["image"].dtype == np.float32 and batches[0]["image"].flags.c_contiguous
    np.testing.assert_allclose(batches[1]["image"], ds.arrays["image"][32:64].astype(np.float32))
    assert [b["image"].shape[0] for b in te.calibration_batches(ds, specs, 32, max_samples=40)] == [32]
    assert [b["image"].shape[0] for b in te.calibration_batches(_dataset(10), specs, 32)] == [10]


def test_calibration_batches_keeps_integer_inputs_and_fixed_batch():
    n = 20
    ds = Dataset("tok", {"ids": np.arange(n * 5).reshape(n, 5).astype(np.int32)})
    batches = te.calibration_batches(ds, [InputSpec("ids", (4, 5), "int64")], 32)
    assert len(batches) == 5 and all(b["ids"].shape == (4, 5) and b["ids"].dtype == np.int64 for b in batches)
    with pytest.raises(DataError, match="fixed batch size is 4"):
        te.calibration_batches(Dataset("tiny", {"ids": np.zeros((3, 5))}), [InputSpec("ids", (4, 5), "int64")])


def test_calibration_batches_errors():
    specs = [InputSpec("image", ("batch", 3, 4, 4))]
    with pytest.raises(DataError, match="no array for input.*mask"):
        te.calibration_batches(_dataset(8), specs + [InputSpec("mask", ("batch", 4))])
    per_feed = Dataset("feeds", {"image": np.zeros((2, 5, 3, 4, 4))}, feed_axis={"image": True})
    with pytest.raises(DataError, match="first axis is the batch"):
        te.calibration_batches(per_feed, specs)
    with pytest.raises(ConfigError, match="calibration batch size must be >= 1"):
        te.calibration_batches(_dataset(8), specs, 0)


def test_batches_digest_follows_the_data():
    specs = [InputSpec("image", ("batch", 3, 4, 4))]
    a = te.calibration_batches(_dataset(64), specs, 32)
    b = te.calibration_batches(_dataset(64), specs, 32)
    assert te.batches_sha256(a) == te.batches_sha256(b)
    b[1]["image"][0, 0, 0, 0] += 1.0
    assert te.batches_sha256(a) != te.batches_sha256(b)
    assert te.batches_sha256(a) != te.batches_sha256(te.calibration_batches(_dataset(64), specs, 16))


# --- hashes and keys ------------------------------------------------------------------------------
def _onnx_with_external_data(folder, weight):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.full((64, 64), weight, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    return path


def test_file_sha256_includes_external_data(tmp_path):
    a = _onnx_with_external_data(tmp_path / "a", 1.0)
    b = _onnx_with_external_data(tmp_path / "b", 1.0)
    c = _onnx_with_external_data(tmp_path / "c", 2.0)
    assert (tmp_path / "a" / "model.onnx.data").stat().st_size >= 64 * 64 * 4
    assert a.read_bytes() == c.read_bytes()  # the graph file alone is identical ...
    assert te.file_sha256(a) == te.file_sha256(b)
    assert te.file_sha256(a) != te.file_sha256(c)  # ... the weights are not
    import hashlib

    assert te.file_sha256(a) != hashlib.sha256(a.read_bytes()).hexdigest()


KEY_ARGS = dict(model_sha256="ab" * 32, precision="fp16",
                profile={"x": ((1, 3), (8, 3), (8, 3))}, gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability="9.0", trt_version="10.3.0", extra={"workspace_bytes": None})


def test_engine_cache_key_is_stable_and_sensitive():
    key = te.engine_cache_key(**KEY_ARGS)
    assert key == te.engine_cache_key(**KEY_ARGS) and len(key) == 32
    changes = dict(model_sha256="cd" * 32, precision="int8", profile={"x": ((1, 3), (4, 3), (8, 3))},
                   gpu_name="NVIDIA A100-SXM4-40GB", compute_capability="8.0", trt_version="10.4.0",
                   extra={"workspace_bytes": 1 << 30})
    keys = {te.engine_cache_key(**{**KEY_ARGS, k: v}) for k, v in changes.items()}
    assert len(keys) == len(changes) and key not in keys
    two = {"b": ((1,), (2,), (2,)), "a": ((1,), (2,), (2,))}
    assert te.engine_cache_key(**{**KEY_ARGS, "profile": two}) == \
        te.engine_cache_key(**{**KEY_ARGS, "profile": dict(reversed(list(two.items())))})
    with pytest.raises(ConfigError, match="TensorRT precision must be one of"):
        te.engine_cache_key(**{**KEY_ARGS, "precision": "int4"})


def test_calibration_cache_key():
    k = te.calibration_cache_key("m", "d", 32, "10.3.0")
    assert k == te.calibration_cache_key("m", "d", 32, "10.3.0")
    assert len({k, te.calibration_cache_key("m", "e", 32, "10.3.0"), te.calibration_cache_key("m", "d", 16, "10.3.0"),
                te.calibration_cache_key("m", "d", 32, "10.4.0")}) == 4


# --- engine cache (files written here; the bytes are not a real engine) -------------------------
@pytest.fixture
def cache(tmp_path):
    return te.EngineCache(tmp_path / "engines")


def _stored(cache, blob=b"engine-bytes" * 10):
    fields = te.engine_key_fields(**KEY_ARGS)
    key = te.engine_cache_key(**KEY_ARGS)
    cache.store(key, blob, fields, build_time_s=12.5, builder_flags=["FP16"])
    return key, fields, blob


def test_engine_cache_round_trip(cache):
    assert cache.load("0" * 32, te.engine_key_fields(**KEY_ARGS)) == (None, [])
    key, fields, blob = _stored(cache)
    hit, notes = cache.load(key, fields)
    assert notes == [] and hit.blob == blob and hit.path == cache.engine_path(key)
    side = json.loads(cache.sidecar_path(key).read_text())
    assert side["gpu_name"] == "NVIDIA H100 80GB HBM3" and side["compute_capability"] == "9.0"
    assert side["trt_version"] == "10.3.0" and side["build_time_s"] == 12.5
    assert side["engine_size_bytes"] == len(blob) and side["profile"] == {"x": [[1, 3], [8, 3], [8, 3]]}
    assert not list(cache.root.glob(".*.tmp"))


@pytest.mark.parametrize("field, other", [("gpu_name", "NVIDIA A100-SXM4-40GB"), ("compute_capability", "8.0"),
                                          ("trt_version", "10.4.0")])
def test_engine_cache_refuses_another_machine(cache, field, other):
    key, fields, _ = _stored(cache)
    here = te.engine_key_fields(**{**KEY_ARGS, field: other})
    hit, notes = cache.load(key, here)
    assert hit is None and len(notes) == 1
    assert field in notes[0] and other in notes[0] and str(fields[field]) in notes[0] and "rebuilding" in notes[0]


def test_engine_cache_refuses_a_tampered_sidecar_or_engine(cache):
    key, fields, blob = _stored(cache)
    side = cache.sidecar_path(key)
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "precision": "fp32"}))
    hit, notes = cache.load(key, fields)
    assert hit is None and "precision 'fp32'" in notes[0]

    side.write_text("{not json")
    hit, notes = cache.load(key, fields)
    assert hit is None and "sidecar unreadable" in notes[0]

    side.unlink()
    hit, notes = cache.load(key, fields)
    assert hit is None and "has no sidecar" in notes[0]

    key, fields, blob = _stored(cache)
    cache.engine_path(key).write_bytes(blob[:-5])
    hit, notes = cache.load(key, fields)
    assert hit is None and "sha256" in notes[0]

    cache.discard(key)
    assert not cache.engine_path(key).exists() and not cache.sidecar_path(key).exists()


def test_calibration_cache_lives_next_to_the_engines(cache):
    assert cache.calibration_path("abc").parent == cache.root
    assert cache.calibration_path("abc").name == "calib-abc.cache"


# --- ONNX Runtime provider options ----------------------------------------------------------------
def test_ort_trt_options_precisions(tmp_path):
    o32 = te.ort_tensorrt_provider_options("fp32", cache_dir=tmp_path)
    assert o32["trt_fp16_enable"] == "False" and o32["trt_int8_enable"] == "False"
    assert o32["trt_engine_cache_enable"] == "True" and o32["trt_engine_cache_path"] == str(tmp_path)
    assert o32["trt_timing_cache_enable"] == "True" and o32["device_id"] == "0"
    o16 = te.ort_tensorrt_provider_options("fp16", cache_dir=tmp_path, device_id=1)
    assert o16["trt_fp16_enable"] == "True" and o16["trt_int8_enable"] == "False" and o16["device_id"] == "1"
    q = te.ort_tensorrt_provider_options("int8-static", cache_dir=tmp_path, qdq=True)
    assert q["trt_int8_enable"] == "True" and q["trt_fp16_enable"] == "True"
    assert "trt_int8_calibration_table_name" not in q
    bf = te.ort_tensorrt_provider_options("bf16", engine_cache=False)
    assert bf["trt_bf16_enable"] == "True" and bf["trt_engine_cache_enable"] == "False"
    assert "trt_engine_cache_path" not in bf
    assert te.ort_tensorrt_provider_options("mixed", qdq=True, engine_cache=False)["trt_int8_enable"] == "True"
    assert te.ort_tensorrt_provider_options("mixed", qdq=False, engine_cache=False)["trt_int8_enable"] == "False"
    assert all(isinstance(v, str) for v in q.values())


def test_ort_trt_options_calibration_table(tmp_path):
    opts = te.ort_tensorrt_provider_options("int8", cache_dir=tmp_path, calibration_table="calib-x.cache",
                                            native_calibration_table=True, engine_cache=False,
                                            workspace_bytes=1 << 30)
    assert opts["trt_int8_calibration_table_name"] == "calib-x.cache"
    assert opts["trt_int8_use_native_calibration_table"] == "True"
    assert opts["trt_engine_cache_path"] == str(tmp_path) and opts["trt_engine_cache_enable"] == "False"
    assert opts["trt_max_workspace_size"] == str(1 << 30)


@pytest.mark.parametrize("kwargs, match", [
    (dict(precision="int8-dynamic"), "cannot run int8-dynamic"),
    (dict(precision="int4"), "precision must be one of"),
    (dict(precision="int8", qdq=True, calibration_table="t.cache"), "cannot be used with a QDQ model"),
    (dict(precision="fp16", calibration_table="t.cache"), "only applies to int8"),
    (dict(precision="int8", calibration_table="sub/t.cache"), "file name inside the engine cache folder"),
    (dict(precision="fp32", engine_cache=True, cache_dir=None), "needs cache_dir"),
    (dict(precision="fp32", workspace_bytes=0), "workspace must be > 0"),
])
def test_ort_trt_options_refusals(tmp_path, kwargs, match):
    kwargs.setdefault("cache_dir", tmp_path)
    precision = kwargs.pop("precision")
    with pytest.raises(ConfigError, match=match):
        te.ort_tensorrt_provider_options(precision, **kwargs)


def test_ort_cuda_options():
    assert te.ort_cuda_provider_options() == {"device_id": "0", "use_tf32": "0"}
    assert te.ort_cuda_provider_options(2) == {"device_id": "2", "use_tf32": "0"}


def test_ort_trt_engine_cache_prefix_follows_the_weights(tmp_path):
    a = te.ort_tensorrt_provider_options("fp32", cache_dir=tmp_path, model_sha256="ab" * 32)
    b = te.ort_tensorrt_provider_options("fp32", cache_dir=tmp_path, model_sha256="cd" * 32)
    assert a["trt_engine_cache_prefix"] == "sb_" + "ab" * 8 and a["trt_engine_cache_prefix"] != b["trt_engine_cache_prefix"]
    assert "trt_engine_cache_prefix" not in te.ort_tensorrt_provider_options("fp32", engine_cache=False,
                                                                             model_sha256="ab" * 32)

"""Memory and disk guards: the estimate, the skip reason, the disk bound, and both inside a real sweep."""
from __future__ import annotations

import pytest

from benchmark.config import InputSpec, SweepConfig
from benchmark.errors import ConfigError, ResourceError
from benchmark.models import LoadedModel
from benchmark.resources import (
    MB, activation_profile, available_memory_bytes, check_disk_space, estimate_batch_memory, input_bytes_per_sample,
    memory_skip_reason, required_free_bytes,
)
from benchmark.store import Store
from benchmark.sweep import run_sweep

FAST = dict(min_duration_s=0.05, min_iters=3, eval_samples=32, threads=1)


# --- the estimate -----------------------------------------------------------------------------
def test_estimate_adds_inputs_outputs_activations_and_weights():
    est = estimate_batch_memory(8, input_bytes_per_sample=256, output_bytes_per_sample=40,
                                largest_activation_bytes_per_sample=16384, weight_bytes=1000)
    assert (est.input_bytes, est.output_bytes, est.activation_bytes, est.weight_bytes) == (2048, 320, 3 * 16384 * 8, 1000)
    assert est.total_bytes == 2048 + 320 + 393216 + 1000 and est.activations_known
    unknown = estimate_batch_memory(2, input_bytes_per_sample=10, output_bytes_per_sample=None,
                                    largest_activation_bytes_per_sample=None, weight_bytes=None)
    assert unknown.total_bytes == 20 and not unknown.activations_known
    assert "activations not estimated" in unknown.breakdown()
    with pytest.raises(ConfigError, match="batch size must be >= 1"):
        estimate_batch_memory(0, input_bytes_per_sample=1, output_bytes_per_sample=1,
                              largest_activation_bytes_per_sample=1, weight_bytes=1)


def test_skip_reason_gives_both_numbers_in_mb():
    est = estimate_batch_memory(4096, input_bytes_per_sample=0, output_bytes_per_sample=0,
                                largest_activation_bytes_per_sample=None, weight_bytes=9800 * MB)
    assert memory_skip_reason(est, 6200 * MB) == "batch 4096 needs about 9,800 MB, 6,200 MB available: skipped"
    assert memory_skip_reason(est, 9800 * MB) is None  # exactly fits


def test_input_bytes_per_sample_uses_dtypes_and_ignores_the_batch_dim():
    specs = [InputSpec("image", ("batch", 3, 4, 4), "float32"), InputSpec("ids", ("batch", 5), "int64")]
    assert input_bytes_per_sample(specs) == 3 * 4 * 4 * 4 + 5 * 8


def test_available_memory_is_capped_by_the_environment(monkeypatch):
    monkeypatch.delenv("SLIMBENCH_MEMORY_LIMIT_MB", raising=False)
    real, source = available_memory_bytes("cpu")
    assert real > 0 and "psutil" in source
    monkeypatch.setenv("SLIMBENCH_MEMORY_LIMIT_MB", "12")
    assert available_memory_bytes("cpu") == (12 * MB, "SLIMBENCH_MEMORY_LIMIT_MB=12")
    monkeypatch.setenv("SLIMBENCH_MEMORY_LIMIT_MB", "lots")
    with pytest.raises(ConfigError, match="SLIMBENCH_MEMORY_LIMIT_MB must be a number of MB >= 0; got 'lots'"):
        available_memory_bytes("cpu")


def test_torch_profile_finds_the_largest_intermediate_tensor():
    import torch

    # Linear(4->16) -> ReLU -> Linear(16->2): the largest tensor of one sample is the 16-float hidden one.
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()
    model = LoadedModel(name="mlp", format="pickle", framework="torch", inputs=[InputSpec("x", ("batch", 4))],
                        torch_module=net)
    prof = activation_profile(model)
    assert (prof.largest_bytes, prof.output_bytes, prof.note) == (16 * 4, 2 * 4, None)


def test_torch_profile_failure_is_a_note_not_a_crash():
    import torch

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("nope")

    model = LoadedModel(name="b", format="pickle", framework="torch", inputs=[InputSpec("x", ("batch", 4))],
                        torch_module=Broken())
    prof = activation_profile(model)
    assert prof.largest_bytes is None and "batch-1 probe raised AssertionError (nope)" in prof.note


def test_onnx_profile_from_shape_inference(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    # Conv(1->4, 3x3, pad 1) on 8x8 -> GlobalAveragePool -> Flatten: largest = 4x8x8 floats = 1024 bytes.
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), dtype="float32"), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    path = tmp_path / "t.onnx"
    onnx.save(proto, str(path))
    model = LoadedModel(name="t", format="onnx", framework="onnx", inputs=[InputSpec("x", ("N", 1, 8, 8))],
                        onnx_path=path)
    prof = activation_profile(model)
    assert (prof.largest_bytes, prof.output_bytes) == (4 * 8 * 8 * 4, 4 * 4)


# --- disk ---------------------------------------------------------------------------------------
def test_disk_bound_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("SLIMBENCH_MIN_FREE_MB", raising=False)
    assert required_free_bytes(10 * MB)[0] == 3 * 10 * MB + 64 * MB
    assert check_disk_space(tmp_path, 10 * MB, free_bytes=94 * MB)["required_bytes"] == 94 * MB
    with pytest.raises(ResourceError) as err:
        check_disk_space(tmp_path, 10 * MB, "building fp16", free_bytes=93 * MB)
    msg = str(err.value)
    assert msg.startswith(f"not enough disk space in {tmp_path} for building fp16: needs 94 MB free")
    assert "(3 x the 10 MB model + 64 MB), 93 MB free" in msg and "\n" not in msg
    monkeypatch.setenv("SLIMBENCH_MIN_FREE_MB", "5")
    assert required_free_bytes(10**12)[0] == 5 * MB
    check_disk_space(tmp_path, 10**12)  # the override replaces the bound: the real disk has 5 MB free
    monkeypatch.setenv("SLIMBENCH_MIN_FREE_MB", "-1")
    with pytest.raises(ConfigError, match="SLIMBENCH_MIN_FREE_MB must be a number of MB >= 0"):
        check_disk_space(tmp_path, 1)


# --- in a sweep ----------------------------------------------------------------------------------
def test_huge_batch_is_skipped_with_the_reason_while_others_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_MEMORY_LIMIT_MB", "64")
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", backends=("pytorch",), batch_sizes=(1, 100_000), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    rows = {r.batch_size: r for r in store.get_results(sid)}
    assert rows[1].status == "ok" and rows[1].latency_ms["p50"] > 0
    big = rows[100_000]
    assert big.status == "skipped" and big.latency_ms is None
    # digits-cnn: largest tensor 64x8x8 floats = 16 KiB per sample, x3 x 100000 = 4,688 MB of activations
    assert big.error.startswith("batch 100000 needs about 4,")
    assert big.error.endswith("MB, 64 MB available: skipped")
    assert any(w.startswith("memory estimate for batch 100000: inputs 25 MB") for w in big.warnings)
    assert "available memory from SLIMBENCH_MEMORY_LIMIT_MB=64" in big.warnings
    assert store.get_sweep(sid).status == "done"


def test_too_little_disk_fails_the_variant_with_folder_and_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_MIN_FREE_MB", str(10**12))
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", backends=("pytorch", "onnxruntime"), batch_sizes=(1,), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    rows = store.get_results(sid)
    assert [r.status for r in rows] == ["failed", "failed"]
    for r in rows:
        assert r.error.startswith("not enough disk space in ") and "/work/sweep-" in r.error
        assert f"for building fp32: needs {10**12:,} MB free (SLIMBENCH_MIN_FREE_MB=1e+12), " in r.error
        assert r.error.split("), ")[1].split(" MB free")[0].replace(",", "").isdigit()


def test_bad_limit_variable_is_bad_input_before_anything_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_MEMORY_LIMIT_MB", "half")
    store = Store(tmp_path / "r.db")
    with pytest.raises(ConfigError, match="SLIMBENCH_MEMORY_LIMIT_MB must be a number"):
        run_sweep(SweepConfig(model="sample:digits-cnn", backends=("pytorch",)), store)
    assert store.list_sweeps() == []

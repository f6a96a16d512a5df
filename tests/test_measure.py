"""Measurements: latency loop and stats, device lock, memory/size, accuracy/fidelity, comparison, environment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from benchmark.backends import get_backend
from benchmark.config import InputSpec, RunConfig
from benchmark.data.base import Dataset
from benchmark.errors import MeasurementError
from benchmark.measure.accuracy import evaluate, fidelity, topk_accuracy
from benchmark.measure.compare import compare_outputs
from benchmark.backends import backend_status
from benchmark.measure.environment import collect_environment
from benchmark.measure.latency import (
    LatencyStats, device_lock, lock_path, measure_latency, summarize, throughput_sps,
)
from benchmark.measure.memory import file_size_bytes, first_file_bytes, module_size_bytes, peak_rss_mb, reset_peak_rss
from benchmark.models.base import LoadedModel, Variant


# --- fakes ----------------------------------------------------------------------------------------
class SleepSession:
    """A session whose timed call sleeps ``delay_s``; records every call's time (tests the loop only)."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.calls: list[float] = []
        self.binds = 0
        self.runs = 0
        self.bound_at = 0.0

    def bind(self, feeds):
        self.binds += 1
        self.bound_at = time.perf_counter()

    def run_bound(self):
        self.calls.append(time.perf_counter())
        time.sleep(self.delay_s)

    def run(self, feeds):
        self.runs += 1
        return []

    def synchronize(self):
        pass


class IdentitySession:
    """Returns the feed ``x`` as the logits (so expected metrics can be worked out by hand)."""

    def run(self, feeds):
        return [np.asarray(feeds["x"], dtype=np.float32)]


def _cfg(**kw) -> RunConfig:
    base = dict(warmup_iters=0, warmup_s=0.0, min_iters=1, min_duration_s=0.0, max_iters=10000)
    base.update(kw)
    return RunConfig(**base)


def _assert_ordered(stats: LatencyStats) -> None:
    assert stats.min_ms <= stats.p50_ms <= stats.p90_ms <= stats.p95_ms <= stats.p99_ms <= stats.max_ms
    assert stats.min_ms <= stats.mean_ms <= stats.max_ms


# --- latency --------------------------------------------------------------------------------------
def test_latency_respects_min_duration():
    s = SleepSession(0.002)
    stats = measure_latency(s, {}, _cfg(min_iters=3, min_duration_s=0.15))
    assert stats.total_s >= 0.15
    assert stats.iterations >= 3 and stats.iterations == len(stats.samples_ms) == len(s.calls)
    assert stats.min_ms >= 2.0
    _assert_ordered(stats)
    assert s.binds == 1 and s.runs == 0


def test_latency_respects_min_iters_and_cap():
    stats = measure_latency(SleepSession(0.0005), {}, _cfg(min_iters=40, min_duration_s=0.0))
    assert stats.iterations == 40
    capped = measure_latency(SleepSession(0.0005), {}, _cfg(min_iters=3, max_iters=7, min_duration_s=30.0))
    assert capped.iterations == 7 and capped.total_s < 5


def test_warmup_by_count_and_time():
    s = SleepSession(0.001)
    stats = measure_latency(s, {}, _cfg(warmup_iters=3, warmup_s=0.08, min_iters=5))
    warm = len(s.calls) - stats.iterations
    assert warm >= 3
    assert s.calls[warm] - s.bound_at >= 0.08  # the first timed call comes after >= warmup_s of warm-up
    s2 = SleepSession(0.001)
    stats2 = measure_latency(s2, {}, _cfg(warmup_iters=25, warmup_s=0.0, min_iters=2))
    assert len(s2.calls) - stats2.iterations == 25


def test_progress_reports_fractions():
    seen = []
    measure_latency(SleepSession(0.001), {}, _cfg(min_iters=5, min_duration_s=0.6),
                    progress=lambda msg, frac: seen.append((msg, frac)))
    assert seen[-1] == ("done", 1.0)
    assert all(f is None or 0.0 <= f <= 1.0 for _, f in seen)
    assert any(m == "timing" for m, _ in seen)


def test_summarize_hand_worked():
    st = summarize([1.0, 2.0, 3.0, 4.0, 5.0], total_s=0.015, started_at="a", finished_at="b")
    assert st.mean_ms == 3.0 and st.p50_ms == 3.0 and st.min_ms == 1.0 and st.max_ms == 5.0
    assert st.p90_ms == pytest.approx(4.6)
    assert st.std_ms == pytest.approx(np.std([1, 2, 3, 4, 5], ddof=1))
    assert st.cv == pytest.approx(st.std_ms / 3.0)
    d = st.to_dict()
    assert d["samples_ms"] == [1.0, 2.0, 3.0, 4.0, 5.0] and "samples_ms" not in st.to_dict(samples=False)
    assert throughput_sps(32, 16.0) == pytest.approx(2000.0)
    with pytest.raises(MeasurementError):
        summarize([])


def _tiny_variant():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4)).eval()
    model = LoadedModel("mlp", "sample", "torch", [InputSpec("x", ("N", 16))], torch_module=net)
    return net, model


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    import warnings

    import torch

    net, model = _tiny_variant()
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 16),), str(path), dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    return Variant("fp32", model, torch_module=net, onnx_path=path)


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_latency_real_sessions(mlp_onnx, backend):
    sess = get_backend(backend).prepare(mlp_onnx, "cpu", threads=1)
    feeds = mlp_onnx.model.example_inputs(batch_size=4)
    cfg = _cfg(warmup_iters=3, min_iters=50, min_duration_s=0.05)
    stats = measure_latency(sess, feeds, cfg)
    # Both minimums hold, unless the iteration cap stopped a very fast model first.
    assert stats.iterations >= 50
    assert stats.total_s >= 0.05 or stats.iterations == cfg.max_iters
    assert 0 < stats.min_ms and stats.timer == "perf_counter_ns"
    _assert_ordered(stats)
    assert stats.throughput_sps(4) == pytest.approx(4000.0 / stats.mean_ms)
    assert stats.started_at < stats.finished_at


# --- device lock ----------------------------------------------------------------------------------
_LOCK_CHILD = textwrap.dedent("""
    import json, sys, time
    from benchmark.measure.latency import device_lock
    with device_lock("cpu"):
        t0 = time.time()
        time.sleep(float(sys.argv[1]))
        t1 = time.time()
    print(json.dumps([t0, t1]))
""")


def test_device_lock_excludes_two_processes():
    procs = [subprocess.Popen([sys.executable, "-c", _LOCK_CHILD, "0.4"], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    intervals = sorted(json.loads(p.communicate(timeout=60)[0]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    (a0, a1), (b0, b1) = intervals
    assert a1 <= b0, f"lock held by both processes at once: {intervals}"
    assert lock_path("cpu").parent.name == "locks"
    assert str(lock_path("cpu")).startswith(os.environ["SLIMBENCH_DATA_DIR"])


def test_device_lock_excludes_threads_and_is_reentrant():
    intervals = []

    def hold():
        with device_lock("cpu"):
            with device_lock("cpu"):  # re-entrant in one thread
                t0 = time.perf_counter()
                time.sleep(0.1)
                intervals.append((t0, time.perf_counter()))

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    intervals.sort()
    assert len(intervals) == 3
    assert all(intervals[i][1] <= intervals[i + 1][0] for i in range(2))


def test_device_lock_timeout_while_another_process_holds_it():
    child = subprocess.Popen([sys.executable, "-c", _LOCK_CHILD, "3"], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:  # wait until the child holds the lock
            try:
                with device_lock("cpu", timeout_s=0.01):
                    pass
                time.sleep(0.05)
            except MeasurementError:
                break
        with pytest.raises(MeasurementError, match="busy"):
            with device_lock("cpu", timeout_s=0.2):
                pass
        with device_lock("cuda", timeout_s=0.2):  # other devices stay free
            pass
    finally:
        child.communicate(timeout=30)


# --- memory and size ------------------------------------------------------------------------------
@pytest.mark.slow
def test_peak_rss_sees_an_allocation_after_a_reset():
    assert peak_rss_mb() > 10
    if not reset_peak_rss():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    before = peak_rss_mb()
    block = b"\x01" * (200 * 2**20)
    assert len(block) == 200 * 2**20
    assert peak_rss_mb() - before >= 150


def test_file_size_counts_external_data(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], initializer=[w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    data = tmp_path / "m.onnx.data"
    assert data.stat().st_size >= 64 * 64 * 4
    assert file_size_bytes(path) == path.stat().st_size + data.stat().st_size
    assert file_size_bytes(tmp_path) == path.stat().st_size + data.stat().st_size
    with pytest.raises(MeasurementError, match="no such file"):
        file_size_bytes(tmp_path / "nope.onnx")
    # the first of a model's files that exists is sized; None when none exists
    assert first_file_bytes([None, tmp_path / "nope.onnx", path]) == file_size_bytes(path)
    assert first_file_bytes([None, tmp_path / "nope.onnx"]) is None


def test_module_size_bytes():
    import torch

    lin = torch.nn.Linear(4, 3)
    assert module_size_bytes(lin) == (12 + 3) * 4
    tied = torch.nn.Sequential(lin, torch.nn.ReLU())
    tied.add_module("again", lin)
    assert module_size_bytes(tied) == (12 + 3) * 4


# --- accuracy and fidelity ------------------------------------------------------------------------
def _logits_dataset():
    x = np.array([
        [9, 1, 2, 3, 4, 5, 6],   # top1 0
        [1, 9, 8, 3, 4, 5, 6],   # top1 1, 2nd 2
        [1, 2, 3, 9, 8, 7, 6],   # top1 3
        [7, 6, 5, 4, 3, 2, 1],   # top1 0, top5 = 0..4
        [1, 2, 3, 4, 5, 6, 7],   # top1 6, top5 = 2..6
        [0, 0, 0, 0, 0, 1, 0],   # top1 5
    ], dtype=np.float32)
    labels = np.array([0, 2, 3, 6, 0, 5])
    # top1 hits: rows 0, 2, 5 -> 3/6; top5 hits: rows 0, 1, 2, 5 (row 3: 6 not in 0..4; row 4: 0 not in 2..6) -> 4/6
    return Dataset("logits", {"x": x}, labels)


def test_accuracy_top1_top5_known_case():
    rep = evaluate(IdentitySession(), _logits_dataset(), batch_size=4)
    assert rep.n_samples == 6 and rep.num_classes == 7
    assert rep.top1 == pytest.approx(3 / 6)
    assert rep.top5 == pytest.approx(4 / 6)
    assert rep.logits.shape == (6, 7)
    assert rep.top1_agreement is None
    sub = evaluate(IdentitySession(), _logits_dataset(), batch_size=4, max_samples=2)
    assert sub.n_samples == 2 and sub.top1 == pytest.approx(0.5)


def test_no_top5_with_five_classes_or_fewer():
    ds = Dataset("small", {"x": np.eye(5, dtype=np.float32)}, np.array([0, 1, 2, 3, 0]))
    rep = evaluate(IdentitySession(), ds, batch_size=2)
    assert rep.top1 == pytest.approx(0.8) and rep.top5 is None


def test_identical_outputs_have_perfect_fidelity():
    ds = _logits_dataset()
    ref = evaluate(IdentitySession(), ds, batch_size=3)
    rep = evaluate(IdentitySession(), ds, batch_size=3, reference_outputs=ref.logits)
    assert rep.top1_agreement == 1.0 and rep.cosine == pytest.approx(1.0)
    assert rep.max_abs_err == 0.0 and rep.mean_abs_err == 0.0


def test_fidelity_hand_worked():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 1.0], [0.0, 3.0]])
    fid = fidelity(a, b)
    assert fid["top1_agreement"] == 0.5
    assert fid["cosine"] == pytest.approx(0.5)  # cos 0 and cos 1
    assert fid["max_abs_err"] == 1.0 and fid["mean_abs_err"] == pytest.approx(3 / 4)
    with pytest.raises(MeasurementError, match="shape"):
        fidelity(a, b[:, :1])


def test_nan_outputs_fail_the_variant():
    x = np.ones((4, 7), dtype=np.float32)
    x[2, 3] = np.nan
    with pytest.raises(MeasurementError, match="NaN/Inf"):
        evaluate(IdentitySession(), Dataset("nan", {"x": x}, np.zeros(4, dtype=int)), batch_size=2)


def test_per_feed_dataset_is_iterated_as_given():
    feeds = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)  # 3 feeds of shape [2, 4]
    ds = Dataset("perfeed", {"x": feeds}, feed_axis={"x": True})
    rep = evaluate(IdentitySession(), ds, batch_size=8)
    assert rep.n_samples == 3
    np.testing.assert_array_equal(rep.logits, feeds.reshape(6, 4))


def test_accuracy_of_real_session_against_onnx_reference(mlp_onnx):
    rng = np.random.default_rng(0)
    ds = Dataset("rand", {"x": rng.standard_normal((10, 16)).astype(np.float32)}, rng.integers(0, 4, 10))
    ref = evaluate(get_backend("onnxruntime").prepare(mlp_onnx, "cpu", threads=1), ds, batch_size=4)
    rep = evaluate(get_backend("pytorch").prepare(mlp_onnx, "cpu", threads=1), ds, batch_size=4,
                   reference_outputs=ref.logits)
    assert rep.top1 == pytest.approx(ref.top1) and rep.top5 is None
    assert rep.top1_agreement == 1.0 and rep.cosine == pytest.approx(1.0, abs=1e-6)
    assert rep.max_abs_err < 1e-4
    assert topk_accuracy(rep.logits, ds.labels, 1) == rep.top1


# --- comparison -----------------------------------------------------------------------------------
def test_compare_outputs():
    a = [np.array([1.0, 2.0, 3.0]), np.zeros((2, 2))]
    ok = compare_outputs(a, [x.copy() for x in a], names=["y", "z"])
    assert ok.passed and ok.worst_max_abs_err == 0.0 and [o.name for o in ok.outputs] == ["y", "z"]
    b = [np.array([1.0, 2.5, 3.0]), np.zeros((2, 2))]
    bad = compare_outputs(a, b, atol=1e-3, rtol=1e-3)
    assert not bad.passed and bad.worst_output == "output_0"
    assert bad.outputs[0].max_abs_err == pytest.approx(0.5) and bad.outputs[0].max_rel_err == pytest.approx(0.2)
    assert bad.outputs[0].mismatches == 1 and bad.outputs[1].passed
    assert compare_outputs(a, b, atol=0.6).passed  # within atol
    assert compare_outputs(a, b, atol=0.0, rtol=0.25).passed  # within rtol
    shape = compare_outputs([np.zeros(3)], [np.zeros(4)])
    assert not shape.passed and "shape" in shape.outputs[0].note
    assert not compare_outputs([np.array([np.nan])], [np.array([1.0])]).passed
    assert not compare_outputs(a[:1], a).passed


# --- environment ----------------------------------------------------------------------------------
def test_environment_keys():
    env = collect_environment(threads=0)
    for key in ("cpu_model", "cores", "cores_physical", "cpu_flags", "gpu_name", "gpu_compute_capability",
                "python", "torch", "onnxruntime", "onnx", "tensorrt", "threads", "git_revision", "hostname",
                "timestamp"):
        assert key in env, key
    assert env["threads"] == os.cpu_count() and env["cores"] == os.cpu_count()
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    import onnxruntime

    assert env["onnxruntime"] == onnxruntime.__version__
    assert isinstance(env["cpu_flags"], list)
    assert collect_environment(threads=3)["threads"] == 3
    json.dumps(env)


def test_backend_status_lists_every_backend_and_device():
    rows = backend_status()
    by_key = {(r["backend"], r["device"]): r for r in rows}
    assert {("pytorch", "cpu"), ("onnxruntime", "cpu"), ("tensorrt", "cuda")} <= set(by_key)
    assert by_key[("pytorch", "cpu")]["available"] is True
    trt = by_key[("tensorrt", "cuda")]
    assert trt["available"] is False and trt["reason"].startswith(("TensorRT", "CUDA"))


@pytest.mark.gpu
def test_gpu_peak_memory_and_environment():
    import torch

    from benchmark.measure.memory import gpu_peak_mb, reset_gpu_peak

    reset_gpu_peak()
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    assert gpu_peak_mb() >= 64
    del x
    env = collect_environment()
    assert env["gpu_name"] and env["gpu_compute_capability"]

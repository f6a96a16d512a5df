"""Sweeps: planning, crash isolation inside a sweep, durability (SIGKILL + resume), background + cancel."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.config import SweepConfig
from benchmark.errors import ConfigError, DataError
from benchmark.store import Store
from benchmark.sweep import (
    cancel_sweep, estimate_duration_s, plan_size, plan_sweep, run_sweep, start_sweep_background,
    sweep_config_from_dict, sweep_config_to_dict,
)

PLUGIN = str(Path(__file__).with_name("plugins_crash.py"))
FAST = dict(min_duration_s=0.05, min_iters=3, eval_samples=32, threads=1)


def _wait(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_plan_groups_runs_per_variant_reference_first():
    cfg = SweepConfig(model="sample:digits-cnn", precisions=("int8-dynamic", "fp32"), prune_ratios=(0.0, 0.5),
                      backends=("pytorch", "onnxruntime"), batch_sizes=(1, 8))
    plan = plan_sweep(cfg)
    assert [j.variant for j in plan] == ["fp32", "int8-dynamic", "int8-dynamic+prune-s0.5", "fp32+prune-s0.5"]
    assert all(len(j.runs) == 4 for j in plan) and plan_size(plan) == 16
    assert {(r.backend, r.batch_size) for r in plan[0].runs} == {("pytorch", 1), ("pytorch", 8),
                                                                ("onnxruntime", 1), ("onnxruntime", 8)}
    assert plan[1].runs[0].key == "int8-dynamic|pytorch|1"
    small = plan_sweep(SweepConfig(model="m", backends=("pytorch",)))
    assert 0 < estimate_duration_s(small) < estimate_duration_s(plan, cfg)


def test_config_dict_round_trip():
    cfg = SweepConfig(model="m.pt", precisions=("fp32", "fp16"), batch_sizes=(1, 4), inputs=("x:1x3",),
                      arch="digits-cnn", **FAST)
    assert sweep_config_from_dict(sweep_config_to_dict(cfg)) == cfg
    assert sweep_config_from_dict({k: v for k, v in sweep_config_to_dict(cfg).items() if k != "arch"}).arch is None
    assert sweep_config_from_dict({**sweep_config_to_dict(cfg), "future_field": 1}) == cfg


def test_unknown_backend_fails_before_anything_is_stored(tmp_path):
    store = Store(tmp_path / "r.db")
    with pytest.raises(ConfigError, match="unknown backend 'nope'; known: .*onnxruntime"):
        run_sweep(SweepConfig(model="sample:digits-cnn", backends=("nope",)), store)
    assert store.list_sweeps() == []


@pytest.mark.slow
def test_mismatched_data_is_bad_input_and_stores_nothing(tmp_path):
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", data="digits-tokens", backends=("pytorch",), **FAST)
    with pytest.raises(DataError):
        run_sweep(cfg, store, job_timeout_s=120)
    assert store.list_sweeps() == [] and store.get_results() == []


@pytest.mark.slow
def test_segfault_and_hang_fail_their_rows_and_the_rest_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_PLUGINS", PLUGIN)
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", backends=("crash-segv", "pytorch", "crash-hang"),
                      batch_sizes=(1,), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=12)
    rows = {r.backend: r for r in store.get_results(sid)}
    assert rows["crash-segv"].status == "failed"
    assert rows["crash-segv"].error.startswith("killed by signal 11 (SIGSEGV) while preparing crash-segv")
    assert rows["crash-hang"].status == "failed"
    assert rows["crash-hang"].error.startswith("timed out after 12 s while preparing crash-hang")
    ok = rows["pytorch"]  # measured by a fresh child after the segfault
    assert ok.status == "ok" and ok.latency_ms["p50"] > 0 and ok.accuracy["top1"] > 0.9
    assert ok.started_at < ok.finished_at and ok.params and ok.macs
    assert rows["crash-segv"].params == ok.params  # variant facts reported before the crash are kept
    assert store.get_sweep(sid).status == "done"


@pytest.mark.slow
def test_sigkill_runner_keeps_rows_and_resume_runs_only_missing(tmp_path):
    db = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "benchmark", "run", "sample:digits-cnn", "--precision", "fp32,fp16",
           "--backend", "pytorch", "--batch-size", "1", "--min-duration", "0.05", "--min-iters", "3",
           "--eval-samples", "32", "--threads", "1",
           "--db", str(db), "--quiet"]
    runner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def first_row_ok():
            if not db.exists():
                return False
            return any(r.status == "ok" for r in Store(db).get_results())
        _wait(first_row_ok, 120, "the first finished row")
        runner.send_signal(signal.SIGKILL)
        runner.wait(30)
    finally:
        if runner.poll() is None:
            runner.kill()
    store = Store(db)
    [rec] = store.list_sweeps()
    before = {r.variant: r for r in store.get_results(rec.id)}
    assert before["fp32"].status == "ok" and before["fp16"].status in ("pending", "running")
    assert store.mark_interrupted() == [rec.id]
    assert store.get_sweep(rec.id).status == "interrupted"
    assert store.missing_runs(rec.id) == ["fp16|pytorch|1"]

    messages = []
    sid = run_sweep(None, store, lambda m, f: messages.append(m), resume_sweep_id=rec.id, job_timeout_s=120)
    assert sid == rec.id
    after = {r.variant: r for r in store.get_results(sid)}
    assert after["fp16"].status == "ok"
    assert after["fp32"].id == before["fp32"].id and after["fp32"].started_at == before["fp32"].started_at
    assert any(m.startswith("[1/1]") for m in messages)  # exactly one run was left to do
    assert store.get_sweep(sid).status == "done"


@pytest.mark.slow
def test_background_sweep_is_followed_through_the_store_and_cancels(tmp_path):
    db = tmp_path / "r.db"
    cfg = SweepConfig(model="sample:digits-cnn", backends=("pytorch", "crash-hang"), batch_sizes=(1,), **FAST)
    sid = start_sweep_background(cfg, db, job_timeout_s=120, plugins=[PLUGIN])
    store = Store(db)
    rec = store.get_sweep(sid)
    assert rec.pid and rec.pid != os.getpid() and rec.total_runs == 2
    _wait(lambda: any(r.backend == "pytorch" and r.status == "ok" for r in store.get_results(sid)), 120,
          "the pytorch row")
    _wait(lambda: "crash-hang" in store.get_sweep(sid).progress, 60, "the hanging run to start")
    assert store.get_sweep(sid).status == "running" and store.get_sweep(sid).fraction >= 0.5
    assert cancel_sweep(store, sid) == "cancelling"
    _wait(lambda: store.get_sweep(sid).status == "cancelled", 30, "the cancel")
    rows = {r.backend: r for r in store.get_results(sid)}
    assert rows["pytorch"].status == "ok" and rows["crash-hang"].status == "cancelled"
    _wait(lambda: not _alive(rec.pid), 30, "the runner to exit")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------------------------
# review fixes: row honesty (no-op compressions, fixed batches, per-feed data, memory, samples,
# cross-backend agreement, errors that fail one row only)
# --------------------------------------------------------------------------------------------
def _onnx_file(path, nodes, x_shape, inits, out_shape):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def _mlp(path, batch):
    """x [batch, 4] -> Gemm -> Relu -> Gemm -> y [batch, 3]; ``batch`` an int fixes it."""
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    inits = {"w1": rng.standard_normal((8, 4)), "b1": rng.standard_normal(8),
             "w2": rng.standard_normal((3, 8)), "b2": rng.standard_normal(3)}
    return _onnx_file(path, nodes, [batch, 4], inits, [batch, 3])


def _conv_only(path):
    """x [N, 1, 8, 8] -> Conv -> Relu -> Conv 1x1 -> GlobalAveragePool -> Flatten: no MatMul/Gemm,
    so int8-dynamic (MatMul/Gemm only) quantizes nothing."""
    import numpy as np
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["c2"]), helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    inits = {"w1": rng.standard_normal((4, 1, 3, 3)), "w2": rng.standard_normal((3, 4, 1, 1))}
    return _onnx_file(path, nodes, ["N", 1, 8, 8], inits, ["N", 3])


def _npz(path, **arrays):
    import numpy as np

    np.savez(path, **arrays)
    return str(path)


def _rows(store, sid):
    return {(r.variant, r.backend, r.batch_size): r for r in store.get_results(sid)}


def test_stored_samples_are_capped_evenly_in_time_order():
    from benchmark.results import MAX_STORED_SAMPLES
    from benchmark.sweep.rows import stored_samples

    few = [float(i) for i in range(50)]
    assert stored_samples(few) == few
    many = [float(i) for i in range(10_000)]
    kept = stored_samples(many)
    assert len(kept) == MAX_STORED_SAMPLES == 2000
    assert kept[0] == 0.0 and kept[-1] == 9999.0 and kept == sorted(kept)
    gaps = {round(b - a) for a, b in zip(kept, kept[1:])}
    assert gaps <= {5, 6}  # evenly spaced: every ~5th iteration


def test_unapplied_steps_and_their_row_warnings():
    from benchmark.config import CompressionConfig
    from benchmark.models.base import CompressionRecord
    from benchmark.sweep import noop_warning, unapplied_steps

    cfg = CompressionConfig(precision="int8-dynamic", prune_ratio=0.5)
    recs = [CompressionRecord("prune-structured", False, "found nothing"),
            CompressionRecord("int8-dynamic", True, "quantized 3 MatMul")]
    assert unapplied_steps(cfg, recs) == ["prune-structured"]
    assert noop_warning("prune-structured") == "prune-structured removed nothing: this row is the unpruned model"
    as_dicts = [r.to_dict() for r in recs[:1]] + [CompressionRecord("int8-dynamic", False, "nothing").to_dict()]
    assert unapplied_steps(cfg, as_dicts) == ["prune-structured", "int8-dynamic"]
    assert noop_warning("int8-dynamic").startswith("int8-dynamic quantized nothing: ")
    assert unapplied_steps(CompressionConfig(), []) == []  # the FP32 reference asks for nothing


def test_gpu_peak_only_where_it_is_seen(monkeypatch):
    from types import SimpleNamespace

    from benchmark.backends.onnxruntime import OrtSession
    from benchmark.backends.pytorch import TorchSession
    from benchmark.backends.tensorrt import TrtSession
    from benchmark.measure import memory

    def torch_peak():
        return 123.0

    monkeypatch.setattr(memory, "gpu_peak_mb", torch_peak)

    def session(options):  # each backend's session answers from what it holds
        return SimpleNamespace(info=SimpleNamespace(options=options))

    assert TorchSession.gpu_peak_mb(session({})) == 123.0
    assert OrtSession.gpu_peak_mb(session({})) is None
    trt = session({"engine_device_memory_bytes": 3 * 2**20})
    assert TrtSession.gpu_peak_mb(trt) == 3.0
    assert TrtSession.gpu_peak_mb(session({"engine_device_memory_bytes": None})) is None


def test_notes_a_session_adds_after_prepare_land_on_their_own_row(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_PLUGINS", PLUGIN)
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", backends=("notes",), batch_sizes=(1, 2), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    rows = {r.batch_size: r for r in store.get_results(sid)}
    assert rows[1].status == rows[2].status == "ok", (rows[1].error, rows[2].error)
    assert "bound batch 1" in rows[1].warnings and "bound batch 2" not in rows[1].warnings
    assert "bound batch 2" in rows[2].warnings and "bound batch 1" not in rows[2].warnings


def test_backend_options_and_row_extras():
    from types import SimpleNamespace

    from benchmark.backends import get_backend
    from benchmark.measure.energy import EnergyReading
    from benchmark.sweep import row_extras

    def backend_options(name, device, settings):  # each backend maps the sweep's settings to its options
        return get_backend(name).sweep_options(device, settings)

    assert backend_options("pytorch", "cuda", {"cuda_graph": True}) == {"cuda_graph": True}
    assert backend_options("pytorch", "cpu", {"cuda_graph": True}) is None
    assert backend_options("onnxruntime", "cuda", {"cuda_graph": True}) is None
    assert backend_options("pytorch", "cuda", {"cuda_graph": False}) is None

    class Built:
        def build(self):
            return {"build_time_s": 12.5, "cached": True}

    reading = EnergyReading("energy_counter", 2.0, 100.0, 50.0, 0, "GPU", "")
    stats = SimpleNamespace(energy=reading, energy_note="", iterations=50)
    extras, notes = row_extras(Built(), stats, 4, "")
    assert extras["build_time_s"] == 12.5 and extras["build_cached"] is True
    assert extras["energy"]["joules_per_batch"] == pytest.approx(2.0)
    assert extras["energy"]["joules_per_sample"] == pytest.approx(0.5)
    assert notes == []
    # no meter: the row says why; a failed reading: the row says what failed
    plain = SimpleNamespace(build=lambda: None)
    extras, notes = row_extras(plain, SimpleNamespace(energy=None, energy_note="", iterations=5), 1,
                               "GPU energy not measured: nvidia-ml-py is not installed")
    assert extras == {"build_time_s": None, "build_cached": None, "energy": None}
    assert notes == ["GPU energy not measured: nvidia-ml-py is not installed"]
    _, notes = row_extras(plain, SimpleNamespace(energy=None, energy_note="counter went backwards", iterations=5),
                          1, "")
    assert notes == ["counter went backwards"]


def test_cuda_graph_is_a_cuda_setting_of_the_sweep():
    from benchmark.errors import ConfigError
    from benchmark.sweep import run_settings

    with pytest.raises(ConfigError, match="CUDA graphs apply to device cuda only"):
        SweepConfig(model="sample:digits-cnn", cuda_graph=True)
    cfg = SweepConfig(model="sample:digits-cnn", device="cuda", cuda_graph=True)
    assert run_settings(cfg)["cuda_graph"] is True
    assert run_settings(SweepConfig(model="sample:digits-cnn"))["cuda_graph"] is False


def test_cross_backend_check_tolerances():
    import numpy as np

    from benchmark.sweep import cross_backend_check

    ref = np.array([[1.0, -2.0, 0.5], [0.25, 4.0, -1.0]], np.float32)
    same, note = cross_backend_check(ref.copy(), ref, "pytorch", "fp32")
    assert same == {"reference_backend": "pytorch", "passed": True, "worst_max_abs_err": 0.0,
                    "worst_max_rel_err": 0.0, "atol": 1e-3, "rtol": 1e-3} and note is None
    off = ref + np.array([[0, 0, 0], [0, 0.02, 0]], np.float32)  # 0.02 abs, 0.5 % rel on 4.0
    fp32, note = cross_backend_check(off, ref, "pytorch", "fp32")
    assert not fp32["passed"] and fp32["worst_max_abs_err"] == pytest.approx(0.02, rel=1e-4)
    assert note.startswith("outputs differ from pytorch's beyond atol=0.001 and rtol=0.001")
    fp16, note = cross_backend_check(off, ref, "pytorch", "fp16")  # rel 0.005 <= rtol 1e-2: passes
    assert fp16["passed"] and fp16["atol"] == fp16["rtol"] == 1e-2 and note is None
    shape, note = cross_backend_check(ref[:1], ref, "pytorch", "fp32")
    assert shape["passed"] is False and "shape" in note
    none, note = cross_backend_check([ref], ref, "pytorch", "fp32")
    assert none is None and "batched differently" in note


def test_fixed_batch_from_the_model_not_from_overrides(tmp_path):
    from benchmark.config import InputSpec
    from benchmark.models import load_model
    from benchmark.sweep.gates import batch_skip_reason as _batch_skip_reason
    from benchmark.sweep.feeds import fixed_batch as _fixed_batch

    fixed = load_model(_mlp(tmp_path / "fixed.onnx", 1))
    assert _fixed_batch(fixed, set()) == (1, "input 'x' is 1x4")
    # an override cannot unfix what the ONNX graph fixes (ONNX Runtime enforces the graph)
    over = load_model(str(tmp_path / "fixed.onnx"), inputs=[InputSpec.parse("x:Nx4")])
    assert _fixed_batch(over, {"x"}) == (1, "input 'x' is 1x4")
    dynamic = load_model(_mlp(tmp_path / "dyn.onnx", "batch"))
    assert _fixed_batch(dynamic, set()) is None
    example = load_model(str(tmp_path / "dyn.onnx"), inputs=[InputSpec.parse("x:1x4")])  # example dims only
    assert _fixed_batch(example, {"x"}) is None
    assert _batch_skip_reason(1, (1, "input 'x' is 1x4"), None) is None
    assert _batch_skip_reason(2, (1, "input 'x' is 1x4"), None).startswith("model has a fixed batch of 1")


@pytest.fixture(scope="module")
def fixed_batch_sweep(tmp_path_factory):
    """Fixed [1, 4] ONNX model, a 6-sample labelled .npz, fp32 + int8-static at batch 1 and 2, >2000 iterations."""
    import numpy as np

    tmp = tmp_path_factory.mktemp("fixed")
    model = _mlp(tmp / "fixed.onnx", 1)
    rng = np.random.default_rng(1)
    data = _npz(tmp / "six.npz", x=rng.standard_normal((6, 4)).astype(np.float32), labels=np.arange(6) % 3)
    store = Store(tmp / "r.db")
    cfg = SweepConfig(model=model, data=data, precisions=("fp32", "int8-static"), backends=("onnxruntime",),
                      batch_sizes=(1, 2), min_duration_s=0.01, min_iters=2100, eval_samples=32, threads=1)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    return store, sid


def test_fixed_batch_model_skips_other_batch_sizes(fixed_batch_sweep):
    store, sid = fixed_batch_sweep
    rows = _rows(store, sid)
    for variant in ("fp32", "int8-static[minmax]"):
        ok, other = rows[(variant, "onnxruntime", 1)], rows[(variant, "onnxruntime", 2)]
        assert ok.status == "ok", ok.error
        assert ok.accuracy["n"] == 6 and ok.throughput_sps > 0
        assert other.status == "skipped"
        assert other.error.startswith("model has a fixed batch of 1 (input 'x' is 1x4): batch size 2 cannot run")
    assert store.get_sweep(sid).status == "done"


def test_small_npz_warns_that_calibration_sees_the_evaluated_samples(fixed_batch_sweep):
    store, sid = fixed_batch_sweep
    rows = _rows(store, sid)
    int8 = rows[("int8-static[minmax]", "onnxruntime", 1)]
    assert any(w.startswith("calibration and evaluation use the same samples") for w in int8.warnings)
    fp32 = rows[("fp32", "onnxruntime", 1)]  # nothing calibrated: no such warning
    assert not any("calibration" in w for w in fp32.warnings)


def test_latency_samples_are_capped_on_rows(fixed_batch_sweep):
    store, sid = fixed_batch_sweep
    row = _rows(store, sid)[("fp32", "onnxruntime", 1)]
    assert row.latency_ms["iterations"] >= 2100
    assert len(row.latency_samples_ms) == 2000
    # The statistics come from all iterations; the stored samples are an evenly spaced subset of them.
    assert min(row.latency_samples_ms) >= row.latency_ms["min"]
    assert max(row.latency_samples_ms) <= row.latency_ms["max"]
    assert row.gpu_peak_mb is None  # onnxruntime memory is not seen by PyTorch's allocator
    # CPU rows: nothing was built ahead of running and no GPU energy was read, and no note claims otherwise
    assert row.build_time_s is None and row.build_cached is None and row.energy is None
    assert not any("energy" in w for w in row.warnings)


def test_noop_int8_dynamic_is_labelled_and_npz_is_split(tmp_path):
    import numpy as np

    from benchmark.results import results_to_frame

    model = _conv_only(tmp_path / "conv.onnx")
    rng = np.random.default_rng(2)
    data = _npz(tmp_path / "twenty.npz", x=rng.standard_normal((20, 1, 8, 8)).astype(np.float32),
                labels=np.arange(20) % 3)
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model=model, data=data, precisions=("int8-dynamic",), backends=("onnxruntime",),
                      batch_sizes=(1,), min_duration_s=0.02, min_iters=3, eval_samples=64, threads=1)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    [row] = store.get_results(sid)
    assert row.status == "ok", row.error
    assert row.precision == "int8-dynamic" and row.config["precision"] == "int8-dynamic"  # the request is kept
    assert row.compressed_as_asked is False
    assert "int8-dynamic quantized nothing: this row is the unquantized model" in row.warnings
    assert row.compression[-1]["changed"] is False
    assert row.accuracy["n"] == 16  # the last 80 % of 20 samples; the first 4 are the calib/train split
    frame = results_to_frame([row])
    assert frame["compressed_as_asked"].tolist() == [False]


_BUGGY_PLUGIN = '''
import numpy as np

from benchmark.backends.base import Backend, Session, register_backend


class _Wrapped(Session):
    def __init__(self, inner, name, fail_batch):
        self.inner, self.fail_batch = inner, fail_batch
        self.info = inner.info
        self.info.backend = name

    def _check(self, feeds):
        if self.fail_batch and next(iter(feeds.values())).shape[0] == self.fail_batch:
            raise ZeroDivisionError("test backend divides by zero at batch %d" % self.fail_batch)

    def run(self, feeds):
        self._check(feeds)
        return self.inner.run(feeds)

    def bind(self, feeds):
        self._feeds = feeds
        self.inner.bind(feeds)

    def run_bound(self):
        self._check(self._feeds)
        return self.inner.run_bound()

    def synchronize(self):
        self.inner.synchronize()

    def close(self):
        self.inner.close()


class _Base(Backend):
    devices = ("cpu",)
    fail_batch = 0

    def availability_impl(self, device):
        return True, ""

    def prepare_impl(self, variant, device, threads, workdir, options=None):
        from benchmark.backends import get_backend

        return _Wrapped(get_backend("onnxruntime").prepare(variant, device, threads, workdir), self.name,
                        self.fail_batch)


class BuggyPrepare(_Base):
    name = "buggy-prepare"

    def prepare_impl(self, variant, device, threads, workdir, options=None):
        return {}["engine"]


class BuggyRun(_Base):
    name = "buggy-run"
    fail_batch = 2


class FatPrepare(_Base):
    name = "fat-prepare"

    def prepare_impl(self, variant, device, threads, workdir, options=None):
        big = np.ones(300 * 2**20 // 8)  # 300 MiB touched while preparing, then freed
        del big
        return super().prepare_impl(variant, device, threads, workdir, options)


for cls in (BuggyPrepare, BuggyRun, FatPrepare):
    register_backend(cls(), replace=True)
'''


def test_backend_errors_fail_one_row_and_the_job_goes_on(tmp_path):
    from benchmark.measure.memory import reset_peak_rss
    from benchmark.sweep import RSS_NOT_RESET

    plugin = tmp_path / "buggy_backends.py"
    plugin.write_text(_BUGGY_PLUGIN)
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model=_mlp(tmp_path / "dyn.onnx", "batch"), backends=("buggy-prepare", "buggy-run", "fat-prepare",
                      "onnxruntime"), batch_sizes=(1, 2), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=120, plugins=[str(plugin)])
    rows = _rows(store, sid)
    for bs in (1, 2):  # a non-Benchmark exception while preparing: that backend's rows fail, one line each
        prep = rows[("fp32", "buggy-prepare", bs)]
        assert prep.status == "failed" and prep.error == "preparing buggy-prepare: internal error: KeyError: 'engine'"
    ok, bad = rows[("fp32", "buggy-run", 1)], rows[("fp32", "buggy-run", 2)]
    # the evaluation at the largest batch (2) failed: said on the rows, then batch 1 evaluated on its own
    note = "evaluation at batch 2 failed: internal error: ZeroDivisionError: test backend divides by zero at batch 2"
    assert ok.status == "ok" and note in ok.warnings and ok.latency_ms["p50"] > 0
    assert bad.status == "failed"
    assert bad.error == "internal error: ZeroDivisionError: test backend divides by zero at batch 2"
    # later backends of the same job still ran, and compare their outputs with the first backend's
    for backend in ("fat-prepare", "onnxruntime"):
        for bs in (1, 2):
            row = rows[("fp32", backend, bs)]
            assert row.status == "ok", row.error
            assert row.cross_backend == {"reference_backend": "buggy-run", "passed": True, "worst_max_abs_err": 0.0,
                                         "worst_max_rel_err": 0.0, "atol": 1e-3, "rtol": 1e-3}
    assert ok.cross_backend is None  # the reference itself
    # peak RSS has a window per run: the 300 MiB transient of preparing counts for the first run only
    first, second = rows[("fp32", "fat-prepare", 1)], rows[("fp32", "fat-prepare", 2)]
    if reset_peak_rss():
        assert first.peak_rss_mb > second.peak_rss_mb + 200, (first.peak_rss_mb, second.peak_rss_mb)
        assert RSS_NOT_RESET not in first.warnings
    else:
        assert RSS_NOT_RESET in first.warnings and RSS_NOT_RESET in second.warnings
    assert store.get_sweep(sid).status == "done"


def test_per_feed_data_times_the_feed_batch_only(tmp_path):
    import numpy as np

    data = _npz(tmp_path / "feeds.npz", x=np.random.default_rng(3).standard_normal((12, 3, 4)).astype(np.float32))
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model=_mlp(tmp_path / "dyn.onnx", "batch"), data=data, backends=("onnxruntime",),
                      batch_sizes=(1, 3), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    rows = _rows(store, sid)
    timed, skipped = rows[("fp32", "onnxruntime", 3)], rows[("fp32", "onnxruntime", 1)]
    assert timed.status == "ok", timed.error
    assert timed.throughput_sps == pytest.approx(3 * 1000.0 / timed.latency_ms["mean"])
    assert timed.fidelity["n"] == 10  # 12 feeds: the first 2 are the calib/train split
    assert skipped.status == "skipped"
    assert skipped.error.startswith("per-feed data: each feed of ") and "holds a batch of 3" in skipped.error


def test_lowrank_keeps_the_full_rank_baseline():
    from benchmark.config import SweepConfig

    cfg = SweepConfig(model="sample:digits-cnn", precisions=("fp32", "int8-static"), lowrank_ratio=0.5)
    names = [c.name for c in cfg.compressions()]
    assert names[:2] == ["fp32", "int8-static[minmax]"]
    assert "fp32+lowrank0.5" in names and len(names) == 4


def test_a_failed_session_close_is_noted_on_its_own_backends_row(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_PLUGINS", PLUGIN)
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", backends=("close-raise", "pytorch"), batch_sizes=(1,), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    rows = {r.backend: r for r in store.get_results(sid)}
    note = "closing the close-raise session failed: internal error: RuntimeError: test backend cannot close"
    assert rows["close-raise"].status == rows["pytorch"].status == "ok", rows["close-raise"].error
    assert note in rows["close-raise"].warnings
    assert not any("closing" in w for w in rows["pytorch"].warnings)


def test_each_run_evaluates_at_its_own_batch_after_the_shared_evaluation_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_PLUGINS", PLUGIN)
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", backends=("eval-fails-at-4",), batch_sizes=(1, 2, 4), **FAST)
    sid = run_sweep(cfg, store, job_timeout_s=120)
    rows = {r.batch_size: r for r in store.get_results(sid)}
    shared = "evaluation at batch 4 failed: test backend cannot evaluate a batch of 4"
    for bs in (1, 2):  # each of these runs evaluated at its own batch size, not at the first success's
        assert rows[bs].status == "ok", rows[bs].error
        assert shared in rows[bs].warnings and f"evaluated a batch of {bs}" in rows[bs].warnings
        assert rows[bs].accuracy["n"] == 32
    assert "evaluated a batch of 1" not in rows[2].warnings
    assert rows[4].status == "failed" and rows[4].error == "test backend cannot evaluate a batch of 4"


@pytest.mark.parametrize("steps, applies", [
    (dict(prune_ratio=0.5), True), (dict(lowrank_ratio=0.5), True), (dict(lowrank_energy=0.9), True),
    (dict(), False), (dict(precision="int8-dynamic"), False),
])
def test_one_rule_says_whether_distillation_applies(steps, applies):
    from benchmark.compress import plan_steps
    from benchmark.config import CompressionConfig
    from benchmark.sweep import Job, PlannedRun

    def estimate(comp):
        return estimate_duration_s([Job(comp, [PlannedRun(comp.name, "pytorch", 1)])])

    with_distill, without = CompressionConfig(distill=True, **steps), CompressionConfig(**steps)
    assert (estimate(with_distill) > estimate(without)) is applies  # the UI's estimate counts the training
    assert ("distill" in plan_steps(with_distill)) is applies  # the step is built
    assert with_distill.name.endswith("+distill") is applies  # and named
    assert with_distill.distill_applies is applies and without.distill_applies is False


def test_backend_facts_come_from_the_backend_not_from_its_name():
    import ast
    from types import SimpleNamespace

    import benchmark.sweep
    from benchmark.backends import BACKENDS
    from benchmark.backends.pytorch import TorchSession
    from benchmark.backends.tensorrt import TrtSession

    def session(options):
        return SimpleNamespace(info=SimpleNamespace(options=options))

    applies = TrtSession.applies_precision.fget
    assert applies(session({"trt_precision": "fp16"})) and applies(session({"trt_precision": "int8"}))
    assert not applies(session({"trt_precision": "fp32"})) and not applies(session({}))
    assert TorchSession.applies_precision.fget(session({"trt_precision": "fp16"})) is False
    # no module of the sweep compares with (or mentions) a backend's registered name
    names = set(BACKENDS.names())
    for path in Path(benchmark.sweep.__file__).parent.glob("*.py"):
        literals = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
        assert not literals & names, (path.name, literals & names)

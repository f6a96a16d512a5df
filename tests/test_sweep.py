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

"""The SQLite results store: round trip, WAL, schema versions, durability helpers, exports."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from benchmark import store as store_mod
from benchmark.errors import StoreError
from benchmark.results import RunResult, results_to_frame
from benchmark.store import Store


def _row(sweep_id=None, variant="fp32", backend="onnxruntime", batch=1, status="ok", **kw) -> RunResult:
    base = dict(
        model="tiny", variant=variant, backend=backend, batch_size=batch, status=status, sweep_id=sweep_id,
        providers=["CPUExecutionProvider"], threads=2, warnings=["note"],
        latency_ms={"mean": 1.5, "std": 0.1, "min": 1.2, "p50": 1.4, "p90": 1.7, "p95": 1.8, "p99": 2.0,
                    "max": 2.5, "cv": 0.0667, "iterations": 40},
        latency_samples_ms=[1.2, 1.4, 2.5], throughput_sps=666.7, peak_rss_mb=123.4, size_bytes=4096,
        params=1000, macs=20000, flops=40000, sparsity=0.0, accuracy={"top1": 0.9, "top5": 1.0, "n": 10},
        fidelity={"top1_agreement": 1.0, "cosine": 0.999, "max_abs_err": 0.01, "mean_abs_err": 0.001},
        compression=[{"method": "fp16", "changed": True, "summary": "cast to fp16", "details": {}, "warnings": []}],
        config={"precision": "fp32"}, env={"cpu_model": "test cpu"},
        started_at="2025-01-01T00:00:00.000+00:00", finished_at="2025-01-01T00:00:01.000+00:00",
    )
    base.update(kw)
    return RunResult(**base)


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "results.db")


def test_round_trip_keeps_every_field(store):
    sid = store.create_sweep("tiny", {"sweep": {"precisions": ["fp32"]}}, total_runs=1)
    row = _row(sid)
    store.add_result(row)
    [back] = store.get_results(sid)
    assert back.to_json() == row.to_json()
    assert back.id == row.id and back.sweep_id == sid
    assert back.latency_ms["p99"] == 2.0 and back.compression[0]["summary"] == "cast to fp16"


def test_missing_values_stay_none_and_nan_becomes_null(store):
    row = RunResult(model="m", variant="fp32", backend="pytorch", batch_size=1, status="failed",
                    error="boom", throughput_sps=float("nan"))
    store.add_result(row)
    [back] = store.get_results()
    assert back.throughput_sps is None and back.latency_ms is None and back.accuracy is None
    assert json.loads(row.dumps())["throughput_sps"] is None


def test_cross_backend_and_as_asked_round_trip_and_flatten(store):
    sid = store.create_sweep("tiny", {})
    cross = {"reference_backend": "pytorch", "passed": False, "worst_max_abs_err": 0.04, "worst_max_rel_err": 0.5,
             "atol": 0.01, "rtol": 0.01}
    row = _row(sid, cross_backend=cross, compressed_as_asked=False,
               warnings=["int8-dynamic quantized nothing: this row is the unquantized model"])
    store.add_result(row)
    [back] = store.get_results(sid)
    assert back.cross_backend == cross and back.compressed_as_asked is False
    df = store.results_frame([sid])
    assert df["cross_backend_reference"][0] == "pytorch" and not df["cross_backend_passed"][0]
    assert df["cross_backend_worst_max_abs_err"][0] == 0.04 and df["cross_backend_rtol"][0] == 0.01
    assert not df["compressed_as_asked"][0]


def test_rows_stored_before_the_new_fields_load_with_none(store):
    sid = store.create_sweep("tiny", {})
    store.add_result(_row(sid))
    with store._conn(write=True) as conn:  # a row as an older Slimbench wrote it
        data = json.loads(conn.execute("SELECT data FROM runs").fetchone()["data"])
        for key in ("cross_backend", "compressed_as_asked"):
            data.pop(key)
        conn.execute("UPDATE runs SET data = ?", (json.dumps(data),))
    [old] = store.get_results(sid)
    assert old.cross_backend is None and old.compressed_as_asked is None
    row = old.to_row()
    assert row["cross_backend_passed"] is None and row["compressed_as_asked"] is None


def test_wal_mode_and_schema_version(store, tmp_path):
    assert store.journal_mode == "wal"
    assert store.user_version == store_mod.schema_version() == len(store_mod.MIGRATIONS)
    with sqlite3.connect(tmp_path / "results.db") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sweeps", "runs"} <= tables


def test_new_migration_applies_once_and_keeps_rows(tmp_path, monkeypatch):
    path = tmp_path / "r.db"
    s1 = Store(path)
    sid = s1.create_sweep("tiny", {})
    s1.add_result(_row(sid))
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS + ["ALTER TABLE sweeps ADD COLUMN note TEXT"])
    s2 = Store(path)
    assert s2.user_version == len(store_mod.MIGRATIONS)
    assert len(s2.get_results(sid)) == 1
    with sqlite3.connect(path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(sweeps)")]
    assert "note" in cols
    Store(path)  # a second open does not re-run the migration (ALTER would fail: duplicate column)


def test_target_migration_keeps_old_keys_and_adds_target_rows(tmp_path, monkeypatch):
    path = tmp_path / "r.db"
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:1])  # a database written before targets
    old = Store(path)
    sid = old.create_sweep("tiny", {})
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO runs (sweep_id, key, model, variant, backend, device, batch_size, status, "
                     "created_at, data) VALUES (?, 'fp32|onnxruntime|1', 'tiny', 'fp32', 'onnxruntime', 'cpu', 1, "
                     "'ok', '2026-01-01', ?)", (sid, _row(sid).dumps()))
    monkeypatch.undo()
    store = Store(path)
    assert store.user_version == len(store_mod.MIGRATIONS)
    [row] = store.get_results(sid)
    assert row.target == "" and row.key == "fp32|onnxruntime|1"
    store.add_result(_row(sid, target="node=abc"))  # the same variant on another machine: a second row
    keys = sorted(r.key for r in store.get_results(sid))
    assert keys == ["fp32|onnxruntime|1", "fp32|onnxruntime|1|node=abc"]
    with sqlite3.connect(path) as conn:
        assert sorted(r[0] for r in conn.execute("SELECT target FROM runs")) == ["", "node=abc"]
    store.set_run_status(sid, ["fp32|onnxruntime|1|node=abc"], "interrupted")  # finished rows do not change
    store.add_result(_row(sid, target="node=abc", status="interrupted", error="lost with its node"))
    assert store.missing_runs(sid) == ["fp32|onnxruntime|1|node=abc"]  # a resume runs it again
    store.reopen_sweep(sid)
    assert {r.key: r.status for r in store.get_results(sid)}["fp32|onnxruntime|1|node=abc"] == "pending"
    store.set_sweep_config(sid, {"runner": {"targets": [{"key": "node=abc", "label": "box"}]}})
    assert store.get_sweep(sid).config["runner"]["targets"] == [{"key": "node=abc", "label": "box"}]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "r.db"
    Store(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(store_mod.MIGRATIONS) + 5}")
    with pytest.raises(StoreError, match="newer than this Slimbench"):
        Store(path)


def test_unwritable_path_is_one_line_store_error(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(StoreError) as info:
        Store(blocker / "results.db")
    msg = str(info.value)
    assert msg.startswith(f"cannot write results database at {blocker / 'results.db'}") and "\n" not in msg
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_file_is_refused(tmp_path):
    path = tmp_path / "r.db"
    Store(path)
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(StoreError, match="cannot write results database"):
            Store(path)
    finally:
        os.chmod(tmp_path, 0o755)


def test_missing_db_for_reading(tmp_path):
    with pytest.raises(StoreError, match="no results database"):
        Store(tmp_path / "nope.db", create=False)


def test_add_result_replaces_same_key_within_sweep(store):
    sid = store.create_sweep("tiny", {})
    store.add_pending(sid, [_row(None, status="pending", latency_ms=None), _row(None, backend="pytorch", status="pending")])
    assert sorted(store.missing_runs(sid)) == ["fp32|onnxruntime|1", "fp32|pytorch|1"]
    store.add_result(_row(sid))
    assert store.missing_runs(sid) == ["fp32|pytorch|1"]
    assert len(store.get_results(sid)) == 2
    # add_pending never overwrites a finished row
    store.add_pending(sid, [_row(None, status="pending")])
    assert {r.status for r in store.get_results(sid)} == {"ok", "pending"}


def test_delete_sweep_removes_only_its_rows(store):
    a = store.create_sweep("a", {})
    b = store.create_sweep("b", {})
    store.add_result(_row(a))
    store.add_result(_row(b))
    store.add_result(_row(b, backend="pytorch"))
    assert store.delete_sweep(b) == 2
    assert [r.sweep_id for r in store.get_results()] == [a]
    assert [s.id for s in store.list_sweeps()] == [a]
    with pytest.raises(StoreError, match=f"no sweep {b}"):
        store.get_sweep(b)


def test_frame_and_exports(store, tmp_path):
    sid = store.create_sweep("tiny", {})
    store.add_result(_row(sid))
    store.add_result(_row(sid, backend="pytorch", status="failed", error="x", latency_ms=None))
    df = store.results_frame([sid])
    assert list(df["latency_p50_ms"])[0] == 1.4 and df["accuracy_top1"][0] == 0.9
    assert df["fidelity_cosine"][0] == 0.999 and df["latency_cv"][0] == 0.0667
    assert df["latency_p50_ms"].isna()[1] and df["status"].tolist() == ["ok", "failed"]
    csv_path = store.export_csv(tmp_path / "r.csv", [sid])
    assert "latency_p95_ms" in csv_path.read_text().splitlines()[0]
    data = json.loads(store.export_json(tmp_path / "r.json", [sid]).read_text())
    assert data[0]["latency_ms"]["p95"] == 1.8 and data[1]["error"] == "x"
    assert list(results_to_frame([]).columns) == list(df.columns)


def test_mark_interrupted_dead_pid_and_stale_heartbeat(store):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = store.create_sweep("dead", {}, status="running", pid=proc.pid)
    store.add_pending(dead, [_row(None, status="pending")])
    store.set_run_status(dead, ["fp32|onnxruntime|1"], "running")
    alive = store.create_sweep("alive", {}, status="running", pid=os.getpid())
    stale = store.create_sweep("stale", {}, status="queued", pid=os.getpid())
    with store._conn(write=True) as conn:  # a heartbeat from an hour ago
        conn.execute("UPDATE sweeps SET heartbeat = ? WHERE id = ?", (time.time() - 3600, stale))
    marked = store.mark_interrupted(stale_s=60)
    assert sorted(marked) == sorted([dead, stale])
    assert store.get_sweep(dead).status == "interrupted" and "resume" in store.get_sweep(dead).error
    assert store.get_sweep(alive).status == "running"
    assert store.get_results(dead)[0].status == "pending"  # the unfinished row waits for a resume
    assert store.missing_runs(dead) == ["fp32|onnxruntime|1"]


def test_cancel_request_touches_only_that_sweep(store):
    a = store.create_sweep("a", {}, status="running", pid=os.getpid())
    b = store.create_sweep("b", {}, status="running", pid=os.getpid())
    assert store.request_cancel(a) == "cancelling"
    assert store.cancel_requested(a) and not store.cancel_requested(b)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    orphan = store.create_sweep("c", {}, status="queued", pid=proc.pid)
    store.add_pending(orphan, [_row(None, status="pending")])
    assert store.request_cancel(orphan) == "cancelled"  # nobody left to obey: cancelled at once
    assert store.get_results(orphan)[0].status == "cancelled"


def test_concurrent_writers_keep_every_row(tmp_path):
    path = tmp_path / "r.db"
    sid = Store(path).create_sweep("tiny", {})
    code = (
        "import sys; from benchmark.store import Store; from benchmark.results import RunResult\n"
        "s = Store(sys.argv[1])\n"
        "for i in range(40):\n"
        "    s.add_result(RunResult(model='m', variant=sys.argv[2], backend='b', batch_size=i + 1, status='ok',"
        " sweep_id=int(sys.argv[3])))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), f"v{i}", str(sid)]) for i in range(3)]
    assert [p.wait(60) for p in procs] == [0, 0, 0]
    assert len(Store(path).get_results(sid)) == 120


def test_runner_status_never_overrides_a_cancel_and_reopen_resets(store):
    sid = store.create_sweep("a", {}, status="running", pid=os.getpid())
    store.add_pending(sid, [_row(None, status="pending")])
    assert store.request_cancel(sid) == "cancelling"
    store.update_sweep_status(sid, "queued", progress="queued behind 1 sweep")  # the runner, unaware
    assert store.sweep_status(sid) == "cancelling"
    store.cancel_pending_runs(sid)
    store.update_sweep_status(sid, "cancelled")
    rec = store.get_sweep(sid)
    assert rec.status == "cancelled" and rec.finished_at and rec.counts == {"cancelled": 1}
    store.reopen_sweep(sid)
    assert store.sweep_status(sid) == "pending" and store.missing_runs(sid) == ["fp32|onnxruntime|1"]
    assert store.get_results(sid)[0].error is None


def test_concurrent_creation_of_one_database(tmp_path):
    """Several processes opening a new database at once all succeed (no 'database is locked')."""
    db = tmp_path / "shared.db"
    code = ("import sys, time; from benchmark.store import Store\n"
            "while time.time() < float(sys.argv[2]): pass\n"  # all start together
            "Store(sys.argv[1]).create_sweep('m', {})")
    start = str(time.time() + 3.0)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(db), start], stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    assert len(Store(db).list_sweeps()) == 6

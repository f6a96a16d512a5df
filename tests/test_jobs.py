"""Isolated jobs (spawned children: crashes, hangs, errors become causes) and the per-device queue."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark.errors import ConfigError
from benchmark.jobs import DeviceQueue, JobCancelled, load_plugins, queue_state, run_isolated

PLUGIN = str(Path(__file__).with_name("plugins_crash.py"))
MOD = "slimbench_plugin_plugins_crash"


def _run(fn: str, payload=None, **kw):
    kw.setdefault("timeout_s", 20)
    return run_isolated(f"{MOD}:{fn}", payload, plugins=[PLUGIN], **kw)


def test_return_value_and_events_come_back():
    events = []
    out = _run("job_return", {"x": [1, 2]}, on_event=events.append)
    assert out.ok and out.value["echo"] == {"x": [1, 2]}
    assert out.value["pid"] != os.getpid()  # it really ran in another process
    assert events == [{"type": "progress", "message": "working", "fraction": 0.5}]
    assert out.exitcode == 0


def test_segfault_is_a_cause_not_a_crash(tmp_path):
    log = tmp_path / "job.log"
    out = _run("job_segv", log_path=log)
    assert not out.ok
    assert out.error.startswith("killed by signal 11 (SIGSEGV)") and "about to crash" in out.error
    assert out.exitcode == -11
    assert "Segmentation fault" in log.read_text()  # faulthandler wrote the child's traceback


def test_hang_times_out_per_step():
    t0 = time.monotonic()
    out = _run("job_hang", timeout_s=1.0)
    assert out.error == "timed out after 1 s while sleeping forever" and out.error_type == "timeout"
    assert time.monotonic() - t0 < 15


def test_steps_reset_the_timeout():
    out = _run("job_steps", 0.6, timeout_s=1.0)  # 4 steps x 0.6 s > 1 s in total, < 1 s each
    assert out.ok and out.value == "done"


def test_benchmark_error_is_bad_input_and_bug_is_internal():
    bad = _run("job_bad_input")
    assert bad.error == "outputs contain NaN (test)" and bad.error_type == "MeasurementError" and bad.is_bad_input
    bug = _run("job_bug")
    assert bug.error.startswith("internal error: KeyError") and not bug.is_bad_input
    assert "Traceback" in bug.traceback


def test_sigkill_and_exit_codes(tmp_path):
    killed = _run("job_sigkill")
    assert "SIGKILL" in killed.error and killed.error_type == "signal"
    log = tmp_path / "exit.log"
    ended = _run("job_exit", log_path=log)
    assert ended.error == "job process exited with code 3 without a result; last output: last words"


def test_cancel_kills_the_child():
    flag = {"at": time.monotonic() + 1.0}
    t0 = time.monotonic()
    out = _run("job_hang", timeout_s=60, cancel_check=lambda: time.monotonic() > flag["at"])
    assert out.error == "cancelled" and out.error_type == "cancelled"
    assert time.monotonic() - t0 < 10


def test_unknown_plugin_is_config_error():
    with pytest.raises(ConfigError, match="cannot import plugin 'no_such_plugin_xyz'"):
        load_plugins(["no_such_plugin_xyz"])


def test_plugins_from_environment_reach_the_child(monkeypatch):
    monkeypatch.setenv("SLIMBENCH_PLUGINS", PLUGIN)
    out = run_isolated(f"{MOD}:job_return", 7, timeout_s=20)
    assert out.ok and out.value["echo"] == 7


# --- queue --------------------------------------------------------------------------------------
def test_queue_is_fifo_and_reports_position(tmp_path):
    q = DeviceQueue("cpu", root=tmp_path)
    order, waits = [], []
    first_in = threading.Event()
    release = threading.Event()

    def first():
        with q.slot(label="first"):
            order.append("first")
            first_in.set()
            release.wait(10)

    def second():
        with q.slot(label="second", on_wait=waits.append, poll_s=0.05):
            order.append("second")

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_in.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.5)
    assert order == ["first"]  # the second waits while the first holds the device
    assert [e.label for e in q.entries()] == ["first", "second"]
    assert waits and waits[0] == 1  # "queued behind 1"
    release.set()
    t1.join(10)
    t2.join(10)
    assert order == ["first", "second"]
    assert q.entries() == []  # tickets are removed


def test_dead_tickets_are_dropped(tmp_path):
    q = DeviceQueue("cpu", root=tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (q.dir / "00000000000000000001-0000001-dead.json").write_text(
        json.dumps({"pid": proc.pid, "sweep_id": 1, "label": "dead", "created": 0}))
    assert q.entries() == []
    with q.slot(label="me"):  # not blocked by the dead ticket
        assert [e.label for e in q.entries()] == ["me"]


def test_cancel_while_queued(tmp_path):
    q = DeviceQueue("cpu", root=tmp_path)
    with q.slot(label="holder"):
        with pytest.raises(JobCancelled):
            with q.slot(label="waiter", cancel_check=lambda: True, poll_s=0.05):
                pass
        assert [e.label for e in q.entries()] == ["holder"]


def test_queue_state_uses_data_dir():
    with DeviceQueue("cpu").slot(sweep_id=5, label="x"):
        state = queue_state("cpu")
    assert state[0]["position"] == 0 and state[0]["sweep_id"] == 5 and state[0]["pid"] == os.getpid()
    assert queue_state("cpu") == []

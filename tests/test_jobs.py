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


def test_result_sent_just_before_exit_is_not_lost(monkeypatch):
    """The child may send its result and exit between a poll that timed out and the liveness
    check; the parent must still read what is in the pipe (seen under load as "exited with code 0
    without a result"). A poll that always times out models the worst interleaving."""
    from multiprocessing.connection import Connection

    real_poll = Connection.poll

    def late_poll(self, timeout=0.0):
        if timeout:
            time.sleep(timeout)
            return False
        return real_poll(self, 0)

    monkeypatch.setattr(Connection, "poll", late_poll)
    out = _run("job_return", {"x": 1})
    assert out.ok, out.error
    assert out.value["echo"] == {"x": 1} and out.exitcode == 0


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


def test_start_up_is_a_step_of_its_own(tmp_path):
    slow = tmp_path / "slow_start.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    t0 = time.monotonic()
    out = run_isolated(f"{MOD}:job_return", 1, plugins=[PLUGIN, str(slow)], timeout_s=1.0)
    assert out.error == "timed out after 1 s while starting the job process" and out.error_type == "timeout"
    assert time.monotonic() - t0 < 15


def test_steps_reset_the_timeout():
    out = _run("job_steps", 0.5, timeout_s=1.5)  # 4 steps x 0.5 s > 1.5 s in total, < 1.5 s each
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


# --- model inspection in a child ------------------------------------------------------------------
class _PickledCode:
    """Pickles as ``eval(code)``: loading the file runs ``code`` in whatever process unpickles it."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


def _pickle_file(path: Path, code: str) -> Path:
    import torch

    torch.save(_PickledCode(code), str(path))
    return path


def test_trusted_pickle_runs_only_in_the_inspection_child(tmp_path):
    from benchmark.errors import UnsafeModelError
    from benchmark.inspection import inspect_isolated

    marker = tmp_path / "marker.txt"
    # writes the unpickling process's pid to the marker, then yields a Linear(4 -> 2): 10 params, 8 MACs
    model = _pickle_file(tmp_path / "whole.pt", f"(open({str(marker)!r}, 'w').write(str(__import__('os').getpid())), "
                                                "__import__('torch').nn.Linear(4, 2))[1]")
    with pytest.raises(UnsafeModelError, match="whole.pt: this file is a full pickle"):
        inspect_isolated(str(model), trust_pickle=False)
    assert not marker.exists()  # refused without running the file's code anywhere

    info = inspect_isolated(str(model), ["input:1x4"], trust_pickle=True)
    assert int(marker.read_text()) != os.getpid()  # the code ran in the child only
    assert info["format"] == "pickle" and info["params"] == 10 and info["macs"] == 8 and info["flops"] == 16
    assert info["inputs"] == [{"name": "input", "shape": [1, 4], "dtype": "float32", "batch_axis": 0}]
    assert sum(r["macs"] or 0 for r in info["by_module"]) == 8


def test_inspection_crash_and_hang_are_one_line_errors(tmp_path):
    from benchmark.errors import ModelLoadError
    from benchmark.inspection import inspect_isolated

    segv = _pickle_file(tmp_path / "segv.pt", "__import__('os').kill(__import__('os').getpid(), 11)")
    with pytest.raises(ModelLoadError) as err:
        inspect_isolated(str(segv), trust_pickle=True)
    assert str(err.value) == ("segv.pt: the model could not be inspected: killed by signal 11 (SIGSEGV) "
                              "while inspecting segv.pt")
    hang = _pickle_file(tmp_path / "hang.pt", "__import__('time').sleep(60)")
    t0 = time.monotonic()
    with pytest.raises(ModelLoadError, match="^hang.pt: the model could not be inspected: timed out after 1 s "
                                             "while inspecting hang.pt$"):
        inspect_isolated(str(hang), trust_pickle=True, timeout_s=1)
    assert time.monotonic() - t0 < 15


def test_model_info_reports_a_counting_gap_unless_strict():
    from benchmark.errors import ConfigError
    from benchmark.inspection import model_info

    info = model_info("sample:digits-cnn", ["image:Nx1xHx8"], strict=False)  # H has no value: not countable
    assert info["macs"] is None and info["params"] is None and "dim 2 (H)" in info["count_error"]
    assert info["inputs"][0]["shape"] == ["N", 1, "H", 8] and info["format"] == "sample"
    with pytest.raises(ConfigError, match="dim 2 \\(H\\)"):
        model_info("sample:digits-cnn", ["image:Nx1xHx8"])
    full = model_info("sample:digits-cnn")
    assert full["params"] == 168_170 and full["flops"] == 2 * full["macs"] and len(full["by_module"]) > 3

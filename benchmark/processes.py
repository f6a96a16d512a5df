"""Processes on this machine: is a recorded process still the same one, how did a child end, stop it.

Used by the results store (is a sweep's runner alive?), the device queue (drop tickets of dead
processes) and isolated jobs (kill a child and everything it started; name the signal that
ended it; tell an out-of-memory kill from another SIGKILL).
"""
from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path


def process_alive(pid: int | None, started: float | None) -> bool:
    """True if process ``pid`` exists, is not a zombie and (when known) started at ``started``."""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is not None and abs(proc.create_time() - float(started)) > 1.0:
            return False  # the pid was reused by another process
        return True
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def process_start_time(pid: int | None = None) -> float | None:
    """Creation time of process ``pid`` (default: this one), to recognise a reused pid later."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).create_time()
    except psutil.Error:
        return None


def signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11; ``signal N`` for a number without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def oom_kill_count() -> int | None:
    """The cgroup's OOM-kill counter (v2 memory.events or v1 memory.oom_control), if readable."""
    candidates = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            _, controllers, rel = parts
            rel = rel.lstrip("/")
            if controllers == "":
                candidates.append(Path("/sys/fs/cgroup") / rel / "memory.events")
            if "memory" in controllers.split(","):
                candidates.append(Path("/sys/fs/cgroup/memory") / rel / "memory.oom_control")
    except OSError:
        return None
    for path in candidates:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            continue
    return None


def kill_tree(proc) -> None:
    """SIGKILL a ``multiprocessing.Process`` and anything it started, then reap it."""
    import psutil

    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.kill()
    if proc.is_alive():
        proc.kill()
    proc.join(10)

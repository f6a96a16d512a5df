"""Isolated jobs and the per-device job queue.

Isolation
    :func:`run_isolated` runs ``module:function(payload, emit)`` in a child process started with the
    multiprocessing *spawn* context (a fresh interpreter, never a fork of the app). The child sends
    JSON messages back through a pipe: progress events (``emit({...})``) and finally its return
    value (both must be JSON-serialisable; numpy values are converted). JSON rather than pickle, so
    nothing the child sends can import or run code in the parent. A segfault, an out-of-memory kill, an uncaught exception or a hang past the step timeout
    ends only that child; the parent gets a :class:`JobOutcome` whose ``error`` names the cause in
    one line ("killed by signal 11 (SIGSEGV)", "timed out after 300 s while ...", "out of memory
    (killed by SIGKILL)"). The parent never loads model files itself: untrusted pickles are only
    ever unpickled inside a child.

    The timeout applies per *step*: the child resets the clock by emitting ``{"type": "step",
    "message": ...}`` (building a variant, measuring one backend x batch size, ...).

    The child's stdout/stderr (and a faulthandler traceback on a crash) go to a log file.

Plugins
    Extra modules to import in every child (and in the parent), e.g. to register a backend or a
    compression: the environment variable ``SLIMBENCH_PLUGINS`` — a comma-separated list of module
    names (``mypkg.my_backend``) or ``.py`` file paths — or the ``plugins`` argument.

Queue
    :class:`DeviceQueue` is one FIFO queue per device shared by every dashboard session and CLI run
    on this machine: ticket files plus a file lock under the data folder. A job holds the device for
    its whole life (building a variant is CPU-heavy and would disturb another job's timing), so two
    timed intervals on one device never overlap. Tickets of dead processes are dropped.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from . import errors as _errors
from .errors import BenchmarkError, ConfigError, StoreError, one_line
from .processes import kill_tree, oom_kill_count, process_alive, process_start_time, signal_name

PLUGINS_ENV = "SLIMBENCH_PLUGINS"

EventCallback = Callable[[dict], None]


class JobCancelled(BenchmarkError):
    """The job (or the wait for the device) was cancelled."""


# --------------------------------------------------------------------------------------------
# plugins
# --------------------------------------------------------------------------------------------
def plugin_list(extra: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Plugins from ``$SLIMBENCH_PLUGINS`` plus ``extra``, without duplicates, in order."""
    names: list[str] = []
    for p in [*os.environ.get(PLUGINS_ENV, "").split(","), *(extra or ())]:
        p = p.strip()
        if p.endswith(".py") and not os.path.isabs(p):
            p = os.path.abspath(p)  # jobs run in another folder
        if p and p not in names:
            names.append(p)
    return names


_LOADED_PLUGINS: dict[str, Any] = {}


def load_plugins(extra: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Import every plugin (module name or ``.py`` path) once; a plugin that fails raises ConfigError."""
    loaded = []
    for name in plugin_list(extra):
        if name in _LOADED_PLUGINS:
            loaded.append(name)
            continue
        try:
            if name.endswith(".py") or os.sep in name:
                path = Path(name).expanduser().resolve()
                mod_name = f"slimbench_plugin_{path.stem}"
                spec = importlib.util.spec_from_file_location(mod_name, path)
                if spec is None or spec.loader is None or not path.is_file():
                    raise FileNotFoundError(f"no such file {path}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[mod_name] = module
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(name)
        except (ImportError, OSError, SyntaxError) as exc:
            raise ConfigError(
                f"cannot import plugin {name!r} (from {PLUGINS_ENV} or --plugin): {type(exc).__name__}: {exc}"
            ) from None
        _LOADED_PLUGINS[name] = module
        loaded.append(name)
    return loaded


# --------------------------------------------------------------------------------------------
# isolated child process
# --------------------------------------------------------------------------------------------
@dataclass
class JobOutcome:
    """How a child ended. ``ok`` is True when the target returned; else ``error`` says why."""

    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None  # exception class name, or "signal"/"timeout"/"cancelled"/"exit"
    exitcode: int | None = None
    traceback: str | None = None
    log_path: Path | None = None
    peak_rss_mb: float | None = None  # largest child RSS the parent saw
    last_step: str | None = None
    wall_s: float = 0.0
    events: list[dict] = field(default_factory=list)

    @property
    def is_bad_input(self) -> bool:
        """True when the child raised one of Slimbench's own errors (bad input, not a crash)."""
        return self.error_type is not None and self.error_type in _benchmark_error_names()


def _benchmark_error_names() -> set[str]:
    from . import errors

    return {n for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, BenchmarkError)} | {"JobCancelled"}


def _set_parent_death_signal() -> None:
    """Linux: have the kernel SIGKILL this process when its parent dies (no orphaned jobs)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _watch_parent(parent_pid: int) -> None:
    """Fallback for systems without PR_SET_PDEATHSIG: exit when the parent is gone."""

    def _loop():
        while True:
            if os.getppid() != parent_pid:
                os._exit(70)
            time.sleep(1.0)

    threading.Thread(target=_loop, name="slimbench-parent-watch", daemon=True).start()


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays to Python; anything else to its string (messages are plain JSON)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(value)


def _child_entry(conn, target: str, payload: Any, plugins: list[str], log_path: str | None, parent_pid: int) -> None:
    """Entry point of the child process (spawn): set up, import plugins, run the target."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C does
    _set_parent_death_signal()
    if os.getppid() != parent_pid:
        os._exit(70)
    _watch_parent(parent_pid)
    log_file = None
    if log_path:
        log_file = open(log_path, "a", buffering=1)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        import faulthandler

        faulthandler.enable(file=log_file, all_threads=True)

    def send(obj: dict) -> None:
        conn.send_bytes(json.dumps(obj, default=_json_default).encode())

    def emit(event: dict) -> None:
        send(dict(event))

    try:
        os.environ[PLUGINS_ENV] = ",".join(plugins)
        load_plugins()
        module_name, _, fn_name = target.partition(":")
        fn = getattr(importlib.import_module(module_name), fn_name)
        send({"type": "started"})  # start-up is over: the first step's clock starts now
        value = fn(payload, emit)
        send({"type": "return", "value": value})
    except BenchmarkError as exc:
        send({"type": "error", "error_type": type(exc).__name__, "message": str(exc)})
    except Exception as exc:  # a bug, reported as one with its traceback (the parent keeps going)
        tb = traceback.format_exc()
        if log_file:
            print(tb, file=sys.stderr, flush=True)
        mapped = _errors.memory_error(exc)  # an allocation that failed is bad input, not a bug
        if mapped is not None:
            send({"type": "error", "error_type": type(mapped).__name__, "message": str(mapped)})
        else:
            send({"type": "error", "error_type": type(exc).__name__,
                  "message": f"internal error: {one_line(exc, typed=True)}", "traceback": tb})
    finally:
        conn.close()
    # Skip interpreter finalisation (seconds with torch/onnxruntime loaded): the job is done and
    # has nothing left to write but its log.
    sys.stdout.flush()
    sys.stderr.flush()
    if log_file:
        log_file.flush()
    os._exit(0)


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _plain_main() -> Iterator[None]:
    """While a child starts, show multiprocessing an empty ``__main__``.

    Spawned children otherwise re-import the parent's main script (a Streamlit runner, a user's
    script without a ``__name__`` guard, ``python -`` reading stdin); the job needs only
    ``benchmark.jobs``, so the child starts from a clean interpreter instead.
    """
    import types

    with _START_LOCK:
        real = sys.modules.get("__main__")
        stub = types.ModuleType("__main__")
        stub.__spec__ = None
        sys.modules["__main__"] = stub
        try:
            yield
        finally:
            if real is not None:
                sys.modules["__main__"] = real


def _start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker without its "leaked semaphore" warning.

    A child killed on purpose (timeout, cancel) or by a crash cannot release the semaphores its
    libraries created (the ONNX exporter makes one); the tracker then cleans them up and warns on
    the CLI's stderr. The crash is already reported in the result row, so the tracker is started
    with that one warning filtered out (``-W`` options are passed on from ``sys.warnoptions``).
    """
    from multiprocessing import resource_tracker

    flag = "ignore:resource_tracker:UserWarning"
    added = flag not in sys.warnoptions
    if added:
        sys.warnoptions.append(flag)
    try:
        resource_tracker.ensure_running()
    finally:
        if added:
            sys.warnoptions.remove(flag)


def _last_log_line(path: Path | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4096))
            lines = [ln.strip() for ln in fh.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


STARTING = "starting the job process"  # the step a child is in until it reports that it has started


def run_isolated(
    target: str,
    payload: Any,
    *,
    on_event: EventCallback | None = None,
    timeout_s: float | None = 300.0,
    cancel_check: Callable[[], bool] | None = None,
    plugins: list[str] | None = None,
    log_path: str | os.PathLike | None = None,
    poll_s: float = 0.1,
    on_tick: Callable[[], None] | None = None,
) -> JobOutcome:
    """Run ``target`` (``"package.module:function"``, called as ``function(payload, emit)``) in a
    spawned child process and wait for it.

    - ``on_event(event)`` gets each dict the child emits (progress, partial results).
    - ``timeout_s``: per step; the child's start-up (interpreter, plugins, the target's module)
      is a step of its own, and the clock restarts at each ``{"type": "step"}`` event.
    - ``cancel_check()`` is polled about twice a second; True kills the child (outcome "cancelled").
    - ``on_tick()`` is called about once a second (heartbeats).

    ``KeyboardInterrupt`` in the parent kills the child and propagates.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    log_path = Path(log_path) if log_path else None
    proc = ctx.Process(
        target=_child_entry,
        args=(send, target, payload, plugin_list(plugins), str(log_path) if log_path else None, os.getpid()),
        name=f"slimbench-job-{target.rpartition(':')[2]}",
        daemon=False,
    )
    watch = _ChildWatch(proc, recv, on_event=on_event, timeout_s=timeout_s, cancel_check=cancel_check,
                        on_tick=on_tick)
    _start_quiet_resource_tracker()
    with _plain_main():
        proc.start()
    send.close()
    try:
        watch.wait(poll_s)
    except BaseException:
        kill_tree(proc)
        raise
    finally:
        recv.close()
    proc.join(30)
    if proc.is_alive():
        kill_tree(proc)
    outcome = watch.outcome or watch.failure(log_path)
    outcome.exitcode = proc.exitcode
    outcome.log_path = log_path
    outcome.peak_rss_mb = round(watch.peak_rss, 1) if watch.peak_rss else None
    outcome.last_step = watch.last_step
    outcome.wall_s = time.monotonic() - watch.started
    outcome.events = watch.events
    return outcome


class _ChildWatch:
    """The parent's side of one running child: its messages, its step clock, its memory, and the
    timeout / cancel / heartbeat checks between messages."""

    def __init__(self, proc, recv, *, on_event: EventCallback | None, timeout_s: float | None,
                 cancel_check: Callable[[], bool] | None, on_tick: Callable[[], None] | None):
        self.proc, self.recv = proc, recv
        self.on_event, self.timeout_s, self.cancel_check, self.on_tick = on_event, timeout_s, cancel_check, on_tick
        self.oom_before = oom_kill_count()
        self.started = self.step_started = time.monotonic()
        self.last_step: str | None = STARTING
        self.outcome: JobOutcome | None = None
        self.killed_by_us: str | None = None  # "timeout" or "cancelled"
        self.peak_rss = 0.0
        self.events: list[dict] = []
        self._last_tick = self._last_cancel_check = self._last_rss = 0.0
        self._ps_proc = None

    def wait(self, poll_s: float) -> None:
        """Until the child returns, fails, dies, times out or is cancelled."""
        import psutil

        with contextlib.suppress(psutil.Error):
            self._ps_proc = psutil.Process(self.proc.pid)
        child_gone = False
        while True:
            try:
                # Once the child has exited, drain what it sent before exiting without waiting.
                ready = self.recv.poll(0 if child_gone else poll_s)
            except (EOFError, OSError):
                ready = False
            if ready:
                try:
                    msg = json.loads(self.recv.recv_bytes())
                except (EOFError, OSError):  # the child closed its end (exited or died)
                    self.proc.join(1.0)
                    if self.proc.exitcode is not None:
                        return
                    msg = None
                if msg is not None:
                    self._receive(msg)
            if self.outcome is not None:
                return
            if not ready:
                if child_gone:
                    return
                if not self.proc.is_alive():
                    # The child may have sent its result and exited between the poll above and
                    # this check: poll once more before concluding that it said nothing.
                    child_gone = True
                    continue
            if self._stopped_by_checks():
                return

    def _receive(self, msg: dict) -> None:
        kind = msg.get("type")
        if kind == "return":
            self.outcome = JobOutcome(True, value=msg.get("value"))
        elif kind == "error":
            self.outcome = JobOutcome(False, error=msg.get("message"), error_type=msg.get("error_type"),
                                      traceback=msg.get("traceback"))
        elif kind == "started":
            self.step_started = time.monotonic()
            self.last_step = None
        else:
            if kind == "step":
                self.step_started = time.monotonic()
                self.last_step = msg.get("message") or self.last_step
            self.events.append(msg)
            if self.on_event:
                self.on_event(msg)

    def _stopped_by_checks(self) -> bool:
        """Sample the child's RSS, apply the step timeout and the cancel check, send heartbeats;
        True when the child was killed."""
        import psutil

        now = time.monotonic()
        if self._ps_proc is not None and now - self._last_rss > 0.25:
            self._last_rss = now
            with contextlib.suppress(psutil.Error):
                self.peak_rss = max(self.peak_rss, self._ps_proc.memory_info().rss / 2**20)
        if self.timeout_s and now - self.step_started > self.timeout_s:
            self.killed_by_us = "timeout"
        elif self.cancel_check and now - self._last_cancel_check > 0.5:
            self._last_cancel_check = now
            if self.cancel_check():
                self.killed_by_us = "cancelled"
        if self.killed_by_us:
            kill_tree(self.proc)
            return True
        if self.on_tick and now - self._last_tick > 1.0:
            self._last_tick = now
            self.on_tick()
        return False

    def failure(self, log_path: Path | None) -> JobOutcome:
        """The outcome of a child that sent no result: timed out, cancelled, killed by a signal
        (out of memory named as such) or exited without a word."""
        if self.killed_by_us == "timeout":
            where = f" while {self.last_step}" if self.last_step else ""
            return JobOutcome(False, error=f"timed out after {self.timeout_s:g} s{where}", error_type="timeout")
        if self.killed_by_us == "cancelled":
            return JobOutcome(False, error="cancelled", error_type="cancelled")
        exitcode = self.proc.exitcode
        if exitcode is not None and exitcode < 0:
            signum = -exitcode
            if signum == signal.SIGKILL:
                oom_after = oom_kill_count()
                if self.oom_before is not None and oom_after is not None and oom_after > self.oom_before:
                    error = "out of memory (killed by SIGKILL)"
                else:
                    error = "killed by signal 9 (SIGKILL), most likely out of memory"
                if self.peak_rss:
                    error += f"; job memory reached {self.peak_rss:.0f} MB"
            else:
                error = f"killed by signal {signum} ({signal_name(signum)})"
            if self.last_step:
                error += f" while {self.last_step}"
            return JobOutcome(False, error=error, error_type="signal")
        tail = _last_log_line(log_path)
        error = f"job process exited with code {exitcode} without a result"
        if tail:
            error += f"; last output: {tail}"
        return JobOutcome(False, error=error, error_type="exit")


# --------------------------------------------------------------------------------------------
# per-device queue
# --------------------------------------------------------------------------------------------
@dataclass
class QueueEntry:
    """A ticket in a device queue: who waits (or runs), for which sweep, since when."""

    ticket: str
    pid: int
    sweep_id: int | None
    db: str | None
    label: str
    created: float
    path: Path


class DeviceQueue:
    """FIFO access to one device for every process on this machine.

    ``with queue.slot(...):`` takes a ticket, waits until no live ticket is ahead of it and the
    device lock is free, holds the lock for the block, then releases both. Between two jobs a sweep
    gives the device up, so concurrent sweeps take turns job by job.
    """

    def __init__(self, device: str, root: str | os.PathLike | None = None):
        from .paths import locks_dir

        self.device = device
        base = Path(root) if root else locks_dir()
        self.dir = base / f"queue-{device}"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the device queue folder {self.dir}: {exc.strerror or exc}") from None
        self.lock_path = base / f"queue-{device}.lock"

    def entries(self) -> list[QueueEntry]:
        """Live tickets, oldest first (tickets of dead processes are removed)."""

        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not process_alive(data.get("pid"), data.get("pid_started")):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            out.append(QueueEntry(path.stem, int(data["pid"]), data.get("sweep_id"), data.get("db"),
                                  data.get("label", ""), float(data.get("created", 0)), path))
        return out

    def position(self, ticket: str) -> int:
        """How many live tickets are ahead of ``ticket``."""
        return sum(1 for e in self.entries() if e.ticket < ticket)

    def _take_ticket(self, sweep_id, db, label) -> Path:
        name = f"{time.time_ns():020d}-{os.getpid():07d}-{uuid.uuid4().hex[:8]}"
        data = {"pid": os.getpid(), "pid_started": process_start_time(), "sweep_id": sweep_id,
                "db": str(db) if db else None, "label": label, "created": time.time()}
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data))
        path = self.dir / f"{name}.json"
        os.replace(tmp, path)
        return path

    @contextlib.contextmanager
    def slot(
        self,
        *,
        sweep_id: int | None = None,
        db: str | os.PathLike | None = None,
        label: str = "",
        on_wait: Callable[[int], None] | None = None,
        cancel_check: Callable[[], bool] | None = None,
        poll_s: float = 0.2,
    ) -> Iterator[None]:
        """Hold the device for the block. ``on_wait(n_ahead)`` is called while waiting (about
        every second, and at once when the position changes); a True ``cancel_check()`` while
        waiting raises :class:`JobCancelled`."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.lock_path))
        ticket_path = self._take_ticket(sweep_id, db, label)
        ticket = ticket_path.stem
        held = False
        try:
            last_report, last_ahead = 0.0, None
            while True:
                ahead = self.position(ticket)
                if ahead == 0:
                    try:
                        lock.acquire(timeout=poll_s)
                        held = True
                        break
                    except Timeout:
                        ahead = 1  # someone outside the ticket queue holds the device
                now = time.monotonic()
                if on_wait and (ahead != last_ahead or now - last_report > 1.0):
                    on_wait(ahead)
                    last_report, last_ahead = now, ahead
                if cancel_check and cancel_check():
                    raise JobCancelled(f"cancelled while queued for {self.device}")
                if ahead:
                    time.sleep(poll_s)
            yield
        finally:
            if held:
                lock.release()
            with contextlib.suppress(OSError):
                ticket_path.unlink()


def queue_state(device: str) -> list[dict]:
    """The device queue as dicts (position 0 = the job holding the device), for pages and the CLI."""
    entries = DeviceQueue(device).entries()
    return [{"position": i, "pid": e.pid, "sweep_id": e.sweep_id, "db": e.db, "label": e.label,
             "waiting_s": round(time.time() - e.created, 1)} for i, e in enumerate(entries)]


def run_queued_job(target: str, payload: dict, what: str, on_progress: Callable[[str, float | None], None] | None,
                   on_wait: Callable[[int], None] | None, timeout_s: float | None, queue: bool) -> dict:
    """Run ``target`` (an analysis job: sensitivity, search, profile) in a spawned child, holding the
    CPU queue slot when ``queue``; returns its value, raises its error as one line (bad input as its
    own class, anything else as a MeasurementError naming the kept log)."""
    from .paths import logs_dir

    def on_event(event: dict) -> None:
        if on_progress is not None and event.get("message"):
            frac = event.get("fraction")
            on_progress(str(event["message"]), None if frac is None else float(frac))

    log_path = logs_dir() / f"{target.rpartition(':')[2].strip('_')}-{uuid.uuid4().hex[:12]}.log"
    slot = DeviceQueue("cpu").slot(label=f"{what} {payload['label']}", on_wait=on_wait) if queue else contextlib.nullcontext()
    with slot:
        outcome = run_isolated(target, payload, on_event=on_event, timeout_s=timeout_s, log_path=log_path)
    if outcome.ok:
        with contextlib.suppress(OSError):
            os.unlink(log_path)
        return outcome.value
    message = outcome.error or "failed without a message"
    if outcome.is_bad_input:
        with contextlib.suppress(OSError):
            os.unlink(log_path)
        raise _errors.error_class(outcome.error_type)(message)
    raise _errors.MeasurementError(f"{what} of {payload['label']} failed: {message} (log: {log_path})")


def source_label(source: str) -> str:
    """A model source as shown in queues and logs: the sample name or the file name (never its folder)."""
    return str(source) if str(source).startswith("sample:") else Path(str(source)).name

"""The parent side of a sweep: the per-device queue, one isolated job per variant, every row stored
as it arrives, resume of an interrupted sweep, cancel, and the detached background runner."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .. import errors as _errors
from ..config import SweepConfig
from ..errors import BenchmarkError, ConfigError, StoreError
from ..executors import LOCAL, LOST, LocalExecutor, Target, make_executor, run_per_target
from ..results import RunResult
from ..store import Store
from .child import JOB_TARGET
from .explained import explain_sweep
from .plan import (
    DEFAULT_JOB_TIMEOUT_S, Job, PlannedRun, absolute_paths, plan_for_targets, plan_size, plan_sweep, run_settings,
    sweep_config_from_dict, sweep_config_to_dict, validate_sweep,
)
from .rows import RowFactory, refresh_speedups

Progress = Callable[[str, "float | None"], None]  # (message, overall fraction in [0, 1] or None)


class SweepInterrupted(BenchmarkError):
    """The runner was stopped (Ctrl-C / SIGTERM); finished rows are stored, the sweep can resume."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """In the main thread, SIGTERM raises KeyboardInterrupt so the running job is cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, frame):
        raise KeyboardInterrupt(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _workdir_for(store: Store) -> Path:
    from ..paths import work_root

    return Path(tempfile.mkdtemp(prefix=f"sweep-{store.tag}-", dir=work_root()))


class _JobEvents:
    """What one job's child reports, applied to the runner and the store as it arrives. The child
    does not know its target: its keys are :attr:`PlannedRun.job_key`; its rows get the target here."""

    def __init__(self, runner: "_Runner", job: Job, runs: list[PlannedRun], target: Target):
        self.runner = runner
        self.job = job
        self.runs = runs
        self.target = target
        self.by_key = {r.job_key: r for r in runs}
        self.reported: set[str] = set()
        self.current: list[str] = []  # the runs a crash now would fail
        self.sub = 0.0  # progress inside the current run

    def __call__(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "checked":
            self.on_checked(event)
        elif kind == "variant":
            self.runner.variant_info[(self.target.key, self.job.variant)] = dict(event.get("info") or {})
        elif kind == "run_started":
            self.current[:] = list(event.get("keys") or [])
            self.sub = 0.0
        elif kind == "result":
            self.on_result(RunResult.from_json(event["row"]))
        elif kind in ("step", "progress"):
            frac = event.get("fraction")
            if kind == "progress" and frac is not None and len(self.current) == 1:
                self.sub = max(self.sub, float(frac) * 0.99)
            self.runner.report(f"{self.job.variant}: {event.get('message', '')}", self.sub)

    def on_checked(self, event: dict) -> None:
        runner = self.runner
        with runner.lock:  # targets run in threads: the first job to load the model creates the sweep
            runner.model_name = event.get("model")
            if not runner.checked:
                runner.ensure_sweep(runner.model_name)
                runner.checked = True
        runner.store.set_run_status(runner.sweep_id, [r.key for r in self.runs], "running")

    def on_result(self, row: RunResult) -> None:
        runner = self.runner
        row.sweep_id = runner.sweep_id
        child_key = row.key  # the child's rows carry no target
        if child_key not in self.by_key:
            return
        row.target = self.target.key
        if runner.sweep_id is None:  # cannot happen: results come after "checked"
            runner.ensure_sweep(row.model)
        runner.store.add_result(row)
        if row.status == "ok":
            with runner.lock:  # targets report in threads: one refresh at a time sees every stored row
                refresh_speedups(runner.store, runner.sweep_id)
        self.reported.add(child_key)
        if child_key in self.current:
            self.current.remove(child_key)
        with runner.lock:
            runner.done += 1
        self.sub = 0.0
        note = f" ({row.error})" if row.status == "failed" and row.error else ""
        runner.report(f"{row.variant} on {row.backend} batch {row.batch_size}{_where(self.target)}: {row.status}{note}",
                      force=True)


def _where(target: Target) -> str:
    """`` [label]`` for a row on another machine, nothing on this one."""
    return f" [{target.label}]" if target.key else ""


class _Runner:
    """State of one ``run_sweep`` call. Jobs run through ``executor`` on each of its targets (the
    targets at once, each in a thread of its own; each target's jobs in plan order)."""

    def __init__(self, cfg: SweepConfig, store: Store, progress: Progress | None, job_timeout_s: float,
                 plugins: list[str], sweep_id: int | None, resume: bool, executor=None):
        self.cfg = cfg
        self.store = store
        self.progress_cb = progress
        self.job_timeout_s = job_timeout_s
        self.plugins = plugins
        self.sweep_id = sweep_id
        self.resume = resume
        self.executor = executor or LocalExecutor()
        self.settings = run_settings(cfg)
        self.by_target = plan_for_targets(plan_sweep(cfg), self.executor.targets())
        self.total = sum(plan_size(jobs) for _, jobs in self.by_target)
        self.targets = {t.key: t for t, _ in self.by_target}
        self.done = 0
        self.todo = 0
        # False: the model has not loaded yet (bad input raises); True: it has; None: resumed (it did before)
        self.checked: bool | None = False
        self.model_name: str | None = None
        self.variant_info: dict[tuple[str, str], dict] = {}  # (target, variant) -> what its job's child reported
        self.last_store_progress = 0.0
        self.pending_progress: tuple[str, float | None] | None = None
        self.workdir = _workdir_for(store)
        self.lock = threading.RLock()  # targets run in threads of their own
        self.stop = threading.Event()  # Ctrl-C (or an error) while targets run

    # --- progress ---------------------------------------------------------------------------
    def report(self, message: str, sub: float | None = None, force: bool = False) -> None:
        with self.lock:
            frac = None
            if self.todo:
                frac = min(1.0, (self.done + (sub or 0.0)) / self.todo)
            text = f"[{self.done}/{self.todo}] {message}" if self.todo else message
            if self.progress_cb:
                self.progress_cb(text, frac)
            self.pending_progress = (text, frac)
            if force or time.monotonic() - self.last_store_progress > 0.5:
                self.flush_progress()

    def flush_progress(self) -> None:
        """Write the latest progress line to the store (also the heartbeat); called at least once a second."""
        if self.sweep_id is None:
            return
        with self.lock:
            self.last_store_progress = time.monotonic()
            pending, self.pending_progress = self.pending_progress, None
        if pending is not None:
            self.store.update_progress(self.sweep_id, *pending)
        else:
            self.store.heartbeat(self.sweep_id)

    # --- sweep row + placeholders -----------------------------------------------------------
    def config_record(self) -> dict[str, Any]:
        return {"sweep": sweep_config_to_dict(self.cfg),
                "runner": {"job_timeout_s": self.job_timeout_s, "plugins": self.plugins, "settings": self.settings,
                           "targets": [t.to_dict() for t, _ in self.by_target]}}

    def ensure_sweep(self, model_name: str | None) -> None:
        with self.lock:
            if self.sweep_id is None:
                self.sweep_id = self.store.create_sweep(self.cfg.model, self.config_record(), device=self.cfg.device,
                                                        status="running", total_runs=self.total, pid=os.getpid())
            placeholders = []
            for _, jobs in self.by_target:
                for job in jobs:
                    rows = RowFactory(model_name or self.cfg.model, job.compression, self.cfg.device)
                    placeholders += [rows.row(run.backend, run.batch_size, "pending", target=run.target,
                                              variant=run.variant) for run in job.runs]
            self.store.add_pending(self.sweep_id, placeholders)

    def cancel_check(self) -> bool:
        return self.stop.is_set() or (self.sweep_id is not None and self.store.cancel_requested(self.sweep_id))

    def on_wait(self, ahead: int, target: Target) -> None:
        text = (f"queued behind {ahead} sweep{'s' if ahead != 1 else ''} on {self.cfg.device}"
                if ahead else f"waiting for device {self.cfg.device}")
        if self.sweep_id is not None:
            self.store.update_sweep_status(self.sweep_id, "queued")
        self.report(text + (f" of {target.label}" if target.key else ""), force=True)

    def on_start(self, runs: list[PlannedRun]) -> None:
        """The job holds its device: the sweep and the job's rows are running."""
        if self.sweep_id is not None:
            self.store.update_sweep_status(self.sweep_id, "running")
            self.store.set_run_status(self.sweep_id, [r.key for r in runs], "running")

    # --- main loop --------------------------------------------------------------------------
    def work_to_run(self) -> list[tuple[Target, list[Job]]]:
        """Per target, the plan's jobs with only the runs still to do (on resume: the missing rows)."""
        missing = None
        if self.sweep_id is not None:
            self.store.set_sweep_owner(self.sweep_id)
            self.store.set_sweep_total(self.sweep_id, self.total)
            if self.resume:
                self.store.reopen_sweep(self.sweep_id)
                self.ensure_sweep(None)
                self.checked = None  # the model was loaded before: errors are job failures
                missing = set(self.store.missing_runs(self.sweep_id))
            else:  # created beforehand: record the targets resolved now (a resume reuses them)
                self.store.set_sweep_config(self.sweep_id, self.config_record())
        work = []
        for target, plan in self.by_target:
            jobs = [Job(job.compression, [r for r in job.runs if missing is None or r.key in missing]) for job in plan]
            jobs = [j for j in jobs if j.runs]
            if jobs:
                work.append((target, jobs))
        return work

    def run(self) -> int:
        work = self.work_to_run()
        self.todo = sum(plan_size(jobs) for _, jobs in work)
        run_per_target(work, self.run_target, self.stop)
        if self.sweep_id is not None and self.store.cancel_requested(self.sweep_id):
            return self.finish_cancelled()
        explain_sweep(self.store, self.sweep_id)  # speedups, fractions of peak, measured explanations
        counts = self.store.get_sweep(self.sweep_id).counts if self.sweep_id is not None else {}
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
        if counts.get("interrupted"):
            self.store.update_sweep_status(
                self.sweep_id, "interrupted", progress=f"interrupted: {summary}",
                error=f"{counts['interrupted']} rows were lost with their machine; resume with "
                      f"`slimbench run --resume {self.sweep_id}` once it (or another node with its resource) is back")
        else:
            self.store.update_sweep_status(self.sweep_id, "done", progress=f"done: {summary}", fraction=1.0)
        if self.progress_cb:
            self.progress_cb(f"done: {summary}", 1.0)
        return self.sweep_id

    def run_target(self, target: Target, jobs: list[Job]) -> None:
        """Run ``jobs`` one after another on ``target``; a lost target interrupts its other rows."""
        for index, job in enumerate(jobs):
            remaining = list(job.runs)
            attempt = 0
            while remaining:
                attempt += 1
                if self.cancel_check():
                    return
                reason = self.executor.unavailable(target)
                if reason:
                    self.interrupt_rest(jobs[index:], remaining, f"not run: {reason}")
                    return
                remaining, lost = self.run_job(job, remaining, attempt, index, target)
                if lost:
                    self.interrupt_rest(jobs[index + 1:], [], lost)
                    return

    def interrupt_rest(self, jobs: list[Job], runs: list[PlannedRun], error: str) -> None:
        """Rows that will not run because their target is gone become ``interrupted``."""
        if self.sweep_id is None:
            self.ensure_sweep(self.model_name)
        keys = [r.key for r in runs] + [r.key for j in jobs for r in j.runs]
        self.store.set_run_status(self.sweep_id, keys, "interrupted", error=error)
        with self.lock:
            self.done += len(keys)
        self.report(f"{len(keys)} runs interrupted: {error}", force=True)

    def finish_cancelled(self) -> int:
        if self.sweep_id is not None:
            self.store.cancel_pending_runs(self.sweep_id)
            self.store.update_sweep_status(self.sweep_id, "cancelled", progress="cancelled")
        if self.progress_cb:
            self.progress_cb("cancelled", None)
        return self.sweep_id

    def job_payload(self, job: Job, runs: list[PlannedRun]) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "model": cfg.model, "inputs": list(cfg.inputs), "batch_axis": list(cfg.batch_axis),
            "trust_pickle": bool(cfg.trust_pickle),
            "arch": getattr(cfg, "arch", None), "data": cfg.data, "device": cfg.device, "settings": self.settings,
            "skip_peaks": bool(getattr(cfg, "skip_peaks", False)),
            "compression": dataclasses.asdict(job.compression),
            "workdir": str(self.workdir), "timeout_s": self.job_timeout_s,
            "runs": [r.to_payload() for r in runs],
        }

    def run_job(self, job: Job, runs: list[PlannedRun], attempt: int, index: int,
                target: Target = LOCAL) -> tuple[list[PlannedRun], str | None]:
        """Run one child for ``runs`` of ``job`` on ``target`` (through the executor, which waits for
        the target's device first); store what it reports. Returns (runs to retry, why the target
        was lost or None)."""
        events = _JobEvents(self, job, runs, target)
        tag = f"{index}-{attempt}" + (f"-{hashlib.sha1(target.key.encode()).hexdigest()[:6]}" if target.key else "")
        self.report(f"{job.variant}: starting job" + (f" on {target.label}" if target.key else ""), force=True)
        outcome = self.executor.execute(
            target, JOB_TARGET, self.job_payload(job, runs), on_event=events,
            on_wait=lambda ahead: self.on_wait(ahead, target), on_start=lambda: self.on_start(runs),
            cancel_check=self.cancel_check, timeout_s=self.job_timeout_s, plugins=self.plugins,
            log_path=self.workdir / f"job-{tag}.log", on_tick=self.flush_progress,
            ticket={"sweep_id": self.sweep_id, "db": self.store.path, "label": f"{self.cfg.model} {job.variant}"})
        return self.after_job(job, runs, outcome, events)

    def after_job(self, job: Job, runs: list[PlannedRun], outcome,
                  events: _JobEvents) -> tuple[list[PlannedRun], str | None]:
        """Fail, interrupt or retry the runs a job did not report. Returns (runs to retry, lost reason)."""
        if outcome.error_type == "cancelled":
            return [], None
        left = [r for r in runs if r.job_key not in events.reported]
        if outcome.ok:
            for r in left:
                self.fail(job, r, "the job ended without a result for this run", outcome)
            return [], None
        if outcome.error_type == LOST:
            for r in left:
                self.fail(job, r, outcome.error, outcome, status="interrupted")
            return [], outcome.error or "lost"
        with self.lock:
            if self.checked is False and outcome.is_bad_input:
                # The model or data could not be used at all: bad input, nothing stored for it.
                raise _errors.error_class(outcome.error_type)(outcome.error)
            if self.checked is False:
                self.ensure_sweep(self.model_name)
                self.checked = True
        crashed = [k for k in events.current if k in events.by_key and k not in events.reported]
        if crashed and outcome.error_type in ("signal", "timeout", "exit"):
            # A crash during a run fails that run only; the job's other runs get a fresh child.
            for key in crashed:
                self.fail(job, events.by_key[key], outcome.error, outcome)
            return [r for r in left if r.job_key not in crashed], None
        for r in left:
            self.fail(job, r, outcome.error, outcome)
        return [], None

    def fail(self, job: Job, run: PlannedRun, error: str | None, outcome, status: str = "failed") -> None:
        """Store ``run`` as a ``failed`` (or ``interrupted``) row with what its job reported."""
        from ..paths import logs_dir

        if self.sweep_id is None:
            self.ensure_sweep(self.model_name)
        info = self.variant_info.get((run.target, job.variant), {})
        warnings = list(info.get("warnings") or [])
        if outcome.log_path and Path(outcome.log_path).exists() and Path(outcome.log_path).stat().st_size:
            with contextlib.suppress(OSError, StoreError):
                dest = logs_dir() / f"sweep-{self.store.tag}-{self.sweep_id}-{Path(outcome.log_path).name}"
                shutil.copyfile(outcome.log_path, dest)
                warnings.append(f"job log: {dest}")
        if outcome.traceback:
            warnings.append("traceback: " + outcome.traceback.strip().splitlines()[-1])
        rows = RowFactory.from_info(self.model_name or self.cfg.model, job.compression, self.cfg.device, info,
                                    sweep_id=self.sweep_id)
        self.store.add_result(rows.row(run.backend, run.batch_size, status, error=error or status, warnings=warnings,
                                       peak_rss_mb=outcome.peak_rss_mb, target=run.target, variant=run.variant))
        with self.lock:
            self.done += 1
        where = _where(self.targets.get(run.target, LOCAL))
        self.report(f"{run.variant} on {run.backend} batch {run.batch_size}{where}: {status} ({error})", force=True)


def _resume_settings(store: Store, sweep_id: int, plugins, job_timeout_s):
    """(config, plugins, job timeout, the sweep as it was) of a stored sweep to resume, claimed for this
    process (:meth:`Store.claim_sweep`); refuses one that another runner holds."""
    store.mark_interrupted()
    if "recommend" in (store.get_sweep(sweep_id).config or {}):  # a recommendation is not a sweep plan
        raise ConfigError(f"sweep {sweep_id} is a recommendation; run `slimbench recommend` again instead of resuming it")
    rec = store.claim_sweep(sweep_id)  # one runner per sweep: a second --resume is refused here
    try:
        cfg = sweep_config_from_dict(rec.config.get("sweep") or {})  # the stored plan decides what is missing
    except BaseException:
        store.release_sweep(rec)
        raise
    runner = rec.config.get("runner") or {}
    plugins = plugins or runner.get("plugins") or None
    if job_timeout_s == DEFAULT_JOB_TIMEOUT_S and runner.get("job_timeout_s"):
        job_timeout_s = float(runner["job_timeout_s"])
    return cfg, plugins, job_timeout_s, rec


def _mark_failed(store: Store, sweep_id: int | None, exc: BaseException) -> None:
    if sweep_id is None:
        return
    if isinstance(exc, KeyboardInterrupt):
        store.update_sweep_status(
            sweep_id, "interrupted",
            error=f"interrupted before it finished; resume with `slimbench run --resume {sweep_id}`",
            progress="interrupted")
        store.reset_running_runs(sweep_id)
    elif isinstance(exc, BenchmarkError):
        store.update_sweep_status(sweep_id, "failed", error=str(exc), progress=f"failed: {exc}")
    else:
        store.update_sweep_status(sweep_id, "failed", error=f"internal error: {type(exc).__name__}: {exc}",
                                  progress="failed (internal error)")


def run_sweep(
    cfg: SweepConfig | None,
    store: Store,
    progress: Progress | None = None,
    job_timeout_s: float | None = DEFAULT_JOB_TIMEOUT_S,
    resume_sweep_id: int | None = None,
    *,
    sweep_id: int | None = None,
    plugins: list[str] | None = None,
) -> int:
    """Run a sweep and return its id. Every row is committed as soon as it exists.

    - ``progress(message, fraction)`` gets progress lines (fraction of the runs to do).
    - ``job_timeout_s``: per step of a job (building a variant, one backend x batch run).
    - ``resume_sweep_id``: continue that sweep with its stored config (``cfg`` is ignored and may be
      None): only its missing rows run (``pending``/``running``/``cancelled``/``interrupted``; failed
      rows stay), on the targets stored with it.
    - ``sweep_id``: run a sweep row created beforehand (by :func:`start_sweep_background`).

    Bad input (unknown backend, unreadable model, data that does not match the model) raises a
    :class:`BenchmarkError` before anything is stored for a new sweep; for a pre-created sweep the
    row is marked ``failed`` with the message. Ctrl-C / SIGTERM kill the running job, mark the
    sweep ``interrupted`` and raise ``KeyboardInterrupt``.
    """
    from ..jobs import plugin_list

    resume = resume_sweep_id is not None
    claimed = None
    if resume:
        cfg, plugins, job_timeout_s, claimed = _resume_settings(store, resume_sweep_id, plugins, job_timeout_s)
        sweep_id = resume_sweep_id
    if cfg is None:
        raise ConfigError("run_sweep needs a SweepConfig (or resume_sweep_id of a stored sweep)")
    plugins = plugin_list(plugins)
    cfg = absolute_paths(cfg)
    try:
        validate_sweep(cfg, plugins)
        # a resumed sweep runs on the targets it resolved when it started
        stored = (claimed.config.get("runner") or {}).get("targets") if claimed and cfg.executor != "local" else None
        executor = make_executor(cfg.executor, ray_address=cfg.ray_address, targets=cfg.targets, stored_targets=stored)
    except BenchmarkError as exc:
        if claimed is not None:
            store.release_sweep(claimed)
        else:
            _mark_failed(store, sweep_id, exc)
        raise
    runner = _Runner(cfg, store, progress, float(job_timeout_s or 0) or None, plugins, sweep_id, resume, executor)
    try:
        with _sigterm_as_interrupt():
            return runner.run()
    except (KeyboardInterrupt, Exception) as exc:
        _mark_failed(store, runner.sweep_id, exc)
        raise
    finally:
        executor.close()
        shutil.rmtree(runner.workdir, ignore_errors=True)


def cancel_sweep(store: Store, sweep_id: int) -> str:
    """Ask the runner of ``sweep_id`` to stop (kills its running job); returns the new status."""
    return store.request_cancel(sweep_id)


def start_sweep_background(cfg: SweepConfig, db_path: str | os.PathLike | None = None, *,
                           job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S, plugins: list[str] | None = None) -> int:
    """Create the sweep row and run it in a detached process (``python -m benchmark run
    --sweep-id N --db PATH``) that outlives the caller, so any page or tab can follow it through
    the store (status, progress text and fraction, rows as they land). Returns the sweep id."""
    from ..jobs import PLUGINS_ENV, plugin_list
    from ..paths import logs_dir

    plugins = plugin_list(plugins)
    cfg = absolute_paths(cfg)
    validate_sweep(cfg, plugins)
    store = Store(db_path)
    record = {"sweep": sweep_config_to_dict(cfg),
              "runner": {"job_timeout_s": job_timeout_s, "plugins": plugins, "settings": run_settings(cfg)}}
    sweep_id = store.create_sweep(cfg.model, record, device=cfg.device, status="pending",
                                  total_runs=plan_size(plan_sweep(cfg)))
    log_path = logs_dir() / f"sweep-{store.tag}-{sweep_id}-runner.log"
    env = dict(os.environ)
    if plugins:
        env[PLUGINS_ENV] = ",".join(plugins)
    cmd = [sys.executable, "-m", "benchmark", "run", "--sweep-id", str(sweep_id), "--db", str(store.path),
           "--timeout", str(job_timeout_s)]
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=env, cwd=os.getcwd())
    except OSError as exc:
        store.update_sweep_status(sweep_id, "failed", error=f"cannot start the sweep runner: {exc}")
        raise BenchmarkError(f"cannot start the sweep runner ({' '.join(cmd[:4])}): {exc.strerror or exc}") from None
    store.set_sweep_owner(sweep_id, proc.pid)
    return sweep_id


def run_stored_sweep(store: Store, sweep_id: int, progress: Progress | None = None,
                     job_timeout_s: float | None = None) -> int:
    """Run a sweep created beforehand (status ``pending``), from its stored config."""
    rec = store.get_sweep(sweep_id)
    runner = rec.config.get("runner") or {}
    try:
        cfg = sweep_config_from_dict(rec.config.get("sweep") or {})
    except (BenchmarkError, TypeError) as exc:
        store.update_sweep_status(sweep_id, "failed", error=f"stored config is unusable: {exc}")
        raise ConfigError(f"sweep {sweep_id}: stored config is unusable: {exc}") from None
    timeout = job_timeout_s if job_timeout_s is not None else runner.get("job_timeout_s", DEFAULT_JOB_TIMEOUT_S)
    return run_sweep(cfg, store, progress, job_timeout_s=timeout, sweep_id=sweep_id,
                     plugins=runner.get("plugins") or None)

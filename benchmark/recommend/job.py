"""Running a recommendation: the child process that searches, and the parent that records it.

The search runs in one spawned child (:func:`recommend_job`, through
:func:`benchmark.jobs.run_isolated`): it loads the model (the parent never does), builds and times
every candidate, and sends each candidate's row as it is measured. The parent
(:func:`run_recommendation`) holds the device's queue slot for the whole search (no other timed
job shares the device), stores the rows in a sweep record of its own (``config["recommend"]``
holds the request), so Results, History and ``slimbench results`` show them, and writes the
recommendation object and the chosen model file into ``<data folder>/recommendations/<db>-<id>/``.
Cancelling the sweep (dashboard, ``slimbench sweeps --cancel ID``) kills the child; rows measured
so far stay. :func:`start_recommend_background` runs the same in a detached process
(``python -m benchmark recommend --sweep-id N``) that outlives the caller.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from .. import errors as _errors
from ..errors import BenchmarkError, ConfigError, StoreError
from ..results import RunResult
from .request import RecommendRequest

JOB_TARGET = "benchmark.recommend.job:recommend_job"
#: Per-step timeout of the child (every timing repeat and build starts a step).
DEFAULT_STEP_TIMEOUT_S = 300.0
SUMMARY_FILE = "recommendation.json"

Progress = Callable[[str, "float | None"], None]


# --------------------------------------------------------------------------------------------
# the child
# --------------------------------------------------------------------------------------------
def _backends(req: RecommendRequest) -> tuple[list[str], list[str]]:
    from ..backends import get_backend
    from ..errors import BackendUnavailableError
    from .space import DEFAULT_BACKENDS

    wanted = list(req.backends) or list(DEFAULT_BACKENDS.get(req.device, ("onnxruntime",)))
    ok, notes = [], []
    for name in wanted:
        available, why = get_backend(name).availability(req.device)
        if available:
            ok.append(name)
        else:
            notes.append(f"{name} not searched: {why}")
    if not ok:
        raise BackendUnavailableError(f"no backend to search on {req.device}: {'; '.join(notes)}")
    return ok, notes


def _space(req: RecommendRequest, splits, backends: list[str]):
    from ..compress.quantize import choose_int8_format
    from .space import Space, SpaceContext

    preferred = choose_int8_format("auto")[0]
    formats = (preferred, "s8s8" if preferred == "u8s8" else "u8s8")
    return Space(SpaceContext(device=req.device, backends=tuple(backends), cores=os.cpu_count() or 1,
                              int8_formats=formats, has_train_data=splits.train is not None, overrides=req.overrides))


def _load(req: RecommendRequest, emit):
    from ..config import InputSpec
    from ..models import load_model
    from ..sweep.feeds import fixed_batch

    emit({"type": "step", "message": f"loading {req.model}"})
    overrides = [InputSpec.parse(t) for t in req.inputs]
    model = load_model(req.model, inputs=overrides, arch=req.arch, trust_pickle=req.trust_pickle,
                       batch_axes=list(req.batch_axis) or None)
    fixed = fixed_batch(model, {s.name for s in overrides})
    if fixed is not None and fixed[0] != req.batch_size:
        raise ConfigError(f"{model.name} runs batch {fixed[0]} only ({fixed[1]}); use --batch-size {fixed[0]}")
    return model


def recommend_job(payload: dict, emit) -> dict:
    """Child entry: search, decide, write the chosen model file; returns the recommendation object."""
    from ..measure.environment import collect_environment
    from .artifact import save_artifact
    from .decide import decide
    from .measurer import Measurer, error_text
    from .report import build_summary
    from .rows import outcome_row
    from .search import STRATEGY, Search
    from .splits import make_splits

    started = time.monotonic()
    req = RecommendRequest.from_dict(payload["request"])
    workdir = Path(payload["workdir"])
    os.chdir(workdir)  # files libraries drop in the current folder land in the scratch folder
    model = _load(req, emit)
    splits = make_splits(model, req.data, req.eval_samples)
    backends, notes = _backends(req)
    emit({"type": "checked", "model": model.name})
    envs: dict[int, dict] = {}

    def env(threads: int) -> dict:
        return envs.setdefault(threads, collect_environment(threads))

    m = Measurer(model, splits, device=req.device, batch_size=req.batch_size, workdir=workdir, emit=emit)

    def emit_row(out, reason: str | None = None) -> None:
        emit({"type": "result", "row": outcome_row(m, out, env(out.candidate.threads), reason=reason).to_json()})

    search = Search(m, _space(req, splits, backends), budget_points=req.budget_points, time_budget_s=req.time_budget_s,
                    repeats=req.repeats, metric=req.metric, started=started, emit_row=emit_row,
                    progress=lambda msg, frac: emit({"type": "progress", "message": msg, "fraction": frac}))
    try:
        search.run()
        decision = decide(search, req.latency_budget_ms, req.min_speedup)
        emit({"type": "step", "message": f"saving {decision.chosen.name}"})
        try:
            artifact = save_artifact(m, decision.chosen, Path(payload["outdir"]))
        except Exception as exc:  # the recommendation stands without its file
            artifact = None
            notes.append(f"the chosen model file was not written: {error_text(exc)}")
    finally:
        notes += m.close()
    rows = {}
    for o in search.outcomes.values():
        rows[o.key] = outcome_row(m, o, env(o.candidate.threads),
                                  reason="chosen" if o is decision.chosen else decision.reasons.get(o.key))
        emit({"type": "result", "row": rows[o.key].to_json()})
    return build_summary(search, decision, rows, request=req.to_dict(), splits=splits.describe(),
                         elapsed_s=time.monotonic() - started, artifact=artifact, strategy=STRATEGY,
                         notes=notes + splits.notes)


# --------------------------------------------------------------------------------------------
# the parent
# --------------------------------------------------------------------------------------------

def record_folder(store, sweep_id: int) -> Path:
    """Where a recommendation's object and chosen model file are kept."""
    from ..paths import data_dir

    folder = data_dir() / "recommendations" / f"{store.tag}-{int(sweep_id)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the recommendation folder {folder}: {exc.strerror or exc}") from None
    return folder


def is_recommendation(record) -> bool:
    """True for a sweep record made by a recommendation."""
    config = getattr(record, "config", None) or {}
    return isinstance(config, dict) and "recommend" in config


def load_recommendation(store, sweep_id: int) -> dict | None:
    """The stored recommendation object of sweep ``sweep_id`` (None while it runs or when it failed)."""
    path = record_folder(store, sweep_id) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read the recommendation {path}: {exc}") from None


def recommended_pick(store, record) -> tuple[str, str] | None:
    """(variant, backend) a finished recommendation chose, for the trade-off plot's star; None for a
    sweep, or a recommendation without a result."""
    if not is_recommendation(record) or record.active:
        return None
    summary = load_recommendation(store, record.id)
    return None if summary is None else (summary["chosen"]["variant"], summary["chosen"]["backend"])


class _Parent:
    """The parent's side of one run: rows to the store, progress (throttled), cancel, heartbeat."""

    def __init__(self, store, sweep_id: int, progress: Progress | None):
        self.store = store
        self.sweep_id = sweep_id
        self.progress_cb = progress
        self.pending: tuple[str, float | None] | None = None
        self.last = 0.0
        self.fraction = 0.0
        self.rows = 0

    def on_event(self, event: dict) -> None:
        kind = event.get("type")
        if kind == "result":
            row = RunResult.from_json(event["row"])
            row.sweep_id = self.sweep_id
            self.store.add_result(row)
            self.rows += 1
        elif kind in ("step", "progress") and event.get("message"):
            if event.get("fraction") is not None:
                self.fraction = max(self.fraction, float(event["fraction"]))
            self.report(str(event["message"]))

    def report(self, message: str, force: bool = False) -> None:
        text = f"{message} ({self.rows} rows)"
        if self.progress_cb:
            self.progress_cb(text, self.fraction)
        self.pending = (text, self.fraction)
        if force or time.monotonic() - self.last > 0.5:
            self.tick()

    def tick(self) -> None:
        self.last = time.monotonic()
        if self.pending is not None:
            self.store.update_progress(self.sweep_id, *self.pending)
            self.pending = None
        else:
            self.store.heartbeat(self.sweep_id)

    def cancelled(self) -> bool:
        return self.store.cancel_requested(self.sweep_id)

    def on_wait(self, ahead: int) -> None:
        self.store.update_sweep_status(self.sweep_id, "queued")
        self.report(f"queued behind {ahead} job(s)" if ahead else "waiting for the device", force=True)


def _finish(store, sweep_id: int, outcome, folder: Path) -> dict:
    """Store the child's answer (or its failure) on the sweep record; returns the recommendation."""
    if outcome.error_type == "cancelled":
        store.cancel_pending_runs(sweep_id)
        store.update_sweep_status(sweep_id, "cancelled", progress="cancelled")
        raise _errors.MeasurementError(f"recommendation {sweep_id} was cancelled; rows measured so far are stored")
    if not outcome.ok:
        message = outcome.error or "failed without a message"
        store.update_sweep_status(sweep_id, "failed", error=message, progress=f"failed: {message}")
        if outcome.is_bad_input:
            raise _errors.error_class(outcome.error_type)(message)
        raise _errors.MeasurementError(f"recommendation failed: {message} (log: {outcome.log_path})")
    summary = dict(outcome.value, sweep_id=sweep_id, db=str(store.path), folder=str(folder))
    tmp = folder / f".{SUMMARY_FILE}.tmp"
    tmp.write_text(json.dumps(summary, indent=1, allow_nan=False))
    os.replace(tmp, folder / SUMMARY_FILE)
    ch = summary["chosen"]
    text = (f"done: keep FP32 ({ch['variant']} on {ch['backend']})" if summary["keep_fp32"] else
            f"done: {ch['variant']} on {ch['backend']}, {ch.get('speedup_vs_fp32') or 0:.2f}x FP32")
    store.update_sweep_status(sweep_id, "done", progress=text, fraction=1.0)
    return summary


def run_recommendation(request: RecommendRequest, store, *, sweep_id: int | None = None,
                       progress: Progress | None = None, timeout_s: float | None = DEFAULT_STEP_TIMEOUT_S) -> dict:
    """Run ``request`` (see the module docstring) and return the recommendation object.

    ``sweep_id``: a record created beforehand (:func:`start_recommend_background`). Bad input (an
    unreadable model, unknown backend) raises its one-line error, and the record says ``failed``.
    """
    from ..jobs import DeviceQueue, JobCancelled, run_isolated, source_label
    from ..paths import logs_dir, work_root

    if sweep_id is None:
        sweep_id = store.create_sweep(request.model, {"recommend": request.to_dict()}, device=request.device,
                                      status="running", pid=os.getpid())
    else:
        store.set_sweep_owner(sweep_id)
    parent = _Parent(store, sweep_id, progress)
    folder = record_folder(store, sweep_id)
    workdir = Path(tempfile.mkdtemp(prefix=f"recommend-{store.tag}-", dir=work_root()))
    payload = {"request": request.to_dict(), "workdir": str(workdir), "outdir": str(folder)}
    log_path = logs_dir() / f"recommend-{store.tag}-{sweep_id}.log"
    try:
        with DeviceQueue(request.device).slot(sweep_id=sweep_id, db=store.path, on_wait=parent.on_wait,
                                              label=f"recommend {source_label(request.model)}",
                                              cancel_check=parent.cancelled):
            store.update_sweep_status(sweep_id, "running")
            parent.report("starting the search", force=True)
            outcome = run_isolated(JOB_TARGET, payload, on_event=parent.on_event, timeout_s=timeout_s,
                                   cancel_check=parent.cancelled, log_path=log_path, on_tick=parent.tick)
        return _finish(store, sweep_id, outcome, folder)
    except JobCancelled:
        store.update_sweep_status(sweep_id, "cancelled", progress="cancelled while queued")
        raise
    except KeyboardInterrupt:
        store.update_sweep_status(sweep_id, "cancelled", error="interrupted", progress="interrupted")
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def validate_request(request: RecommendRequest) -> None:
    """Checks made without loading the model: the backends exist, the architecture is known."""
    from ..backends import get_backend

    for name in request.backends:
        get_backend(name)
    if request.arch:
        from ..models.archs import get_arch

        get_arch(request.arch)


def start_recommend_background(request: RecommendRequest, db_path: str | os.PathLike | None = None) -> int:
    """Create the record and run the recommendation in a detached process (``python -m benchmark
    recommend --sweep-id N --db PATH``) that outlives the caller; returns the record's sweep id."""
    from ..paths import logs_dir
    from ..store import Store

    validate_request(request)
    store = Store(db_path)
    sweep_id = store.create_sweep(request.model, {"recommend": request.to_dict()}, device=request.device,
                                  status="pending")
    cmd = [sys.executable, "-m", "benchmark", "recommend", "--sweep-id", str(sweep_id), "--db", str(store.path)]
    log = logs_dir() / f"recommend-{store.tag}-{sweep_id}-runner.log"
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=os.getcwd())
    except OSError as exc:
        store.update_sweep_status(sweep_id, "failed", error=f"cannot start the recommendation: {exc}")
        raise BenchmarkError(f"cannot start the recommendation runner: {exc.strerror or exc}") from None
    store.set_sweep_owner(sweep_id, proc.pid)
    return sweep_id


def run_stored_recommendation(store, sweep_id: int, progress: Progress | None = None) -> dict:
    """Run a recommendation created beforehand, from its stored request."""
    rec = store.get_sweep(sweep_id)
    if not is_recommendation(rec):
        raise ConfigError(f"sweep {sweep_id} is not a recommendation")
    try:
        request = RecommendRequest.from_dict(rec.config["recommend"])
    except (BenchmarkError, TypeError) as exc:
        store.update_sweep_status(sweep_id, "failed", error=f"stored request is unusable: {exc}")
        raise ConfigError(f"recommendation {sweep_id}: stored request is unusable: {exc}") from None
    with contextlib.suppress(StoreError):
        store.update_progress(sweep_id, "starting", 0.0)
    return run_recommendation(request, store, sweep_id=sweep_id, progress=progress)


__all__ = ["JOB_TARGET", "DEFAULT_STEP_TIMEOUT_S", "recommend_job", "run_recommendation", "start_recommend_background",
           "run_stored_recommendation", "load_recommendation", "record_folder", "is_recommendation",
           "validate_request", "recommended_pick"]

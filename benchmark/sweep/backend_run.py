"""One backend's runs of a variant in the job's child.

Steps: gates (:mod:`.gates`) -> prepare one session -> the FP32 reference's outputs on this
backend -> one shared evaluation at the largest batch size -> per run: its own evaluation when the
shared one failed, quality fields, cross-backend check, latency -> one row each. The session (and
the GPU energy meter) is closed before the last row is sent, so a failure to close is noted on a
row of this backend.
"""
from __future__ import annotations

import functools
import sys
from typing import Any

from ..config import RunConfig
from ..errors import BenchmarkError
from ..results import RunResult
from .gates import runnable
from .feeds import first_batch, internal_error
from .quality import (
    CrossBackend, MetricPick, ReferenceOutputs, compute_reference_logits, load_logits, reference_path, row_quality,
    save_logits,
)
from .rows import PRECISION_STEPS, RSS_NOT_RESET, latency_fields, noop_warning, row_extras, stability_notes
from .variant import VariantContext


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BenchmarkError) else internal_error(exc)


def _ask(obj, name: str, *args, default=None):
    """``obj.name(*args)`` (or the attribute when it is not callable); ``default`` where a plugin's
    backend or session does not derive from the base classes and lacks it."""
    attr = getattr(obj, name, None)
    if attr is None:
        return default
    return attr(*args) if callable(attr) else attr


class BackendRun:
    """The runs of one backend (registered as ``name``) on the job's variant."""

    def __init__(self, ctx: VariantContext, name: str, runs: list[dict], cross: CrossBackend,
                 pick: MetricPick | None = None):
        self.ctx = ctx
        self.name = name
        self.runs = runs
        self.cross = cross
        self.pick = pick  # the job's quality metric, chosen once
        self.rss_scoped = False  # the first run's peak-RSS window (from before prepare) was opened
        self.reference = ReferenceOutputs()
        self.shared_report = None  # the evaluation at the largest batch, when it worked
        self.backend_notes: list[str] = []  # on every timed row of this backend
        self.dropped: set[str] = set()  # variant notes that do not hold for this backend's rows
        self.session_fields: dict[str, Any] = {}  # providers, threads, env, compressed_as_asked
        self.session_notes_seen = 0
        self.cross_fields: tuple[dict | None, str | None] | None = None  # (cross_backend, note) once computed

    # --- the whole backend ----------------------------------------------------------------
    def measure(self) -> None:
        from ..backends import get_backend

        backend = get_backend(self.name)
        runs = runnable(self.ctx, self.name, backend, self.runs)
        if not runs:
            return
        session = self.prepare(backend, runs)
        if session is None:
            return
        try:
            self.set_up(backend, session, runs)
        except Exception as exc:  # BenchmarkError or a bug: nothing of this backend can be measured
            notes = self.close(session, None)
            self.ctx.send_all(self.name, runs, "failed", f"{self.name}: {_error_text(exc)}", self.ctx.warnings + notes)
            return
        self.measure_runs(session, runs)

    def prepare(self, backend, runs: list[dict]):
        """The session, or None after sending every run's failed row (a crash fails them all too)."""
        from ..measure.memory import reset_gpu_peak, reset_peak_rss
        from ..resources import check_disk_space

        ctx = self.ctx
        ctx.out.step(f"preparing {self.name} session for {ctx.comp.name}")
        ctx.out.started([r["key"] for r in runs])
        self.rss_scoped = reset_peak_rss()  # the first run's window: prepare + evaluation + timing
        reset_gpu_peak()
        try:
            check_disk_space(ctx.workdir, ctx.model_bytes, f"preparing {self.name} for {ctx.comp.name}")
            options = _ask(backend, "sweep_options", ctx.device, ctx.settings)
            return backend.prepare(ctx.variant, device=ctx.device, threads=ctx.threads, workdir=ctx.workdir,
                                   options=options)
        except Exception as exc:
            ctx.send_all(self.name, runs, "failed", f"preparing {self.name}: {_error_text(exc)}", ctx.warnings)
            return None

    def set_up(self, backend, session, runs: list[dict]) -> None:
        """What the session reports about itself, the FP32 reference outputs, the shared evaluation."""
        ctx = self.ctx
        info = session.info
        self.backend_notes = list(getattr(info, "warnings", []) or [])
        self.session_notes_seen = len(self.backend_notes)  # later notes go on the row they were made in
        row_noops = ctx.noops
        if _ask(session, "applies_precision", default=False):
            row_noops = [s for s in ctx.noops if s not in PRECISION_STEPS]
        self.dropped = {noop_warning(s) for s in ctx.noops if s not in row_noops}
        self.session_fields = {
            "providers": list(info.providers), "threads": info.threads, "compressed_as_asked": not row_noops,
            "env": dict(ctx.rows.env or {}, session={"precision": info.precision, "options": info.options}),
        }
        self.reference = self.reference_outputs(backend, runs)
        self.backend_notes += self.reference.backend_notes
        self.shared_report, eval_notes = self.shared_evaluation(session, runs)
        self.backend_notes += eval_notes

    def reference_outputs(self, backend, runs: list[dict]) -> ReferenceOutputs:
        """The FP32 reference's outputs on this backend (cached for the sweep); none for the reference itself."""
        from ..compress import reference_variant

        ctx = self.ctx
        if ctx.comp.is_reference:
            return ReferenceOutputs()
        path = reference_path(ctx.workdir, self.name)
        if path.exists():
            return ReferenceOutputs(logits=load_logits(path))
        ctx.out.step(f"computing FP32 reference outputs on {self.name}")
        ref = compute_reference_logits(backend, reference_variant(ctx.model), ctx.eval_data, ctx.device, ctx.threads,
                                       ctx.workdir, [int(r["batch_size"]) for r in runs])
        if ref.logits is not None:
            save_logits(path, ref.logits)
        return ref

    def shared_evaluation(self, session, runs: list[dict]):
        """(report, notes): accuracy/fidelity once, at the largest batch size of the runs. When it
        fails the notes say so and each run evaluates at its own batch size."""
        bs = max(int(r["batch_size"]) for r in runs)
        try:
            return self.evaluate(session, bs), []
        except Exception as exc:
            return None, [f"evaluation at batch {bs} failed: {_error_text(exc)}"]

    def evaluate(self, session, batch_size: int):
        from ..measure.accuracy import evaluate

        ctx = self.ctx
        ctx.out.step(f"evaluating {ctx.comp.name} on {self.name} ({len(ctx.eval_data)} samples, batch {batch_size})")
        return evaluate(session, ctx.eval_data, batch_size, None, reference_outputs=self.reference.logits)

    # --- the runs -------------------------------------------------------------------------
    def measure_runs(self, session, runs: list[dict]) -> None:
        """One row per run; the session and meter are closed before the last row is sent."""
        from ..measure.energy import nvml_meter

        device = self.ctx.device
        meter, meter_note = nvml_meter(device) if device.startswith("cuda") else (None, "")
        closed = False
        try:
            for index, run in enumerate(runs):
                row = self.measure_run(session, run, index, meter, meter_note)
                if index == len(runs) - 1:
                    row.warnings += self.close(session, meter)
                    closed = True
                self.ctx.out.send(row)
        finally:
            if not closed:  # a bug above ends the job; its log keeps what closing said
                for note in self.close(session, meter):
                    print(note, file=sys.stderr)

    def measure_run(self, session, run: dict, index: int, meter, meter_note: str) -> RunResult:
        """The row of one run: ok, or failed with the error of its evaluation or timing."""
        from ..measure.memory import peak_rss_mb, reset_gpu_peak, reset_peak_rss

        bs = int(run["batch_size"])
        self.ctx.out.started([run["key"]])
        rss_scoped = self.rss_scoped
        if index:
            rss_scoped = reset_peak_rss()  # later runs: their own evaluation + timing
            reset_gpu_peak()
        warnings = [w for w in self.ctx.warnings if w not in self.dropped] + self.backend_notes
        if not rss_scoped:
            warnings.append(RSS_NOT_RESET)
        try:
            row = self.ok_row(session, bs, warnings, meter, meter_note)
        except Exception as exc:  # one run fails; the job's other runs go on
            cross = self.cross_fields[0] if self.cross_fields else None
            row = self.ctx.rows.row(self.name, bs, "failed", error=_error_text(exc), warnings=warnings,
                                    peak_rss_mb=round(peak_rss_mb(), 1), cross_backend=cross, **self.session_fields)
        new_notes = session.info.warnings[self.session_notes_seen:]  # what the session noted while this row ran
        row.warnings += [w for w in new_notes if w not in row.warnings]
        self.session_notes_seen = len(session.info.warnings)
        return row

    def ok_row(self, session, bs: int, warnings: list[str], meter, meter_note: str) -> RunResult:
        """Evaluate (unless the shared evaluation holds), compare, time; ``warnings`` grows as it goes."""
        from ..measure.memory import peak_rss_mb

        ctx = self.ctx
        report = self.shared_report if self.shared_report is not None else self.evaluate(session, bs)
        path = reference_path(ctx.workdir, self.name)
        if ctx.comp.is_reference and report.logits is not None and not path.exists():
            save_logits(path, report.logits)
        if self.cross_fields is None and report.logits is not None:
            self.cross_fields = self.cross.check(self.name, report.logits)
        cross, cross_note = self.cross_fields or (None, None)
        if cross_note:
            warnings.append(cross_note)
        quality = row_quality(report, ctx.comp.is_reference, self.name, self.reference.note, self.pick,
                              self.reference.logits)
        warnings += quality.notes
        stats, stability = self.time(session, bs, meter)
        extras, notes = row_extras(session, stats, bs, meter_note)
        warnings += notes + stability_notes(stability)
        return ctx.rows.row(self.name, bs, "ok", warnings=warnings, peak_rss_mb=round(peak_rss_mb(), 1),
                            gpu_peak_mb=_ask(session, "gpu_peak_mb"), accuracy=quality.accuracy,
                            fidelity=quality.fidelity, quality=quality.quality, cross_backend=cross,
                            stability=stability.to_dict(), **self.session_fields, **latency_fields(stats, bs),
                            **extras)

    def time(self, session, bs: int, meter):
        """(latency statistics, stability verdict) of ``bs`` on the first batch of the evaluation data
        (example inputs when it holds fewer samples). While the timing is unstable it is taken again,
        up to the sweep's ``timing_attempts`` in all, each time bound and warmed up again, all under
        one hold of the device lock; the steadiest attempt is kept
        (:func:`benchmark.measure.stability.measure_until_stable`)."""
        from ..measure.latency import measure_latency, timing_lock
        from ..measure.stability import Thresholds, measure_until_stable

        ctx = self.ctx
        feeds = first_batch(ctx.eval_data, bs) if ctx.eval_data is not None else None
        if feeds is None:
            feeds = ctx.model.example_inputs(bs)
        s = ctx.settings
        run_cfg = RunConfig(backend=self.name, device=ctx.device, batch_size=bs, threads=ctx.threads,
                            warmup_iters=s["warmup_iters"], warmup_s=s["warmup_s"], min_iters=s["min_iters"],
                            min_duration_s=s["min_duration_s"], max_iters=s["max_iters"],
                            eval_samples=s["eval_samples"])
        ctx.out.step(f"timing {self.name} batch {bs} ({ctx.comp.name})")
        thresholds = Thresholds(max_attempts=int(s.get("timing_attempts", 3)))

        def again(attempt: int, verdict) -> None:  # a new step: the job's step timeout restarts
            ctx.out.step(f"timing {self.name} batch {bs} again ({verdict.reason}): attempt {attempt + 1} of "
                         f"{thresholds.max_attempts} ({ctx.comp.name})")

        with timing_lock(ctx.device):
            return measure_until_stable(
                lambda: measure_latency(session, feeds, run_cfg, ctx.device, meter=meter, lock=False,
                                        progress=functools.partial(self.timing_progress, bs)),
                thresholds, threads=ctx.threads, on_retry=again)

    def timing_progress(self, bs: int, message: str, fraction: float | None) -> None:
        self.ctx.out.progress(f"{message} {self.name} batch {bs} ({self.ctx.comp.name})", fraction)

    def close(self, session, meter) -> list[str]:
        """Close the meter, then the session; notes for what failed (neither stops the other)."""
        notes = []
        self.ctx.out.step(f"closing the {self.name} session")
        if meter is not None:
            try:
                meter.close()
            except Exception as exc:  # NVML shutdown: must not skip closing the session
                notes.append(f"closing the GPU energy meter failed: {internal_error(exc)}")
        try:
            session.close()
        except Exception as exc:  # the rows stand; the next backends still run
            notes.append(f"closing the {self.name} session failed: {internal_error(exc)}")
        return notes

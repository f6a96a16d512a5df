"""The job's child process: build one variant, then measure it on each backend of its runs.

:func:`variant_job` is the target :func:`benchmark.jobs.run_isolated` spawns
(``"benchmark.sweep.child:variant_job"``); it reports through ``emit``: ``checked`` (the model
and data load), ``variant`` (what the build did), ``step`` / ``progress``, ``run_started`` (the
runs a crash would fail) and one ``result`` per row.
"""
from __future__ import annotations

from .backend_run import BackendRun
from .quality import CrossBackend, MetricPick
from .variant import build_variant_context

#: The ``run_isolated`` target of a sweep's jobs.
JOB_TARGET = "benchmark.sweep.child:variant_job"


def variant_job(payload: dict, emit) -> dict:
    """Child entry: build one variant and measure it on each planned run (see :mod:`benchmark.sweep`)."""
    ctx = build_variant_context(payload, emit)
    groups: dict[tuple[str, str], list[dict]] = {}  # (backend, variant name with its runtime settings)
    for run in payload["runs"]:
        groups.setdefault((run["backend"], run.get("variant") or ctx.comp.name), []).append(run)
    cross = CrossBackend(ctx.comp.precision)
    outputs = getattr(ctx.model, "outputs", None) or []
    pick = MetricPick(ctx.settings, outputs[0].name if outputs else "")
    for (name, variant), runs in groups.items():
        sub = ctx.with_runtime(variant, runs[0].get("runtime") or {})
        BackendRun(sub, name, runs, cross, pick).measure()
        ctx.memory_profile = sub.memory_profile  # estimated once per job: the next group's context copies it
    return {"variant": ctx.comp.name}

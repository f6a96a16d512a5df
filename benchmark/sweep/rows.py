"""Result rows of a sweep: one factory for every status (ok, failed, skipped, pending), the
fields of a timed row, and the notes a row carries about compression steps that did nothing."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import CompressionConfig
from ..results import MAX_STORED_SAMPLES, RunResult

#: Facts about a variant for ONE sample that every row of the variant repeats.
SIZE_KEYS = ("params", "macs", "flops", "size_bytes", "sparsity")
#: Statuses the factory makes (``running`` / ``cancelled`` are set by the store; ``interrupted``: lost
#: with the machine that ran it).
ROW_STATUSES = ("ok", "failed", "skipped", "pending", "interrupted")
#: Precision steps a backend may apply itself (see ``Session.applies_precision``).
PRECISION_STEPS = ("fp16", "bf16", "int8-dynamic", "int8-static", "mixed")

RSS_NOT_RESET = ("peak RSS is the job process's peak since it started: the kernel refused to reset it "
                 "(/proc/self/clear_refs), so it may come from an earlier run")

#: What a requested compression step that changed nothing means for the row, by step name.
_NOOP_TEXT = {
    "prune-structured": "prune-structured removed nothing: this row is the unpruned model",
    "prune-unstructured": "prune-unstructured zeroed no weight: this row is the unpruned model",
    "lowrank": "lowrank factorized nothing: this row is the undecomposed model",
    "distill": "distill changed nothing: this row is the student before fine-tuning",
    "fp16": "fp16 converted nothing: this row runs the model in FP32",
    "bf16": "bf16 converted nothing: this row runs the model in FP32",
    "int8-dynamic": "int8-dynamic quantized nothing: this row is the unquantized model",
    "int8-static": "int8-static quantized nothing: this row is the unquantized model",
    "mixed": "mixed converted nothing: this row is the unconverted model",
}


@dataclass
class RowFactory:
    """Every row of one variant comes from here: the fields all its rows share (model, variant,
    compression asked for and done, size facts, environment), plus each row's own."""

    model: str
    compression: CompressionConfig
    device: str
    records: list[dict[str, Any]] = field(default_factory=list)
    compressed_as_asked: bool | None = None
    size: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] | None = None
    sweep_id: int | None = None
    variant: str | None = None  # the rows' variant name when it is not the compression's (runtime settings)
    runtime: dict[str, Any] | None = None  # the runtime settings every row of this factory ran with

    @classmethod
    def from_info(cls, model: str, compression: CompressionConfig, device: str, info: dict[str, Any],
                  sweep_id: int | None = None) -> "RowFactory":
        """A factory from what a job's child reported about its variant (``variant`` event)."""
        return cls(model, compression, device, records=list(info.get("compression") or []),
                   compressed_as_asked=info.get("compressed_as_asked"),
                   size={k: info.get(k) for k in SIZE_KEYS}, sweep_id=sweep_id)

    def row(self, backend: str, batch_size: int, status: str, *, error: str | None = None,
            warnings: list[str] | tuple[str, ...] = (), variant: str | None = None, **fields: Any) -> RunResult:
        """One row; ``fields`` are the row's own (latency, accuracy, ...) and may override the shared
        ``env``, ``compressed_as_asked`` and ``runtime``; ``variant`` names a run with runtime settings
        in its name (default: the factory's, else the compression's name)."""
        if status not in ROW_STATUSES:
            raise ValueError(f"a sweep row is one of {', '.join(ROW_STATUSES)}; got {status!r}")
        c = self.compression
        fields.setdefault("env", self.env)
        fields.setdefault("compressed_as_asked", self.compressed_as_asked)
        if self.runtime:
            fields.setdefault("runtime", dict(self.runtime))
        if status == "failed":
            error = error or "failed"
        return RunResult(
            model=self.model, variant=variant or self.variant or c.name, backend=backend, batch_size=int(batch_size), device=self.device,
            precision=c.precision, prune_ratio=c.prune_ratio, prune_kind=c.prune_kind if c.prune_ratio > 0 else None,
            config=dataclasses.asdict(c), compression=list(self.records), sweep_id=self.sweep_id, status=status,
            error=error, warnings=list(warnings), **{k: self.size.get(k) for k in SIZE_KEYS}, **fields,
        )


def stored_samples(samples_ms, limit: int = MAX_STORED_SAMPLES) -> list[float]:
    """The latency samples kept on a row: all of them up to ``limit``, else ``limit`` evenly spaced
    ones in time order (first and last included). Statistics are computed from all samples before
    this; only the stored distribution is thinned."""
    samples = list(samples_ms)
    if len(samples) <= limit:
        return [float(s) for s in samples]
    import numpy as np

    idx = np.linspace(0, len(samples) - 1, int(limit)).round().astype(int)
    return [float(samples[i]) for i in idx]


def latency_fields(stats, batch_size: int) -> dict[str, Any]:
    """``latency_ms``, ``latency_samples_ms``, ``throughput_sps`` and the timed interval of a row."""
    lat = stats.to_dict(samples=False)
    latency = {k: lat.get(f"{k}_ms") for k in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")}
    latency["cv"] = lat.get("cv")
    latency["iterations"] = lat.get("iterations")
    return {"latency_ms": latency, "latency_samples_ms": stored_samples(stats.samples_ms),
            "throughput_sps": stats.throughput_sps(batch_size), "started_at": stats.started_at,
            "finished_at": stats.finished_at}


def row_extras(session, stats, batch_size: int, meter_note: str) -> tuple[dict[str, Any], list[str]]:
    """A timed row's build time and GPU energy fields, and the notes that go with them."""
    notes: list[str] = []
    build = session.build() if hasattr(session, "build") else None  # plugin sessions may not derive from Session
    extras: dict[str, Any] = {"build_time_s": None if build is None else build.get("build_time_s"),
                              "build_cached": None if build is None else build.get("cached")}
    reading = stats.energy
    extras["energy"] = None if reading is None else reading.for_run(stats.iterations, batch_size)
    note = stats.energy_note or (reading.note if reading is not None else meter_note)
    if note:
        notes.append(note)
    return extras, notes


def unapplied_steps(comp: CompressionConfig, records) -> list[str]:
    """Steps ``comp`` asks for whose every record says ``changed=False`` (they did nothing)."""
    from ..compress import plan_steps

    changed: dict[str, bool] = {}
    for rec in records:
        method = rec.method if hasattr(rec, "method") else rec.get("method")
        flag = rec.changed if hasattr(rec, "changed") else rec.get("changed")
        changed[method] = changed.get(method, False) or bool(flag)
    return [s for s in plan_steps(comp) if s in changed and not changed[s]]


def noop_warning(step: str) -> str:
    return _NOOP_TEXT.get(step, f"{step} changed nothing: this row is the model without it")


def stability_notes(stability) -> list[str]:
    """The row's warning when its timing stayed unstable on the last attempt (a ``Stability``)."""
    if not stability.unstable:
        return []
    tries = f"{stability.attempts} timings" if stability.attempts > 1 else "one timing"
    return [f"unstable timing after {tries}: {stability.reason}; this p50 may reflect other work on the machine"]


def refresh_speedups(store, sweep_id: int | None) -> int:
    """Store ``speedup_vs_fp32`` on every ok row of the sweep whose value changed (a row whose FP32
    reference arrives later gets it then); returns how many rows were stored again."""
    from ..measure.derived import fill_speedups

    if sweep_id is None:
        return 0
    changed = fill_speedups(store.get_results(sweep_id, statuses=("ok",)))
    for row in changed:
        store.add_result(row)
    return len(changed)

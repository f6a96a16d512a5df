"""One result row per model x variant x backend x batch size.

Conventions (also shown in the dashboard):

- ``latency_ms``: wall time of one ``session.run`` on one batch, inputs prepared once, after
  warm-up; statistics over the timed iterations (``perf_counter_ns`` on CPU, CUDA events on GPU).
  ``cv`` = std / mean, all computed from every timed iteration. ``latency_samples_ms`` holds the
  timed iterations for distributions: all of them up to :data:`MAX_STORED_SAMPLES`, beyond that an
  evenly spaced subsample (in time order) of that many; ``latency_ms.iterations`` is the full count.
- ``throughput_sps`` = batch_size / mean latency, in samples per second.
- ``params``, ``macs``, ``flops`` (= 2 x MACs), ``size_bytes`` and ``sparsity`` describe the
  variant for ONE sample (batch 1); the same values appear on every row of that variant.
- ``peak_rss_mb``: peak resident memory (MiB) of the isolated job process during this row's window:
  from just before its backend session was prepared (the first row of a backend) or just before its
  own evaluation/timing (later rows of the same session) until the row was made. Memory the process
  already held then (the built variant, a session prepared for an earlier row) counts, since it is
  resident. Where the kernel refuses the reset the peak is process-wide and a warning says so.
- ``gpu_peak_mb``: peak GPU memory (MiB) of the run, only where it is known: PyTorch rows on CUDA
  (``torch.cuda.max_memory_allocated``), TensorRT rows (the engine's device memory, when the session
  reports it). ONNX Runtime allocates outside PyTorch's allocator, so its rows hold None.
- ``build_time_s``: seconds the backend took to build what the row ran on: the TensorRT engine
  of its batch size (``tensorrt``) or the compiled module (``torch-tensorrt``); never part of the
  latency. For an engine loaded from the engine cache (``build_cached`` True) it is the build time
  recorded when the engine was built. None where nothing is built (PyTorch eager, ONNX Runtime).
- ``energy`` (CUDA rows with NVML, :mod:`benchmark.measure.energy`): the GPU board's energy over
  the timed iterations: ``{method, interval_s, energy_j, mean_power_w, joules_per_batch,
  joules_per_sample, power_samples, gpu, note}``; None where it was not measured (the row's
  warnings say why).
- ``accuracy``: ``{top1, top5, n}`` on labelled data (fractions in [0, 1]).
- ``fidelity``: agreement with the FP32 unpruned reference variant on the same samples and the
  same backend: ``{top1_agreement, cosine, max_abs_err, mean_abs_err, rel_error}`` (``rel_error``:
  mean over samples of ``||output - reference|| / ||reference||``; absent on older rows).
- ``cross_backend``: this variant's first-output logits on this backend compared element-wise with
  those of the first backend (in the sweep's order) whose evaluation of the same variant produced
  outputs, on the same evaluation samples:
  ``{reference_backend, passed, worst_max_abs_err, worst_max_rel_err, atol, rtol}``; None on the
  reference backend's own rows and where nothing was compared. An element mismatches when its
  absolute error exceeds ``atol`` **and** its relative error exceeds ``rtol``
  (:mod:`benchmark.measure.compare`); ``worst_max_rel_err`` is over elements whose reference is
  not 0. Tolerances: ``atol = rtol = 1e-3`` for fp32 variants,
  ``1e-2`` for fp16, bf16, int8-dynamic, int8-static and mixed (:data:`CROSS_BACKEND_TOLERANCES`).
- ``quality`` (:mod:`benchmark.measure.quality`): the row's one quality number, with a metric
  chosen from the model's outputs or asked for: ``{metric, value, higher_is_better, reference, n}``
  (``metric``: accuracy, top1_agreement, position_agreement, cosine or rel_error; ``reference``:
  the FP32 reference's value of the same metric; an optional ``why`` says why the metric was chosen).
  The drop in points is ``100 x (reference -
  value)``, sign flipped for lower-is-better metrics. None on rows measured before it existed.
- ``speedup_vs_fp32`` (:mod:`benchmark.measure.derived`): FP32 p50 latency / this row's p50 on the
  same backend, device and batch size in the same sweep; None without an FP32 unpruned row.
- ``stability`` (:mod:`benchmark.measure.stability`): whether the timing is trustworthy:
  ``{unstable, reasons, cv, p99_over_p50, min_over_p50, other_cpu_cores, loadavg_1m, cores,
  attempts, attempts_p50_ms, attempts_cv, attempts_reasons, thresholds}``; ``attempts`` > 1 when the
  run was timed again because it was unstable (``attempts_reasons``: each attempt's failed checks).
  None where it was not checked.
- ``compressed_as_asked``: False when a compression step the row's config asks for changed nothing
  (its record says ``changed=False``): the row keeps the requested config, but measures the model
  without that step, and its warnings say which step did nothing (TensorRT rows whose engine was
  built at the asked precision from the FP32 graph are not flagged for a no-op precision step).
  None when unknown.
- ``started_at`` / ``finished_at``: the timed interval (ISO 8601, UTC).
- ``target``: where the row ran when a sweep spans machines (``--executor ray``): ``node=<Ray node
  id>`` or ``resource=<Ray resource>``, part of the row's key, so the same variant on two machines
  is two rows; ``""`` for rows measured on the machine that ran the sweep. The machine itself is in
  ``env`` (``hostname``, CPU, GPU, versions; ``ray_node`` with the Ray node's id and address).
- Recommendation rows (:mod:`benchmark.recommend`): ``latency_ms`` also holds ``p50_ci_low`` /
  ``p50_ci_high`` (a Student-t interval of the median from ``repeats`` interleaved repeats) and
  ``significance`` compares the row with FP32 on the same backend from those paired repeats:
  ``{speedup_ci_low, speedup_ci_high, level, repeats, verdict, method}`` with ``verdict`` one of
  ``faster``, ``slower``, ``no significant difference``; None elsewhere.
- ``achieved_gmacs_per_s`` = ``macs`` (per sample) x batch size / p50 latency, in GMAC/s;
  ``peak_fraction``: that over this device's GEMM peak of the row's precision
  (:mod:`benchmark.measure.roofline`, ``env.peaks``; above 1 is possible: the peak is one GEMM shape).
  ``explanations``: measured explanations of the outcome (:func:`benchmark.explain.explain_results`),
  ``[{topic, text, numbers}]``. All three are filled when the sweep ends; None before, and where the
  numbers are missing.
- ``runtime``: the runtime settings the row's backend honoured (:mod:`benchmark.sweep.runtime`),
  e.g. ``{ort_graph_opt_level, ort_inter_op_threads, ort_execution_mode}``; settings that vary
  within a sweep are also in the variant's name (``fp32@ort-opt=basic``).

A value that was not measured is ``None`` (JSON ``null``), never a made-up number.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: Row statuses. ``pending``/``running`` rows are not finished; ``cancelled`` ones never will be;
#: ``interrupted`` rows were lost with the machine that ran them (a resumed sweep runs them again).
STATUSES = ("ok", "failed", "skipped", "pending", "running", "cancelled", "interrupted")
#: Statuses of rows that need no further work (a resumed sweep does not rerun them).
FINISHED_STATUSES = ("ok", "failed", "skipped")

LATENCY_KEYS = ("mean", "std", "min", "p50", "p90", "p95", "p99", "max", "cv", "iterations")
ACCURACY_KEYS = ("top1", "top5", "n")
FIDELITY_KEYS = ("top1_agreement", "cosine", "max_abs_err", "mean_abs_err", "rel_error")
QUALITY_KEYS = ("metric", "value", "higher_is_better", "reference", "n", "why")
ENERGY_KEYS = ("mean_power_w", "joules_per_sample", "joules_per_batch", "method")
CROSS_BACKEND_KEYS = ("reference_backend", "passed", "worst_max_abs_err", "worst_max_rel_err", "atol", "rtol")
#: Fewer calibration samples than this and a static INT8 row carries a warning (the activation
#: ranges of a handful of samples rarely cover what the model sees; tools default to 100-500).
MIN_CALIB_SAMPLES = 64
#: Latency samples kept on a row (statistics are computed from all of them first).
MAX_STORED_SAMPLES = 2000
#: (atol, rtol) of the cross-backend output comparison, by the variant's precision.
CROSS_BACKEND_TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1e-3), "fp16": (1e-2, 1e-2), "bf16": (1e-2, 1e-2), "int8-dynamic": (1e-2, 1e-2),
    "int8-static": (1e-2, 1e-2), "mixed": (1e-2, 1e-2),
}


def now_iso() -> str:
    """The current time as ISO 8601 UTC with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def to_iso(value: Any) -> str | None:
    """Normalise a timestamp (ISO string, datetime, or UNIX seconds) to ISO 8601 UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), timezone.utc).isoformat(timespec="microseconds")
    raise TypeError(f"cannot read a timestamp from {type(value).__name__}")


def parse_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def run_key(variant: str, backend: str, batch_size: int, target: str = "") -> str:
    """The identity of a row inside its sweep (used to resume a sweep); ``target`` (where the row
    runs, ``""`` on the sweep's own machine) is appended when set."""
    key = f"{variant}|{backend}|{int(batch_size)}"
    return f"{key}|{target}" if target else key


def jsonable(value: Any) -> Any:
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/Inf to None, tuples to lists."""
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)  # plain str: subclasses (torch's TorchVersion) would drag their module along
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return jsonable(item())
    tolist = getattr(value, "tolist", None)  # numpy array
    if callable(tolist):
        return jsonable(tolist())
    if hasattr(value, "__fspath__"):
        return str(value)
    return str(value)


@dataclass
class RunResult:
    """One measured (or failed / skipped / pending) combination of variant, backend and batch size."""

    model: str
    variant: str
    backend: str
    batch_size: int
    device: str = "cpu"
    precision: str = "fp32"
    prune_ratio: float = 0.0
    prune_kind: str | None = None
    providers: list[str] = field(default_factory=list)
    threads: int | None = None
    status: str = "pending"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    latency_ms: dict[str, float | int | None] | None = None
    latency_samples_ms: list[float] | None = None
    throughput_sps: float | None = None
    peak_rss_mb: float | None = None
    gpu_peak_mb: float | None = None
    build_time_s: float | None = None
    build_cached: bool | None = None
    energy: dict[str, Any] | None = None
    size_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    flops: int | None = None
    sparsity: float | None = None
    accuracy: dict[str, float | int | None] | None = None
    fidelity: dict[str, Any] | None = None
    cross_backend: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    speedup_vs_fp32: float | None = None
    stability: dict[str, Any] | None = None
    compressed_as_asked: bool | None = None
    compression: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] | None = None
    env: dict[str, Any] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    created_at: str | None = None
    id: int | None = None
    sweep_id: int | None = None
    # many machines (Ray executor): where the row ran, part of its key
    target: str = ""
    # --- recommendation: confidence intervals from interleaved repeats (benchmark.recommend) ---
    significance: dict[str, Any] | None = None
    # --- explain the numbers: roofline fraction, measured explanations, runtime settings ---
    achieved_gmacs_per_s: float | None = None
    peak_fraction: float | None = None
    explanations: list[dict[str, Any]] | None = None
    runtime: dict[str, Any] | None = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}; got {self.status!r}")
        self.batch_size = int(self.batch_size)
        self.started_at = to_iso(self.started_at)
        self.finished_at = to_iso(self.finished_at)
        if self.created_at is None:
            self.created_at = now_iso()

    # --- identity ---------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return run_key(self.variant, self.backend, self.batch_size, self.target)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    # --- serialisation ----------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """A JSON-safe nested dict (``json.dumps`` works on it; missing values are ``None``)."""
        return jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), allow_nan=False)

    @classmethod
    def from_json(cls, data: dict[str, Any] | str) -> "RunResult":
        if isinstance(data, str):
            data = json.loads(data)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_row(self) -> dict[str, Any]:
        """A flat dict for DataFrames: ``latency_ms.p50`` -> ``latency_p50_ms``, ``accuracy.top1`` ->
        ``accuracy_top1``, ``fidelity.cosine`` -> ``fidelity_cosine``, ``cross_backend.passed`` ->
        ``cross_backend_passed``, ``energy.mean_power_w`` -> ``energy_mean_power_w``; lists become strings."""
        data = self.to_json()
        row: dict[str, Any] = {}
        for key in ("id", "sweep_id", "model", "variant", "precision", "prune_ratio", "prune_kind",
                    "backend", "device", "batch_size", "threads", "status", "error"):
            row[key] = data[key]
        row["providers"] = ",".join(data["providers"] or [])
        row["warnings"] = "; ".join(data["warnings"] or [])
        lat = data["latency_ms"] or {}
        for k in LATENCY_KEYS:
            if k == "cv":
                row["latency_cv"] = lat.get(k)
            elif k == "iterations":
                row["latency_iterations"] = lat.get(k)
            else:
                row[f"latency_{k}_ms"] = lat.get(k)
        for key in ("throughput_sps", "peak_rss_mb", "gpu_peak_mb", "build_time_s", "build_cached", "size_bytes",
                    "params", "macs", "flops", "sparsity"):
            row[key] = data[key]
        energy = data["energy"] or {}
        for k in ENERGY_KEYS:
            row[f"energy_{k}"] = energy.get(k)
        acc = data["accuracy"] or {}
        for k in ACCURACY_KEYS:
            row[f"accuracy_{k}"] = acc.get(k)
        fid = data["fidelity"] or {}
        for k in FIDELITY_KEYS:
            row[f"fidelity_{k}"] = fid.get(k)
        cross = data["cross_backend"] or {}
        for k in CROSS_BACKEND_KEYS:
            row["cross_backend_reference" if k == "reference_backend" else f"cross_backend_{k}"] = cross.get(k)
        q = data["quality"] or {}
        for k in QUALITY_KEYS:
            row[f"quality_{k}"] = q.get(k)
        row["speedup_vs_fp32"] = data["speedup_vs_fp32"]
        stab = data["stability"]
        row["unstable"] = None if stab is None else bool(stab.get("unstable"))
        row["stability_reason"] = None if stab is None else "; ".join(stab.get("reasons") or [])
        row["timing_attempts"] = None if stab is None else stab.get("attempts")
        row.update(calibration_summary(data["compression"], data["config"]))
        row.update(distill_summary(data["compression"]))
        row["compressed_as_asked"] = data["compressed_as_asked"]
        row["compression"] = "; ".join(str(r.get("summary", "")) for r in data["compression"] or [])
        for key in ("started_at", "finished_at", "created_at"):
            row[key] = data[key]
        # --- recommendation: confidence intervals from interleaved repeats ---
        row["latency_p50_ci_low_ms"] = lat.get("p50_ci_low")
        row["latency_p50_ci_high_ms"] = lat.get("p50_ci_high")
        sig = data.get("significance") or {}
        row["speedup_ci_low"] = sig.get("speedup_ci_low")
        row["speedup_ci_high"] = sig.get("speedup_ci_high")
        row["significance"] = sig.get("verdict")
        env = data["env"] or {}
        for column, key in (("env_cpu", "cpu_model"), ("env_gpu", "gpu_name"), ("env_threads", "threads"),
                            ("env_git_revision", "git_revision")):
            value = env.get(key)
            row[column] = json.dumps(value) if isinstance(value, (dict, list)) else value
        # many machines: where the row ran (its target) and the machine's host name
        row["target"] = data["target"]
        row["env_host"] = env.get("hostname")
        row.update(explain_columns(data))
        return row


def explain_columns(data: dict[str, Any]) -> dict[str, Any]:
    """The flat columns of a row's roofline fraction, explanations and runtime settings."""
    from .naming import describe_runtime

    texts = [str(e.get("text", "")) for e in data.get("explanations") or [] if isinstance(e, dict)]
    return {"achieved_gmacs_per_s": data.get("achieved_gmacs_per_s"), "peak_fraction": data.get("peak_fraction"),
            "explanation": " ".join(t for t in texts if t) or None,
            "runtime": describe_runtime(data.get("runtime")) or None}


def calibration_summary(compression: list[dict[str, Any]] | None, config: dict[str, Any] | None) -> dict[str, Any]:
    """What static INT8 calibration really used, from a row's compression records and config:
    ``{calib_samples_requested, calib_samples_used, int8_format, int8_format_reason}`` (None where
    no step calibrated: fp32, fp16, dynamic INT8, or an ONNX side that was not built)."""
    out: dict[str, Any] = {"calib_samples_requested": None, "calib_samples_used": None, "int8_format": None,
                           "int8_format_reason": None}
    for record in compression or []:
        onnx = ((record or {}).get("details") or {}).get("onnx") or {}
        calibration = onnx.get("calibration") if isinstance(onnx, dict) else None
        if isinstance(onnx, dict) and onnx.get("int8_format"):
            out["int8_format"] = onnx.get("int8_format")
            out["int8_format_reason"] = onnx.get("int8_format_reason")
        if isinstance(calibration, dict) and calibration.get("samples") is not None:
            out["calib_samples_used"] = int(calibration["samples"])
            requested = (config or {}).get("calib_samples")
            out["calib_samples_requested"] = None if requested is None else int(requested)
    return out


def distill_summary(compression: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What distillation recovered, from a row's compression records: ``{distill_metric,
    distill_before, distill_after, distill_teacher}`` (the metric the output kind chose, the
    student's value before and after training and the teacher's own; None where no step distilled)."""
    out: dict[str, Any] = {"distill_metric": None, "distill_before": None, "distill_after": None,
                           "distill_teacher": None}
    for record in compression or []:
        if (record or {}).get("method") == "distill" and record.get("changed"):
            d = record.get("details") or {}
            out.update(distill_metric=d.get("metric"), distill_before=d.get("metric_before"),
                       distill_after=d.get("metric_after"), distill_teacher=d.get("teacher_metric"))
    return out


def calibration_warning(summary: dict[str, Any]) -> str | None:
    """One line when calibration used fewer samples than asked or fewer than :data:`MIN_CALIB_SAMPLES`."""
    def number(value: Any) -> int | None:
        return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else int(value)

    used, asked = number(summary.get("calib_samples_used")), number(summary.get("calib_samples_requested"))
    if used is None:
        return None
    parts = []
    if asked is not None and used < asked:
        parts.append(f"calibrated on {used} of the {asked} samples asked for (the calibration data holds no more)")
    if used < MIN_CALIB_SAMPLES:
        parts.append(f"{used} calibration samples is below {MIN_CALIB_SAMPLES}: the INT8 ranges may not cover "
                     "the data the model sees; give more data")
    return "; ".join(parts) or None


def results_to_frame(results: list[RunResult]):
    """A pandas DataFrame with one ``to_row()`` per result (columns present even when empty)."""
    import pandas as pd

    rows = [r.to_row() for r in results]
    if not rows:
        columns = list(RunResult(model="", variant="", backend="", batch_size=1).to_row())
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows)

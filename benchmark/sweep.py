"""Sweeps: plan the cross product, run each variant in an isolated job, store every row at once.

A sweep is the cross product *compressions x backends x batch sizes* for one model
(:class:`~benchmark.config.SweepConfig`). :func:`plan_sweep` groups it into :class:`Job` s, one per
compression: the job's child process loads the model, builds the variant **once**, counts its
FLOPs, and measures it on every backend x batch size of the job.

Inside the child, for each backend: ``supports`` (a refusal becomes a ``skipped`` row with the
reason) -> batch sizes the model or data cannot run become ``skipped`` rows -> ``prepare`` ->
accuracy on the evaluation split (labels) and fidelity to the FP32 reference (the unpruned FP32
variant's outputs on the same samples on the same backend, computed once per sweep and cached in
the sweep's work folder) -> cross-backend check -> latency -> peak memory -> one
:class:`~benchmark.results.RunResult`, sent to the parent and committed to the store at once.

Measurement conventions: latency settings come from the sweep (``min_duration_s``,
``min_iters``; warm-up is ``min(5, min_iters)`` iterations and ``min(0.2, min_duration_s)``
seconds unless the config says otherwise); statistics use every timed iteration, the row stores
at most :data:`~benchmark.results.MAX_STORED_SAMPLES` of them (evenly spaced). Accuracy uses the
first ``eval_samples`` (default 512) samples of the evaluation split, evaluated once per backend at
its largest batch size (if that fails, the rows say so and each run evaluates at its own batch
size); a model without a dataset gets fidelity on 64 random inputs (said in the row's warnings). A
user ``.npz`` file is split: its first 20 % calibrate/train, the rest is evaluated
(:func:`benchmark.data.split_npz`).

Row honesty:

- Batch sizes: a model whose own input declares a numeric dim 0 (an ONNX graph input ``[1, 4]``)
  runs that batch only; other batch sizes are ``skipped`` ("model has a fixed batch of 1 ...").
  With per-feed data (arrays one rank above the input) each timed iteration runs one feed as
  given, so the feed's leading dim is the batch (throughput = that / mean latency) and other batch
  sizes are ``skipped`` with the reason.
- A compression step the config asks for that changed nothing (its record says ``changed=False``)
  keeps the requested config on the row, sets ``compressed_as_asked=False`` and adds a warning
  ("int8-dynamic quantized nothing: this row is the unquantized model").
- Cross-backend agreement: the first backend of the job whose evaluation produced outputs is the
  reference; every later backend's first output on the same evaluation samples is compared with it
  element-wise (:func:`cross_backend_check`) and stored in ``cross_backend``.
- Memory: :func:`~benchmark.measure.memory.reset_peak_rss` starts a new peak-RSS window just
  before a backend's session is prepared (its first run) and before each later run's evaluation and
  timing, so ``peak_rss_mb`` is that run's peak, not the job's; ``gpu_peak_mb`` is filled only where
  it is seen (PyTorch rows; TensorRT's engine memory).
- Errors: any exception of a backend while preparing, evaluating or timing fails only the rows it
  concerns (a :class:`BenchmarkError` with its message, anything else as "internal error: ...");
  the job's other runs go on.

Reliability:

- A crash, OOM kill or hang of one job fails only the run that was in progress (``status=failed``
  with the cause); the job's remaining runs are retried in a fresh child.
- Every row is committed as soon as it exists; a sweep whose runner died becomes ``interrupted``
  (:meth:`Store.mark_interrupted`) and :func:`run_sweep` with ``resume_sweep_id`` runs only the
  rows that are missing.
- Jobs wait their turn in the per-device queue (:class:`~benchmark.jobs.DeviceQueue`); while
  waiting the sweep's status is ``queued`` and its progress says how many sweeps are ahead.
- Cancelling (:func:`cancel_sweep`) kills the running job of that sweep only.
- Resources (:mod:`benchmark.resources`): before a backend session is prepared, each batch size's
  memory is estimated (inputs + outputs + activations + weights) and one that would not fit in the
  available memory is a ``skipped`` row saying both numbers; before the variant is built and
  before each session writes exports/engines, the work folder's free disk space is checked and too
  little fails the variant with the folder and both numbers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import errors as _errors
from .config import CompressionConfig, InputSpec, RunConfig, SweepConfig
from .errors import BenchmarkError, ConfigError, StoreError
from .results import CROSS_BACKEND_TOLERANCES, MAX_STORED_SAMPLES, RunResult, run_key
from .store import Store

Progress = Callable[[str, "float | None"], None]  # (message, overall fraction in [0, 1] or None)

DEFAULT_JOB_TIMEOUT_S = 300.0
DEFAULT_EVAL_SAMPLES = RunConfig.eval_samples if isinstance(RunConfig.eval_samples, int) else 512
RANDOM_EVAL_SAMPLES = 64


# --------------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    """One row to produce: a variant on a backend at a batch size."""

    variant: str
    backend: str
    batch_size: int

    @property
    def key(self) -> str:
        return run_key(self.variant, self.backend, self.batch_size)


@dataclass
class Job:
    """One isolated child process: build ``compression`` once, measure it for each of ``runs``."""

    compression: CompressionConfig
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return self.compression.name

    @property
    def is_reference(self) -> bool:
        return _is_reference(self.compression)


def _is_reference(c: CompressionConfig) -> bool:
    return c.precision == "fp32" and c.prune_ratio == 0 and c.lowrank_ratio == 0 and c.lowrank_energy == 0


def plan_sweep(cfg: SweepConfig) -> list[Job]:
    """The sweep's jobs: one per distinct compression (the FP32 reference first when asked for),
    each with every backend x batch size."""
    jobs: list[Job] = []
    seen: set[str] = set()
    for comp in cfg.compressions():
        if comp.name in seen:
            continue
        seen.add(comp.name)
        runs = [PlannedRun(comp.name, b, int(bs)) for b in cfg.backends for bs in cfg.batch_sizes]
        jobs.append(Job(comp, runs))
    jobs.sort(key=lambda j: 0 if j.is_reference else 1)  # stable: otherwise the config's order
    return jobs


def plan_size(plan: list[Job]) -> int:
    return sum(len(j.runs) for j in plan)


#: Rough costs (seconds, on a 2-core CPU) behind :func:`estimate_duration_s`.
_JOB_START_S = 3.0
_PREPARE_S = 1.0
_BUILD_S = {"fp32": 0.0, "fp16": 1.0, "bf16": 1.0, "int8-dynamic": 3.0, "int8-static": 5.0, "mixed": 6.0}


def estimate_duration_s(plan: list[Job], cfg: SweepConfig | None = None) -> float:
    """A rough wall-time estimate of a plan (for the UI before it starts; not a measurement):
    child start-up and model load per job, build cost by step, and per run session preparation,
    evaluation, warm-up and the timed loop."""
    settings = run_settings(cfg) if cfg is not None else run_settings(SweepConfig(model="x"))
    total = 0.0
    for job in plan:
        c = job.compression
        total += _JOB_START_S + _BUILD_S.get(c.precision, 3.0)
        if c.prune_ratio > 0:
            total += 3.0
        if c.lowrank_ratio > 0 or c.lowrank_energy > 0:
            total += 2.0
        if c.distill and (c.prune_ratio > 0 or c.lowrank_ratio > 0):
            total += 10.0 * max(1, int(c.distill_epochs))
        for _ in job.runs:
            total += _PREPARE_S + 0.5 + float(settings["warmup_s"]) + float(settings["min_duration_s"]) * 1.1
    return round(total, 1)


def run_settings(cfg: SweepConfig) -> dict[str, Any]:
    """Timing settings of a sweep's runs (optional SweepConfig fields fall back to defaults)."""
    min_iters = int(getattr(cfg, "min_iters", 20))
    min_duration_s = float(getattr(cfg, "min_duration_s", 1.0))
    return {
        "threads": int(getattr(cfg, "threads", 0)),
        "min_iters": min_iters,
        "min_duration_s": min_duration_s,
        "warmup_iters": int(getattr(cfg, "warmup_iters", min(5, min_iters))),
        "warmup_s": float(getattr(cfg, "warmup_s", min(0.2, min_duration_s))),
        "max_iters": int(getattr(cfg, "max_iters", max(10000, min_iters))),
        "eval_samples": int(getattr(cfg, "eval_samples", DEFAULT_EVAL_SAMPLES)),
        "cuda_graph": bool(getattr(cfg, "cuda_graph", False)),
    }


def sweep_config_to_dict(cfg: SweepConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def sweep_config_from_dict(data: dict[str, Any]) -> SweepConfig:
    """Rebuild a SweepConfig from its dict (unknown keys are ignored; lists become tuples)."""
    names = {f.name for f in dataclasses.fields(SweepConfig)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return SweepConfig(**kwargs)


def absolute_paths(cfg: SweepConfig) -> SweepConfig:
    """``cfg`` with an existing relative model / data path made absolute (jobs run in a scratch folder;
    a stored sweep may be resumed from another folder)."""
    from .data import DATASETS

    changes: dict[str, Any] = {}
    model = str(cfg.model)
    if not model.startswith("sample:") and Path(model).exists() and not Path(model).is_absolute():
        changes["model"] = str(Path(model).resolve())
    data = cfg.data
    if data and data not in DATASETS and Path(data).exists() and not Path(data).is_absolute():
        changes["data"] = str(Path(data).resolve())
    return dataclasses.replace(cfg, **changes) if changes else cfg


def validate_sweep(cfg: SweepConfig, plugins: list[str] | None = None) -> None:
    """Checks the parent can make without loading the model: backends exist (plugins loaded), the
    architecture is a built-in one, the resource environment variables are numbers."""
    from .backends import get_backend
    from .jobs import load_plugins
    from .resources import check_environment

    load_plugins(plugins)
    for name in cfg.backends:
        get_backend(name)
    if getattr(cfg, "arch", None):
        from .models.archs import get_arch

        get_arch(cfg.arch)
    check_environment()
    for spec in cfg.inputs:
        InputSpec.parse(spec)
    if cfg.data and not str(cfg.data).strip():
        raise ConfigError("data must name a built-in dataset or a .npz file; got an empty string")


# --------------------------------------------------------------------------------------------
# the child: one variant, several runs
# --------------------------------------------------------------------------------------------
def _ds_feeds(dataset, batch_size: int) -> dict | None:
    """The first batch of ``dataset`` at ``batch_size`` (None when it holds fewer samples); for
    per-feed data the first feed as given (see :func:`_feed_batch`)."""
    if _per_feed(dataset):
        return next(iter(dataset.batches(1)))[0]
    if len(dataset) < batch_size:
        return None
    import numpy as np

    return {k: np.ascontiguousarray(v[:batch_size]) for k, v in dataset.arrays.items()}


def _per_feed(dataset) -> bool:
    return dataset is not None and any(dataset.feed_axis.get(k, False) for k in dataset.arrays)


def _feed_batch(dataset) -> int:
    """The batch a per-feed dataset's timed feed holds: the leading dim of its first array that has
    one (1 for scalar feeds). Each timed iteration runs one feed as given, so that is the batch the
    throughput is computed with; other batch sizes are skipped (:func:`_batch_skip_reason`)."""
    feeds = next(iter(dataset.batches(1)))[0]
    for arr in feeds.values():
        if getattr(arr, "ndim", 0) >= 1:
            return int(arr.shape[0])
    return 1


def _fixed_batch(model, overridden: set[str]) -> tuple[int, str] | None:
    """(batch, description) when the model only runs one batch size, else None.

    The batch is fixed when an input's dim 0 is a number in the model itself: for ONNX models the
    graph's declared input (whatever ``--input`` overrides say, since ONNX Runtime enforces the
    graph), for PyTorch models the loaded input spec unless the user overrode it (an override such
    as ``x:1x3x32x32`` gives example dims; dim 0 still takes the run's batch size).
    """
    declared = [s for s in model.inputs if s.name not in overridden]
    if model.framework == "onnx" and model.onnx_path is not None:
        import onnx

        from .models.loaders import onnx_io_specs

        with contextlib.suppress(OSError, ValueError):  # read once by the loader already; else keep the specs
            declared, _ = onnx_io_specs(onnx.load(str(model.onnx_path), load_external_data=False))
    for spec in declared:
        if spec.shape and isinstance(spec.shape[0], int):
            dims = "x".join(str(d) for d in spec.shape)
            return int(spec.shape[0]), f"input {spec.name!r} is {dims}"
    return None


def _batch_skip_reason(batch_size: int, fixed: tuple[int, str] | None, eval_data) -> str | None:
    """Why ``batch_size`` cannot be measured for this model/data (None when it can)."""
    if fixed is not None and int(batch_size) != fixed[0]:
        return (f"model has a fixed batch of {fixed[0]} ({fixed[1]}): batch size {batch_size} cannot run; "
                f"export it with a dynamic batch dim to sweep batch sizes")
    if _per_feed(eval_data):
        feed_bs = _feed_batch(eval_data)
        if int(batch_size) != feed_bs:
            return (f"per-feed data: each feed of {eval_data.name} is run as given and holds a batch of {feed_bs}; "
                    f"batch size {batch_size} cannot be built from it (sweep batch size {feed_bs})")
    return None


def _stored_samples(samples_ms, limit: int = MAX_STORED_SAMPLES) -> list[float]:
    """The latency samples kept on a row: all of them up to ``limit``, else ``limit`` evenly spaced
    ones in time order (first and last included). Statistics are computed from all samples before
    this; only the stored distribution is thinned."""
    samples = list(samples_ms)
    if len(samples) <= limit:
        return [float(s) for s in samples]
    import numpy as np

    idx = np.linspace(0, len(samples) - 1, int(limit)).round().astype(int)
    return [float(samples[i]) for i in idx]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


def _internal(exc: BaseException) -> str:
    """The one-line error of a row failed by an exception outside the BenchmarkError tree (a bug;
    an allocation that failed is named as such)."""
    mapped = _errors.memory_error(exc)
    return str(mapped) if mapped is not None else f"internal error: {_one_line(exc)}"


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
_PRECISION_STEPS = ("fp16", "bf16", "int8-dynamic", "int8-static", "mixed")


def unapplied_steps(comp: CompressionConfig, records) -> list[str]:
    """Steps ``comp`` asks for whose every record says ``changed=False`` (they did nothing)."""
    from .compress import plan_steps

    changed: dict[str, bool] = {}
    for rec in records:
        method = rec.method if hasattr(rec, "method") else rec.get("method")
        flag = rec.changed if hasattr(rec, "changed") else rec.get("changed")
        changed[method] = changed.get(method, False) or bool(flag)
    return [s for s in plan_steps(comp) if s in changed and not changed[s]]


def noop_warning(step: str) -> str:
    return _NOOP_TEXT.get(step, f"{step} changed nothing: this row is the model without it")


def cross_backend_check(logits, reference, reference_backend: str, precision: str) -> tuple[dict | None, str | None]:
    """(cross_backend dict, note) comparing first-output ``logits`` with ``reference`` (another
    backend's, same samples); tolerances from :data:`~benchmark.results.CROSS_BACKEND_TOLERANCES`.
    ``worst_max_rel_err`` is over elements whose reference is non-zero."""
    import numpy as np

    from .measure.compare import compare_outputs

    atol, rtol = CROSS_BACKEND_TOLERANCES.get(precision, (1e-2, 1e-2))
    a = logits if isinstance(logits, list) else [logits]
    b = reference if isinstance(reference, list) else [reference]
    if isinstance(logits, list) != isinstance(reference, list) or len(a) != len(b):
        return None, f"outputs not compared with {reference_backend}'s: they were batched differently"
    report = compare_outputs(a, b, atol=atol, rtol=rtol)
    worst_rel = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            return ({"reference_backend": reference_backend, "passed": False, "worst_max_abs_err": None,
                     "worst_max_rel_err": None, "atol": atol, "rtol": rtol},
                    f"outputs differ in shape from {reference_backend}'s: {x.shape} vs {y.shape}")
        nz = y != 0
        if nz.any():
            worst_rel = max(worst_rel, float(np.max(np.abs(x[nz] - y[nz]) / np.abs(y[nz]))))
    result = {"reference_backend": reference_backend, "passed": bool(report.passed),
              "worst_max_abs_err": float(report.worst_max_abs_err), "worst_max_rel_err": worst_rel,
              "atol": atol, "rtol": rtol}
    note = None
    if not report.passed:
        note = (f"outputs differ from {reference_backend}'s beyond atol={atol:g} and rtol={rtol:g}: worst abs err "
                f"{report.worst_max_abs_err:.3g}, worst rel err {worst_rel:.3g}")
    return result, note


def _gpu_peak_for(backend_name: str, info, gpu_peak_mb) -> float | None:
    """GPU peak of a row: PyTorch's allocator peak for pytorch rows, the engine's device memory for
    tensorrt rows (when the session reports it), None otherwise (not seen by PyTorch)."""
    if backend_name == "pytorch":
        return gpu_peak_mb()
    if backend_name == "tensorrt":
        mem = (getattr(info, "options", None) or {}).get("engine_device_memory_bytes")
        return round(float(mem) / 2**20, 1) if mem else None
    return None


def backend_options(backend_name: str, device: str, settings: dict[str, Any]) -> dict[str, Any] | None:
    """Backend options a sweep's settings ask for: CUDA-graph capture for PyTorch on CUDA."""
    if backend_name == "pytorch" and device.startswith("cuda") and settings.get("cuda_graph"):
        return {"cuda_graph": True}
    return None


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


def _save_logits(path: Path, logits) -> None:
    import numpy as np

    chunks = logits if isinstance(logits, list) else [logits]
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, *[np.asarray(c) for c in chunks], is_list=np.array(isinstance(logits, list)))
    os.replace(tmp, path)


def _load_logits(path: Path):
    import numpy as np

    with np.load(path) as data:
        n = len([k for k in data.files if k.startswith("arr_")])
        chunks = [data[f"arr_{i}"] for i in range(n)]
        return chunks if bool(data["is_list"]) else chunks[0]


RSS_NOT_RESET = ("peak RSS is the job process's peak since it started: the kernel refused to reset it "
                 "(/proc/self/clear_refs), so it may come from an earlier run")


def _variant_job(payload: dict, emit) -> dict:
    """Child entry: build one variant and measure it on each planned run (see module docstring)."""
    from .backends import get_backend
    from .compress import CompressContext, build_variant, reference_variant
    from .data import random_dataset, resolve_dataset
    from .measure.accuracy import evaluate, fidelity
    from .measure.energy import nvml_meter
    from .measure.environment import collect_environment
    from .measure.latency import measure_latency
    from .measure.memory import gpu_peak_mb, peak_rss_mb, reset_gpu_peak, reset_peak_rss
    from .models import load_model
    from .resources import (
        activation_profile, available_memory_bytes, check_disk_space, estimate_batch_memory, input_bytes_per_sample,
        memory_skip_reason, model_file_bytes,
    )

    def step(message: str) -> None:
        emit({"type": "step", "message": message})

    def progress(message: str, fraction: float | None = None) -> None:
        emit({"type": "progress", "message": message, "fraction": fraction})

    device = payload["device"]
    settings = payload["settings"]
    workdir = Path(payload["workdir"])
    os.chdir(workdir)  # files libraries drop in the current folder land in the sweep's scratch folder
    threads = int(settings["threads"])
    comp = CompressionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["compression"].items()})

    step(f"loading {payload['model']}")
    overrides = [InputSpec.parse(t) for t in payload["inputs"]]
    model = load_model(payload["model"], inputs=overrides,
                       trust_pickle=bool(payload["trust_pickle"]), arch=payload.get("arch") or None)
    common_warnings: list[str] = []
    eval_data = resolve_dataset(payload["data"], model, "test")
    if eval_data is None:
        n_random = int(settings["eval_samples"]) or RANDOM_EVAL_SAMPLES  # --eval-samples (0 = all: the default)
        eval_data = random_dataset(model.inputs, n_random, name="random")
        common_warnings.append(
            f"no dataset for {model.name}: fidelity measured on {n_random} random inputs, no accuracy"
        )
    elif settings["eval_samples"]:
        eval_data = eval_data.subset(int(settings["eval_samples"]))
    fixed = _fixed_batch(model, {s.name for s in overrides})
    if fixed is not None and not _per_feed(eval_data) and len(eval_data) >= fixed[0] and len(eval_data) % fixed[0]:
        eval_data = eval_data.subset(len(eval_data) - len(eval_data) % fixed[0])  # whole batches only
    emit({"type": "checked", "model": model.name, "eval_samples": len(eval_data),
          "labels": eval_data.has_labels})

    calib = train = None
    if comp.precision in ("int8-static", "mixed"):
        calib = resolve_dataset(payload["data"], model, "calib", warnings=common_warnings)
        if calib is not None:
            calib = calib.subset(comp.calib_samples)
    if comp.distill and (comp.prune_ratio > 0 or comp.lowrank_ratio > 0 or comp.lowrank_energy > 0):
        train = resolve_dataset(payload["data"], model, "train", warnings=common_warnings)
    common_warnings[:] = list(dict.fromkeys(common_warnings))
    timeout_s = payload.get("timeout_s")
    ctx = CompressContext(workdir=workdir, calib_data=calib, train_data=train, eval_data=eval_data,
                          progress=progress, time_budget_s=0.8 * timeout_s if timeout_s else None)
    model_bytes = model_file_bytes(model)
    check_disk_space(workdir, model_bytes, f"building {comp.name}")
    step(f"building {comp.name}")
    variant = build_variant(model, comp, ctx)

    size = {"params": None, "macs": None, "flops": None, "size_bytes": None, "sparsity": None}
    flop_warnings: list[str] = []
    step(f"counting FLOPs of {comp.name}")
    try:
        from .measure.flops import count_model

        report = count_model(variant, batch_size=1)
        for k in size:
            size[k] = getattr(report, k, None)
        flop_warnings += list(getattr(report, "warnings", []) or [])
    except BenchmarkError as exc:
        flop_warnings.append(f"FLOPs/params not counted: {exc}")

    env = collect_environment(threads)
    env["run_settings"] = dict(settings)
    records = [r.to_dict() for r in variant.records]
    noops = unapplied_steps(comp, variant.records)
    base = dict(model=model.name, variant=comp.name, device=device, precision=comp.precision,
                prune_ratio=comp.prune_ratio, prune_kind=comp.prune_kind if comp.prune_ratio > 0 else None,
                compression=records, config=dataclasses.asdict(comp), compressed_as_asked=not noops, **size)
    variant_warnings = common_warnings + [noop_warning(s) for s in noops] + list(variant.warnings) + flop_warnings
    emit({"type": "variant", "info": {**size, "compression": records, "warnings": variant_warnings,
                                      "compressed_as_asked": not noops}})

    runs_by_backend: dict[str, list[dict]] = {}
    for run in payload["runs"]:
        runs_by_backend.setdefault(run["backend"], []).append(run)

    def send(row: RunResult) -> None:
        emit({"type": "result", "row": row.to_json()})

    def send_all(backend_name: str, runs: list[dict], status: str, error: str, warnings: list[str]) -> None:
        for run in runs:
            send(RunResult(**base, backend=backend_name, batch_size=run["batch_size"], status=status, error=error,
                           warnings=list(warnings), env=env))

    profile = None
    weight_bytes = size["size_bytes"] if size["size_bytes"] is not None else model_bytes

    def batch_check(backend_name: str, runs: list[dict]) -> list[dict]:
        """Send a skipped row for each batch size the model or data cannot run; return the others."""
        left = []
        for run in runs:
            reason = _batch_skip_reason(int(run["batch_size"]), fixed, eval_data)
            if reason is None:
                left.append(run)
            else:
                send_all(backend_name, [run], "skipped", reason, variant_warnings)
        return left

    def memory_check(backend_name: str, runs: list[dict]) -> list[dict]:
        """Send a skipped row for each run whose batch would not fit in memory; return the others."""
        nonlocal profile
        if profile is None:
            step(f"estimating activation memory of {model.name}")
            profile = activation_profile(model)
            if profile.note:
                variant_warnings.append(f"{profile.note}; the memory check counted inputs, outputs and weights only")
        available, source = available_memory_bytes(device)
        try:
            per_input = input_bytes_per_sample(model.inputs)
        except BenchmarkError:  # dynamic non-batch dims: the run itself reports them
            return runs
        fitting = []
        for run in runs:
            est = estimate_batch_memory(int(run["batch_size"]), input_bytes_per_sample=per_input,
                                        output_bytes_per_sample=profile.output_bytes,
                                        largest_activation_bytes_per_sample=profile.largest_bytes,
                                        weight_bytes=weight_bytes)
            reason = memory_skip_reason(est, available)
            if reason is None:
                fitting.append(run)
                continue
            notes = [est.breakdown(), f"available memory from {source}"]
            send(RunResult(**base, backend=backend_name, batch_size=est.batch_size, status="skipped", error=reason,
                           warnings=list(variant_warnings) + notes, env=env))
        return fitting

    cross_reference: tuple[str, Any] | None = None  # (backend, first-output logits) of the first backend
    for backend_name, runs in runs_by_backend.items():
        backend = get_backend(backend_name)
        try:
            ok, reason = backend.supports(variant, device)
        except BenchmarkError as exc:
            ok, reason = False, str(exc)
        except Exception as exc:  # a backend bug: this backend's rows fail, the job goes on
            send_all(backend_name, runs, "failed", f"{backend_name}: {_internal(exc)}", variant_warnings)
            continue
        if not ok:
            send_all(backend_name, runs, "skipped", f"{backend_name} on {device}: {reason}", variant_warnings)
            continue
        runs = batch_check(backend_name, runs)
        if runs:
            runs = memory_check(backend_name, runs)
        if not runs:
            continue
        step(f"preparing {backend_name} session for {comp.name}")
        # A crash while preparing (or computing the reference) fails every run of this backend.
        emit({"type": "run_started", "keys": [r["key"] for r in runs]})
        rss_scoped = reset_peak_rss()  # the first run's window: prepare + evaluation + timing
        reset_gpu_peak()
        try:
            check_disk_space(workdir, model_bytes, f"preparing {backend_name} for {comp.name}")
            session = backend.prepare(variant, device=device, threads=threads, workdir=workdir,
                                      options=backend_options(backend_name, device, settings))
        except BenchmarkError as exc:
            send_all(backend_name, runs, "failed", f"preparing {backend_name}: {exc}", variant_warnings)
            continue
        except Exception as exc:
            send_all(backend_name, runs, "failed", f"preparing {backend_name}: {_internal(exc)}", variant_warnings)
            continue
        try:
            info = session.info
            providers, info_threads = list(info.providers), info.threads
            backend_warnings = list(getattr(info, "warnings", []) or [])
            warn_seen = len(backend_warnings)  # later notes (per-batch engines, graph captures) go to their row
            env_run = dict(env, session={"precision": info.precision, "options": info.options})
            row_noops = noops
            if backend_name == "tensorrt" and (info.options or {}).get("trt_precision") not in (None, "fp32"):
                row_noops = [s for s in noops if s not in _PRECISION_STEPS]  # TensorRT applied the precision itself
            dropped = {noop_warning(s) for s in noops if s not in row_noops}
            row_base = dict(base, compressed_as_asked=not row_noops)

            # FP32 reference outputs on this backend (cached per sweep).
            ref_logits, ref_note = None, None
            ref_path = workdir / f"reference-{backend_name}.npz"
            if not _is_reference(comp):
                if ref_path.exists():
                    ref_logits = _load_logits(ref_path)
                else:
                    step(f"computing FP32 reference outputs on {backend_name}")
                    ref_logits, ref_note = _reference_logits(backend, reference_variant(model), eval_data,
                                                             device, threads, workdir, runs, evaluate)
                    if ref_logits is not None:
                        _save_logits(ref_path, ref_logits)

            # Accuracy/fidelity once per backend, at the largest batch size of its runs; if that
            # fails (e.g. a fixed batch dimension), each run evaluates at its own batch size.
            acc_report = None
            eval_notes: list[str] = []
            eval_bs = max(int(r["batch_size"]) for r in runs)
            step(f"evaluating {comp.name} on {backend_name} ({len(eval_data)} samples, batch {eval_bs})")
            try:
                acc_report = evaluate(session, eval_data, eval_bs, None, reference_outputs=ref_logits)
            except BenchmarkError as exc:
                eval_notes.append(f"evaluation at batch {eval_bs} failed: {exc}")
            except Exception as exc:
                eval_notes.append(f"evaluation at batch {eval_bs} failed: {_internal(exc)}")
            cross, cross_note, cross_done = None, None, False
        except Exception as exc:  # BenchmarkError or a bug: nothing of this backend can be measured
            error = str(exc) if isinstance(exc, BenchmarkError) else _internal(exc)
            with contextlib.suppress(Exception):
                session.close()
            send_all(backend_name, runs, "failed", f"{backend_name}: {error}", variant_warnings)
            continue
        meter, meter_note = nvml_meter(device) if device.startswith("cuda") else (None, "")
        try:
            for index, run in enumerate(runs):
                bs = int(run["batch_size"])
                emit({"type": "run_started", "keys": [run["key"]]})
                if index:
                    rss_scoped = reset_peak_rss()  # later runs: their own evaluation + timing
                    reset_gpu_peak()
                warnings = [w for w in variant_warnings if w not in dropped] + backend_warnings + eval_notes
                if not rss_scoped:
                    warnings.append(RSS_NOT_RESET)
                try:
                    if acc_report is None:
                        step(f"evaluating {comp.name} on {backend_name} ({len(eval_data)} samples, batch {bs})")
                        acc_report = evaluate(session, eval_data, bs, None, reference_outputs=ref_logits)
                    if _is_reference(comp) and acc_report.logits is not None and not ref_path.exists():
                        _save_logits(ref_path, acc_report.logits)
                    if not cross_done and acc_report.logits is not None:
                        cross_done = True
                        if cross_reference is None:
                            cross_reference = (backend_name, acc_report.logits)
                        elif cross_reference[0] != backend_name:
                            cross, cross_note = cross_backend_check(acc_report.logits, cross_reference[1],
                                                                    cross_reference[0], comp.precision)
                    if cross_note:
                        warnings.append(cross_note)
                    accuracy = fid = None
                    if acc_report.top1 is not None:
                        accuracy = {"top1": acc_report.top1, "top5": acc_report.top5, "n": acc_report.n_samples}
                    if _is_reference(comp) and acc_report.logits is not None:
                        fid = dict(fidelity(acc_report.logits, acc_report.logits), reference="self",
                                   n=acc_report.n_samples)
                    elif acc_report.cosine is not None or acc_report.top1_agreement is not None:
                        fid = {"top1_agreement": acc_report.top1_agreement, "cosine": acc_report.cosine,
                               "max_abs_err": acc_report.max_abs_err, "mean_abs_err": acc_report.mean_abs_err,
                               "reference": f"fp32 on {backend_name}", "n": acc_report.n_samples}
                    elif ref_note:
                        warnings.append(ref_note)
                    warnings += list(acc_report.warnings)

                    feeds = _ds_feeds(eval_data, bs) if eval_data is not None else None
                    if feeds is None:
                        feeds = model.example_inputs(bs)
                    run_cfg = RunConfig(backend=backend_name, device=device, batch_size=bs, threads=threads,
                                        warmup_iters=settings["warmup_iters"], warmup_s=settings["warmup_s"],
                                        min_iters=settings["min_iters"], min_duration_s=settings["min_duration_s"],
                                        max_iters=settings["max_iters"], eval_samples=settings["eval_samples"])
                    step(f"timing {backend_name} batch {bs} ({comp.name})")
                    stats = measure_latency(session, feeds, run_cfg, device, meter=meter,
                                            progress=lambda m, f, bn=backend_name, b=bs: progress(
                                                f"{m} {bn} batch {b} ({comp.name})", f))
                    extras, extra_notes = row_extras(session, stats, bs, meter_note)
                    warnings += extra_notes
                    lat = stats.to_dict(samples=False)
                    latency = {k: lat.get(f"{k}_ms") for k in ("mean", "std", "min", "p50", "p90", "p95", "p99", "max")}
                    latency["cv"] = lat.get("cv")
                    latency["iterations"] = lat.get("iterations")
                    row = RunResult(
                        **row_base, backend=backend_name, batch_size=bs, status="ok",
                        providers=providers, threads=info_threads, warnings=warnings,
                        latency_ms=latency, latency_samples_ms=_stored_samples(stats.samples_ms),
                        throughput_sps=stats.throughput_sps(bs), peak_rss_mb=round(peak_rss_mb(), 1),
                        gpu_peak_mb=_gpu_peak_for(backend_name, info, gpu_peak_mb), accuracy=accuracy, fidelity=fid,
                        cross_backend=cross, env=env_run, started_at=stats.started_at, finished_at=stats.finished_at,
                        **extras,
                    )
                except Exception as exc:  # one run fails; the job's other runs go on
                    error = str(exc) if isinstance(exc, BenchmarkError) else _internal(exc)
                    row = RunResult(**row_base, backend=backend_name, batch_size=bs, status="failed", error=error,
                                    providers=providers, threads=info_threads, warnings=warnings,
                                    peak_rss_mb=round(peak_rss_mb(), 1), cross_backend=cross, env=env_run)
                session_notes = info.warnings  # what the session noted while this row ran goes on it
                row.warnings += [w for w in session_notes[warn_seen:] if w not in row.warnings]
                warn_seen = len(session_notes)
                send(row)
        finally:
            if meter is not None:
                try:
                    meter.close()
                except Exception as exc:  # NVML shutdown: must not skip closing the session
                    variant_warnings.append(f"closing the GPU energy meter failed: {_internal(exc)}")
            try:
                session.close()
            except Exception as exc:  # closing must not lose the rows of the next backends
                variant_warnings.append(f"closing the {backend_name} session failed: {_internal(exc)}")
    return {"variant": comp.name}


def _reference_logits(backend, ref_variant, eval_data, device, threads, workdir, runs, evaluate):
    """(logits, note): the FP32 reference's first-output logits on ``eval_data`` on ``backend``."""
    ok, reason = backend.supports(ref_variant, device)
    if not ok:
        return None, f"no fidelity: the FP32 reference does not run on {backend.name}: {reason}"
    try:
        session = backend.prepare(ref_variant, device=device, threads=threads, workdir=workdir)
    except BenchmarkError as exc:
        return None, f"no fidelity: preparing the FP32 reference on {backend.name} failed: {exc}"
    except Exception as exc:
        return None, f"no fidelity: preparing the FP32 reference on {backend.name} failed: {_internal(exc)}"
    try:
        last_error = None
        for bs in sorted({int(r["batch_size"]) for r in runs}, reverse=True):
            try:
                return evaluate(session, eval_data, bs, None).logits, None
            except BenchmarkError as exc:
                last_error = str(exc)
            except Exception as exc:
                last_error = _internal(exc)
        return None, f"no fidelity: the FP32 reference failed on {backend.name}: {last_error}"
    finally:
        with contextlib.suppress(Exception):
            session.close()


# --------------------------------------------------------------------------------------------
# the parent: queue, jobs, store
# --------------------------------------------------------------------------------------------
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


def _error_class(name: str | None):
    cls = getattr(_errors, name or "", None)
    return cls if isinstance(cls, type) and issubclass(cls, BenchmarkError) else BenchmarkError


def _db_tag(store: Store) -> str:
    """A short tag of the database path (sweep ids are per database; files in the shared data folder
    carry both)."""
    return hashlib.sha1(str(Path(store.path).resolve()).encode()).hexdigest()[:8]


def _workdir_for(store: Store) -> Path:
    from .paths import work_root

    return Path(tempfile.mkdtemp(prefix=f"sweep-{_db_tag(store)}-", dir=work_root()))


class _Runner:
    """State of one ``run_sweep`` call."""

    def __init__(self, cfg: SweepConfig, store: Store, progress: Progress | None, job_timeout_s: float,
                 plugins: list[str], sweep_id: int | None, resume: bool):
        self.cfg = cfg
        self.store = store
        self.progress_cb = progress
        self.job_timeout_s = job_timeout_s
        self.plugins = plugins
        self.sweep_id = sweep_id
        self.resume = resume
        self.settings = run_settings(cfg)
        self.plan = plan_sweep(cfg)
        self.total = plan_size(self.plan)
        self.done = 0
        self.todo = 0
        self.model_name: str | None = None
        self.variant_info: dict[str, dict] = {}  # what a job's child reported about its variant
        self.last_store_progress = 0.0
        self.pending_progress: tuple[str, float | None] | None = None
        self.workdir = _workdir_for(store)

    # --- progress ---------------------------------------------------------------------------
    def report(self, message: str, sub: float | None = None, force: bool = False) -> None:
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
        self.last_store_progress = time.monotonic()
        if self.pending_progress is not None:
            text, frac = self.pending_progress
            self.pending_progress = None
            self.store.update_progress(self.sweep_id, text, frac)
        else:
            self.store.heartbeat(self.sweep_id)

    # --- sweep row + placeholders -----------------------------------------------------------
    def config_record(self) -> dict[str, Any]:
        return {"sweep": sweep_config_to_dict(self.cfg),
                "runner": {"job_timeout_s": self.job_timeout_s, "plugins": self.plugins, "settings": self.settings}}

    def ensure_sweep(self, model_name: str | None) -> None:
        if self.sweep_id is None:
            self.sweep_id = self.store.create_sweep(self.cfg.model, self.config_record(), device=self.cfg.device,
                                                    status="running", total_runs=self.total, pid=os.getpid())
        placeholders = []
        for job in self.plan:
            c = job.compression
            for run in job.runs:
                placeholders.append(RunResult(
                    model=model_name or self.cfg.model, variant=run.variant, backend=run.backend,
                    batch_size=run.batch_size, device=self.cfg.device, precision=c.precision,
                    prune_ratio=c.prune_ratio, prune_kind=c.prune_kind if c.prune_ratio > 0 else None,
                    config=dataclasses.asdict(c), status="pending"))
        self.store.add_pending(self.sweep_id, placeholders)

    def cancel_check(self) -> bool:
        return self.sweep_id is not None and self.store.cancel_requested(self.sweep_id)

    # --- main loop --------------------------------------------------------------------------
    def run(self) -> int:
        checked = False
        if self.sweep_id is not None:
            self.store.set_sweep_owner(self.sweep_id)
            self.store.set_sweep_total(self.sweep_id, self.total)
            if self.resume:
                self.store.reopen_sweep(self.sweep_id)
                self.ensure_sweep(None)
                checked = None  # the model was loaded before: errors are job failures
            missing = set(self.store.missing_runs(self.sweep_id)) if self.resume else None
        else:
            missing = None
        jobs = []
        for job in self.plan:
            runs = [r for r in job.runs if missing is None or r.key in missing]
            if runs:
                jobs.append(Job(job.compression, runs))
        self.todo = sum(len(j.runs) for j in jobs)
        from .jobs import DeviceQueue, JobCancelled

        queue = DeviceQueue(self.cfg.device)
        for index, job in enumerate(jobs):
            remaining = list(job.runs)
            attempt = 0
            while remaining:
                attempt += 1

                def on_wait(ahead: int) -> None:
                    text = (f"queued behind {ahead} sweep{'s' if ahead != 1 else ''} on {self.cfg.device}"
                            if ahead else f"waiting for device {self.cfg.device}")
                    if self.sweep_id is not None:
                        self.store.update_sweep_status(self.sweep_id, "queued")
                    self.report(text, force=True)

                try:
                    with queue.slot(sweep_id=self.sweep_id, db=self.store.path, label=f"{self.cfg.model} {job.variant}",
                                    on_wait=on_wait, cancel_check=self.cancel_check):
                        if self.sweep_id is not None:
                            self.store.update_sweep_status(self.sweep_id, "running")
                            self.store.set_run_status(self.sweep_id, [r.key for r in remaining], "running")
                        remaining, checked = self.run_job(job, remaining, attempt, index, checked)
                except JobCancelled:
                    return self.finish_cancelled()
                if self.sweep_id is not None and self.store.cancel_requested(self.sweep_id):
                    return self.finish_cancelled()
        counts = self.store.get_sweep(self.sweep_id).counts if self.sweep_id is not None else {}
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to run"
        self.store.update_sweep_status(self.sweep_id, "done", progress=f"done: {summary}", fraction=1.0)
        if self.progress_cb:
            self.progress_cb(f"done: {summary}", 1.0)
        return self.sweep_id

    def finish_cancelled(self) -> int:
        if self.sweep_id is not None:
            self.store.cancel_pending_runs(self.sweep_id)
            self.store.update_sweep_status(self.sweep_id, "cancelled", progress="cancelled")
        if self.progress_cb:
            self.progress_cb("cancelled", None)
        return self.sweep_id

    def run_job(self, job: Job, runs: list[PlannedRun], attempt: int, index: int, checked):
        """Run one child for ``runs`` of ``job``; store what it reports. Returns (runs to retry, checked)."""
        from .jobs import run_isolated

        reported: set[str] = set()
        current: list[str] = []
        sub = [0.0]
        by_key = {r.key: r for r in runs}

        def on_event(event: dict) -> None:
            nonlocal checked
            kind = event.get("type")
            if kind == "checked":
                self.model_name = event.get("model")
                if not checked:
                    self.ensure_sweep(self.model_name)
                    self.store.set_run_status(self.sweep_id, [r.key for r in runs], "running")
                    checked = True
            elif kind == "variant":
                self.variant_info[job.variant] = dict(event.get("info") or {})
            elif kind == "run_started":
                current[:] = list(event.get("keys") or [])
                sub[0] = 0.0
            elif kind == "result":
                row = RunResult.from_json(event["row"])
                row.sweep_id = self.sweep_id
                if row.key not in by_key:
                    return
                if self.sweep_id is None:  # cannot happen: results come after "checked"
                    self.ensure_sweep(row.model)
                self.store.add_result(row)
                reported.add(row.key)
                if row.key in current:
                    current.remove(row.key)
                self.done += 1
                sub[0] = 0.0
                note = f" ({row.error})" if row.status == "failed" and row.error else ""
                self.report(f"{row.variant} on {row.backend} batch {row.batch_size}: {row.status}{note}", force=True)
            elif kind in ("step", "progress"):
                frac = event.get("fraction")
                if kind == "progress" and frac is not None and len(current) == 1:
                    sub[0] = max(sub[0], float(frac) * 0.99)
                self.report(f"{job.variant}: {event.get('message', '')}", sub[0])

        payload = {
            "model": self.cfg.model, "inputs": list(self.cfg.inputs), "trust_pickle": bool(self.cfg.trust_pickle),
            "arch": getattr(self.cfg, "arch", None),
            "data": self.cfg.data, "device": self.cfg.device, "settings": self.settings,
            "compression": dataclasses.asdict(job.compression), "workdir": str(self.workdir),
            "timeout_s": self.job_timeout_s,
            "runs": [{"key": r.key, "backend": r.backend, "batch_size": r.batch_size} for r in runs],
        }
        log_path = self.workdir / f"job-{index}-{attempt}.log"
        self.report(f"{job.variant}: starting job", force=True)
        outcome = run_isolated(
            "benchmark.sweep:_variant_job", payload, on_event=on_event, timeout_s=self.job_timeout_s,
            cancel_check=self.cancel_check, plugins=self.plugins, log_path=log_path,
            on_tick=self.flush_progress,
        )
        if outcome.error_type == "cancelled":
            return [], checked
        left = [r for r in runs if r.key not in reported]
        if outcome.ok:
            for r in left:
                self.fail(job, r, "the job ended without a result for this run", outcome)
            return [], checked
        if not checked and checked is not None and outcome.is_bad_input:
            # The model or data could not be used at all: bad input, nothing stored for it.
            raise _error_class(outcome.error_type)(outcome.error)
        if not checked and checked is not None:
            self.ensure_sweep(self.model_name)
            checked = True
        crashed = [k for k in current if k in by_key and k not in reported]
        if crashed and outcome.error_type in ("signal", "timeout", "exit"):
            # A crash during a run fails that run only; the job's other runs get a fresh child.
            for key in crashed:
                self.fail(job, by_key[key], outcome.error, outcome)
            return [r for r in left if r.key not in crashed], checked
        for r in left:
            self.fail(job, r, outcome.error, outcome)
        return [], checked

    def fail(self, job: Job, run: PlannedRun, error: str | None, outcome) -> None:
        from .paths import logs_dir

        c = job.compression
        info = self.variant_info.get(job.variant, {})
        warnings = list(info.get("warnings") or [])
        if outcome.log_path and Path(outcome.log_path).exists() and Path(outcome.log_path).stat().st_size:
            with contextlib.suppress(OSError, StoreError):
                dest = logs_dir() / f"sweep-{_db_tag(self.store)}-{self.sweep_id}-{Path(outcome.log_path).name}"
                shutil.copyfile(outcome.log_path, dest)
                warnings.append(f"job log: {dest}")
        if outcome.traceback:
            warnings.append("traceback: " + outcome.traceback.strip().splitlines()[-1])
        row = RunResult(model=self.model_name or self.cfg.model, variant=run.variant, backend=run.backend,
                        batch_size=run.batch_size, device=self.cfg.device, precision=c.precision,
                        prune_ratio=c.prune_ratio, prune_kind=c.prune_kind if c.prune_ratio > 0 else None,
                        config=dataclasses.asdict(c), status="failed", error=error or "failed",
                        warnings=warnings, peak_rss_mb=outcome.peak_rss_mb, sweep_id=self.sweep_id,
                        compression=list(info.get("compression") or []),
                        compressed_as_asked=info.get("compressed_as_asked"),
                        **{k: info.get(k) for k in ("params", "macs", "flops", "size_bytes", "sparsity")})
        self.store.add_result(row)
        self.done += 1
        self.report(f"{run.variant} on {run.backend} batch {run.batch_size}: failed ({error})", force=True)


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
      None): only its missing rows run (``pending``/``running``/``cancelled``; failed rows stay).
    - ``sweep_id``: run a sweep row created beforehand (by :func:`start_sweep_background`).

    Bad input (unknown backend, unreadable model, data that does not match the model) raises a
    :class:`BenchmarkError` before anything is stored for a new sweep; for a pre-created sweep the
    row is marked ``failed`` with the message. Ctrl-C / SIGTERM kill the running job, mark the
    sweep ``interrupted`` and raise ``KeyboardInterrupt``.
    """
    from .jobs import plugin_list

    resume = resume_sweep_id is not None
    if resume:
        store.mark_interrupted()
        rec = store.claim_sweep(resume_sweep_id)  # one runner per sweep: a second --resume is refused here
        try:
            cfg = sweep_config_from_dict(rec.config.get("sweep") or {})  # the stored plan decides what is missing
        except BaseException:
            store.release_sweep(rec)
            raise
        runner = rec.config.get("runner") or {}
        plugins = plugins or runner.get("plugins") or None
        if job_timeout_s == DEFAULT_JOB_TIMEOUT_S and runner.get("job_timeout_s"):
            job_timeout_s = float(runner["job_timeout_s"])
        sweep_id = rec.id
    if cfg is None:
        raise ConfigError("run_sweep needs a SweepConfig (or resume_sweep_id of a stored sweep)")
    plugins = plugin_list(plugins)
    cfg = absolute_paths(cfg)
    try:
        validate_sweep(cfg, plugins)
    except BenchmarkError as exc:
        if sweep_id is not None and not resume:
            store.update_sweep_status(sweep_id, "failed", error=str(exc), progress=f"failed: {exc}")
        elif resume:
            store.release_sweep(rec)
        raise
    runner = _Runner(cfg, store, progress, float(job_timeout_s or 0) or None, plugins, sweep_id, resume)
    try:
        with _sigterm_as_interrupt():
            return runner.run()
    except KeyboardInterrupt:
        if runner.sweep_id is not None:
            store.update_sweep_status(
                runner.sweep_id, "interrupted",
                error=f"interrupted before it finished; resume with `slimbench run --resume {runner.sweep_id}`",
                progress="interrupted")
            store.reset_running_runs(runner.sweep_id)
        raise
    except BenchmarkError as exc:
        if runner.sweep_id is not None:
            store.update_sweep_status(runner.sweep_id, "failed", error=str(exc), progress=f"failed: {exc}")
        raise
    except Exception as exc:
        if runner.sweep_id is not None:
            store.update_sweep_status(runner.sweep_id, "failed", error=f"internal error: {type(exc).__name__}: {exc}",
                                      progress="failed (internal error)")
        raise
    finally:
        shutil.rmtree(runner.workdir, ignore_errors=True)


def cancel_sweep(store: Store, sweep_id: int) -> str:
    """Ask the runner of ``sweep_id`` to stop (kills its running job); returns the new status."""
    return store.request_cancel(sweep_id)


def start_sweep_background(cfg: SweepConfig, db_path: str | os.PathLike | None = None, *,
                           job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S, plugins: list[str] | None = None) -> int:
    """Create the sweep row and run it in a detached process (``python -m benchmark run
    --sweep-id N --db PATH``) that outlives the caller, so any page or tab can follow it through
    the store (status, progress text and fraction, rows as they land). Returns the sweep id."""
    from .jobs import PLUGINS_ENV, plugin_list
    from .paths import logs_dir

    plugins = plugin_list(plugins)
    cfg = absolute_paths(cfg)
    validate_sweep(cfg, plugins)
    store = Store(db_path)
    record = {"sweep": sweep_config_to_dict(cfg),
              "runner": {"job_timeout_s": job_timeout_s, "plugins": plugins, "settings": run_settings(cfg)}}
    sweep_id = store.create_sweep(cfg.model, record, device=cfg.device, status="pending",
                                  total_runs=plan_size(plan_sweep(cfg)))
    log_path = logs_dir() / f"sweep-{_db_tag(store)}-{sweep_id}-runner.log"
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


__all__ = [
    "Job", "PlannedRun", "plan_sweep", "plan_size", "estimate_duration_s", "run_settings", "run_sweep",
    "start_sweep_background", "run_stored_sweep", "cancel_sweep", "sweep_config_to_dict",
    "sweep_config_from_dict", "validate_sweep", "unapplied_steps", "noop_warning", "cross_backend_check",
]

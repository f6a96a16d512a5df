"""The per-layer profile of one variant on one backend (``slimbench profile``), as one JSON-ready dict.

:func:`profile_variant` works on a built variant in this process: a normal timed run first
(:func:`benchmark.measure.latency.measure_latency`: ``end_to_end_p50_ms``), then the untimed
profiling pass of :mod:`benchmark.measure.profile`, joined with the FLOPs table and this device's
peaks (:mod:`benchmark.measure.roofline`). :func:`profile_isolated` loads the model, builds the
variant exactly as a sweep does (:func:`benchmark.compress.build_variant` with the same data
splits) and profiles it in a spawned child that holds the CPU's queue slot, so an untrusted file
never runs in the caller and two measurements never share the CPU.
"""
from __future__ import annotations

import dataclasses
import shutil
import statistics
import uuid
from pathlib import Path
from typing import Any, Callable

from .config import CompressionConfig, RunConfig
from .errors import ConfigError

PROFILE_BACKENDS = ("onnxruntime", "pytorch")
PROFILE_DEVICES = ("cpu",)
DEFAULT_TIMEOUT_S = 300.0  # as the sensitivity analysis and a sweep's steps
#: Profiled runs aim at about this much time (at least MIN_RUNS, at most MAX_RUNS runs).
TARGET_PROFILE_S = 1.0
MIN_RUNS, MAX_RUNS = 5, 50
#: The timed run before profiling: the sweep's defaults.
TIMING = {"warmup_iters": 5, "warmup_s": 0.2, "min_iters": 20, "min_duration_s": 1.0, "max_iters": 10000}

Progress = Callable[[str, "float | None"], None]


def _no_progress(message: str, fraction: float | None = None) -> None:
    return None


def profiled_runs(p50_ms: float, runs: int | None = None) -> int:
    """``runs`` if given, else about :data:`TARGET_PROFILE_S` worth of runs at ``p50_ms`` each."""
    if runs is not None:
        from .measure.profile import check_runs

        return check_runs(runs)
    return max(MIN_RUNS, min(MAX_RUNS, int(round(TARGET_PROFILE_S * 1000.0 / max(p50_ms, 1e-3)))))


def check_target(backend: str, device: str) -> None:
    if backend not in PROFILE_BACKENDS:
        raise ConfigError(f"profile runs on backend {' or '.join(PROFILE_BACKENDS)}; got {backend!r}")
    if device not in PROFILE_DEVICES:
        raise ConfigError(f"profile measures CPU kernels only; device must be cpu, got {device!r} "
                          "(GPU kernels run asynchronously: per-layer GPU timing is not supported yet)")


def _flop_rows(variant, backend: str, onnx_path: Path | None, feeds: dict, batch_size: int) -> tuple[list[dict], str]:
    from .measure.flops import count_model, count_onnx

    if backend == "onnxruntime":
        shapes = {k: tuple(int(d) for d in v.shape) for k, v in feeds.items()}
        report = count_onnx(onnx_path, shapes)
    else:
        report = count_model(variant, batch_size=batch_size)
    return [dict(r) for r in report.by_module], report.counter


def profile_variant(variant, backend_name: str, feeds: dict, *, batch_size: int, device: str = "cpu",
                    threads: int = 0, workdir: Path, runs: int | None = None, timing: dict | None = None,
                    with_peaks: bool = True, sensitivity: list[dict] | None = None, options: dict | None = None,
                    progress: Progress = _no_progress) -> dict[str, Any]:
    """Profile ``variant`` on ``backend_name`` with ``feeds`` (see the module docstring). ``options``:
    backend options (``prepare(options=...)``) for the timed session and the profiling session alike.

    Returns ``layers`` (see :mod:`benchmark.measure.profile`), ``layers_total_ms``,
    ``end_to_end_p50_ms``, ``layers_total_mean_ms``, ``end_to_end_mean_ms``, ``gap_ms``,
    ``gap_fraction`` (gap / end-to-end), ``profiled_run_p50_ms`` (a whole run while profiling),
    ``runs``, ``op_types`` (per kernel and precision), ``ops`` (PyTorch operators), ``kernels`` (the
    INT8 summary), ``missing_layers``, ``peaks``, ``isa``, ``timing`` (with the timed run's
    ``iterations`` and ``cv``), ``options`` and ``notes``.
    """
    from .backends import get_backend
    from .measure import profile as prof
    from .measure.hardware import detect_isa
    from .measure.latency import device_lock, measure_latency
    from .measure.roofline import device_peaks

    check_target(backend_name, device)
    backend = get_backend(backend_name)
    settings = {**TIMING, **(timing or {})}
    run_cfg = RunConfig(backend=backend_name, device=device, batch_size=batch_size, threads=threads, **settings)
    progress(f"timing {variant.name} on {backend_name} (batch {batch_size})", 0.1)
    session = backend.prepare(variant, device=device, threads=threads, workdir=workdir, options=options)
    try:
        stats = measure_latency(session, feeds, run_cfg, device)
        n_runs = profiled_runs(stats.p50_ms, runs)
        onnx_path = Path(session.info.options["onnx_path"]) if backend_name == "onnxruntime" else None
        flop_rows, counter = _flop_rows(variant, backend_name, onnx_path, feeds, batch_size)
        progress(f"profiling {n_runs} runs of {variant.name} on {backend_name}", 0.5)
        ops: list[dict] = []
        if backend_name == "pytorch":
            with device_lock(device):
                rows, run_ms, ops, notes = prof.profile_torch(session, flop_rows, n_runs)
            providers = list(session.info.providers)
    finally:
        session.close()
    if backend_name == "onnxruntime":
        with device_lock(device):
            trace, onnx_path = prof.profile_ort(backend, variant, feeds, device=device, threads=threads,
                                                workdir=workdir, runs=n_runs, options=options)
        rows, run_ms, notes = prof.ort_layers(trace, onnx_path, flop_rows)
        providers = sorted({r["provider"] for r in rows if r.get("provider")})
    progress("measuring this device's peaks (cached after the first time)", 0.8)
    peaks = device_peaks(threads) if with_peaks else None
    layers, missing = prof.join_layers(rows, flop_rows, peaks)
    if sensitivity:
        _add_sensitivity(layers, sensitivity)
    total = sum(r["time_ms"] for r in layers)
    return {
        "variant": variant.name, "precision": variant.precision, "backend": backend_name, "device": device,
        "batch_size": int(batch_size), "threads": threads, "providers": providers, "flops_counter": counter,
        "layers": layers, "layers_total_ms": total, "end_to_end_p50_ms": stats.p50_ms,
        "layers_total_mean_ms": sum(r["time_mean_ms"] for r in layers), "end_to_end_mean_ms": stats.mean_ms,
        "gap_ms": stats.p50_ms - total,
        "gap_fraction": (stats.p50_ms - total) / stats.p50_ms if stats.p50_ms > 0 else None,
        "profiled_run_p50_ms": float(statistics.median(run_ms)) if run_ms else None, "runs": len(run_ms),
        "op_types": prof.op_type_table(layers), "ops": ops[:30], "kernels": prof.summarize_kernels(layers),
        "missing_layers": missing, "peaks": None if peaks is None else peaks.to_dict(), "options": dict(options or {}),
        "isa": detect_isa().to_dict(), "timing": {**settings, "iterations": stats.iterations, "cv": stats.cv},
        "notes": notes,
    }


def _add_sensitivity(layers: list[dict], sensitivity: list[dict]) -> None:
    """``sensitivity_delta`` (points) on layers named in a sensitivity table (``layer``, ``delta``)."""
    deltas = {str(r.get("layer")): r.get("delta") for r in sensitivity if r.get("layer") is not None}
    for r in layers:
        if r["name"] in deltas:
            r["sensitivity_delta"] = deltas[r["name"]]


# --------------------------------------------------------------------------------------------
# the isolated job
# --------------------------------------------------------------------------------------------
def _first_feeds(dataset, model, batch_size: int) -> tuple[dict, str]:
    first = dataset.head(batch_size) if dataset is not None else None
    if first is not None:
        return first, f"the first batch of {dataset.name}"
    return model.example_inputs(batch_size), "random inputs"


def _profile_job(payload: dict, emit) -> dict:
    """Child entry of :func:`profile_isolated`: load, build the variant as a sweep does, profile."""
    from .backends.base import feeds_batch
    from .compress import build_variant
    from .results import jsonable
    from .config import InputSpec
    from .data import resolve_dataset
    from .models import load_model
    from .models.batch_axes import fit_to_data
    from .sweep.variant import compress_context

    def progress(message: str, fraction: float | None = None) -> None:
        emit({"type": "step", "message": message, "fraction": fraction})

    workdir = Path(payload["workdir"])
    comp = CompressionConfig.from_dict(payload["compression"])
    progress(f"loading {payload['label']}", 0.0)
    model = load_model(payload["source"], inputs=[InputSpec.parse(t) for t in payload["inputs"]],
                       arch=payload["arch"], trust_pickle=payload["trust_pickle"], batch_axes=payload.get("batch_axis"))
    notes: list[str] = []
    evaluation = resolve_dataset(payload["data"], model, "test", warnings=notes)
    model, filled = fit_to_data(model, evaluation)
    notes.extend(filled)
    ctx = compress_context(payload["data"], model, comp, evaluation, workdir, progress, notes,
                           threads=int(payload["threads"]))
    progress(f"building {comp.name}", 0.05)
    variant = build_variant(model, comp, ctx)
    batch = int(payload["batch_size"])
    feeds, feeds_note = _first_feeds(evaluation, model, batch)
    fed = feeds_batch(feeds, model.inputs)
    if fed is not None and fed != batch:  # per-feed data: each feed is run as given
        notes.append(f"the data's feeds hold batch {fed}, not {batch}: profiled at batch {fed}")
        batch = fed
    from .backends import get_backend

    runtime = dict(payload.get("runtime") or {})
    options = get_backend(payload["backend"]).sweep_options(payload["device"], {"runtime": runtime}) if runtime else None
    res = profile_variant(variant, payload["backend"], feeds, batch_size=batch, device=payload["device"],
                          threads=int(payload["threads"]), workdir=workdir, runs=payload["runs"],
                          timing=payload["timing"], sensitivity=payload["sensitivity"], options=options,
                          progress=progress)
    res["runtime"] = runtime
    res["notes"] = notes + [f"inputs: {feeds_note}"] + list(variant.warnings) + res["notes"]
    res.update(model=model.name, compression=[r.to_dict() for r in variant.records],
               config=dataclasses.asdict(comp))
    return jsonable(res)


def profile_isolated(source: str, compression: CompressionConfig, *, backend: str = "onnxruntime",
                     device: str = "cpu", batch_size: int = 1, threads: int = 0,
                     inputs: list[str] | tuple[str, ...] | None = None, arch: str | None = None,
                     trust_pickle: bool = False, data: str | None = None, runs: int | None = None,
                     batch_axes: list[str] | tuple[str, ...] | None = None,
                     timing: dict | None = None, sensitivity: list[dict] | None = None,
                     runtime: dict | None = None, on_progress: Progress | None = None, on_wait=None,
                     timeout_s: float | None = DEFAULT_TIMEOUT_S, queue: bool = True) -> dict[str, Any]:
    """:func:`profile_variant` of ``compression`` applied to ``source`` (a file or ``sample:NAME``),
    in a spawned child holding the CPU queue slot (``on_wait(n_ahead)`` while queued). ``runtime``:
    the sweep runtime settings to run with (:mod:`benchmark.sweep.runtime`, e.g. a row's ``runtime``),
    turned into backend options as a sweep does. Bad input raises the child's error class; a crash or
    a hang raises MeasurementError naming the log."""
    from .jobs import run_queued_job, source_label
    from .paths import work_root

    check_target(backend, device)
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be >= 1; got {batch_size}")
    if runs is not None:
        profiled_runs(1.0, runs)
    work = work_root() / f"profile-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    payload = {"source": str(source), "inputs": list(inputs or ()), "arch": arch, "trust_pickle": bool(trust_pickle),
               "batch_axis": list(batch_axes or ()),
               "data": None if data is None else str(data), "compression": dataclasses.asdict(compression),
               "backend": backend, "device": device, "batch_size": int(batch_size), "threads": int(threads),
               "runs": runs, "timing": dict(timing or {}), "sensitivity": sensitivity, "workdir": str(work),
               "runtime": dict(runtime or {}),
               "label": source_label(str(source))}
    try:
        return run_queued_job("benchmark.profiling:_profile_job", payload, "profile", on_progress, on_wait, timeout_s, queue)
    finally:
        shutil.rmtree(work, ignore_errors=True)


__all__ = ["PROFILE_BACKENDS", "PROFILE_DEVICES", "check_target", "profile_isolated", "profile_variant",
           "profiled_runs"]

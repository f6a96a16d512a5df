"""The sensitivity analysis and the accuracy-aware search run in a spawned child (the dashboard and
the CLI): the caller never loads, or unpickles, the model; the job holds the CPU's device queue
slot; progress comes back as events and errors as one line."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..data.base import Dataset
from ..errors import ConfigError
from ..jobs import run_queued_job, source_label
from ..results import jsonable
from ..registry import one_of
from . import search as search_module, sensitivity as sensitivity_module
from .prepared import CALIB_MAX_SAMPLES, Progress
from .sensitivity import COLUMNS, METHODS

if TYPE_CHECKING:
    import pandas as pd

    from ..models.base import LoadedModel

DEFAULT_JOB_TIMEOUT_S = 300.0
RANDOM_SAMPLES = 64

WaitCallback = Callable[[int], None]


def sensitivity_data(model: "LoadedModel", data: str | Path | None = None) -> tuple[Dataset, Dataset, str]:
    """(evaluation data, calibration data, note) for the sensitivity analysis and the search.

    ``data``: a built-in dataset name or a ``.npz`` path; None means the model's own dataset
    (``test`` split to evaluate, ``calib`` split to calibrate; a ``.npz`` file is split as
    :func:`benchmark.data.resolve_dataset` splits it). A model without a dataset is evaluated and
    calibrated on ``RANDOM_SAMPLES`` random inputs; the metric is then top-1 agreement with FP32.
    """
    from ..data import random_dataset, resolve_dataset

    evaluation = resolve_dataset(data, model, split="test")
    if evaluation is None:
        rnd = random_dataset(model.inputs, RANDOM_SAMPLES)
        return rnd, rnd, (f"{model.name} has no dataset: quality is top-1 agreement with FP32 on "
                          f"{RANDOM_SAMPLES} random inputs")
    calib = resolve_dataset(data, model, split="calib")
    metric = "top-1 accuracy" if evaluation.labels is not None else "top-1 agreement with FP32 (no labels)"
    note = f"evaluated on {evaluation.name} ({len(evaluation)} samples, {metric})"
    if calib is None:
        return evaluation, evaluation, note + ", calibrated on the same samples"
    return evaluation, calib, note + f", calibrated on {calib.name} ({min(len(calib), CALIB_MAX_SAMPLES)} samples)"


def expected_data_note(source: str, arch: str | None = None, data: str | None = None) -> str:
    """What :func:`sensitivity_data` will evaluate on, said without loading the model (for pages)."""
    from ..models.archs import get_arch
    from ..models.samples import get_sample

    if data:
        return f"evaluated on {Path(str(data)).name if str(data).endswith('.npz') else str(data) + ':test'}"
    dataset = None
    if str(source).startswith("sample:"):
        dataset = get_sample(str(source).removeprefix("sample:")).dataset
    elif arch:
        dataset = get_arch(arch).dataset
    if dataset:
        return f"evaluated on {dataset}:test, calibrated on {dataset}:calib"
    return f"no dataset of its own: quality is top-1 agreement with FP32 on {RANDOM_SAMPLES} random inputs"


def _job_model(payload: dict, emit) -> "LoadedModel":
    from ..config import InputSpec
    from ..models import load_model

    emit({"type": "step", "message": f"loading {payload['label']}", "fraction": 0.0})
    return load_model(payload["source"], inputs=[InputSpec.parse(t) for t in payload["inputs"]],
                      arch=payload["arch"], trust_pickle=payload["trust_pickle"], batch_axes=payload.get("batch_axis"))


def _job_progress(emit) -> Progress:
    def progress(message: str, fraction: float | None = None) -> None:
        emit({"type": "step", "message": message, "fraction": fraction})

    return progress


def _sensitivity_job(payload: dict, emit) -> dict:
    """Child entry of :func:`sensitivity_isolated`."""
    model = _job_model(payload, emit)
    evaluation, _, note = sensitivity_data(model, payload["data"])
    emit({"type": "step", "message": f"preparing the ONNX graph of {model.name}", "fraction": 0.0})
    df = sensitivity_module.layer_sensitivity(model, payload["method"], evaluation, progress=_job_progress(emit),
                           max_layers=payload["max_layers"])
    return jsonable({"model": model.name, "method": payload["method"], "data_note": note, "columns": COLUMNS,
                       "table": df.to_dict("records"), "attrs": dict(df.attrs)})


def _search_job(payload: dict, emit) -> dict:
    """Child entry of :func:`search_isolated`; leaves only the chosen model in the work folder."""
    import shutil

    import pandas as pd

    model = _job_model(payload, emit)
    evaluation, calib, note = sensitivity_data(model, payload["data"])
    table = pd.DataFrame(payload["sensitivity"], columns=COLUMNS) if payload["sensitivity"] else None
    emit({"type": "step", "message": f"preparing the ONNX graph of {model.name}", "fraction": 0.0})
    work = Path(payload["workdir"])
    res = search_module.accuracy_aware_search(model, evaluation, calib, budget_points=payload["budget_points"],
                                              workdir=work, progress=_job_progress(emit), max_trials=payload["max_trials"],
                                              sensitivity=table)
    keep = Path(res.chosen["onnx_path"]).name if res.chosen else None
    for entry in work.iterdir():  # the prepared graph, calibration cache and export are scratch
        if keep is not None and entry.name.startswith(Path(keep).stem):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    cfg = res.to_config()
    return jsonable({
        "model": model.name, "data_note": note, "budget_points": res.budget_points, "metric": res.metric,
        "reference_metric": res.reference_metric, "reference_latency_p50_ms": res.reference_latency_p50_ms,
        "reference_size_bytes": res.reference_size_bytes, "tried": res.tried.to_dict("records"),
        "chosen": res.chosen,
        "chosen_config": None if cfg is None else {"precision": cfg.precision, "exclude_layers": list(cfg.exclude_layers)},
        "sensitivity": None if res.sensitivity is None else res.sensitivity.to_dict("records"),
        "quantization": res.quantization, "warnings": res.warnings,
    })


def _records(table: "pd.DataFrame | list[dict] | None") -> list[dict] | None:
    if table is None:
        return None
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    return jsonable(rows) or None


def sensitivity_isolated(
    source: str,
    inputs: list[str] | tuple[str, ...] | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    *,
    method: str = "int8",
    data: str | None = None,
    max_layers: int | None = None,
    on_progress: Progress | None = None,
    on_wait: WaitCallback | None = None,
    timeout_s: float | None = DEFAULT_JOB_TIMEOUT_S,
    queue: bool = True,
    batch_axes: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """:func:`layer_sensitivity` of ``source`` (a file or ``sample:NAME``) in a spawned child.

    The caller never loads (or unpickles) the model. The job holds the CPU's device queue slot
    while it runs (``on_wait(n_ahead)`` while queued; ``queue=False`` skips the queue) and reports
    ``on_progress(message, fraction)``. ``data``: dataset name or ``.npz`` path (default: the
    model's own, else random inputs, see :func:`sensitivity_data`). ``timeout_s`` applies per layer.
    ``batch_axes``: ``NAME:AXIS`` / ``NAME:none`` settings of the inputs' batch axes.

    Returns ``{"model", "method", "data_note", "columns", "table", "attrs"}``: ``table`` holds
    the rows of :func:`layer_sensitivity` as dicts (most sensitive first; a layer whose outputs
    went NaN/Inf has ``metric_after`` and ``delta`` None), ``attrs`` its metadata. Bad input
    raises the child's error class; a crash, a hang or an exit without answer raises
    :class:`MeasurementError` naming the cause and the log file.
    """
    one_of("sensitivity method", method, METHODS)
    if max_layers is not None and int(max_layers) < 1:
        raise ConfigError(f"max_layers must be >= 1; got {max_layers}")
    payload = {"source": str(source), "inputs": list(inputs or ()), "arch": arch, "trust_pickle": bool(trust_pickle),
               "batch_axis": list(batch_axes or ()),
               "data": None if data is None else str(data), "method": method,
               "max_layers": None if max_layers is None else int(max_layers), "label": source_label(source)}
    return run_queued_job("benchmark.analysis.isolated:_sensitivity_job", payload, f"{method} sensitivity analysis",
                    on_progress, on_wait, timeout_s, queue)


def search_isolated(
    source: str,
    inputs: list[str] | tuple[str, ...] | None = None,
    arch: str | None = None,
    trust_pickle: bool = False,
    *,
    budget_points: float = 1.0,
    max_trials: int = 10,
    data: str | None = None,
    sensitivity: "list[dict] | pd.DataFrame | None" = None,
    workdir: str | Path | None = None,
    on_progress: Progress | None = None,
    on_wait: WaitCallback | None = None,
    timeout_s: float | None = DEFAULT_JOB_TIMEOUT_S,
    queue: bool = True,
    batch_axes: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """:func:`accuracy_aware_search` of ``source`` in a spawned child (queue, progress and errors as
    :func:`sensitivity_isolated`; ``timeout_s`` applies per trial).

    ``sensitivity``: rows of an earlier int8 :func:`sensitivity_isolated` table to order the layers
    (else measured in the child). ``workdir`` (default a new folder under
    :func:`benchmark.paths.work_root`) keeps only the chosen model's ONNX file; it is removed when
    nothing was chosen or the job failed.

    Returns ``{"model", "data_note", "budget_points", "metric", "reference_metric",
    "reference_latency_p50_ms", "reference_size_bytes", "tried", "chosen", "chosen_config",
    "sensitivity", "quantization", "warnings"}``: ``tried`` holds one dict per configuration
    (trial, excluded_layers, n_excluded, metric, delta in points, size_bytes, latency_p50_ms,
    speedup_vs_fp32, meets_budget, onnx_path), ``chosen`` the fastest within the budget or None,
    ``chosen_config`` the CompressionConfig fields that rebuild it.
    """
    import shutil
    import uuid

    from ..paths import work_root

    budget = float(budget_points)
    if not budget >= 0:
        raise ConfigError(f"accuracy budget must be >= 0 points; got {budget_points}")
    if int(max_trials) < 1:
        raise ConfigError(f"max_trials must be >= 1; got {max_trials}")
    work = Path(workdir) if workdir is not None else work_root() / f"search-{uuid.uuid4().hex[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    payload = {"source": str(source), "inputs": list(inputs or ()), "arch": arch, "trust_pickle": bool(trust_pickle),
               "batch_axis": list(batch_axes or ()),
               "data": None if data is None else str(data), "budget_points": budget, "max_trials": int(max_trials),
               "sensitivity": _records(sensitivity), "workdir": str(work),
               "label": source_label(source)}
    try:
        out = run_queued_job("benchmark.analysis.isolated:_search_job", payload, "accuracy-aware search",
                       on_progress, on_wait, timeout_s, queue)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out.get("chosen") is None:
        shutil.rmtree(work, ignore_errors=True)
    return out

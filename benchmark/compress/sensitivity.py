"""Per-layer sensitivity and an accuracy-aware INT8 search (the Intel Neural Compressor /
OpenVINO accuracy-aware idea) on the model's ONNX graph.

- :func:`layer_sensitivity` compresses ONE layer (ONNX node) at a time and measures what that
  costs: ``"int8"`` quantizes only that node (ONNX Runtime static QDQ, per-channel int8 weights,
  activations in the format the ``int8-static`` compression picks for this CPU, MinMax ranges
  calibrated once); ``"prune"`` zeroes the 50 % smallest-|w| weights of that node's weight tensor
  (L1 unstructured). Layers are the MAC-bearing nodes: Conv, ConvTranspose, Gemm, MatMul.
- :func:`accuracy_aware_search` starts from full static INT8 and, while the accuracy drop exceeds
  the budget, keeps the next most INT8-sensitive layer in FP32 and tries again; every tried
  configuration is recorded with its metric, size and a quick latency.

Conventions:

- The metric is top-1 accuracy on labelled data, else top-1 agreement with the FP32 model
  (argmax over the last axis of the first output). Both are fractions in 0..1.
- ``delta`` is the metric drop in percentage points: ``(metric_before - metric_after) * 100``;
  positive means worse. Tables are sorted by ``delta``, most sensitive first.
- ``macs_share`` is the node's MACs over the MACs of all Conv/ConvTranspose/Gemm/MatMul nodes at
  batch 1 (a MAC = one multiply-add; the formulas of :mod:`benchmark.measure.flops`, with shapes
  from one ONNX Runtime run, so dynamic reshapes in attention do not hide any product).
- ONNX Runtime runs on CPU; evaluation sessions use 2 intra-op threads. The search's latency check
  is a sweep's timing with short settings: an ONNX Runtime session from :mod:`benchmark.backends`
  (1 intra-op thread), batch 8, timed by :func:`benchmark.measure.latency.measure_latency` under the
  CPU device lock: 3 warm-up runs, then at least 20 runs and 0.2 s; ``latency_p50_ms`` is the median.
- The graph is prepared as the ``int8-static``/``mixed`` compressions prepare it (``Constant``
  weights to initializers, opset 13+, ``quant_pre_process``; the same INT8 format and, for
  attention models, the same op types); layer names are node names of that prepared graph,
  usable as ``CompressionConfig.exclude_layers``.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..data.base import Dataset
from ..errors import CompressionError, ConfigError, DataError, MeasurementError
from ..registry import one_of

if TYPE_CHECKING:
    import pandas as pd

    from ..models.base import LoadedModel

METHODS = ("int8", "prune")
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
COLUMNS = ["layer", "op_type", "macs_share", "metric_before", "metric_after", "delta"]
EVAL_THREADS = 2
LATENCY_THREADS = 1
LATENCY_BATCH = 8
#: RunConfig timing settings of the search's latency check (short: it times every trial).
LATENCY_SETTINGS = {"warmup_iters": 3, "warmup_s": 0.0, "min_iters": 20, "min_duration_s": 0.2, "max_iters": 2000}
CALIB_MAX_SAMPLES = 512
PRUNE_AMOUNT = 0.5

Progress = Callable[[str, "float | None"], None]


def _no_progress(message: str, fraction: float | None = None) -> None:
    return None


@dataclass
class SearchResult:
    """Outcome of :func:`accuracy_aware_search`.

    ``tried``: one row per configuration (trial, excluded layers, metric, delta in points, size,
    p50 latency, speedup vs FP32, meets_budget). ``chosen``: the fastest row within the budget as a
    dict, or None when no tried configuration met it.
    """

    tried: "pd.DataFrame"
    chosen: dict | None
    budget_points: float
    reference_metric: float
    metric: str = "accuracy"
    reference_latency_p50_ms: float | None = None
    reference_size_bytes: int | None = None
    sensitivity: "pd.DataFrame | None" = None
    quantization: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_config(self, **overrides):
        """The CompressionConfig that rebuilds the chosen configuration (``int8-static`` when no
        layer is kept FP32, else ``mixed`` with those layers excluded); None when nothing was chosen."""
        from ..config import CompressionConfig

        if self.chosen is None:
            return None
        excluded = tuple(self.chosen["excluded_layers"])
        if excluded:
            return CompressionConfig(precision="mixed", mixed_base="int8", exclude_layers=excluded, **overrides)
        return CompressionConfig(precision="int8-static", **overrides)


# ---------------------------------------------------------------------------------------------
# Preparation and evaluation


@dataclass
class _Prepared:
    path: Path  # FP32 graph prepared for quantization
    proto: Any
    inputs: list[str]
    batch: int | None  # static batch size of the graph, or None when dynamic
    per_channel: bool
    warnings: list[str]
    int8_format: str = "u8s8"
    reduce_range: bool = False
    format_reason: str = ""
    op_types: list[str] | None = None  # None: every op type ORT's QDQ quantizer supports

    def describe(self) -> dict[str, Any]:
        return {
            "int8_format": self.int8_format, "reduce_range": self.reduce_range, "int8_format_reason": self.format_reason,
            "per_channel": self.per_channel, "op_types_to_quantize": self.op_types or "all supported",
        }


def _onnx_source(model: "LoadedModel", workdir: Path) -> Path:
    if model.onnx_path is not None:
        return Path(model.onnx_path)
    if model.torch_module is None:
        raise CompressionError(f"model {model.name!r} has neither an ONNX file nor a PyTorch module")
    from ..models.base import Variant
    from ..models.export import ensure_onnx

    return ensure_onnx(Variant(name="fp32", model=model, torch_module=model.torch_module), workdir)


def _prepare(model: "LoadedModel", workdir: Path) -> _Prepared:
    """The FP32 graph prepared exactly as the ``int8-static`` / ``mixed`` compressions prepare it
    (same pre-processing, INT8 format and op types), so node names and results carry over."""
    from . import onnx_prep
    from .quantize import _ATTENTION_ONNX_OPS, TRANSFORMER_STATIC_OP_TYPES, _preprocess, choose_int8_format

    src = _onnx_source(model, workdir)
    proto, report = onnx_prep.prepare_for_quantization(onnx_prep.load_model(src), per_channel=True)
    warnings = list(report.warnings)
    stage = workdir / "sens-prep"
    stage.mkdir(parents=True, exist_ok=True)
    path = _preprocess(proto, stage, warnings)
    proto = onnx_prep.load_model(path)
    fmt, reduce_range, why = choose_int8_format("auto")
    attention = any(op in _ATTENTION_ONNX_OPS for op in onnx_prep.op_counts(proto))
    init = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in init]
    batch = None
    for i in graph_inputs:
        dims = i.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            batch = int(dims[0].dim_value)
    return _Prepared(
        path, proto, [i.name for i in graph_inputs], batch, report.per_channel_possible, warnings,
        int8_format=fmt, reduce_range=reduce_range, format_reason=why,
        op_types=list(TRANSFORMER_STATIC_OP_TYPES) if attention else None,
    )


def _fit(dataset: Dataset | None, model: "LoadedModel", prep: _Prepared, what: str) -> Dataset:
    from ..data import fit_to_inputs

    if dataset is None:
        raise DataError(f"{what} is required")
    if len(dataset) == 0:
        raise DataError(f"{what} {dataset.name!r} is empty")
    fitted = fit_to_inputs(dataset, model.inputs, where=what)
    missing = [n for n in prep.inputs if n not in fitted.arrays]
    if missing:
        raise DataError(f"{what} {dataset.name!r} has arrays {', '.join(fitted.arrays)} but the ONNX graph needs {', '.join(prep.inputs)}")
    if any(fitted.feed_axis.get(n, False) for n in prep.inputs):
        raise DataError(f"{what} {dataset.name!r} holds whole feeds per sample; sensitivity needs arrays with a batch axis")
    return fitted


def _batches(data: Dataset, prep: _Prepared, batch: int):
    """Feeds of ``batch`` samples; a graph with a static batch size gets only full batches."""
    import numpy as np

    if prep.batch is not None:
        batch = prep.batch
    for i in range(0, len(data), batch):
        if prep.batch is not None and i + batch > len(data):
            break
        yield {n: np.ascontiguousarray(data.arrays[n][i:i + batch]) for n in prep.inputs}


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _predict(path: Path, prep: _Prepared, data: Dataset):
    """Top-1 predictions (argmax over the last axis of the first output); NaN/Inf -> MeasurementError."""
    import numpy as np

    sess = _session(path, EVAL_THREADS)
    preds = []
    for feeds in _batches(data, prep, 64):
        out = np.asarray(sess.run(None, feeds)[0])
        if not np.isfinite(out).all():
            raise MeasurementError(f"{path.name} produced NaN/Inf outputs")
        preds.append(out.argmax(-1))
    if not preds:
        raise DataError(f"the data holds fewer samples than the graph's static batch size {prep.batch}")
    return np.concatenate(preds)


def _metric(pred, data: Dataset, reference) -> float:
    import numpy as np

    target = reference if data.labels is None else np.asarray(data.labels)[: len(pred)]
    if target.shape != pred.shape:
        raise DataError(f"labels of {data.name!r} have shape {target.shape} but the model predicts {pred.shape}")
    return float((pred == target[: len(pred)]).mean())


def _latency_p50_ms(path: Path, prep: _Prepared, data: Dataset, model: "LoadedModel", precision: str) -> float:
    """Median latency (ms) of one batch of ``LATENCY_BATCH`` samples (or the graph's static batch).

    Timed the way sweeps time: an ONNX Runtime CPU session from :mod:`benchmark.backends`
    (``LATENCY_THREADS`` intra-op thread) and :func:`benchmark.measure.latency.measure_latency`
    with :data:`LATENCY_SETTINGS`, holding the CPU device lock while it times.
    """
    import numpy as np

    from ..backends import get_backend
    from ..config import RunConfig
    from ..measure.latency import measure_latency
    from ..models.base import Variant

    batch = prep.batch or min(LATENCY_BATCH, len(data))
    feeds = {n: np.ascontiguousarray(data.arrays[n][:batch]) for n in prep.inputs}
    cfg = RunConfig(backend="onnxruntime", device="cpu", batch_size=batch, threads=LATENCY_THREADS, **LATENCY_SETTINGS)
    variant = Variant(name=path.stem, model=model, precision=precision, onnx_path=path)
    session = get_backend("onnxruntime").prepare(variant, "cpu", threads=cfg.threads)
    try:
        stats = measure_latency(session, feeds, cfg, "cpu")
    finally:
        session.close()
    return float(stats.p50_ms)


class _Reader:
    """ORT calibration data reader over a Dataset (batches of 32, or the graph's static batch)."""

    def __init__(self, data: Dataset, prep: _Prepared):
        self._data = data.subset(CALIB_MAX_SAMPLES)
        self._prep = prep
        self._it = None
        self.rewind()

    def rewind(self):
        self._it = iter(list(_batches(self._data, self._prep, 32)))

    def get_next(self):
        return next(self._it, None)


def _quantize(prep: _Prepared, out: Path, cache: Path, calib: Dataset, *, nodes: list[str] | None = None,
              exclude: list[str] | None = None) -> Path:
    """Static QDQ INT8 of ``prep`` (format, op types and per-channel as prepared); ranges cached in ``cache``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from .quantize import _first_line, _quiet_ort_logging

    try:
        with _quiet_ort_logging():
            quantize_static(
                str(prep.path), str(out),
                calibration_data_reader=None if cache.is_file() else _Reader(calib, prep),
                quant_format=QuantFormat.QDQ, per_channel=prep.per_channel, reduce_range=prep.reduce_range,
                activation_type=QuantType.QUInt8 if prep.int8_format == "u8s8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, op_types_to_quantize=prep.op_types,
                nodes_to_quantize=nodes, nodes_to_exclude=exclude,
                calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
            )
    except Exception as exc:  # ORT's quantizer raises arbitrary types; re-raised as one clear error
        raise CompressionError(f"ONNX Runtime static quantization failed: {_first_line(exc)}") from exc
    return out


# ---------------------------------------------------------------------------------------------
# Per-node MACs


def node_macs(proto, data: Dataset, names: list[str]) -> tuple[dict[str, int], int, list[str]]:
    """(MACs at batch 1 per Conv/ConvTranspose/Gemm/MatMul node, their sum, notes).

    Counted by :func:`benchmark.measure.flops.count_onnx` with the inputs' shapes fixed to one
    sample of ``data`` (it probes shapes with one ONNX Runtime run where ONNX shape inference
    loses track of dynamic reshapes).
    """
    from ..measure.flops import count_onnx

    shapes = {n: (1,) + tuple(data.arrays[n].shape[1:]) for n in names}
    report = count_onnx(proto, input_shapes=shapes)
    layer_names = {n.name for n in proto.graph.node if n.op_type in LAYER_OPS and n.name}
    out = {row["name"]: int(row["macs"] or 0) for row in report.by_module if row["name"] in layer_names}
    notes = [f"MACs of node {n} unknown; counted as 0" for n in sorted(layer_names - set(out))]
    for n in layer_names - set(out):
        out[n] = 0
    return out, int(sum(out.values())), notes


def _session_from_proto(proto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = EVAL_THREADS
    opts.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------
# Sensitivity


def _layers(prep: _Prepared, method: str) -> list[Any]:
    init = {i.name for i in prep.proto.graph.initializer}
    nodes = []
    for node in prep.proto.graph.node:
        if node.op_type not in LAYER_OPS or not node.name:
            continue
        if method == "prune" and not any(n in init for n in node.input[:2]):
            continue  # nothing to prune: both operands are activations
        nodes.append(node)
    return nodes


def _pruned_copy(prep: _Prepared, node, out: Path) -> Path:
    import numpy as np
    from onnx import numpy_helper

    from .onnx_prep import copy_model, save_model

    m = copy_model(prep.proto)
    inits = {i.name: i for i in m.graph.initializer}
    name = node.input[1] if len(node.input) > 1 and node.input[1] in inits else node.input[0]
    w = numpy_helper.to_array(inits[name]).copy()
    flat = np.abs(w).reshape(-1)
    k = int(round(PRUNE_AMOUNT * flat.size))
    if k > 0:
        idx = np.argpartition(flat, k - 1)[:k]
        w.reshape(-1)[idx] = 0
    inits[name].CopyFrom(numpy_helper.from_array(w, name))
    return save_model(m, out)


def _workdir(workdir) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="slimbench-sens-")
        return Path(tmp.name), tmp
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path, None


def _sensitivity_table(model, method, prep: _Prepared, eval_data: Dataset, calib: Dataset, workdir: Path,
                       progress: Progress, max_layers: int | None, cache: Path) -> "pd.DataFrame":
    import pandas as pd

    ref_pred = _predict(prep.path, prep, eval_data)
    before = _metric(ref_pred, eval_data, ref_pred)
    macs, total, notes = node_macs(prep.proto, eval_data, prep.inputs)
    nodes = _layers(prep, method)
    if not nodes:
        raise CompressionError(f"model {model.name!r} has no {'/'.join(LAYER_OPS)} layers to test for {method} sensitivity")
    skipped = 0
    if max_layers is not None:
        if int(max_layers) < 1:
            raise ConfigError(f"max_layers must be >= 1; got {max_layers}")
        ranked = sorted(nodes, key=lambda n: -macs.get(n.name, 0))
        keep = {n.name for n in ranked[: int(max_layers)]}
        skipped = len(nodes) - len(keep)
        nodes = [n for n in nodes if n.name in keep]
    rows = []
    warnings = list(prep.warnings) + notes
    for i, node in enumerate(nodes):
        progress(f"{method} sensitivity: layer {i + 1}/{len(nodes)} ({node.name})", i / len(nodes))
        out = workdir / f"sens-{method}-{i}.onnx"
        if method == "int8":
            _quantize(prep, out, cache, calib, nodes=[node.name])
        else:
            _pruned_copy(prep, node, out)
        try:
            after = _metric(_predict(out, prep, eval_data), eval_data, ref_pred)
            delta = (before - after) * 100.0
        except MeasurementError as exc:
            warnings.append(f"{node.name}: {exc}")
            after, delta = float("nan"), float("inf")
        finally:
            out.unlink(missing_ok=True)
        rows.append({
            "layer": node.name, "op_type": node.op_type,
            "macs_share": macs.get(node.name, 0) / total if total else 0.0,
            "metric_before": before, "metric_after": after, "delta": delta,
        })
    progress(f"{method} sensitivity done", 1.0)
    df = pd.DataFrame(rows, columns=COLUMNS).sort_values(["delta", "macs_share"], ascending=[False, False], kind="stable")
    df = df.reset_index(drop=True)
    df.attrs.update({
        "method": method, "metric": "accuracy" if eval_data.labels is not None else "top1_agreement",
        "samples": len(eval_data), "layers_not_tested": skipped, "warnings": warnings,
        "total_macs": total, **prep.describe(),
    })
    return df


def layer_sensitivity(
    model: "LoadedModel",
    method: str = "int8",
    eval_data: Dataset | None = None,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    max_layers: int | None = None,
) -> "pd.DataFrame":
    """Metric cost of compressing one layer at a time, most sensitive first.

    ``method``: ``"int8"`` (only that node quantized, static QDQ U8S8 per-channel, calibrated on
    ``eval_data``) or ``"prune"`` (50 % of that node's weights zeroed by magnitude). ``max_layers``
    tests only the layers with the most MACs. Columns: layer, op_type, macs_share (0..1),
    metric_before, metric_after, delta (percentage points, positive = worse). ``df.attrs`` holds
    the metric name, the sample count and warnings.
    """
    one_of("sensitivity method", method, METHODS)
    progress = progress or _no_progress
    work, tmp = _workdir(workdir)
    try:
        prep = _prepare(model, work)
        data = _fit(eval_data, model, prep, "evaluation data")
        cache = work / "sens-calib-cache.json"
        cache.unlink(missing_ok=True)
        return _sensitivity_table(model, method, prep, data, data, work, progress, max_layers, cache)
    finally:
        if tmp is not None:
            tmp.cleanup()


def accuracy_aware_search(
    model: "LoadedModel",
    eval_data: Dataset | None,
    calib_data: Dataset | None,
    budget_points: float = 1.0,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    max_trials: int = 10,
    sensitivity: "pd.DataFrame | None" = None,
) -> SearchResult:
    """Full static INT8 first; while the drop exceeds ``budget_points``, keep the next most sensitive layer FP32.

    Layer order comes from ``sensitivity`` (a :func:`layer_sensitivity` int8 table) or is measured
    here (calibrated on ``calib_data``, evaluated on ``eval_data``). Trial ``k`` keeps the ``k``
    most sensitive layers in FP32; the search stops at the first trial within the budget, after
    ``max_trials`` trials, or when every layer is excluded. ``chosen`` is the fastest tried
    configuration within the budget (its ONNX file is kept in ``workdir``), else None.
    """
    import pandas as pd

    budget = float(budget_points)
    if budget < 0:
        raise ConfigError(f"accuracy budget must be >= 0 points; got {budget_points}")
    if int(max_trials) < 1:
        raise ConfigError(f"max_trials must be >= 1; got {max_trials}")
    progress = progress or _no_progress
    if workdir is None:
        work = Path(tempfile.mkdtemp(prefix="slimbench-search-"))  # kept: it holds the chosen model
    else:
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
    prep = _prepare(model, work)
    data = _fit(eval_data, model, prep, "evaluation data")
    calib = _fit(calib_data, model, prep, "calibration data")
    cache = work / "search-calib-cache.json"
    cache.unlink(missing_ok=True)
    warnings = list(prep.warnings)
    ref_pred = _predict(prep.path, prep, data)
    ref_metric = _metric(ref_pred, data, ref_pred)
    ref_latency = _latency_p50_ms(prep.path, prep, data, model, "fp32")
    ref_size = prep.path.stat().st_size
    if sensitivity is not None:
        missing = set(sensitivity["layer"]) - {n.name for n in prep.proto.graph.node}
        if missing:
            raise ConfigError(f"sensitivity table names layers not in this model's graph: {', '.join(sorted(missing)[:5])}")
    rows: list[dict[str, Any]] = []
    k = 0
    while k < int(max_trials):
        if k == 1 and sensitivity is None:  # full INT8 missed the budget: rank the layers
            sensitivity = _sensitivity_table(model, "int8", prep, data, calib, work,
                                             lambda m, f: progress(m, None if f is None else 0.1 + 0.5 * f), None, cache)
        order = [] if sensitivity is None else list(sensitivity["layer"])
        if k > 0 and k > len(order):
            break
        excluded = order[:k]
        progress(f"accuracy-aware search: trial {k + 1} ({k} layers kept FP32)", 0.6 + 0.4 * k / int(max_trials))
        out = work / f"search-trial-{k}.onnx"
        _quantize(prep, out, cache, calib, exclude=excluded)
        try:
            metric = _metric(_predict(out, prep, data), data, ref_pred)
            delta = (ref_metric - metric) * 100.0
        except MeasurementError as exc:
            warnings.append(f"trial {k}: {exc}")
            metric, delta = float("nan"), float("inf")
        latency = _latency_p50_ms(out, prep, data, model, "mixed" if excluded else "int8-static")
        rows.append({
            "trial": k, "excluded_layers": excluded, "n_excluded": k, "metric": metric, "delta": delta,
            "size_bytes": out.stat().st_size, "latency_p50_ms": latency, "speedup_vs_fp32": ref_latency / latency,
            "meets_budget": bool(delta <= budget), "onnx_path": str(out),
        })
        if delta <= budget:
            break
        k += 1
    tried = pd.DataFrame(rows)
    ok = tried[tried["meets_budget"]]
    chosen = None
    if len(ok):
        chosen = ok.sort_values("latency_p50_ms", kind="stable").iloc[0].to_dict()
        chosen["excluded_layers"] = list(chosen["excluded_layers"])
        if chosen["speedup_vs_fp32"] < 1.0:
            warnings.append(f"the chosen INT8 configuration ran {chosen['speedup_vs_fp32']:.2f}x the FP32 speed in the quick "
                            "latency check: FP32 also meets the budget and was faster here")
    else:
        warnings.append(f"no tried configuration stayed within {budget:g} points of the FP32 metric "
                        f"({len(rows)} trials, at most {max_trials})")
    for row in rows:
        if chosen is None or row["onnx_path"] != chosen["onnx_path"]:
            Path(row["onnx_path"]).unlink(missing_ok=True)
    progress("accuracy-aware search done", 1.0)
    return SearchResult(
        tried=tried, chosen=chosen, budget_points=budget, reference_metric=ref_metric,
        metric="accuracy" if data.labels is not None else "top1_agreement",
        reference_latency_p50_ms=ref_latency, reference_size_bytes=ref_size,
        sensitivity=sensitivity, quantization=prep.describe(), warnings=warnings,
    )


# ---------------------------------------------------------------------------------------------
# Isolated runs (the dashboard and the CLI): the model is loaded only in a spawned child


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


def _json_safe(value: Any) -> Any:
    """JSON-ready copy: numpy values to Python, NaN/Inf to None (strict JSON)."""
    import math

    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and not isinstance(value, (str, bytes)):
        return _json_safe(tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _job_model(payload: dict, emit) -> "LoadedModel":
    from ..config import InputSpec
    from ..models import load_model

    emit({"type": "step", "message": f"loading {payload['label']}", "fraction": 0.0})
    return load_model(payload["source"], inputs=[InputSpec.parse(t) for t in payload["inputs"]],
                      arch=payload["arch"], trust_pickle=payload["trust_pickle"])


def _job_progress(emit) -> Progress:
    def progress(message: str, fraction: float | None = None) -> None:
        emit({"type": "step", "message": message, "fraction": fraction})

    return progress


def _sensitivity_job(payload: dict, emit) -> dict:
    """Child entry of :func:`sensitivity_isolated`."""
    model = _job_model(payload, emit)
    evaluation, _, note = sensitivity_data(model, payload["data"])
    emit({"type": "step", "message": f"preparing the ONNX graph of {model.name}", "fraction": 0.0})
    df = layer_sensitivity(model, payload["method"], evaluation, progress=_job_progress(emit),
                           max_layers=payload["max_layers"])
    return _json_safe({"model": model.name, "method": payload["method"], "data_note": note, "columns": COLUMNS,
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
    res = accuracy_aware_search(model, evaluation, calib, budget_points=payload["budget_points"], workdir=work,
                                progress=_job_progress(emit), max_trials=payload["max_trials"], sensitivity=table)
    keep = Path(res.chosen["onnx_path"]).name if res.chosen else None
    for entry in work.iterdir():  # the prepared graph, calibration cache and export are scratch
        if keep is not None and entry.name.startswith(Path(keep).stem):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    cfg = res.to_config()
    return _json_safe({
        "model": model.name, "data_note": note, "budget_points": res.budget_points, "metric": res.metric,
        "reference_metric": res.reference_metric, "reference_latency_p50_ms": res.reference_latency_p50_ms,
        "reference_size_bytes": res.reference_size_bytes, "tried": res.tried.to_dict("records"),
        "chosen": res.chosen,
        "chosen_config": None if cfg is None else {"precision": cfg.precision, "exclude_layers": list(cfg.exclude_layers)},
        "sensitivity": None if res.sensitivity is None else res.sensitivity.to_dict("records"),
        "quantization": res.quantization, "warnings": res.warnings,
    })


def _run_job(target: str, payload: dict, what: str, on_progress: Progress | None, on_wait: WaitCallback | None,
             timeout_s: float | None, queue: bool) -> dict:
    """Run ``target`` in a spawned child (holding the CPU queue slot when ``queue``); errors as one line."""
    import contextlib
    import os
    import uuid

    from .. import errors
    from ..errors import BenchmarkError
    from ..jobs import DeviceQueue, run_isolated
    from ..paths import logs_dir

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
        cls = getattr(errors, outcome.error_type or "", BenchmarkError)
        raise (cls if isinstance(cls, type) and issubclass(cls, BenchmarkError) else BenchmarkError)(message)
    raise MeasurementError(f"{what} of {payload['label']} failed: {message} (log: {log_path})")


def _records(table: "pd.DataFrame | list[dict] | None") -> list[dict] | None:
    if table is None:
        return None
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    return _json_safe(rows) or None


def _label(source: str) -> str:
    return str(source) if str(source).startswith("sample:") else Path(str(source)).name


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
) -> dict[str, Any]:
    """:func:`layer_sensitivity` of ``source`` (a file or ``sample:NAME``) in a spawned child.

    The caller never loads (or unpickles) the model. The job holds the CPU's device queue slot
    while it runs (``on_wait(n_ahead)`` while queued; ``queue=False`` skips the queue) and reports
    ``on_progress(message, fraction)``. ``data``: dataset name or ``.npz`` path (default: the
    model's own, else random inputs, see :func:`sensitivity_data`). ``timeout_s`` applies per layer.

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
               "data": None if data is None else str(data), "method": method,
               "max_layers": None if max_layers is None else int(max_layers), "label": _label(source)}
    return _run_job("benchmark.compress.sensitivity:_sensitivity_job", payload, f"{method} sensitivity analysis",
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
               "data": None if data is None else str(data), "budget_points": budget, "max_trials": int(max_trials),
               "sensitivity": _records(sensitivity), "workdir": str(work),
               "label": _label(source)}
    try:
        out = _run_job("benchmark.compress.sensitivity:_search_job", payload, "accuracy-aware search",
                       on_progress, on_wait, timeout_s, queue)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if out.get("chosen") is None:
        shutil.rmtree(work, ignore_errors=True)
    return out


__all__ = ["layer_sensitivity", "accuracy_aware_search", "SearchResult", "node_macs", "METHODS", "COLUMNS",
           "sensitivity_data", "expected_data_note", "sensitivity_isolated", "search_isolated",
           "DEFAULT_JOB_TIMEOUT_S", "LATENCY_SETTINGS"]

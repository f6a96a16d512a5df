"""The model's FP32 ONNX graph, prepared exactly as the ``int8-static`` / ``mixed`` compressions
prepare it, and what the analyses do with it: predict on a dataset, score the predictions,
quantize some of its nodes, time it.

Conventions are those of :mod:`benchmark.analysis.sensitivity`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..data.base import Dataset, fixed_batch
from ..errors import CompressionError, DataError, MeasurementError
from ..onnx_graph import cpu_session

if TYPE_CHECKING:
    from ..models.base import LoadedModel

EVAL_THREADS = 2
EVAL_BATCH = 64
LATENCY_THREADS = 1
LATENCY_BATCH = 8
#: RunConfig timing settings of the search's latency check (short: it times every trial).
LATENCY_SETTINGS = {"warmup_iters": 3, "warmup_s": 0.0, "min_iters": 20, "min_duration_s": 0.2, "max_iters": 2000}
CALIB_MAX_SAMPLES = 512
CALIB_BATCH = 32

Progress = Callable[[str, "float | None"], None]


def no_progress(message: str, fraction: float | None = None) -> None:
    return None


@dataclass
class PreparedGraph:
    """The prepared FP32 graph and the INT8 settings the ``int8-static`` compression would use."""

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

    def batches(self, data: Dataset, batch: int) -> list[dict]:
        """Feeds of ``batch`` samples of the graph's inputs; a graph with a static batch size gets
        only full batches of that size."""
        return data.feed_batches(batch, self.batch, names=self.inputs)


def _onnx_source(model: "LoadedModel", workdir: Path) -> Path:
    if model.onnx_path is not None:
        return Path(model.onnx_path)
    if model.torch_module is None:
        raise CompressionError(f"model {model.name!r} has neither an ONNX file nor a PyTorch module")
    from ..models.base import Variant
    from ..models.export import ensure_onnx

    return ensure_onnx(Variant(name="fp32", model=model, torch_module=model.torch_module), workdir)


def prepare(model: "LoadedModel", workdir: Path) -> PreparedGraph:
    """The FP32 graph prepared exactly as the ``int8-static`` / ``mixed`` compressions prepare it
    (same pre-processing, INT8 format and op types), so node names and results carry over."""
    from ..compress import onnx_prep
    from ..compress.quantize.onnx_int8 import choose_int8_format, preprocess, static_recipe
    from ..models.loaders import onnx_io_specs

    src = _onnx_source(model, workdir)
    proto, report = onnx_prep.prepare_for_quantization(onnx_prep.load_model(src), per_channel=True)
    warnings = list(report.warnings)
    stage = workdir / "sens-prep"
    stage.mkdir(parents=True, exist_ok=True)
    path = preprocess(proto, stage, warnings)
    proto = onnx_prep.load_model(path)
    fmt, reduce_range, why = choose_int8_format("auto")
    specs, _ = onnx_io_specs(proto)
    return PreparedGraph(
        path, proto, [s.name for s in specs], fixed_batch(specs), report.per_channel_possible, warnings,
        int8_format=fmt, reduce_range=reduce_range, format_reason=why, op_types=static_recipe(proto)[0],
    )


def fit(dataset: Dataset | None, model: "LoadedModel", prep: PreparedGraph, what: str) -> Dataset:
    """``dataset`` checked against the model's inputs and the graph's; DataError naming ``what``."""
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


def predict(path: Path, prep: PreparedGraph, data: Dataset):
    """Top-1 predictions (argmax over the last axis of the first output); NaN/Inf -> MeasurementError."""
    import numpy as np

    sess = cpu_session(path, EVAL_THREADS)
    preds = []
    for feeds in prep.batches(data, EVAL_BATCH):
        out = np.asarray(sess.run(None, feeds)[0])
        if not np.isfinite(out).all():
            raise MeasurementError(f"{path.name} produced NaN/Inf outputs")
        preds.append(out.argmax(-1))
    if not preds:
        raise DataError(f"the data holds fewer samples than the graph's static batch size {prep.batch}")
    return np.concatenate(preds)


def score(pred, data: Dataset, reference) -> float:
    """Top-1 accuracy against the labels, else top-1 agreement with ``reference`` predictions."""
    import numpy as np

    target = reference if data.labels is None else np.asarray(data.labels)[: len(pred)]
    if target.shape != pred.shape:
        raise DataError(f"labels of {data.name!r} have shape {target.shape} but the model predicts {pred.shape}")
    return float((pred == target[: len(pred)]).mean())


def score_against(path: Path, prep: PreparedGraph, data: Dataset, reference, before: float,
                  warnings: list[str], label: str) -> tuple[float, float]:
    """(:func:`score` of the model at ``path`` on ``data``, its drop from ``before`` in percentage
    points). A model whose outputs go NaN/Inf scores NaN with an infinite drop, and
    ``"{label}: {why}"`` joins ``warnings``."""
    try:
        after = score(predict(path, prep, data), data, reference)
    except MeasurementError as exc:
        warnings.append(f"{label}: {exc}")
        return float("nan"), float("inf")
    return after, (before - after) * 100.0


def latency_p50_ms(path: Path, prep: PreparedGraph, data: Dataset, model: "LoadedModel", precision: str) -> float:
    """Median latency (ms) of one batch of ``LATENCY_BATCH`` samples (or the graph's static batch).

    Timed the way sweeps time: an ONNX Runtime CPU session from :mod:`benchmark.backends`
    (``LATENCY_THREADS`` intra-op thread) and :func:`benchmark.measure.latency.measure_latency`
    with :data:`LATENCY_SETTINGS`, holding the CPU device lock while it times.
    """
    from ..backends import get_backend
    from ..config import RunConfig
    from ..measure.latency import measure_latency
    from ..models.base import Variant

    batch = prep.batch or min(LATENCY_BATCH, len(data))
    first = data.head(batch) or {}
    feeds = {n: first[n] for n in prep.inputs if n in first}
    cfg = RunConfig(backend="onnxruntime", device="cpu", batch_size=batch, threads=LATENCY_THREADS, **LATENCY_SETTINGS)
    variant = Variant(name=path.stem, model=model, precision=precision, onnx_path=path)
    session = get_backend("onnxruntime").prepare(variant, "cpu", threads=cfg.threads)
    try:
        stats = measure_latency(session, feeds, cfg, "cpu")
    finally:
        session.close()
    return float(stats.p50_ms)


def quantize(prep: PreparedGraph, out: Path, cache: Path, calib: Dataset, *, nodes: list[str] | None = None,
             exclude: list[str] | None = None) -> Path:
    """Static QDQ INT8 of ``prep`` (format, op types and per-channel as prepared), MinMax ranges from
    the first :data:`CALIB_MAX_SAMPLES` samples of ``calib``, cached in ``cache`` and reused when
    it exists. ``nodes``: quantize only those; ``exclude``: keep those in float."""
    from ..compress.quantize.onnx_int8 import calibration_reader, qdq_quantize

    reader = None
    if not cache.is_file():
        reader = calibration_reader(prep.batches(calib.subset(CALIB_MAX_SAMPLES), CALIB_BATCH))
    qdq_quantize(prep.path, out, reader, int8_format=prep.int8_format, per_channel=prep.per_channel,
                 reduce_range=prep.reduce_range, op_types=prep.op_types, calib_method="minmax", nodes=nodes,
                 exclude=exclude, cache=cache, failure="ONNX Runtime static quantization failed")
    return out

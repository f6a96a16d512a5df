"""One quality number per row, with a metric that fits the model's outputs.

A row's ``quality`` is ``{metric, value, higher_is_better, reference, n}``:

- ``metric``: one of :data:`METRICS` (``accuracy``, ``top1_agreement``, ``position_agreement``,
  ``cosine``, ``rel_error``);
- ``value``: this variant's value of the metric (a fraction: 0.953 is 95.3 %);
- ``reference``: the FP32 reference's value of the same metric on the same samples (1.0 for
  agreement and cosine, 0.0 for relative error: the reference compared with itself; its own
  accuracy for ``accuracy``);
- ``n``: the number of samples the value is computed over.

The drop in points, used by quality budgets, is ``100 x (reference - value)`` for metrics where
higher is better and ``100 x (value - reference)`` where lower is better (:func:`drop_points`):
positive always means worse.

How the default metric is chosen from the first output (:func:`choose_metric`), first match wins:

1. the metric the user asks for (``--metric`` / the Results page's metric choice);
2. the output kind the user names (``logits``, ``embeddings``, ``regression``);
3. the output's name: ``logit``, ``prob``, ``softmax``, ``class`` mean logits; ``hidden``,
   ``embed``, ``pool``, ``feature``, ``encod`` mean embeddings;
4. one value per sample (a 1-D output, or a last axis of size 1): a regression;
5. labels that index into the last axis (last axis larger than the largest label): logits;
   labels that do not fit the last axis: not logits;
6. rows that are probabilities (non-negative, summing to 1 over the last axis): logits;
7. a 2-D output ``[N, C]`` is classifier logits; anything with more axes (hidden states, feature
   maps) is an embedding.

Logits give ``accuracy`` where labels fit (one label per sample, or one per position), else
``top1_agreement`` for ``[N, C]`` and ``position_agreement`` (argmax over the last axis agreeing at
every position) for sequences ``[N, T, C]``. Embeddings give ``cosine`` (mean over samples of the
cosine of each sample's flattened output with the reference's); regressions give ``rel_error``
(mean over samples of ``||a - b|| / ||b||``, 0 where both are zero).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..config import OUTPUT_KINDS
from ..errors import ConfigError, MeasurementError
from .accuracy import fidelity


@dataclass(frozen=True)
class Metric:
    """A quality metric: its name, a label for axes and tables, its direction and display scale."""

    name: str
    label: str
    higher_is_better: bool
    scale: float = 1.0  # display scale (100 for percentages)
    unit: str = ""
    needs_labels: bool = False
    needs_reference: bool = True

    @property
    def title(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label


#: Every metric a row's ``quality`` may carry.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("accuracy", "top-1 accuracy", True, 100.0, "%", needs_labels=True, needs_reference=False),
    Metric("top1_agreement", "top-1 agreement with FP32", True, 100.0, "%"),
    Metric("position_agreement", "per-position agreement with FP32", True, 100.0, "%"),
    Metric("cosine", "cosine similarity to FP32", True, 1.0),
    Metric("rel_error", "relative error vs FP32", False, 100.0, "%"),
)}
_LOGIT_HINT = re.compile(r"logit|prob|softmax|class", re.I)
_EMBED_HINT = re.compile(r"hidden|embed|pool|feature|encod", re.I)


def get_metric(name: str) -> Metric:
    """The :class:`Metric` called ``name``; ConfigError naming the known ones otherwise."""
    if name not in METRICS:
        raise ConfigError(f"quality metric must be one of {', '.join(METRICS)}; got {name!r}")
    return METRICS[name]


@dataclass(frozen=True)
class MetricChoice:
    """The chosen metric, the output kind it assumes and why (shown to the user)."""

    metric: str
    kind: str
    reason: str


def _labels_fit(shape: tuple[int, ...], labels_shape: tuple[int, ...] | None, max_label: int | None) -> bool | None:
    """True when labels index into the last axis (one per sample or per position); None without labels."""
    if labels_shape is None:
        return None
    if len(shape) < 2 or max_label is None:
        return False
    per_sample = tuple(labels_shape) in ((shape[0],), (shape[0], 1)) and len(shape) == 2
    per_position = tuple(labels_shape) == tuple(shape[:-1])
    return bool((per_sample or per_position) and 0 <= max_label < shape[-1])


def _infer_kind(shape: tuple[int, ...], name: str, fit: bool | None, probabilities: bool) -> tuple[str, str]:
    if name and _LOGIT_HINT.search(name):
        return "logits", f"output {name!r} is named like logits"
    if name and _EMBED_HINT.search(name):
        return "embeddings", f"output {name!r} is named like an embedding"
    if len(shape) <= 1 or shape[-1] == 1:
        return "regression", "one value per sample"
    if fit is True:
        return "logits", f"the labels index into the output's last axis ({shape[-1]} classes)"
    if fit is False:
        return "embeddings", f"the labels do not index into the output's last axis (size {shape[-1]})"
    if probabilities:
        return "logits", "each row of the output sums to 1 (class probabilities)"
    if len(shape) == 2:
        return "logits", f"a 2-D output [N, {shape[-1]}] is read as class scores"
    return "embeddings", f"a {len(shape)}-D output without class scores is read as an embedding"


def choose_metric(shape: Sequence[int], *, name: str = "", labels_shape: Sequence[int] | None = None,
                  max_label: int | None = None, probabilities: bool = False, kind: str | None = None,
                  override: str | None = None) -> MetricChoice:
    """The default quality metric for a first output of ``shape`` (see the module docstring).

    ``labels_shape``/``max_label`` describe the labels when the data has them; ``probabilities``
    says the output's rows are non-negative and sum to 1 (:func:`looks_like_probabilities`);
    ``kind`` is the output kind the user names; ``override`` the metric the user asks for.
    """
    shape = tuple(int(d) for d in shape)
    fit = _labels_fit(shape, tuple(labels_shape) if labels_shape is not None else None, max_label)
    if override:
        metric = get_metric(override)
        if metric.needs_labels and not fit:
            raise ConfigError(f"metric accuracy needs labels that index into the output's last axis; "
                              f"{'the data has no labels' if fit is None else 'these labels do not fit'}: "
                              f"choose one of {', '.join(m for m in METRICS if m != 'accuracy')}")
        return MetricChoice(metric.name, kind or "", "asked for")
    if kind is not None:
        if kind not in OUTPUT_KINDS:
            raise ConfigError(f"output kind must be one of {', '.join(OUTPUT_KINDS)}; got {kind!r}")
        why = f"the output is named as {kind}"
    else:
        kind, why = _infer_kind(shape, name, fit, probabilities)
    if kind == "regression":
        return MetricChoice("rel_error", kind, why)
    if kind == "embeddings":
        return MetricChoice("cosine", kind, why)
    if fit:
        return MetricChoice("accuracy", kind, why + "; labelled data")
    return MetricChoice("top1_agreement" if len(shape) <= 2 else "position_agreement", kind, why)


def looks_like_probabilities(outputs: np.ndarray, atol: float = 1e-3) -> bool:
    """True when every row over the last axis is non-negative and sums to 1 (within ``atol``)."""
    arr = np.asarray(outputs, dtype=np.float64)
    if arr.ndim < 2 or arr.shape[-1] < 2 or arr.size == 0:
        return False
    return bool(np.all(arr >= 0) and np.allclose(arr.sum(axis=-1), 1.0, atol=atol))


def choose_metric_for(outputs, labels=None, *, name: str = "", kind: str | None = None,
                      override: str | None = None) -> MetricChoice:
    """:func:`choose_metric` from the reference's first output (one array) and the labels."""
    arr = np.asarray(outputs)
    lab = None if labels is None else np.asarray(labels)
    max_label = None
    if lab is not None and lab.size and np.issubdtype(lab.dtype, np.integer):
        max_label = int(lab.max()) if int(lab.min()) >= 0 else -1
    return choose_metric(arr.shape, name=name, labels_shape=None if lab is None else lab.shape,
                         max_label=max_label, probabilities=looks_like_probabilities(arr), kind=kind,
                         override=override)


def choose_metric_asked(outputs, labels=None, *, name: str = "", kind: str | None = None,
                        override: str | None = None) -> tuple[MetricChoice, str | None]:
    """(:func:`choose_metric_for` with the metric the user asked for, None); when that metric cannot
    be computed here (accuracy without labels), (the default choice, a note saying why)."""
    try:
        return choose_metric_for(outputs, labels, name=name, kind=kind, override=override), None
    except ConfigError as exc:
        choice = choose_metric_for(outputs, labels, name=name, kind=kind)
        return choice, f"quality metric {override} not used ({exc}); {choice.metric} instead"


# --- computing values ----------------------------------------------------------------------------
def metric_value(metric: str, outputs, reference=None, labels=None) -> float:
    """The value of ``metric`` for ``outputs`` (first output, ``[N, ...]``) against the FP32
    ``reference`` outputs on the same samples, or ``labels`` for ``accuracy``. Computed in float64."""
    get_metric(metric)
    a = np.asarray(outputs, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise MeasurementError("outputs contain NaN/Inf; the variant is numerically broken")
    if metric == "accuracy":
        if labels is None:
            raise MeasurementError("accuracy needs labels")
        lab = np.asarray(labels).reshape(a.shape[:-1]) if a.ndim >= 2 else np.asarray(labels)
        return float(np.mean(np.argmax(a, axis=-1) == lab))
    if reference is None:
        raise MeasurementError(f"{metric} compares with the FP32 reference's outputs, and there are none")
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise MeasurementError(f"{metric}: output shape {a.shape} differs from the reference's {b.shape}")
    if metric in ("top1_agreement", "position_agreement"):
        if a.ndim < 2:
            raise MeasurementError(f"{metric} needs outputs with a class axis; got shape {a.shape}")
        return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))
    value = fidelity(a, b)[metric]  # cosine / rel_error: per-sample, as the fidelity columns
    if value is None:
        raise MeasurementError(f"{metric}: " + ("the reference output is all zeros where this variant's is not"
                                                if metric == "rel_error" else "no samples to compare"))
    return float(value)


def reference_value(metric: str, reference=None, labels=None) -> float:
    """The FP32 reference's own value of ``metric``: its accuracy, 1.0 for agreement and cosine, 0.0
    for relative error."""
    if metric == "accuracy":
        return metric_value("accuracy", reference, labels=labels)
    return 0.0 if metric == "rel_error" else 1.0


def quality(metric: str, outputs, reference=None, labels=None, reference_outputs_value: float | None = None) -> dict[str, Any]:
    """The row's ``quality`` object for ``outputs``; ``reference`` holds the FP32 outputs on the same
    samples (for ``accuracy`` only its accuracy is used, or ``reference_outputs_value`` when given)."""
    m = get_metric(metric)
    value = metric_value(metric, outputs, reference, labels)
    if reference_outputs_value is not None:
        ref = float(reference_outputs_value)
    elif metric == "accuracy" and reference is None:
        ref = None
    else:
        ref = reference_value(metric, reference, labels)
    return {"metric": m.name, "value": value, "higher_is_better": m.higher_is_better, "reference": ref,
            "n": int(len(np.asarray(outputs)))}


def row_quality(metric: str, outputs, reference=None, labels=None,
                why: str | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """``(quality, None)`` for a result row, or ``(None, why not)`` as a row warning: outputs that
    vary in shape between batches, no reference outputs, missing labels. ``why`` (the
    :class:`MetricChoice` reason) is kept in the quality object."""
    if outputs is None:
        return None, f"quality ({metric}) not computed: no outputs were kept"
    if isinstance(outputs, (list, tuple)) or isinstance(reference, (list, tuple)):
        return None, f"quality ({metric}) not computed: the outputs vary in shape between batches"
    if metric == "accuracy" and labels is None:
        return None, "quality (accuracy) not computed: the data has no labels"
    try:
        q = quality(metric, outputs, reference, labels)
    except MeasurementError as exc:
        return None, f"quality ({metric}) not computed: {exc}"
    if why:
        q["why"] = why
    return q, None


def drop_points(q: Mapping[str, Any] | None) -> float | None:
    """The quality drop in points: ``100 x (reference - value)``, sign flipped where lower is better;
    positive = worse. None when the value or the reference is missing."""
    if not q:
        return None
    value, ref = q.get("value"), q.get("reference")
    if value is None or ref is None or not math.isfinite(float(value)) or not math.isfinite(float(ref)):
        return None
    higher = q.get("higher_is_better")
    if higher is None:
        higher = get_metric(str(q.get("metric"))).higher_is_better
    drop = 100.0 * (float(ref) - float(value))
    return drop if higher else (-drop or 0.0)  # never -0.0


__all__ = ["METRICS", "OUTPUT_KINDS", "Metric", "MetricChoice", "get_metric", "choose_metric", "choose_metric_for",
           "choose_metric_asked", "looks_like_probabilities", "metric_value", "reference_value", "quality", "row_quality",
           "drop_points"]

"""Values derived from several result rows: ``speedup_vs_fp32`` and the quality columns of a frame.

Both the store side (rows as :meth:`RunResult.to_json` dicts, or ``RunResult`` objects) and the
frame side (a DataFrame of :meth:`RunResult.to_row` rows) call these, so a stored value and one
computed for an old row agree.

- The **FP32 reference** of a row is the ``fp32`` unpruned row of the same sweep, machine
  (``target`` where rows carry one), backend, device, batch size and runtime settings (the part of
  the variant's name after ``@``, :mod:`benchmark.naming`): the variant named ``fp32`` when there
  is one, else the fp32 unpruned variant with the most MACs (low-rank variants have fewer).
- ``speedup_vs_fp32`` = reference p50 latency / this row's p50 latency (> 1 = faster). None where
  either p50 is missing or the group has no reference row.
- **Quality columns** (:func:`quality_frame`): ``quality_metric``, ``quality_value``,
  ``quality_reference``, ``quality_higher_is_better`` and ``quality_drop_points`` for one metric
  across the frame; a row's stored ``quality`` is used where its metric is the one asked for,
  otherwise the value comes from the row's accuracy/fidelity columns (accuracy's reference is the
  FP32 reference row's accuracy; agreement and cosine are 1.0 for the reference, relative error 0).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..naming import compression_name, runtime_tag
from .quality import METRICS, drop_points, get_metric

if TYPE_CHECKING:
    import pandas as pd

#: Row columns (``to_row``) holding each metric's value when the row's stored quality is another metric.
METRIC_COLUMNS: dict[str, str] = {
    "accuracy": "accuracy_top1",
    "top1_agreement": "fidelity_top1_agreement",
    "position_agreement": "fidelity_top1_agreement",
    "cosine": "fidelity_cosine",
    "rel_error": "fidelity_rel_error",
}
#: Metric used for rows without a stored quality, in order of preference (the column must hold a value).
LEGACY_ORDER = ("accuracy", "top1_agreement", "cosine", "rel_error")


def _get(row: Any, *keys: str) -> Any:
    """The first present value of ``keys`` in a flat row, a ``to_json`` dict or a RunResult
    (``latency_ms.p50`` is read for ``latency_p50_ms``)."""
    data = row if isinstance(row, Mapping) else (row.to_json() if hasattr(row, "to_json") else {})
    for key in keys:
        if key in data and data[key] is not None and not _nan(data[key]):
            return data[key]
        if key == "latency_p50_ms" and isinstance(data.get("latency_ms"), Mapping):
            value = data["latency_ms"].get("p50")
            if value is not None and not _nan(value):
                return value
    return None


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def group_key(row: Any) -> tuple:
    """Rows compared with one FP32 reference: same sweep, machine, backend, device, batch size and
    runtime settings."""
    batch = _get(row, "batch_size")
    return (_get(row, "sweep_id"), _get(row, "target"), _get(row, "backend"), _get(row, "device"),
            None if batch is None else int(batch), runtime_tag(_get(row, "variant")))


def is_fp32_unpruned(row: Any) -> bool:
    ratio = _get(row, "prune_ratio")
    return _get(row, "precision") == "fp32" and (ratio is None or float(ratio) == 0.0)


def reference_index(rows: list[Any]) -> dict[tuple, int]:
    """``{group_key: index of the group's FP32 reference row}`` over the ok rows of ``rows``."""
    best: dict[tuple, tuple[int, int]] = {}
    for i, row in enumerate(rows):
        if _get(row, "status") not in (None, "ok") or not is_fp32_unpruned(row):
            continue
        rank = (1 if compression_name(_get(row, "variant")) == "fp32" else 0, int(_get(row, "macs") or 0))
        key = group_key(row)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, i)
    return {k: i for k, (_, i) in best.items()}


def speedups_vs_fp32(rows: Iterable[Any]) -> list[float | None]:
    """``speedup_vs_fp32`` of every row (None where it cannot be computed), in order."""
    rows = list(rows)
    refs = reference_index(rows)
    out: list[float | None] = []
    for row in rows:
        ref = refs.get(group_key(row))
        p50 = _get(row, "latency_p50_ms")
        base = None if ref is None else _get(rows[ref], "latency_p50_ms")
        ok = _get(row, "status") in (None, "ok")
        out.append(float(base) / float(p50) if ok and base and p50 and float(p50) > 0 else None)
    return out


def fill_speedups(rows: list[Any]) -> list[Any]:
    """Set ``speedup_vs_fp32`` on ``RunResult`` objects (one sweep's rows, e.g. ``store.get_results(id)``)
    and return the ones whose value changed, for the caller to store again."""
    changed = []
    for row, value in zip(rows, speedups_vs_fp32(rows)):
        old = getattr(row, "speedup_vs_fp32", None)
        if (old is None) != (value is None) or (old is not None and abs(old - value) > 1e-12 * max(1.0, abs(value))):
            row.speedup_vs_fp32 = value
            changed.append(row)
    return changed


def _frame_rows(df: "pd.DataFrame") -> list[dict]:
    return df.to_dict("records")


def add_speedup(df: "pd.DataFrame") -> "pd.DataFrame":
    """``df`` with ``speedup_vs_fp32`` filled where the rows did not store one."""
    out = df.copy()
    computed = speedups_vs_fp32(_frame_rows(out)) if len(out) else []
    if "speedup_vs_fp32" in out:
        import pandas as pd

        stored = pd.to_numeric(out["speedup_vs_fp32"], errors="coerce")
        out["speedup_vs_fp32"] = [s if not math.isnan(s) else c for s, c in zip(stored, computed)]
    else:
        out["speedup_vs_fp32"] = computed
    return out


def available_metrics(df: "pd.DataFrame") -> list[str]:
    """Metrics with at least one value in ``df`` (stored quality or accuracy/fidelity columns).

    ``top1_agreement`` and ``position_agreement`` read the same fidelity column (argmax agreement
    over the last axis); the frame offers the one its rows stored, ``top1_agreement`` for old rows."""
    import pandas as pd

    stored = set(df["quality_metric"].dropna()) if "quality_metric" in df else set()
    agreement = "position_agreement" if "position_agreement" in stored else "top1_agreement"
    found = []
    for name in METRICS:
        if name in ("top1_agreement", "position_agreement") and name != agreement:
            continue
        col = METRIC_COLUMNS[name]
        if name in stored or (col in df and pd.to_numeric(df[col], errors="coerce").notna().any()):
            found.append(name)
    return found


def default_metric(df: "pd.DataFrame") -> str | None:
    """The frame's metric: the one most ok rows stored, else the first of :data:`LEGACY_ORDER` present."""
    if "quality_metric" in df:
        ok = df[df["status"] == "ok"] if "status" in df else df
        counts = ok["quality_metric"].dropna().value_counts()
        if len(counts):
            return str(counts.index[0])
    available = available_metrics(df)
    return next((m for m in LEGACY_ORDER if m in available), None)


def _row_quality(row: Mapping, metric: str, ref_row: Mapping | None) -> dict[str, Any] | None:
    m = get_metric(metric)
    if row.get("quality_metric") == metric and _get(row, "quality_value") is not None:
        return {"metric": metric, "value": float(row["quality_value"]), "higher_is_better": m.higher_is_better,
                "reference": _get(row, "quality_reference")}
    value = _get(row, METRIC_COLUMNS[metric])
    if value is None:
        return None
    if metric == "accuracy":
        ref = None if ref_row is None else _get(ref_row, METRIC_COLUMNS[metric])
    else:
        ref = 0.0 if metric == "rel_error" else 1.0
    return {"metric": metric, "value": float(value), "higher_is_better": m.higher_is_better,
            "reference": None if ref is None else float(ref)}


def quality_frame(df: "pd.DataFrame", metric: str | None = None) -> "pd.DataFrame":
    """``df`` with the quality columns for ``metric`` (default: :func:`default_metric`); see the
    module docstring. Rows without a value for the metric hold None."""
    out = df.copy()
    metric = metric or (default_metric(out) if len(out) else None)
    cols = ("quality_metric", "quality_value", "quality_reference", "quality_higher_is_better", "quality_drop_points")
    if metric is None or out.empty:
        for c in cols:
            out[c] = None if c not in out or out.empty else out[c]
        return out
    rows = _frame_rows(out)
    refs = reference_index(rows)
    values = []
    for row in rows:
        ref = refs.get(group_key(row))
        q = _row_quality(row, metric, None if ref is None else rows[ref])
        values.append(q)
    out["quality_metric"] = [metric if q else None for q in values]
    out["quality_value"] = [q["value"] if q else None for q in values]
    out["quality_reference"] = [q["reference"] if q else None for q in values]
    out["quality_higher_is_better"] = [q["higher_is_better"] if q else None for q in values]
    out["quality_drop_points"] = [drop_points(q) for q in values]
    return out


__all__ = ["METRIC_COLUMNS", "group_key", "is_fp32_unpruned", "reference_index", "speedups_vs_fp32", "fill_speedups",
           "add_speedup",
           "available_metrics", "default_metric", "quality_frame"]

"""Accuracy-aware INT8 search: full static INT8 first, then keep the most sensitive layers FP32
one more at a time until the metric stays within a budget (conventions in
:mod:`benchmark.analysis.sensitivity`)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.base import Dataset
from ..errors import ConfigError
from .prepared import Progress, fit, latency_p50_ms, no_progress, predict, prepare, quantize, score, score_against
from .sensitivity import sensitivity_table

if TYPE_CHECKING:
    import pandas as pd

    from ..models.base import LoadedModel


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


def _choose(tried: "pd.DataFrame", budget: float, max_trials: int, warnings: list[str]) -> dict | None:
    """The fastest tried configuration within the budget (None when none is), with a warning when
    that is slower than FP32 or when nothing met the budget."""
    ok = tried[tried["meets_budget"]]
    if not len(ok):
        warnings.append(f"no tried configuration stayed within {budget:g} points of the FP32 metric "
                        f"({len(tried)} trials, at most {max_trials})")
        return None
    chosen = ok.sort_values("latency_p50_ms", kind="stable").iloc[0].to_dict()
    chosen["excluded_layers"] = list(chosen["excluded_layers"])
    if chosen["speedup_vs_fp32"] < 1.0:
        warnings.append(f"the chosen INT8 configuration ran {chosen['speedup_vs_fp32']:.2f}x the FP32 speed in the quick "
                        "latency check: FP32 also meets the budget and was faster here")
    return chosen


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
    progress = progress or no_progress
    if workdir is None:
        work = Path(tempfile.mkdtemp(prefix="slimbench-search-"))  # kept: it holds the chosen model
    else:
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
    prep = prepare(model, work)
    data = fit(eval_data, model, prep, "evaluation data")
    calib = fit(calib_data, model, prep, "calibration data")
    cache = work / "search-calib-cache.json"
    cache.unlink(missing_ok=True)
    warnings = list(prep.warnings)
    ref_pred = predict(prep.path, prep, data)
    ref_metric = score(ref_pred, data, ref_pred)
    ref_latency = latency_p50_ms(prep.path, prep, data, model, "fp32")
    ref_size = prep.path.stat().st_size
    if sensitivity is not None:
        missing = set(sensitivity["layer"]) - {n.name for n in prep.proto.graph.node}
        if missing:
            raise ConfigError(f"sensitivity table names layers not in this model's graph: {', '.join(sorted(missing)[:5])}")
    rows: list[dict[str, Any]] = []
    k = 0
    while k < int(max_trials):
        if k == 1 and sensitivity is None:  # full INT8 missed the budget: rank the layers
            sensitivity = sensitivity_table(model, "int8", prep, data, calib, work,
                                             lambda m, f: progress(m, None if f is None else 0.1 + 0.5 * f), None, cache)
        order = [] if sensitivity is None else list(sensitivity["layer"])
        if k > 0 and k > len(order):
            break
        excluded = order[:k]
        progress(f"accuracy-aware search: trial {k + 1} ({k} layers kept FP32)", 0.6 + 0.4 * k / int(max_trials))
        out = work / f"search-trial-{k}.onnx"
        quantize(prep, out, cache, calib, exclude=excluded)
        metric, delta = score_against(out, prep, data, ref_pred, ref_metric, warnings, f"trial {k}")
        latency = latency_p50_ms(out, prep, data, model, "mixed" if excluded else "int8-static")
        rows.append({
            "trial": k, "excluded_layers": excluded, "n_excluded": k, "metric": metric, "delta": delta,
            "size_bytes": out.stat().st_size, "latency_p50_ms": latency, "speedup_vs_fp32": ref_latency / latency,
            "meets_budget": bool(delta <= budget), "onnx_path": str(out),
        })
        if delta <= budget:
            break
        k += 1
    tried = pd.DataFrame(rows)
    chosen = _choose(tried, budget, max_trials, warnings)
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

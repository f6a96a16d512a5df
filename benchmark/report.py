"""A self-contained HTML report of one or more sweeps, and sweep summaries for tables.

:func:`build_report` returns one HTML document that needs nothing else: plotly.js is inlined once
(about 4.5 MB), figures come from :mod:`benchmark.plots`, followed by the results table (headers
with units), the failed or skipped runs with their reasons, each sweep's configuration and the
environment the rows were measured in. Opening the file offline shows everything.
"""
from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from . import plots

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1400px;
       color: #222; font-size: 16px; padding: 0 1rem; }
h1 { font-size: 2rem; } h2 { margin-top: 2.5rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
table { border-collapse: collapse; font-size: 14px; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; } pre { background: #f6f6f6; padding: .8rem; overflow-x: auto; font-size: 13px; }
"""

#: What the report says about how the numbers were measured.
CONVENTIONS = (
    "Latency: wall time of one inference on one batch after warm-up; p50 is the median over the timed iterations (ms).",
    "Speedup vs FP32 = FP32 p50 latency / variant p50 latency, same backend, device and batch size.",
    "Throughput = batch size / mean latency (samples/s): total work over total time.",
    "MACs: multiply-accumulates for one sample; FLOPs = 2 x MACs.",
    "Size: serialized model size in MB (10^6 bytes).",
    "Quality: one metric chosen from the model's outputs (top-1 accuracy on labelled classifier data, agreement "
    "with FP32 for logits without labels, cosine similarity for embeddings, relative error for regressions); "
    "drop in points = 100 x (reference - value), positive = worse.",
    "Unstable timings (CV, p99/p50, min/p50 or other processes' CPU use past their thresholds on the last timing "
    "attempt) are faded in the plots and left out of the Pareto front.",
)


def sweep_config(record: Any) -> dict[str, Any]:
    """The SweepConfig dict stored with a sweep record (``config["sweep"]``, or the config itself)."""
    cfg = getattr(record, "config", None) if not isinstance(record, dict) else record.get("config")
    cfg = cfg or {}
    return cfg.get("sweep", cfg) if isinstance(cfg, dict) else {}


def short_model(model: str) -> str:
    """``sample:NAME`` as is; a file path as its file name (uploads live under long content-hash folders)."""
    text = str(model)
    return text if text.startswith("sample:") else Path(text).name or text


def sweep_label(record: Any) -> str:
    """``#12 sample:digits-cnn [fp32,int8-static] prune 0,0.5 on pytorch,onnxruntime - done (16 runs)``."""
    cfg = sweep_config(record)
    asked = (getattr(record, "config", None) or {}).get("recommend") if not isinstance(record, dict) else None
    if asked:  # a recommendation's record (benchmark.recommend)
        return (f"#{record.id} {short_model(record.model)} recommendation within {asked.get('budget_points', '?')} "
                f"points - {record.status}")
    precisions = ",".join(cfg.get("precisions") or ()) or "?"
    backends = ",".join(cfg.get("backends") or ()) or "?"
    ratios = [float(r) for r in cfg.get("prune_ratios") or ()]
    prune = f" prune {','.join(f'{r:g}' for r in ratios)}" if any(ratios) else ""
    counts = getattr(record, "counts", {}) or {}
    total = getattr(record, "total_runs", 0) or sum(counts.values())
    return f"#{record.id} {short_model(record.model)} [{precisions}]{prune} on {backends} - {record.status} ({total} runs)"


def sweeps_table(records: Iterable[Any]) -> pd.DataFrame:
    """One row per sweep: id, started (UTC), model, status, runs ok/failed/skipped, precisions, backends."""
    rows = []
    for rec in records:
        cfg = sweep_config(rec)
        counts = rec.counts or {}
        rows.append({
            "sweep": rec.id,
            "created (UTC)": str(rec.created_at)[:19].replace("T", " "),
            "model": short_model(rec.model),
            "device": rec.device,
            "status": rec.status,
            "runs": rec.total_runs or sum(counts.values()),
            "ok": counts.get("ok", 0),
            "failed": counts.get("failed", 0),
            "skipped": counts.get("skipped", 0),
            "precisions": ", ".join(cfg.get("precisions") or ()),
            "prune ratios": ", ".join(f"{float(r):g}" for r in cfg.get("prune_ratios") or ()),
            "backends": ", ".join(cfg.get("backends") or ()),
            "batch sizes": ", ".join(str(b) for b in cfg.get("batch_sizes") or ()),
        })
    return pd.DataFrame(rows, columns=["sweep", "created (UTC)", "model", "device", "status", "runs", "ok", "failed",
                                       "skipped", "precisions", "prune ratios", "backends", "batch sizes"])


def _table_html(df: pd.DataFrame) -> str:
    if df is None or df.empty:
        return "<p class='note'>(none)</p>"
    return df.to_html(index=False, border=0, na_rep="n/a", float_format=lambda v: f"{v:.4g}", escape=True)


def _environment_html(env: dict[str, Any] | None) -> str:
    if not env:
        return "<p class='note'>No environment recorded.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td style='text-align:left'>{html.escape(json.dumps(v) if isinstance(v, (list, dict)) else str(v))}</td></tr>"
        for k, v in env.items())
    return f"<table><tr><th>key</th><th>value</th></tr>{rows}</table>"


def build_report(
    df: pd.DataFrame,
    *,
    samples: pd.DataFrame | None = None,
    sweeps: Iterable[Any] = (),
    environment: dict[str, Any] | None = None,
    title: str = "Slimbench report",
    latency_budget_ms: float | None = None,
    metric: str | None = None,
) -> str:
    """One self-contained HTML page for the rows in ``df`` (a results frame of one or more sweeps).

    ``samples``: per-iteration latencies (:func:`benchmark.plots.latency_samples_frame`) for the
    distribution plot; ``sweeps``: the sweep records (their configs are listed); ``environment``:
    the machine the rows were measured on (default: the first row's ``env`` is not in the frame,
    so pass :func:`benchmark.measure.environment.collect_environment` or a stored row's env);
    ``metric``: the quality metric of the plots and the table (default: the rows' own).
    """
    sweeps = list(sweeps)
    several = df is not None and "sweep_id" in df and df["sweep_id"].nunique() > 1
    figures = [
        plots.tradeoff_figure(df, latency_budget_ms=latency_budget_ms, color_by="sweep" if several else "precision",
                              metric=metric),
        plots.throughput_figure(df, color_by="sweep" if several else "precision"),
        plots.size_macs_figure(df, metric=metric),
        plots.speedup_figure(df),
        plots.agreement_figure(df, metric=metric),
    ]
    if samples is not None:
        figures.append(plots.latency_distribution_figure(samples))
    parts = []
    for i, fig in enumerate(figures):
        if plots.is_empty_figure(fig) and i > 0:
            continue  # an empty secondary plot says nothing in a report
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(True if not parts else False),
                                 config={"displaylogo": False}))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sweep_html = "".join(
        f"<h3>{html.escape(sweep_label(s))}</h3><pre>{html.escape(json.dumps(sweep_config(s), indent=2))}</pre>"
        for s in sweeps)
    conventions = "".join(f"<li>{html.escape(c)}</li>" for c in CONVENTIONS)
    legend = "".join(f"<li><b>{html.escape(what)}</b>: {html.escape(means)}</li>" for what, means in plots.MARKER_LEGEND)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">Generated {stamp} by Slimbench. {len(df) if df is not None else 0} result rows.</p>
<ul class="note">{conventions}</ul>
<h2>Plots</h2>
<ul class="note">{legend}</ul>
{''.join(parts)}
<h2>Results</h2>
{_table_html(plots.display_table(df, metric=metric))}
<h2>Failed or skipped runs</h2>
{_table_html(plots.failures_table(df))}
<h2>Sweeps</h2>
{sweep_html or "<p class='note'>(not given)</p>"}
<h2>Environment</h2>
{_environment_html(environment)}
</body></html>
"""


__all__ = ["build_report", "sweep_label", "sweeps_table", "sweep_config", "short_model", "CONVENTIONS"]

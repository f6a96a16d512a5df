"""Plotly figure builders: pure functions from a results DataFrame to a ``plotly.graph_objects.Figure``.

The frames are those of :meth:`benchmark.store.Store.results_frame` (one ``RunResult.to_row()``
per row). Conventions shown on the axes:

- Latency is the median (p50) wall time of one inference on one batch, in milliseconds, in every
  figure and table; ``speedup_vs_fp32`` = FP32 p50 / variant p50 on the same machine, backend,
  device and batch size (:mod:`benchmark.measure.derived`).
- Machines: a row's machine is its ``target`` (a sweep across the nodes of a Ray cluster), else its
  GPU or CPU model (:func:`machine_of`). A figure never joins or compares rows of two machines in
  one line, bar or speedup; ``color_by="machine"`` gives each machine its own colour.
- Throughput is ``batch_size / mean latency`` in samples per second: total work over total time,
  so it is the one number built on the mean, and its axis and column say so.
- Quality is one metric for the whole frame (:mod:`benchmark.measure.quality`): the metric the
  rows stored (chosen from the model's outputs), or the one the caller asks for (``metric=``);
  rows measured before rows stored a quality fall back to top-1 accuracy, then agreement with
  FP32, then cosine similarity.
- Size is the serialized model size in MB (10^6 bytes); MACs are multiply-accumulates for one
  sample (FLOPs = 2 x MACs).
- The Pareto front holds the variants that no other variant beats on both latency and quality;
  rows with unstable timings are drawn but left out of it (and out of the sweet spot).

Every builder returns a figure with a clear annotation instead of raising when the frame is
empty or holds only failed rows. Colours are stable across pages: :data:`PALETTE` maps each
precision and each backend to one colour. How points are drawn is defined once, in
:data:`MARKER_LEGEND` and :func:`marker_style`; the Results page shows :func:`legend_markdown`.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .measure import derived
from .measure.quality import Metric, get_metric
from .results import calibration_warning

#: Base font size (px); legends and axis titles stay readable on a projector.
FONT_SIZE = 16

#: One colour per precision and per backend (names do not collide), used by every page.
PALETTE: dict[str, str] = {
    # precisions
    "fp32": "#0072B2",
    "fp16": "#E69F00",
    "bf16": "#CC79A7",
    "int8-dynamic": "#56B4E9",
    "int8-static": "#009E73",
    "mixed": "#7F3C8D",
    # backends
    "pytorch": "#EE4C2C",
    "onnxruntime": "#555555",
    "tensorrt": "#76B900",
}
#: Colours for anything else (sweeps in an overlay, unknown names), in order.
EXTRA_COLORS = ("#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F3C8D", "#999999")
#: Marker symbol per backend.
BACKEND_SYMBOLS: dict[str, str] = {"pytorch": "circle", "onnxruntime": "square", "onnxruntime-trt": "triangle-up",
                                   "tensorrt": "diamond", "torch-tensorrt": "hexagon"}
#: Line dash per backend.
BACKEND_DASH: dict[str, str] = {"pytorch": "solid", "onnxruntime": "dash", "onnxruntime-trt": "dashdot",
                                "tensorrt": "dot", "torch-tensorrt": "longdash"}
_OTHER_SYMBOLS = ("cross", "x", "star", "pentagon", "triangle-down", "hourglass")

#: The marker legend: how every figure draws a row. New features add their mark here (and to
#: :func:`marker_style`) instead of inventing their own; the Results page shows it as is.
MARKER_LEGEND: tuple[tuple[str, str], ...] = (
    ("colour", "precision (History & compare: one colour per sweep; 'colour by machine': one colour per machine)"),
    ("shape", "backend: circle PyTorch, square ONNX Runtime, triangle-up ONNX Runtime + TensorRT provider, "
              "diamond TensorRT, hexagon Torch-TensorRT"),
    ("hollow marker", "pruned or low-rank variant"),
    ("faded marker", "unstable timing (still noisy on its last timing attempt; the hover says why); left out of "
                     "the Pareto front and the star"),
    ("dark outline", "measured on another machine than the first one in the frame (its name is in the legend "
                     "entry, after @)"),
    ("ringed points on a dotted line", "Pareto front: no other variant is both faster and better (one front per "
                                       "sweep when sweeps are compared, per machine when coloured by machine)"),
    ("gold star", "the pick: the recommended variant where there is one, else the best quality within the latency "
                  "budget (one mark when both exist)"),
    ("horizontal error bar", "95 % interval of the p50 from interleaved repeats (recommendation rows); bars that "
                             "overlap mean no significant difference"),
)
#: Opacity of a row whose timing stayed unstable.
UNSTABLE_OPACITY = 0.3
#: Outline colours of rows from the 2nd, 3rd, ... machine of a frame (the first keeps the point's colour).
MACHINE_OUTLINES = ("#000000", "#7F7F7F", "#8C564B", "#17BECF")
#: The star that marks the pick (recommended variant / best within the latency budget).
PICK_MARKER = dict(symbol="star", size=26, color="#FFD700", line=dict(width=2, color="#222222"))
LATENCY_TITLE = "median latency p50 (ms)"
THROUGHPUT_TITLE = "throughput (samples/s = batch / mean latency)"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def color_for(name: Any, index: int = 0) -> str:
    """The palette colour of a precision or backend; other names get a colour by ``index``."""
    if name in PALETTE:
        return PALETTE[name]
    return EXTRA_COLORS[index % len(EXTRA_COLORS)]


def symbol_for(backend: Any, index: int = 0) -> str:
    return BACKEND_SYMBOLS.get(backend, _OTHER_SYMBOLS[index % len(_OTHER_SYMBOLS)])


def _layout(fig: go.Figure, title: str | None = None, height: int = 520) -> go.Figure:
    """House style: white template, 16 px fonts (legends and axis titles readable on a projector)."""
    n_legend = sum(1 for t in fig.data if t.showlegend is not False and t.name)
    fig.update_layout(
        template="plotly_white",
        font=dict(size=FONT_SIZE),
        title=dict(text=title, font=dict(size=FONT_SIZE + 4)) if title else None,
        legend=dict(font=dict(size=FONT_SIZE - 1), tracegroupgap=2),
        hoverlabel=dict(font_size=FONT_SIZE - 1),
        height=max(height, 120 + 26 * n_legend) if fig.layout.showlegend is not False else height,
        margin=dict(l=70, r=30, t=70 if title else 30, b=70),
    )
    fig.update_xaxes(title_font=dict(size=FONT_SIZE), tickfont=dict(size=FONT_SIZE - 2))
    fig.update_yaxes(title_font=dict(size=FONT_SIZE), tickfont=dict(size=FONT_SIZE - 2))
    return fig


def empty_figure(message: str, title: str | None = None) -> go.Figure:
    """A blank figure that says why there is nothing to plot."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=FONT_SIZE + 2))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=320)


def is_empty_figure(fig: go.Figure) -> bool:
    """True for a figure made by :func:`empty_figure` (no traces, one annotation)."""
    return not fig.data and len(fig.layout.annotations) >= 1


def ok_rows(df: pd.DataFrame | None) -> pd.DataFrame:
    """The rows with ``status == "ok"`` (an empty frame for None)."""
    if df is None or df.empty or "status" not in df:
        return pd.DataFrame() if df is None else df.iloc[0:0]
    return df[df["status"] == "ok"]


def legend_markdown() -> str:
    """:data:`MARKER_LEGEND` as Markdown bullets (shown on the Results page and in reports)."""
    return "\n".join(f"- **{what}**: {means}" for what, means in MARKER_LEGEND)


def quality_axis(df: pd.DataFrame, metric: str | None = None) -> tuple[pd.DataFrame, Metric | None]:
    """``df`` with the quality columns of ``metric`` (default: the frame's own, see
    :func:`benchmark.measure.derived.default_metric`) and that metric (None: nothing measured)."""
    if df is None or df.empty:
        return df, None
    metric = metric or derived.default_metric(df)
    if metric is None:
        return df, None
    out = derived.quality_frame(df, metric)
    if pd.to_numeric(out["quality_value"], errors="coerce").notna().sum() == 0:
        return out, None
    return out, get_metric(metric)


def quality_metric(df: pd.DataFrame, metric: str | None = None) -> tuple[str | None, str, float]:
    """(column, axis title, display scale) of the frame's quality metric; the column is
    ``quality_value`` of :func:`quality_axis`'s frame (None when nothing was measured)."""
    _, m = quality_axis(df, metric)
    return ("quality_value", m.title, m.scale) if m else (None, "", 1.0)


def _text(row: Any, key: str) -> str:
    value = row.get(key) if hasattr(row, "get") else None
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def machine_of(row: Any) -> str | None:
    """The machine a row ran on, for people: its ``target`` where rows carry one (a Ray node as
    ``host (node 1a2b3c4d)``, a resource as ``resource NAME``), else its GPU or CPU model."""
    target = _text(row, "target")
    if target:
        kind, _, name = target.partition("=")
        if kind == "node":
            return f"{_text(row, 'env_host') or 'node'} (node {name[:8]})"
        return f"{kind} {name}" if name else target
    for key in ("env_gpu", "env_cpu"):
        if _text(row, key):
            return _text(row, key)
    return None


def machines(df: pd.DataFrame) -> list[str]:
    """The machines of ``df``'s rows, in order of first appearance."""
    return list(dict.fromkeys(m for m in (machine_of(r) for _, r in df.iterrows()) if m)) if len(df) else []


def with_machines(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A copy of ``df`` with a ``_machine`` column (``""`` when unknown), and its machines in order."""
    out = df.copy()
    out["_machine"] = [machine_of(r) or "" for _, r in out.iterrows()] if len(out) else []
    return out, list(dict.fromkeys(m for m in out["_machine"] if m))


def machine_color(machine_list: list[str], machine: Any) -> str:
    """The colour of ``machine`` when figures colour by machine (stable within one frame)."""
    return color_for(None, machine_list.index(machine) if machine in machine_list else 0)


def _bar_outline(machine_list: list[str], machine: Any) -> dict:
    """Bars of the 2nd, 3rd, ... machine get the dark outline of :data:`MARKER_LEGEND`."""
    index = machine_list.index(machine) if machine in machine_list else 0
    return dict(width=3, color=MACHINE_OUTLINES[(index - 1) % len(MACHINE_OUTLINES)]) if index > 0 else dict(width=0)


def is_unstable(row: Any) -> bool:
    value = row.get("unstable") if hasattr(row, "get") else None
    return bool(value) if value is not None and not (isinstance(value, float) and math.isnan(value)) else False


def marker_style(row: Any, color: str, symbol: str, machine_list: list[str] | None = None,
                 size: int = 14) -> dict[str, Any]:
    """The marker of one row as :data:`MARKER_LEGEND` defines it: ``symbol`` (the backend's),
    hollow when pruned or low-rank, faded when unstable, a dark outline on another machine."""
    if _is_structural(row) and not symbol.endswith("-open"):
        symbol += "-open"
    line = _bar_outline(machine_list or [], machine_of(row))
    if not line["width"]:  # the first machine (or an unknown one): the point's own colour
        line = dict(width=2, color=color)
    return dict(color=color, symbol=symbol, size=size, line=line, opacity=UNSTABLE_OPACITY if is_unstable(row) else 1.0)


def _trace_marker(part: pd.DataFrame, color: str, symbol: str, machine_list: list[str], size: int = 14) -> dict:
    """One trace's marker: the first row's style, with a per-point opacity (unstable points faded)."""
    style = marker_style(part.iloc[0], color, symbol, machine_list, size)
    style["opacity"] = [UNSTABLE_OPACITY if is_unstable(r) else 1.0 for _, r in part.iterrows()]
    return style


def percent_range(values: Iterable[float], m: Metric) -> list[float] | None:
    """A y range for a percentage that cannot exceed 100 (accuracy, agreement): a little room above
    the points, but not so much that the axis labels values above 100 %; None (autorange) otherwise."""
    ys = [float(v) for v in values if v is not None and not pd.isna(v)]
    if m.unit != "%" or not m.higher_is_better or not ys or max(ys) > 100.0:
        return None
    span = max(max(ys) - min(ys), 5.0)  # at least 5 points shown
    return [max(ys) - 1.08 * span, 100.0 + 0.08 * span]


def _machine_suffix(row: Any, machine_list: list[str]) -> str:
    machine = machine_of(row)
    return f" @ {machine}" if len(machine_list) > 1 and machine else ""


def _num(df: pd.DataFrame, col: str) -> pd.Series:
    if col not in df:
        return pd.Series([math.nan] * len(df), index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce")


def pick_batch(df: pd.DataFrame, batch_size: int | None = None) -> tuple[pd.DataFrame, int | None]:
    """Rows at ``batch_size`` (default: the smallest batch size present) and that batch size."""
    if df.empty or "batch_size" not in df:
        return df, batch_size
    sizes = sorted(int(b) for b in df["batch_size"].dropna().unique())
    if not sizes:
        return df.iloc[0:0], batch_size
    if batch_size is None or int(batch_size) not in sizes:
        batch_size = sizes[0]
    return df[df["batch_size"].astype(int) == int(batch_size)], int(batch_size)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _scale(values: Iterable[float], unit: str) -> tuple[float, str]:
    """A divisor and an axis unit (``k``/``M``/``G`` prefix) for ``values``."""
    vals = [abs(float(v)) for v in values if v is not None and not pd.isna(v)]
    top = max(vals) if vals else 0.0
    for div, prefix, word in ((1e9, "G", "billions"), (1e6, "M", "millions"), (1e3, "k", "thousands")):
        if top >= div:
            return div, f"{unit} ({word})"
    return 1.0, unit


def wide_range(values: Iterable[float], ratio: float = 20.0) -> bool:
    """True when the positive ``values`` span more than ``ratio`` x (then a log axis reads better)."""
    vals = pd.to_numeric(pd.Series(list(values), dtype="float64"), errors="coerce")
    vals = vals[vals > 0]
    return bool(len(vals) > 1 and vals.max() / vals.min() > ratio)


def _hover_frame(df: pd.DataFrame) -> tuple[list[list[Any]], str]:
    """customdata and a hover template showing the variant's configuration and key numbers."""
    custom = []
    for _, r in df.iterrows():
        size = r.get("size_bytes")
        macs = r.get("macs")
        metric, value = r.get("quality_metric"), r.get("quality_value")
        quality = ""
        if isinstance(metric, str) and value is not None and not pd.isna(value):
            m = get_metric(metric)
            quality = f"{m.label} {_fmt(float(value) * m.scale, 4)}{' %' if m.unit == '%' else ''}"
            drop = r.get("quality_drop_points")
            if drop is not None and not pd.isna(drop):
                quality += f" (drop {float(drop):.3g} points)"
        speed = r.get("speedup_vs_fp32")
        timing = ""
        if is_unstable(r):
            timing = f"<br><b>unstable timing</b>: {r.get('stability_reason') or 'see the row'}"
        elif r.get("timing_attempts") is not None and not pd.isna(r.get("timing_attempts")) and int(r["timing_attempts"]) > 1:
            timing = f"<br>timed {int(r['timing_attempts'])} times (earlier attempts were unstable)"
        machine = machine_of(r)
        timing += _significance_text(r)
        custom.append([
            r.get("variant", ""), r.get("backend", ""), r.get("precision", ""),
            _fmt(r.get("prune_ratio")), r.get("prune_kind") or "-", int(r.get("batch_size") or 0),
            _fmt(r.get("latency_p50_ms")), _fmt(r.get("throughput_sps")),
            _fmt(None if size is None or pd.isna(size) else float(size) / 1e6),
            _fmt(None if macs is None or pd.isna(macs) else float(macs) / 1e6),
            quality or f"top-1 acc {_fmt(r.get('accuracy_top1'))}, agreement {_fmt(r.get('fidelity_top1_agreement'))}",
            "" if speed is None or pd.isna(speed) else f", {float(speed):.3g}x vs FP32",
            (r.get("compression") or "reference (no compression)")[:160],
            f"#{int(r['sweep_id'])}" if "sweep_id" in r and not pd.isna(r.get("sweep_id")) else "",
            timing, f"<br>machine: {machine}" if machine else "",
        ])
    template = (
        "<b>%{customdata[0]}</b> on %{customdata[1]} %{customdata[13]}<br>"
        "precision %{customdata[2]}, prune %{customdata[3]} (%{customdata[4]}), batch %{customdata[5]}<br>"
        "p50 %{customdata[6]} ms%{customdata[11]}, %{customdata[7]} samples/s<br>"
        "size %{customdata[8]} MB, %{customdata[9]} MMACs<br>"
        "%{customdata[10]}<br>"
        "%{customdata[12]}%{customdata[14]}%{customdata[15]}<extra></extra>"
    )
    return custom, template


def _significance_cell(row: Any) -> str | None:
    """``faster (speedup 2.12-2.17x)`` for a row compared with FP32 in interleaved repeats (recommendation
    rows: the verdict and the 95 % interval of the speedup), else None."""
    verdict, lo, hi = row.get("significance"), row.get("speedup_ci_low"), row.get("speedup_ci_high")
    if not isinstance(verdict, str):
        return None
    return verdict + ("" if lo is None or pd.isna(lo) else f" (speedup {float(lo):.2f}-{float(hi):.2f}x)")


def _significance_text(row: Any) -> str:
    cell = _significance_cell(row)
    return f"<br>vs FP32: {cell}" if cell else ""


def _ci_bars(part: pd.DataFrame, x: str) -> dict | None:
    """Horizontal error bars from the rows' p50 intervals (:data:`MARKER_LEGEND`), where they have one."""
    if x != "latency_p50_ms" or "latency_p50_ci_low_ms" not in part:
        return None
    lo, hi = _num(part, "latency_p50_ci_low_ms"), _num(part, "latency_p50_ci_high_ms")
    if lo.isna().all():
        return None
    return dict(type="data", symmetric=False, array=(hi - part["_x"]).clip(lower=0).fillna(0).tolist(),
                arrayminus=(part["_x"] - lo).clip(lower=0).fillna(0).tolist(), thickness=1.5, width=4)


def _is_structural(row: pd.Series) -> bool:
    variant = str(row.get("variant", ""))
    ratio = row.get("prune_ratio")
    return bool((ratio is not None and not pd.isna(ratio) and float(ratio) > 0) or "lowrank" in variant)


# --------------------------------------------------------------------------------------------
# Pareto front and sweet spot
# --------------------------------------------------------------------------------------------
def pareto_front(df: pd.DataFrame, x: str, y: str, minimize_x: bool = True, maximize_y: bool = True) -> pd.DataFrame:
    """The rows of ``df`` not dominated on (``x``, ``y``), sorted by ``x`` (best first).

    A row is dominated when another row is at least as good on both columns and strictly
    better on one (smaller ``x`` when ``minimize_x``, larger ``y`` when ``maximize_y``).
    Rows with a missing ``x`` or ``y`` are ignored; identical points are all kept.
    """
    if df is None or df.empty or x not in df or y not in df:
        return df.iloc[0:0] if df is not None else pd.DataFrame()
    xs = pd.to_numeric(df[x], errors="coerce")
    ys = pd.to_numeric(df[y], errors="coerce")
    valid = df[xs.notna() & ys.notna()]
    if valid.empty:
        return valid
    kx = pd.to_numeric(valid[x]) * (1 if minimize_x else -1)  # smaller is better
    ky = pd.to_numeric(valid[y]) * (-1 if maximize_y else 1)  # smaller is better
    order = sorted(range(len(valid)), key=lambda i: (kx.iloc[i], ky.iloc[i]))
    keep: list[int] = []
    best_y = math.inf
    best_x = math.nan
    for i in order:
        xi, yi = kx.iloc[i], ky.iloc[i]
        if yi < best_y:
            keep.append(i)
            best_y, best_x = yi, xi
        elif yi == best_y and xi == best_x:
            keep.append(i)  # an identical point: neither dominates the other
    return valid.iloc[keep]


def sweet_spot(df: pd.DataFrame, x: str, y: str, budget: float, maximize_y: bool = True) -> pd.Series | None:
    """The row with the best ``y`` (largest; smallest when not ``maximize_y``) among rows with
    ``x <= budget``; ties -> smaller ``x``. None when no row is within the budget.
    """
    if df is None or df.empty or x not in df or y not in df:
        return None
    xs = pd.to_numeric(df[x], errors="coerce")
    ys = pd.to_numeric(df[y], errors="coerce")
    within = df[(xs <= float(budget)) & ys.notna()]
    if within.empty:
        return None
    wx = pd.to_numeric(within[x])
    wy = pd.to_numeric(within[y])
    sign = -1 if maximize_y else 1
    order = sorted(range(len(within)), key=lambda i: (sign * wy.iloc[i], wx.iloc[i]))
    return within.iloc[order[0]]


# --------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------
def _sweep_color(sweeps: list, sweep_id: Any) -> str:
    return color_for(None, sweeps.index(sweep_id) if sweep_id in sweeps else 0)


def _front_groups(stable: pd.DataFrame, color_by: str, sweeps: list, machine_list: list[str]):
    """(name suffix, colour, rows) of each Pareto front: one per sweep when colouring by sweep, one
    per machine when colouring by machine, else one."""
    if color_by == "sweep" and "sweep_id" in stable and len(sweeps) > 1:
        return [(f" #{int(k)}", _sweep_color(sweeps, k), part) for k, part in stable.groupby("sweep_id", sort=True)]
    if color_by == "machine" and len(machine_list) > 1:
        return [(f" @ {k}", machine_color(machine_list, k), part) for k, part in stable.groupby("_machine", sort=False)]
    return [("", "#222222", stable)]


def _front_traces(fig: go.Figure, sel: pd.DataFrame, higher: bool, color_by: str, sweeps: list,
                  machine_list: list[str]) -> int:
    """Pareto front line(s) over the stable rows (see :func:`_front_groups`), so a line never joins
    points of different sweeps, or machines when coloured by machine. Returns how many unstable
    rows were left out. Where every row is unstable (a busy machine) the front is drawn from them
    all, and a note says so."""
    stable = sel[[not is_unstable(r) for _, r in sel.iterrows()]]
    if stable.empty:
        stable = sel
        fig.add_annotation(text="every timing here is unstable (faded): the front is drawn from them", x=0.01,
                           y=0.02, xref="paper", yref="paper", xanchor="left", showarrow=False,
                           font=dict(size=FONT_SIZE - 2, color="#555555"))
    for suffix, color, part in _front_groups(stable, color_by, sweeps, machine_list):
        front = pareto_front(part, "_x", "_y", maximize_y=higher)
        if front.empty:
            continue
        fig.add_trace(go.Scatter(
            x=front["_x"], y=front["_y"], name="Pareto front" + suffix,
            mode="lines+markers+text", text=[f"{v} · {b}" for v, b in zip(front["variant"], front["backend"])],
            textposition="top right" if higher else "bottom right", textfont=dict(size=FONT_SIZE - 3, color=color),
            cliponaxis=False, line=dict(color=color, width=2, dash="dot", shape="hv"),
            marker=dict(size=24, symbol="circle-open", color=color, line=dict(width=2)), hoverinfo="skip",
        ))
    return len(sel) - len(stable)


def _pick_trace(fig: go.Figure, sel: pd.DataFrame, higher: bool, latency_budget_ms: float | None,
                recommended: tuple[str, str] | None) -> None:
    """The gold star: the recommended (variant, backend) where given, else the best quality within
    the latency budget; one mark when both exist (:data:`MARKER_LEGEND`)."""
    stable = sel[[not is_unstable(r) for _, r in sel.iterrows()]]
    best, label = None, ""
    if recommended is not None:
        hit = sel[(sel["variant"] == recommended[0]) & (sel["backend"] == recommended[1])]
        if len(hit):
            best, label = hit.iloc[0], "recommended"
    if best is None and latency_budget_ms is not None and latency_budget_ms > 0:
        best, label = sweet_spot(stable, "_x", "_y", latency_budget_ms, maximize_y=higher), "sweet spot"
        if best is None:
            word = "stable " if len(stable) < len(sel) else ""
            fig.add_annotation(text=f"no {word}variant within {latency_budget_ms:g} ms", x=0.99, y=0.02,
                               xref="paper", yref="paper", xanchor="right", showarrow=False,
                               font=dict(size=FONT_SIZE, color="#D55E00"))
    if best is not None:
        custom, template = _hover_frame(best.to_frame().T)
        fig.add_trace(go.Scatter(x=[best["_x"]], y=[best["_y"]], mode="markers", marker=PICK_MARKER,
                                 name=f"{label}: {best['variant']} · {best['backend']}", customdata=custom,
                                 hovertemplate=template))


def tradeoff_figure(
    df: pd.DataFrame,
    *,
    x: str = "latency_p50_ms",
    batch_size: int | None = None,
    latency_budget_ms: float | None = None,
    color_by: str = "precision",
    log_x: bool | None = None,
    title: str | None = None,
    metric: str | None = None,
    recommended: tuple[str, str] | None = None,
) -> go.Figure:
    """Quality (the frame's metric, or ``metric``) vs p50 latency, one point per variant x backend.

    The Pareto front (lowest latency for its quality) is drawn as a line through ringed points.
    With ``latency_budget_ms`` a vertical line marks the budget and a star the *sweet spot*: the
    best-quality variant whose latency is within the budget; ``recommended`` (variant, backend)
    takes the star instead. ``color_by="sweep"`` colours points by sweep (for overlaying several
    sweeps, each with its own front), ``color_by="machine"`` by machine (one front per machine: to
    compare variants across machines); otherwise colours follow :data:`PALETTE` by precision.
    Markers follow :data:`MARKER_LEGEND`. The latency axis is logarithmic when latencies span more
    than 20x (``log_x`` forces it either way).
    """
    ok = ok_rows(df)
    if ok.empty:
        return empty_figure("No successful runs to plot yet (see the list of failed or skipped runs).", title)
    sel, bs = pick_batch(ok, batch_size)
    sel, m = quality_axis(sel, metric)
    if m is None:
        what = f"no {get_metric(metric).label} values" if metric else "no accuracy or fidelity"
        return empty_figure(f"These runs have {what}, so there is no trade-off to plot.", title)
    sel = sel[_num(sel, x).notna() & _num(sel, "quality_value").notna()].copy()
    if sel.empty:
        return empty_figure("No run has both a latency and a quality value.", title)
    sel["_y"] = _num(sel, "quality_value") * m.scale
    sel["_x"] = _num(sel, x)

    fig = go.Figure()
    group_cols = ["sweep_id", "variant", "backend"] if color_by == "sweep" else ["variant", "backend"]
    group_cols = [c for c in group_cols if c in sel]
    sweeps = sorted(sel["sweep_id"].dropna().unique()) if "sweep_id" in sel else []
    backends = sorted(sel["backend"].dropna().unique()) if "backend" in sel else []
    sel, machine_list = with_machines(sel)
    for keys, part in sel.groupby(group_cols + ["_machine"], sort=False, dropna=False):
        info = dict(zip(group_cols, keys))
        first = part.iloc[0]
        backend = info.get("backend", "")
        if color_by == "sweep":
            color = _sweep_color(sweeps, info.get("sweep_id"))
            name = f"#{int(info['sweep_id'])} {info.get('variant', '')} · {backend}"
        else:
            color = (machine_color(machine_list, keys[-1]) if color_by == "machine"
                     else color_for(first.get("precision")))
            name = f"{info.get('variant', '')} · {backend}"
        symbol = symbol_for(backend, backends.index(backend) if backend in backends else 0)
        custom, template = _hover_frame(part)
        fig.add_trace(go.Scatter(
            x=part["_x"], y=part["_y"], name=name + _machine_suffix(first, machine_list), mode="markers",
            marker=_trace_marker(part, color, symbol, machine_list), customdata=custom, hovertemplate=template,
            error_x=_ci_bars(part, x),
        ))
    left_out = _front_traces(fig, sel, m.higher_is_better, color_by, sweeps, machine_list)
    if left_out:
        fig.add_annotation(text=f"{left_out} unstable run(s) (faded) left out of the front", x=0.01, y=0.02,
                           xref="paper", yref="paper", xanchor="left", showarrow=False,
                           font=dict(size=FONT_SIZE - 2, color="#555555"))
    _pick_trace(fig, sel, m.higher_is_better, latency_budget_ms, recommended)
    if log_x is None:
        log_x = wide_range(sel["_x"])
    if latency_budget_ms is not None and latency_budget_ms > 0:
        b = float(latency_budget_ms)
        fig.add_shape(type="line", x0=b, x1=b, y0=0, y1=1, xref="x", yref="paper",
                      line=dict(color="#D55E00", width=2, dash="dash"))
        fig.add_annotation(x=math.log10(b) if log_x else b, y=1.0, xref="x", yref="paper", yanchor="bottom",
                           text=f"budget {b:g} ms", showarrow=False, font=dict(size=FONT_SIZE - 1, color="#D55E00"))
    title_x = f"{LATENCY_TITLE}, batch {bs}" if x == "latency_p50_ms" else x
    fig.update_xaxes(title_text=title_x + (", log scale" if log_x else ""), type="log" if log_x else "linear",
                     rangemode="normal" if log_x else "tozero")
    fig.update_yaxes(title_text=m.title + ("" if m.higher_is_better else ", lower is better"),
                     range=percent_range(sel["_y"], m))
    return _layout(fig, title or f"Quality vs latency (batch {bs})")


def throughput_figure(df: pd.DataFrame, title: str | None = None, color_by: str = "precision") -> go.Figure:
    """Throughput (samples/s = batch / mean latency) against batch size, one line per variant x
    backend (x sweep, x machine: a line never joins points of different sweeps or machines).
    ``color_by="sweep"`` colours lines by sweep, ``color_by="machine"`` by machine."""
    ok = ok_rows(df)
    if ok.empty or _num(ok, "throughput_sps").notna().sum() == 0:
        return empty_figure("No throughput measured yet.", title)
    ok, machine_list = with_machines(ok[_num(ok, "throughput_sps").notna()])
    sweeps = sorted(ok["sweep_id"].dropna().unique()) if "sweep_id" in ok else []
    several = len(sweeps) > 1
    keys = (["sweep_id"] if several else []) + ["variant", "backend", "_machine"]
    fig = go.Figure()
    for values, part in ok.groupby(keys, sort=False, dropna=False):
        info = dict(zip(keys, values))
        part = part.sort_values("batch_size")
        first = part.iloc[0]
        backend = info["backend"]
        color = (_sweep_color(sweeps, info["sweep_id"]) if color_by == "sweep" and several
                 else machine_color(machine_list, info["_machine"]) if color_by == "machine"
                 else color_for(first.get("precision")))
        name = (f"#{int(info['sweep_id'])} " if several else "") + f"{info['variant']} · {backend}"
        custom, template = _hover_frame(part)
        fig.add_trace(go.Scatter(
            x=part["batch_size"].astype(int), y=_num(part, "throughput_sps"),
            name=name + _machine_suffix(first, machine_list), mode="lines+markers",
            line=dict(color=color, width=3, dash=BACKEND_DASH.get(backend, "dashdot")),
            marker=_trace_marker(part, color, symbol_for(backend), machine_list, size=12),
            customdata=custom, hovertemplate=template,
        ))
    sizes = sorted(int(b) for b in ok["batch_size"].unique())
    fig.update_xaxes(title_text="batch size (samples)", type="log" if len(sizes) > 2 else "linear",
                     tickvals=sizes, ticktext=[str(s) for s in sizes])
    log_y = wide_range(_num(ok, "throughput_sps"), 50.0)
    fig.update_yaxes(title_text=THROUGHPUT_TITLE + (", log scale" if log_y else ""), type="log" if log_y else "linear",
                     rangemode="normal" if log_y else "tozero")
    return _layout(fig, title or "Throughput vs batch size (batch / mean latency: total work over total time)")


def size_macs_figure(df: pd.DataFrame, batch_size: int | None = None, title: str | None = None,
                     metric: str | None = None) -> go.Figure:
    """Two panels sharing the quality axis: model size (MB) and MACs per sample vs quality."""
    ok = ok_rows(df)
    if ok.empty:
        return empty_figure("No successful runs to plot yet.", title)
    sel, bs = pick_batch(ok, batch_size)
    sel, m = quality_axis(sel, metric)
    if m is None:
        return empty_figure("No accuracy or fidelity was measured, so size and MACs have nothing to be plotted against.", title)
    sel, machine_list = with_machines(sel[_num(sel, "quality_value").notna()])
    mac_div, mac_title = _scale(_num(sel, "macs"), "MACs per sample")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06)
    for (variant, backend, machine), part in sel.groupby(["variant", "backend", "_machine"], sort=False):
        first = part.iloc[0]
        color = color_for(first.get("precision"))
        custom, template = _hover_frame(part)
        y = _num(part, "quality_value") * m.scale
        name = f"{variant} · {backend}" + _machine_suffix(first, machine_list)
        common = dict(mode="markers", marker=_trace_marker(part, color, symbol_for(backend), machine_list),
                      customdata=custom, hovertemplate=template, legendgroup=f"{variant}{backend}{machine}")
        fig.add_trace(go.Scatter(x=_num(part, "size_bytes") / 1e6, y=y, name=name, **common), 1, 1)
        fig.add_trace(go.Scatter(x=_num(part, "macs") / mac_div, y=y, name=name, showlegend=False, **common), 1, 2)
    fig.update_xaxes(title_text="model size (MB, 10^6 bytes)", row=1, col=1)
    fig.update_xaxes(title_text=mac_title, row=1, col=2)
    fig.update_yaxes(range=percent_range(_num(sel, "quality_value") * m.scale, m))
    fig.update_yaxes(title_text=m.title, row=1, col=1)
    return _layout(fig, title or f"Size and MACs vs quality (batch {bs})")


def latency_samples_frame(results: Iterable[Any]) -> pd.DataFrame:
    """A long frame (variant, backend, precision, batch_size, sweep_id, machine, latency_ms) of every
    timed iteration, from :class:`~benchmark.results.RunResult` objects (or their ``to_json()`` dicts);
    ``machine`` is :func:`machine_of` the row."""
    rows = []
    for r in results:
        data = r if isinstance(r, dict) else r.to_json()
        if data.get("status") != "ok":
            continue
        env = data.get("env") or {}
        machine = machine_of({"target": data.get("target"), "env_host": env.get("hostname"),
                              "env_gpu": env.get("gpu_name"), "env_cpu": env.get("cpu_model")})
        for v in data.get("latency_samples_ms") or []:
            if v is not None:
                rows.append({"variant": data["variant"], "backend": data["backend"], "precision": data.get("precision"),
                             "batch_size": int(data["batch_size"]), "sweep_id": data.get("sweep_id"),
                             "machine": machine or "", "latency_ms": float(v)})
    return pd.DataFrame(rows, columns=["variant", "backend", "precision", "batch_size", "sweep_id", "machine",
                                       "latency_ms"])


def latency_distribution_figure(samples: pd.DataFrame, batch_size: int | None = None, kind: str = "box",
                                title: str | None = None) -> go.Figure:
    """Distribution of per-iteration latency (ms) per variant x backend (x machine where the samples
    come from several; box or violin plot)."""
    if samples is None or samples.empty or "latency_ms" not in samples:
        return empty_figure("No per-iteration latency samples stored for these runs.", title)
    sel, bs = pick_batch(samples, batch_size)
    sel = sel.assign(machine=sel["machine"].fillna("")) if "machine" in sel else sel.assign(machine="")
    several = sel["machine"].nunique() > 1
    fig = go.Figure()
    for (variant, backend, machine), part in sel.groupby(["variant", "backend", "machine"], sort=False):
        color = color_for(part.iloc[0].get("precision"))
        label = f"{variant} · {backend}" + (f" @ {machine}" if several and machine else "")
        common = dict(y=part["latency_ms"], name=label, marker=dict(color=color), line=dict(color=color),
                      hovertemplate=f"<b>{label}</b><br>%{{y:.4g}} ms<extra></extra>")
        if kind == "violin":
            fig.add_trace(go.Violin(box_visible=True, meanline_visible=True, points=False, **common))
        else:
            fig.add_trace(go.Box(boxpoints="outliers", **common))
    log_y = wide_range(sel["latency_ms"], 50.0)
    fig.update_yaxes(title_text="latency per iteration (ms)" + (", log scale" if log_y else ""),
                     type="log" if log_y else "linear", rangemode="normal" if log_y else "tozero")
    fig.update_xaxes(title_text="variant · backend", tickangle=-30)
    fig.update_layout(showlegend=False)
    return _layout(fig, title or f"Latency distribution (batch {bs})")


def speedup_figure(df: pd.DataFrame, batch_size: int | None = None, title: str | None = None) -> go.Figure:
    """Theoretical speedup (FP32 MACs / variant MACs) next to the measured ``speedup_vs_fp32``
    (FP32 p50 latency / variant p50 latency, same machine, backend, device and batch) for every
    variant: one series per backend and machine. Bars of unstable timings are faded and a second
    machine's bars outlined, as in :data:`MARKER_LEGEND`."""
    ok = ok_rows(df)
    if ok.empty:
        return empty_figure("No successful runs to plot yet.", title)
    sel, bs = pick_batch(ok, batch_size)
    sel, machine_list = with_machines(derived.add_speedup(sel))
    rows = sel.to_dict("records")
    refs = derived.reference_index(rows)
    if not refs:
        return empty_figure("No FP32 unpruned reference in this sweep: add fp32 to compare speedups.", title)
    ref_rows = [rows[i] for i in refs.values()]
    ref_name = ref_rows[0]["variant"]
    ref_macs = max((float(r["macs"]) for r in ref_rows if r.get("macs") is not None and not pd.isna(r["macs"])),
                   default=math.nan)
    variants = list(dict.fromkeys(sel["variant"]))
    fig = go.Figure()
    theo = []
    for v in variants:
        macs = _num(sel[sel["variant"] == v], "macs").max()
        theo.append(ref_macs / macs if macs and not pd.isna(macs) and not pd.isna(ref_macs) else None)
    fig.add_trace(go.Bar(x=variants, y=theo, name="theoretical (MACs ratio)",  # hatched: never mistaken for a faded bar
                         marker=dict(color="#FFFFFF", line=dict(color="#888888", width=1.5),
                                     pattern=dict(shape="/", fgcolor="#999999", size=8)),
                         hovertemplate="%{x}<br>theoretical %{y:.3g}x<extra></extra>"))
    for (backend, machine), part in sel.groupby(["backend", "_machine"], sort=False):
        ys, fade, notes = [], [], []
        for v in variants:
            hit = part[(part["variant"] == v) & _num(part, "speedup_vs_fp32").notna()]
            ys.append(float(hit["speedup_vs_fp32"].iloc[0]) if len(hit) else None)
            unstable = bool(len(hit)) and is_unstable(hit.iloc[0])
            fade.append(UNSTABLE_OPACITY if unstable else 1.0)
            notes.append(f"<br>unstable timing: {hit.iloc[0].get('stability_reason') or ''}" if unstable else "")
        if all(y is None for y in ys):
            continue
        where = f"{backend}" + _machine_suffix(part.iloc[0], machine_list)
        color = color_for(backend)
        outline = _bar_outline(machine_list, machine)
        if not outline.get("width"):  # this machine: a solid outline keeps faded bars readable
            outline = dict(color=color, width=1.5)
        fig.add_trace(go.Bar(x=variants, y=ys, name=f"measured on {where}", customdata=notes,
                             marker=dict(color=[_faded(color, f) for f in fade], line=outline),
                             hovertemplate=f"%{{x}}<br>measured on {where}: %{{y:.3g}}x (p50 ratio)%{{customdata}}"
                                           "<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color="#222222", width=1, dash="dash"))
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text=f"speedup vs {ref_name} (x, p50 latency ratio)", rangemode="tozero")
    fig.update_xaxes(title_text="variant", tickangle=-20)
    return _layout(fig, title or f"Theoretical vs measured speedup (batch {bs})")


def _faded(color: str, opacity: float) -> str:
    """``#RRGGBB`` as ``rgba`` with ``opacity`` (a faded fill that keeps a solid outline)."""
    if opacity >= 1.0 or not (color.startswith("#") and len(color) == 7):
        return color
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, {opacity:g})"


def _check_label(row: Any) -> str:
    """``pass``/``FAIL`` over the tolerance it was checked at (one ``tol`` where atol = rtol)."""
    atol, rtol = _fmt(row.get("cross_backend_atol"), 2), _fmt(row.get("cross_backend_rtol"), 2)
    verdict = "pass" if bool(row["cross_backend_passed"]) else "FAIL"
    return f"{verdict}<br>tol {atol}" if atol == rtol else f"{verdict}<br>atol {atol}<br>rtol {rtol}"


def agreement_figure(df: pd.DataFrame, batch_size: int | None = None, title: str | None = None,
                     metric: str | None = None) -> go.Figure:
    """Backend vs backend: quality and p50 latency of each variant on every backend, side by side,
    and, where the rows carry it, the cross-backend output check: the worst absolute error of each
    variant's first output on each backend against the first backend's on the same samples, labelled
    ``pass``/``FAIL`` with the row's tolerances beside it (``atol``/``rtol``, see
    :data:`benchmark.results.CROSS_BACKEND_TOLERANCES`). Rows of several machines give one series
    per backend and machine (a second machine's bars outlined, as in :data:`MARKER_LEGEND`)."""
    ok = ok_rows(df)
    if ok.empty:
        return empty_figure("No successful runs to plot yet.", title)
    sel, bs = pick_batch(ok, batch_size)
    backends = list(dict.fromkeys(sel["backend"]))
    if len(backends) < 2:
        return empty_figure("Only one backend ran: choose two or more to compare them.", title)
    sel, m = quality_axis(sel, metric)
    sel, machine_list = with_machines(sel)
    series = list(dict.fromkeys(zip(sel["backend"], sel["_machine"])))  # (backend, machine), in order
    ycol, ytitle, yscale = ("quality_value", m.title, m.scale) if m else (None, "", 1.0)
    variants = list(dict.fromkeys(sel["variant"]))
    checked = sel[sel["cross_backend_passed"].notna()] if "cross_backend_passed" in sel else sel.iloc[0:0]
    refs = list(dict.fromkeys(checked["cross_backend_reference"].dropna().astype(str))) if not checked.empty else []
    cross_title = f"worst abs error vs {' / '.join(refs)} (first output)" if refs else ""
    titles = (ytitle or "quality (not measured)", LATENCY_TITLE) + ((cross_title,) if refs else ())
    fig = make_subplots(rows=1, cols=len(titles), horizontal_spacing=0.08 if refs else 0.1, subplot_titles=titles)
    for backend, machine in series:
        part = sel[(sel["backend"] == backend) & (sel["_machine"] == machine)]
        name = backend + _machine_suffix(part.iloc[0], machine_list)
        q, lat = [], []
        for v in variants:
            rows = part[part["variant"] == v]
            qv = _num(rows, ycol).dropna() if ycol else pd.Series(dtype=float)
            lv = _num(rows, "latency_p50_ms").dropna()
            q.append(float(qv.iloc[0]) * yscale if len(qv) else None)
            lat.append(float(lv.iloc[0]) if len(lv) else None)
        style = dict(marker_color=color_for(backend), marker_line=_bar_outline(machine_list, machine), legendgroup=name)
        fig.add_trace(go.Bar(x=variants, y=q, name=name, hovertemplate=f"%{{x}} on {name}<br>%{{y:.4g}}<extra></extra>",
                             **style), 1, 1)
        fig.add_trace(go.Bar(x=variants, y=lat, name=name, showlegend=False,
                             hovertemplate=f"%{{x}} on {name}<br>%{{y:.4g}} ms<extra></extra>", **style), 1, 2)
    all_errors: list[float] = []
    if refs:
        for backend, machine in series:
            part = checked[(checked["backend"] == backend) & (checked["_machine"] == machine)]
            if part.empty:
                continue  # the reference backend, or never compared
            name = backend + _machine_suffix(part.iloc[0], machine_list)
            err, text, custom = [], [], []
            for v in variants:
                rows = part[part["variant"] == v]
                if rows.empty:
                    err.append(None)
                    text.append("")
                    custom.append(["", "n/a", "n/a", "n/a"])
                    continue
                r = rows.iloc[0]
                e = _num(rows, "cross_backend_worst_max_abs_err").iloc[0]
                err.append(None if pd.isna(e) else float(e))
                if not pd.isna(e):
                    all_errors.append(float(e))
                text.append(_check_label(r))
                custom.append([str(r.get("cross_backend_reference") or ""), _fmt(r.get("cross_backend_worst_max_rel_err")),
                               _fmt(r.get("cross_backend_atol")), _fmt(r.get("cross_backend_rtol"))])
            fig.add_trace(go.Bar(
                x=variants, y=err, name=name, marker_color=color_for(backend), legendgroup=name, showlegend=False,
                marker_line=_bar_outline(machine_list, machine), text=text, textposition="outside",
                textfont=dict(size=FONT_SIZE - 3), constraintext="none", cliponaxis=False, customdata=custom,
                hovertemplate=(f"%{{x}} on {name} vs %{{customdata[0]}}: %{{text}}<br>worst abs err %{{y:.3g}}, "
                               "worst rel err %{customdata[1]}<br>atol %{customdata[2]}, rtol %{customdata[3]}"
                               "<extra></extra>")), 1, 3)
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text=ytitle or "quality", row=1, col=1)
    all_lat = _num(sel, "latency_p50_ms")
    log_y = wide_range(all_lat)
    fig.update_yaxes(title_text="ms, log scale" if log_y else "ms", type="log" if log_y else "linear", row=1, col=2)
    if refs:
        log_e = bool(all_errors) and min(all_errors) > 0 and wide_range(all_errors)
        fig.update_yaxes(title_text="max |difference| (output units" + (", log scale)" if log_e else ")"),
                         type="log" if log_e else "linear", row=1, col=3)
    fig.update_xaxes(title_text="variant", tickangle=-20)
    for ann in fig.layout.annotations:
        ann.font = dict(size=FONT_SIZE)
    return _layout(fig, title or f"Backend agreement (batch {bs})")


def layer_figure(rows: pd.DataFrame | list[dict], top: int = 20, title: str | None = None) -> go.Figure:
    """Per-layer MACs and parameters (the ``top`` layers by MACs), as horizontal bars.

    ``rows`` hold ``name``, ``op_type``, ``macs`` and ``params`` (FlopReport.by_module).
    """
    frame = pd.DataFrame(rows)
    if frame.empty or "macs" not in frame:
        return empty_figure("No per-layer counts for this model.", title)
    frame = frame.assign(macs=_num(frame, "macs").fillna(0), params=_num(frame, "params").fillna(0))
    frame = frame.sort_values("macs", ascending=False).head(int(top)).iloc[::-1]
    labels = [f"{n} ({t})" if t else str(n) for n, t in zip(frame["name"], frame.get("op_type", [""] * len(frame)))]
    mac_div, mac_title = _scale(frame["macs"], "MACs per sample")
    par_div, par_title = _scale(frame["params"], "parameters")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04)
    fig.add_trace(go.Bar(y=labels, x=frame["macs"] / mac_div, orientation="h", name="MACs", marker_color=PALETTE["fp32"],
                         hovertemplate="%{y}<br>%{x:.4g}<extra>MACs</extra>"), 1, 1)
    fig.add_trace(go.Bar(y=labels, x=frame["params"] / par_div, orientation="h", name="parameters",
                         marker_color=PALETTE["int8-static"], hovertemplate="%{y}<br>%{x:.4g}<extra>params</extra>"), 1, 2)
    fig.update_xaxes(title_text=mac_title, row=1, col=1)
    fig.update_xaxes(title_text=par_title, row=1, col=2)
    fig.update_yaxes(title_text="layer (operator)", row=1, col=1)
    fig.update_layout(showlegend=False)
    return _layout(fig, title or f"Per-layer MACs and parameters (top {min(int(top), len(frame))} by MACs)",
                   height=max(380, 28 * len(frame) + 150))


def _profile_layers(profile: dict | None) -> pd.DataFrame:
    frame = pd.DataFrame((profile or {}).get("layers") or [])
    for col in ("time_share", "mac_share", "gmacs_per_s", "peak_fraction", "time_ms", "macs"):
        frame[col] = _num(frame, col) if len(frame) else pd.Series(dtype=float)
    return frame


def profile_share_figure(profile: dict | None, title: str | None = None) -> go.Figure:
    """Each profiled layer's share of the time (y) against its share of the MACs (x), in percent,
    one colour per kernel precision; on the diagonal a layer takes the time its MACs predict, above
    it the layer costs more than its arithmetic (memory- or overhead-bound, or a slow kernel).
    ``profile`` is :func:`benchmark.profiling.profile_variant`'s result."""
    frame = _profile_layers(profile)
    if frame.empty:
        return empty_figure("No profiled layers: profile a variant first.", title)
    fig = go.Figure()
    top = float(max(frame["time_share"].max(), frame["mac_share"].fillna(0).max(), 0.01)) * 100
    fig.add_trace(go.Scatter(x=[0, top], y=[0, top], mode="lines", line=dict(dash="dot", color="#999999"),
                             name="time share = MAC share", hoverinfo="skip"))
    for precision, part in frame.groupby(frame.get("precision", pd.Series(["?"] * len(frame))).astype(str), sort=False):
        custom = [[r.get("name"), r.get("op_type"), ",".join(r.get("kernels") or []) or r.get("op_type"),
                   _fmt(r.get("time_ms"), 4)] for _, r in part.iterrows()]
        fig.add_trace(go.Scatter(
            x=part["mac_share"].fillna(0) * 100, y=part["time_share"] * 100, mode="markers", name=precision,
            marker=dict(size=11, color=color_for("int8-static" if precision == "int8" else precision)),
            customdata=custom, hovertemplate="%{customdata[0]} (%{customdata[1]}, kernel %{customdata[2]})<br>"
                                             "MACs %{x:.1f} %, time %{y:.1f} % (%{customdata[3]} ms)<extra></extra>"))
    fig.update_xaxes(title_text="share of the MACs (%)")
    fig.update_yaxes(title_text="share of the profiled time (%)")
    fig = _layout(fig, title or "Time share vs MAC share, per layer")
    # the legend below the plot: the figure shares a row with another, a side legend squeezes the axes
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0),
                      margin=dict(b=120))
    return fig


def profile_gmacs_figure(profile: dict | None, top: int = 20, title: str | None = None) -> go.Figure:
    """Achieved GMAC/s of the MAC layers (the ``top`` by time), as horizontal bars, with this device's
    GEMM peak of each precision present as a vertical line (:mod:`benchmark.measure.roofline`)."""
    frame = _profile_layers(profile)
    frame = frame[frame["gmacs_per_s"].notna()] if len(frame) else frame
    if frame.empty:
        return empty_figure("No layer with MACs was profiled.", title)
    frame = frame.sort_values("time_ms", ascending=False).head(int(top)).iloc[::-1]
    labels = [f"{n} ({t})" for n, t in zip(frame["name"], frame.get("op_type", [""] * len(frame)))]
    precisions = frame.get("precision", pd.Series(["fp32"] * len(frame))).astype(str)
    colors = [color_for("int8-static" if p == "int8" else p) for p in precisions]
    custom = [[_fmt(f * 100 if f == f else None, 1), p] for f, p in zip(frame["peak_fraction"], precisions)]
    fig = go.Figure(go.Bar(y=labels, x=frame["gmacs_per_s"], orientation="h", marker_color=colors, customdata=custom,
                           hovertemplate="%{y}<br>%{x:.2f} GMAC/s (%{customdata[1]}), %{customdata[0]} % of its peak"
                                         "<extra></extra>", showlegend=False))
    peaks = ((profile or {}).get("peaks") or {}).get("peak_gmacs_per_s") or {}
    for precision in dict.fromkeys(precisions):
        peak = peaks.get(precision)
        if peak:
            fig.add_vline(x=float(peak), line=dict(dash="dash", color=color_for(
                "int8-static" if precision == "int8" else precision)),
                annotation_text=f"{precision} peak {peak:.0f}", annotation_position="top")
    fig.update_xaxes(title_text="achieved GMAC/s (MACs / layer time)")
    fig.update_yaxes(title_text="layer (operator)")
    return _layout(fig, title or f"Achieved throughput per layer (top {len(frame)} by time)",
                   height=max(380, 28 * len(frame) + 150))


#: Column names accepted as the sensitivity value, in order of preference.
SENSITIVITY_VALUES = ("delta", "drop", "accuracy_drop", "sensitivity")


def sensitivity_figure(frame: pd.DataFrame | list[dict], value: str | None = None, layer: str = "layer",
                       value_title: str = "quality drop (percentage points)", title: str | None = None) -> go.Figure:
    """Per-layer sensitivity as horizontal bars, most sensitive at the top.

    ``value`` is the column to plot (default: the first of :data:`SENSITIVITY_VALUES` present),
    plotted as is; for :func:`benchmark.analysis.layer_sensitivity` tables that is
    ``delta``, the metric drop in percentage points when only that layer is compressed
    (positive = worse). Hover shows the layer's operator and MACs share when present.
    """
    frame = pd.DataFrame(frame)
    if frame.empty:
        return empty_figure("No sensitivity results yet: run the analysis.", title)
    if layer not in frame:
        layer = next((c for c in ("layer", "name", "node") if c in frame), frame.columns[0])
    if value is None:
        value = next((c for c in SENSITIVITY_VALUES if c in frame), None)
    if value is None or value not in frame:
        return empty_figure(f"No sensitivity value column (expected one of {', '.join(SENSITIVITY_VALUES)}).", title)
    frame = frame.assign(_v=_num(frame, value)).dropna(subset=["_v"]).sort_values("_v", ascending=True)
    if frame.empty:
        return empty_figure("Every layer failed the sensitivity analysis (see the table).", title)
    ops = frame["op_type"].astype(str) if "op_type" in frame else pd.Series([""] * len(frame), index=frame.index)
    share = _num(frame, "macs_share") * 100.0
    custom = [[o, _fmt(s)] for o, s in zip(ops, share)]
    colors = ["#D55E00" if v > 0 else "#009E73" for v in frame["_v"]]
    fig = go.Figure(go.Bar(
        y=frame[layer].astype(str), x=frame["_v"], orientation="h", marker_color=colors, customdata=custom,
        hovertemplate="%{y} (%{customdata[0]})<br>%{x:.4g}<br>MACs share %{customdata[1]} %<extra></extra>",
    ))
    if (frame["_v"] == 0).all():
        fig.add_annotation(text="No tested layer changed the quality on these samples.", x=0.5, y=1.0, xref="paper",
                           yref="paper", yanchor="bottom", showarrow=False, font=dict(size=FONT_SIZE, color="#555555"))
    fig.update_xaxes(title_text=value_title)
    fig.update_yaxes(title_text="layer")
    return _layout(fig, title or "Per-layer sensitivity (longer bar = more damage when compressed)",
                   height=max(380, 28 * len(frame) + 150))


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------
#: Result columns shown in tables, with headers that carry their units: who ran, then quality,
#: speedup and size, then the long tail. ``quality_display`` is titled with the frame's metric.
TABLE_COLUMNS: dict[str, str] = {
    "sweep_id": "sweep",
    "variant": "variant",
    "backend": "backend",
    "device": "device",
    "machine": "machine",
    "batch_size": "batch (samples)",
    "quality_display": "quality",
    "quality_drop_points": "quality drop (points, + = worse)",
    "speedup_vs_fp32": "speedup vs FP32 (x, p50)",
    "significance": "vs FP32 (interleaved repeats, 95 % interval)",
    "size_mb": "size (MB)",
    "latency_p50_ms": "p50 latency (ms)",
    "timing": "timing",
    "explanation": "why (measured)",
    "precision": "precision",
    "prune_ratio": "prune ratio",
    "latency_p95_ms": "p95 latency (ms)",
    "latency_p99_ms": "p99 latency (ms)",
    "latency_mean_ms": "mean latency (ms)",
    "latency_cv": "latency CV (std/mean)",
    "throughput_sps": "throughput (samples/s, batch / mean latency)",
    "accuracy_top1": "top-1 accuracy (%)",
    "accuracy_top5": "top-5 accuracy (%)",
    "fidelity_top1_agreement": "top-1 agreement with FP32 (%)",
    "fidelity_cosine": "cosine to FP32",
    "calibration": "calibration samples (used / asked)",
    "int8_format": "INT8 format",
    "params": "parameters",
    "macs_m": "MACs (millions, per sample)",
    "flops_m": "FLOPs (millions, = 2 x MACs)",
    "sparsity_pct": "sparsity (%)",
    "compressed_as_asked": "compressed as asked",
    "cross_backend_passed": "outputs agree with first backend",
    "cross_backend_worst_max_abs_err": "worst abs error vs first backend",
    "peak_rss_mb": "peak RSS (MiB)",
    "gpu_peak_mb": "GPU peak memory (MiB)",
    "build_time_s": "engine build time (s)",
    "build_cached": "engine from cache",
    "energy_mean_power_w": "mean GPU power (W)",
    "energy_mj_per_sample": "GPU energy (mJ/sample)",
    "latency_iterations": "timed iterations",
    "threads": "threads",
    "achieved_gmacs_per_s": "achieved GMAC/s (MACs x batch / p50)",
    "peak_pct": "of this CPU's peak (%)",
    "runtime": "runtime settings",
    "status": "status",
}
_PERCENT_COLUMNS = ("accuracy_top1", "accuracy_top5", "fidelity_top1_agreement")
#: Columns only some rows fill: left out of a table where no row has a value.
_OPTIONAL_COLUMNS = ("significance", "gpu_peak_mb", "build_time_s", "build_cached", "energy_mean_power_w", "energy_mj_per_sample",
                     "machine", "timing", "calibration", "int8_format", "quality_display", "quality_drop_points",
                     "speedup_vs_fp32", "achieved_gmacs_per_s", "peak_pct", "runtime", "explanation")


def timing_text(row: Any) -> str | None:
    """``unstable: <reasons>``, ``stable`` (``stable after N timings``), None where not checked."""
    if row.get("unstable") is None or (isinstance(row.get("unstable"), float) and math.isnan(row["unstable"])):
        return None
    if is_unstable(row):
        return f"unstable: {row.get('stability_reason') or 'see the row'}"
    attempts = row.get("timing_attempts")
    if attempts is not None and not pd.isna(attempts) and int(attempts) > 1:
        return f"stable after {int(attempts)} timings"
    return "stable"


def _calibration_text(row: Any) -> str | None:
    used, asked = row.get("calib_samples_used"), row.get("calib_samples_requested")
    if used is None or pd.isna(used):
        return None
    text = f"{int(used)} / {int(asked)}" if asked is not None and not pd.isna(asked) else str(int(used))
    return text + (" (few)" if calibration_warning(row) else "")


def display_table(df: pd.DataFrame, include_failed: bool = False, metric: str | None = None) -> pd.DataFrame:
    """Results as a table for people: unit-carrying headers, percentages, MB and millions of MACs;
    quality (the frame's metric, or ``metric``), its drop in points, ``speedup_vs_fp32`` and size first."""
    if df is None or df.empty:
        return pd.DataFrame(columns=[v for k, v in TABLE_COLUMNS.items() if k not in _OPTIONAL_COLUMNS])
    rows = df if include_failed else ok_rows(df)
    out, m = quality_axis(rows.copy(), metric)
    out = derived.add_speedup(out) if len(out) else out
    for col in _PERCENT_COLUMNS:
        if col in out:
            out[col] = _num(out, col) * 100.0
    out["quality_display"] = _num(out, "quality_value") * m.scale if m else None
    out["size_mb"] = _num(out, "size_bytes") / 1e6
    out["macs_m"] = _num(out, "macs") / 1e6
    out["flops_m"] = _num(out, "flops") / 1e6
    out["sparsity_pct"] = _num(out, "sparsity") * 100.0
    out["peak_pct"] = _num(out, "peak_fraction") * 100.0
    out["energy_mj_per_sample"] = _num(out, "energy_joules_per_sample") * 1000.0
    names = [machine_of(r) for _, r in out.iterrows()]
    out["machine"] = names if len({n for n in names if n}) > 1 else None
    out["timing"] = [timing_text(r) for _, r in out.iterrows()]
    out["calibration"] = [_calibration_text(r) for _, r in out.iterrows()]
    if "significance" in out:
        out["significance"] = [_significance_cell(r) for _, r in out.iterrows()]
    cols = [c for c in TABLE_COLUMNS if c in out and not (c in _OPTIONAL_COLUMNS and out[c].isna().all())]
    if "sweep_id" in cols and out["sweep_id"].nunique(dropna=True) <= 1:
        cols.remove("sweep_id")
    headers = dict(TABLE_COLUMNS, quality_display=f"quality: {m.title}" if m else "quality")
    out = out[cols].rename(columns=headers)
    return out.round(4).reset_index(drop=True)


def failures_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that did not succeed (failed, skipped, interrupted, cancelled, pending, running) with their
    reason, and the machine of each where the sweep ran on several (its rows carry a ``target``)."""
    cols = ["variant", "backend", "batch_size", "status", "error"]
    if df is None or df.empty or "status" not in df:
        return pd.DataFrame(columns=["variant", "backend", "batch (samples)", "status", "reason"])
    bad = df[df["status"] != "ok"]
    out = bad[[c for c in cols if c in bad]].copy()
    if "error" in out:
        out["error"] = out["error"].fillna("")
    if "target" in bad and bad["target"].fillna("").astype(str).ne("").any():
        out.insert(2, "machine", [machine_of(r) or "local" for _, r in bad.iterrows()])
    return out.rename(columns={"batch_size": "batch (samples)", "error": "reason"}).reset_index(drop=True)


__all__ = [
    "PALETTE", "FONT_SIZE", "BACKEND_SYMBOLS", "MARKER_LEGEND", "TABLE_COLUMNS", "legend_markdown", "quality_axis",
    "marker_style", "machine_of", "machines", "with_machines", "machine_color", "is_unstable", "timing_text",
    "percent_range",
    "color_for", "symbol_for", "wide_range", "empty_figure", "is_empty_figure", "ok_rows", "quality_metric", "pick_batch",
    "pareto_front", "sweet_spot", "tradeoff_figure", "throughput_figure", "size_macs_figure",
    "latency_samples_frame", "latency_distribution_figure", "speedup_figure", "agreement_figure",
    "layer_figure", "sensitivity_figure", "display_table", "failures_table", "profile_share_figure",
    "profile_gmacs_figure",
]

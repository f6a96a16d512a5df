"""Sensitivity: which layers hurt quality most when compressed alone, and an accuracy-aware INT8 search
that keeps the most sensitive layers in FP32 until the quality drop fits a budget.

Both run in a separate process (the model, and any pickled code in it, is never loaded here; a crash
ends only that process) and hold the CPU queue while they run, so they never time anything next to a
running sweep."""
from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages.shared import data_choice, kept, save, say, session
from benchmark import plots


def run_job(label: str, fn, spec: dict, **kwargs) -> dict:
    """``fn`` (an ``*_isolated`` engine call) with a progress bar fed by the child's events."""
    bar = st.progress(0.0, text=f"{label}: starting ...")
    last = [0.0]

    def progress(message: str, fraction: float | None = None) -> None:
        if fraction is not None:
            last[0] = min(1.0, max(0.0, fraction))
        bar.progress(last[0], text=message)

    def waiting(ahead: int) -> None:
        bar.progress(0.0, text=f"{label}: queued behind {ahead} job(s) on the CPU" if ahead else f"{label}: waiting for the CPU")

    try:
        return fn(spec["source"], tuple(spec.get("inputs") or ()), spec.get("arch"), bool(spec.get("trust_pickle")),
                  on_progress=progress, on_wait=waiting, batch_axes=list(spec.get("batch_axis") or ()), **kwargs)
    finally:
        bar.empty()


session()
st.title("Sensitivity")
spec = st.session_state.get("model") or {"source": "sample:digits-cnn", "inputs": [], "name": "sample:digits-cnn"}
st.markdown(f"Model: **{spec.get('name') or spec['source']}** (change it on the Model page). Layers are the "
            "Conv / Gemm / MatMul nodes of its ONNX graph, named as on the Model page; the drop is in percentage "
            "points of top-1 accuracy (or of agreement with FP32 without labels), positive = worse.")
from benchmark import BenchmarkError  # noqa: E402
from benchmark.analysis import expected_data_note, search_isolated, sensitivity_isolated  # noqa: E402

data = data_choice("sensitivity")
st.caption("The same data choice as on Compress & run: it evaluates each layer and calibrates INT8.")
try:
    st.caption(f"Data: {expected_data_note(spec['source'], spec.get('arch'), data)}.")
except BenchmarkError as exc:
    st.error(f"{say(exc)} - choose the model again on the Model page.")
    st.stop()
key = (spec["source"], tuple(spec.get("inputs") or ()), spec.get("arch"), data, tuple(spec.get("batch_axis") or ()))

left, right = st.columns(2)
with left:
    st.subheader("Per-layer sensitivity")
    method = st.radio("Compress one layer at a time with", ["int8", "prune"], horizontal=True,
                      key=kept("sens.method", "int8", ["int8", "prune"]),
                      format_func={"int8": "INT8 (static, per-channel)", "prune": "50 % magnitude pruning"}.get,
                      help="INT8 quantizes only that layer (the int8-static recipe); pruning zeroes half of that "
                           "layer's smallest weights. The rest of the model stays FP32.")
    max_layers = st.number_input("Layers to test (largest by MACs first; 0 = all)", 0, 1000, key=kept("sens.layers", 0),
                                 help="Each tested layer costs one compression and one evaluation; testing only the "
                                      "largest layers finds the expensive ones sooner.")
    if st.button("Run sensitivity analysis", type="primary"):
        try:
            out = run_job("sensitivity analysis", sensitivity_isolated, spec, method=method, data=data,
                          max_layers=int(max_layers) or None)
            st.session_state["sensitivity"] = (key, method, out)
        except BenchmarkError as exc:
            st.error(f"Sensitivity analysis failed: {say(exc)} - try the other method or another dataset.")
with right:
    st.subheader("Accuracy-aware INT8 search")
    budget = st.number_input("Allowed quality drop (percentage points)", 0.0, 100.0, step=0.1, key=kept("sens.budget", 1.0),
                             help="The search keeps the most sensitive layers in FP32 until the drop is at most this.")
    trials = st.number_input("At most this many trials", 1, 50, key=kept("sens.trials", 6),
                             help="Each trial quantizes, evaluates and times one configuration.")
    if st.button("Run the search", type="primary"):
        prior = st.session_state.get("sensitivity")
        table = prior[2]["table"] if prior and prior[0] == key and prior[1] == "int8" else None
        try:
            out = run_job("accuracy-aware search", search_isolated, spec, budget_points=float(budget),
                          max_trials=int(trials), data=data, sensitivity=table)
            st.session_state["search"] = (key, out)
        except BenchmarkError as exc:
            st.error(f"Search failed: {say(exc)} - raise the budget or check the dataset.")

save()
done = st.session_state.get("sensitivity")
if done and done[0] == key:
    res = done[2]
    table = pd.DataFrame(res["table"], columns=res["columns"])
    st.plotly_chart(plots.sensitivity_figure(table, title=f"Per-layer sensitivity ({done[1]})"), width="stretch", theme=None)
    st.dataframe(table.rename(columns={"macs_share": "MACs share (0-1)", "metric_before": "quality before (0-1)",
                                       "metric_after": "quality after (0-1)", "delta": "drop (points)"}),
                 hide_index=True, width="stretch")
    attrs = res.get("attrs") or {}
    skipped = attrs.get("layers_not_tested") or 0
    st.caption(f"{res['data_note'].capitalize()}." + (f" {skipped} smaller layer(s) not tested." if skipped else ""))
    for w in attrs.get("warnings") or []:
        st.caption(f"Note: {w}")
search = st.session_state.get("search")
if search and search[0] == key:
    res = search[1]
    st.subheader("Search result")
    ch = res["chosen"]
    if ch is None:
        st.warning(f"No tried configuration stayed within {res['budget_points']:g} points. Raise the budget or allow more trials.")
    else:
        c = st.columns(4)
        c[0].metric("Layers kept in FP32", len(ch["excluded_layers"]))
        c[1].metric("Quality drop", f"{ch['delta']:.2f} points")
        c[2].metric("p50 latency (batch 8, 1 thread)", f"{ch['latency_p50_ms']:.3f} ms")
        c[3].metric("Speedup vs FP32", f"{ch['speedup_vs_fp32']:.2f} x")
        st.markdown("Kept in FP32: " + (", ".join(f"`{n}`" for n in ch["excluded_layers"]) or "none (full INT8)"))
        chosen_path = Path(ch["onnx_path"])
        if chosen_path.is_file():
            st.download_button("Download the chosen INT8 model (.onnx)", chosen_path.read_bytes(), "slimbench-int8-search.onnx")
    tried = pd.DataFrame(res["tried"]).drop(columns=["onnx_path"], errors="ignore")
    if not tried.empty:
        tried = tried.assign(excluded_layers=tried["excluded_layers"].map(", ".join),
                             size_mb=tried["size_bytes"] / 1e6).drop(columns=["size_bytes"])
    st.dataframe(tried.rename(columns={"metric": "quality (0-1)", "delta": "drop (points)", "latency_p50_ms": "p50 latency (ms)",
                                       "size_mb": "size (MB)", "speedup_vs_fp32": "speedup vs FP32 (x)"}),
                 hide_index=True, width="stretch")
    st.caption(f"{res['data_note'].capitalize()}. FP32 p50 latency {res['reference_latency_p50_ms']:.3f} ms.")
    for w in res["warnings"]:
        st.caption(f"Note: {w}")

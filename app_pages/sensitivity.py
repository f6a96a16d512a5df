"""Sensitivity: which layers hurt quality most when compressed alone, and an accuracy-aware INT8 search
that keeps the most sensitive layers in FP32 until the quality drop fits a budget.

Both hold the device queue while they run, so they never time anything next to a running sweep."""
import uuid

import streamlit as st

from benchmark import plots


@st.cache_resource(max_entries=4, show_spinner="Loading the model ...")
def load(source: str, inputs: tuple[str, ...], arch: str | None, trust: bool):
    from benchmark import InputSpec, load_model

    return load_model(source, inputs=[InputSpec.parse(t) for t in inputs], arch=arch, trust_pickle=trust)


def datasets(model):
    """(evaluation data, calibration data, note): the model's own dataset, else random inputs."""
    from benchmark.data import random_dataset, resolve_dataset

    evaluation = resolve_dataset(None, model, split="test")
    if evaluation is None:
        rnd = random_dataset(model.inputs, 64)
        return rnd, rnd, "The model has no dataset: quality is top-1 agreement with FP32 on 64 random inputs."
    return evaluation, resolve_dataset(None, model, split="calib"), f"Evaluated on {evaluation.name} ({len(evaluation)} samples)."


def run_queued(label: str, fn, *args, **kwargs):
    """Run ``fn`` holding the CPU queue slot, with a progress bar fed by its progress callback."""
    from benchmark.jobs import DeviceQueue

    bar = st.progress(0.0, text=f"{label}: waiting for the CPU ...")

    def progress(message: str, fraction: float | None = None) -> None:
        bar.progress(min(1.0, max(0.0, fraction if fraction is not None else 0.0)), text=message)

    def waiting(ahead: int) -> None:
        bar.progress(0.0, text=f"{label}: queued behind {ahead} job(s) on the CPU")

    with DeviceQueue("cpu").slot(label=label, on_wait=waiting):
        out = fn(*args, progress=progress, **kwargs)
    bar.empty()
    return out


st.title("Sensitivity")
spec = st.session_state.get("model") or {"source": "sample:digits-cnn", "inputs": [], "name": "sample:digits-cnn"}
st.markdown(f"Model: **{spec.get('name') or spec['source']}** (change it on the Model page). Layers are the "
            "Conv / Gemm / MatMul nodes of its ONNX graph; the drop is in percentage points of top-1 accuracy "
            "(or of agreement with FP32 without labels), positive = worse.")
from benchmark import BenchmarkError  # noqa: E402

try:
    model = load(spec["source"], tuple(spec.get("inputs") or ()), spec.get("arch"), bool(spec.get("trust_pickle")))
    eval_data, calib_data, note = datasets(model)
except BenchmarkError as exc:
    st.error(f"{exc} - choose another model or give input shapes on the Model page.")
    st.stop()
st.caption(note)
key = (spec["source"], tuple(spec.get("inputs") or ()))

left, right = st.columns(2)
with left:
    st.subheader("Per-layer sensitivity")
    method = st.radio("Compress one layer at a time with", ["int8", "prune"], horizontal=True,
                      format_func={"int8": "INT8 (static, per-channel)", "prune": "50 % magnitude pruning"}.get)
    max_layers = st.number_input("Layers to test (largest by MACs first; 0 = all)", 0, 1000, 0)
    if st.button("Run sensitivity analysis", type="primary"):
        from benchmark.compress.sensitivity import layer_sensitivity

        try:
            table = run_queued("sensitivity analysis", layer_sensitivity, model, method=method, eval_data=eval_data,
                               max_layers=int(max_layers) or None)
            st.session_state["sensitivity"] = (key, method, table)
        except BenchmarkError as exc:
            st.error(f"Sensitivity analysis failed: {exc} - try the other method or another dataset.")
with right:
    st.subheader("Accuracy-aware INT8 search")
    budget = st.number_input("Allowed quality drop (percentage points)", 0.0, 100.0, 1.0, 0.1)
    trials = st.number_input("At most this many trials", 1, 50, 6)
    if st.button("Run the search", type="primary"):
        from benchmark.compress.sensitivity import accuracy_aware_search
        from benchmark.paths import work_root

        prior = st.session_state.get("sensitivity")
        table = prior[2] if prior and prior[0] == key and prior[1] == "int8" else None
        try:
            result = run_queued("accuracy-aware search", accuracy_aware_search, model, eval_data, calib_data,
                                budget_points=float(budget), max_trials=int(trials), sensitivity=table,
                                workdir=work_root() / f"search-{uuid.uuid4().hex[:12]}")
            st.session_state["search"] = (key, result)
        except BenchmarkError as exc:
            st.error(f"Search failed: {exc} - raise the budget or check the dataset.")

done = st.session_state.get("sensitivity")
if done and done[0] == key:
    st.plotly_chart(plots.sensitivity_figure(done[2], title=f"Per-layer sensitivity ({done[1]})"), width="stretch", theme=None)
    st.dataframe(done[2].rename(columns={"macs_share": "MACs share (0-1)", "metric_before": "quality before (0-1)",
                                         "metric_after": "quality after (0-1)", "delta": "drop (points)"}),
                 hide_index=True, width="stretch")
search = st.session_state.get("search")
if search and search[0] == key:
    res = search[1]
    st.subheader("Search result")
    if res.chosen is None:
        st.warning(f"No tried configuration stayed within {res.budget_points:g} points. Raise the budget or allow more trials.")
    else:
        ch = res.chosen
        c = st.columns(4)
        c[0].metric("Layers kept in FP32", len(ch["excluded_layers"]))
        c[1].metric("Quality drop", f"{ch['delta']:.2f} points")
        c[2].metric("p50 latency (batch 8, 1 thread)", f"{ch['latency_p50_ms']:.3f} ms")
        c[3].metric("Speedup vs FP32", f"{ch['speedup_vs_fp32']:.2f} x")
        st.markdown("Kept in FP32: " + (", ".join(f"`{n}`" for n in ch["excluded_layers"]) or "none (full INT8)"))
        with open(ch["onnx_path"], "rb") as fh:
            st.download_button("Download the chosen INT8 model (.onnx)", fh.read(), "slimbench-int8-search.onnx")
    tried = res.tried.drop(columns=["onnx_path"], errors="ignore").assign(
        excluded_layers=lambda d: d["excluded_layers"].map(", ".join),
        size_mb=lambda d: d["size_bytes"] / 1e6).drop(columns=["size_bytes"])
    st.dataframe(tried.rename(columns={"metric": "quality (0-1)", "delta": "drop (points)", "latency_p50_ms": "p50 latency (ms)", "size_mb": "size (MB)",
                                       "speedup_vs_fp32": "speedup vs FP32 (x)"}), hide_index=True, width="stretch")
    for w in res.warnings:
        st.caption(f"Note: {w}")

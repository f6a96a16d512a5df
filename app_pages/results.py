"""Results: one sweep's table (units in the headers), trade-off plots, and the runs that failed or were skipped."""
import streamlit as st

from benchmark import plots


@st.cache_data(ttl=3, show_spinner=False)
def load(db: str, sweep_id: int, stamp: str):
    """(results frame, per-iteration latency samples, first row's environment) of a sweep.

    ``stamp`` (the sweep's last update) keys the cache so a finished sweep is read once."""
    from benchmark.results import results_to_frame
    from benchmark.store import Store

    results = Store(db).get_results(sweep_id)
    env = next((r.env for r in results if r.env), None)
    return results_to_frame(results), plots.latency_samples_frame(results), env


def sweep_picker():
    from benchmark import BenchmarkError
    from benchmark.report import sweep_label
    from benchmark.store import Store

    try:
        store = Store()
        sweeps = store.list_sweeps()
    except BenchmarkError as exc:  # e.g. a corrupt database: its path and what to do, in one line
        st.error(f"{exc}")
        st.stop()
    if not sweeps:
        st.info("No sweeps stored yet: start one on Compress & run, or click 'Try the demo' on Home.")
        st.stop()
    ids = [s.id for s in sweeps]
    wanted = st.session_state.get("results_sweep_id")
    index = ids.index(wanted) if wanted in ids else 0
    rec = st.selectbox("Sweep", sweeps, index=index, format_func=sweep_label)
    st.session_state["results_sweep_id"] = rec.id
    return store, rec


def show(store, sweep_id: int, was_active: bool) -> None:
    from benchmark import BenchmarkError

    try:
        rec = store.get_sweep(sweep_id)
        df, samples, env = load(str(store.path), rec.id, f"{rec.updated_at}|{sum(rec.counts.values())}")
    except BenchmarkError as exc:
        st.error(f"{exc}")
        return
    if was_active and not rec.active:
        st.rerun()  # finished: redraw the page once, without the periodic refresh
    if rec.active:
        st.progress(min(1.0, float(rec.fraction or 0)), text=f"{rec.status}: {rec.progress or 'starting ...'}")
    elif rec.error:
        st.error(f"Sweep #{rec.id} {rec.status}: {rec.error}")
    ok = plots.ok_rows(df)
    bad = plots.failures_table(df)
    st.caption(f"{len(ok)} runs ok, {len(bad)} failed/skipped/unfinished, of {len(df)}. Latency is the median (p50) "
               "of the timed iterations; throughput = batch / mean latency; MACs per sample, FLOPs = 2 x MACs. "
               "GPU rows add engine build time (never part of the latency) and, with NVML, the whole GPU board's "
               "mean power and energy over the timed iterations.")
    batches = sorted(int(b) for b in ok["batch_size"].unique()) if len(ok) else [1]
    c1, c2, c3 = st.columns(3)
    batch = c1.selectbox("Batch size for the trade-off plots", batches)
    budget = c2.number_input("Latency budget (ms, 0 = none)", min_value=0.0, value=0.0, step=0.1, format="%.3f",
                             help="Marks the best-quality variant whose p50 latency is within the budget.")
    kind = c3.radio("Latency distribution", ["box", "violin"], horizontal=True)
    tabs = st.tabs(["Trade-off", "Throughput", "Size & MACs", "Latency distribution", "Speedup", "Backends"])
    figs = [
        plots.tradeoff_figure(df, batch_size=batch, latency_budget_ms=budget or None),
        plots.throughput_figure(df),
        plots.size_macs_figure(df, batch_size=batch),
        plots.latency_distribution_figure(samples, batch_size=batch, kind=kind),
        plots.speedup_figure(df, batch_size=batch),
        plots.agreement_figure(df, batch_size=batch),
    ]
    for i, (tab, fig) in enumerate(zip(tabs, figs)):
        with tab:
            st.plotly_chart(fig, width="stretch", theme=None, key=f"results-chart-{i}")
    st.caption("Colour = precision; marker = backend (circle PyTorch, square ONNX Runtime, triangle ONNX Runtime + "
               "TensorRT provider, diamond TensorRT, hexagon Torch-TensorRT); open "
               "markers = pruned or low-rank; ringed points joined by the dotted line = Pareto front (no other variant "
               "is both faster and better); star = best quality within the latency budget.")
    st.subheader("All runs")
    st.dataframe(plots.display_table(df), hide_index=True, width="stretch")
    if len(bad):
        st.subheader(f"Failed, skipped or unfinished ({len(bad)})")
        st.dataframe(bad, hide_index=True, width="stretch")
    with st.expander("What each variant did (compression records and warnings)"):
        seen = set()
        for _, row in df.iterrows():
            if row["variant"] in seen:
                continue
            seen.add(row["variant"])
            st.markdown(f"**{row['variant']}**: {row.get('compression') or 'reference (no compression)'}")
            if row.get("warnings"):
                st.caption(row["warnings"])
    if env:
        with st.expander("Environment of these measurements"):
            st.json(env, expanded=False)


st.title("Results")
store, rec = sweep_picker()
st.fragment(show, run_every=2.0 if rec.active else None)(store, rec.id, rec.active)

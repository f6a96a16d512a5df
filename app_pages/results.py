"""Results: one sweep's table (quality, speedup and size first; units in the headers), trade-off
plots with one quality metric the user can switch, and the runs that failed or were skipped."""
import streamlit as st

from app_pages.explain_ui import environment_lines, profile_tab
from app_pages.shared import HELP, kept, save, say, session, stored_sweeps
from benchmark import plots


@st.cache_data(ttl=3, show_spinner=False)
def load(db: str, sweep_id: int, stamp: str):
    """(results frame, per-iteration latency samples, {machine: its environment}) of a sweep.

    ``stamp`` (the sweep's last update) keys the cache so a finished sweep is read once."""
    from benchmark.results import results_to_frame
    from benchmark.store import Store

    results = Store(db).get_results(sweep_id)
    frame = results_to_frame(results)
    envs = {}
    for machine, r in zip([plots.machine_of(row) for _, row in frame.iterrows()], results):
        if r.env and (machine or "this machine") not in envs:
            envs[machine or "this machine"] = r.env
    return frame, plots.latency_samples_frame(results), envs


def sweep_picker():
    from benchmark.report import sweep_label

    store, sweeps = stored_sweeps()
    ids = [s.id for s in sweeps]
    wanted = st.session_state.get("results_sweep_id")
    index = ids.index(wanted) if wanted in ids else 0
    rec = st.selectbox("Sweep", sweeps, index=index, format_func=sweep_label)
    st.session_state["results_sweep_id"] = rec.id
    save()
    return store, rec


def notices(df) -> None:
    """Warnings a user must see before reading the plots: unstable timings, thin calibration."""
    from benchmark.results import calibration_warning

    ok = plots.ok_rows(df)
    unstable = ok[[plots.is_unstable(r) for _, r in ok.iterrows()]] if len(ok) else ok
    if len(unstable):
        names = ", ".join(sorted({f"{r['variant']} on {r['backend']} (batch {int(r['batch_size'])})"
                                  for _, r in unstable.iterrows()})[:6])
        where = ("the Pareto front is drawn from them, as no run is stable" if len(unstable) == len(ok)
                 else "left out of the Pareto front")
        st.warning(f"{len(unstable)} run(s) have unstable timings, even on their last timing attempt: {names}. Their "
                   f"points are faded and {where}; the table's timing column says why. Rerun them on a quieter "
                   "machine.")
    seen = set()
    for _, r in ok.iterrows():
        text = calibration_warning(r)
        if text and r["variant"] not in seen:
            seen.add(r["variant"])
            st.warning(f"{r['variant']}: {text}.")


def controls(df):
    """(batch size, latency budget, metric, distribution kind) chosen above the plots; the metric is
    kept per sweep (each model has its own default)."""
    from benchmark.measure import derived
    from benchmark.measure.quality import get_metric

    ok = plots.ok_rows(df)
    batches = sorted(int(b) for b in ok["batch_size"].unique()) if len(ok) else [1]
    metrics = derived.available_metrics(ok) if len(ok) else []
    c1, c2, c3, c4 = st.columns(4)
    batch = c1.selectbox("Batch size for the trade-off plots", batches, key=kept("results.batch", batches[0], batches),
                         help="Latency and quality are compared at one batch size; throughput shows them all.")
    budget = c2.number_input("Latency budget (ms, 0 = none)", min_value=0.0, step=0.1, format="%.3f",
                             key=kept("results.budget", 0.0), help=HELP["budget"])
    metric = None
    if metrics:
        default = derived.default_metric(ok) or metrics[0]
        sweep = "-".join(str(int(s)) for s in sorted(ok["sweep_id"].dropna().unique())) if "sweep_id" in ok else ""
        metric = c3.selectbox("Quality metric", metrics, key=kept(f"results.metric.{sweep}", default, metrics),
                              format_func=lambda m: get_metric(m).label, help=HELP["metric"])
    if metric and "quality_why" in ok and "quality_metric" in ok:
        why = ok[(ok["quality_metric"] == metric) & ok["quality_why"].notna()]["quality_why"]
        if len(why):
            c3.caption(f"Chosen for this model because {why.iloc[0]}.")
    kind = c4.radio("Latency distribution", ["box", "violin"], horizontal=True, key=kept("results.kind", "box"),
                    help="A box shows the quartiles and outliers; a violin the whole shape of the timings.")
    return batch, budget, metric, kind


def machine_controls(df, sweep_id: int):
    """(colour by, the variant to compare across machines or None) where the sweep ran on several
    machines (a Ray sweep's targets); a warning for rows lost with their machine."""
    lost = df[df["status"] == "interrupted"] if "status" in df else df.iloc[0:0]
    if len(lost):
        st.warning(f"{len(lost)} run(s) were lost with the machine that ran them (interrupted; see the list below). "
                   f"Resume the sweep to run them again: `slimbench run --resume {sweep_id}` from a terminal, once "
                   "the machine (or another node with its resource) is back.")
    ok = plots.ok_rows(df)
    names = plots.machines(ok)
    if len(names) < 2:
        return "precision", None
    st.caption(f"Measured on {len(names)} machines: {'; '.join(names)}. Speedups and quality compare each variant "
               "with the FP32 reference of the same machine.")
    c1, c2 = st.columns(2)
    color_by = c1.radio("Colour by", ["precision", "machine"], horizontal=True,
                        key=kept("results.color_by", "precision"),
                        help="Colour the trade-off and throughput plots by precision, or give each machine its own "
                             "colour (one Pareto front per machine).")
    variants = ["every variant"] + list(dict.fromkeys(ok["variant"]))
    chosen = c2.selectbox("Compare one variant across machines", variants,
                          key=kept("results.across", variants[0], variants),
                          help="The trade-off plot shows only this variant, one colour per machine.")
    return ("machine", chosen) if chosen != variants[0] else (color_by, None)


def _given(value) -> bool:
    return value is not None and value == value and value != ""  # not None, not NaN, not empty


def variant_notes(df) -> None:
    from benchmark.results import calibration_warning

    seen = set()
    for _, row in df.iterrows():
        if row["variant"] in seen:
            continue
        seen.add(row["variant"])
        st.markdown(f"**{row['variant']}**: {row.get('compression') or 'reference (no compression)'}")
        if _given(row.get("int8_format")):
            reason = row.get("int8_format_reason")
            st.caption(f"INT8 format {str(row['int8_format']).upper()}: {reason if _given(reason) else 'no reason recorded'}")
        used, asked = row.get("calib_samples_used"), row.get("calib_samples_requested")
        if _given(used):
            st.caption(f"Calibration: {int(used)} samples used of {int(asked) if _given(asked) else '?'} asked for. "
                       f"{calibration_warning(row) or ''}")
        if _given(row.get("warnings")):
            st.caption(say(row["warnings"]))


def show(store, sweep_id: int, was_active: bool) -> None:
    from benchmark import BenchmarkError
    from benchmark.recommend import recommended_pick
    from benchmark.results import CROSS_BACKEND_TOLERANCES

    try:
        rec = store.get_sweep(sweep_id)
        df, samples, envs = load(str(store.path), rec.id, f"{rec.updated_at}|{sum(rec.counts.values())}")
    except BenchmarkError as exc:
        st.error(say(exc))
        return
    if was_active and not rec.active:
        st.rerun()  # finished: redraw the page once, without the periodic refresh
    if rec.active:
        st.progress(min(1.0, float(rec.fraction or 0)), text=f"{rec.status}: {rec.progress or 'starting ...'}")
    elif rec.error:
        st.error(f"Sweep #{rec.id} {rec.status}: {say(rec.error)}")
    ok = plots.ok_rows(df)
    bad = plots.failures_table(df)
    st.caption(f"{len(ok)} runs ok, {len(bad)} failed/skipped/unfinished, of {len(df)}. Latency and speedup use the "
               "median (p50) of the timed iterations everywhere; throughput = batch / mean latency (total work over "
               "total time); MACs per sample, FLOPs = 2 x MACs. GPU rows add engine build time (never part of the "
               "latency) and, with NVML, the whole GPU board's mean power and energy over the timed iterations.")
    notices(df)
    batch, budget, metric, kind = controls(df)
    color_by, across = machine_controls(df, rec.id)
    save()
    tabs = st.tabs(["Trade-off", "Throughput", "Size & MACs", "Latency distribution", "Speedup", "Backends", "Profile"])
    figs = [
        plots.tradeoff_figure(df if across is None else df[df["variant"] == across], batch_size=batch,
                              latency_budget_ms=budget or None, metric=metric, color_by=color_by,
                              recommended=recommended_pick(store, rec),
                              title=None if across is None else f"{across} across machines (batch {batch})"),
        plots.throughput_figure(df, color_by=color_by),
        plots.size_macs_figure(df, batch_size=batch, metric=metric),
        plots.latency_distribution_figure(samples, batch_size=batch, kind=kind),
        plots.speedup_figure(df, batch_size=batch),
        plots.agreement_figure(df, batch_size=batch, metric=metric),
    ]
    tolerances = ", ".join(f"{p} {a:g}" for p, (a, _) in CROSS_BACKEND_TOLERANCES.items())
    for i, (tab, fig) in enumerate(zip(tabs, figs)):
        with tab:
            st.plotly_chart(fig, width="stretch", theme=None, key=f"results-chart-{i}")
            if i == 5:
                st.caption("pass / FAIL: each variant's first output on a backend compared element by element with the "
                           "first backend's on the same samples; an element fails when its absolute and its relative "
                           f"error both exceed the tolerance (atol = rtol: {tolerances}). Each bar's label repeats "
                           "the tolerance it was checked at.")
    with tabs[-1]:
        profile_tab(store, rec, df)
    with st.expander("How the points are drawn", expanded=False):
        st.markdown(plots.legend_markdown())
    st.subheader("All runs")
    st.dataframe(plots.display_table(df, metric=metric), hide_index=True, width="stretch")
    if len(bad):
        st.subheader(f"Failed, skipped or unfinished ({len(bad)})")
        st.dataframe(bad.assign(reason=bad["reason"].map(say)), hide_index=True, width="stretch")
    with st.expander("What each variant did (compression records, INT8 format, calibration, warnings)"):
        variant_notes(df)
    for machine, env in envs.items():
        with st.expander("Environment of these measurements" + (f": {machine}" if len(envs) > 1 else "")):
            environment_lines(env)
            st.json(env, expanded=False)


session()
st.title("Results")
store, rec = sweep_picker()
st.fragment(show, run_every=2.0 if rec.active else None)(store, rec.id, rec.active)

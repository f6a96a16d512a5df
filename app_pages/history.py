"""History & compare: every stored sweep; overlay several on one trade-off plot; delete; export CSV,
JSON and a self-contained HTML report."""
import json

import streamlit as st

from app_pages.shared import HELP, kept, save, say, session, stored_sweeps
from benchmark import plots


@st.cache_data(ttl=5, show_spinner=False)
def frames(db: str, sweep_ids: tuple[int, ...]):
    """(results frame, latency samples, first environment, JSON rows) of the chosen sweeps."""
    from benchmark.results import results_to_frame
    from benchmark.store import Store

    results = Store(db).get_results(list(sweep_ids))
    env = next((r.env for r in results if r.env), None)
    rows = [r.to_json() for r in results]
    return results_to_frame(results), plots.latency_samples_frame(results), env, rows


def delete_box(store, sweeps) -> None:
    from benchmark.report import sweep_label

    with st.expander("Delete a sweep"):
        rec = st.selectbox("Sweep to delete", sweeps, format_func=sweep_label, key="delete_pick")
        sure = st.checkbox("Yes, delete it and all its rows", key="delete_sure")
        if st.button("Delete", disabled=not sure, icon=":material/delete:"):
            if store.get_sweep(rec.id).active:
                st.error(f"Sweep #{rec.id} is still running: cancel it on Compress & run first, then delete it.")
                return
            n = store.delete_sweep(rec.id)
            st.session_state.pop("delete_sure", None)
            st.toast(f"Deleted sweep #{rec.id} ({n} rows)")
            st.rerun()


session()
st.title("History & compare")
from benchmark import BenchmarkError  # noqa: E402
from benchmark.report import build_report, sweep_label, sweeps_table  # noqa: E402

store, sweeps = stored_sweeps()
st.dataframe(sweeps_table(sweeps), hide_index=True, width="stretch")
delete_box(store, sweeps)

by_id = {s.id: s for s in sweeps}
chosen = st.multiselect("Sweeps to compare or export", list(by_id), default=list(by_id)[:2] if len(by_id) > 1 else list(by_id),
                        format_func=lambda i: sweep_label(by_id[i]))
if not chosen:
    st.info("Pick one or more sweeps above.")
    st.stop()
try:
    df, samples, env, rows = frames(str(store.path), tuple(sorted(chosen)))
except BenchmarkError as exc:
    st.error(say(exc))
    st.stop()
c1, c2 = st.columns(2)
batches = sorted(int(b) for b in plots.ok_rows(df)["batch_size"].unique()) or [1]
batch = c1.selectbox("Batch size", batches, key=kept("history.batch", batches[0], batches),
                     help="Latency and quality are compared at one batch size; throughput shows them all.")
budget = c2.number_input("Latency budget (ms, 0 = none)", min_value=0.0, step=0.1, format="%.3f",
                         key=kept("history.budget", 0.0), help=HELP["budget"])
save()
by_sweep = "sweep" if len(chosen) > 1 else "precision"
st.caption("With several sweeps each sweep has its own colour and its own Pareto front; lines never join points of "
           "different sweeps.")
st.plotly_chart(plots.tradeoff_figure(df, batch_size=batch, latency_budget_ms=budget or None, color_by=by_sweep,
                                      title=f"Quality vs latency, {len(chosen)} sweep(s), batch {batch}"),
                width="stretch", theme=None, key="history-tradeoff")
st.plotly_chart(plots.throughput_figure(df, color_by=by_sweep), width="stretch", theme=None, key="history-throughput")
st.dataframe(plots.display_table(df), hide_index=True, width="stretch")

st.subheader("Export")
name = "slimbench-sweeps-" + "-".join(str(i) for i in sorted(chosen))
e1, e2, e3 = st.columns(3)
e1.download_button("CSV (one row per run)", df.to_csv(index=False), f"{name}.csv", "text/csv", icon=":material/download:")
e2.download_button("JSON (full rows)", json.dumps(rows, indent=2, allow_nan=False), f"{name}.json", "application/json",
                   icon=":material/download:")
if e3.button("Build the HTML report", icon=":material/description:"):
    st.session_state["report_html"] = (name, build_report(df, samples=samples, sweeps=[by_id[i] for i in chosen],
                                                          environment=env, latency_budget_ms=budget or None,
                                                          title=f"Slimbench report: sweeps {', '.join(map(str, sorted(chosen)))}"))
report = st.session_state.get("report_html")
if report and report[0] == name:
    e3.download_button("Download the HTML report (self-contained)", report[1], f"{name}.html", "text/html",
                       icon=":material/download:")

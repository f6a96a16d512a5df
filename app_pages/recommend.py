"""Recommend: which variant of the chosen model to ship on this machine. Searches precision, pruning,
low-rank, distillation, backend and runtime settings in a background process (progress, cancel),
then shows the fastest variant within the quality budget, its speedup with a confidence interval,
why every other family lost, the trade-off plot with the pick marked, and the model file."""
from pathlib import Path

import streamlit as st

from app_pages.shared import data_choice, kept, save, say, session

HELP = {
    "budget": "How much worse than FP32 the variant may be, in points of the quality metric (accuracy, agreement or "
              "cosine x 100): measured on half of the evaluation data, checked on the other half.",
    "latency": "The chosen variant's median latency must also stay within this; 0 = no latency budget.",
    "time": "The search stops trying new candidates when this is spent (a fifth is kept for the final comparison).",
    "space": "Axes the search may vary; unticked ones stay at FP32's setting.",
}


@st.cache_data(ttl=600, show_spinner="Checking backends ...")
def usable_backends() -> list[str]:
    from benchmark.backends import backend_status

    return [r["backend"] for r in backend_status() if r["device"] == "cpu" and r["available"]]


def request_form(model: dict):
    from benchmark import BenchmarkError
    from benchmark.recommend import RecommendRequest

    c1, c2, c3 = st.columns(3)
    budget = c1.number_input("Quality budget (points)", 0.0, 100.0, step=0.1, key=kept("rec.budget", 1.0), help=HELP["budget"])
    latency = c1.number_input("Latency budget (ms, 0 = none)", 0.0, 1e6, key=kept("rec.latency", 0.0), help=HELP["latency"])
    batch = c1.number_input("Batch size", 1, 4096, key=kept("rec.batch", 1))
    usable = usable_backends()
    default = [b for b in ("onnxruntime", "pytorch") if b in usable]
    backends = c2.multiselect("Backends", usable, key=kept("rec.backends", default, usable))
    seconds = c2.number_input("Time budget (s)", 10, 3600, key=kept("rec.time", 120), help=HELP["time"])
    with c2:
        data = data_choice("recommend")
    axes = []
    with c3:
        st.markdown("**Search**", help=HELP["space"])
        for axis, label in (("prune", "structured pruning"), ("lowrank", "low-rank"), ("distill", "distillation"),
                            ("threads", "thread counts"), ("graph_optimization_level", "ONNX Runtime optimization levels")):
            if not st.checkbox(label, key=kept(f"rec.axis.{axis}", True)):
                axes.append(f"{axis}={'off' if axis == 'distill' else 'all' if axis.startswith('graph') else 0}")
    try:
        return RecommendRequest(model=model["source"], budget_points=float(budget), latency_budget_ms=float(latency) or None,
                                batch_size=int(batch), backends=tuple(backends), time_budget_s=float(seconds), data=data,
                                inputs=tuple(model.get("inputs") or ()), batch_axis=tuple(model.get("batch_axis") or ()),
                                arch=model.get("arch"),
                                trust_pickle=bool(model.get("trust_pickle")), axes=tuple(axes))
    except BenchmarkError as exc:
        st.error(f"{say(exc)} - change the settings above.")
        return None


def show_result(store, rec) -> None:
    from benchmark import plots
    from benchmark.recommend import load_recommendation
    from benchmark.recommend.report import candidates_frame, families_frame, headline, star_sentence

    summary = load_recommendation(store, rec.id)
    if summary is None:
        st.error(f"Recommendation #{rec.id} {rec.status}: {say(rec.error or rec.progress or 'no result')}")
        return
    ch = summary["chosen"]
    if summary["keep_fp32"]:
        st.info(f"**Keep FP32** on {ch['backend']}: {say(summary['reason'].removeprefix('keep FP32: '))}")
    else:
        st.success(f"**Ship {ch['variant']}** on {ch['backend']}. {say(summary['reason'])}")
    for col, (label, value, help_text) in zip(st.columns(4), headline(summary)):
        col.metric(label, value, help=help_text)
    art = summary.get("artifact")
    if art and Path(art["path"]).is_file():
        st.download_button(f"Download the model ({art['format']})", Path(art["path"]).read_bytes(), Path(art["path"]).name,
                           help=f"Run it with {art['how_to_run']}; settings: {art['runtime']}")
    frame = store.results_frame(rec.id)
    st.plotly_chart(plots.tradeoff_figure(frame, recommended=(ch["variant"], ch["backend"]), batch_size=summary["batch_size"],
                                          latency_budget_ms=summary.get("latency_budget_ms")), width="stretch", theme=None)
    st.caption(star_sentence(summary))
    st.markdown("**Why each family lost**")
    st.dataframe(families_frame(summary), hide_index=True, width="stretch")
    st.markdown("**Every candidate** (drops in points: positive = worse; the interval is the speedup's, from "
                "interleaved repeats)")
    st.dataframe(candidates_frame(summary).round(4), hide_index=True, width="stretch")
    counts = summary["counts"]
    st.caption(f"{counts['measured']} of {counts['candidates']} candidates measured in {summary['elapsed_s']:.0f} s. "
               f"Strategy: {summary['strategy']}. " + " ".join(say(n) + "." for n in summary.get("notes") or []))


def panel() -> None:
    from benchmark import BenchmarkError
    from benchmark.recommend import is_recommendation
    from benchmark.store import Store
    from benchmark.sweep import cancel_sweep

    try:
        store = Store()
        store.mark_interrupted()
        recs = [r for r in store.list_sweeps(limit=200) if is_recommendation(r)]
    except BenchmarkError as exc:
        st.error(say(exc))
        return
    running = [r for r in recs if r.active]
    if not running and st.session_state.pop("_rec_refreshing", False):
        st.rerun()  # finished: redraw the page once, without the periodic refresh
    for rec in running:
        with st.container(border=True):
            st.progress(min(1.0, float(rec.fraction or 0)), text=f"#{rec.id} {rec.model}: {rec.progress or rec.status}")
            if rec.status != "cancelling" and st.button("Cancel", key=f"rec-cancel-{rec.id}", icon=":material/cancel:"):
                st.toast(f"Recommendation #{rec.id}: {cancel_sweep(store, rec.id)}")
    done = [r for r in recs if not r.active]
    if not done:
        st.caption("No finished recommendation yet.")
        return
    labels = {r.id: f"#{r.id} {r.model} ({r.status}, {r.created_at[:16].replace('T', ' ')})" for r in done}
    if st.session_state.get("rec.new") in labels:  # the one this page started has finished: show it
        st.session_state["rec.show"] = st.session_state.pop("rec.new")
    chosen = st.selectbox("Recommendation", list(labels), format_func=labels.get, key=kept("rec.show", done[0].id, list(labels)))
    show_result(store, next(r for r in done if r.id == chosen))


session()
st.title("Recommend")
model = st.session_state.get("model") or {"source": "sample:digits-cnn", "inputs": [], "name": "sample:digits-cnn"}
st.markdown(f"Model: **{model.get('name') or model['source']}** (change it on the Model page). The search runs in the "
            "background on this machine's CPU queue; you can leave the page and come back.")
request = request_form(model)
if request is not None and st.button("Recommend", type="primary", icon=":material/auto_awesome:"):
    from benchmark import BenchmarkError
    from benchmark.recommend import start_recommend_background

    try:
        rec_id = start_recommend_background(request)
    except BenchmarkError as exc:
        st.error(f"Could not start the recommendation: {say(exc)}")
    else:
        st.session_state["rec.new"] = rec_id
        st.toast(f"Recommendation #{rec_id} started")
save()
from benchmark import BenchmarkError  # noqa: E402
from benchmark.recommend import is_recommendation  # noqa: E402
from benchmark.store import ACTIVE_SWEEP_STATUSES, Store  # noqa: E402

try:
    active = any(is_recommendation(r) for r in Store().list_sweeps(limit=20, statuses=ACTIVE_SWEEP_STATUSES))
except BenchmarkError:  # the panel below shows the database's error
    active = False
st.session_state["_rec_refreshing"] = active
st.fragment(panel, run_every=2.0 if active else None)()

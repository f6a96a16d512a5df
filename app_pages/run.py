"""Compress & run: choose variants, backends, device, batch sizes (any typed size) and data; start a
background sweep and follow every running sweep (progress, partial results, cancel) and the recent
finished ones. Sweeps queue per device. The choices survive a reload (app_pages/shared.py). Only the
compressions and backends that apply to the model are offered (the Model page's "what applies"
check); a caption says why each of the others is off."""
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

from app_pages.explain_ui import runtime_widgets
from app_pages.machines import executor_settings
from app_pages.shared import HELP, data_choice, kept, link, model_applies, off_for_model, save, say, session

BATCH_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
RATIO_CHOICES = [0.0, 0.25, 0.5, 0.75, 0.9]


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@st.cache_data(ttl=600, show_spinner="Checking backends ...")
def backend_status() -> list[dict]:
    from benchmark.backends import backend_status as status

    return status()


def load_plugins() -> None:
    """Import the plugins named in $SLIMBENCH_PLUGINS, so their backends are offered; say it when one fails."""
    from benchmark import BenchmarkError
    from benchmark.jobs import load_plugins as load

    try:
        load()
    except BenchmarkError as exc:
        st.error(say(exc))


@st.cache_data(show_spinner=False)
def plan(cfg_dict: dict) -> tuple[int, int, float]:
    """(variants, runs, estimated seconds) of a sweep config (cheap: no model is loaded)."""
    from benchmark.sweep import estimate_duration_s, plan_size, plan_sweep, sweep_config_from_dict

    cfg = sweep_config_from_dict(cfg_dict)
    jobs = plan_sweep(cfg)
    return len({j.variant for j in jobs}), plan_size(jobs), estimate_duration_s(jobs, cfg)


def _batch_order(text: str) -> tuple:
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def batch_sizes() -> tuple[int, ...] | str:
    """Chosen or typed batch sizes (a typed 40 joins the options); an error text when one is not a number."""
    from benchmark import BenchmarkError
    from benchmark.ui import parse_batch_sizes

    key = kept("run.batches", ["1", "8"])
    st.session_state[key] = [str(v) for v in st.session_state[key]]
    options = sorted({str(b) for b in BATCH_CHOICES} | set(st.session_state[key]), key=_batch_order)
    chosen = st.multiselect("Batch sizes (samples)", options, key=key, accept_new_options=True, help=HELP["batch_sizes"])
    try:
        return parse_batch_sizes(chosen)
    except BenchmarkError as exc:
        return say(exc)


def offered(names, applies: dict | None) -> list:
    """The choices among ``names`` that apply to the model (all of them when that is unknown)."""
    return [n for n in names if applies is None or n not in applies["unavailable"]]


def variants_column(applies: dict | None) -> dict:
    from benchmark.config import CALIB_METHODS, PRECISIONS, PRUNE_KINDS

    st.markdown("**Variants**")
    options = offered(PRECISIONS, applies)
    precisions = st.multiselect("Precisions", options, key=kept("run.precisions", ["fp32", "int8-static"], options),
                                help=HELP["precisions"])
    off_for_model(PRECISIONS, applies)
    int8 = any(p in ("int8-static", "mixed") for p in precisions)
    calib = st.selectbox("INT8 calibration method", CALIB_METHODS, key=kept("run.calib", CALIB_METHODS[0], CALIB_METHODS),
                         help=HELP["calib_method"], disabled=not int8)
    calib_n = st.number_input("Calibration samples", 1, 100_000, key=kept("run.calib_n", 128), help=HELP["calib_samples"],
                              disabled=not int8)
    prunable = [k for k in PRUNE_KINDS if offered([f"prune-{k}"], applies)]
    kinds = prunable or list(PRUNE_KINDS)
    no_pruning = not prunable
    kind = st.selectbox("Pruning kind", kinds, key=kept("run.prune_kind", "structured", kinds),
                        help=HELP["prune_kind"], disabled=no_pruning)
    ratio_options = [0.0] if no_pruning else RATIO_CHOICES
    ratios = st.multiselect("Prune ratios (0 = unpruned)", ratio_options, key=kept("run.ratios", [0.0], ratio_options),
                            help=HELP["prune_ratios"], disabled=no_pruning)
    off_for_model([f"prune-{k}" for k in PRUNE_KINDS], applies)
    no_lowrank = not offered(["lowrank"], applies)
    if no_lowrank:
        st.session_state[kept("run.lowrank", 0.0)] = 0.0
    lowrank = st.slider("Low-rank: kept rank fraction (0 = off)", 0.0, 1.0, step=0.05, key=kept("run.lowrank", 0.0),
                        help=HELP["lowrank"], disabled=no_lowrank)
    no_distill = not offered(["distill"], applies)
    if no_distill:
        st.session_state[kept("run.distill", False)] = False
    distill = st.checkbox("Distil pruned / low-rank variants", key=kept("run.distill", False), help=HELP["distill"],
                          disabled=no_distill)
    off_for_model(["lowrank", "distill"], applies)
    epochs = st.number_input("Distillation epochs", 1, 200, key=kept("run.epochs", 3), help=HELP["distill_epochs"],
                             disabled=not distill)
    return dict(precisions=tuple(precisions), prune_ratios=tuple(sorted(ratios)) or (0.0,), prune_kind=kind,
                lowrank_ratio=float(lowrank), distill=distill, distill_epochs=int(epochs), calib_method=calib,
                calib_samples=int(calib_n))


def where_column(status: list[dict], applies: dict | None) -> dict:
    cuda = [r for r in status if r["device"] == "cuda"]
    cuda_ok = any(r["available"] for r in cuda)
    st.markdown("**Where**")
    devices = ["cpu", "cuda"] if cuda_ok else ["cpu"]
    device = st.radio("Device", devices, horizontal=True, key=kept("run.device", "cpu", devices), help=HELP["device"])
    if not cuda_ok:
        reasons = sorted({r["reason"] for r in cuda if r["reason"]})
        st.caption(f"CUDA is not offered: {'; '.join(reasons) or 'no GPU'}.")
    usable = [r["backend"] for r in status if r["device"] == device and r["available"]]
    for r in status:
        if r["device"] == device and not r["available"]:
            st.caption(f"{r['backend']} unavailable on {device}: {say(r['reason'])}")
    off_for_model(usable, applies)
    usable = offered(usable, applies)
    default = [b for b in ("pytorch", "onnxruntime") if b in usable]
    backends = st.multiselect("Backends", usable, key=kept("run.backends", default, usable), help=HELP["backends"])
    cuda_graph = False
    if device == "cuda":
        cuda_graph = st.checkbox("CUDA graphs for PyTorch (batch <= 16)", key=kept("run.cuda_graph", False),
                                 help=HELP["cuda_graph"])
    else:
        st.caption("GPU-only settings (CUDA graphs) appear with device cuda, where GPU energy and engine build "
                   "times are measured too.")
    return dict(device=device, backends=tuple(backends), cuda_graph=cuda_graph)


def quality_settings() -> dict:
    """What the first output is (decides the quality metric) and how often an unstable timing is retaken."""
    from benchmark.config import MAX_TIMING_ATTEMPTS, OUTPUT_KINDS

    kinds = ["auto", *OUTPUT_KINDS]
    kind = st.selectbox("First output is", kinds, key=kept("run.output_kind", "auto", kinds), help=HELP["output_kind"],
                        format_func=lambda k: "told from its name and shape" if k == "auto" else k)
    attempts = st.number_input("Timings per run while unstable (at most)", 1, MAX_TIMING_ATTEMPTS,
                               key=kept("run.timing_attempts", 3), help=HELP["timing_attempts"])
    return dict(output_kind=None if kind == "auto" else kind, timing_attempts=int(attempts))


def sweep_form(model: dict):
    """Widgets -> a SweepConfig (None and an st.error line when the choice is invalid)."""
    from benchmark import BenchmarkError, SweepConfig

    load_plugins()
    applies = model_applies(model)
    c1, c2, c3 = st.columns(3)
    with c1:
        variants = variants_column(applies)
    with c2:
        where = where_column(backend_status(), applies)
        sizes = batch_sizes()
        machines = executor_settings()  # this machine or a Ray cluster (app_pages/machines.py)
    with c3:
        st.markdown("**Data and timing**")
        data = data_choice("run")
        min_s = st.number_input("Timed seconds per run (at least)", 0.05, 600.0, step=0.05, key=kept("run.min_s", 1.0),
                                help=HELP["min_s"])
        min_iters = st.number_input("Timed iterations per run (at least)", 1, 100_000, key=kept("run.min_iters", 20),
                                    help=HELP["min_iters"])
        threads = st.number_input("Intra-op threads (0 = all cores)", 0, 256, key=kept("run.threads", 0),
                                  help=HELP["threads"])
        runtime = runtime_widgets()
        quality = quality_settings()
    if isinstance(sizes, str):
        st.error(f"{sizes} - type a whole number, or remove it from Batch sizes.")
        return None
    if machines is None:  # Ray chosen but not installed: the column says how to install it
        return None
    try:
        return SweepConfig(
            model=model["source"], batch_sizes=sizes, data=data, inputs=tuple(model.get("inputs") or ()),
            batch_axis=tuple(model.get("batch_axis") or ()),
            threads=int(threads), min_duration_s=float(min_s), min_iters=int(min_iters),
            trust_pickle=bool(model.get("trust_pickle")), arch=model.get("arch"), **variants, **where, **machines,
            **runtime,
            **quality,
        )
    except BenchmarkError as exc:
        st.error(f"{say(exc)} - change the selection above.")
        return None


QUEUE_DEVICES = ("cpu", "cuda")


def device_queues() -> dict[str, list[dict]]:
    """The live device queues (file-lock tickets of every dashboard session and CLI run on this machine)."""
    from benchmark.jobs import queue_state

    return {device: queue_state(device) for device in QUEUE_DEVICES}


def queue_position(rec, queue: list[dict], db_path: Path) -> int:
    """Jobs ahead of sweep ``rec`` in its device queue; everything queued when it holds no ticket yet."""
    for entry in queue:
        if entry["sweep_id"] == rec.id and (not entry["db"] or Path(entry["db"]).resolve() == db_path):
            return entry["position"]
    return len(queue)


def show_queues(queues: dict[str, list[dict]], mine: list[int]) -> None:
    """Every device queue; other sessions' jobs are listed without their file paths."""
    from benchmark.ui import public_label

    for device, queue in queues.items():
        if not queue:
            continue
        lines = [f"{e['position'] + 1}. {public_label(e['label']) or 'job'}"
                 + (f" (sweep #{e['sweep_id']}{', yours' if e['sweep_id'] in mine else ''})"
                    if e["sweep_id"] is not None else "")
                 + (f" - {'holds the device' if e['position'] == 0 else 'waiting'} (queued {e['waiting_s']:.0f} s ago)")
                 for e in queue]
        st.markdown(f"**{device.upper()} queue** ({plural(len(queue), 'job')}, sweeps and sensitivity jobs from every "
                    "tab and CLI run)  \n" + "  \n".join(lines))


def recent_sweeps(store, mine: list[int], limit: int = 10) -> None:
    """The last finished sweeps of every session, each with a button that opens it on Results."""
    from benchmark.report import sweep_label
    from benchmark.store import ACTIVE_SWEEP_STATUSES

    done = [r for r in store.list_sweeps(limit=limit + 10) if r.status not in ACTIVE_SWEEP_STATUSES][:limit]
    if not done:
        return
    st.markdown("**Recent sweeps**")
    for rec in done:
        left, right = st.columns([5, 1])
        left.markdown(f"{sweep_label(rec)}{' (yours)' if rec.id in mine else ''}"
                      + (f": {say(rec.error)}" if rec.error else ""))
        if right.button("Results", key=f"open-{rec.id}", icon=":material/scatter_plot:"):
            st.session_state["results_sweep_id"] = rec.id
            save()
            try:
                st.switch_page("app_pages/results.py")
            except StreamlitAPIException:  # outside the app's navigation (tests)
                st.toast(f"Sweep #{rec.id} is chosen on Results")


def sweeps_panel() -> None:
    """Every active sweep (from any tab or CLI run), the device queues and the recent finished
    sweeps, refreshed while something runs."""
    from benchmark import BenchmarkError, plots
    from benchmark.report import sweep_label
    from benchmark.store import ACTIVE_SWEEP_STATUSES, Store
    from benchmark.sweep import cancel_sweep

    try:
        store = Store()
        store.mark_interrupted()
        active = sorted(store.list_sweeps(statuses=ACTIVE_SWEEP_STATUSES), key=lambda r: r.id)
    except BenchmarkError as exc:  # e.g. a corrupt database: its path and what to do, in one line
        st.error(f"{exc}")
        return
    queues = device_queues()
    mine = list(st.session_state.get("my_sweeps", []))
    show_queues(queues, mine)
    if not active:
        if not any(queues.values()) and st.session_state.pop("_refreshing", False):
            st.rerun()  # a full rerun redraws this panel without the periodic refresh
        st.caption("No sweep is running.")
    db_path = Path(store.path).resolve()
    for rec in active:
        with st.container(border=True):
            st.markdown(f"**{sweep_label(rec)}**{' (yours)' if rec.id in mine else ''}")
            ahead = queue_position(rec, queues.get(rec.device) or [], db_path)
            text = rec.progress or ("starting ..." if rec.status == "pending" else rec.status)
            if rec.status in ("pending", "queued") and ahead and "queued behind" not in text:
                text = f"queued behind {plural(ahead, 'job')} on {rec.device}" + ("" if text == rec.status else f" - {text}")
            st.progress(min(1.0, max(0.0, float(rec.fraction or 0))), text=text)
            frame = store.results_frame(rec.id)
            done = frame[frame["status"].isin(["ok", "failed", "skipped"])] if not frame.empty else frame
            if len(done):
                st.dataframe(plots.display_table(done, include_failed=True), hide_index=True, width="stretch")
            if rec.status != "cancelling" and st.button("Cancel", key=f"cancel-{rec.id}", icon=":material/cancel:"):
                st.toast(f"Sweep #{rec.id}: {cancel_sweep(store, rec.id)}")
    recent_sweeps(store, mine)


session()
st.title("Compress & run")
model = st.session_state.get("model") or {"source": "sample:digits-cnn", "inputs": [], "name": "sample:digits-cnn"}
st.markdown(f"Model: **{model.get('name') or model['source']}**"
            + (f" with inputs {', '.join(model['inputs'])}" if model.get("inputs") else "")
            + " - change it on the Model page.")
cfg = sweep_form(model)
save()
if cfg is not None:
    from benchmark.sweep import sweep_config_to_dict

    n_variants, n_runs, est_s = plan(sweep_config_to_dict(cfg))
    per_target = " per target machine" if cfg.executor == "ray" else ""
    extra = n_runs - n_variants * len(cfg.backends) * len(cfg.batch_sizes)
    st.info(f"{plural(n_runs, 'run')}{per_target}: {plural(n_variants, 'variant')} x {plural(len(cfg.backends), 'backend')} x "
            f"{plural(len(cfg.batch_sizes), 'batch size')}"
            + (f", plus {plural(extra, 'run')} for the runtime settings" if extra > 0 else "")
            + f"; estimated {est_s / 60:.1f} min ({est_s:.0f} s), not counting time queued behind other sweeps.")
    if st.button("Run sweep", type="primary", icon=":material/play_arrow:"):
        from benchmark import BenchmarkError
        from benchmark.sweep import start_sweep_background

        try:
            sweep_id = start_sweep_background(cfg)
        except BenchmarkError as exc:
            st.error(f"Could not start the sweep: {say(exc)}")
        else:
            st.session_state["my_sweeps"] = [*st.session_state.get("my_sweeps", []), sweep_id]
            st.session_state["results_sweep_id"] = sweep_id
            save()
            st.toast(f"Sweep #{sweep_id} started")

st.subheader("Sweeps in progress")
from benchmark import BenchmarkError  # noqa: E402
from benchmark.store import ACTIVE_SWEEP_STATUSES, Store  # noqa: E402

try:
    running = bool(Store().list_sweeps(limit=1, statuses=ACTIVE_SWEEP_STATUSES))
except BenchmarkError:  # the panel below shows the database's error
    running = False
st.session_state["_refreshing"] = running or any(device_queues().values())
st.fragment(sweeps_panel, run_every=2.0 if st.session_state["_refreshing"] else None)()
link("app_pages/results.py", "Open Results", ":material/scatter_plot:")

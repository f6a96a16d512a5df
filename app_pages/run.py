"""Compress & run: choose variants, backends, device, batch sizes and data; start a background sweep
and follow every running sweep (progress, partial results, cancel). Sweeps queue per device."""
from pathlib import Path

import streamlit as st
from streamlit.errors import StreamlitAPIException

BATCH_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
RATIO_CHOICES = [0.0, 0.25, 0.5, 0.75, 0.9]
OWN_DATA, UPLOAD_DATA = "the model's own dataset", "upload a .npz file"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@st.cache_data(ttl=600, show_spinner="Checking backends ...")
def backend_status() -> list[dict]:
    from benchmark.backends import backend_status as status

    return status()


@st.cache_data(show_spinner=False)
def plan(cfg_dict: dict) -> tuple[int, int, float]:
    """(variants, runs, estimated seconds) of a sweep config (cheap: no model is loaded)."""
    from benchmark.sweep import estimate_duration_s, plan_size, plan_sweep, sweep_config_from_dict

    cfg = sweep_config_from_dict(cfg_dict)
    jobs = plan_sweep(cfg)
    return len(jobs), plan_size(jobs), estimate_duration_s(jobs, cfg)


def dataset_choice(model: dict) -> str | None:
    from benchmark import BenchmarkError
    from benchmark.data import dataset_names
    from benchmark.data.npz import check_npz_headers
    from benchmark.paths import data_dir
    from benchmark.safety import discard_upload, store_upload

    choice = st.selectbox("Evaluation data", [OWN_DATA, *dataset_names(), UPLOAD_DATA],
                          help="Labelled data gives accuracy; without labels quality is fidelity to the FP32 outputs. "
                               "A model with no dataset of its own is checked on random inputs (fidelity only).")
    if choice == OWN_DATA:
        return None
    if choice != UPLOAD_DATA:
        return choice
    up = st.file_uploader("Dataset (.npz: one array per model input, optional 'labels')", type=["npz"])
    if up is None:
        st.info("Upload a .npz file, or choose another dataset.")
        return None
    path = None
    try:
        up.seek(0)
        path = store_upload(up, up.name, data_dir(), int(st.get_option("server.maxUploadSize")) * 2**20)
        check_npz_headers(path, up.name)  # headers only; the sweep checks the arrays against the model
        return str(path)
    except BenchmarkError as exc:
        st.error(f"{exc}")
        if path is not None:
            discard_upload(path, data_dir())
        return None


def sweep_form(model: dict):
    """Widgets -> a SweepConfig (None and an st.error line when the choice is invalid)."""
    from benchmark import BenchmarkError, SweepConfig
    from benchmark.config import CALIB_METHODS, PRECISIONS, PRUNE_KINDS, help_text

    def h(name):
        return help_text(SweepConfig, name)

    status = backend_status()
    cuda = [r for r in status if r["device"] == "cuda"]
    cuda_ok = any(r["available"] for r in cuda)
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**Variants**")
        precisions = st.multiselect("Precisions", PRECISIONS, default=["fp32", "int8-static"], help=h("precisions"))
        int8 = any(p in ("int8-static", "mixed") for p in precisions)
        calib = st.selectbox("INT8 calibration method", CALIB_METHODS, help=h("calib_method"), disabled=not int8)
        calib_n = st.number_input("Calibration samples", 1, 100_000, 128, help=h("calib_samples"), disabled=not int8)
        kind = st.selectbox("Pruning kind", PRUNE_KINDS, index=PRUNE_KINDS.index("structured"), help=h("prune_kind"))
        ratios = st.multiselect("Prune ratios (0 = unpruned)", RATIO_CHOICES, default=[0.0], help=h("prune_ratios"))
        lowrank = st.slider("Low-rank: kept rank fraction (0 = off)", 0.0, 1.0, 0.0, 0.05, help=h("lowrank_ratio"))
        distill = st.checkbox("Distil pruned / low-rank variants", help=h("distill"))
        epochs = st.number_input("Distillation epochs", 1, 200, 3, help=h("distill_epochs"), disabled=not distill)
    with c2:
        st.markdown("**Where**")
        device = st.radio("Device", ["cpu", "cuda"] if cuda_ok else ["cpu"], horizontal=True, help=h("device"))
        if not cuda_ok:
            reasons = sorted({r["reason"] for r in cuda if r["reason"]})
            st.caption(f"CUDA is not offered: {'; '.join(reasons) or 'no GPU'}.")
        usable = [r["backend"] for r in status if r["device"] == device and r["available"]]
        for r in status:
            if r["device"] == device and not r["available"]:
                st.caption(f"{r['backend']} unavailable on {device}: {r['reason']}")
        backends = st.multiselect("Backends", usable, default=[b for b in ("pytorch", "onnxruntime") if b in usable],
                                  help=h("backends"))
        cuda_graph = False
        if device == "cuda":
            cuda_graph = st.checkbox("CUDA graphs for PyTorch (batch <= 16)", help=h("cuda_graph"))
        else:
            st.caption("GPU-only settings (CUDA graphs) appear with device cuda, where GPU energy and engine build "
                       "times are measured too.")
        batches = st.multiselect("Batch sizes (samples)", BATCH_CHOICES, default=[1, 8], help=h("batch_sizes"))
    with c3:
        st.markdown("**Data and timing**")
        data = dataset_choice(model)
        min_s = st.number_input("Timed seconds per run (at least)", 0.05, 600.0, 1.0, 0.05, help=h("min_duration_s"))
        min_iters = st.number_input("Timed iterations per run (at least)", 1, 100_000, 20, help=h("min_iters"))
        threads = st.number_input("Intra-op threads (0 = all cores)", 0, 256, 0, help=h("threads"))
    try:
        return SweepConfig(
            model=model["source"], precisions=tuple(precisions), prune_ratios=tuple(sorted(ratios)) or (0.0,),
            prune_kind=kind, lowrank_ratio=float(lowrank), distill=distill, distill_epochs=int(epochs),
            backends=tuple(backends), device=device, batch_sizes=tuple(sorted(batches)), data=data,
            calib_method=calib, calib_samples=int(calib_n), inputs=tuple(model.get("inputs") or ()),
            threads=int(threads), min_duration_s=float(min_s), min_iters=int(min_iters),
            trust_pickle=bool(model.get("trust_pickle")), arch=model.get("arch"), cuda_graph=cuda_graph,
        )
    except BenchmarkError as exc:
        st.error(f"{exc} - change the selection above.")
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


def show_queues(queues: dict[str, list[dict]]) -> None:
    for device, queue in queues.items():
        if not queue:
            continue
        lines = [f"{e['position'] + 1}. {e['label'] or 'job'}"
                 + (f" (sweep #{e['sweep_id']})" if e["sweep_id"] is not None else "")
                 + (f" - {'holds the device' if e['position'] == 0 else 'waiting'} (queued {e['waiting_s']:.0f} s ago)")
                 for e in queue]
        st.markdown(f"**{device.upper()} queue** ({plural(len(queue), 'job')}, sweeps and sensitivity jobs from every "
                    "tab and CLI run)  \n" + "  \n".join(lines))


def sweeps_panel() -> None:
    """Every active sweep (from any tab or CLI run) and the device queues, refreshed while busy."""
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
    mine = st.session_state.get("my_sweeps", [])
    show_queues(queues)
    if not active:
        if not any(queues.values()) and st.session_state.pop("_refreshing", False):
            st.rerun()  # a full rerun redraws this panel without the periodic refresh
        st.caption("No sweep is running.")
        for rec in store.list_sweeps(limit=10):
            if rec.id in mine:
                st.markdown(f"{sweep_label(rec)}" + (f": {rec.error}" if rec.error else ""))
        return
    db_path = Path(store.path).resolve()
    for rec in active:
        with st.container(border=True):
            st.markdown(f"**{sweep_label(rec)}**")
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


st.title("Compress & run")
model = st.session_state.get("model") or {"source": "sample:digits-cnn", "inputs": [], "name": "sample:digits-cnn"}
st.markdown(f"Model: **{model.get('name') or model['source']}**"
            + (f" with inputs {', '.join(model['inputs'])}" if model.get("inputs") else "")
            + " - change it on the Model page.")
cfg = sweep_form(model)
if cfg is not None:
    from benchmark.sweep import sweep_config_to_dict

    n_variants, n_runs, est_s = plan(sweep_config_to_dict(cfg))
    st.info(f"{plural(n_runs, 'run')}: {plural(n_variants, 'variant')} x {plural(len(cfg.backends), 'backend')} x "
            f"{plural(len(cfg.batch_sizes), 'batch size')}; estimated {est_s / 60:.1f} min ({est_s:.0f} s), "
            "not counting time queued behind other sweeps.")
    if st.button("Run sweep", type="primary", icon=":material/play_arrow:"):
        from benchmark import BenchmarkError
        from benchmark.sweep import start_sweep_background

        try:
            sweep_id = start_sweep_background(cfg)
        except BenchmarkError as exc:
            st.error(f"Could not start the sweep: {exc}")
        else:
            st.session_state.setdefault("my_sweeps", []).append(sweep_id)
            st.session_state["results_sweep_id"] = sweep_id
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
try:
    st.page_link("app_pages/results.py", label="Open Results", icon=":material/scatter_plot:")
except StreamlitAPIException:  # the page runs outside the app's navigation (tests)
    st.markdown("Next: Results")

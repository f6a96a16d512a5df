"""Home: what Slimbench does, what this machine can run (and why not), whether it is busy now, the
built-in samples, a demo (its status refreshes until it finishes)."""
import streamlit as st

from app_pages.explain_ui import hardware_panel
from app_pages.shared import link, save, say, session

#: The demo sweep: small, fast, and shows a real trade-off (INT8 and structured pruning vs FP32).
DEMO = dict(model="sample:digits-cnn", precisions=("fp32", "int8-static"), prune_ratios=(0.0, 0.5),
            prune_kind="structured", backends=("pytorch", "onnxruntime"), batch_sizes=(1, 8),
            calib_samples=64, min_duration_s=0.3, min_iters=10)


@st.cache_data(ttl=600, show_spinner="Checking what is installed ...")
def environment() -> tuple[dict, list[dict]]:
    from benchmark.backends import backend_status
    from benchmark.measure.environment import collect_environment

    return collect_environment(), backend_status()


@st.cache_data(show_spinner=False)
def samples() -> list[dict]:
    from benchmark.models.archs import get_arch
    from benchmark.models.samples import get_sample, sample_names

    rows = []
    for name in sample_names():
        spec = get_sample(name)
        acc = (spec.metrics or {}).get("test_accuracy")
        inputs = ", ".join(s.describe() for s in get_arch(spec.arch).inputs)
        rows.append({"sample": f"sample:{name}", "inputs": inputs, "dataset": spec.dataset,
                     "test accuracy (%)": None if acc is None else round(100 * acc, 2),
                     "description": spec.description})
    return rows


@st.cache_data(show_spinner=False)
def demo_plan() -> tuple[int, float]:
    """(runs, estimated seconds) of the demo sweep."""
    from benchmark import SweepConfig
    from benchmark.sweep import estimate_duration_s, plan_size, plan_sweep

    cfg = SweepConfig(**DEMO)
    jobs = plan_sweep(cfg)
    return plan_size(jobs), estimate_duration_s(jobs, cfg)


@st.cache_data(ttl=15, show_spinner=False)
def busy() -> tuple[bool, str]:
    """(busy, what was seen): CPU use of every process on this machine over half a second."""
    from benchmark.measure.stability import machine_busy

    return machine_busy(0.5)


def start_demo() -> None:
    from benchmark import BenchmarkError, SweepConfig
    from benchmark.sweep import estimate_duration_s, plan_sweep, start_sweep_background

    _, status = environment()
    usable = {r["backend"] for r in status if r["device"] == "cpu" and r["available"]}
    backends = tuple(b for b in DEMO["backends"] if b in usable)
    try:
        cfg = SweepConfig(**{**DEMO, "backends": backends})
        sweep_id = start_sweep_background(cfg)
    except BenchmarkError as exc:
        st.error(f"Could not start the demo: {say(exc)}")
        return
    st.session_state["demo_sweep_id"] = sweep_id
    st.session_state["results_sweep_id"] = sweep_id
    st.session_state["my_sweeps"] = [*st.session_state.get("my_sweeps", []), sweep_id]
    st.session_state["demo_estimate_s"] = estimate_duration_s(plan_sweep(cfg), cfg)  # with the usable backends
    save()


def demo_status(was_active: bool = False) -> None:
    """The demo sweep's status; while it runs the fragment refreshes it every 2 s."""
    from benchmark import BenchmarkError
    from benchmark.store import Store

    sweep_id = st.session_state.get("demo_sweep_id")
    if sweep_id is None:
        return
    try:
        rec = Store().get_sweep(sweep_id)
    except BenchmarkError as exc:
        st.error(say(exc))
        return
    if was_active and not rec.active:
        st.rerun()  # finished: redraw the page once, without the periodic refresh
    if rec.active:
        st.info(f"Demo sweep #{sweep_id} is {rec.status} (about {st.session_state.get('demo_estimate_s', 0):.0f} s "
                f"in all): {rec.progress or 'starting ...'}")
        link("app_pages/run.py", "Follow its progress on Compress & run", ":material/play_circle:")
    elif rec.status == "done":
        st.success(f"Demo sweep #{sweep_id} finished: {rec.counts.get('ok', 0)} runs ok.")
    else:
        st.warning(f"Demo sweep #{sweep_id} ended {rec.status}: {say(rec.error or rec.progress)}")
    link("app_pages/results.py", "See the results", ":material/scatter_plot:")


def demo_running() -> bool:
    from benchmark import BenchmarkError
    from benchmark.store import Store

    sweep_id = st.session_state.get("demo_sweep_id")
    if sweep_id is None:
        return False
    try:
        return Store().get_sweep(sweep_id).active
    except BenchmarkError:
        return False


session()
st.title("Slimbench")
st.markdown(
    "**Compress a model and see what you gain and what you lose.**  \n"
    "Bring a model (ONNX, TorchScript, `.pt2`, or a state_dict of a built-in architecture) or pick a sample; "
    "build FP16 / BF16 / INT8, pruned, low-rank and distilled variants; run them on PyTorch, ONNX Runtime and "
    "TensorRT.  \nCompare latency (ms), throughput (samples/s), size (MB), MACs and accuracy side by side, "
    "with every result stored with the machine it ran on."
)

left, right = st.columns([1, 2])
with left:
    st.subheader("Try the demo")
    st.caption("sample:digits-cnn: fp32 and int8-static, each unpruned and with structured pruning 0.5, on PyTorch "
               f"and ONNX Runtime at batch 1 and 8, with short timing ({demo_plan()[0]} runs, estimated {demo_plan()[1]:.0f} s).")
    if st.button("Try the demo", type="primary", icon=":material/rocket_launch:"):
        start_demo()
    active = demo_running()
    st.fragment(demo_status, run_every=2.0 if active else None)(active)
    save()
with right:
    st.subheader("Next steps")
    link("app_pages/model.py", "Model: upload a model or pick a sample", ":material/upload_file:")
    link("app_pages/run.py", "Compress & run: choose variants and backends", ":material/play_circle:")
    link("app_pages/results.py", "Results: trade-off plots and tables", ":material/scatter_plot:")

st.subheader("Built-in samples")
st.dataframe(samples(), hide_index=True, width="stretch")

st.subheader("What this machine can run")
is_busy, seen = busy()
if is_busy:
    st.warning(f"This machine is busy now ({seen}; running sweeps count too). Timings taken while other work runs "
               "are noisy: compare them with care, or run them again when the machine is quiet.")
else:
    st.caption(f"Machine load now: {seen}.")
env, status = environment()
rows = [{"backend": r["backend"], "device": r["device"], "available": "yes" if r["available"] else "no",
         "why not": say(r["reason"])} for r in status]
st.dataframe(rows, hide_index=True, width="stretch")
hardware_panel()
gpu = env.get("gpu_name") or "none"
st.markdown(
    f"**CPU** {env.get('cpu_model') or 'unknown'} ({env.get('cores')} logical cores; "
    f"{', '.join(env.get('cpu_flags') or []) or 'no AVX2/AVX-512/VNNI/AMX flags'})  \n"
    f"**GPU** {gpu}" + (f" (compute capability {env.get('gpu_compute_capability')}, {env.get('gpu_memory_mb')} MB)"
                          if env.get("gpu_name") else "") + "  \n"
    f"**Versions** Python {env.get('python')}, torch {env.get('torch') or 'not installed'}, "
    f"ONNX Runtime {env.get('onnxruntime') or 'not installed'}, onnx {env.get('onnx') or 'not installed'}, "
    f"TensorRT {env.get('tensorrt') or 'not installed'}"
)

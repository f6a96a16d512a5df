"""Dashboard parts that explain the numbers (not a page): runtime-setting widgets for Compress & run,
this CPU's instruction set and peaks (Home, Results), and the Profile tab of Results, which profiles
one variant of a sweep layer by layer in a separate process."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from app_pages.shared import kept, save, say
from benchmark import plots

HELP = {
    "ort_opt": "ONNX Runtime's graph optimizations: 'all' fuses and re-lays out the most (the default); 'basic' "
               "leaves INT8 Q/DQ pairs unfused. Several levels run each variant once per level, named @ort-opt=LEVEL.",
    "ort_mode": "'parallel' runs independent branches of the graph at once on the inter-op threads; most CNNs are a "
                "chain, so it rarely helps.",
    "ort_inter": "Threads for running graph branches in parallel (parallel mode only); 0 = ONNX Runtime's default.",
    "torch_inter": "PyTorch's inter-op pool (0 = PyTorch's default); each value runs in its own process.",
    "int8_format": "measure: quantize U8S8 and S8S8 (and 7-bit weights where the CPU flags suggest them), time "
                   "and score each on the evaluation data, keep the fastest within 0.5 points of the best; auto: "
                   "choose from the CPU flags; u8s8 / s8s8: force one.",
    "skip_peaks": "Each CPU sweep reads this CPU's GEMM peaks (measured once per machine, a few seconds) so every "
                  "row shows its fraction of the peak.",
}
THREAD_CHOICES = [0, 1, 2, 4, 8]


def runtime_widgets() -> dict[str, Any]:
    """The runtime settings and INT8 format of Compress & run, as SweepConfig fields."""
    from benchmark.config import INT8_FORMATS, ORT_EXECUTION_MODES, ORT_OPT_LEVELS

    with st.expander("Runtime settings and INT8 format"):
        opt = st.multiselect("ONNX Runtime graph optimization levels", ORT_OPT_LEVELS,
                             key=kept("run.ort_opt", ["all"], list(ORT_OPT_LEVELS)), help=HELP["ort_opt"])
        mode = st.multiselect("ONNX Runtime execution modes", ORT_EXECUTION_MODES,
                              key=kept("run.ort_mode", ["sequential"], list(ORT_EXECUTION_MODES)), help=HELP["ort_mode"])
        inter = st.multiselect("ONNX Runtime inter-op threads", THREAD_CHOICES, key=kept("run.ort_inter", [1], THREAD_CHOICES),
                               help=HELP["ort_inter"])
        torch_inter = st.multiselect("PyTorch inter-op threads (0 = default)", THREAD_CHOICES,
                                     key=kept("run.torch_inter", [0], THREAD_CHOICES), help=HELP["torch_inter"])
        fmt = st.selectbox("INT8 format", INT8_FORMATS, key=kept("run.int8_format", "measure", list(INT8_FORMATS)),
                           help=HELP["int8_format"])
        skip = st.checkbox("Skip measuring this CPU's peaks", key=kept("run.skip_peaks", False), help=HELP["skip_peaks"])
    return dict(ort_opt_levels=tuple(opt), ort_execution_modes=tuple(mode), ort_inter_op_threads=tuple(inter),
                torch_interop_threads=tuple(torch_inter), int8_format=fmt, skip_peaks=bool(skip))


def peaks_text(peaks: dict | None) -> str | None:
    """One markdown line of a peaks record (``env.peaks``, or ``Peaks.to_dict()``)."""
    if not peaks:
        return None
    per = ", ".join(f"{p.upper()} {v:.1f}" for p, v in (peaks.get("peak_gmacs_per_s") or {}).items())
    bw = peaks.get("memory_bandwidth_gb_per_s")
    load = peaks.get("load_average_1m", (peaks.get("settings") or {}).get("load_average_1m"))
    return (f"**Peaks** ({peaks.get('threads')} thread(s)): GEMM GMAC/s {per}" + (f"; memory {bw:.1f} GB/s" if bw else "")
            + f"  \nmeasured {peaks.get('measured_at', '?')}" + (f", load average {load:.1f}" if load is not None else ""))


def environment_lines(env: dict) -> None:
    """The instruction set and peaks a sweep's rows were measured with."""
    isa = env.get("isa") or {}
    if isa.get("summary"):
        st.markdown(f"**Instruction set** {isa['summary']}")
    text = peaks_text(env.get("peaks"))
    if text:
        st.markdown(text)


def hardware_panel() -> None:
    """Home: this CPU's instruction set and its peaks (from the cache; measured on request in a child)."""
    from benchmark import BenchmarkError
    from benchmark.measure.hardware import detect_isa  # read once per process
    from benchmark.measure.roofline import cached_peaks, peaks_isolated

    st.markdown(f"**Instruction set** {detect_isa().summary()}")
    peaks = cached_peaks(0)
    if peaks is not None:
        st.markdown(peaks_text(peaks.to_dict()))
    else:
        st.caption("This CPU's GEMM peaks and memory bandwidth are not measured yet: the first CPU sweep measures "
                   "them (a few seconds, once per machine), or measure them now.")
    if st.button("Measure this CPU's peaks" if peaks is None else "Measure the peaks again", key="home.peaks",
                 icon=":material/speed:"):
        bar = st.progress(0.0, text="waiting for the CPU ...")
        try:
            peaks_isolated(0, refresh=peaks is not None, on_progress=lambda m, f: bar.progress(f or 0.0, text=m),
                           on_wait=lambda n: bar.progress(0.0, text=f"queued behind {n} job(s) on the CPU"))
        except BenchmarkError as exc:
            st.error(f"Measuring the peaks failed: {say(exc)}")
        else:
            st.rerun()
        finally:
            bar.empty()


# --------------------------------------------------------------------------------------------
# the Profile tab of Results
# --------------------------------------------------------------------------------------------
def _profilable(df: pd.DataFrame) -> list[str]:
    from benchmark.profiling import PROFILE_BACKENDS, PROFILE_DEVICES

    ok = plots.ok_rows(df)
    if ok.empty:
        return []
    ok = ok[ok["backend"].isin(PROFILE_BACKENDS) & ok["device"].isin(PROFILE_DEVICES)]
    return [f"{r['variant']}|{r['backend']}|{int(r['batch_size'])}" for _, r in ok.iterrows()]


def _run_profile(store, rec, key: str) -> dict:
    """Profile the row ``key`` of sweep ``rec`` as the sweep built and ran it, with a progress bar."""
    from benchmark.config import CompressionConfig
    from benchmark.profiling import profile_isolated

    row = next(r for r in store.get_results(rec.id) if r.key == key)
    sweep = (rec.config or {}).get("sweep") or {}
    comp = CompressionConfig.from_dict(row.config)
    bar = st.progress(0.0, text="profile: starting ...")

    def progress(message: str, fraction: float | None = None) -> None:
        bar.progress(min(1.0, max(0.0, fraction or 0.0)), text=message)

    try:
        return profile_isolated(
            sweep.get("model") or rec.model, comp, backend=row.backend, device=row.device, batch_size=row.batch_size,
            threads=int(sweep.get("threads") or 0), inputs=tuple(sweep.get("inputs") or ()), arch=sweep.get("arch"),
            trust_pickle=bool(sweep.get("trust_pickle")), data=sweep.get("data"), runtime=row.runtime,
            sensitivity=_page_sensitivity(sweep.get("model") or rec.model, sweep.get("data")),
            timing={"min_duration_s": float(sweep.get("min_duration_s") or 1.0),
                    "min_iters": int(sweep.get("min_iters") or 20)},
            on_progress=progress, on_wait=lambda n: bar.progress(0.0, text=f"profile: queued behind {n} job(s) on the CPU"))
    finally:
        bar.empty()


def _page_sensitivity(model: str, data: str | None) -> list[dict] | None:
    """The Sensitivity page's table for this model and data in this session, if one was run."""
    done = st.session_state.get("sensitivity")
    if not done or done[0][0] != model or (done[0][3] or None) != (data or None):
        return None
    return done[2].get("table")


def layer_table(res: dict, top: int = 25) -> pd.DataFrame:
    """The profiled layers for people: units in the headers, shares in percent."""
    rows = [{"layer": r["name"], "op": r["op_type"], "kernel": ",".join(r.get("kernels") or []),
             "precision": r["precision"], "time (ms)": r["time_ms"],
             "time (%)": None if r.get("time_share") is None else 100 * r["time_share"],
             "MACs (%)": None if r.get("mac_share") is None else 100 * r["mac_share"],
             "achieved GMAC/s": r.get("gmacs_per_s"),
             "of peak (%)": None if r.get("peak_fraction") is None else 100 * r["peak_fraction"]}
            for r in res["layers"][:top]]
    if any("sensitivity_delta" in r for r in res["layers"]):
        for row, r in zip(rows, res["layers"]):
            row["drop alone (points)"] = r.get("sensitivity_delta")
    return pd.DataFrame(rows).round(4)


def show_profile(res: dict) -> None:
    c = st.columns(3)
    c[0].metric("End-to-end p50 (timed run)", f"{res['end_to_end_p50_ms']:.3f} ms")
    c[1].metric("Sum of the per-layer times", f"{res['layers_total_ms']:.3f} ms")
    gap = res.get("gap_fraction")
    c[2].metric("Gap (end-to-end - layers)", f"{res['gap_ms']:+.3f} ms",
                delta=None if gap is None else f"{100 * gap:+.1f} % of end-to-end", delta_color="off")
    st.caption("The gap is time outside the layers (session overhead, input copies) or, when negative, profiling "
               "overhead on very short layers. Layers above the diagonal take more time than their MACs predict.")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(plots.profile_share_figure(res), width="stretch", theme=None, key="profile-share")
    with right:
        st.plotly_chart(plots.profile_gmacs_figure(res), width="stretch", theme=None, key="profile-gmacs")
    st.dataframe(layer_table(res), hide_index=True, width="stretch")
    for note in res.get("notes") or []:
        st.caption(f"Note: {say(note)}")


def profile_tab(store, rec, df: pd.DataFrame) -> None:
    """Choose one row of the sweep and profile that variant (ONNX Runtime or PyTorch on the CPU)."""
    from benchmark import BenchmarkError

    keys = _profilable(df)
    if not keys:
        st.info("Profiling takes an ok ONNX Runtime or PyTorch row on the CPU; this sweep has none yet.")
        return
    key = st.selectbox("Variant to profile", keys, key=kept("results.profile_row", keys[0], keys),
                       format_func=lambda k: "{} on {}, batch {}".format(*k.split("|")))
    st.caption("Builds the variant as the sweep did, times it normally, then runs an untimed profiling pass: each "
               "layer's time, kernel and MACs, and its achieved GMAC/s against this CPU's peak (and each layer's quality "
               "drop when the Sensitivity page ran on this model and data in this session). It runs in a separate "
               "process and waits for the CPU queue.")
    save()
    if st.button("Profile this variant", key="results.profile", icon=":material/troubleshoot:"):
        try:
            st.session_state["profile_result"] = (rec.id, key, _run_profile(store, rec, key))
        except BenchmarkError as exc:
            st.error(f"Profiling failed: {say(exc)}")
    done = st.session_state.get("profile_result")
    if done and done[0] == rec.id and done[1] == key:
        show_profile(done[2])
        _profile_explanations(store, rec, key, done[2])


def _profile_explanations(store, rec, key: str, res: dict) -> None:
    """The row's measured explanations with this profile's kernels and times."""
    from benchmark.explain import explain_profiled

    explanations = explain_profiled(store.get_results(rec.id), key, res)
    if explanations:
        st.markdown("**Why (measured, with this profile)**\n\n" + "\n".join(f"- {e['text']}" for e in explanations))

"""Helpers the dashboard pages share (not a page): the browser session's record, widget values
that survive a reload, the evaluation-data choice, help texts, and engine messages in dashboard words.

State: a random token in the page URL (``?s=...``) names a small JSON record under the data folder
(:class:`benchmark.ui.SessionRecords`). Every page calls :func:`session` first; widgets created
with ``key=kept(name, default)`` start from the record, and :func:`save` writes what changed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from benchmark.ui import SessionRecords, dashboard_words

TOKEN_PARAM = "s"
#: Session-state entries kept across reloads besides widget values.
GLOBAL_KEYS = ("model", "my_sweeps", "demo_sweep_id", "demo_estimate_s", "results_sweep_id", "data.npz",
               "data.npz_name", "uploads")
OWN_DATA, UPLOAD_DATA = "the model's own dataset", "upload a .npz file"

#: Help texts that say what a choice does (the labels already say what it is).
HELP = {
    "data": "Labelled data gives accuracy; without labels, quality is measured against the FP32 model's outputs "
            "(agreement for class scores, cosine for embeddings). A .npz holds one array per model input (named "
            "after it) and optional 'labels'; its first 20 % calibrates INT8 and trains distillation, the rest "
            "is evaluated. A model without data of its own is checked on random inputs.",
    "precisions": "Each precision becomes one variant per prune ratio. int8-static needs calibration data; "
                  "fp16 on a CPU runs but is rarely faster; bf16 pays off on CPUs with AVX512-BF16 or AMX.",
    "calib_method": "How activation ranges are read from the calibration samples: minmax keeps the extremes "
                    "(safe, can waste range on outliers), entropy and percentile clip outliers (often better "
                    "accuracy on CNNs).",
    "calib_samples": "More samples give steadier INT8 ranges; below 64 the rows warn. The calibration split may "
                     "hold fewer: the table shows how many were really used.",
    "prune_kind": "structured removes whole channels, so the model really gets smaller and faster; "
                  "unstructured only sets weights to zero (no dense speedup, but shows the accuracy cost).",
    "prune_ratios": "Share of channels (structured) or weights (unstructured) removed; 0 keeps the unpruned "
                    "variant as the baseline.",
    "lowrank": "Factor each large layer into two thinner ones keeping this share of its rank; adds a variant "
               "beside the full-rank one.",
    "distill": "Retrain pruned and low-rank variants for a few epochs to imitate the original: recovers accuracy, "
               "costs training time.",
    "distill_epochs": "Passes over the training split; each epoch costs about one evaluation of the model per sample.",
    "device": "Where every variant runs; GPU-only settings appear with cuda.",
    "backends": "Each variant runs on every chosen backend; the Backends tab compares their outputs.",
    "cuda_graph": "Captures each batch size up to 16 into a CUDA graph and times its replay: less launch overhead "
                  "for small batches.",
    "batch_sizes": "Samples per inference. Pick from the list or type any size (e.g. 40) and press Enter; sizes "
                   "that do not fit the model or memory are skipped with the reason.",
    "min_s": "Each run keeps timing until it has both this many seconds and the iterations below; longer runs "
             "give steadier medians, and a busy machine needs them more.",
    "min_iters": "The least number of timed iterations per run, however long each takes.",
    "threads": "Intra-op threads each backend may use; 0 lets it use every core. Fewer threads leave room for "
               "other work but slow large models.",
    "metric": "The quality number on the y-axis and in the table. The default fits the model's outputs; switch to "
              "compare another way (metrics the rows did not record are not offered).",
    "budget": "Draws a vertical line at this p50 latency and stars the best-quality stable variant to its left.",
    "output_kind": "Decides how quality is scored: class scores (logits) by accuracy or agreement with FP32, "
                   "embeddings by cosine similarity, regressions by relative error. Automatic reads the output's "
                   "name and shape; name it when that guesses wrong (e.g. a pooled sentence embedding [N, 384]).",
    "timing_attempts": "A run whose timing is unstable (spread, slow tail, a slowed median, other work on the "
                       "machine) is timed again up to this many times; the steadiest attempt is kept and flagged "
                       "if still unstable. 1 checks without timing again.",
}


def say(message: Any) -> str:
    """An engine message (or exception) worded for the dashboard."""
    return dashboard_words(message)


def _records() -> SessionRecords:
    return SessionRecords()


def session() -> dict[str, Any]:
    """This browser session's record, restored once per session from the token in the URL (a new
    token when there is none); puts the token back into the URL on every page."""
    records = _records()
    token = st.session_state.get("_session_token")
    if not token:
        token = st.query_params.get(TOKEN_PARAM)
        if not records.valid(token):
            token = records.new_token()
        st.session_state["_session_token"] = token
    if st.query_params.get(TOKEN_PARAM) != token:
        st.query_params[TOKEN_PARAM] = token
    record = st.session_state.get("_session_record")
    if record is None:
        record = records.load(token)
        st.session_state["_session_record"] = record
        for key in GLOBAL_KEYS:
            if key in record and key not in st.session_state:
                st.session_state[key] = record[key]
    return record


def kept(key: str, default: Any, options: list | None = None) -> str:
    """``key`` for a widget whose value survives reloads: set from the record (else ``default``)
    before the widget is made; values no longer among ``options`` are dropped."""
    record = session()
    if key not in st.session_state:
        st.session_state[key] = record.get(key, default)
    if options is not None:
        value = st.session_state[key]
        if isinstance(value, list):
            st.session_state[key] = [v for v in value if v in options]
        elif value not in options:
            st.session_state[key] = default if default in options else options[0]
    st.session_state.setdefault("_kept_keys", set()).add(key)
    return key


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def save() -> None:
    """Write the kept widget values and :data:`GLOBAL_KEYS` that changed to the session record."""
    record = session()
    changed = False
    for key in set(GLOBAL_KEYS) | set(st.session_state.get("_kept_keys", ())):
        if key not in st.session_state:
            continue
        value = _plain(st.session_state[key])
        if record.get(key) != value:
            record[key] = value
            changed = True
    if changed:
        try:
            _records().save(st.session_state["_session_token"], record)
        except OSError as exc:
            st.caption(f"Settings could not be saved for the next reload: {exc}")


def _store_npz(up) -> str | None:
    from benchmark import BenchmarkError
    from benchmark.data.npz import check_npz_headers
    from benchmark.paths import data_dir
    from benchmark.safety import discard_upload, store_upload

    saved = st.session_state.setdefault("uploads", {})
    if up.file_id in saved:
        return saved[up.file_id]
    path = None
    try:
        up.seek(0)
        path = store_upload(up, up.name, data_dir(), int(st.get_option("server.maxUploadSize")) * 2**20)
        check_npz_headers(path, up.name)  # headers only; the sweep checks the arrays against the model
    except BenchmarkError as exc:
        st.error(say(exc))
        if path is not None:
            discard_upload(path, data_dir())
        return None
    path = str(path)
    saved[up.file_id] = path
    return path


def data_choice(where: str, label: str = "Evaluation data") -> str | None:
    """The evaluation-data choice shared by Compress & run and Sensitivity (one value for both):
    None for the model's own dataset, a built-in dataset name, or the path of an uploaded .npz."""
    from benchmark.data import dataset_names

    options = [OWN_DATA, *dataset_names(), UPLOAD_DATA]
    choice = st.selectbox(label, options, key=kept("data.choice", OWN_DATA, options), help=HELP["data"])
    if choice == OWN_DATA:
        return None
    if choice != UPLOAD_DATA:
        return choice
    up = st.file_uploader("Dataset (.npz: one array per model input, optional 'labels')", type=["npz"],
                          key=f"data.upload.{where}")
    if up is not None:
        path = _store_npz(up)
        if path is not None:
            st.session_state["data.npz"], st.session_state["data.npz_name"] = path, up.name
    path = st.session_state.get("data.npz")
    if path and Path(path).is_file():
        if up is None:
            st.caption(f"Using {st.session_state.get('data.npz_name') or Path(path).name}, uploaded earlier.")
        return path
    st.info("Upload a .npz file, or choose another dataset.")
    return None


def link(page: str, label: str, icon: str | None = None) -> None:
    """A link to another page (plain text when the page runs outside the app's navigation)."""
    from streamlit.errors import StreamlitAPIException

    try:
        st.page_link(page, label=label, icon=icon)
    except StreamlitAPIException:
        st.markdown(f"-> {label}")


def stored_sweeps():
    """(store, every stored sweep) for pages that list sweeps; stops the page with one line when the
    database cannot be used or holds no sweep yet."""
    from benchmark import BenchmarkError
    from benchmark.store import Store

    try:
        store = Store()
        sweeps = store.list_sweeps()
    except BenchmarkError as exc:  # e.g. a corrupt database: its path and what to do, in one line
        st.error(say(exc))
        st.stop()
    if not sweeps:
        st.info("No sweeps stored yet: start one on Compress & run, or click 'Try the demo' on Home.")
        st.stop()
    return store, sweeps


# --- what applies to the chosen model (Model page table, Run page choices) ------------------------
def show_applicability(info: dict) -> None:
    """The Model page's table: each compression and backend, whether it applies to this model and why."""
    if info.get("applicability_error"):
        st.warning(f"What applies was not checked: {say(info['applicability_error'])}")
        return
    rows = info.get("applicability") or []
    if not rows:
        return
    st.markdown("**What applies to this model** - the Compress & run page offers only these.")
    st.dataframe([{"": "yes" if r["available"] else "no", "compression / backend": r["name"], "kind": r["kind"],
                   "how, or why not": say(r["reason"])} for r in rows], hide_index=True, width="stretch")


@st.cache_data(show_spinner="Checking what applies to the model ...", max_entries=32)
def _applies(source: str, inputs: tuple[str, ...], arch: str | None, trust_pickle: bool) -> dict | None:
    from benchmark import BenchmarkError
    from benchmark.applicability import summarize
    from benchmark.inspection import inspect_isolated

    try:
        info = inspect_isolated(source, list(inputs), arch, trust_pickle, strict=False)
    except BenchmarkError:  # the Model page shows why the model does not load
        return None
    return summarize(info.get("applicability") or []) if not info.get("applicability_error") else None


def model_applies(model: dict) -> dict | None:
    """``{compressions, backends, unavailable: {name: reason}}`` for the chosen model: what the Model
    page found, else checked now in a child (cached). None for built-in samples (eager PyTorch
    models: every compression applies) and where the check itself failed."""
    if model.get("applies") is not None:
        return model["applies"]
    source = str(model.get("source") or "")
    if not source or source.startswith("sample:"):
        return None
    return _applies(source, tuple(model.get("inputs") or ()), model.get("arch"), bool(model.get("trust_pickle")))


def off_for_model(names, applies: dict | None) -> None:
    """One caption per choice in ``names`` that does not apply to the model, with its reason."""
    for name in names:
        reason = (applies or {}).get("unavailable", {}).get(name)
        if reason:
            st.caption(f"{name} is off for this model: {say(reason)}")


def applies_summary(info: dict) -> dict | None:
    """What the Model page's check found, summarized for the Run page (None when not checked)."""
    from benchmark.applicability import summarize

    if info.get("applicability_error") or not info.get("applicability"):
        return None
    return summarize(info["applicability"])

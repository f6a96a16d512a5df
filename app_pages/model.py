"""Model: upload a model or pick a sample; inputs/outputs, params, MACs/FLOPs, size, per-layer counts.

The chosen model is kept in ``st.session_state["model"]`` (source path or ``sample:NAME``, input
overrides, architecture, trust flag) for the Compress & run and Sensitivity pages, and in the
browser session's record, so a reload keeps it.
"""
from pathlib import Path

import streamlit as st

from app_pages.shared import link, save, say, session

NO_ARCH = "(none: the file holds a whole model)"


def human(n, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3f} {prefix}{unit}"
    return f"{n:g} {unit}".strip()


@st.cache_data(show_spinner="Loading the model and counting its MACs ...", max_entries=32)
def inspect_model(source: str, inputs: tuple[str, ...], arch: str | None, trust_pickle: bool,
                  batch_axes: tuple[str, ...] = ()) -> dict:
    """Everything the page shows about a model; a load failure is returned as ``{"error": ...}``.

    Every model, built-in samples included, is loaded and counted in a separate process
    (``inspect_isolated``): a file's code, a crashing parser, a hang or inputs too large for memory
    never touch the dashboard."""
    from benchmark import BenchmarkError
    from benchmark.inspection import inspect_isolated

    try:
        info = inspect_isolated(source, list(inputs), arch, trust_pickle, strict=False, batch_axes=list(batch_axes))
    except BenchmarkError as exc:
        return {"error": say(exc), "error_type": type(exc).__name__}
    from benchmark.ui import shape_text

    info["name"] = info["model"]
    for key in ("inputs", "outputs"):
        info[key] = [dict(s, shape=shape_text(s["shape"]), declared="x".join(map(str, s["shape"]))) for s in info[key]]
    info["notes"] = [say(n) for n in info.get("notes") or []]
    if "count_error" in info:
        info["count_error"] = say(info["count_error"])
    return info


def store_uploaded(up) -> str | None:
    """Save the upload (content-addressed, size-bounded); unpack a .zip holding one ONNX model."""
    from benchmark import BenchmarkError
    from benchmark.errors import DataError
    from benchmark.paths import data_dir
    from benchmark.safety import discard_upload, safe_extract_zip, store_upload

    saved = st.session_state.setdefault("uploads", {})
    if up.file_id in saved and Path(saved[up.file_id]).is_file():
        return saved[up.file_id]
    max_bytes = int(st.get_option("server.maxUploadSize")) * 2**20
    path = None
    try:
        up.seek(0)
        path = store_upload(up, up.name, data_dir(), max_bytes)
        if path.suffix.lower() == ".zip":
            files = safe_extract_zip(path, path.parent / "unzipped", max_total_bytes=4 * max_bytes, max_files=1000)
            onnx_files = [f for f in files if f.suffix.lower() == ".onnx"]
            if len(onnx_files) != 1:
                raise DataError(f"{up.name}: a .zip must hold exactly one .onnx file (plus its external data); "
                                f"it holds {len(onnx_files)}. Zip the model folder again.")
            path = onnx_files[0]
    except BenchmarkError as exc:
        st.error(say(exc))
        if path is not None:
            discard_upload(path, data_dir())
        return None
    saved[up.file_id] = str(path)
    return saved[up.file_id]


#: Errors that refuse an uploaded file itself (not a setting): the upload is removed from disk.
REFUSED = ("UnsafeModelError", "ModelLoadError", "DataError", "UnsafeArchiveError")


def forget_upload(source: str) -> None:
    """Remove a refused upload from disk and from this session; it is stored again from the
    uploader on the next run (e.g. after ticking 'I trust this file')."""
    from benchmark.paths import data_dir
    from benchmark.safety import discard_upload

    discard_upload(source, data_dir())
    saved = st.session_state.get("uploads", {})
    for key in [k for k, v in saved.items() if v == source]:
        saved.pop(key)


def choose_source() -> tuple[str | None, str | None, bool, str]:
    from benchmark.models.archs import arch_names
    from benchmark.models.loaders import SUPPORTED_EXTS
    from benchmark.models.samples import get_sample, sample_names

    current = st.session_state.get("model") or {}
    kinds = ["Built-in sample", "Upload a file"]
    kind = st.radio("Model source", kinds, horizontal=True, index=1 if current.get("uploaded") else 0)
    if kind == kinds[0]:
        names = sample_names()
        default = current.get("source", "sample:digits-cnn").removeprefix("sample:")
        name = st.selectbox("Sample", names, index=names.index(default) if default in names else 0,
                            format_func=lambda n: f"sample:{n}  -  {get_sample(n).description}")
        return f"sample:{name}", None, False, f"sample:{name}"
    st.caption("ONNX (.onnx, or a .zip of an .onnx with its external data), TorchScript (.pt/.ts), torch.export "
               "(.pt2), or a state_dict (.pt/.pth) of a built-in architecture. Limit: "
               f"{int(st.get_option('server.maxUploadSize'))} MB.")
    up = st.file_uploader("Model file", type=[e.lstrip(".") for e in SUPPORTED_EXTS] + ["zip"])
    archs = [NO_ARCH] + arch_names()
    arch = st.selectbox("Architecture (for a state_dict)", archs,
                        help="A state_dict holds only weights: choose the built-in architecture they belong to.")
    trust = st.checkbox("I trust this file (allow a pickled nn.Module, or a .pt2 archive with code, to load)",
                        value=False, help="A pickled module, and a .pt2 archive with pickled parts, guard code or "
                                          "compiled code, runs code from the file when loaded. Leave off unless you "
                                          "made the file.")
    if trust:
        st.warning("Loading such a file executes code from it (in a separate process, but with this server's "
                   "permissions). Only tick this for files you made yourself.")
    arch = None if arch == NO_ARCH else arch
    if up is not None:
        path = store_uploaded(up)
        return path, arch, trust, up.name
    if current.get("uploaded"):
        st.caption(f"Using the file uploaded earlier: {current.get('name')}")
        return current["source"], current.get("arch"), current.get("trust_pickle", False), current.get("name", "")
    return None, arch, trust, ""


def input_overrides(source: str, declared: list[dict], current: list[str]) -> tuple[str, ...] | str:
    """Editable shapes (dynamic dims shown by name, ``?`` when unnamed); the overrides for the
    inputs the user changed, or an error text. ``current``: the overrides chosen before (kept on reload)."""
    from benchmark import BenchmarkError
    from benchmark.config import InputSpec
    from benchmark.ui import override_text, shape_text

    st.markdown("**Inputs** - give a number to every named (dynamic) dim except the batch axis (below).")
    chosen = {}
    for text in current:
        try:
            spec = InputSpec.parse(text)
        except BenchmarkError:
            continue
        chosen[spec.name] = shape_text(spec.shape)
    overrides = []
    cols = st.columns(min(3, len(declared)) or 1)
    for i, spec in enumerate(declared):
        key = f"shape:{source}:{spec['name']}"
        if key not in st.session_state:
            st.session_state[key] = chosen.get(spec["name"], spec["shape"])
        with cols[i % len(cols)]:
            shape = st.text_input(f"{spec['name']} ({spec['dtype']})", key=key,
                                  help=f"Declared {spec['declared'] or 'without a shape'}. Numbers separated by x "
                                       "(e.g. 1x3x224x224); a word or ? marks a dim the model leaves open, which "
                                       "needs a number unless it is the input's batch axis.")
        if shape.replace(" ", "") != spec["shape"]:
            try:
                overrides.append(override_text(spec["name"], shape, spec["dtype"]))
            except BenchmarkError as exc:
                return say(exc)
    return tuple(overrides)


def batch_axes_field(source: str, inputs: list[dict], current: list[str]) -> tuple[str, ...] | str:
    """One field holding every input's batch axis (``input:0, state:1, sr:none``); the settings that
    differ from what the model shows, or an error text."""
    from benchmark import BenchmarkError
    from benchmark.config import parse_batch_axis

    shown = ", ".join(f"{s['name']}:{'none' if s.get('batch_axis') is None else s['batch_axis']}" for s in inputs)
    key = f"batch_axes:{source}"
    if key not in st.session_state:
        st.session_state[key] = ", ".join(current) or shown
    text = st.text_input("Batch axes", key=key,
                         help="The dim of each input that holds the batch (NAME:AXIS), or NAME:none for an input fed "
                              "as given whatever the batch size (a scalar sample rate, a fixed state). Found from the "
                              "model's symbolic dims: a state [2, batch, 128] has batch axis 1.")
    declared = {s["name"]: s.get("batch_axis") for s in inputs}
    settings = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            name, axis = parse_batch_axis(part)
        except BenchmarkError as exc:
            return say(exc)
        if name not in declared or declared[name] != axis:
            settings.append(part)
    return tuple(settings)


def show_counts(info: dict) -> None:
    from benchmark import plots

    if "count_error" in info:
        st.warning(f"MACs/params not counted: {info['count_error']}")
        return
    c = st.columns(5)
    c[0].metric("Parameters", human(info["params"]), help=f"{info['params']:,} parameters")
    c[1].metric("MACs (multiply-adds)", human(info["macs"]), help=f"{info['macs']:,} multiply-accumulates per sample (batch 1)")
    c[2].metric("FLOPs = 2 x MACs", human(info["flops"]), help=f"{info['flops']:,} floating-point operations per sample")
    size = info["size_bytes"]
    c[3].metric("Size", "n/a" if size is None else f"{size / 1e6:.3f} MB" if size >= 1e5 else f"{size / 1e3:.2f} kB",
                help=f"{size:,} bytes: the file (ONNX with external data), or the serialized state_dict; "
                     "kB = 10^3 bytes, MB = 10^6 bytes" if size is not None else "not measured")
    c[4].metric("Zero weights", f"{100 * info['sparsity']:.2f} %")
    skipped = ", ".join(f"{op} x{n}" for op, n in info["unsupported_ops"].items()) or "none"
    st.caption(f"Counted at batch 1 by {info['counter']}. Operators not counted (no MAC formula): {skipped}.")
    rows = info["by_module"]
    if rows:
        total = sum(r.get("macs") or 0 for r in rows) or 1
        table = [{"layer": r["name"], "operator": r.get("op_type", ""), "MACs": r.get("macs"), "parameters": r.get("params"),
                  "share of MACs (%)": None if r.get("macs") is None else round(100 * r["macs"] / total, 2)} for r in rows]
        with st.expander(f"Per-layer table ({len(rows)} layers)"):
            st.dataframe(table, hide_index=True, width="stretch")
        st.plotly_chart(plots.layer_figure(rows), width="stretch", theme=None)


session()
st.title("Model")
source, arch, trust, display = choose_source()
if source is None:
    st.info("Upload a model file or choose a built-in sample.")
    st.stop()
info = inspect_model(source, (), arch, trust)
if "error" in info:
    if info["error_type"] in REFUSED and not source.startswith("sample:"):
        forget_upload(source)
    hint = {"UnsafeModelError": "Tick 'I trust this file' only if you made it, or save a state_dict and pick its architecture.",
            "ModelLoadError": "Check the file format, or export the model again (ONNX or TorchScript)."}.get(info["error_type"],
                                                                                                            "Fix the file or settings and try again.")
    st.error(f"{info['error']} - {hint}")
    st.stop()
previous = st.session_state.get("model") or {}
overrides = input_overrides(source, info["inputs"], previous.get("inputs", []) if previous.get("source") == source else [])
if isinstance(overrides, str):
    st.error(f"{overrides} - correct the shape above (e.g. 1x3x224x224).")
    st.stop()
axes = batch_axes_field(source, info["inputs"], previous.get("batch_axis", []) if previous.get("source") == source else [])
if isinstance(axes, str):
    st.error(f"{axes} - correct the batch axes above (e.g. state:1, sr:none).")
    st.stop()
if overrides or axes:
    info = inspect_model(source, overrides, arch, trust, axes)
    if "error" in info:
        st.error(f"{info['error']} - correct the shape or batch axes above (e.g. 1x3x224x224, state:1).")
        st.stop()
st.session_state["model"] = {"source": source, "inputs": list(overrides), "arch": arch, "trust_pickle": trust,
                             "name": display, "uploaded": not source.startswith("sample:"), "batch_axis": list(axes)}
save()
outs = ", ".join(f"{o['name']}: {o['shape']} {o['dtype']}" for o in info["outputs"]) or "unknown until shapes are given"
st.markdown(f"**{info['name']}** ({info['format']}, {info['framework']}) - outputs: {outs}"
            + (f" - evaluation dataset: `{info['dataset']}`" if info.get("dataset") else " - no dataset: quality is measured as fidelity to FP32"))
show_counts(info)
for note in info["notes"]:
    st.caption(f"Note: {note}")
link("app_pages/run.py", "Use this model on Compress & run", ":material/play_circle:")

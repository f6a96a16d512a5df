"""Measured explanations of a row's outcome: why INT8 is (not) faster, why BF16 or FP16 is slow on a
CPU, why pruning paid less than its MAC cut, and how close the row came to this device's peak.

:func:`explain_row` is a pure function of numbers already measured: the row (precision, backend,
p50, speedup over FP32, MACs), the CPU's instruction set (:class:`benchmark.measure.hardware.IsaInfo`
or its dict), this device's peaks (:class:`benchmark.measure.roofline.Peaks` or its dict) and, where
they exist, the row's per-layer profile and its FP32 reference's profile
(:func:`benchmark.profiling.profile_variant`). Every sentence cites the numbers it rests on; a
topic whose numbers are missing is left out rather than replaced by a general statement.

Row keys read (all optional but ``precision``): ``precision``, ``backend``, ``device``,
``batch_size``, ``latency_p50_ms``, ``speedup_vs_fp32`` (FP32 p50 / this p50, same backend and
batch), ``macs`` (at batch 1), ``reference_macs`` (the unpruned FP32 variant's), ``prune_ratio``,
``int8_format`` (``u8s8`` / ``s8s8``), ``int8_choice`` (the measured format choice), ``runtime``
(the row's runtime settings), ``providers``. :func:`row_inputs` makes these from a stored row and
:func:`explain_results` fills a whole sweep's rows.
"""
from __future__ import annotations

from typing import Any

#: Below this speedup over FP32 an INT8 / BF16 row is "not faster" and gets the full explanation.
NOT_FASTER = 1.15
#: A pruned row whose speedup is below this fraction of its MAC reduction gets an explanation.
PRUNE_SHORTFALL = 0.7
#: Layers below this fraction of their precision's peak count as far from the peak.
LOW_PEAK_FRACTION = 0.1
_INT8 = ("int8-static", "int8-dynamic", "mixed", "int8")


def _get(obj: Any, name: str, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _peak(peaks: Any, family: str) -> tuple[float | None, str | None]:
    """(GMAC/s, kernel) of the fastest measured kernel of ``family`` (fp32, bf16, fp16, int8)."""
    kernels = (_get(peaks, "gmacs_per_s") or {}).get(family) or {}
    if not kernels:
        return None, None
    best = max(kernels, key=kernels.get)
    return float(kernels[best]), best


def _isa_flags(isa: Any) -> tuple[set[str], set[str]]:
    flags = set(_get(isa, "flags") or [])
    return flags, set(_get(isa, "unknown") or [])


def _has(isa: Any, *names: str) -> bool | None:
    if isa is None:
        return None
    flags, unknown = _isa_flags(isa)
    if flags & set(names):
        return True
    return None if unknown & set(names) else False


def _cpu_words(isa: Any) -> str:
    """``this CPU (AMD EPYC) has AVX2 but no VNNI`` style clause from the ISA."""
    model = _get(isa, "cpu_model")
    who = f"this CPU ({model})" if model else "this CPU"
    vnni = _has(isa, "avx512_vnni", "avx_vnni", "amx_int8")
    if vnni is None:
        return f"whether {who} has VNNI could not be read (sources: {', '.join(_get(isa, 'sources') or []) or 'none'})"
    flags, _ = _isa_flags(isa)
    vector = "AVX-512" if {"avx512f", "avx512bw", "avx512vl"} <= flags else "AVX2" if "avx2" in flags else "no AVX2"
    if vnni:
        which = ", ".join(sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}))
        return f"{who} has {vector} with INT8 dot products ({which})"
    return f"{who} has {vector} but no VNNI (no avx512_vnni, avx_vnni or amx_int8): an INT8 multiply-add takes " \
           "three instructions instead of one"


def mac_kernel_rate(profile: dict | None, int8: bool) -> dict[str, Any] | None:
    """The MAC layers of ``profile`` that ran integer (``int8``) or float kernels: their kernels,
    MACs, time and GMAC/s together (None when there are none)."""
    if not profile:
        return None
    layers = [r for r in profile.get("layers") or [] if r.get("macs") and bool(r.get("int8_kernel")) == int8]
    time_ms = sum(r["time_ms"] for r in layers)
    if not layers or time_ms <= 0:
        return None
    macs = sum(int(r["macs"]) for r in layers)
    kernels: dict[str, int] = {}
    for r in layers:
        for k in r.get("kernels") or [r.get("op_type", "?")]:
            kernels[k] = kernels.get(k, 0) + 1
    return {"kernels": kernels, "macs": macs, "time_ms": time_ms, "gmacs_per_s": macs / (time_ms * 1e6),
            "layers": len(layers)}


def _kernel_list(rate: dict) -> str:
    return "/".join(sorted(rate["kernels"], key=lambda k: -rate["kernels"][k])[:3])


def _speed_words(row: dict, what: str) -> str | None:
    s = row.get("speedup_vs_fp32")
    if s is None:
        return None
    return f"{what} ran at {s:.2f}x FP32 speed"


def explain_int8(row: dict, isa: Any = None, peaks: Any = None, profile: dict | None = None,
                 reference_profile: dict | None = None) -> dict | None:
    """Why an INT8 row is (not) faster than FP32: the CPU's INT8 instructions, the kernels that
    ran and their GMAC/s against the FP32 kernels, Q/DQ overhead, this device's GEMM peaks."""
    lead = _speed_words(row, f"{row['precision']} on {row.get('backend', '?')}")
    if lead is None:
        return None
    slow = row["speedup_vs_fp32"] < NOT_FASTER
    parts = [lead + (":" if slow else ";")]
    numbers: dict[str, Any] = {"speedup_vs_fp32": row["speedup_vs_fp32"]}
    if isa is not None:
        parts.append(_cpu_words(isa) + ";")
    q = mac_kernel_rate(profile, int8=True)
    f_self = mac_kernel_rate(profile, int8=False)
    f_ref = mac_kernel_rate(reference_profile, int8=False)
    if q is not None:
        text = f"the INT8 kernels ({_kernel_list(q)}, {q['layers']} layers) reached {q['gmacs_per_s']:.1f} GMAC/s"
        numbers["int8_kernel_gmacs_per_s"] = q["gmacs_per_s"]
        if f_ref is not None:
            text += f" vs {f_ref['gmacs_per_s']:.1f} GMAC/s for the FP32 model's kernels ({_kernel_list(f_ref)})"
            numbers["fp32_kernel_gmacs_per_s"] = f_ref["gmacs_per_s"]
        parts.append(text + ";")
    elif profile is not None and f_self is not None:
        parts.append(f"no MAC layer ran an INT8 kernel: {f_self['layers']} ran float kernels ({_kernel_list(f_self)}) "
                     f"at {f_self['gmacs_per_s']:.1f} GMAC/s;")
    kernels = (profile or {}).get("kernels") or {}
    if kernels.get("quantized_but_float"):
        names = kernels["quantized_but_float"]
        parts.append(f"{len(names)} quantized layer(s) ran as DequantizeLinear -> float op ({', '.join(names[:3])});")
    if kernels.get("quant_time_share"):
        parts.append(f"Quantize/DequantizeLinear took {100 * kernels['quant_time_share']:.1f} % of the time;")
        numbers["quant_time_share"] = kernels["quant_time_share"]
    parts += _int8_peak_words(row, peaks, numbers)
    if len(parts) == 1:
        return None
    return {"topic": "int8", "text": " ".join(parts).rstrip(";:") + ".", "numbers": numbers}


def _int8_peak_words(row: dict, peaks: Any, numbers: dict) -> list[str]:
    i8, i8_kernel = _peak(peaks, "int8")
    f32, f32_kernel = _peak(peaks, "fp32")
    if i8 is None or f32 is None:
        return []
    numbers.update(int8_peak_gmacs_per_s=i8, fp32_peak_gmacs_per_s=f32)
    words = [f"on this device's GEMM microbenchmark INT8 peaks at {i8:.0f} GMAC/s ({i8_kernel}) vs FP32 "
             f"{f32:.0f} GMAC/s ({f32_kernel}), {i8 / f32:.2f}x;"]
    kernels = (_get(peaks, "gmacs_per_s") or {}).get("int8") or {}
    s8 = next((v for k, v in kernels.items() if "S8S8" in k), None)
    u8 = next((v for k, v in kernels.items() if "MatMulInteger U8S8" in k), None)
    if str(row.get("int8_format", "")).lower() == "s8s8" and s8 and u8:
        words.append(f"this row used S8S8, whose MatMulInteger ran at {s8:.0f} GMAC/s here vs {u8:.0f} for U8S8;")
        numbers.update(s8s8_gmacs_per_s=s8, u8s8_gmacs_per_s=u8)
    return words


def explain_low_precision_float(row: dict, isa: Any = None, peaks: Any = None,
                                profile: dict | None = None) -> dict | None:
    """BF16 / FP16 on a CPU: native or converted, with this device's GEMM peaks and, for FP16 on ONNX
    Runtime, how much of the time ran in float16 kernels and in Casts."""
    precision = str(row.get("precision", ""))
    family = "bf16" if "bf16" in precision else "fp16" if "fp16" in precision else None
    if family is None or not str(row.get("device", "cpu")).startswith("cpu"):
        return None
    lead = _speed_words(row, f"{precision} on {row.get('backend', '?')} (CPU)")
    if lead is None:
        return None
    parts, numbers = [lead + ":"], {"speedup_vs_fp32": row["speedup_vs_fp32"]}
    flags = ("avx512_bf16", "amx_bf16", "bf16") if family == "bf16" else ("avx512_fp16", "amx_fp16", "fp16")
    native = _has(isa, *flags)
    if native is not None:
        parts.append(f"this CPU {'has' if native else 'has no'} native {family.upper()} arithmetic "
                     f"({' / '.join(flags[:2])}){'' if native else ', so values are converted to FP32 to compute'};")
    low, low_kernel = _peak(peaks, family)
    f32, _ = _peak(peaks, "fp32")
    if low is not None and f32 is not None:
        parts.append(f"its {family.upper()} GEMM peak here is {low:.1f} GMAC/s ({low_kernel}) vs {f32:.1f} for FP32;")
        numbers.update({f"{family}_peak_gmacs_per_s": low, "fp32_peak_gmacs_per_s": f32})
    if profile:
        layers = profile.get("layers") or []
        total = sum(r["time_ms"] for r in layers) or 1.0
        low_t = sum(r["time_ms"] for r in layers if r.get("precision") == family)
        casts = sum(r["time_ms"] for r in layers if "Cast" in (r.get("kernels") or []))
        parts.append(f"{100 * low_t / total:.0f} % of the profiled time ran in {family} kernels"
                     + (f" and {100 * casts / total:.0f} % in Casts" if casts else "") + ";")
        numbers.update(low_precision_time_share=low_t / total, cast_time_share=casts / total)
    if len(parts) == 1:
        return None
    return {"topic": family, "text": " ".join(parts).rstrip(";:") + ".", "numbers": numbers}


def explain_pruning(row: dict, profile: dict | None = None) -> dict | None:
    """A pruned row whose speedup falls short of its MAC cut: the layers pruning does not shrink
    (no MACs), grouped / depthwise convolutions and layers far from the peak, as profiled."""
    macs, ref = row.get("macs"), row.get("reference_macs")
    speedup = row.get("speedup_vs_fp32")
    if not row.get("prune_ratio") or not macs or not ref or speedup is None:
        return None
    ratio = ref / macs
    numbers = {"mac_reduction": ratio, "speedup_vs_fp32": speedup}
    if speedup >= PRUNE_SHORTFALL * ratio:
        return {"topic": "prune", "numbers": numbers,
                "text": f"Pruning cut MACs {ratio:.2f}x and latency {speedup:.2f}x "
                        f"({100 * speedup / ratio:.0f} % of the MAC cut)."}
    parts = [f"Pruning cut MACs {ratio:.2f}x but latency only {speedup:.2f}x:"]
    if not profile:
        parts.append("profile this variant (slimbench profile) to see which layers keep the time")
        return {"topic": "prune", "text": " ".join(parts) + ".", "numbers": numbers}
    layers = profile.get("layers") or []
    total = sum(r["time_ms"] for r in layers) or 1.0
    zero = [r for r in layers if not r.get("macs")]
    zero_t = sum(r["time_ms"] for r in zero) / total
    numbers["zero_mac_time_share"] = zero_t
    kinds = sorted({r.get("op_type", "?") for r in zero if r["time_ms"] > 0.01 * total})[:5]
    parts.append(f"layers without MACs ({', '.join(kinds) or 'none'}) took {100 * zero_t:.0f} % of the time, "
                 "and pruning channels does not shrink them;")
    grouped = [r for r in layers if (r.get("groups") or 1) > 1 and r.get("macs")]
    if grouped:
        g_t = sum(r["time_ms"] for r in grouped) / total
        g_m = sum(r.get("mac_share") or 0 for r in grouped)
        numbers.update(grouped_time_share=g_t, grouped_mac_share=g_m)
        parts.append(f"{len(grouped)} grouped/depthwise convolution(s) hold {100 * g_m:.0f} % of the MACs but "
                     f"{100 * g_t:.0f} % of the time;")
    far = [r for r in layers if r.get("peak_fraction") is not None and r["peak_fraction"] < LOW_PEAK_FRACTION]
    if far:
        f_t = sum(r["time_ms"] for r in far) / total
        numbers["low_peak_time_share"] = f_t
        parts.append(f"{len(far)} MAC layer(s) ran below {100 * LOW_PEAK_FRACTION:.0f} % of this device's peak "
                     f"(memory- or overhead-bound) and took {100 * f_t:.0f} % of the time;")
    return {"topic": "prune", "text": " ".join(parts).rstrip(";:") + ".", "numbers": numbers}


def _roofline(row: dict, peaks: Any) -> tuple[float | None, str | None, float | None, str | None]:
    """(achieved GMAC/s, peak family, its peak GMAC/s, its kernel) of :func:`row_inputs` ``row``."""
    from .measure.roofline import achieved_gmacs_per_s, peak_precision

    achieved = achieved_gmacs_per_s(row.get("macs"), int(row.get("batch_size") or 1), row.get("latency_p50_ms"))
    family = peak_precision(row.get("precision"))
    peak, kernel = _peak(peaks, family) if family else (None, None)
    return achieved, family, peak, kernel


def explain_roofline(row: dict, peaks: Any = None) -> dict | None:
    """The whole row's achieved GMAC/s (MACs x batch / p50) as a fraction of its precision's peak."""
    achieved, family, peak, kernel = _roofline(row, peaks)
    if achieved is None or peak is None:
        return None
    fraction = achieved / peak
    return {"topic": "roofline", "numbers": {"achieved_gmacs_per_s": achieved, "peak_gmacs_per_s": peak,
                                             "peak_fraction": fraction},
            "text": f"The model ran at {achieved:.1f} GMAC/s (MACs x batch / p50), {100 * fraction:.1f} % of this "
                    f"device's {family.upper()} GEMM peak ({peak:.1f} GMAC/s, {kernel})."}


def explain_int8_format(row: dict) -> dict | None:
    """The INT8 format as measured when the variant was built (``int8_choice`` of its compression
    record, :mod:`benchmark.compress.quantize.int8_choice`): every candidate's p50 and quality drop."""
    choice = row.get("int8_choice") or {}
    measured = [c for c in choice.get("candidates") or [] if c.get("p50_ms") is not None]
    if choice.get("mode") != "measure" or not choice.get("chosen") or not measured:
        return None
    numbers = {f"{c['name']} p50_ms": c["p50_ms"] for c in measured}
    numbers.update({f"{c['name']} drop_points": c.get("drop_points") for c in measured})
    parts = [f"{c['name']} ({c.get('source')}) {c['p50_ms']:.3f} ms, {c.get('drop_points') or 0:+.2f} points"
             for c in measured]
    return {"topic": "int8_format", "numbers": numbers,
            "text": f"INT8 format {choice['chosen']}, chosen by measuring the candidates on {choice.get('samples')} "
                    f"evaluation samples (batch {choice.get('timing_batch')}, {choice.get('metric')}): "
                    + "; ".join(parts) + "."}


#: ONNX Runtime graph optimization levels below which Q/DQ pairs are not fused into integer kernels.
_UNFUSED_ORT_LEVELS = ("basic", "disable")


def explain_runtime(row: dict) -> dict | None:
    """Runtime settings that decide the outcome: an INT8 QDQ row on ONNX Runtime below optimization
    level ``extended`` runs float kernels between Quantize/DequantizeLinear nodes."""
    level = (row.get("runtime") or {}).get("ort_graph_opt_level")
    if level not in _UNFUSED_ORT_LEVELS or str(row.get("precision")) not in _INT8 or row.get("speedup_vs_fp32") is None:
        return None
    return {"topic": "runtime", "numbers": {"speedup_vs_fp32": row["speedup_vs_fp32"], "ort_graph_opt_level": level},
            "text": f"ONNX Runtime ran this row at graph optimization level {level}, and it ran at "
                    f"{row['speedup_vs_fp32']:.2f}x the FP32 row of the same level: Q/DQ pairs become integer "
                    "kernels (QLinearConv, QGemm, MatMulInteger) only from level extended, so below it the MAC "
                    "layers run float kernels between Quantize/DequantizeLinear nodes (profile it to see them)."}


def explain_row(row: dict, *, isa: Any = None, peaks: Any = None, profile: dict | None = None,
                reference_profile: dict | None = None) -> list[dict]:
    """Measured explanations for one row (see the module docstring): a list of ``{"topic", "text",
    "numbers"}`` (topics ``int8``, ``int8_format``, ``runtime``, ``bf16``, ``fp16``, ``prune``,
    ``roofline``), empty when no topic has its numbers."""
    out = []
    precision = str(row.get("precision", ""))
    if precision in _INT8:
        out.append(explain_int8(row, isa, peaks, profile, reference_profile))
        out.append(explain_int8_format(row))
        out.append(explain_runtime(row))
    out.append(explain_low_precision_float(row, isa, peaks, profile))
    out.append(explain_pruning(row, profile))
    out.append(explain_roofline(row, peaks))
    return [e for e in out if e is not None]


def _int8_choice(compression: list | None) -> dict | None:
    """The ``int8_choice`` record of the ONNX side of a row's compression records, if any."""
    for record in compression or []:
        onnx = ((record or {}).get("details") or {}).get("onnx") if isinstance(record, dict) else None
        if isinstance(onnx, dict) and isinstance(onnx.get("int8_choice"), dict):
            return onnx["int8_choice"]
    return None


def row_inputs(data: dict, speedup: float | None, reference: dict | None) -> dict:
    """The keys :func:`explain_row` reads, from a row's ``to_json`` dict, its speedup over FP32 and
    its FP32 reference row's dict (for ``reference_macs``)."""
    from .results import calibration_summary

    lat = data.get("latency_ms") or {}
    on_onnx = str(data.get("backend", "")).startswith("onnxruntime")
    return {"precision": data.get("precision"), "backend": data.get("backend"), "device": data.get("device"),
            "runtime": data.get("runtime"), "int8_choice": _int8_choice(data.get("compression")) if on_onnx else None,
            "batch_size": data.get("batch_size"), "latency_p50_ms": lat.get("p50"), "speedup_vs_fp32": speedup,
            "macs": data.get("macs"), "reference_macs": None if reference is None else reference.get("macs"),
            "prune_ratio": data.get("prune_ratio"), "providers": data.get("providers"),
            "int8_format": calibration_summary(data.get("compression"), data.get("config"))["int8_format"]}


def roofline_fields(row: dict, peaks: Any) -> tuple[float | None, float | None]:
    """(achieved GMAC/s, fraction of the peak of the row's precision) of :func:`row_inputs` ``row``."""
    achieved, _, peak, _ = _roofline(row, peaks)
    return achieved, (achieved / peak if achieved is not None and peak else None)


def _ok_rows_with_inputs(rows: list):
    """(row, its :func:`row_inputs`, its ``env``) for each ok row of one sweep, with the speedup over
    its FP32 reference row (found as :mod:`benchmark.measure.derived` finds it)."""
    from .measure import derived

    data = [r.to_json() for r in rows]
    refs = derived.reference_index(data)
    for row, d, speedup in zip(rows, data, derived.speedups_vs_fp32(data)):
        if row.status != "ok":
            continue
        ref = refs.get(derived.group_key(d))
        yield row, row_inputs(d, speedup, None if ref is None else data[ref]), d.get("env") or {}


def explain_results(rows: list) -> list:
    """Fill ``speedup_vs_fp32``, ``achieved_gmacs_per_s``, ``peak_fraction`` and ``explanations`` on
    the ok :class:`~benchmark.results.RunResult` rows of one sweep (the ISA and peaks come from each
    row's ``env``). Returns the rows whose fields changed, for the caller to store again."""
    changed = []
    for row, inputs, env in _ok_rows_with_inputs(rows):
        achieved, fraction = roofline_fields(inputs, env.get("peaks"))
        explanations = explain_row(inputs, isa=env.get("isa"), peaks=env.get("peaks"))
        new = (inputs["speedup_vs_fp32"], achieved, fraction, explanations or None)
        if new != (row.speedup_vs_fp32, row.achieved_gmacs_per_s, row.peak_fraction, row.explanations):
            row.speedup_vs_fp32, row.achieved_gmacs_per_s, row.peak_fraction, row.explanations = new
            changed.append(row)
    return changed


def explain_profiled(rows: list, key: str, profile: dict) -> list[dict]:
    """Measured explanations of the row ``key`` (``variant|backend|batch``) of one sweep's ``rows``
    with that variant's per-layer ``profile`` (:func:`benchmark.profiling.profile_isolated`): which
    kernels ran, at what GMAC/s, where the time went. Empty when the row is not an ok row."""
    for row, inputs, env in _ok_rows_with_inputs(rows):
        if row.key == key:
            return explain_row(inputs, isa=env.get("isa") or profile.get("isa"),
                               peaks=env.get("peaks") or profile.get("peaks"), profile=profile)
    return []


def explanation_lines(results: list) -> list[str]:
    """``why`` lines for a results table: one per explained ok row (``variant on backend, batch N:``
    then its explanations), and the device's peaks once."""
    lines: list[str] = []
    peaks_line = None
    for r in results:
        peaks = (getattr(r, "env", None) or {}).get("peaks")
        if peaks_line is None and peaks:
            per = ", ".join(f"{p} {v:.1f}" for p, v in (peaks.get("peak_gmacs_per_s") or {}).items())
            bw = peaks.get("memory_bandwidth_gb_per_s")
            peaks_line = (f"this device's peaks ({peaks.get('threads')} thread(s), measured {peaks.get('measured_at')}): "
                          f"GMAC/s {per}" + (f"; memory {bw:.1f} GB/s" if bw else ""))
        if r.status != "ok" or not r.explanations:
            continue
        lines.append(f"{r.variant} on {r.backend}, batch {r.batch_size}: "
                     + " ".join(str(e.get("text", "")) for e in r.explanations))
    return ([peaks_line] if peaks_line else []) + lines


__all__ = ["LOW_PEAK_FRACTION", "NOT_FASTER", "PRUNE_SHORTFALL", "explain_int8", "explain_low_precision_float",
           "explain_int8_format", "explain_profiled", "explain_pruning", "explain_results", "explain_row", "explain_runtime",
           "explanation_lines", "explain_roofline", "mac_kernel_rate", "roofline_fields",
           "row_inputs"]

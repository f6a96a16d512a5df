"""ONNX Runtime INT8: the INT8 format for this CPU, static QDQ quantization (pre-processing,
calibration, exclusions) and the summaries of what static and dynamic quantization did."""
from __future__ import annotations

import contextlib
import inspect
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from ...config import CompressionConfig
from ...data.base import batch_of
from ...errors import CompressionError, one_line
from .. import onnx_prep
from .common import quiet_ort_logging

#: Op types ONNX Runtime's dynamic quantizer turns into integer kernels by default here. ``Conv``
#: is left out on purpose: ``ConvInteger`` runs slower than FP32 Conv on x86 CPUs.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "Attention", "LSTM")

#: Static QDQ recipe for attention models: only the weight-bearing matrix products. Quantizing the
#: additive attention mask, softmax, layer norms or residual adds collapses accuracy (a -1e4 mask
#: in the same uint8 range as the attention scores leaves the scores a single level).
TRANSFORMER_STATIC_OP_TYPES = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention")

#: Op types whose presence marks a model as attention-based (ONNX graph / PyTorch modules).
ATTENTION_ONNX_OPS = ("Softmax", "LayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization")

#: Nodes produced by dynamic quantization that do integer math.
_DYNAMIC_INT_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLSTM",
                    "ConvInteger", "QGemm", "MatMulIntegerToFloat")

_Q_OPS = ("QuantizeLinear", "DequantizeLinear")

#: Weight-bearing ops ONNX Runtime runs in INT8 from dequantized inputs even with a float output.
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

#: Ops that move data but compute nothing (not reported as "left in float").
_PLUMBING_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Reshape", "Concat", "Cast",
                 "Identity", "Flatten", "Transpose", "Slice", "ConstantOfShape", "Expand", "Range")


def cpu_flags() -> set[str]:
    """The CPU feature flags (see :func:`benchmark.machine.cpu_flags`)."""
    from ...machine import cpu_flags as flags

    return flags()


def choose_int8_format(requested: str = "auto", flags: set[str] | None = None,
                       machine: str | None = None) -> tuple[str, bool, str]:
    """``(format, reduce_range, reason)`` for static INT8 on this CPU.

    ``auto``: on x86 with VNNI (``avx512_vnni``, ``avx_vnni``) or AMX, U8S8 (VNNI multiplies uint8
    activations by int8 weights; S8S8 needs extra work and measured slower than FP32). Without VNNI
    U8S8 is still the fast x86 path, with 7-bit weights (``reduce_range``) to avoid the 16-bit
    saturation of ``vpmaddubsw``. Elsewhere U8S8 is ONNX Runtime's default CPU format.
    """
    flags = cpu_flags() if flags is None else set(flags)
    machine = (machine or platform.machine()).lower()
    x86 = machine in ("x86_64", "amd64", "i386", "i686", "x86")
    fast = sorted(f for f in flags if f in ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile", "amx_bf16"))
    if requested == "u8s8":
        rr = x86 and not fast
        return "u8s8", rr, "u8s8 asked for" + ("; 7-bit weights (reduce_range): no VNNI on this x86 CPU" if rr else "")
    if requested == "s8s8":
        note = " (on VNNI CPUs S8S8 measured slower than FP32; U8S8 is the fast format)" if fast else ""
        return "s8s8", False, "s8s8 asked for" + note
    if fast:
        return "u8s8", False, (f"auto: CPU has {', '.join(fast)}; VNNI multiplies uint8 activations by int8 "
                               f"weights, so U8S8 is the fast format (S8S8 measured 0.6-0.9x of FP32)")
    if x86:
        return "u8s8", True, ("auto: no VNNI/AMX flags on this x86 CPU; U8S8 is still the fast x86 path, "
                              "with 7-bit weights (reduce_range) to avoid saturation without VNNI")
    return "u8s8", False, (f"auto: no x86 VNNI flags ({machine or 'unknown'} CPU); U8S8 is ONNX Runtime's "
                           f"default CPU format")


def calibration_reader(batches: list[dict]):
    from onnxruntime.quantization import CalibrationDataReader

    class DatasetReader(CalibrationDataReader):
        """Feeds prepared calibration batches to ONNX Runtime's calibrator."""

        def __init__(self):
            self._batches = list(batches)
            self._i = 0

        def get_next(self):
            if self._i >= len(self._batches):
                return None
            self._i += 1
            return self._batches[self._i - 1]

        def rewind(self):
            self._i = 0

        def __len__(self):
            return len(self._batches)

    return DatasetReader()


def _count(batches: list[dict], specs=None) -> int:
    """Samples in ``batches``: along each batch's batch axis with input ``specs`` (1 per batch without
    one), else the leading dim of its first array."""
    if specs is not None:
        return sum(batch_of(b, specs) or 1 for b in batches if b)
    return sum(len(next(iter(b.values()))) for b in batches if b)


def qdq_summary(model) -> dict[str, Any]:
    """What static QDQ quantization did to ``model`` (see the module docstring for conventions).

    A node counts as quantized when every tensor input comes from a ``DequantizeLinear`` (or is a
    non-float constant such as a shape) and its output feeds a ``QuantizeLinear`` (for Conv/Gemm/MatMul a float output is
    allowed: ONNX Runtime fuses those into integer kernels either way). Other compute nodes are
    reported as left in float; pure data-movement ops that touch no quantized tensor are not listed.
    """
    from onnx import TensorProto

    g = model.graph
    _FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    inits = {i.name: i for i in g.initializer}
    int8_weights = sum(
        1 for n in g.node if n.op_type == "DequantizeLinear" and n.input and n.input[0] in inits
        and inits[n.input[0]].data_type in (TensorProto.INT8, TensorProto.UINT8)
    )
    q_in = {i for n in g.node if n.op_type == "QuantizeLinear" for i in n.input[:1]}
    quantized: dict[str, int] = {}
    left: dict[str, int] = {}
    for n in g.node:
        if n.op_type in _Q_OPS:
            continue
        inputs_q = any(i in dq_out for i in n.input) and all(
            i in dq_out or i == "" or (i in inits and inits[i].data_type not in _FLOAT_TYPES) for i in n.input
        )
        output_q = any(o in q_in for o in n.output) or n.op_type in _WEIGHT_OPS
        if inputs_q and output_q:
            quantized[n.op_type] = quantized.get(n.op_type, 0) + 1
        elif n.op_type not in _PLUMBING_OPS:
            left[n.op_type] = left.get(n.op_type, 0) + 1
    counts = onnx_prep.op_counts(model)
    return {
        "qdq": {"QuantizeLinear": counts.get("QuantizeLinear", 0), "DequantizeLinear": counts.get("DequantizeLinear", 0),
                "qdq_pairs": counts.get("QuantizeLinear", 0), "int8_weight_initializers": int8_weights},
        "quantized_ops": dict(sorted(quantized.items())),
        "nodes_quantized": sum(quantized.values()),
        "float_ops": dict(sorted(left.items())),
        "nodes_left_float": sum(left.values()),
    }


def dynamic_summary(before, after) -> dict[str, Any]:
    """What dynamic quantization did: integer kernels added and float compute left."""
    counts = onnx_prep.op_counts(after)
    int_ops = {k: v for k, v in counts.items() if k in _DYNAMIC_INT_OPS}
    left = {k: v for k, v in counts.items() if k in ("MatMul", "Gemm", "Conv", "Attention", "LSTM", "ConvTranspose")}
    return {
        "quantized_ops": int_ops,
        "nodes_quantized": sum(int_ops.values()),
        "dynamic_quantize_linear": counts.get("DynamicQuantizeLinear", 0),
        "float_ops": left,
        "nodes_left_float": sum(left.values()),
        "ops_before": onnx_prep.op_counts(before),
    }


def _ranges_summary(cache_path: Path, limit: int = 6) -> dict[str, Any]:
    import numpy as np
    from onnxruntime.quantization.calibrate import load_tensors_data

    tensors = load_tensors_data(cache_path)
    lows, highs, first = [], [], {}
    for name, td in tensors.items():
        lo_arr, hi_arr = td.range_value
        lo, hi = float(np.min(lo_arr)), float(np.max(hi_arr))
        lows.append(lo)
        highs.append(hi)
        if len(first) < limit:
            first[name] = [round(lo, 6), round(hi, 6)]
    widest = max(((hi - lo, n) for (n, td), lo, hi in zip(tensors.items(), lows, highs)), default=(0.0, None))
    return {
        "tensors": len(lows),
        "min": min(lows) if lows else None,
        "max": max(highs) if highs else None,
        "widest_tensor": widest[1],
        "widest_range": widest[0],
        "first": first,
    }


def ranges_from_qdq(model, limit: int = 6) -> dict[str, Any]:
    """Activation ranges implied by the QuantizeLinear scales/zero points (``rmin = (qmin - zp) * s``)."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    lows, highs, first = [], [], {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or len(n.input) < 3 or n.input[1] not in inits or n.input[2] not in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        zp_arr = numpy_helper.to_array(inits[n.input[2]])
        info = np.iinfo(zp_arr.dtype)
        zp = zp_arr.astype(np.float64)
        lo, hi = float(np.min((info.min - zp) * scale)), float(np.max((info.max - zp) * scale))
        lows.append(lo)
        highs.append(hi)
        if len(first) < limit:
            first[n.input[0]] = [round(lo, 6), round(hi, 6)]
    return {"tensors": len(lows), "min": min(lows) if lows else None, "max": max(highs) if highs else None,
            "first": first, "source": "QuantizeLinear scales (quantization grid, after range adjustment)"}


@contextlib.contextmanager
def _in_dir(path: Path):
    """Run inside ``path``: ORT's symbolic shape inference dumps ``sym_shape_infer_temp.onnx`` and a
    ``<uuid>.data`` file into the current directory when it fails; keep them in our temp folder."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def preprocess(src_model, workdir: Path, warnings_: list[str]) -> Path:
    """``quant_pre_process`` (shape inference + basic optimisation), with fallbacks that are recorded."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    raw = workdir / "prepared.onnx"
    onnx_prep.save_model(src_model, raw)
    out = workdir / "preprocessed.onnx"
    attempts = (
        ({}, None),
        ({"skip_symbolic_shape": True}, "symbolic shape inference failed; ran ONNX shape inference only"),
        ({"skip_symbolic_shape": True, "skip_optimization": True}, "quant_pre_process optimisation failed; quantized without it"),
    )
    last = None
    for kwargs, note in attempts:
        try:
            with quiet_ort_logging(), _in_dir(workdir):
                quant_pre_process(str(raw), str(out), **kwargs)
        except Exception as exc:  # ORT's pre-processing raises arbitrary types; the fallback is recorded
            last = exc
            continue
        if note:
            warnings_.append(f"{note} ({one_line(last)})" if last else note)
        return out
    warnings_.append(f"quant_pre_process failed ({one_line(last)}); quantizing the model without pre-processing")
    return raw


def map_exclusions(model, layers) -> tuple[list[str], dict[str, list[str]], list[str]]:
    mapping, missing = onnx_prep.nodes_for_layers(model, layers)
    nodes = sorted({n for names in mapping.values() for n in names})
    return nodes, mapping, missing


def _default_mixed_exclusions(model) -> list[str]:
    """First and last Conv/Gemm/MatMul with a constant weight: the usual accuracy-sensitive layers."""
    inits = {i.name for i in model.graph.initializer}
    compute = [n.name for n in model.graph.node
               if n.op_type in ("Conv", "Gemm", "MatMul", "ConvTranspose") and n.name and any(i in inits for i in n.input[1:2])]
    if not compute:
        return []
    return list(dict.fromkeys([compute[0], compute[-1]]))


def static_recipe(model) -> tuple[list[str] | None, str]:
    """(op types static INT8 quantizes, the recipe in words) for ``model``: attention models (an op of
    :data:`ATTENTION_ONNX_OPS` present) get the matrix products only, other models every op type
    ONNX Runtime's QDQ quantizer supports (None)."""
    attention_ops = sorted(op for op in onnx_prep.op_counts(model) if op in ATTENTION_ONNX_OPS)
    if not attention_ops:
        return None, "all op types ONNX Runtime's QDQ quantizer supports"
    op_types = list(TRANSFORMER_STATIC_OP_TYPES)
    return op_types, (f"attention model ({', '.join(attention_ops)} present): only {', '.join(op_types)} quantized; "
                      f"masks, softmax, normalisation and residual adds stay float")


def qdq_quantize(src: Path, out: Path, reader, *, failure: str, int8_format: str, per_channel: bool,
                 reduce_range: bool, op_types: list[str] | None, calib_method: str = "minmax",
                 calib_percentile: float | None = None, nodes: list[str] | None = None,
                 exclude: list[str] | None = None, cache: Path | None = None) -> None:
    """ONNX Runtime ``quantize_static`` of ``src`` into ``out`` in QDQ format: int8 weights, uint8
    (``u8s8``) or int8 (``s8s8``) activations, ranges calibrated with ``calib_method`` from
    ``reader`` (None: from ``cache``, a calibration cache written by an earlier call).

    ``nodes`` limits quantization to those nodes, ``exclude`` keeps those in float. Any error of
    the quantizer raises :class:`CompressionError` ``"{failure}: {first line}"``.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calib_method]
    extra = {"CalibPercentile": float(calib_percentile)} if calib_method == "percentile" else {}
    cache_kw = {}
    if cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters:
        cache_kw["calibration_cache_path"] = str(cache)
    try:
        with quiet_ort_logging():
            quantize_static(
                str(src), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8 if int8_format == "u8s8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, calibrate_method=method, op_types_to_quantize=op_types,
                nodes_to_quantize=nodes, nodes_to_exclude=exclude or None, extra_options=extra, **cache_kw,
            )
    except Exception as exc:  # ORT's quantizer raises arbitrary types; re-raised as one clear error
        raise CompressionError(f"{failure}: {one_line(exc)}") from exc


def _exclusions(model, pre_model, exclude_layers, default_exclusions: bool,
                warnings_: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(node names to keep in float, layer -> its nodes) in the pre-processed graph ``pre_model``."""
    if exclude_layers:
        excluded, mapping, missing = map_exclusions(pre_model, exclude_layers)
        if missing:
            # names may have changed in pre-processing: try the model before it
            nodes_before, map_before, missing = map_exclusions(model, missing)
            present = {n.name for n in pre_model.graph.node}
            excluded = sorted(set(excluded) | {n for n in nodes_before if n in present})
            mapping.update({k: [n for n in v if n in present] for k, v in map_before.items()})
        if missing:
            warnings_.append(f"ONNX side: no node for {', '.join(map(repr, missing))}; not kept FP32 there")
        return excluded, mapping
    if default_exclusions:
        excluded = _default_mixed_exclusions(pre_model)
        return excluded, {n: [n] for n in excluded}
    return [], {}


def quantize_onnx_static(src: Path, out: Path, batches: list[dict], cfg: CompressionConfig,
                         exclude_layers: tuple[str, ...] | list[str] = (),
                         default_exclusions: bool = False, specs=None,
                         measure=None) -> tuple[dict[str, Any], list[str]]:
    """Static QDQ quantization of ``src`` into ``out``; returns (details, warnings).

    Steps: constants -> initializers, opset >= 13 (or per-tensor fallback), ``quant_pre_process``,
    calibration over ``batches`` (feed dicts) with ``cfg.calib_method``, ``quantize_static``
    in QDQ format with the format :func:`choose_int8_format` picks, or, for ``int8_format="measure"``,
    the one :mod:`.int8_choice` measures on ``measure`` (:class:`~.int8_choice.MeasureInputs`, or a
    ``(None, why not)`` pair). Raises ``CompressionError`` when ONNX Runtime's quantizer fails.
    """
    from .int8_choice import quantize_measured

    warnings_: list[str] = []
    model = onnx_prep.load_model(src)
    model, prep = onnx_prep.prepare_for_quantization(model, per_channel=cfg.per_channel)
    warnings_.extend(prep.warnings)
    per_channel = bool(cfg.per_channel and prep.per_channel_possible)
    fmt, reduce_range, why = choose_int8_format("auto" if cfg.int8_format == "measure" else cfg.int8_format)
    op_types, recipe = static_recipe(model)
    choice = None
    with tempfile.TemporaryDirectory(prefix="slimbench-q-", dir=str(out.parent)) as tmp:
        tmpdir = Path(tmp)
        pre_path = preprocess(model, tmpdir, warnings_)
        excluded, mapping = _exclusions(model, onnx_prep.load_model(pre_path), exclude_layers, default_exclusions,
                                        warnings_)
        cache = tmpdir / "calibration.json"

        def run(candidate, path: Path) -> None:  # the first call calibrates; later ones read the cache
            qdq_quantize(pre_path, path, None if cache.is_file() else calibration_reader(batches),
                         int8_format=candidate.int8_format, per_channel=per_channel,
                         reduce_range=candidate.reduce_range, op_types=op_types, calib_method=cfg.calib_method,
                         calib_percentile=cfg.calib_percentile, exclude=excluded, cache=cache,
                         failure=f"ONNX Runtime quantize_static ({cfg.calib_method}, {candidate.int8_format}) "
                                 f"failed on {src.name}")

        if cfg.int8_format == "measure":
            inputs, note = measure if isinstance(measure, tuple) else (measure, None if measure else "no data given")
            fmt, reduce_range, why, choice = quantize_measured((fmt, reduce_range, why), run, out, pre_path, tmpdir,
                                                               inputs, note)
        else:
            from .int8_choice import Candidate

            run(Candidate(fmt, reduce_range, "asked for"), out)
        ranges = _ranges_summary(cache) if cache.exists() else None
    qmodel = onnx_prep.load_model(out)
    if ranges is None:
        ranges = ranges_from_qdq(qmodel)
    details = {
        "format": "QDQ",
        "int8_format": fmt,
        "int8_format_reason": why,
        "reduce_range": reduce_range,
        **({"int8_choice": choice} if choice is not None else {}),
        "per_channel": per_channel,
        "recipe": recipe,
        "op_types_to_quantize": op_types or "all supported",
        "prep": prep.to_dict(),
        "calibration": {"method": cfg.calib_method, "samples": _count(batches, specs),
                        "batches": len(batches), "batch_size": _count(batches[:1], specs),
                        **({"percentile": float(cfg.calib_percentile)} if cfg.calib_method == "percentile" else {}),
                        "ranges": ranges},
        "excluded_nodes": excluded,
        "excluded_layers": mapping,
        **qdq_summary(qmodel),
        "tensorrt_note": ("TensorRT accepts only symmetric INT8 Q/DQ (int8, zero point 0); this file's activations "
                          "are asymmetric, so ONNX Runtime's TensorRT provider leaves its Q/DQ nodes to CUDA; the "
                          "tensorrt backend calibrates its own INT8 engine instead"),
    }
    if cfg.per_channel and not per_channel:
        warnings_.append("per-channel weights were asked for but the model's opset could not be upgraded: weights are per-tensor")
    recurrent = {op: n for op, n in onnx_prep.op_counts(model).items() if op in ("LSTM", "GRU", "RNN")}
    if recurrent:
        warnings_.append(f"{', '.join(f'{n} {op}' for op, n in sorted(recurrent.items()))} node(s) stay FP32: ONNX "
                         "Runtime's static (QDQ) quantization has no INT8 recurrent layers; int8-dynamic quantizes LSTMs")
    return details, warnings_

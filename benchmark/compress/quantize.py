"""Precision compressions: ``fp16``, ``bf16``, ``int8-dynamic``, ``int8-static`` and ``mixed``.

Each registered function ``fn(variant, cfg, ctx) -> Variant`` builds both sides of a variant
where it can:

- the **ONNX side** (``onnx_path``, run by ONNX Runtime / TensorRT): a new ONNX file written to
  ``ctx.workdir``, checked with ``onnx.checker`` and test-run once with ONNX Runtime on CPU (finite
  outputs) before it is returned; a model that fails either raises :class:`CompressionError`;
- the **PyTorch side** (``torch_module`` + ``torch_precision``, run by the PyTorch backend).

A side that could not be built, or on which nothing was converted, is set to ``None`` and a warning
in the record says why (the backend then skips that side with that reason). When neither side
changed anything, the variant keeps its input model unchanged and the record has
``changed=False`` with a summary saying so. The input variant is never modified.

Conventions recorded in ``CompressionRecord.details``:

- ``onnx.quantized_ops``: op type -> number of nodes running in INT8: static QDQ nodes whose inputs
  all come from ``DequantizeLinear`` and whose output is re-quantized (see :func:`qdq_summary`), or
  the integer kernels dynamic quantization inserts; ``onnx.float_ops``: compute nodes left in float.
- ``onnx.qdq``: counts of ``QuantizeLinear`` / ``DequantizeLinear`` nodes; each activation
  ``QuantizeLinear`` is one Q/DQ pair, weights are stored as INT8 initializers behind a lone
  ``DequantizeLinear``.
- ``onnx.calibration``: method, samples, batch size, and the ranges observed (number of tensors,
  smallest min, largest max, and the first few tensors' ``[min, max]``).
- ``onnx.int8_format``: ``u8s8`` (uint8 activations, int8 weights) or ``s8s8`` and why it was chosen.
- ``onnx.recipe``: which op types static INT8 quantized. Attention models (Softmax/LayerNorm in the
  graph) get MatMul/Gemm/Conv only; other models every op type ORT's QDQ quantizer supports.
- ``onnx.prep``: what :mod:`benchmark.compress.onnx_prep` did first (Constant weights moved to
  initializers, opset upgrade, constant folding, nodes inside If/Loop subgraphs left float).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import io
import logging
import os
import platform
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..config import CompressionConfig
from ..errors import CompressionError, ConfigError, DataError, ExportError
from ..models.base import CompressionRecord, Variant
from . import onnx_prep
from .base import CompressContext, register_compression

log = logging.getLogger(__name__)

#: Ops kept in FP32 by the ``mixed`` fp16/bf16 recipe on top of ONNX Runtime's default block list:
#: reductions, exponentials and normalisations whose FP16 results lose accuracy or overflow.
SENSITIVE_OPS = (
    "Softmax", "LogSoftmax", "LayerNormalization", "SimplifiedLayerNormalization",
    "SkipLayerNormalization", "InstanceNormalization", "GroupNormalization", "ReduceMean",
    "ReduceSum", "ReduceL2", "ReduceLogSumExp", "Pow", "Exp", "Log", "Sqrt", "Reciprocal", "Erf",
)
#: Op types ONNX Runtime's dynamic quantizer turns into integer kernels by default here. ``Conv``
#: is left out on purpose: ``ConvInteger`` runs slower than FP32 Conv on x86 CPUs.
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "Attention", "LSTM")
#: Static QDQ recipe for attention models: only the weight-bearing matrix products. Quantizing the
#: additive attention mask, softmax, layer norms or residual adds collapses accuracy (a -1e4 mask
#: in the same uint8 range as the attention scores leaves the scores a single level).
TRANSFORMER_STATIC_OP_TYPES = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Attention")
#: Op types whose presence marks a model as attention-based (ONNX graph / PyTorch modules).
_ATTENTION_ONNX_OPS = ("Softmax", "LayerNormalization", "Attention", "MultiHeadAttention", "SkipLayerNormalization")
_ATTENTION_TORCH_MODULES = ("LayerNorm", "MultiheadAttention", "Softmax", "TransformerEncoderLayer", "TransformerDecoderLayer")
#: Nodes produced by dynamic quantization that do integer math.
_DYNAMIC_INT_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention", "DynamicQuantizeLSTM",
                    "ConvInteger", "QGemm", "MatMulIntegerToFloat")
_Q_OPS = ("QuantizeLinear", "DequantizeLinear")
#: Weight-bearing ops ONNX Runtime runs in INT8 from dequantized inputs even with a float output.
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Ops that move data but compute nothing (not reported as "left in float").
_PLUMBING_OPS = ("Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Reshape", "Concat", "Cast",
                 "Identity", "Flatten", "Transpose", "Slice", "ConstantOfShape", "Expand", "Range")
_BF16_ORT_REASON = (
    "ONNX Runtime's CPU provider has no BF16 kernels for MatMul/Add/Relu and ONNX Conv has no BF16 "
    "type, so no BF16 ONNX file is produced: ONNX Runtime/TensorRT runs of this variant are skipped"
)


# ---------------------------------------------------------------------------------------------
# Small helpers


@contextlib.contextmanager
def _quiet_torch_ao():
    """Silence torch.ao.quantization's deprecation and observer warnings (it still works)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*must run observer before calling calculate_qparams", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions .* are deprecated", category=UserWarning)
        yield


@contextlib.contextmanager
def _quiet_ort_logging():
    """ORT's quantizer logs advice through the root logger and prints calibration progress to
    stdout; keep both out of the user's console (and out of a job's event stream)."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(previous)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "model"


def _out_path(ctx: CompressContext, variant: Variant, cfg: CompressionConfig, method: str, source: Path | None) -> Path:
    """A file name unique to (model, input variant, config, method, source file)."""
    digest = hashlib.sha256(f"{cfg!r}|{method}|{source}".encode()).hexdigest()[:10]
    name = f"{_slug(variant.model.name)}-{_slug(variant.name)}-{method}-{digest}.onnx"
    out = Path(ctx.workdir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _source_onnx(variant: Variant, ctx: CompressContext) -> tuple[Path | None, str | None]:
    """The variant's ONNX file (exported from its module when missing) or ``(None, reason)``."""
    if variant.onnx_path is not None:
        return Path(variant.onnx_path), None
    if variant.torch_module is None:
        return None, "the variant has no ONNX file and no PyTorch module to export"
    from ..models.export import ensure_onnx

    probe = dataclasses.replace(variant)  # ensure_onnx records the path on the variant it gets
    try:
        return Path(ensure_onnx(probe, ctx.workdir)), None
    except ExportError as exc:
        return None, f"ONNX export failed ({_first_line(exc)})"


def _torch_ok(variant: Variant) -> tuple[bool, str | None]:
    if variant.torch_module is None:
        return False, "the variant has no PyTorch module"
    if variant.torch_precision != "fp32":
        return False, f"its PyTorch module already runs in {variant.torch_precision}"
    return True, None


def _is_script(module) -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)


def _numpy_feeds_to_torch(feeds: dict, variant: Variant) -> tuple:
    from ..models.base import feeds_to_tensors

    return feeds_to_tensors(feeds, variant.model.inputs)


def _torch_outputs(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _torch_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _torch_outputs(o)]
    return []


def _torch_finite(module, args) -> tuple[bool, str | None]:
    """Run ``module(*args)`` once without grad; (True, None) when every float output is finite."""
    import torch

    try:
        with torch.no_grad():
            outs = _torch_outputs(module(*args))
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AssertionError) as exc:
        return False, f"test inference failed: {_first_line(exc)}"
    for t in outs:
        if t.is_floating_point() and not bool(torch.isfinite(t.float()).all()):
            return False, "test inference gave NaN/Inf outputs"
    return True, None


def _fixed_batch(variant: Variant) -> int | None:
    """The fixed leading dim of the model's inputs, or None when the batch axis is dynamic."""
    for spec in variant.model.inputs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            return int(spec.shape[0])
    return None


def _batch_for(variant: Variant, wanted: int) -> int:
    """The batch size to feed: a fixed leading dim of any input wins, else ``wanted``."""
    fixed = _fixed_batch(variant)
    return fixed if fixed is not None else max(1, int(wanted))


def calibration_batches(data, variant: Variant, batch: int = 32) -> list[dict]:
    """``data`` cut into feed dicts of ``batch`` samples (the model's fixed batch size if it has one;
    then an incomplete last batch is dropped). ConfigError when not even one batch fits."""
    fixed = _fixed_batch(variant)
    size = fixed if fixed is not None else max(1, min(int(batch), len(data)))
    out = [feeds for feeds, _ in data.batches(size, drop_last=fixed is not None)]
    if not out:
        raise ConfigError(
            f"calibration data {data.name!r} holds {len(data)} samples; the model's fixed batch size is {size}: "
            f"give at least {size} samples"
        )
    return out


def _test_feeds(variant: Variant, ctx: CompressContext) -> tuple[dict | None, str | None]:
    """One batch to test-run a converted model: calibration data when it fits, else random feeds."""
    batch = _batch_for(variant, 2)
    if ctx.calib_data is not None:
        try:
            data = _fit_calibration(ctx.calib_data, variant)
        except ConfigError as exc:
            log.debug("calibration data unusable for the test run: %s", exc)
        else:
            for feeds, _ in data.batches(batch):
                return feeds, None
    try:
        return variant.model.example_inputs(batch_size=batch), None
    except ConfigError as exc:
        return None, f"not test-run: {_first_line(exc)}"


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _ort_errors() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as st

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(st, n) for n in names if hasattr(st, n)) + (RuntimeError, ValueError)


def validate_onnx(path: Path, feeds: dict | None, what: str) -> dict[str, Any]:
    """``onnx.checker`` + one ONNX Runtime CPU inference with finite outputs, else ``CompressionError``.

    Returns ``{"checked": True, "test_run": bool, "output_shapes": [...]}``.
    """
    import numpy as np

    onnx_prep.check_model(path, what)
    try:
        sess = _ort_session(path)
    except _ort_errors() as exc:
        raise CompressionError(f"{what} does not load in ONNX Runtime: {_first_line(exc)}") from exc
    if feeds is None:
        return {"checked": True, "test_run": False, "output_shapes": []}
    names = {i.name for i in sess.get_inputs()}
    try:
        outs = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    except _ort_errors() as exc:
        raise CompressionError(f"{what} fails a test inference in ONNX Runtime: {_first_line(exc)}") from exc
    for o in outs:
        arr = np.asarray(o)
        if arr.dtype.kind == "f" and not np.isfinite(arr.astype(np.float32)).all():
            raise CompressionError(f"{what} gives NaN/Inf outputs on a test batch; the conversion is not usable for this model")
    return {"checked": True, "test_run": True, "output_shapes": [list(np.asarray(o).shape) for o in outs]}


def _finish(variant: Variant, cfg: CompressionConfig, method: str, *, summary: str, details: dict,
            warnings_: list[str], torch_side: tuple[Any, str] | None, onnx_side: Path | None,
            torch_changed: bool, onnx_changed: bool, calib_data=None) -> Variant:
    """Assemble the output variant; unchanged sides are dropped unless nothing changed at all.
    ``calib_data``: the Dataset a static INT8 step calibrated on (kept on the variant)."""
    changed = bool(torch_changed or onnx_changed)
    if changed:
        torch_module, torch_precision = torch_side if (torch_changed and torch_side) else (None, "fp32")
        onnx_path = onnx_side if onnx_changed else None
    else:
        torch_module, torch_precision = variant.torch_module, variant.torch_precision
        onnx_path = variant.onnx_path
        summary = f"{method}: nothing converted, the model is unchanged ({summary})"
    record = CompressionRecord(method=method, changed=changed, summary=summary, details=details,
                               warnings=list(dict.fromkeys(warnings_)))
    return dataclasses.replace(
        variant, precision=method, torch_module=torch_module, torch_precision=torch_precision,
        onnx_path=onnx_path, records=list(variant.records) + [record],
        calib_data=calib_data if calib_data is not None else variant.calib_data,
    )


# ---------------------------------------------------------------------------------------------
# INT8 format and calibration data


def cpu_flags() -> set[str]:
    """The CPU feature flags (see :func:`benchmark.measure.environment.cpu_flags`)."""
    from ..measure.environment import cpu_flags as _flags

    return _flags()


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


def _fit_calibration(data, variant: Variant):
    """``data`` checked against the model's inputs (names, static dims, dtypes), else ConfigError."""
    from ..data import fit_to_inputs

    if len(data) == 0:
        raise ConfigError(f"calibration data {data.name!r} is empty (0 samples)")
    try:
        return fit_to_inputs(data, variant.model.inputs, where=f"calibration data {data.name!r} for {variant.model.name!r}")
    except DataError as exc:
        raise ConfigError(str(exc)) from None


def _calibration_set(variant: Variant, cfg: CompressionConfig, ctx: CompressContext, method: str):
    if ctx.calib_data is None:
        raise ConfigError(f"{method} needs calibration data: pass --data with a dataset or .npz of model inputs")
    data = _fit_calibration(ctx.calib_data, variant)
    return data.subset(int(cfg.calib_samples))


def _reader(batches: list[dict]):
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


# ---------------------------------------------------------------------------------------------
# ONNX graph summaries


def _count(batches: list[dict]) -> int:
    return sum(len(next(iter(b.values()))) for b in batches if b)


def _elem_types(model) -> dict[str, int]:
    types: dict[str, int] = {}
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


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


# ---------------------------------------------------------------------------------------------
# ONNX: static INT8 (QDQ)


def _ranges_from_qdq(model, limit: int = 6) -> dict[str, Any]:
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


def _preprocess(src_model, workdir: Path, warnings_: list[str]) -> Path:
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
            with _quiet_ort_logging(), _in_dir(workdir):
                quant_pre_process(str(raw), str(out), **kwargs)
        except Exception as exc:  # ORT's pre-processing raises arbitrary types; the fallback is recorded
            last = exc
            continue
        if note:
            warnings_.append(f"{note} ({_first_line(last)})" if last else note)
        return out
    warnings_.append(f"quant_pre_process failed ({_first_line(last)}); quantizing the model without pre-processing")
    return raw


def _map_exclusions(model, layers) -> tuple[list[str], dict[str, list[str]], list[str]]:
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


def quantize_onnx_static(src: Path, out: Path, batches: list[dict], cfg: CompressionConfig,
                         exclude_layers: tuple[str, ...] | list[str] = (),
                         default_exclusions: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Static QDQ quantization of ``src`` into ``out``; returns (details, warnings).

    Steps: constants -> initializers, opset >= 13 (or per-tensor fallback), ``quant_pre_process``,
    calibration over ``batches`` (feed dicts) with ``cfg.calib_method``, ``quantize_static``
    in QDQ format with the format :func:`choose_int8_format` picks. Raises ``CompressionError``
    when ONNX Runtime's quantizer fails.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    warnings_: list[str] = []
    model = onnx_prep.load_model(src)
    model, prep = onnx_prep.prepare_for_quantization(model, per_channel=cfg.per_channel)
    warnings_.extend(prep.warnings)
    per_channel = bool(cfg.per_channel and prep.per_channel_possible)
    fmt, reduce_range, why = choose_int8_format(cfg.int8_format)
    attention_ops = sorted(op for op in onnx_prep.op_counts(model) if op in _ATTENTION_ONNX_OPS)
    if attention_ops:
        op_types = list(TRANSFORMER_STATIC_OP_TYPES)
        recipe = (f"attention model ({', '.join(attention_ops)} present): only {', '.join(op_types)} quantized; "
                  f"masks, softmax, normalisation and residual adds stay float")
    else:
        op_types = None
        recipe = "all op types ONNX Runtime's QDQ quantizer supports"
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.calib_method]
    extra: dict[str, Any] = {}
    if cfg.calib_method == "percentile":
        extra["CalibPercentile"] = float(cfg.calib_percentile)
    with tempfile.TemporaryDirectory(prefix="slimbench-q-", dir=str(out.parent)) as tmp:
        tmpdir = Path(tmp)
        pre_path = _preprocess(model, tmpdir, warnings_)
        pre_model = onnx_prep.load_model(pre_path)
        excluded: list[str] = []
        mapping: dict[str, list[str]] = {}
        if exclude_layers:
            excluded, mapping, missing = _map_exclusions(pre_model, exclude_layers)
            if missing:
                # names may have changed in pre-processing: try the model before it
                nodes_before, map_before, missing = _map_exclusions(model, missing)
                present = {n.name for n in pre_model.graph.node}
                excluded = sorted(set(excluded) | {n for n in nodes_before if n in present})
                mapping.update({k: [n for n in v if n in present] for k, v in map_before.items()})
            if missing:
                warnings_.append(f"ONNX side: no node for {', '.join(map(repr, missing))}; not kept FP32 there")
        elif default_exclusions:
            excluded = _default_mixed_exclusions(pre_model)
            mapping = {n: [n] for n in excluded}
        cache = tmpdir / "calibration.json"
        reader = _reader(batches)
        cache_kw = {"calibration_cache_path": str(cache)} if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {}
        try:
            with _quiet_ort_logging():
                quantize_static(
                    str(pre_path), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8 if fmt == "u8s8" else QuantType.QInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method,
                    nodes_to_exclude=excluded or None, extra_options=extra, op_types_to_quantize=op_types,
                    **cache_kw,
                )
        except Exception as exc:  # ORT's quantizer raises arbitrary types; re-raised as one clear error
            raise CompressionError(
                f"ONNX Runtime quantize_static ({cfg.calib_method}, {fmt}) failed on {src.name}: {_first_line(exc)}"
            ) from exc
        ranges = _ranges_summary(cache) if cache.exists() else None
    qmodel = onnx_prep.load_model(out)
    if ranges is None:
        ranges = _ranges_from_qdq(qmodel)
    details = {
        "format": "QDQ",
        "int8_format": fmt,
        "int8_format_reason": why,
        "reduce_range": reduce_range,
        "per_channel": per_channel,
        "recipe": recipe,
        "op_types_to_quantize": op_types or "all supported",
        "prep": prep.to_dict(),
        "calibration": {"method": cfg.calib_method, "samples": _count(batches),
                        "batches": len(batches), "batch_size": _count(batches[:1]),
                        **({"percentile": float(cfg.calib_percentile)} if cfg.calib_method == "percentile" else {}),
                        "ranges": ranges},
        "excluded_nodes": excluded,
        "excluded_layers": mapping,
        **qdq_summary(qmodel),
    }
    details["tensorrt_note"] = ("TensorRT accepts only symmetric INT8 Q/DQ (int8, zero point 0); this file's "
                                "activations are asymmetric, so ONNX Runtime's TensorRT provider leaves its Q/DQ "
                                "nodes to CUDA; the tensorrt backend calibrates its own INT8 engine instead")
    if cfg.per_channel and not per_channel:
        warnings_.append("per-channel weights were asked for but the model's opset could not be upgraded: weights are per-tensor")
    return details, warnings_


# ---------------------------------------------------------------------------------------------
# PyTorch: static INT8 (FX graph mode)


def is_attention_module(module) -> list[str]:
    """Names of the attention-model building blocks found in ``module`` (empty for CNNs/MLPs)."""
    kinds = sorted({type(m).__name__ for m in module.modules() if type(m).__name__ in _ATTENTION_TORCH_MODULES})
    return kinds


def _qconfig_mapping(cfg: CompressionConfig, engine: str, weights_only_layers: bool = False):
    import torch
    import torch.nn as nn
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver

    mapping = get_default_qconfig_mapping(engine)
    default = get_default_qconfig(engine)
    keywords = getattr(getattr(default.activation, "p", None), "keywords", None) or {}
    rr = bool(keywords.get("reduce_range", False))
    if cfg.calib_method == "minmax":
        observer = "MinMaxObserver"
        qc = QConfig(activation=MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=rr), weight=default.weight)
        mapping = mapping.set_global(qc)
    else:
        observer = "HistogramObserver (L2-error range search; torch has no entropy/percentile observer)"
        qc = QConfig(activation=HistogramObserver.with_args(dtype=torch.quint8, reduce_range=rr), weight=default.weight)
        mapping = mapping.set_global(qc)
    if weights_only_layers:
        mapping = QConfigMapping()
        for kind in (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d):
            mapping = mapping.set_object_type(kind, qc)
    return mapping, observer, rr


def _module_kinds(module) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, m in module.named_modules():
        mod = type(m).__module__
        if (mod.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
                and type(m).__name__ not in ("LinearPackedParams", "EmbeddingPackedParams", "Dropout", "Quantize", "DeQuantize")):
            out[type(m).__name__] = out.get(type(m).__name__, 0) + 1
    return dict(sorted(out.items()))


def _default_torch_exclusions(module) -> list[str]:
    import torch.nn as nn

    layers = [n for n, m in module.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and n]
    return list(dict.fromkeys([layers[0], layers[-1]])) if layers else []


def quantize_torch_static(variant: Variant, cfg: CompressionConfig, batches: list[dict],
                          exclude_modules: list[str] | tuple[str, ...] = ()) -> tuple[Any, dict[str, Any], list[str]]:
    """FX graph-mode static INT8 (x86/fbgemm) calibrated on ``batches``: ``(module or None, details, warnings)``.

    ``prepare_fx`` fuses conv-bn-relu (BatchNorm folded into the conv in eval mode); observers
    collect activation ranges over ``batches``; ``convert_fx`` produces quantized modules. A model FX
    cannot trace (data-dependent control flow, TorchScript, ...) gives ``None`` and the reason.
    """
    import torch
    import torch.nn as nn

    warnings_: list[str] = []
    details: dict[str, Any] = {}
    ok, why = _torch_ok(variant)
    if not ok:
        return None, {"skipped": why}, [f"PyTorch side not quantized: {why}"]
    module = variant.torch_module
    if _is_script(module):
        reason = "FX graph mode cannot trace a TorchScript module"
        return None, {"skipped": reason}, [f"PyTorch side not quantized: {reason}; PyTorch runs of this variant are skipped"]
    engines = torch.backends.quantized.supported_engines
    engine = "x86" if "x86" in engines else ("fbgemm" if "fbgemm" in engines else None)
    if engine is None:
        reason = f"this torch build has no x86/fbgemm quantized engine (engines: {', '.join(engines)})"
        return None, {"skipped": reason}, [f"PyTorch side not quantized: {reason}"]
    batches = [_numpy_feeds_to_torch(feeds, variant) for feeds in batches]
    previous_engine = torch.backends.quantized.engine
    try:
        with _quiet_torch_ao():
            from torch.ao.quantization import quantize_fx

            torch.backends.quantized.engine = engine
            attention = is_attention_module(module)
            qmapping, observer, rr = _qconfig_mapping(cfg, engine, weights_only_layers=bool(attention))
            details["recipe"] = (
                f"attention model ({', '.join(attention)}): only Linear/Conv modules quantized; adds, masks, "
                f"softmax and norms stay float" if attention else "torch's default x86 qconfig mapping"
            )
            names = dict(module.named_modules())
            missing = [m for m in exclude_modules if m not in names]
            kept = [m for m in exclude_modules if m in names]
            for m in kept:
                qmapping = qmapping.set_module_name(m, None)
            if missing:
                warnings_.append(f"PyTorch side: no module named {', '.join(map(repr, missing))}; not excluded there")
            float_copy = copy.deepcopy(module).eval()
            bn_before = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in float_copy.modules())
            prepared = quantize_fx.prepare_fx(float_copy, qmapping, batches[0])
            fused = [n for n, m in prepared.named_modules() if type(m).__module__.startswith("torch.ao.nn.intrinsic")]
            bn_after = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in prepared.modules())
            with torch.no_grad():
                for args in batches:
                    prepared(*args)
            converted = quantize_fx.convert_fx(prepared)
            ok, why = _torch_finite(converted, batches[0])
    except (torch.fx.proxy.TraceError, RuntimeError, TypeError, AttributeError, NotImplementedError,
            AssertionError, ValueError, KeyError, IndexError) as exc:
        reason = f"FX graph-mode quantization failed: {type(exc).__name__}: {_first_line(exc)}"
        return None, {"skipped": reason}, [f"PyTorch side not quantized: {reason}; PyTorch runs of this variant are skipped"]
    finally:
        torch.backends.quantized.engine = previous_engine
    if not ok:
        return None, {"skipped": why}, [f"PyTorch side not quantized: FX-quantized module {why}"]
    kinds = _module_kinds(converted)
    details.update({
        "api": "torch.ao.quantization FX (prepare_fx/convert_fx)",
        "engine": engine,
        "observer": observer,
        "activation_reduce_range": rr,
        "fused_modules": len(fused),
        "fused": fused,
        "batchnorms_folded": bn_before - bn_after,
        "quantized_modules": sum(kinds.values()),
        "quantized_module_types": kinds,
        "excluded_modules": kept,
        "calibration_batches": len(batches),
    })
    if not kinds:
        warnings_.append("PyTorch side: FX quantized no module (no Conv/Linear reached by the quantizer)")
        return None, details, warnings_
    return converted, details, warnings_


# ---------------------------------------------------------------------------------------------
# Registered compressions


def _fp16_onnx(src: Path, out: Path, op_block: list[str], node_block: list[str], feeds) -> tuple[dict[str, Any], list[str]]:
    """FP16 ONNX with float32 inputs/outputs; ops ORT's CPU provider cannot run in FP16 are added to
    the block list (one retry per op type) and reported."""
    from onnx import TensorProto
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx_prep.load_model(src)
    model, n_const = onnx_prep.constants_to_initializers(model)
    blocked = list(dict.fromkeys(op_block))
    added: list[str] = []
    warnings_: list[str] = []
    for _ in range(8):
        try:
            converted = onnx_prep.topological_sort(convert_float_to_float16(
                onnx_prep.copy_model(model), keep_io_types=True, op_block_list=blocked,
                node_block_list=list(node_block) or None,
            ))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CompressionError(f"FP16 conversion of {src.name} failed: {_first_line(exc)}") from exc
        onnx_prep.save_model(converted, out)
        try:
            check = validate_onnx(out, feeds, "FP16 ONNX model")
            break
        except CompressionError as exc:
            m = re.search(r"Could not find an implementation for (\w+)\(", str(exc))
            if not m or m.group(1) in blocked:
                raise
            blocked.append(m.group(1))
            added.append(m.group(1))
    else:
        raise CompressionError(f"FP16 ONNX model of {src.name} still lacks CPU kernels after blocking {', '.join(added)}")
    if added:
        warnings_.append(f"kept in FP32 because ONNX Runtime's CPU provider has no FP16 kernel: {', '.join(added)}")
    types = _elem_types(converted)
    fp16_nodes: dict[str, int] = {}
    fp32_nodes: dict[str, int] = {}
    for n in converted.graph.node:
        outs = [types.get(o) for o in n.output]
        if n.op_type == "Cast":
            continue
        if TensorProto.FLOAT16 in outs:
            fp16_nodes[n.op_type] = fp16_nodes.get(n.op_type, 0) + 1
        elif TensorProto.FLOAT in outs:
            fp32_nodes[n.op_type] = fp32_nodes.get(n.op_type, 0) + 1
    casts_before = onnx_prep.op_counts(model).get("Cast", 0)
    details = {
        "keep_io_types": True,
        "op_block_list": blocked,
        "node_block_list": list(node_block),
        "ops_added_for_cpu": added,
        "fp16_nodes": sum(fp16_nodes.values()),
        "fp16_ops": dict(sorted(fp16_nodes.items())),
        "fp32_nodes": sum(fp32_nodes.values()),
        "fp32_ops": dict(sorted(fp32_nodes.items())),
        "casts_inserted": onnx_prep.op_counts(converted).get("Cast", 0) - casts_before,
        "fp16_initializers": sum(1 for i in converted.graph.initializer if i.data_type == TensorProto.FLOAT16),
        "constants_converted_to_initializers": n_const,
        "size_bytes_before": src.stat().st_size,
        "size_bytes_after": out.stat().st_size,
        **check,
    }
    return details, warnings_


def _default_fp16_block_list() -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return list(DEFAULT_OP_BLOCK_LIST)


def _torch_cast_copy(module, dtype) -> tuple[Any, int]:
    """A copy of ``module`` with float parameters/buffers in ``dtype``; returns (copy, tensors cast)."""
    m = copy.deepcopy(module)
    n = sum(1 for t in list(m.parameters()) + list(m.buffers()) if t.is_floating_point())
    with warnings.catch_warnings():  # ScriptModule.to() reads .grad of non-leaf tensors and warns
        warnings.filterwarnings("ignore", message=r".*\.grad attribute of a Tensor that is not a leaf", category=UserWarning)
        return m.to(dtype), n


def _fp_torch_side(variant: Variant, dtype_name: str, warnings_: list[str], ctx: CompressContext) -> tuple[Any, dict, bool]:
    import torch

    ok, why = _torch_ok(variant)
    if not ok:
        warnings_.append(f"PyTorch side not converted: {why}")
        return None, {"skipped": why}, False
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    try:
        module, n = _torch_cast_copy(variant.torch_module, dtype)
    except (RuntimeError, TypeError, copy.Error) as exc:
        reason = f"casting the module to {dtype_name} failed: {_first_line(exc)}"
        warnings_.append(f"PyTorch side not converted: {reason}")
        return None, {"skipped": reason}, False
    details = {"torch_precision": dtype_name, "tensors_cast": n,
               "note": f"weights and buffers stored in {dtype_name}; the PyTorch backend feeds {dtype_name} inputs"}
    feeds, note = _test_feeds(variant, ctx)
    if feeds is not None:
        args = tuple(a.to(dtype) if a.is_floating_point() else a for a in _numpy_feeds_to_torch(feeds, variant))
        fine, why = _torch_finite(module, args)
        if not fine:
            reason = f"the {dtype_name} module {why}"
            details["skipped"] = reason
            warnings_.append(f"PyTorch side not usable: {reason} (mixed precision with autocast may work)")
            return None, details, False
        details["test_run"] = True
    return module, details, n > 0


@register_compression("fp16")
def fp16(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """FP16: ONNX converted with float32 I/O and ORT's FP32 op block list; PyTorch weights in FP16."""
    warnings_: list[str] = []
    details: dict[str, Any] = {}
    ctx.progress("fp16: converting", None)
    torch_module, details["torch"], torch_changed = _fp_torch_side(variant, "fp16", warnings_, ctx)
    src, why = _source_onnx(variant, ctx)
    onnx_out, onnx_changed = None, False
    if src is None:
        warnings_.append(f"ONNX side not built: {why}")
        details["onnx"] = {"skipped": why}
    else:
        out = _out_path(ctx, variant, cfg, "fp16", src)
        feeds, note = _test_feeds(variant, ctx)
        if note:
            warnings_.append(note)
        details["onnx"], w = _fp16_onnx(src, out, _default_fp16_block_list(), [], feeds)
        warnings_.extend(w)
        onnx_out, onnx_changed = out, details["onnx"]["fp16_nodes"] > 0
        if not onnx_changed:
            warnings_.append("ONNX side: no node was converted to FP16")
    parts = []
    if onnx_changed:
        d = details["onnx"]
        parts.append(f"ONNX {d['fp16_nodes']} nodes FP16, {d['fp32_nodes']} kept FP32 "
                     f"(block list of {len(d['op_block_list'])} op types), float32 I/O")
    if torch_changed:
        parts.append(f"PyTorch {details['torch']['tensors_cast']} tensors in FP16")
    summary = "fp16: " + ("; ".join(parts) or "no float tensors found")
    return _finish(variant, cfg, "fp16", summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, "fp16"), onnx_side=onnx_out,
                   torch_changed=torch_changed, onnx_changed=onnx_changed)


@register_compression("bf16")
def bf16(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """BF16: PyTorch weights in bfloat16. No ONNX file: ONNX Runtime's CPU provider cannot run BF16."""
    warnings_: list[str] = []
    details: dict[str, Any] = {}
    torch_module, details["torch"], torch_changed = _fp_torch_side(variant, "bf16", warnings_, ctx)
    if not torch_changed:
        raise CompressionError(
            f"bf16 needs a PyTorch FP32 module ({details['torch'].get('skipped', 'nothing to cast')}) and "
            f"ONNX Runtime has no BF16 CPU kernels; use fp16 for ONNX models"
        )
    details["onnx"] = {"skipped": _BF16_ORT_REASON}
    warnings_.append(_BF16_ORT_REASON)
    summary = f"bf16: PyTorch {details['torch']['tensors_cast']} tensors in BF16; no ONNX file (ONNX Runtime cannot run BF16)"
    return _finish(variant, cfg, "bf16", summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, "bf16"), onnx_side=None,
                   torch_changed=True, onnx_changed=False)


@register_compression("int8-dynamic")
def int8_dynamic(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Dynamic INT8: weights INT8 ahead of time, activations quantized per batch at run time.

    ONNX: ``quantize_dynamic`` on MatMul/Gemm/Attention/LSTM with per-channel weights
    (``cfg.per_channel``); Conv is left in FP32 (``ConvInteger`` runs slower than FP32 on x86).
    PyTorch: ``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear`` (CPU only).
    """
    import torch
    import torch.nn as nn

    warnings_: list[str] = []
    details: dict[str, Any] = {}
    ctx.progress("int8-dynamic: quantizing", None)
    # PyTorch side
    torch_module, torch_changed = None, False
    ok, why = _torch_ok(variant)
    if not ok:
        details["torch"] = {"skipped": why}
        warnings_.append(f"PyTorch side not quantized: {why}")
    elif _is_script(variant.torch_module):
        why = "torch.ao quantize_dynamic cannot swap modules inside a TorchScript module"
        details["torch"] = {"skipped": why}
        warnings_.append(f"PyTorch side not quantized: {why}")
    else:
        module = variant.torch_module
        n_linear = sum(isinstance(m, nn.Linear) for m in module.modules())
        try:
            with _quiet_torch_ao():
                from torch.ao.nn.quantized.dynamic import Linear as DynLinear
                from torch.ao.quantization import quantize_dynamic

                q = quantize_dynamic(copy.deepcopy(module), {nn.Linear}, dtype=torch.qint8)
                n_q = sum(isinstance(m, DynLinear) for m in q.modules())
        except (RuntimeError, TypeError, AttributeError, AssertionError, copy.Error) as exc:
            why = f"quantize_dynamic failed: {_first_line(exc)}"
            details["torch"] = {"skipped": why}
            warnings_.append(f"PyTorch side not quantized: {why}")
        else:
            details["torch"] = {"api": "torch.ao.quantization.quantize_dynamic", "linear_modules": n_linear,
                                "linear_quantized": n_q, "dtype": "qint8", "device": "cpu only"}
            if n_q == 0:
                msg = ("no nn.Linear modules to quantize (conv-only network)" if n_linear == 0
                       else f"none of the {n_linear} nn.Linear modules could be quantized")
                details["torch"]["skipped"] = msg
                warnings_.append(f"PyTorch side: {msg}; nothing quantized there")
            else:
                feeds, note = _test_feeds(variant, ctx)
                fine, why = (True, None) if feeds is None else _torch_finite(q, _numpy_feeds_to_torch(feeds, variant))
                if fine:
                    torch_module, torch_changed = q, True
                else:
                    details["torch"]["skipped"] = why
                    warnings_.append(f"PyTorch side not usable: dynamically quantized module {why}")
    # ONNX side
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize_dynamic

    src, why = _source_onnx(variant, ctx)
    onnx_out, onnx_changed = None, False
    if src is None:
        warnings_.append(f"ONNX side not built: {why}")
        details["onnx"] = {"skipped": why}
    else:
        model = onnx_prep.load_model(src)
        model, prep = onnx_prep.prepare_for_quantization(model, per_channel=cfg.per_channel)
        warnings_.extend(prep.warnings)
        per_channel = bool(cfg.per_channel and prep.per_channel_possible)
        ops = onnx_prep.op_counts(model)
        op_types = list(DYNAMIC_OP_TYPES)
        if ops.get("Conv", 0):
            warnings_.append(
                f"{ops['Conv']} Conv nodes kept FP32: dynamic quantization would make them ConvInteger, which "
                f"runs slower than FP32 on x86 CPUs (use int8-static for conv nets)"
            )
        out = _out_path(ctx, variant, cfg, "int8-dynamic", src)
        with tempfile.TemporaryDirectory(prefix="slimbench-q-", dir=str(out.parent)) as tmp:
            pre = _preprocess(model, Path(tmp), warnings_)
            try:
                with _quiet_ort_logging():
                    ort_quantize_dynamic(str(pre), str(out), op_types_to_quantize=op_types, per_channel=per_channel,
                                         weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
            except Exception as exc:  # ORT's quantizer raises arbitrary types; re-raised as one clear error
                raise CompressionError(f"ONNX Runtime quantize_dynamic failed on {src.name}: {_first_line(exc)}") from exc
        qmodel = onnx_prep.load_model(out)
        summary_d = dynamic_summary(model, qmodel)
        feeds, note = _test_feeds(variant, ctx)
        if note:
            warnings_.append(note)
        check = validate_onnx(out, feeds, "dynamically quantized ONNX model")
        details["onnx"] = {"op_types_to_quantize": op_types, "per_channel": per_channel, "weight_type": "int8",
                           "prep": prep.to_dict(), **summary_d, **check}
        if summary_d["nodes_quantized"]:
            onnx_out, onnx_changed = out, True
        else:
            warnings_.append(f"ONNX side: nothing quantized (no MatMul/Gemm/Attention/LSTM with constant weights; ops: "
                             f"{', '.join(f'{k} {v}' for k, v in ops.items())})")
    parts = []
    if onnx_changed:
        d = details["onnx"]
        parts.append(f"ONNX {d['nodes_quantized']} nodes INT8 ({', '.join(f'{k} {v}' for k, v in d['quantized_ops'].items())}), "
                     f"{'per-channel' if d['per_channel'] else 'per-tensor'} weights")
    if torch_changed:
        parts.append(f"PyTorch {details['torch']['linear_quantized']}/{details['torch']['linear_modules']} nn.Linear quantized")
    summary = "int8-dynamic: " + ("; ".join(parts) or "nothing quantized (no Linear/MatMul/Gemm layers)")
    return _finish(variant, cfg, "int8-dynamic", summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, "int8"), onnx_side=onnx_out,
                   torch_changed=torch_changed, onnx_changed=onnx_changed)


def _static(variant: Variant, cfg: CompressionConfig, ctx: CompressContext, method: str,
            exclude_layers: tuple[str, ...] = (), default_exclusions: bool = False) -> Variant:
    data = _calibration_set(variant, cfg, ctx, method)
    batches = calibration_batches(data, variant, 32)
    from ..results import calibration_warning

    few = calibration_warning({"calib_samples_used": len(data), "calib_samples_requested": int(cfg.calib_samples)})
    warnings_: list[str] = [few] if few else []
    details: dict[str, Any] = {}
    # ONNX side
    ctx.progress(f"{method}: calibrating ONNX ({cfg.calib_method}, {len(data)} samples)", None)
    src, why = _source_onnx(variant, ctx)
    onnx_out, onnx_changed = None, False
    if src is None:
        warnings_.append(f"ONNX side not built: {why}")
        details["onnx"] = {"skipped": why}
        if exclude_layers:
            _check_layers(variant, None, exclude_layers)
    else:
        if exclude_layers:
            _check_layers(variant, onnx_prep.load_model(src), exclude_layers)
        out = _out_path(ctx, variant, cfg, method, src)
        details["onnx"], w = quantize_onnx_static(src, out, batches, cfg, exclude_layers, default_exclusions)
        warnings_.extend(w)
        details["onnx"].update(validate_onnx(out, batches[0], "INT8 QDQ model"))
        if details["onnx"]["nodes_quantized"] > 0:
            onnx_out, onnx_changed = out, True
        else:
            warnings_.append("ONNX side: quantize_static inserted no Q/DQ around any compute node; nothing quantized")
        if default_exclusions and details["onnx"]["excluded_nodes"]:
            warnings_.append(f"no layers named to keep in FP32: kept the first and last weight layers "
                             f"({', '.join(details['onnx']['excluded_nodes'])}) in FP32")
    # PyTorch side
    ctx.progress(f"{method}: calibrating PyTorch FX", None)
    torch_excl: list[str] = []
    if exclude_layers and variant.torch_module is not None:
        torch_excl = [_torch_name(variant, layer) for layer in exclude_layers]
    elif default_exclusions and variant.torch_module is not None and not _is_script(variant.torch_module):
        torch_excl = _default_torch_exclusions(variant.torch_module)
    torch_module, details["torch"], w = quantize_torch_static(variant, cfg, batches, torch_excl)
    warnings_.extend(w)
    torch_changed = torch_module is not None
    parts = []
    if onnx_changed:
        d = details["onnx"]
        ops = ", ".join(f"{k} {v}" for k, v in d["quantized_ops"].items())
        parts.append(f"ONNX QDQ {d['int8_format'].upper()} {'per-channel' if d['per_channel'] else 'per-tensor'}, "
                     f"{cfg.calib_method} on {d['calibration']['samples']} samples: {d['nodes_quantized']} nodes INT8 ({ops}), "
                     f"{d['nodes_left_float']} left float, {d['qdq']['qdq_pairs']} Q/DQ pairs"
                     + (f", {len(d['excluded_nodes'])} kept FP32" if d["excluded_nodes"] else ""))
    if torch_changed:
        t = details["torch"]
        parts.append(f"PyTorch FX {t['quantized_modules']} modules INT8, {t['fused_modules']} fused"
                     + (f", {len(t['excluded_modules'])} kept FP32" if t["excluded_modules"] else ""))
    label = "mixed[int8]" if method == "mixed" else method
    summary = f"{label}: " + ("; ".join(parts) or "nothing quantized")
    return _finish(variant, cfg, method, summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, "int8"), onnx_side=onnx_out,
                   torch_changed=torch_changed, onnx_changed=onnx_changed, calib_data=data)


def _check_layers(variant: Variant, onnx_model, layers) -> None:
    """ConfigError when a layer to keep in FP32 names neither a PyTorch module nor an ONNX node."""
    torch_names: set[str] = set()
    if variant.torch_module is not None and not _is_script(variant.torch_module):
        torch_names = {n for n, _ in variant.torch_module.named_modules() if n}
    onnx_missing = set(layers)
    if onnx_model is not None:
        onnx_missing = set(onnx_prep.nodes_for_layers(onnx_model, layers)[1])
    nowhere = [layer for layer in layers if layer in onnx_missing and _torch_name(variant, layer) not in torch_names]
    if nowhere:
        known = sorted(torch_names)[:8] if torch_names else (onnx_prep.layer_names(onnx_model) if onnx_model is not None else [])
        raise ConfigError(
            f"layers to keep in FP32 not found: {', '.join(map(repr, nowhere))}; name PyTorch modules or ONNX "
            f"nodes, e.g. {', '.join(known) or 'none found'}"
        )


def _torch_name(variant: Variant, layer: str) -> str:
    """A PyTorch module path for ``layer`` (itself, or the module an ONNX node name points at)."""
    names = {n for n, _ in variant.torch_module.named_modules()} if not _is_script(variant.torch_module) else set()
    if layer in names:
        return layer
    if layer.startswith("/") and layer.count("/") >= 2:
        path = ".".join(p for p in layer.split("/")[1:-1] if p)
        if path in names:
            return path
    return layer


@register_compression("int8-static")
def int8_static(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Static INT8: activation ranges calibrated on ``ctx.calib_data`` ahead of time.

    ONNX: ``quant_pre_process`` -> ``quantize_static`` in QDQ format, per-channel weights
    (``cfg.per_channel``), ``cfg.calib_method`` (minmax / entropy / percentile with
    ``cfg.calib_percentile``), U8S8 or S8S8 (``cfg.int8_format``; ``auto`` reads the CPU flags).
    PyTorch: FX graph mode (``prepare_fx``/``convert_fx``, x86 engine, conv-bn-relu fused).
    """
    return _static(variant, cfg, ctx, "int8-static")


def _autocast_module(module, exclude: list[str]) -> tuple[Any, list[str], list[str]]:
    """A copy of ``module`` whose ``exclude`` submodules run with autocast disabled, in FP32."""
    import torch
    import torch.nn as nn

    class FP32Island(nn.Module):
        """Runs the wrapped module with autocast off and floating inputs cast to float32."""

        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            cast = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.autocast("cpu", enabled=False))
                if torch.cuda.is_available():
                    stack.enter_context(torch.autocast("cuda", enabled=False))
                return self.inner(*cast, **kwargs)

    if not exclude:
        return module, [], []
    m = copy.deepcopy(module)
    names = dict(m.named_modules())
    done, missing = [], []
    for name in exclude:
        if name not in names or not name:
            missing.append(name)
            continue
        parent_name, _, child = name.rpartition(".")
        parent = names[parent_name] if parent_name else m
        setattr(parent, child, FP32Island(names[name]))
        done.append(name)
    return m, done, missing


def _autocast_test_run(module, variant: Variant, ctx: CompressContext, base: str) -> tuple[bool, str | None]:
    import torch

    feeds, _ = _test_feeds(variant, ctx)
    if feeds is None:
        return True, None
    dtype = torch.float16 if base == "fp16" else torch.bfloat16
    with torch.autocast("cpu", dtype=dtype):
        return _torch_finite(module, _numpy_feeds_to_torch(feeds, variant))


@register_compression("mixed")
def mixed(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Mixed precision.

    ``mixed_base="int8"``: static INT8 with ``cfg.exclude_layers`` kept FP32 (module paths or ONNX
    node names); with no layers named, the first and last weight layers are kept FP32.
    ``"fp16"``/``"bf16"``: FP16 ONNX with an FP32 block list (ORT's default list +
    :data:`SENSITIVE_OPS` + the excluded layers) and PyTorch autocast at inference
    (``autocast-fp16``/``autocast-bf16``) with the excluded modules run in FP32.
    """
    if cfg.mixed_base == "int8":
        out = _static(variant, cfg, ctx, "mixed", tuple(cfg.exclude_layers), default_exclusions=not cfg.exclude_layers)
        rec = out.records[-1]
        rec.details["mixed_base"] = "int8"
        return out
    base = cfg.mixed_base
    warnings_: list[str] = []
    details: dict[str, Any] = {"mixed_base": base}
    # PyTorch side: autocast
    torch_module, torch_changed = None, False
    ok, why = _torch_ok(variant)
    if not ok:
        details["torch"] = {"skipped": why}
        warnings_.append(f"PyTorch side not built: {why}")
    else:
        excl = [_torch_name(variant, layer) for layer in cfg.exclude_layers]
        if excl and _is_script(variant.torch_module):
            warnings_.append("PyTorch side: excluded layers cannot be wrapped inside a TorchScript module; autocast applies to all of it")
            excl = []
        try:
            torch_module, done, missing = _autocast_module(variant.torch_module, excl)
        except (RuntimeError, TypeError, copy.Error) as exc:
            torch_module, done, missing = None, [], []
            warnings_.append(f"PyTorch side not built: {_first_line(exc)}")
        if missing:
            warnings_.append(f"PyTorch side: no module named {', '.join(map(repr, missing))}; not kept FP32 there")
        if torch_module is not None:
            fine, why = _autocast_test_run(torch_module, variant, ctx, base)
            if not fine:
                details["torch"] = {"skipped": why}
                warnings_.append(f"PyTorch side not usable: autocast-{base} {why}")
                torch_module = None
        if torch_module is not None:
            torch_changed = True
            details["torch"] = {"torch_precision": f"autocast-{base}", "modules_kept_fp32": done,
                                "note": "torch.autocast keeps its own FP32 op list (softmax, layer_norm, "
                                        "reductions, exp/log...) in FP32"}
    # ONNX side: FP16 with a block list
    src, why = _source_onnx(variant, ctx)
    onnx_out, onnx_changed = None, False
    if src is None:
        warnings_.append(f"ONNX side not built: {why}")
        details["onnx"] = {"skipped": why}
    else:
        src_model = onnx_prep.load_model(src)
        node_block: list[str] = []
        if cfg.exclude_layers:
            _check_layers(variant, src_model, cfg.exclude_layers)
            node_block, mapping, missing = _map_exclusions(src_model, cfg.exclude_layers)
            if missing:
                warnings_.append(f"ONNX side: no node for {', '.join(map(repr, missing))}; not kept FP32 there")
        out = _out_path(ctx, variant, cfg, f"mixed-{base}", src)
        feeds, note = _test_feeds(variant, ctx)
        if note:
            warnings_.append(note)
        op_block = list(dict.fromkeys(_default_fp16_block_list() + list(SENSITIVE_OPS)))
        details["onnx"], w = _fp16_onnx(src, out, op_block, node_block, feeds)
        warnings_.extend(w)
        details["onnx"]["sensitive_ops_kept_fp32"] = [op for op in SENSITIVE_OPS if op in onnx_prep.op_counts(src_model)]
        onnx_out, onnx_changed = out, details["onnx"]["fp16_nodes"] > 0
        if base == "bf16":
            warnings_.append("ONNX side is FP16 with the FP32 block list: ONNX Runtime has no BF16 CPU kernels")
    parts = []
    if onnx_changed:
        d = details["onnx"]
        kept = d["sensitive_ops_kept_fp32"] + ([f"{len(d['node_block_list'])} named nodes"] if d["node_block_list"] else [])
        parts.append(f"ONNX FP16 {d['fp16_nodes']} nodes, {d['fp32_nodes']} kept FP32"
                     + (f" ({', '.join(kept)})" if kept else ""))
    if torch_changed:
        t = details["torch"]
        parts.append(f"PyTorch autocast-{base}" + (f", {len(t['modules_kept_fp32'])} modules FP32" if t["modules_kept_fp32"] else ""))
    summary = f"mixed[{base}]: " + ("; ".join(parts) or "nothing converted")
    return _finish(variant, cfg, "mixed", summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, f"autocast-{base}"), onnx_side=onnx_out,
                   torch_changed=torch_changed, onnx_changed=onnx_changed)


__all__ = [
    "SENSITIVE_OPS", "DYNAMIC_OP_TYPES", "TRANSFORMER_STATIC_OP_TYPES", "bf16", "calibration_batches",
    "choose_int8_format", "cpu_flags", "dynamic_summary",
    "fp16", "int8_dynamic", "int8_static", "mixed", "qdq_summary", "quantize_onnx_static",
    "quantize_torch_static", "validate_onnx",
]

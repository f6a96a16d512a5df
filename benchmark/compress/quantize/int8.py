"""INT8 compressions: ``int8-dynamic`` (weights INT8 ahead of time, activations per batch) and
``int8-static`` (activation ranges calibrated ahead of time), each on the ONNX and PyTorch side."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ...config import CompressionConfig
from ...errors import CompressionError, ConfigError, one_line
from ...models.base import Variant
from ...results import calibration_warning
from .. import onnx_prep
from ..base import CompressContext, register_compression
from .common import (
    calibration_batches, calibration_set, finish, is_script, out_path, quiet_ort_logging, source_onnx, test_feeds,
    validate_onnx,
)
from .onnx_int8 import DYNAMIC_OP_TYPES, dynamic_summary, preprocess, quantize_onnx_static
from .torch_int8 import default_torch_exclusions, quantize_torch_dynamic, quantize_torch_static

def _onnx_dynamic(variant: Variant, cfg: CompressionConfig, ctx: CompressContext, warnings_: list[str],
                  details: dict[str, Any]) -> Path | None:
    """ONNX side of ``int8-dynamic`` (its details in ``details["onnx"]``): the quantized file, or None
    when nothing was quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize_dynamic

    src = source_onnx(variant, ctx, warnings_, details)
    if src is None:
        return None
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
    out = out_path(ctx, variant, cfg, "int8-dynamic", src)
    with tempfile.TemporaryDirectory(prefix="slimbench-q-", dir=str(out.parent)) as tmp:
        pre = preprocess(model, Path(tmp), warnings_)
        try:
            with quiet_ort_logging():
                ort_quantize_dynamic(str(pre), str(out), op_types_to_quantize=op_types, per_channel=per_channel,
                                     weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": True})
        except Exception as exc:  # ORT's quantizer raises arbitrary types; re-raised as one clear error
            raise CompressionError(f"ONNX Runtime quantize_dynamic failed on {src.name}: {one_line(exc)}") from exc
    summary = dynamic_summary(model, onnx_prep.load_model(out))
    feeds, note = test_feeds(variant, ctx)
    if note:
        warnings_.append(note)
    check = validate_onnx(out, feeds, "dynamically quantized ONNX model")
    details["onnx"] = {"op_types_to_quantize": op_types, "per_channel": per_channel, "weight_type": "int8",
                       "prep": prep.to_dict(), **summary, **check}
    if summary["nodes_quantized"]:
        return out
    warnings_.append(f"ONNX side: nothing quantized (no MatMul/Gemm/Attention/LSTM with constant weights; ops: "
                     f"{', '.join(f'{k} {v}' for k, v in ops.items())})")
    return None


@register_compression("int8-dynamic")
def int8_dynamic(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Dynamic INT8: weights INT8 ahead of time, activations quantized per batch at run time.

    ONNX: ``quantize_dynamic`` on MatMul/Gemm/Attention/LSTM with per-channel weights
    (``cfg.per_channel``); Conv is left in FP32 (``ConvInteger`` runs slower than FP32 on x86).
    PyTorch: ``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear``, ``nn.LSTM`` and ``nn.GRU`` (CPU only).
    """
    details: dict[str, Any] = {}
    ctx.progress("int8-dynamic: quantizing", None)
    torch_module, details["torch"], warnings_ = quantize_torch_dynamic(variant, ctx)
    onnx_out = _onnx_dynamic(variant, cfg, ctx, warnings_, details)
    parts = []
    if onnx_out is not None:
        d = details["onnx"]
        parts.append(f"ONNX {d['nodes_quantized']} nodes INT8 ({', '.join(f'{k} {v}' for k, v in d['quantized_ops'].items())}), "
                     f"{'per-channel' if d['per_channel'] else 'per-tensor'} weights")
    if torch_module is not None:
        t = details["torch"]
        parts.append(f"PyTorch {t['linear_quantized']}/{t['linear_modules']} nn.Linear"
                     + (f" and {t['recurrent_quantized']}/{t['recurrent_modules']} LSTM/GRU" if t["recurrent_modules"] else "")
                     + " quantized")
    summary = "int8-dynamic: " + ("; ".join(parts) or "nothing quantized (no Linear/MatMul/Gemm layers)")
    return finish(variant, cfg, "int8-dynamic", summary=summary, details=details, warnings_=warnings_,
                  torch_side=(torch_module, "int8"), onnx_side=onnx_out,
                  torch_changed=torch_module is not None, onnx_changed=onnx_out is not None)


def static_int8(variant: Variant, cfg: CompressionConfig, ctx: CompressContext, method: str,
            exclude_layers: tuple[str, ...] = (), default_exclusions: bool = False) -> Variant:
    data = calibration_set(variant, cfg, ctx, method)
    batches = calibration_batches(data, variant, 32)
    few = calibration_warning({"calib_samples_used": len(data), "calib_samples_requested": int(cfg.calib_samples)})
    warnings_: list[str] = [few] if few else []
    details: dict[str, Any] = {}
    # ONNX side
    ctx.progress(f"{method}: calibrating ONNX ({cfg.calib_method}, {len(data)} samples)", None)
    src = source_onnx(variant, ctx, warnings_, details)
    onnx_out, onnx_changed = None, False
    if src is None:
        if exclude_layers:
            check_layers(variant, None, exclude_layers)
    else:
        if exclude_layers:
            check_layers(variant, onnx_prep.load_model(src), exclude_layers)
        out = out_path(ctx, variant, cfg, method, src)
        measure = None
        if cfg.int8_format == "measure":
            from .int8_choice import measure_inputs

            ctx.progress(f"{method}: timing and scoring the INT8 formats on the evaluation data", None)
            measure = measure_inputs(variant, ctx.eval_data, getattr(ctx, "threads", 0), getattr(ctx, "metric", None),
                                     getattr(ctx, "output_kind", None))
        details["onnx"], w = quantize_onnx_static(src, out, batches, cfg, exclude_layers, default_exclusions,
                                                  specs=variant.model.inputs, measure=measure)
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
        torch_excl = [torch_name(variant, layer) for layer in exclude_layers]
    elif default_exclusions and variant.torch_module is not None and not is_script(variant.torch_module):
        torch_excl = default_torch_exclusions(variant.torch_module)
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
    return finish(variant, cfg, method, summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, "int8"), onnx_side=onnx_out,
                   torch_changed=torch_changed, onnx_changed=onnx_changed, calib_data=data)


def check_layers(variant: Variant, onnx_model, layers) -> None:
    """ConfigError when a layer to keep in FP32 names neither a PyTorch module nor an ONNX node."""
    torch_names: set[str] = set()
    if variant.torch_module is not None and not is_script(variant.torch_module):
        torch_names = {n for n, _ in variant.torch_module.named_modules() if n}
    onnx_missing = set(layers)
    if onnx_model is not None:
        onnx_missing = set(onnx_prep.nodes_for_layers(onnx_model, layers)[1])
    nowhere = [layer for layer in layers if layer in onnx_missing and torch_name(variant, layer) not in torch_names]
    if nowhere:
        known = sorted(torch_names)[:8] if torch_names else (onnx_prep.layer_names(onnx_model) if onnx_model is not None else [])
        raise ConfigError(
            f"layers to keep in FP32 not found: {', '.join(map(repr, nowhere))}; name PyTorch modules or ONNX "
            f"nodes, e.g. {', '.join(known) or 'none found'}"
        )


def torch_name(variant: Variant, layer: str) -> str:
    """A PyTorch module path for ``layer`` (itself, or the module an ONNX node name points at)."""
    names = {n for n, _ in variant.torch_module.named_modules()} if not is_script(variant.torch_module) else set()
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
    ``cfg.calib_percentile``), U8S8 or S8S8 (``cfg.int8_format``: ``measure`` times and scores the
    candidates on ``ctx.eval_data``, :mod:`.int8_choice`; ``auto`` reads the CPU flags).
    PyTorch: FX graph mode (``prepare_fx``/``convert_fx``, x86 engine, conv-bn-relu fused).
    """
    return static_int8(variant, cfg, ctx, "int8-static")

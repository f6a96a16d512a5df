"""PyTorch INT8: static FX graph-mode quantization (x86/fbgemm engine, calibrated observers) and
dynamic quantization of ``nn.Linear`` modules."""
from __future__ import annotations

import copy
from typing import Any

from ...config import CompressionConfig
from ...errors import one_line
from ...models.base import Variant
from ..base import CompressContext
from .common import feeds_to_torch, is_script, quiet_torch_ao, test_feeds, torch_finite, torch_ok

_ATTENTION_TORCH_MODULES = ("LayerNorm", "MultiheadAttention", "Softmax", "TransformerEncoderLayer", "TransformerDecoderLayer")


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


def default_torch_exclusions(module) -> list[str]:
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
    ok, why = torch_ok(variant)
    if not ok:
        return None, {"skipped": why}, [f"PyTorch side not quantized: {why}"]
    module = variant.torch_module
    if is_script(module):
        reason = "FX graph mode cannot trace a TorchScript module"
        return None, {"skipped": reason}, [f"PyTorch side not quantized: {reason}; PyTorch runs of this variant are skipped"]
    engines = torch.backends.quantized.supported_engines
    engine = "x86" if "x86" in engines else ("fbgemm" if "fbgemm" in engines else None)
    if engine is None:
        reason = f"this torch build has no x86/fbgemm quantized engine (engines: {', '.join(engines)})"
        return None, {"skipped": reason}, [f"PyTorch side not quantized: {reason}"]
    batches = [feeds_to_torch(feeds, variant) for feeds in batches]
    previous_engine = torch.backends.quantized.engine
    try:
        with quiet_torch_ao():
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
            ok, why = torch_finite(converted, batches[0])
    except (torch.fx.proxy.TraceError, RuntimeError, TypeError, AttributeError, NotImplementedError,
            AssertionError, ValueError, KeyError, IndexError) as exc:
        reason = f"FX graph-mode quantization failed: {type(exc).__name__}: {one_line(exc)}"
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


def quantize_torch_dynamic(variant: Variant, ctx: CompressContext) -> tuple[Any, dict[str, Any], list[str]]:
    """``torch.ao.quantization.quantize_dynamic`` of the variant's ``nn.Linear``, ``nn.LSTM`` and
    ``nn.GRU`` modules (CPU only): ``(module or None, details, warnings)``; None with the reason when
    nothing usable came out."""
    import torch
    import torch.nn as nn

    ok, why = torch_ok(variant)
    if ok and is_script(variant.torch_module):
        ok, why = False, "torch.ao quantize_dynamic cannot swap modules inside a TorchScript module"
    if not ok:
        return None, {"skipped": why}, [f"PyTorch side not quantized: {why}"]
    module = variant.torch_module
    n_linear = sum(isinstance(m, nn.Linear) for m in module.modules())
    n_rnn = sum(isinstance(m, (nn.LSTM, nn.GRU)) for m in module.modules())
    try:
        with quiet_torch_ao():
            from torch.ao.nn.quantized import dynamic as qdyn
            from torch.ao.quantization import quantize_dynamic

            q = quantize_dynamic(copy.deepcopy(module), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)
            n_q = sum(isinstance(m, qdyn.Linear) for m in q.modules())
            n_rnn_q = sum(isinstance(m, (qdyn.LSTM, qdyn.GRU)) for m in q.modules())
    except (RuntimeError, TypeError, AttributeError, AssertionError, copy.Error) as exc:
        why = f"quantize_dynamic failed: {one_line(exc)}"
        return None, {"skipped": why}, [f"PyTorch side not quantized: {why}"]
    details = {"api": "torch.ao.quantization.quantize_dynamic", "linear_modules": n_linear,
               "linear_quantized": n_q, "recurrent_modules": n_rnn, "recurrent_quantized": n_rnn_q,
               "dtype": "qint8", "device": "cpu only"}
    if n_q + n_rnn_q == 0:
        msg = ("no nn.Linear, LSTM or GRU modules to quantize (conv-only network)" if n_linear + n_rnn == 0
               else f"none of the {n_linear + n_rnn} nn.Linear/LSTM/GRU modules could be quantized")
        details["skipped"] = msg
        return None, details, [f"PyTorch side: {msg}; nothing quantized there"]
    feeds, _ = test_feeds(variant, ctx)
    fine, why = (True, None) if feeds is None else torch_finite(q, feeds_to_torch(feeds, variant))
    if not fine:
        details["skipped"] = why
        return None, details, [f"PyTorch side not usable: dynamically quantized module {why}"]
    return q, details, []

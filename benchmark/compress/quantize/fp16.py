"""FP16 and BF16: an FP16 ONNX file with float32 I/O and an FP32 block list, PyTorch weights cast to
FP16/BF16 (no BF16 ONNX file: ONNX Runtime's CPU provider has no BF16 kernels)."""
from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path
from typing import Any

from ...config import CompressionConfig
from ...errors import CompressionError, one_line
from ...models.base import Variant
from ...onnx_graph import copy_model
from .. import onnx_prep
from ..base import CompressContext, register_compression
from .common import feeds_to_torch, finish, out_path, source_onnx, test_feeds, torch_finite, torch_ok, validate_onnx

#: Ops kept in FP32 by the ``mixed`` fp16/bf16 recipe on top of ONNX Runtime's default block list:
#: reductions, exponentials and normalisations whose FP16 results lose accuracy or overflow.
SENSITIVE_OPS = (
    "Softmax", "LogSoftmax", "LayerNormalization", "SimplifiedLayerNormalization",
    "SkipLayerNormalization", "InstanceNormalization", "GroupNormalization", "ReduceMean",
    "ReduceSum", "ReduceL2", "ReduceLogSumExp", "Pow", "Exp", "Log", "Sqrt", "Reciprocal", "Erf",
)


_BF16_ORT_REASON = (
    "ONNX Runtime's CPU provider has no BF16 kernels for MatMul/Add/Relu and ONNX Conv has no BF16 "
    "type, so no BF16 ONNX file is produced: ONNX Runtime/TensorRT runs of this variant are skipped"
)


def _elem_types(model) -> dict[str, int]:
    types: dict[str, int] = {}
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    return types


def fp16_onnx(src: Path, out: Path, op_block: list[str], node_block: list[str], feeds) -> tuple[dict[str, Any], list[str]]:
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
                copy_model(model), keep_io_types=True, op_block_list=blocked,
                node_block_list=list(node_block) or None,
            ))
        except (ValueError, RuntimeError, KeyError) as exc:
            raise CompressionError(f"FP16 conversion of {src.name} failed: {one_line(exc)}") from exc
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


def default_fp16_block_list() -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return list(DEFAULT_OP_BLOCK_LIST)


def _torch_cast_copy(module, dtype) -> tuple[Any, int]:
    """A copy of ``module`` with float parameters/buffers in ``dtype``; returns (copy, tensors cast)."""
    m = copy.deepcopy(module)
    n = sum(1 for t in list(m.parameters()) + list(m.buffers()) if t.is_floating_point())
    with warnings.catch_warnings():  # ScriptModule.to() reads .grad of non-leaf tensors and warns
        warnings.filterwarnings("ignore", message=r".*\.grad attribute of a Tensor that is not a leaf", category=UserWarning)
        return m.to(dtype), n


def fp_torch_side(variant: Variant, dtype_name: str, warnings_: list[str], ctx: CompressContext) -> tuple[Any, dict, bool]:
    import torch

    ok, why = torch_ok(variant)
    if not ok:
        warnings_.append(f"PyTorch side not converted: {why}")
        return None, {"skipped": why}, False
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    try:
        module, n = _torch_cast_copy(variant.torch_module, dtype)
    except (RuntimeError, TypeError, copy.Error) as exc:
        reason = f"casting the module to {dtype_name} failed: {one_line(exc)}"
        warnings_.append(f"PyTorch side not converted: {reason}")
        return None, {"skipped": reason}, False
    details = {"torch_precision": dtype_name, "tensors_cast": n,
               "note": f"weights and buffers stored in {dtype_name}; the PyTorch backend feeds {dtype_name} inputs"}
    feeds, note = test_feeds(variant, ctx)
    if feeds is not None:
        args = tuple(a.to(dtype) if a.is_floating_point() else a for a in feeds_to_torch(feeds, variant))
        fine, why = torch_finite(module, args)
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
    torch_module, details["torch"], torch_changed = fp_torch_side(variant, "fp16", warnings_, ctx)
    src = source_onnx(variant, ctx, warnings_, details)
    onnx_out, onnx_changed = None, False
    if src is not None:
        out = out_path(ctx, variant, cfg, "fp16", src)
        feeds, note = test_feeds(variant, ctx)
        if note:
            warnings_.append(note)
        details["onnx"], w = fp16_onnx(src, out, default_fp16_block_list(), [], feeds)
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
    return finish(variant, cfg, "fp16", summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, "fp16"), onnx_side=onnx_out,
                   torch_changed=torch_changed, onnx_changed=onnx_changed)


@register_compression("bf16")
def bf16(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """BF16: PyTorch weights in bfloat16. No ONNX file: ONNX Runtime's CPU provider cannot run BF16."""
    warnings_: list[str] = []
    details: dict[str, Any] = {}
    torch_module, details["torch"], torch_changed = fp_torch_side(variant, "bf16", warnings_, ctx)
    if not torch_changed:
        raise CompressionError(
            f"bf16 needs a PyTorch FP32 module ({details['torch'].get('skipped', 'nothing to cast')}) and "
            f"ONNX Runtime has no BF16 CPU kernels; use fp16 for ONNX models"
        )
    details["onnx"] = {"skipped": _BF16_ORT_REASON}
    warnings_.append(_BF16_ORT_REASON)
    summary = f"bf16: PyTorch {details['torch']['tensors_cast']} tensors in BF16; no ONNX file (ONNX Runtime cannot run BF16)"
    return finish(variant, cfg, "bf16", summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, "bf16"), onnx_side=None,
                   torch_changed=True, onnx_changed=False)

"""Mixed precision: static INT8 with chosen layers kept FP32, or FP16 ONNX with an FP32 block list
plus PyTorch autocast with chosen modules run in FP32."""
from __future__ import annotations

import contextlib
import copy
from typing import Any

from ...config import CompressionConfig
from ...errors import one_line
from ...models.base import Variant
from .. import onnx_prep
from ..base import CompressContext, register_compression
from .common import feeds_to_torch, finish, is_script, out_path, source_onnx, test_feeds, torch_finite, torch_ok
from .fp16 import SENSITIVE_OPS, default_fp16_block_list, fp16_onnx
from .int8 import check_layers, static_int8, torch_name
from .onnx_int8 import map_exclusions

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

    feeds, _ = test_feeds(variant, ctx)
    if feeds is None:
        return True, None
    dtype = torch.float16 if base == "fp16" else torch.bfloat16
    with torch.autocast("cpu", dtype=dtype):
        return torch_finite(module, feeds_to_torch(feeds, variant))


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
        out = static_int8(variant, cfg, ctx, "mixed", tuple(cfg.exclude_layers), default_exclusions=not cfg.exclude_layers)
        rec = out.records[-1]
        rec.details["mixed_base"] = "int8"
        return out
    base = cfg.mixed_base
    warnings_: list[str] = []
    details: dict[str, Any] = {"mixed_base": base}
    # PyTorch side: autocast
    torch_module, torch_changed = None, False
    ok, why = torch_ok(variant)
    if not ok:
        details["torch"] = {"skipped": why}
        warnings_.append(f"PyTorch side not built: {why}")
    else:
        excl = [torch_name(variant, layer) for layer in cfg.exclude_layers]
        if excl and is_script(variant.torch_module):
            warnings_.append("PyTorch side: excluded layers cannot be wrapped inside a TorchScript module; autocast applies to all of it")
            excl = []
        try:
            torch_module, done, missing = _autocast_module(variant.torch_module, excl)
        except (RuntimeError, TypeError, copy.Error) as exc:
            torch_module, done, missing = None, [], []
            warnings_.append(f"PyTorch side not built: {one_line(exc)}")
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
    src = source_onnx(variant, ctx, warnings_, details)
    onnx_out, onnx_changed = None, False
    if src is not None:
        src_model = onnx_prep.load_model(src)
        node_block: list[str] = []
        if cfg.exclude_layers:
            check_layers(variant, src_model, cfg.exclude_layers)
            node_block, mapping, missing = map_exclusions(src_model, cfg.exclude_layers)
            if missing:
                warnings_.append(f"ONNX side: no node for {', '.join(map(repr, missing))}; not kept FP32 there")
        out = out_path(ctx, variant, cfg, f"mixed-{base}", src)
        feeds, note = test_feeds(variant, ctx)
        if note:
            warnings_.append(note)
        op_block = list(dict.fromkeys(default_fp16_block_list() + list(SENSITIVE_OPS)))
        details["onnx"], w = fp16_onnx(src, out, op_block, node_block, feeds)
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
    return finish(variant, cfg, "mixed", summary=summary, details=details, warnings_=warnings_,
                   torch_side=(torch_module, f"autocast-{base}"), onnx_side=onnx_out,
                   torch_changed=torch_changed, onnx_changed=onnx_changed)

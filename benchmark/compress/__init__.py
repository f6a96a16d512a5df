"""Compressions: each takes a variant (+ data) and returns a new variant plus a record of what it did.

``build_variant`` applies the steps a :class:`~benchmark.config.CompressionConfig` asks for, in
order: pruning -> low-rank -> distillation -> precision (fp16, bf16, int8-dynamic, int8-static,
mixed). FP32 is the reference and adds no step.
"""
from __future__ import annotations

import dataclasses

from ..config import CompressionConfig
from ..errors import ConfigError
from ..models.base import LoadedModel, Variant
from .base import COMPRESSIONS, CompressContext, register_compression

_BUILTIN_MODULES = ("quantize", "prune", "decompose", "distill")


def _load_builtins() -> None:
    import importlib

    for name in _BUILTIN_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def compression_names() -> list[str]:
    _load_builtins()
    return COMPRESSIONS.names()


def reference_variant(model: LoadedModel) -> Variant:
    """The uncompressed FP32 variant of ``model`` (what every other variant is compared with)."""
    return Variant(
        name="fp32", model=model, precision="fp32", torch_module=model.torch_module,
        torch_precision="fp32", onnx_path=model.onnx_path, config=CompressionConfig(),
    )


def plan_steps(cfg: CompressionConfig) -> list[str]:
    """Registered compression names applied for ``cfg``, in order."""
    steps = []
    if cfg.prune_ratio > 0:
        steps.append(f"prune-{cfg.prune_kind}")
    if cfg.lowrank_applies:
        steps.append("lowrank")
    if cfg.distill_applies:
        steps.append("distill")
    if cfg.precision != "fp32":
        steps.append(cfg.precision)
    return steps


def build_variant(model: LoadedModel, cfg: CompressionConfig, ctx: CompressContext, base: Variant | None = None) -> Variant:
    """Build the variant ``cfg`` describes from ``model``; raises CompressionError/ConfigError on failure.

    The variant is named after ``cfg`` and keeps ``cfg`` as its config. ``precision`` is the precision
    asked for (a backend such as TensorRT applies it itself from the FP32 graph). ``prune_ratio`` and
    ``prune_kind`` are what the pruning step applied: 0 and None when it removed nothing. A step that
    changed nothing leaves its ``changed=False`` record in ``records``; callers report it (the sweep
    puts a warning and ``compressed_as_asked=False`` on the rows) instead of labelling the model as
    compressed.

    ``base``: a variant built from ``model`` whose steps are the first steps of ``cfg``'s (a pruned,
    distilled model to quantize next); only the remaining steps run. ConfigError otherwise.
    """
    _load_builtins()
    variant = reference_variant(model)
    steps = plan_steps(cfg)
    if base is not None:
        done = plan_steps(base.config) if base.config is not None else []
        if steps[:len(done)] != done:
            raise ConfigError(f"cannot build {cfg.name} from {base.name}: its steps ({', '.join(done) or 'none'}) "
                              f"are not the first steps of {', '.join(steps) or 'none'}")
        variant, steps = base, steps[len(done):]
    for i, step in enumerate(steps):
        ctx.progress(f"{step}: building {cfg.name}", i / max(len(steps), 1))
        variant = COMPRESSIONS.get(step)(variant, cfg, ctx)
    pruned = any(r.changed and r.method.startswith("prune-") for r in variant.records)
    return dataclasses.replace(
        variant, name=cfg.name, precision=cfg.precision, config=cfg,
        prune_ratio=variant.prune_ratio if pruned else 0.0, prune_kind=variant.prune_kind if pruned else None,
    )


__all__ = [
    "COMPRESSIONS", "CompressContext", "build_variant", "compression_names", "plan_steps",
    "reference_variant", "register_compression",
]

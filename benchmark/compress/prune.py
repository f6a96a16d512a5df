"""Pruning: magnitude masks (unstructured) and channel removal (structured, Torch-Pruning).

Two registered compressions, both ``fn(variant, cfg, ctx) -> Variant`` on an eager PyTorch module:

- ``prune-unstructured``: zeroes the ``cfg.prune_ratio`` smallest-magnitude weights of every
  Conv/Linear layer, ranked over all layers together (``prune_scope="global"``) or per layer
  (``"layer"``), and makes the zeros permanent. Tensor shapes do not change, so dense runtimes do
  not run faster: the record says so and reports the sparsity achieved.
- ``prune-structured``: removes whole channels / hidden units with Torch-Pruning's dependency
  graph (coupled layers are pruned together so the model stays consistent: residual adds,
  concatenations, BatchNorm, flatten -> Linear). Each prunable group loses ``cfg.prune_ratio`` of
  its channels, ranked by L1 or L2 weight magnitude or BatchNorm scale. The classifier's output
  layer keeps its outputs; attention projections (``nn.MultiheadAttention``, Linear layers inside
  modules named ``*Attention*``/``*Attn*``, and Linear layers whose own name holds ``attention`` or
  ``attn``, as a converted ONNX graph names them) are left whole so heads stay intact.

Uploaded ONNX, TorchScript and ``.pt2`` models are pruned through their converted module
(:mod:`benchmark.models.conversion`), which holds ordinary Conv/Linear layers.

Counting convention: MACs at batch 1 from :func:`benchmark.measure.flops.count_torch` (one
multiply-add = one MAC, ``flops = 2 * macs``; only conv/linear/matmul/attention products count);
parameters are unique ``nn.Parameter`` elements.
"""
from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from typing import Any

from ..config import CompressionConfig
from ..errors import CompressionError, ConfigError, one_line
from ..models.base import CompressionRecord, LoadedModel, Variant
from ..registry import one_of
from .base import CompressContext, register_compression

IMPORTANCES = ("l1", "l2", "bn-scale")
SCOPES = ("global", "layer")
NO_SPEEDUP_NOTE = "zeros do not make dense runtimes faster; expect no measured speedup"
_ATTENTION_NAME = re.compile(r"attention|attn", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------
# Helpers shared by prune / decompose / distill


def eager_module(variant: Variant, what: str):
    """The module ``what`` (a compression) edits: ``variant.torch_module`` when it is an eager
    ``nn.Module``; for the uploaded TorchScript / ``.pt2`` module itself, the module converted from
    its ONNX export (:mod:`benchmark.models.conversion`); else a CompressionError with the reason
    (the conversion's own error where one was tried)."""
    import torch

    module = variant.torch_module
    model = variant.model
    converted = getattr(model, "converted_module", None)
    if converted is not None and module is model.torch_module:
        return converted
    if module is not None and not isinstance(module, torch.jit.ScriptModule) and isinstance(module, torch.nn.Module):
        return module
    error = getattr(model, "conversion_error", None)
    if error:
        raise CompressionError(f"{what} needs an editable PyTorch module: {error}")
    kind = "a TorchScript module" if module is not None else "an ONNX graph"
    raise CompressionError(f"{what} needs an editable PyTorch module and this variant holds {kind}; "
                           "a sweep converts ONNX, TorchScript and .pt2 models to one where it can")


def example_args(model: LoadedModel, batch_size: int | None = None, seed: int = 0) -> tuple:
    """Example inputs of ``model`` as a tuple of CPU tensors in input order (integer inputs stay
    integer), at ``batch_size``; by default 1, or the batch the model's inputs fix (a ``.pt2``
    program exported at one batch size, and its converted module, take no other)."""
    from ..data.base import fixed_batch

    if batch_size is None:
        batch_size = fixed_batch(model.inputs) or 1
    return model.example_tensors(batch_size, seed=seed)


def first_tensor(out):
    """The first tensor of a model output (a tensor, a tuple/list, or a dict of tensors)."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            found = first_tensor(item)
            if found is not None:
                return found
    if hasattr(out, "logits"):
        return out.logits
    return None


def output_shapes(module, args) -> list[tuple[int, ...]]:
    """Shapes of every tensor in ``module(*args)`` (no grad)."""
    import torch

    with torch.no_grad():
        out = module(*args)
    return [tuple(t.shape) for t in _flatten(out)]


def _flatten(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for item in out for t in _flatten(item)]
    return []


def count_params(module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    seen = {}
    for p in module.parameters():
        seen[id(p)] = p.numel()
    return int(sum(seen.values()))


def count_macs(module, args) -> int:
    """Multiply-accumulates of one forward pass with ``args`` (:func:`benchmark.measure.flops.count_torch`:
    conv/linear/matmul/attention products only, 1 MAC = 1 multiply-add)."""
    from ..errors import BenchmarkError
    from ..measure.flops import count_torch

    try:
        return int(count_torch(module, tuple(args), batch_size=len(args[0]) if args else 1).macs)
    except (BenchmarkError, RuntimeError, ValueError, TypeError) as exc:
        raise CompressionError(f"could not count MACs of the model: {one_line(exc, 200, typed=True)}") from None


def weight_layers(module) -> list[tuple[str, Any]]:
    """``(name, layer)`` for every Conv (any dim, incl. transposed) and Linear layer with a weight."""
    import torch.nn as nn

    out = []
    for name, m in module.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and isinstance(getattr(m, "weight", None), nn.Parameter):
            out.append((name, m))
    return out


def check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"prune ratio must be in [0, 1); got {ratio}")
    return ratio


def new_variant(variant: Variant, module, record: CompressionRecord, **changes) -> Variant:
    """A copy of ``variant`` holding ``module`` with ``record`` appended and no ONNX file (re-exported later)."""
    return dataclasses.replace(
        variant, torch_module=module, onnx_path=None, records=list(variant.records) + [record], **changes
    )


# ---------------------------------------------------------------------------------------------
# Unstructured


def prune_unstructured_module(module, ratio: float, scope: str = "global") -> dict[str, Any]:
    """Zero the ``ratio`` smallest-|w| weights of every Conv/Linear layer of ``module`` in place.

    ``scope="global"`` ranks all those weights together (layers end with different sparsities);
    ``"layer"`` prunes each layer by ``ratio``. Masks are made permanent (``prune.remove``).
    Returns the achieved sparsity: ``overall_sparsity`` and ``layers`` (name -> zeros/total/sparsity).
    """
    import torch
    from torch.nn.utils import prune

    ratio = check_ratio(ratio)
    one_of("prune scope", scope, SCOPES)
    layers = weight_layers(module)
    if not layers:
        raise CompressionError("unstructured pruning found no Conv/Linear layers with weights in this model")
    if ratio > 0:
        with torch.no_grad():
            if scope == "global":
                prune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=prune.L1Unstructured, amount=ratio)
            else:
                for _, m in layers:
                    prune.l1_unstructured(m, "weight", amount=ratio)
            for _, m in layers:
                prune.remove(m, "weight")
    return sparsity_report(module)


def sparsity_report(module) -> dict[str, Any]:
    """Share of exactly-zero weights per Conv/Linear layer and overall."""
    per_layer = {}
    zeros_total = 0
    count_total = 0
    for name, m in weight_layers(module):
        w = m.weight.detach()
        zeros = int((w == 0).sum())
        n = int(w.numel())
        per_layer[name or "<root>"] = {"zeros": zeros, "total": n, "sparsity": zeros / n if n else 0.0}
        zeros_total += zeros
        count_total += n
    return {
        "overall_sparsity": zeros_total / count_total if count_total else 0.0,
        "zeros": zeros_total,
        "weights": count_total,
        "layers": per_layer,
    }


@register_compression("prune-unstructured")
def prune_unstructured(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Magnitude (L1) unstructured pruning; see :func:`prune_unstructured_module`."""
    source = eager_module(variant, "unstructured pruning")
    ratio = check_ratio(cfg.prune_ratio)
    module = copy.deepcopy(source)
    if ratio == 0:
        rec = CompressionRecord("prune-unstructured", False, "unstructured pruning at ratio 0: no weights zeroed (model unchanged)",
                                {"ratio": 0.0, "scope": cfg.prune_scope})
        return new_variant(variant, module, rec)
    ctx.progress(f"unstructured pruning ({cfg.prune_scope}, ratio {ratio:g})", 0.0)
    stats = prune_unstructured_module(module, ratio, cfg.prune_scope)
    spars = [v["sparsity"] for v in stats["layers"].values()]
    summary = (
        f"unstructured L1 pruning ({cfg.prune_scope}) at ratio {ratio:g}: {stats['overall_sparsity']:.1%} of "
        f"{stats['weights']:,} Conv/Linear weights are zero (per layer {min(spars):.1%}-{max(spars):.1%}); "
        f"{NO_SPEEDUP_NOTE}"
    )
    rec = CompressionRecord(
        "prune-unstructured", True, summary,
        {"ratio": ratio, "scope": cfg.prune_scope, **stats},
        warnings=[f"unstructured pruning: {NO_SPEEDUP_NOTE}"],
    )
    ctx.progress("unstructured pruning done", 1.0)
    return new_variant(variant, module, rec, prune_ratio=ratio, prune_kind="unstructured")


# ---------------------------------------------------------------------------------------------
# Structured


def _importance(name: str, module):
    import torch.nn as nn
    import torch_pruning as tp

    one_of("prune importance", name, IMPORTANCES)
    if name == "l1":
        return tp.importance.MagnitudeImportance(p=1)
    if name == "l2":
        return tp.importance.MagnitudeImportance(p=2)
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        raise ConfigError("prune importance 'bn-scale' needs BatchNorm layers and this model has none; use l1 or l2")
    return tp.importance.BNScaleImportance()


def output_layers(module, args, num_classes: int | None) -> list[tuple[str, Any]]:
    """Layers whose outputs must keep their size: the one producing a model output directly, and
    the last Linear with ``out_features == num_classes``."""
    import torch
    import torch.nn as nn

    layers = weight_layers(module)
    produced: dict[int, tuple[str, Any]] = {}
    hooks = []

    def hook_for(name, layer):
        def _hook(_mod, _inp, out):
            if isinstance(out, torch.Tensor):
                produced[id(out)] = (name, layer)
        return _hook

    for name, layer in layers:
        hooks.append(layer.register_forward_hook(hook_for(name, layer)))
    try:
        with torch.no_grad():
            outs = _flatten(module(*args))
            keep = [produced[id(t)] for t in outs if id(t) in produced]
    finally:
        for h in hooks:
            h.remove()
    if num_classes:
        linears = [(n, m) for n, m in layers if isinstance(m, nn.Linear) and m.out_features == num_classes]
        if linears:
            keep.append(linears[-1])
    unique = {}
    for name, layer in keep:
        unique[id(layer)] = (name, layer)
    return list(unique.values())


def attention_layers(module) -> tuple[list[Any], list[str]]:
    """Modules left whole to keep attention heads consistent, and their names."""
    import torch.nn as nn

    found: dict[int, tuple[str, Any]] = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            found.setdefault(id(m), (name, m))
        elif _ATTENTION_NAME.search(type(m).__name__):
            for n, sub in m.named_modules():
                if isinstance(sub, nn.Linear):
                    found.setdefault(id(sub), (f"{name}.{n}" if n else name, sub))
        elif isinstance(m, nn.Linear) and _ATTENTION_NAME.search(name):
            # a converted ONNX graph: flat layers named after their nodes (/encoder/layer.0/attention/self/query/MatMul)
            found.setdefault(id(m), (name, m))
    return [m for _, m in found.values()], [n for n, _ in found.values()]


def _channels(module) -> dict[str, tuple[int, int]]:
    import torch.nn as nn

    out = {}
    for name, m in weight_layers(module):
        if isinstance(m, nn.Linear):
            out[name] = (m.in_features, m.out_features)
        else:
            out[name] = (m.in_channels, m.out_channels)
    return out


def macs_or_none(module, args, notes: list[str]) -> int | None:
    """:func:`count_macs`, or None with a note when the counter cannot trace the model."""
    try:
        return count_macs(module, args)
    except CompressionError as exc:
        notes.append(str(exc))
        return None


def _build_pruner(module, args, imp, ratio: float, ignored: list, round_to: int | None = None):
    import torch
    import torch_pruning as tp

    return tp.pruner.BasePruner(
        module, example_inputs=args, importance=imp, pruning_ratio=ratio, round_to=round_to,
        ignored_layers=ignored, in_channel_groups={}, out_channel_groups={}, num_heads={},
        forward_fn=lambda m, x: m(*x), output_transform=_flatten,
        root_module_types=[torch.nn.modules.conv._ConvNd, torch.nn.Linear],
    )


def _runs_like(module, args, shapes) -> bool:
    try:
        return output_shapes(module, args) == shapes
    except RuntimeError:
        return False


def prune_structured_module(
    module,
    args: tuple,
    ratio: float,
    importance: str = "l2",
    num_classes: int | None = None,
    max_attempts: int = 8,
    round_to: int | None = None,
):
    """Remove ``ratio`` of the channels of every prunable group of a copy of ``module`` (Torch-Pruning).

    ``args`` are example inputs (a tuple of tensors, passed as ``module(*args)``). Groups are pruned
    one at a time and the model is run after each; a group whose pruning breaks the model (a
    coupling the tracer got wrong, e.g. a concatenation followed by a flatten) is left unpruned
    and named in ``groups_skipped``, and pruning restarts from the original without it.

    ``round_to``: keep each pruned layer's channel count a multiple of this (Torch-Pruning's
    ``round_to``; kernels of some runtimes run faster on multiples of 8 or 16).

    Returns ``(pruned_module, stats)``: params and MACs (at the batch of ``args``) before/after and
    their ratios, per-layer in/out channels that changed, the protected output layers, the
    attention layers left whole.
    """
    import torch

    ratio = check_ratio(ratio)
    imp = _importance(importance, module)
    module.eval()
    notes: list[str] = []
    shapes_before = output_shapes(module, args)
    params_before = count_params(module)
    macs_before = macs_or_none(module, args, notes)
    channels_before = _channels(module)
    skipped: list[str] = []
    tracer_warnings: set[str] = set()
    pruned = copy.deepcopy(module)
    protected_names: list[str] = []
    attn_names: list[str] = []
    for _attempt in range(max_attempts):
        pruned = copy.deepcopy(module)
        protected = output_layers(pruned, args, num_classes)
        protected_names = [n for n, _ in protected]
        attn, attn_names = attention_layers(pruned)
        ignored = [m for _, m in protected] + attn + [pruned.get_submodule(n) for n in skipped]
        if ratio == 0:
            break
        broken = None
        try:
            with torch.enable_grad(), warnings.catch_warnings(record=True) as wlist:
                warnings.simplefilter("always")
                pruner = _build_pruner(pruned, args, imp, ratio, ignored, round_to)
                names = pruner.DG._module2name
                for group in pruner.step(interactive=True):
                    root = names.get(group[0].dep.target.module)
                    group.prune()
                    if not _runs_like(pruned, args, shapes_before):
                        broken = root
                        break
            tracer_warnings.update(one_line(w.message, 200) for w in wlist)
        except (RuntimeError, ValueError, AssertionError, IndexError, TypeError, KeyError) as exc:
            raise CompressionError(
                f"structured pruning failed while building or applying the dependency graph: "
                f"{one_line(exc, 200, typed=True)}; try unstructured pruning or low-rank"
            ) from None
        if broken is None:
            break
        if not broken or broken in skipped:
            raise CompressionError(
                "structured pruning broke the model at a channel group the tracer could not attribute to a layer; "
                "try unstructured pruning or low-rank"
            )
        skipped.append(broken)
    else:
        raise CompressionError(
            f"structured pruning kept breaking the model after leaving {len(skipped)} groups unpruned "
            f"({', '.join(skipped)}); try unstructured pruning or low-rank"
        )
    pruned.eval()
    channels_after = _channels(pruned)
    changed_layers = {
        name: {"in_before": b[0], "in_after": channels_after[name][0], "out_before": b[1], "out_after": channels_after[name][1]}
        for name, b in channels_before.items()
        if name in channels_after and channels_after[name] != b
    }
    params_after = count_params(pruned)
    macs_after = macs_or_none(pruned, args, notes)
    stats = {
        "ratio": ratio,
        "importance": importance,
        "params_before": params_before,
        "params_after": params_after,
        "params_ratio": params_after / params_before if params_before else None,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "macs_ratio": macs_after / macs_before if macs_before and macs_after is not None else None,
        "macs_counter": "benchmark.measure.flops.count_torch at batch 1 (1 MAC = 1 multiply-add)",
        "out_channels_removed": sum(v["out_before"] - v["out_after"] for v in changed_layers.values()),
        "out_channels_total": sum(b[1] for b in channels_before.values()),
        "layers": changed_layers,
        "protected_layers": protected_names,
        "attention_layers_kept": attn_names,
        "groups_skipped": skipped,
        "notes": notes,
        "tracer_warnings": sorted(tracer_warnings),
    }
    return pruned, stats


def _fmt_count(n) -> str:
    return "?" if n is None else f"{n:,}"


@register_compression("prune-structured")
def prune_structured(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Channel pruning with Torch-Pruning; see :func:`prune_structured_module`."""
    source = eager_module(variant, "structured pruning")
    ratio = check_ratio(cfg.prune_ratio)
    one_of("prune importance", cfg.prune_importance, IMPORTANCES)
    if ratio == 0:
        rec = CompressionRecord("prune-structured", False, "structured pruning at ratio 0: no channels removed (model unchanged)",
                                {"ratio": 0.0, "importance": cfg.prune_importance})
        return new_variant(variant, copy.deepcopy(source), rec)
    ctx.progress(f"structured pruning ({cfg.prune_importance}, ratio {ratio:g})", 0.0)
    args = example_args(variant.model)
    module, stats = prune_structured_module(source, args, ratio, cfg.prune_importance, variant.model.num_classes)
    rec_warnings = list(stats["notes"])
    if stats["attention_layers_kept"]:
        rec_warnings.append(
            f"structured pruning left {len(stats['attention_layers_kept'])} attention layer(s) whole "
            f"(heads, head dims and the embedding width are not pruned): {', '.join(stats['attention_layers_kept'][:6])}"
        )
    if stats["groups_skipped"]:
        rec_warnings.append(
            "structured pruning left the channel groups of " + ", ".join(stats["groups_skipped"])
            + " unpruned: pruning them broke the model (a coupling the dependency tracer got wrong)"
        )
    changed = stats["params_after"] < stats["params_before"]
    if changed:
        macs = (f"MACs {_fmt_count(stats['macs_before'])} -> {_fmt_count(stats['macs_after'])}"
                + (f" ({stats['macs_ratio']:.2f}x)" if stats["macs_ratio"] is not None else " (not countable)"))
        summary = (
            f"structured pruning ({cfg.prune_importance}, ratio {ratio:g}): removed {stats['out_channels_removed']:,} of "
            f"{stats['out_channels_total']:,} output channels in {len(stats['layers'])} layers; params "
            f"{stats['params_before']:,} -> {stats['params_after']:,} ({stats['params_ratio']:.2f}x), {macs}"
        )
    else:
        summary = (f"structured pruning ({cfg.prune_importance}, ratio {ratio:g}) found no prunable channel group "
                   "(every group touches a protected output or attention layer): model unchanged")
    rec = CompressionRecord("prune-structured", changed, summary, stats, warnings=rec_warnings)
    ctx.progress("structured pruning done", 1.0)
    if not changed:
        return new_variant(variant, module, rec)
    return new_variant(variant, module, rec, prune_ratio=ratio, prune_kind="structured")

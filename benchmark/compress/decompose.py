"""Low-rank factorization (truncated SVD) of Linear and Conv layers: the ``lowrank`` compression.

A weight ``W`` viewed as an ``m x n`` matrix (``m`` outputs; ``n`` inputs, times the kernel size
for a conv) is replaced by its best rank-``r`` approximation ``W ~ A @ B`` (Eckart-Young), with
``A = U_r sqrt(S_r)`` (``m x r``) and ``B = sqrt(S_r) V_r^T`` (``r x n``):

- ``Linear(n, m)`` -> ``Sequential(Linear(n, r, bias=False), Linear(r, m))``;
- ``ConvNd(c_in, m, k)`` -> ``Sequential(ConvNd(c_in, r, k, same stride/padding/dilation, no bias),
  ConvNd(r, m, 1))`` (a 1x1 conv becomes two 1x1 convs).

The rank is ``round(ratio * min(m, n))`` (at least 1) for ``lowrank_ratio``, or the smallest
rank whose singular values keep ``lowrank_energy`` of ``sum(S^2)``. A layer is factorized only
when ``r * (m + n) < m * n`` (fewer parameters, and proportionally fewer MACs); the others are
left as they are and listed with the reason. Grouped and transposed convs are not factorized.
The relative weight error of a factorized layer is ``||W - A B||_F / ||W||_F = sqrt(1 - energy_kept)``.

Counting convention: MACs at batch 1 from :func:`benchmark.measure.flops.count_torch` (1
multiply-add = 1 MAC), parameters are unique ``nn.Parameter`` elements.
"""
from __future__ import annotations

import copy
import math
from typing import Any

from ..config import CompressionConfig
from ..errors import CompressionError, ConfigError, one_line
from ..models.base import CompressionRecord, Variant
from .base import CompressContext, register_compression
from .prune import count_params, eager_module, example_args, macs_or_none, new_variant


def _check(ratio: float | None, energy: float | None, rank: int | None) -> None:
    given = [x for x in (ratio, energy, rank) if x is not None]
    if len(given) != 1:
        raise ConfigError("low-rank needs exactly one of a rank ratio, an energy share or a fixed rank; "
                          f"got ratio={ratio}, energy={energy}, rank={rank}")
    if ratio is not None and not 0.0 < float(ratio) <= 1.0:
        raise ConfigError(f"low-rank ratio must be in (0, 1]; got {ratio}")
    if energy is not None and not 0.0 < float(energy) <= 1.0:
        raise ConfigError(f"low-rank energy must be in (0, 1]; got {energy}")
    if rank is not None and int(rank) < 1:
        raise ConfigError(f"low-rank rank must be >= 1; got {rank}")


def choose_rank(singular_values, ratio: float | None = None, energy: float | None = None, rank: int | None = None) -> int:
    """Rank kept for singular values ``S`` (descending): by ratio of full rank, by energy share, or fixed."""
    import torch

    _check(ratio, energy, rank)
    full = int(singular_values.numel())
    if rank is not None:
        return min(int(rank), full)
    if ratio is not None:
        return max(1, min(full, int(round(float(ratio) * full))))
    s2 = singular_values.double() ** 2
    total = float(s2.sum())
    if total == 0.0:
        return 1
    cum = torch.cumsum(s2, 0) / total
    # smallest r with cum[r-1] >= energy (tolerate float round-off at energy 1)
    r = int(torch.searchsorted(cum, torch.tensor(float(energy) - 1e-12, dtype=cum.dtype)).item()) + 1
    return max(1, min(full, r))


def _factor(layer):
    """(m, n, W as m x n float32 matrix) or None with a reason when the layer is not factorizable."""
    import torch.nn as nn

    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features, layer.weight.detach().float(), None
    if isinstance(layer, nn.modules.conv._ConvNd):
        if layer.transposed:
            return None, None, None, "transposed conv"
        if layer.groups != 1:
            return None, None, None, f"grouped conv (groups={layer.groups})"
        w = layer.weight.detach().float()
        m = w.shape[0]
        return m, int(w[0].numel()), w.reshape(m, -1), None
    return None, None, None, f"unsupported layer type {type(layer).__name__}"


def _replacement(layer, a, b, r: int):
    import torch
    import torch.nn as nn

    dtype = layer.weight.dtype
    has_bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        first = nn.Linear(layer.in_features, r, bias=False)
        second = nn.Linear(r, layer.out_features, bias=has_bias)
        first.weight.data = b.to(dtype).contiguous()
        second.weight.data = a.to(dtype).contiguous()
    else:
        conv = type(layer)
        first = conv(layer.in_channels, r, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                     dilation=layer.dilation, bias=False, padding_mode=layer.padding_mode)
        second = conv(r, layer.out_channels, 1, bias=has_bias)
        first.weight.data = b.reshape(r, *layer.weight.shape[1:]).to(dtype).contiguous()
        second.weight.data = a.reshape(layer.out_channels, r, *([1] * (layer.weight.dim() - 2))).to(dtype).contiguous()
    if has_bias:
        second.bias.data = layer.bias.detach().clone()
    out = nn.Sequential(first, second)
    out.train(layer.training)
    with torch.no_grad():
        for p in out.parameters():
            p.requires_grad_(layer.weight.requires_grad)
    return out


def lowrank_module(
    module,
    ratio: float | None = None,
    energy: float | None = None,
    rank: int | None = None,
    layers: list[str] | None = None,
) -> dict[str, Any]:
    """Factorize the Linear/Conv layers of ``module`` in place (or only those named in ``layers``).

    Exactly one of ``ratio`` (fraction of full rank, in (0, 1]), ``energy`` (share of squared
    singular values to keep, in (0, 1]) or ``rank`` (fixed, >= 1) is given. Returns per-layer
    ranks (``layers``: name -> rank, full_rank, energy_kept, params_before/after) and ``skipped``
    (name -> reason).
    """
    import torch
    import torch.nn as nn

    _check(ratio, energy, rank)
    candidates = [(n, m) for n, m in module.named_modules()
                  if n and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    if layers is not None:
        known = {n for n, _ in candidates}
        unknown = [n for n in layers if n not in known]
        if unknown:
            raise ConfigError(f"low-rank: no Linear/Conv layer named {', '.join(unknown)}; layers: {', '.join(sorted(known)[:12])}")
        candidates = [(n, m) for n, m in candidates if n in set(layers)]
    done: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name, layer in candidates:
        m, n, w, reason = _factor(layer)
        if reason:
            skipped[name] = reason
            continue
        with torch.no_grad():
            u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        r = choose_rank(s, ratio, energy, rank)
        if r * (m + n) >= m * n:
            skipped[name] = f"rank {r} of {s.numel()} does not reduce parameters ({r}*({m}+{n}) >= {m}*{n})"
            continue
        root = torch.sqrt(s[:r])
        a = (u[:, :r] * root).float()
        b = (root[:, None] * vh[:r]).float()
        kept = float((s[:r].double() ** 2).sum() / (s.double() ** 2).sum()) if float(s.abs().sum()) > 0 else 1.0
        new = _replacement(layer, a, b, r)
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, new)
        bias = layer.bias.numel() if layer.bias is not None else 0
        done[name] = {
            "rank": r, "full_rank": int(s.numel()), "shape": [m, n], "energy_kept": kept,
            "rel_weight_error": math.sqrt(max(0.0, 1.0 - kept)),
            "params_before": m * n + bias, "params_after": r * (m + n) + bias,
        }
    return {"layers": done, "skipped": skipped}


@register_compression("lowrank")
def lowrank(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Truncated-SVD factorization of Linear/Conv layers; see :func:`lowrank_module`."""
    import torch

    source = eager_module(variant, "low-rank factorization")
    ratio = float(cfg.lowrank_ratio) or None
    energy = float(cfg.lowrank_energy) or None
    if ratio is None and energy is None:
        rec = CompressionRecord("lowrank", False, "low-rank disabled (ratio 0 and energy 0): model unchanged")
        return new_variant(variant, copy.deepcopy(source), rec)
    if ratio is not None and energy is not None:
        raise ConfigError(f"give a low-rank ratio or a low-rank energy, not both; got ratio {ratio} and energy {energy}")
    how = f"ratio {ratio:g}" if ratio is not None else f"energy {energy:g}"
    ctx.progress(f"low-rank factorization ({how})", 0.0)
    module = copy.deepcopy(source)
    module.eval()
    notes: list[str] = []
    args = example_args(variant.model)
    params_before = count_params(module)
    macs_before = macs_or_none(module, args, notes)
    stats = lowrank_module(module, ratio=ratio, energy=energy)
    try:
        with torch.no_grad():
            module(*args)
    except RuntimeError as exc:
        raise CompressionError(f"the factorized model no longer runs: {one_line(exc, 200)}") from None
    params_after = count_params(module)
    macs_after = macs_or_none(module, args, notes) if stats["layers"] else macs_before
    details = {
        "ratio": ratio, "energy": energy, **stats,
        "params_before": params_before, "params_after": params_after,
        "params_ratio": params_after / params_before if params_before else None,
        "macs_before": macs_before, "macs_after": macs_after,
        "macs_ratio": macs_after / macs_before if macs_before and macs_after is not None else None,
        "notes": notes,
    }
    ctx.progress("low-rank factorization done", 1.0)
    if not stats["layers"]:
        rec = CompressionRecord(
            "lowrank", False,
            f"low-rank ({how}): no layer factorized ({len(stats['skipped'])} skipped: the chosen ranks would not "
            "reduce parameters or the layers are not factorizable); model unchanged",
            details, warnings=notes,
        )
        return new_variant(variant, module, rec)
    ranks = ", ".join(f"{n}:{d['rank']}/{d['full_rank']}" for n, d in list(stats["layers"].items())[:8])
    more = "" if len(stats["layers"]) <= 8 else f", ... ({len(stats['layers'])} layers)"
    macs = ("" if details["macs_ratio"] is None
            else f", MACs {macs_before:,} -> {macs_after:,} ({details['macs_ratio']:.2f}x)")
    summary = (
        f"low-rank SVD ({how}): factorized {len(stats['layers'])} layers (rank/full {ranks}{more}), "
        f"skipped {len(stats['skipped'])}; params {params_before:,} -> {params_after:,} "
        f"({details['params_ratio']:.2f}x){macs}"
    )
    rec = CompressionRecord("lowrank", True, summary, details, warnings=notes)
    return new_variant(variant, module, rec)

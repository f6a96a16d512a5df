"""Per-layer sensitivity and an accuracy-aware INT8 search (the Intel Neural Compressor /
OpenVINO accuracy-aware idea) on the model's ONNX graph. These are analyses of a model, not
compressions: they measure what compressing each layer would cost and which layers to keep FP32.

Modules: this one (:func:`layer_sensitivity`), :mod:`.search` (:func:`accuracy_aware_search`),
:mod:`.prepared` (the prepared graph and what both do with it), :mod:`.isolated` (both run in
a spawned child for the dashboard and the CLI).

- :func:`layer_sensitivity` compresses ONE layer (ONNX node) at a time and measures what that
  costs: ``"int8"`` quantizes only that node (ONNX Runtime static QDQ, per-channel int8 weights,
  activations in the format the ``int8-static`` compression picks for this CPU, MinMax ranges
  calibrated once); ``"prune"`` zeroes the 50 % smallest-|w| weights of that node's weight tensor
  (L1 unstructured). Layers are the MAC-bearing nodes: Conv, ConvTranspose, Gemm, MatMul.
- :func:`accuracy_aware_search` starts from full static INT8 and, while the accuracy drop exceeds
  the budget, keeps the next most INT8-sensitive layer in FP32 and tries again; every tried
  configuration is recorded with its metric, size and a quick latency.

Conventions:

- The metric is top-1 accuracy on labelled data, else top-1 agreement with the FP32 model
  (argmax over the last axis of the first output). Both are fractions in 0..1.
- ``delta`` is the metric drop in percentage points: ``(metric_before - metric_after) * 100``;
  positive means worse. Tables are sorted by ``delta``, most sensitive first.
- ``macs_share`` is the node's MACs over the MACs of all Conv/ConvTranspose/Gemm/MatMul nodes at
  batch 1 (a MAC = one multiply-add; the formulas of :mod:`benchmark.measure.flops`, with shapes
  from one ONNX Runtime run, so dynamic reshapes in attention do not hide any product).
- ONNX Runtime runs on CPU; evaluation sessions use 2 intra-op threads. The search's latency check
  is a sweep's timing with short settings: an ONNX Runtime session from :mod:`benchmark.backends`
  (1 intra-op thread), batch 8, timed by :func:`benchmark.measure.latency.measure_latency` under the
  CPU device lock: 3 warm-up runs, then at least 20 runs and 0.2 s; ``latency_p50_ms`` is the median.
- The graph is prepared as the ``int8-static``/``mixed`` compressions prepare it (``Constant``
  weights to initializers, opset 13+, ``quant_pre_process``; the same INT8 format and, for
  attention models, the same op types); layer names are node names of that prepared graph,
  usable as ``CompressionConfig.exclude_layers``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.base import Dataset
from ..errors import CompressionError, ConfigError
from ..registry import one_of
from .prepared import PreparedGraph, Progress, fit, no_progress, predict, prepare, quantize, score, score_against

if TYPE_CHECKING:
    import pandas as pd

    from ..models.base import LoadedModel

METHODS = ("int8", "prune")
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
COLUMNS = ["layer", "op_type", "macs_share", "metric_before", "metric_after", "delta"]
PRUNE_AMOUNT = 0.5


def node_macs(proto, data: Dataset, names: list[str]) -> tuple[dict[str, int], int, list[str]]:
    """(MACs at batch 1 per Conv/ConvTranspose/Gemm/MatMul node, their sum, notes).

    Counted by :func:`benchmark.measure.flops.count_onnx` with the inputs' shapes fixed to one
    sample of ``data`` (it probes shapes with one ONNX Runtime run where ONNX shape inference
    loses track of dynamic reshapes).
    """
    from ..measure.flops import count_onnx

    shapes = {n: (1,) + tuple(data.arrays[n].shape[1:]) for n in names}
    report = count_onnx(proto, input_shapes=shapes)
    layer_names = {n.name for n in proto.graph.node if n.op_type in LAYER_OPS and n.name}
    out = {row["name"]: int(row["macs"] or 0) for row in report.by_module if row["name"] in layer_names}
    notes = [f"MACs of node {n} unknown; counted as 0" for n in sorted(layer_names - set(out))]
    for n in layer_names - set(out):
        out[n] = 0
    return out, int(sum(out.values())), notes


def candidate_layers(prep: PreparedGraph, method: str) -> list[Any]:
    init = {i.name for i in prep.proto.graph.initializer}
    nodes = []
    for node in prep.proto.graph.node:
        if node.op_type not in LAYER_OPS or not node.name:
            continue
        if method == "prune" and not any(n in init for n in node.input[:2]):
            continue  # nothing to prune: both operands are activations
        nodes.append(node)
    return nodes


def _pruned_copy(prep: PreparedGraph, node, out: Path) -> Path:
    import numpy as np
    from onnx import numpy_helper

    from ..compress.onnx_prep import save_model
    from ..onnx_graph import copy_model

    m = copy_model(prep.proto)
    inits = {i.name: i for i in m.graph.initializer}
    name = node.input[1] if len(node.input) > 1 and node.input[1] in inits else node.input[0]
    w = numpy_helper.to_array(inits[name]).copy()
    flat = np.abs(w).reshape(-1)
    k = int(round(PRUNE_AMOUNT * flat.size))
    if k > 0:
        idx = np.argpartition(flat, k - 1)[:k]
        w.reshape(-1)[idx] = 0
    inits[name].CopyFrom(numpy_helper.from_array(w, name))
    return save_model(m, out)


def _workdir(workdir) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="slimbench-sens-")
        return Path(tmp.name), tmp
    path = Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    return path, None


def sensitivity_table(model, method, prep: PreparedGraph, eval_data: Dataset, calib: Dataset, workdir: Path,
                      progress: Progress, max_layers: int | None, cache: Path) -> "pd.DataFrame":
    """The :func:`layer_sensitivity` table of the prepared graph ``prep``: int8 layers calibrated on
    ``calib`` (ranges cached in ``cache``), every layer scored on ``eval_data``."""
    import pandas as pd

    ref_pred = predict(prep.path, prep, eval_data)
    before = score(ref_pred, eval_data, ref_pred)
    macs, total, notes = node_macs(prep.proto, eval_data, prep.inputs)
    nodes = candidate_layers(prep, method)
    if not nodes:
        raise CompressionError(f"model {model.name!r} has no {'/'.join(LAYER_OPS)} layers to test for {method} sensitivity")
    skipped = 0
    if max_layers is not None:
        if int(max_layers) < 1:
            raise ConfigError(f"max_layers must be >= 1; got {max_layers}")
        ranked = sorted(nodes, key=lambda n: -macs.get(n.name, 0))
        keep = {n.name for n in ranked[: int(max_layers)]}
        skipped = len(nodes) - len(keep)
        nodes = [n for n in nodes if n.name in keep]
    rows = []
    warnings = list(prep.warnings) + notes
    for i, node in enumerate(nodes):
        progress(f"{method} sensitivity: layer {i + 1}/{len(nodes)} ({node.name})", i / len(nodes))
        out = workdir / f"sens-{method}-{i}.onnx"
        if method == "int8":
            quantize(prep, out, cache, calib, nodes=[node.name])
        else:
            _pruned_copy(prep, node, out)
        try:
            after, delta = score_against(out, prep, eval_data, ref_pred, before, warnings, node.name)
        finally:
            out.unlink(missing_ok=True)
        rows.append({
            "layer": node.name, "op_type": node.op_type,
            "macs_share": macs.get(node.name, 0) / total if total else 0.0,
            "metric_before": before, "metric_after": after, "delta": delta,
        })
    progress(f"{method} sensitivity done", 1.0)
    df = pd.DataFrame(rows, columns=COLUMNS).sort_values(["delta", "macs_share"], ascending=[False, False], kind="stable")
    df = df.reset_index(drop=True)
    df.attrs.update({
        "method": method, "metric": "accuracy" if eval_data.labels is not None else "top1_agreement",
        "samples": len(eval_data), "layers_not_tested": skipped, "warnings": warnings,
        "total_macs": total, **prep.describe(),
    })
    return df


def layer_sensitivity(
    model: "LoadedModel",
    method: str = "int8",
    eval_data: Dataset | None = None,
    workdir: str | Path | None = None,
    progress: Progress | None = None,
    max_layers: int | None = None,
) -> "pd.DataFrame":
    """Metric cost of compressing one layer at a time, most sensitive first.

    ``method``: ``"int8"`` (only that node quantized, static QDQ U8S8 per-channel, calibrated on
    ``eval_data``) or ``"prune"`` (50 % of that node's weights zeroed by magnitude). ``max_layers``
    tests only the layers with the most MACs. Columns: layer, op_type, macs_share (0..1),
    metric_before, metric_after, delta (percentage points, positive = worse). ``df.attrs`` holds
    the metric name, the sample count and warnings.
    """
    one_of("sensitivity method", method, METHODS)
    progress = progress or no_progress
    work, tmp = _workdir(workdir)
    try:
        prep = prepare(model, work)
        data = fit(eval_data, model, prep, "evaluation data")
        cache = work / "sens-calib-cache.json"
        cache.unlink(missing_ok=True)
        return sensitivity_table(model, method, prep, data, data, work, progress, max_layers, cache)
    finally:
        if tmp is not None:
            tmp.cleanup()

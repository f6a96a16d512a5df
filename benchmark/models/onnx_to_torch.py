"""ONNX -> PyTorch: convert an uploaded ONNX graph to an ``nn.Module``, verified against ONNX Runtime.

With a PyTorch module, an ONNX upload gets what needs one: structured pruning (Torch-Pruning),
low-rank decomposition, distillation, and the ``pytorch`` backend.

How
    :func:`convert` cleans the graph (:func:`clean_graph`), then builds an :class:`OnnxModule`: an
    ``nn.Module`` that runs the graph's nodes in order, each node converted to a PyTorch module by
    :mod:`benchmark.models.onnx_ops` (Conv -> ``nn.ConvNd``, Gemm / MatMul by a constant matrix, with
    a following bias ``Add`` fused in -> ``nn.Linear``, BatchNormalization of any rank, LayerNorm,
    Embedding, LSTM / GRU -> ``nn.LSTM`` / ``nn.GRU``, ``If`` -> both branches, chosen at run time;
    weightless nodes -> small function modules). Pruners and quantizers see ordinary PyTorch layers;
    the module traces (``torch.jit.trace``, fvcore, the TorchScript ONNX exporter) and deep-copies.

Clean-ups first
    Weights in ``Constant`` nodes (Paddle2ONNX) become initializers, and initializers aliased
    through ``Identity`` nodes (the TorchScript exporter stores equal tensors once, e.g. the zero
    biases BatchNorm folding leaves) are referenced directly, so every weight is a plain initializer.

Verified, or one clear reason
    :func:`convert_verified` runs the module and ONNX Runtime on the same feeds and stores the worst
    max abs error and cosine similarity over the outputs with the result (:class:`Verification`).
    A missing converter, a node variant it cannot express, a run-time failure or a mismatch above
    the tolerance raises :class:`~benchmark.errors.ConversionError` with one line naming the op(s)
    and node(s): ``no converter for NonMaxSuppression (node /nms/NonMaxSuppression)``.

Cached without pickled code
    :func:`save_conversion` writes ``torch.save`` of plain data: the state_dict (tensors), the ONNX
    file's SHA-256, the converter version and the verification numbers. :func:`load_conversion`
    reads it with ``weights_only=True``, rebuilds the structure from the ONNX graph (the recipe) and
    loads the weights; a cache written for another file or converter version is refused.

Why our own converter
    ``onnx2torch`` (1.5.15, the best of the registry's converters: it builds ``torch.fx`` modules
    that Torch-Pruning can trace) requires ``torchvision`` and imports it when imported (for
    NMS / RoIAlign); torchvision pins one torch build, so depending on it would replace the CPU
    torch Slimbench installs. It also has no converter for LSTM, GRU, If, GreaterOrEqual or
    BatchNorm on rank-2 inputs, and it fails with a KeyError on Identity-aliased initializers; the
    same holds for ``onnx2pytorch`` (torchvision required, no If). A small interpreter over about a
    hundred ops covers the CNNs, transformer encoders and recurrent models that are uploaded, maps
    every weight to the PyTorch layer type pruners understand, and lets us name an unsupported node
    instead of failing with a traceback.
"""
from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConversionError

#: Bumped when converted modules change structure or numerics (old caches are then rebuilt).
CONVERTER_VERSION = 1
#: Verification tolerance: max abs error <= ATOL + RTOL * max |reference|, and cosine >= MIN_COSINE.
ATOL = 1e-4
RTOL = 1e-4
MIN_COSINE = 0.9999
CACHE_FORMAT = "slimbench-onnx-to-torch"


# ---------------------------------------------------------------------------------------------
# Clean-ups


@dataclass
class CleanupReport:
    """What :func:`clean_graph` changed."""

    constants_to_initializers: int = 0
    identity_aliases_removed: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def _rename_inputs(graph, mapping: dict[str, str]) -> None:
    """Replace input names per ``mapping`` in every node of ``graph`` and of its subgraphs."""
    from onnx import AttributeProto

    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in mapping:
                node.input[i] = mapping[name]
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                _rename_inputs(attr.g, mapping)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    _rename_inputs(g, mapping)


def resolve_identity_aliases(model) -> tuple[Any, int]:
    """Make nodes read initializers directly instead of through ``Identity`` aliases.

    The TorchScript exporter stores equal tensors once and feeds the other users through
    ``Identity`` nodes; converters that look for a node's weight among the initializers then miss
    it. Aliases that are graph outputs are kept. Returns ``(new_model, aliases_removed)``.
    """
    from ..compress.onnx_prep import copy_model

    out = copy_model(model)
    graph = out.graph
    inits = {init.name for init in graph.initializer}
    outputs = {o.name for o in graph.output}
    mapping: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and len(node.input) == 1:
            src = mapping.get(node.input[0], node.input[0])
            if src in inits and node.output[0] not in outputs:
                mapping[node.output[0]] = src
                continue
        keep.append(node)
    if mapping:
        del graph.node[:]
        graph.node.extend(keep)
        _rename_inputs(graph, mapping)
    return out, len(mapping)


def clean_graph(model) -> tuple[Any, CleanupReport]:
    """``Constant`` nodes -> initializers, then ``Identity`` aliases of initializers resolved."""
    from ..compress.onnx_prep import constants_to_initializers

    model, n_const = constants_to_initializers(model)
    model, n_alias = resolve_identity_aliases(model)
    return model, CleanupReport(n_const, n_alias)


# ---------------------------------------------------------------------------------------------
# Building the module


def opset_of(model) -> int:
    from ..compress.onnx_prep import opset_of as _opset_of

    return _opset_of(model)


def _constant_value(node):
    """The numpy value of a ``Constant`` node, or None for sparse / string constants."""
    import numpy as np
    from onnx import helper, numpy_helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if "value" in attrs:
        arr = numpy_helper.to_array(attrs["value"])
        return None if arr.dtype.kind in "OSU" else arr
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return np.array(attrs[key], dtype=dtype)
    return None


def _subgraph_names(graph) -> set[str]:
    """Every input name read by nodes of ``graph``'s subgraphs (outer-scope references included)."""
    from onnx import AttributeProto

    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == AttributeProto.GRAPH else list(attr.graphs) if attr.type == AttributeProto.GRAPHS else []
            for g in subs:
                for inner in g.node:
                    names.update(inner.input)
                names |= _subgraph_names(g)
    return names


def _key(name: str, taken: set[str]) -> str:
    key = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "node"
    if key[0].isdigit():
        key = "n_" + key
    base, i = key, 1
    while key in taken:
        i += 1
        key = f"{base}_{i}"
    taken.add(key)
    return key


class _GraphBuilder:
    """Converts one graph (the model's or an ``If`` branch) into an :class:`~benchmark.models.onnx_ops.OnnxGraph`.

    ``issues`` collects ``(reason, node name)`` for every node that cannot be converted, across
    subgraphs, so that one error can name them all.
    """

    def __init__(self, graph, opset: int, outer_const, issues: list[tuple[str, str]], top: bool):
        from onnx import numpy_helper

        self.graph, self.opset, self.outer_const, self.issues, self.top = graph, opset, outer_const, issues, top
        self.consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.free: set[str] = set()

    def const(self, name: str):
        if name in self.consts:
            return self.consts[name]
        return self.outer_const(name) if self.outer_const else None

    def _fusions(self) -> dict[int, tuple[int, Any]]:
        """MatMul(x, W) followed by Add(bias) -> {matmul index: (add index, bias)} (one nn.Linear)."""
        consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.graph.node):
            for name in node.input:
                consumers.setdefault(name, []).append(i)
        protected = {o.name for o in self.graph.output} | _subgraph_names(self.graph)
        fused = {}
        for i, node in enumerate(self.graph.node):
            w = self.const(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
            if w is None or w.ndim != 2 or self.const(node.input[0]) is not None:
                continue
            out = node.output[0]
            users = consumers.get(out, [])
            if out in protected or len(users) != 1 or self.graph.node[users[0]].op_type != "Add":
                continue
            add = self.graph.node[users[0]]
            other = add.input[1] if add.input[0] == out else add.input[0]
            bias = self.const(other)
            if bias is not None and bias.ndim == 1 and bias.shape[0] == w.shape[1]:
                fused[i] = (users[0], bias)
        return fused

    def _subgraph(self, graph):
        builder = _GraphBuilder(graph, self.opset, self.const, self.issues, top=False)
        module = builder.build()
        self._pending_free |= builder.free
        return module

    def _convert_node(self, node, fused_bias):
        from . import onnx_ops as ops

        ctx = ops.NodeContext(node, self.opset, self.const, self._subgraph)
        if fused_bias is not None:
            return ops.matmul_linear(ctx, fused_bias)
        if node.domain not in ("", "ai.onnx") or node.op_type not in ops.CONVERTERS:
            op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            self.issues.append((f"no converter for {op}", node.name or op))
            return None
        try:
            return ops.CONVERTERS[node.op_type](ctx)
        except ops.Unsupported as exc:
            self.issues.append((str(exc), node.name or node.op_type))
            return None

    def build(self):
        import torch

        from . import onnx_ops as ops

        graph = self.graph
        init_names = set(self.consts)
        inputs = [vi.name for vi in graph.input if vi.name not in init_names]
        known = set(inputs)
        needed: dict[str, Any] = {}
        steps, plan, taken = {}, [], set()
        fused = self._fusions()
        skip = {add for add, _ in fused.values()}

        def use(name: str) -> None:
            if not name or name in known:
                return
            value = self.consts.get(name)
            if value is not None:
                needed.setdefault(name, value)
            else:
                self.free.add(name)

        for i, node in enumerate(graph.node):
            if i in skip:
                continue
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                value = _constant_value(node)
                if value is None:
                    self.issues.append(("Constant holding a sparse or string tensor", node.name or node.output[0]))
                else:
                    self.consts[node.output[0]] = value
                continue
            self._pending_free = set()
            fuse = fused.get(i)
            converted = self._convert_node(node, fuse[1] if fuse else None)
            outputs = list(graph.node[fuse[0]].output) if fuse else list(node.output)
            known.update(o for o in outputs if o)
            if converted is None:
                continue
            idx = converted.inputs if converted.inputs is not None else range(len(node.input))
            ins = tuple(node.input[j] if j < len(node.input) else "" for j in idx)
            for name in list(ins) + sorted(self._pending_free):
                use(name)
            key = _key(node.name or f"{node.op_type}_{i}", taken)
            steps[key] = converted.module
            label = f"{'MatMul+Add' if fuse else node.op_type} ({node.name or key})"
            plan.append((key, ins, tuple(outputs), converted.wants_env, label))
        outputs = [o.name for o in graph.output]
        for name in outputs:
            use(name)
        buffers = {n: torch.from_numpy(v.copy()) for n, v in needed.items()}
        cls = ops.OnnxModule if self.top else ops.OnnxGraph
        return cls(steps, plan, buffers, inputs, outputs)


def _issue_text(issues: list[tuple[str, str]]) -> str:
    """``no converter for LSTM (node /rnn/LSTM); If (2 nodes: /If_0, /If_1)``-style summary."""
    grouped: dict[str, list[str]] = {}
    for reason, node in issues:
        grouped.setdefault(reason, []).append(node)
    parts = []
    for reason, nodes in grouped.items():
        where = f"node {nodes[0]}" if len(nodes) == 1 else f"{len(nodes)} nodes: {', '.join(nodes[:3])}{', ...' if len(nodes) > 3 else ''}"
        parts.append(f"{reason} ({where})")
    return "; ".join(parts)


def build_module(model):
    """An :class:`~benchmark.models.onnx_ops.OnnxModule` for a *cleaned* ``ModelProto``
    (:func:`clean_graph`); :class:`ConversionError` naming every node that cannot be converted."""
    issues: list[tuple[str, str]] = []
    module = _GraphBuilder(model.graph, opset_of(model), None, issues, top=True).build()
    if issues:
        raise ConversionError(_issue_text(issues), ops=[r for r, _ in issues])
    return module.eval()


def unsupported_nodes(model) -> list[tuple[str, str]]:
    """``(reason, node name)`` for every node of ``model`` (a ``ModelProto``) that cannot be
    converted, without raising; empty when the whole graph converts."""
    cleaned, _ = clean_graph(model)
    issues: list[tuple[str, str]] = []
    _GraphBuilder(cleaned.graph, opset_of(cleaned), None, issues, top=True).build()
    return issues

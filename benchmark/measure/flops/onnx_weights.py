"""ONNX parameters and sparsity: which stored tensors are weights, how many elements and zeros
they hold, and which node each belongs to (conventions in :mod:`benchmark.measure.flops`).

Weights are initializers (sparse ones included) and ``Constant`` node values, in every subgraph.
A tensor is a parameter when it is a floating-point tensor used as an operator's weight, or an
integer tensor used as a quantized weight; quantization scales and zero points, BatchNorm
statistics, rank-0 literals and single-element constants of element-wise arithmetic are not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...onnx_graph import attr, op_name, walk_graphs
from .formulas import prod

#: Input positions holding quantization scales / zero points (not parameters).
_QPARAM_INPUTS = {
    "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
    "com.microsoft.QGemm": {1, 2, 4, 5, 7, 8}, "com.microsoft.MatMulIntegerToFloat": {2, 3, 4, 5},
    "com.microsoft.DynamicQuantizeMatMul": {2, 3}, "com.microsoft.MatMulNBits": {2, 3},
    "com.microsoft.QuantizeLinear": {1, 2}, "com.microsoft.DequantizeLinear": {1, 2},
}
#: Input positions of integer tensors that are quantized weights / biases.
_QWEIGHT_INPUTS = {
    "DequantizeLinear": {0}, "com.microsoft.DequantizeLinear": {0}, "QLinearConv": {3, 8},
    "QLinearMatMul": {3}, "ConvInteger": {1}, "MatMulInteger": {1}, "com.microsoft.QGemm": {3, 6},
    "com.microsoft.MatMulIntegerToFloat": {1}, "com.microsoft.DynamicQuantizeMatMul": {1},
    "com.microsoft.MatMulNBits": {1},
}
_BN_STAT_INPUTS = {"BatchNormalization": {3, 4}}
#: Single-data-input ops through which a weight reaches the op that uses it (rows attribute
#: parameters to the consumer).
_WEIGHT_PASS_THROUGH = {"DequantizeLinear", "Cast", "Identity", "Transpose", "Reshape", "Unsqueeze", "Squeeze",
                        "com.microsoft.DequantizeLinear"}




@dataclass
class _Weight:
    name: str
    tensor: Any  # TensorProto, or None for a list-valued Constant attribute
    dims: list[int]
    data_type: int
    values: Any = None  # numpy array for list-valued Constant attributes
    nnz: int | None = None  # sparse tensors: stored non-zeros


def _collect_weights(model) -> dict[str, _Weight]:
    """Every initializer and Constant-node tensor, by value name, across all subgraphs."""
    import numpy as np
    import onnx

    weights: dict[str, _Weight] = {}
    for graph, _ in walk_graphs(model.graph):
        for t in graph.initializer:
            weights[t.name] = _Weight(t.name, t, list(t.dims), t.data_type)
        for st in graph.sparse_initializer:
            weights[st.values.name] = _Weight(st.values.name, None, list(st.dims), st.values.data_type,
                                              nnz=int(prod(st.values.dims)))
        for node in graph.node:
            if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or not node.output:
                continue
            out = node.output[0]
            for a in node.attribute:
                if a.name == "value":
                    weights[out] = _Weight(out, a.t, list(a.t.dims), a.t.data_type)
                elif a.name == "sparse_value":
                    sv = a.sparse_tensor
                    weights[out] = _Weight(out, None, list(sv.dims), sv.values.data_type,
                                           nnz=int(prod(sv.values.dims)))
                elif a.name == "value_floats":
                    arr = np.asarray(list(a.floats), dtype=np.float32)
                    weights[out] = _Weight(out, None, [len(arr)], onnx.TensorProto.FLOAT, values=arr)
                elif a.name == "value_ints":
                    weights[out] = _Weight(out, None, [len(a.ints)], onnx.TensorProto.INT64)
                elif a.name in ("value_float", "value_int"):
                    weights[out] = _Weight(out, None, [], onnx.TensorProto.FLOAT if a.name == "value_float"
                                           else onnx.TensorProto.INT64)
    return weights


def _float_types():
    import onnx

    T = onnx.TensorProto
    names = ["FLOAT", "FLOAT16", "BFLOAT16", "DOUBLE", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
             "FLOAT8E5M2FNUZ", "FLOAT4E2M1"]
    return {getattr(T, n) for n in names if hasattr(T, n)}


def _int_weight_types():
    import onnx

    T = onnx.TensorProto
    names = ["INT8", "UINT8", "INT16", "UINT16", "INT32", "INT4", "UINT4"]
    return {getattr(T, n) for n in names if hasattr(T, n)}


def _uses(model) -> dict[str, list[tuple[str, int]]]:
    uses: dict[str, list[tuple[str, int]]] = {}
    for graph, _ in walk_graphs(model.graph):
        for node in graph.node:
            op = op_name(node)
            for i, name in enumerate(node.input):
                if name:
                    uses.setdefault(name, []).append((op, i))
    return uses


#: Element-wise ops: a single-element constant feeding only these is a literal (e.g. 1/sqrt(d)).
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Where", "Equal", "Less", "Greater",
                "LessOrEqual", "GreaterOrEqual", "Sqrt", "Clip", "Mod", "Expand", "CastLike"}


def _is_param(w: _Weight, uses: list[tuple[str, int]], float_types, int_types) -> bool:
    if len(w.dims) == 0:
        return False
    if not uses:
        return False
    if prod(w.dims) == 1 and all(op in _ELEMENTWISE for op, _ in uses):
        return False
    roles = []
    for op, idx in uses:
        if idx in _QPARAM_INPUTS.get(op, ()):
            roles.append("qparam")
        elif idx in _BN_STAT_INPUTS.get(op, ()):
            roles.append("stat")
        elif idx in _QWEIGHT_INPUTS.get(op, ()):
            roles.append("qweight")
        else:
            roles.append("weight")
    if w.data_type in float_types:
        return "weight" in roles or "qweight" in roles
    if w.data_type in int_types:
        return "qweight" in roles
    return False


def _weight_array(w: _Weight, base_dir: Path | None):
    import onnx
    from onnx import numpy_helper

    if w.values is not None:
        return w.values
    t = w.tensor
    if t is None:
        return None
    if t.data_location == onnx.TensorProto.EXTERNAL and not t.HasField("raw_data"):
        if base_dir is None:
            return None
        return numpy_helper.to_array(t, base_dir=str(base_dir))
    return numpy_helper.to_array(t)


def _zero_points(model) -> dict[str, tuple[str, int]]:
    """Quantized weight name -> (zero point tensor name, axis) from DequantizeLinear consumers."""
    out = {}
    for graph, _ in walk_graphs(model.graph):
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and len(node.input) >= 3 and node.input[2]:
                out[node.input[0]] = (node.input[2], int(attr(node, "axis", 1)))
    return out


def _zero_count(w: _Weight, arr, zp_info, weights, base_dir) -> int:
    import numpy as np

    if w.nnz is not None:
        return prod(w.dims) - w.nnz
    if arr is None:
        return 0
    arr = np.asarray(arr)
    if w.name in zp_info and zp_info[w.name][0] in weights:
        zp = _weight_array(weights[zp_info[w.name][0]], base_dir)
        if zp is not None:
            zp = np.asarray(zp)
            axis = zp_info[w.name][1]
            if zp.ndim == 1 and zp.size > 1 and arr.ndim:
                shape = [1] * arr.ndim
                shape[axis % arr.ndim] = zp.size
                zp = zp.reshape(shape)
            return int(np.count_nonzero(arr == zp))
    return int(arr.size - np.count_nonzero(arr))


@dataclass
class ParamCount:
    """Parameters of an ONNX model: elements per parameter tensor, their total and their zeros."""

    elements: dict[str, int] = field(default_factory=dict)  # parameter tensor name -> elements
    zeros: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.elements.values())


def count_parameters(model, base_dir: Path | None) -> ParamCount:
    """Elements and zeros of every parameter tensor of ``model`` (subgraphs included).

    ``MatMulNBits`` packed weights count ``K * N`` elements. Values are read (for the sparsity)
    from the graph, or from external data files in ``base_dir``; a tensor whose values cannot be
    read counts no zeros and is named in a warning, as are unused float weights.
    """
    weights = _collect_weights(model)
    uses = _uses(model)
    float_types, int_types = _float_types(), _int_weight_types()
    zp_info = _zero_points(model)
    packed = {}
    for graph, _ in walk_graphs(model.graph):
        for node in graph.node:
            if op_name(node) == "com.microsoft.MatMulNBits" and len(node.input) > 1:
                packed[node.input[1]] = int(attr(node, "K", 0)) * int(attr(node, "N", 0))
    out = ParamCount()
    unreadable = []
    for name, w in weights.items():
        if not _is_param(w, uses.get(name, []), float_types, int_types):
            continue
        out.elements[name] = packed.get(name, prod(w.dims))
        try:
            arr = _weight_array(w, base_dir) if name not in packed else None
        except (OSError, ValueError) as exc:
            unreadable.append(f"{name} ({type(exc).__name__})")
            arr = None
        else:
            if arr is None and w.nnz is None and name not in packed:
                unreadable.append(name)
        out.zeros += _zero_count(w, arr, zp_info, weights, base_dir)
    if unreadable:
        out.warnings.append(f"weight values unavailable for sparsity: {', '.join(unreadable[:5])}"
                            + (" ..." if len(unreadable) > 5 else ""))
    unused = [n for n, w in weights.items() if not uses.get(n) and w.data_type in float_types and prod(w.dims) > 1]
    if unused:
        out.warnings.append(f"{len(unused)} unused weight tensor(s) not counted: {', '.join(unused[:5])}"
                            + (" ..." if len(unused) > 5 else ""))
    return out


def attribute_parameters(model, elements: dict[str, int]) -> tuple[dict[int, int], int]:
    """(main-graph node index -> parameter elements it owns, elements owned by no node).

    Each parameter belongs to the first node that consumes it, following it through
    single-input pass-through ops (DequantizeLinear, Cast, Transpose, ...). Parameters used only
    inside subgraphs belong to no main-graph node.
    """
    origin: dict[str, set[str]] = {n: {n} for n in elements}
    claimed: set[str] = set()
    node_params: dict[int, int] = {}
    for idx, node in enumerate(model.graph.node):
        sources = set()
        for name in node.input:
            if name in origin:
                sources |= origin[name]
        if op_name(node) in _WEIGHT_PASS_THROUGH and node.input and node.input[0] in origin:
            for out in node.output:
                origin[out] = set(origin[node.input[0]])
            continue
        fresh = {s for s in sources if s in elements and s not in claimed}
        claimed |= fresh
        if fresh:
            node_params[idx] = sum(elements[s] for s in fresh)
    return node_params, sum(n for name, n in elements.items() if name not in claimed)

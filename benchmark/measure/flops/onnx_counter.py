"""Counting an ONNX model from its graph (conventions in :mod:`benchmark.measure.flops`).

Shapes come from ``onnx.shape_inference`` after the graph inputs get concrete dims, and from one
ONNX Runtime run when inference leaves the inputs of a MAC-carrying node unknown (or the graph
has ``If`` nodes, whose conditions that run reads). MACs come from :data:`MAC_HANDLERS`, a table
of operator -> handler in the manner of fvcore's op handles: a handler gets the node and a lookup
of its input shapes and returns the node's MACs (None when a shape it needs is unknown); recurrent
layers (LSTM, GRU, RNN) count seq x batch x the elements of their W and R weights. Every other
operator counts zero MACs; those that are not pure data movement (:data:`ZERO_COST_OPS`) are listed
in ``unsupported_ops``. An ``If`` node costs the branch its condition took in that run (the larger
branch, with a warning, when the condition is unknown); ``Loop`` / ``Scan`` bodies are not costed:
their operators are listed as ``"<op> (inside Loop)"`` and a warning names the MAC operators they
hold. Parameters and sparsity: :mod:`.onnx_weights`.
"""
from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from typing import Callable

from ...errors import ConfigError, ModelLoadError, one_line
from ...onnx_graph import (
    CONTROL_FLOW_OPS, attr, copy_model, cpu_session, dims_only_copy, fix_input_dims, node_subgraphs, op_name,
    walk_graphs,
)
from .formulas import (
    conv_macs, conv_output_spatial, conv_transpose_macs, einsum_macs, matmul_macs, prod, recurrent_macs,
)
from .onnx_weights import attribute_parameters, count_parameters
from .report import FlopReport

#: Operators that move or select data and do no arithmetic worth listing (fvcore ignores the
#: same kinds of aten ops).
ZERO_COST_OPS = {
    "Constant", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Shape", "Size",
    "Concat", "Split", "SplitToSequence", "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile",
    "Cast", "CastLike", "ConstantOfShape", "Range", "Dropout", "Pad", "Relu", "Clip", "Max", "Min",
    "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "Where",
    "NonZero", "Floor", "Ceil", "ScatterND", "ScatterElements", "DepthToSpace", "SpaceToDepth",
    "Optional", "OptionalGetElement", "OptionalHasElement", "SequenceConstruct", "SequenceAt", "EyeLike",
}

Shape = list  # a list of dims; an entry may be None (unknown)
ShapeOf = Callable[[int], "Shape | None"]  # input index (-1: the first output) -> its shape, None when unknown
Handler = Callable[[object, ShapeOf], "int | None"]  # (node, shape_of) -> MACs, None when shapes are unknown


def _known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


# --------------------------------------------------------------------------------------------
# MAC handlers


def _conv(data: int, weight: int) -> Handler:
    """Conv-like op with its data and weight at these input positions; the output shape comes from
    shape inference, else from the attributes (kernel, strides, dilations, pads, auto_pad)."""

    def handle(node, shape_of: ShapeOf) -> int | None:
        x, w = shape_of(data), shape_of(weight)
        if not (_known(w) and len(w) >= 3):
            return None
        y = shape_of(-1)
        if not _known(y):
            if not _known(x):
                return None
            n_sp = len(x) - 2
            auto_pad = attr(node, "auto_pad", b"NOTSET")
            y = [x[0], w[0]] + conv_output_spatial(
                x[2:], list(attr(node, "kernel_shape", w[2:])), list(attr(node, "strides", [1] * n_sp)),
                list(attr(node, "dilations", [1] * n_sp)), list(attr(node, "pads", [0] * (2 * n_sp))),
                auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad))
        return conv_macs(y, w)

    return handle


def _conv_transpose(node, shape_of: ShapeOf) -> int | None:
    x, w = shape_of(0), shape_of(1)
    return conv_transpose_macs(x, w) if _known(x) and _known(w) else None


def _gemm(a_index: int, b_index: int) -> Handler:
    def handle(node, shape_of: ShapeOf) -> int | None:
        a, b = shape_of(a_index), shape_of(b_index)
        if not (_known(a) and _known(b)) or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if attr(node, "transB", 0) else b[1]
        return m * k * n

    return handle


def _matmul(a_index: int, b_index: int) -> Handler:
    def handle(node, shape_of: ShapeOf) -> int | None:
        a, b = shape_of(a_index), shape_of(b_index)
        return matmul_macs(a, b) if _known(a) and _known(b) else None

    return handle


def _fused_matmul(node, shape_of: ShapeOf) -> int | None:
    """``com.microsoft.FusedMatMul``: a MatMul whose operands may be transposed first."""
    a, b = shape_of(0), shape_of(1)
    if not (_known(a) and _known(b)) or attr(node, "transBatchA", 0) or attr(node, "transBatchB", 0):
        return None
    if attr(node, "transA", 0) and len(a) >= 2:
        a = a[:-2] + [a[-1], a[-2]]
    if attr(node, "transB", 0) and len(b) >= 2:
        b = b[:-2] + [b[-1], b[-2]]
    return matmul_macs(a, b)


def _matmul_nbits(node, shape_of: ShapeOf) -> int | None:
    """``com.microsoft.MatMulNBits``: the packed weight's K x N come from the attributes."""
    a = shape_of(0)
    k, n = attr(node, "K"), attr(node, "N")
    if not _known(a) or k is None or n is None:
        return None
    return prod(a[:-1]) * int(k) * int(n)


def _recurrent(node, shape_of: ShapeOf) -> int | None:
    """ONNX ``LSTM`` / ``GRU`` / ``RNN`` (and ORT's ``DynamicQuantizeLSTM``): ``X`` is ``[seq, batch,
    I]`` (``[batch, seq, I]`` with ``layout=1``), ``W`` and ``R`` hold every direction's gate
    weights, so MACs = seq x batch x (elements of W + elements of R)
    (:func:`~.formulas.recurrent_macs`)."""
    x, w, r = shape_of(0), shape_of(1), shape_of(2)
    if not (_known(x) and _known(w) and _known(r)) or len(x) != 3:
        return None
    return recurrent_macs(x, [w[1:], r[1:]]) * w[0]


def _einsum(node, shape_of: ShapeOf) -> int | None:
    shapes = [shape_of(i) for i in range(len(node.input))]
    if not all(_known(s) for s in shapes):
        return None
    eq = attr(node, "equation", b"")
    return einsum_macs(eq.decode() if isinstance(eq, bytes) else str(eq), shapes)


#: Operator (:func:`benchmark.onnx_graph.op_name`) -> MAC handler. Quantized forms take their data
#: and weight from other input positions (QLinearConv: x at 0, w at 3).
MAC_HANDLERS: dict[str, Handler] = {
    "Conv": _conv(0, 1),
    "ConvInteger": _conv(0, 1),
    "QLinearConv": _conv(0, 3),
    "com.microsoft.FusedConv": _conv(0, 1),
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm(0, 1),
    "com.microsoft.QGemm": _gemm(0, 3),
    "MatMul": _matmul(0, 1),
    "MatMulInteger": _matmul(0, 1),
    "QLinearMatMul": _matmul(0, 3),
    "com.microsoft.MatMulIntegerToFloat": _matmul(0, 1),
    "com.microsoft.DynamicQuantizeMatMul": _matmul(0, 1),
    "com.microsoft.FusedMatMul": _fused_matmul,
    "com.microsoft.MatMulNBits": _matmul_nbits,
    "Einsum": _einsum,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    "RNN": _recurrent,
    "com.microsoft.DynamicQuantizeLSTM": _recurrent,
}


def node_macs(node, shapes: dict) -> int | None:
    """MACs of one MAC-family ``node`` from ``shapes`` (value name -> dims); None when unknown or
    when the shapes are inconsistent."""

    def shape_of(i: int):
        if i < 0:
            return shapes.get(node.output[0]) if node.output else None
        return shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    try:
        return MAC_HANDLERS[op_name(node)](node, shape_of)
    except ValueError:  # inconsistent shapes in the graph
        return None


# --------------------------------------------------------------------------------------------
# Shapes


def _shape_table(model) -> dict[str, list[int | None]]:
    shapes: dict[str, list[int | None]] = {}

    def from_vi(vi):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return None
        return [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in tt.shape.dim]

    for graph, _ in walk_graphs(model.graph):
        for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
            s = from_vi(vi)
            if s is not None and vi.name not in shapes:
                shapes[vi.name] = s
        for t in graph.initializer:
            shapes[t.name] = list(t.dims)
        for node in graph.node:
            if node.op_type == "Constant" and node.output:
                for a in node.attribute:
                    if a.name == "value":
                        shapes[node.output[0]] = list(a.t.dims)
    return shapes


def _mac_shapes_missing(model, shapes) -> bool:
    """True when a MAC-carrying node of the main graph has an input whose shape inference left unknown."""
    for node in model.graph.node:
        if op_name(node) in MAC_HANDLERS and any(n and not _known(shapes.get(n)) for n in node.input[:2]):
            return True
    return False


def _probe_feeds(model, values: dict | None) -> tuple[dict, list[str]] | None:
    """(inputs of the probe run, names of those taken from ``values``): ``values`` where they have
    the graph input's (fixed) shape, else zeros (ones for ``*mask*`` inputs); None when an input's
    dims are not all known."""
    import numpy as np
    import onnx

    init = {t.name for t in model.graph.initializer}
    feeds, given = {}, []
    for inp in model.graph.input:
        if inp.name in init:
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.WhichOneof("value") == "dim_value" else 0 for d in tt.shape.dim]
        if any(d <= 0 for d in dims):
            return None
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        value = (values or {}).get(inp.name)
        if value is not None and list(np.shape(value)) == dims:
            feeds[inp.name] = np.asarray(value).astype(dtype, copy=False)
            given.append(inp.name)
        else:
            feeds[inp.name] = np.ones(dims, dtype=dtype) if "mask" in inp.name.lower() else np.zeros(dims, dtype=dtype)
    return feeds, given


def _probe_with_ort(model, base_dir: Path | None, report_warnings: list[str], values: dict | None = None,
                    keep: frozenset = frozenset()) -> tuple[dict[str, list[int]], dict, str] | None:
    """(shape of every main-graph value, the values named in ``keep``, what it was fed) from one ONNX
    Runtime run on ``values`` (see :func:`_probe_feeds`) at the fixed input shapes; None when it
    cannot run (the reason goes to ``report_warnings``).

    Used when static shape inference cannot resolve shapes computed at run time (``Shape`` ->
    ``Concat`` -> ``Reshape`` chains of unoptimised exports) and to read ``If`` conditions.
    Needs concrete input dims.
    """
    import numpy as np
    import onnx

    if importlib.util.find_spec("onnxruntime") is None:
        report_warnings.append("onnxruntime is not installed: shapes left unknown by shape inference stay unknown")
        return None
    prepared = _probe_feeds(model, values)
    if prepared is None:
        return None
    feeds, given = prepared
    probe = copy_model(model)
    if base_dir is not None:
        onnx.load_external_data_for_model(probe, str(base_dir))
    known_outputs = {o.name for o in probe.graph.output}
    names = [out for node in probe.graph.node for out in node.output if out and out not in known_outputs]
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    try:
        sess = cpu_session(probe, threads=1, optimize=False)
        results = sess.run(None, feeds)
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, RuntimeException)
        report_warnings.append(f"shape probe with ONNX Runtime failed ({one_line(exc, 160)})")
        return None
    out_names = [o.name for o in sess.get_outputs()]
    kept = {n: v for n, v in list(feeds.items()) + list(zip(out_names, results)) if n in keep}
    fed = f"the given values of {', '.join(given)}" if given else "zero inputs"
    return {n: list(np.shape(v)) for n, v in zip(out_names, results)}, kept, fed


def _infer_shapes(model, base_dir: Path | None, report_warnings: list[str],
                  values: dict | None = None) -> dict[str, list[int | None]]:
    """Value name -> dims: ONNX shape inference on a dims-only copy, then an ONNX Runtime probe when
    a MAC-carrying node's inputs are still unknown."""
    import onnx

    structure = dims_only_copy(model)
    for graph, parent in walk_graphs(structure.graph):
        if parent is not None:  # shapes a tool wrote into a subgraph before the inputs were fixed: infer them again
            del graph.value_info[:]
    try:
        inferred = onnx.shape_inference.infer_shapes(structure, check_type=False, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:
        report_warnings.append(f"ONNX shape inference failed ({one_line(exc, 200)}); "
                               "only ops with declared shapes are costed")
        inferred = structure
    shapes = _shape_table(inferred)
    if _mac_shapes_missing(model, shapes):
        probed = _probe_with_ort(model, base_dir, report_warnings, values)
        if probed is not None:
            report_warnings.append(f"shapes resolved by one ONNX Runtime run on {probed[2]} (static shape "
                                   "inference left some unknown)")
            for name, shape in probed[0].items():
                if not _known(shapes.get(name)):
                    shapes[name] = shape
    return shapes


def _inline_taken_branches(model, base_dir: Path | None, report_warnings: list[str], values: dict | None) -> None:
    """Replace each main-graph ``If`` node whose condition one ONNX Runtime run reads (on ``values``,
    else zeros) by the nodes of the branch it takes (in place), so that branch is costed like the
    rest of the graph; the other branch never runs on these inputs."""
    from onnx import helper

    conditions = frozenset(n.input[0] for n in model.graph.node if n.op_type == "If" and n.input)
    probed = _probe_with_ort(model, base_dir, report_warnings, values, conditions) if conditions else None
    if probed is None:
        return
    import numpy as np

    nodes = []
    for node in model.graph.node:
        cond = probed[1].get(node.input[0]) if node.op_type == "If" and node.input else None
        if cond is None or np.size(cond) != 1:
            nodes.append(node)
            continue
        taken = "then_branch" if bool(np.asarray(cond).reshape(-1)[0]) else "else_branch"
        branch = next(a.g for a in node.attribute if a.name == taken)
        label = node.name or (node.output[0] if node.output else "If")
        nodes.extend(branch.node)
        nodes.extend(helper.make_node("Identity", [out.name], [name], name=f"{label}/{taken}/output{i}")
                     for i, (out, name) in enumerate(zip(branch.output, node.output)))
        model.graph.initializer.extend(branch.initializer)
        macs = sum(1 for n in branch.node if op_name(n) in MAC_HANDLERS)
        report_warnings.append(f"If node {label!r}: counted the branch its condition took on {probed[2]} ({taken}, "
                               f"{macs} MAC operator(s))")
    del model.graph.node[:]
    model.graph.node.extend(nodes)


# --------------------------------------------------------------------------------------------
# The count


def _read(model_or_path):
    """(a copy of the model to work on, folder of its external data, bytes on disk) from a path or a proto."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model {str(path)!r} does not exist or is not a file")
        from ...safety import check_onnx_external_data

        external = check_onnx_external_data(path)
        try:
            model = onnx.load(str(path), load_external_data=False)
        except (DecodeError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path.name} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        return model, path.parent, path.stat().st_size + sum(p.stat().st_size for p in external)
    if isinstance(model_or_path, onnx.ModelProto):
        return copy_model(model_or_path), None, None
    raise ConfigError(f"count_onnx needs a path or an onnx.ModelProto; got {type(model_or_path).__name__}")


def _count_macs(model, shapes: dict, node_params: dict[int, int], report: FlopReport) -> None:
    """MACs of the main graph's nodes into ``report`` (total, per operator, one row per node with MACs
    or parameters); operators without MACs that are not data movement go to ``unsupported_ops``."""
    unsupported: Counter = Counter()
    uncosted = []
    for idx, node in enumerate(model.graph.node):
        op = op_name(node)
        macs = 0
        if op in MAC_HANDLERS:
            got = node_macs(node, shapes)
            if got is None:
                unsupported[f"{op} (unknown shape)"] += 1
                uncosted.append(node.name or (node.output[0] if node.output else op))
            else:
                macs = got
                report.macs += macs
                report.by_operator[op] = report.by_operator.get(op, 0) + macs
        elif op not in ZERO_COST_OPS and op != "If":  # If nodes: _cost_if
            unsupported[op] += 1
        params = node_params.get(idx, 0)
        if macs or params:
            report.by_module.append({"name": node.name or (node.output[0] if node.output else f"node{idx}"),
                                     "op_type": op, "macs": int(macs), "params": int(params)})
    report.unsupported_ops.update(unsupported)
    if uncosted:
        report.warnings.append(f"MACs of {len(uncosted)} node(s) not counted, their shapes are unknown: "
                               + ", ".join(uncosted[:5]) + (" ..." if len(uncosted) > 5 else ""))


def _graph_macs(graph, shapes: dict) -> tuple[list[tuple[str, str, int]], Counter]:
    """((node name, operator, MACs) for the MAC nodes directly in ``graph``, operators not costed):
    MAC nodes whose shapes are unknown, and operators that are not data movement, by count."""
    rows, skipped = [], Counter()
    for node in graph.node:
        op = op_name(node)
        if op in MAC_HANDLERS:
            macs = node_macs(node, shapes)
            if macs is None:
                skipped[f"{op} (unknown shape)"] += 1
            else:
                rows.append((node.name or (node.output[0] if node.output else op), op, int(macs)))
        elif op not in ZERO_COST_OPS:
            skipped[op] += 1
    return rows, skipped


def _cost_if(node, shapes: dict, report: FlopReport) -> None:
    """Cost an ``If`` node whose condition is unknown (:func:`_inline_taken_branches` inlines the
    others) by its larger branch, with a warning."""
    label = node.name or (node.output[0] if node.output else "If")
    branches = {a.name: a.g for a in node.attribute if a.name in ("then_branch", "else_branch")}
    costed = {name: _graph_macs(g, shapes) for name, g in branches.items()}
    chosen = max(costed, key=lambda b: sum(m for _, _, m in costed[b][0]))
    rows, skipped = costed[chosen]
    for name, op, macs in rows:
        report.macs += macs
        report.by_operator[op] = report.by_operator.get(op, 0) + macs
        report.by_module.append({"name": f"{label}/{name}", "op_type": op, "macs": macs, "params": 0})
    for op, count in skipped.items():
        report.unsupported_ops[f"{op} (inside If)"] = report.unsupported_ops.get(f"{op} (inside If)", 0) + count
    report.warnings.append(f"If node {label!r}: its condition is unknown; counted the larger branch ({chosen}), "
                           f"{sum(m for _, _, m in rows):,} MACs")


def _cost_control_flow(model, shapes: dict, report: FlopReport) -> None:
    """Cost the ``If`` nodes left in the main graph (:func:`_cost_if`); list the operators inside
    ``Loop`` / ``Scan`` bodies as unsupported and say which MAC operators they hold."""
    for node in model.graph.node:
        op = op_name(node)
        if op == "If":
            _cost_if(node, shapes, report)
            continue
        if op not in CONTROL_FLOW_OPS:
            continue
        inner: Counter = Counter()
        for body in node_subgraphs(node):
            for sub, _ in walk_graphs(body):
                for n in sub.node:
                    inner[op_name(n)] += 1
        for inner_op, count in inner.items():
            if inner_op not in ZERO_COST_OPS:
                key = f"{inner_op} (inside {op})"
                report.unsupported_ops[key] = report.unsupported_ops.get(key, 0) + count
        mac_inner = {k: v for k, v in inner.items() if k in MAC_HANDLERS}
        label = node.name or (node.output[0] if node.output else op)
        detail = ", ".join(f"{v} {k}" for k, v in sorted(mac_inner.items())) or "no MAC ops"
        report.warnings.append(f"{op} node {label!r} holds subgraph(s) with {detail}; loops are not costed")


def count_onnx(model_or_path, input_shapes: dict[str, tuple[int, ...]] | None = None,
               values: dict | None = None) -> FlopReport:
    """Count an ONNX model from its graph (``onnx.shape_inference`` after fixing dynamic dims).

    ``values``: input name -> array, fed to the ONNX Runtime probe run (when shapes are left
    unknown, or to read the conditions of ``If`` nodes: a sample rate picks the branch) where
    its shape is the input's; other inputs are fed zeros.

    ``model_or_path``: a path (external data is read from the model's folder after
    :func:`benchmark.safety.check_onnx_external_data`) or an ``onnx.ModelProto``.
    ``input_shapes``: name -> concrete shape for the graph inputs; without it a dynamic dim 0
    counts as 1 (with a warning). ``by_module`` has one row per node with MACs or parameters.
    ``size_bytes`` is the file size plus its external-data files (None for an in-memory model).
    """
    model, base_dir, size_bytes = _read(model_or_path)
    report_warnings: list[str] = []
    batch = fix_input_dims(model, input_shapes, report_warnings)
    params = count_parameters(model, base_dir)
    report_warnings.extend(params.warnings)
    _inline_taken_branches(model, base_dir, report_warnings, values)
    shapes = _infer_shapes(model, base_dir, report_warnings, values)
    node_params, unattributed = attribute_parameters(model, params.elements)
    report = FlopReport(params=params.total, macs=0, flops=0, size_bytes=size_bytes,
                        sparsity=(params.zeros / params.total if params.total else 0.0), counter="onnx-graph",
                        batch_size=batch, warnings=report_warnings)
    _count_macs(model, shapes, node_params, report)
    if unattributed:
        report.by_module.append({"name": "(subgraphs and unattributed weights)", "op_type": "-", "macs": 0,
                                 "params": int(unattributed)})
    _cost_control_flow(model, shapes, report)
    report.flops = 2 * report.macs
    report.unsupported_ops = dict(sorted(report.unsupported_ops.items()))
    return report

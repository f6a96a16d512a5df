"""ONNX graph helpers shared by the FLOP counter, the compressions, the backends and the safety checks.

- Walking: :func:`walk_graphs` yields a graph and every subgraph inside its control-flow nodes
  (``If``/``Loop``/``Scan`` bodies, at any depth); :func:`node_subgraphs` lists one node's bodies;
  :func:`iter_tensors` yields every tensor a graph stores (initializers, sparse initializers,
  tensor attributes such as ``Constant`` values), subgraphs included.
- Reading: :func:`op_name` (``domain.op_type`` outside the default domain), :func:`attr`.
- Shapes: :func:`fix_input_dims` writes concrete input dims into a graph; :func:`dims_only_copy`
  drops the weight payloads that shape inference does not need.
- Files: :func:`external_data_files` lists the external data files an ONNX file references.
- Running: :func:`cpu_session` opens an ONNX Runtime CPU session with warnings silenced;
  :func:`ort_errors` are the exception types ONNX Runtime raises for a model it cannot load or run.

onnx and onnxruntime are imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from .errors import ConfigError

#: Ops that carry subgraphs (bodies that run under control flow).
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")


def op_name(node) -> str:
    """``op_type`` for the default domain, ``domain.op_type`` otherwise (``com.microsoft.QGemm``)."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def attr(node, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name`` (``default`` when it has none)."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def node_subgraphs(node) -> list:
    """The ``GraphProto`` bodies held in ``node``'s attributes (empty for an ordinary node)."""
    import onnx

    out = []
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


def walk_graphs(graph, parent: str | None = None) -> Iterator[tuple[Any, str | None]]:
    """Yield ``(graph, enclosing op)`` for ``graph`` and all its subgraphs, depth first.

    The enclosing op is None for ``graph`` itself and, for a subgraph, the op name
    (:func:`op_name`) of the outermost control-flow node it sits in.
    """
    yield graph, parent
    for node in graph.node:
        for sub in node_subgraphs(node):
            yield from walk_graphs(sub, parent or op_name(node))


def recurrent_state_axes(model) -> dict[str, int]:
    """``{graph input: batch axis}`` for the graph inputs that are the initial state of an LSTM, GRU
    or RNN node (``initial_h`` / ``initial_c``: ``[directions, batch, hidden]``, batch on dim 1; dim 0
    with ``layout=1``). ``model``: an ``onnx.ModelProto`` or a path (the graph is read without weights)."""
    if isinstance(model, (str, Path)):
        import onnx

        model = onnx.load(str(model), load_external_data=False)
    inputs = {i.name for i in model.graph.input}
    out: dict[str, int] = {}
    for graph, _ in walk_graphs(model.graph):
        for node in graph.node:
            if node.op_type not in ("LSTM", "GRU", "RNN") or node.domain not in ("", "ai.onnx"):
                continue
            axis = 0 if attr(node, "layout", 0) == 1 else 1
            for name in list(node.input)[5:7]:
                if name in inputs:
                    out[name] = axis
    return out


def iter_tensors(graph) -> Iterator[Any]:
    """Every ``TensorProto`` ``graph`` stores, subgraphs included: initializers, the values and
    indices of sparse initializers, and tensor attributes (``Constant`` values and the like)."""
    import onnx

    kinds = onnx.AttributeProto
    for g, _ in walk_graphs(graph):
        yield from g.initializer
        for st in g.sparse_initializer:
            yield st.values
            yield st.indices
        for node in g.node:
            for a in node.attribute:
                if a.type == kinds.TENSOR:
                    yield a.t
                elif a.type == kinds.TENSORS:
                    yield from a.tensors
                elif a.type == kinds.SPARSE_TENSOR:
                    yield a.sparse_tensor.values
                    yield a.sparse_tensor.indices


def external_data_files(path: str | Path) -> list[Path]:
    """The external data files the ONNX file at ``path`` references that exist beside it, in order
    of first reference. :func:`benchmark.safety.check_onnx_external_data` is the checking variant."""
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    files: list[Path] = []
    seen: set[str] = set()
    for tensor in iter_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in seen:
                seen.add(entry.value)
                f = path.parent / entry.value
                if f.is_file():
                    files.append(f)
    return files


def copy_model(model):
    """A deep copy of a ``ModelProto``."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def fix_input_dims(model, input_shapes: dict | None, report_warnings: list[str]) -> int:
    """Write concrete dims into ``model``'s graph inputs (in place); returns the batch size (dim 0 of
    the first input).

    ``input_shapes``: name -> shape for some inputs (ConfigError for a name the graph lacks or a
    rank that differs). Other inputs keep their dims, with a dynamic dim 0 set to 1; each such
    choice, and dynamic dims left unknown, is appended to ``report_warnings``.
    """
    init = {t.name for t in model.graph.initializer}
    real = [i for i in model.graph.input if i.name not in init]
    given = dict(input_shapes or {})
    unknown = [n for n in given if n not in {i.name for i in real}]
    if unknown:
        raise ConfigError(f"input shape given for {', '.join(map(repr, unknown))}, which the ONNX model does not have; "
                          f"inputs: {', '.join(i.name for i in real)}")
    batch = None
    for inp in real:
        tt = inp.type.tensor_type
        if inp.name in given:
            shape = [int(d) for d in given[inp.name]]
            if tt.HasField("shape") and len(tt.shape.dim) != len(shape):
                raise ConfigError(f"input {inp.name!r} has rank {len(tt.shape.dim)}; the shape given, "
                                  f"{'x'.join(map(str, shape))}, has rank {len(shape)}")
            if not tt.HasField("shape"):
                for _ in shape:
                    tt.shape.dim.add()
            for d, v in zip(tt.shape.dim, shape):
                d.Clear()
                d.dim_value = v
        else:
            dynamic = []
            for i, d in enumerate(tt.shape.dim):
                if d.WhichOneof("value") != "dim_value":
                    if i == 0:
                        label = d.dim_param or "?"
                        d.Clear()
                        d.dim_value = 1
                        report_warnings.append(f"input {inp.name!r}: dynamic batch dim ({label}) counted as 1")
                    else:
                        dynamic.append(i)
            if dynamic:
                report_warnings.append(f"input {inp.name!r} has dynamic dims {dynamic} without values: ops that depend "
                                       "on them are not costed; pass input_shapes")
        if batch is None and tt.HasField("shape") and tt.shape.dim and tt.shape.dim[0].WhichOneof("value") == "dim_value":
            batch = tt.shape.dim[0].dim_value
    return int(batch or 1)


def dims_only_copy(model):
    """A copy of ``model`` whose large initializer payloads are dropped (shape inference needs dims only)."""
    import onnx

    copy = copy_model(model)
    for graph, _ in walk_graphs(copy.graph):
        for t in graph.initializer:
            if _elements(t.dims) > 1024 and t.data_location != onnx.TensorProto.EXTERNAL:
                t.ClearField("raw_data")
                for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                    t.ClearField(f)
                t.data_location = onnx.TensorProto.EXTERNAL
                entry = t.external_data.add()
                entry.key, entry.value = "location", "__dims_only__"
    return copy


def _elements(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def cpu_session(model, threads: int = 1, optimize: bool = True):
    """An ONNX Runtime ``InferenceSession`` on the CPU provider, warnings silenced.

    ``model``: a path or an ``onnx.ModelProto``. ``threads`` intra-op threads, one inter-op
    thread; ``optimize=False`` turns ONNX Runtime's graph optimizations off (every node of the
    graph then runs as written, e.g. to read intermediate values).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = str(model) if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])


def ort_errors() -> tuple[type[BaseException], ...]:
    """The exception types ONNX Runtime raises for a model it cannot load or run (its own pybind
    classes, plus ``RuntimeError``/``ValueError``)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as st

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
             "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail")
    return tuple(getattr(st, n) for n in names if hasattr(st, n)) + (RuntimeError, ValueError)

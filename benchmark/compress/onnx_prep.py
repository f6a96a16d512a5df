"""Real-world ONNX preparation before quantization or precision conversion.

Models found in the wild differ from freshly exported ones in ways that make ONNX Runtime's
quantizer silently skip work: weights stored as ``Constant`` nodes are not seen as weights, opsets
below 13 cannot hold per-channel ``QuantizeLinear``/``DequantizeLinear`` axes, and nodes inside
``If``/``Loop``/``Scan`` subgraphs are not quantized. The helpers here fix what can be fixed,
count what cannot, and return numbers so the compression record can say exactly what happened.

Every function takes a ``ModelProto`` and returns a new one; the input is never modified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CompressionError, one_line
from ..onnx_graph import copy_model, node_subgraphs, walk_graphs

#: Minimum opset for per-channel QDQ (``axis`` on QuantizeLinear/DequantizeLinear).
PER_CHANNEL_MIN_OPSET = 13
#: Protobuf's hard limit; larger models are written with external data.
_PROTO_LIMIT_BYTES = 2_000_000_000


def load_model(path: str | Path):
    """Load an ONNX file (external data beside it included); raise ``CompressionError`` if unreadable."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path))
    except (OSError, ValueError, DecodeError) as exc:
        raise CompressionError(f"cannot read ONNX model {str(path)!r}: {exc}") from exc


def save_model(model, path: str | Path) -> Path:
    """Save ``model`` to ``path``; models over 2 GB get their weights in ``<name>.data`` beside it."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model.ByteSize() > _PROTO_LIMIT_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, str(path))
    return path


def opset_of(model) -> int:
    """The default-domain (``ai.onnx``) opset version of ``model``."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def constants_to_initializers(model) -> tuple[Any, int]:
    """Move top-level ``Constant`` nodes into graph initializers.

    ONNX Runtime's quantizer treats only initializers as weights: a ``MatMul``/``Conv`` whose
    weight comes from a ``Constant`` node is quantized as if the weight were an activation (or
    skipped). Returns ``(new_model, number_of_constants_converted)``. Constants with ``value``,
    ``value_float(s)`` or ``value_int(s)`` are converted; sparse/string constants are left.
    Constants inside subgraphs stay where they are (a subgraph cannot see outer initializers
    declared after it is built in older IR versions, and those nodes stay float anyway).
    """
    import numpy as np
    from onnx import helper, numpy_helper

    out = copy_model(model)
    graph = out.graph
    keep = []
    converted = 0
    existing = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.output) != 1:
            keep.append(node)
            continue
        name = node.output[0]
        attrs = {a.name: a for a in node.attribute}
        tensor = None
        if "value" in attrs:
            tensor = helper.get_attribute_value(attrs["value"])
            tensor.name = name
        elif "value_float" in attrs:
            tensor = numpy_helper.from_array(np.array(attrs["value_float"].f, dtype=np.float32), name)
        elif "value_floats" in attrs:
            tensor = numpy_helper.from_array(np.array(list(attrs["value_floats"].floats), dtype=np.float32), name)
        elif "value_int" in attrs:
            tensor = numpy_helper.from_array(np.array(attrs["value_int"].i, dtype=np.int64), name)
        elif "value_ints" in attrs:
            tensor = numpy_helper.from_array(np.array(list(attrs["value_ints"].ints), dtype=np.int64), name)
        if tensor is None or name in existing:
            keep.append(node)
            continue
        graph.initializer.append(tensor)
        existing.add(name)
        if out.ir_version < 4:  # before IR 4 every initializer must also be a graph input
            graph.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
        converted += 1
    if converted:
        del graph.node[:]
        graph.node.extend(keep)
    return out, converted


def upgrade_opset(model, target: int = PER_CHANNEL_MIN_OPSET) -> tuple[Any, str | None]:
    """Convert ``model`` to opset ``target`` with ``onnx.version_converter`` when it is lower.

    Returns ``(model, None)`` on success or when no upgrade is needed, and ``(original_model,
    reason)`` when the converter fails (the caller then falls back and says so).
    """
    import onnx
    from onnx import version_converter

    current = opset_of(model)
    if current >= target:
        return model, None
    try:
        upgraded = version_converter.convert_version(model, target)
        onnx.checker.check_model(upgraded)
    except (RuntimeError, ValueError, IndexError, onnx.checker.ValidationError) as exc:
        return model, f"onnx.version_converter could not upgrade opset {current} -> {target}: {one_line(exc)}"
    return upgraded, None


def subgraph_report(model) -> dict[str, Any]:
    """Count control-flow nodes (If/Loop/Scan) at the top level and the nodes inside their bodies."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node_subgraphs(node):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    inner = sum(len(graph.node) for graph, parent in walk_graphs(model.graph) if parent is not None)
    return {"control_flow_nodes": counts, "nodes_inside_subgraphs": inner}


def check_model(model_or_path, what: str = "model") -> None:
    """``onnx.checker`` the model; raise ``CompressionError`` with its first line if it fails."""
    import onnx

    try:
        if isinstance(model_or_path, (str, Path)):
            onnx.checker.check_model(str(model_or_path))
        else:
            onnx.checker.check_model(model_or_path)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise CompressionError(f"{what} fails onnx.checker: {one_line(exc)}") from exc


def op_counts(model) -> dict[str, int]:
    """Top-level node counts by op type (sorted by op type)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def optimize_graph(model) -> tuple[Any, str | None]:
    """Constant-fold and simplify ``model`` with ``onnxscript.optimizer`` (BatchNorm folded into Conv,
    ``Shape -> Expand`` chains that build zero biases folded, dead nodes removed).

    Exporters leave such chains in the graph; a Conv whose bias is computed at run time is not
    fused into an INT8 kernel. Returns ``(model, None)``, or ``(original, reason)`` when the
    optimizer fails (the caller records the reason and quantizes the graph as it is).
    """
    import onnx

    try:
        import onnxscript.optimizer as oso
    except ImportError as exc:
        return model, f"onnxscript is not installed ({exc}); the graph was not constant-folded"
    try:
        out = oso.optimize(copy_model(model))
        onnx.checker.check_model(out)
    except Exception as exc:  # the optimizer raises many types; the unoptimized model is used and the reason recorded
        return model, f"constant folding with onnxscript failed ({one_line(exc, 200)}); quantizing the graph as it is"
    restore_node_names(model, out)
    return out, None


def restore_node_names(before, after, max_hops: int = 4) -> int:
    """Give nodes the optimizer renamed (a Conv with its BatchNorm folded in becomes ``node_Conv_0``)
    the name of the node they came from, so every page and record names layers as the model file does.

    A renamed node of ``after`` takes the name of the node of the same op type in ``before`` that
    produced its output, following the first input back through at most ``max_hops`` nodes (the
    BatchNorm that wrote the output, then the Conv that fed it). Names already in ``after`` are
    never reused. Returns how many nodes were renamed (in place).
    """
    old_names = {n.name for n in before.graph.node if n.name}
    producer = {o: n for n in before.graph.node for o in n.output}
    taken = {n.name for n in after.graph.node if n.name}
    renamed = 0
    for node in after.graph.node:
        if node.name in old_names or not node.output:
            continue
        source = producer.get(node.output[0])
        for _ in range(max_hops):
            if source is None or source.op_type == node.op_type:
                break
            source = producer.get(source.input[0]) if source.input else None
        if source is None or source.op_type != node.op_type or not source.name or source.name in taken:
            continue
        taken.discard(node.name)
        node.name = source.name
        taken.add(source.name)
        renamed += 1
    return renamed


@dataclass
class PrepReport:
    """What :func:`prepare_for_quantization` did and found."""

    opset_before: int
    opset_after: int
    constants_converted: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    per_channel_possible: bool = True
    subgraphs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "opset_before": self.opset_before,
            "opset_after": self.opset_after,
            "constants_converted_to_initializers": self.constants_converted,
            "nodes_before_folding": self.nodes_before,
            "nodes_after_folding": self.nodes_after,
            "per_channel_possible": self.per_channel_possible,
            **self.subgraphs,
        }


def prepare_for_quantization(model, per_channel: bool = True, fold: bool = True) -> tuple[Any, PrepReport]:
    """Constants -> initializers, opset upgrade to 13+ (needed for per-channel QDQ), constant folding
    (:func:`optimize_graph`, when ``fold``), subgraph count.

    When the opset cannot be upgraded and ``per_channel`` is asked for, ``report.per_channel_possible``
    is False and a warning says that the quantizer falls back to per-tensor weights.
    """
    before = opset_of(model)
    model, n_const = constants_to_initializers(model)
    report = PrepReport(opset_before=before, opset_after=before, constants_converted=n_const)
    if before < PER_CHANNEL_MIN_OPSET:
        upgraded, reason = upgrade_opset(model, PER_CHANNEL_MIN_OPSET)
        if reason is None:
            model = upgraded
            report.opset_after = opset_of(model)
            report.warnings.append(
                f"opset {before} upgraded to {report.opset_after} with onnx.version_converter "
                f"(per-channel QDQ needs opset >= {PER_CHANNEL_MIN_OPSET})"
            )
        else:
            report.per_channel_possible = False
            report.warnings.append(
                f"{reason}; per-channel weights need opset >= {PER_CHANNEL_MIN_OPSET}, so weights are "
                f"quantized per-tensor" if per_channel else reason
            )
    report.nodes_before = len(model.graph.node)
    if fold:
        model, reason = optimize_graph(model)
        if reason:
            report.warnings.append(reason)
        model, n_more = constants_to_initializers(model)
        report.constants_converted += n_more
    report.nodes_after = len(model.graph.node)
    sub = subgraph_report(model)
    report.subgraphs = sub
    if sub["control_flow_nodes"]:
        kinds = ", ".join(f"{n} {k}" for k, n in sub["control_flow_nodes"].items())
        report.warnings.append(
            f"model has control flow ({kinds}); the {sub['nodes_inside_subgraphs']} nodes inside their "
            f"subgraphs stay float"
        )
    return model, report


def module_path_of_node(node) -> str | None:
    """The PyTorch module path (``layer1.0.conv1``) an exported ONNX node came from, if known.

    The dynamo exporter stores it in ``metadata_props['pkg.torch.onnx.name_scopes']``; the
    TorchScript exporter encodes it in the node name (``/layer1/0/conv1/Conv``).
    """
    import ast

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                break
            if isinstance(scopes, list) and len(scopes) >= 2:
                return ".".join(str(s) for s in scopes[1:-1] if s != "")
    name = node.name
    if name.startswith("/") and name.count("/") >= 2:
        return ".".join(p for p in name.split("/")[1:-1] if p)
    return None


def nodes_for_layers(model, layers, compute_only: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    """Map user layer names (ONNX node names or PyTorch module paths) to ONNX node names.

    A name matches a node whose name equals it, or every node exported from that module or one of
    its children. Returns ``({layer: [node names]}, [unmatched layer names])``.
    """
    nodes = [n for n in model.graph.node if n.op_type not in ("Constant",)]
    by_name = {n.name: n for n in nodes if n.name}
    paths = {n.name: module_path_of_node(n) for n in nodes if n.name}
    mapping: dict[str, list[str]] = {}
    missing: list[str] = []
    for layer in layers:
        if layer in by_name:
            mapping[layer] = [layer]
            continue
        hits = [name for name, path in paths.items()
                if path is not None and (path == layer or path.startswith(layer + "."))]
        if hits:
            mapping[layer] = hits
        else:
            missing.append(layer)
    return mapping, missing


def layer_names(model, limit: int = 8) -> list[str]:
    """A few module paths (or node names) to quote in an error message."""
    seen: list[str] = []
    for node in model.graph.node:
        if node.op_type in ("Constant", "Identity"):
            continue
        path = module_path_of_node(node) or node.name
        if path and path not in seen:
            seen.append(path)
        if len(seen) >= limit:
            break
    return seen


def topological_sort(model) -> Any:
    """A copy of ``model`` whose top-level nodes are in topological order (``onnx.checker`` needs it).

    Converters that append nodes (Cast insertion in FP16 conversion) can leave a graph ONNX Runtime
    accepts but the checker refuses. Nodes whose inputs never become available keep their
    relative order at the end (the checker then names them).
    """
    out = copy_model(model)
    g = out.graph
    available = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending = list(g.node)
    ordered = []
    progress = True
    while pending and progress:
        progress = False
        rest = []
        for node in pending:
            # outer-scope names used inside subgraphs are not checked here: only direct inputs
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
                progress = True
            else:
                rest.append(node)
        pending = rest
    ordered.extend(pending)
    nodes = [type(n)() for n in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del g.node[:]
    g.node.extend(nodes)
    return out

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
import os
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
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
            text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self.issues.append((f"{node.op_type} could not be converted ({type(exc).__name__}: {text})", node.name or node.op_type))
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
    from .onnx_ops import with_signature

    return with_signature(module).eval()


def unsupported_nodes(model) -> list[tuple[str, str]]:
    """``(reason, node name)`` for every node of ``model`` (a ``ModelProto``) that cannot be
    converted, without raising; empty when the whole graph converts."""
    cleaned, _ = clean_graph(model)
    issues: list[tuple[str, str]] = []
    _GraphBuilder(cleaned.graph, opset_of(cleaned), None, issues, top=True).build()
    return issues


# ---------------------------------------------------------------------------------------------
# Conversion, verification


@dataclass
class Verification:
    """The converted module against ONNX Runtime on the same feeds (worst over the outputs)."""

    max_abs_err: float
    cosine: float
    ok: bool
    tolerance: str = f"max abs error <= {ATOL:g} + {RTOL:g} x max |ONNX Runtime output|, cosine >= {MIN_COSINE}"
    outputs: list[dict[str, Any]] = field(default_factory=list)
    feeds: dict[str, list[int]] = field(default_factory=dict)  # input name -> shape used
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return f"outputs match ONNX Runtime within {self.max_abs_err:.1e} (cosine {self.cosine:.6f})"


@dataclass
class Conversion:
    """A converted ONNX model: the module and how it was obtained."""

    module: Any
    onnx_sha256: str
    conversion_time_s: float
    cleanup: CleanupReport
    op_counts: dict[str, int]
    verification: Verification | None = None
    from_cache: bool = False
    source_model: Any = field(default=None, repr=False)  # the ONNX ModelProto it came from

    def record(self) -> dict[str, Any]:
        """Plain data describing the conversion (for result rows and the model page)."""
        return {
            "converter": f"slimbench onnx_to_torch v{CONVERTER_VERSION}",
            "onnx_sha256": self.onnx_sha256,
            "conversion_time_s": self.conversion_time_s,
            "cleanup": self.cleanup.to_dict(),
            "op_counts": dict(self.op_counts),
            "verification": None if self.verification is None else self.verification.to_dict(),
            "from_cache": self.from_cache,
        }


def _load(source) -> tuple[Any, str]:
    """``(ModelProto, sha256)`` from a path or a ``ModelProto``."""
    import onnx

    from google.protobuf.message import DecodeError

    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            sha = file_sha256(path)  # checks first that external data stays inside the model's folder
            model = onnx.load(str(path))
        except (OSError, ValueError, DecodeError) as exc:
            raise ConversionError(f"cannot read ONNX model {path.name}: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
        return model, sha
    return source, hashlib.sha256(source.SerializeToString()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of an ONNX file and of the external-data files it references (in name order)."""
    from ..safety import check_onnx_external_data

    path = Path(path)
    h = hashlib.sha256()
    for f in [path] + sorted(check_onnx_external_data(path)):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def convert(source) -> Conversion:
    """Clean and convert ``source`` (an ONNX path or ``ModelProto``); not verified (see :func:`verify`)."""
    from ..compress.onnx_prep import op_counts

    model, sha = _load(source)
    start = time.perf_counter()
    cleaned, report = clean_graph(model)
    module = build_module(cleaned)
    conv = Conversion(module, sha, time.perf_counter() - start, report, op_counts(model))
    conv.source_model = model
    return conv


def _as_args(module, feeds: dict[str, Any]) -> list:
    import numpy as np
    import torch

    missing = [n for n in module.input_names if n not in feeds]
    if missing:
        raise ConversionError(f"verification feeds lack input(s) {', '.join(missing)}; inputs: {', '.join(module.input_names)}")
    return [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in module.input_names]


def compare_output(name: str, got, ref, against: str = "ONNX Runtime") -> dict[str, Any]:
    """One output ``got`` against the reference ``ref`` (numpy arrays): ``max_abs_err``, ``cosine``,
    ``limit`` and ``error`` (a one-line reason naming ``against``) when it is off by more than the tolerance."""
    import numpy as np

    row: dict[str, Any] = {"name": name, "shape": list(ref.shape)}
    if tuple(got.shape) != tuple(ref.shape):
        row["error"] = f"output {name!r} has shape {list(got.shape)}, {against} gives {list(ref.shape)}"
        return row
    if ref.dtype.kind not in "fc":
        mismatched = int((got != ref).sum())
        row.update(max_abs_err=float(mismatched > 0), cosine=1.0 if not mismatched else 0.0, limit=0.0)
        if mismatched:
            row["error"] = f"output {name!r}: {mismatched} of {ref.size} values differ from {against}"
        return row
    g, r = got.astype(np.float64), ref.astype(np.float64)
    if not (np.isfinite(g).all() and np.isfinite(r).all()):
        same = np.array_equal(np.isnan(g), np.isnan(r)) and np.allclose(np.nan_to_num(g), np.nan_to_num(r), atol=ATOL)
        if not same:
            row["error"] = f"output {name!r} has NaN/Inf where {against}'s differs"
            return row
        g, r = np.nan_to_num(g), np.nan_to_num(r)
    err = float(np.abs(g - r).max()) if r.size else 0.0
    ref_max = float(np.abs(r).max()) if r.size else 0.0
    denom = float(np.linalg.norm(g) * np.linalg.norm(r))
    cos = float(np.dot(g.ravel(), r.ravel()) / denom) if denom > 0 else (1.0 if err == 0 else 0.0)
    limit = ATOL + RTOL * ref_max
    row.update(max_abs_err=err, cosine=cos, max_abs_ref=ref_max, limit=limit)
    if err > limit or cos < MIN_COSINE:
        row["error"] = (f"output {name!r} differs from {against}: max abs error {err:.3g} (limit {limit:.3g}), "
                        f"cosine {cos:.6f}")
    return row


def _ort_outputs(source, feeds: dict[str, Any], output_names: list[str] | None = None) -> list:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    target = str(source) if isinstance(source, (str, Path)) else source.SerializeToString()
    try:
        sess = ort.InferenceSession(target, opts, providers=["CPUExecutionProvider"])
        names = {i.name for i in sess.get_inputs()}
        return sess.run(output_names, {k: v for k, v in feeds.items() if k in names})
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidArgument, ...)
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"ONNX Runtime could not run the model on the verification feeds: {text}") from None


def verify(module, source, feeds: dict[str, Any]) -> Verification:
    """Run ``module`` and ONNX Runtime (CPU, on the original ``source``) on ``feeds``; compare every output."""
    import torch

    args = _as_args(module, feeds)
    ref = _ort_outputs(source, feeds)
    shapes = {n: list(a.shape) for n, a in zip(module.input_names, args)}
    try:
        with torch.no_grad():
            out = module(*args)
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError, AttributeError, NotImplementedError) as exc:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return Verification(float("inf"), 0.0, False, feeds=shapes, reason=f"the converted module failed on the verification inputs: {text}")
    outs = out if isinstance(out, tuple) else (out,)
    rows = [compare_output(n, o.detach().numpy(), r) for n, o, r in zip(module.output_names, outs, ref)]
    bad = [r["error"] for r in rows if "error" in r]
    errs = [r.get("max_abs_err", float("inf")) for r in rows]
    coss = [r.get("cosine", 0.0) for r in rows]
    return Verification(max(errs, default=0.0), min(coss, default=1.0), not bad, outputs=rows, feeds=shapes,
                        reason="; ".join(bad) or None)


def convert_verified(source, feeds: dict[str, Any]) -> Conversion:
    """:func:`convert` then :func:`verify` on ``feeds``; :class:`ConversionError` when they disagree.

    A mismatch names the first node whose output differs from ONNX Runtime's (found by running
    both with every intermediate tensor exposed), so the message points at the op to blame.
    """
    conv = convert(source)
    model = conv.source_model
    conv.verification = verify(conv.module, model, feeds)
    if not conv.verification.ok:
        culprit = first_mismatch(model, feeds) if "differs" in (conv.verification.reason or "") else None
        where = f"; first differing node: {culprit}" if culprit else ""
        raise ConversionError(f"{conv.verification.reason}{where}", ops=[culprit] if culprit else [])
    return conv


def first_mismatch(model, feeds: dict[str, Any]) -> str | None:
    """``"Op (node name)"`` of the first top-level node whose output differs from ONNX Runtime's
    on ``feeds`` (every intermediate tensor exposed as a graph output), or None when none does."""
    import torch
    from onnx import helper

    from ..compress.onnx_prep import copy_model

    cleaned, _ = clean_graph(model)
    module = build_module(cleaned)
    probe = copy_model(cleaned)
    existing = {o.name for o in probe.graph.output}
    names = [n for _k, _i, outs, _e, _l in module._plan for n in outs if n and n not in existing]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    all_names = [o.name for o in probe.graph.output]
    try:
        ref = dict(zip(all_names, _ort_outputs(probe, feeds)))
    except ConversionError:
        return None
    env = dict(zip(module.input_names, _as_args(module, feeds)))
    try:
        with torch.no_grad():
            module.run(env)
    except RuntimeError as exc:
        return str(exc).split(":", 1)[0].removeprefix("ONNX node ")
    for _key, _ins, outs, _env, label in module._plan:
        for n in outs:
            if n and n in ref and n in env and "error" in compare_output(n, env[n].detach().numpy(), ref[n]):
                return label
    return None


# ---------------------------------------------------------------------------------------------
# Cache: state_dict + recipe, loadable with weights_only=True


def save_conversion(conv: Conversion, path: str | Path) -> Path:
    """Write ``conv`` as plain data: ``torch.save`` of the state_dict (tensors), the ONNX file's
    SHA-256, the converter version and the verification record. No code is pickled."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CACHE_FORMAT,
        "converter_version": CONVERTER_VERSION,
        "onnx_sha256": conv.onnx_sha256,
        "record": conv.record(),
        "state_dict": dict(conv.module.state_dict()),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two processes may convert the same file at once
    torch.save(payload, str(tmp))
    tmp.replace(path)
    return path


def load_conversion(onnx_source, cache_path: str | Path) -> Conversion:
    """Rebuild the module from ``onnx_source`` (the recipe) and load the cached weights
    (``torch.load(weights_only=True)``); :class:`ConversionError` if the cache is for another
    file, another converter version, or does not fit."""
    import pickle

    import torch

    cache_path = Path(cache_path)
    try:
        payload = torch.load(str(cache_path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ConversionError(f"cannot read converted-model cache {cache_path.name}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT:
        raise ConversionError(f"{cache_path.name} is not a converted-model cache")
    if payload.get("converter_version") != CONVERTER_VERSION:
        raise ConversionError(f"{cache_path.name} was written by converter v{payload.get('converter_version')}; "
                              f"this is v{CONVERTER_VERSION}: convert again")
    conv = convert(onnx_source)
    if payload.get("onnx_sha256") != conv.onnx_sha256:
        raise ConversionError(f"{cache_path.name} belongs to another ONNX file (SHA-256 differs)")
    try:
        conv.module.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ConversionError(f"{cache_path.name} does not fit the converted module: {str(exc).splitlines()[0][:200]}") from None
    record = payload.get("record") or {}
    ver = record.get("verification")
    if ver:
        conv.verification = Verification(**ver)
    conv.from_cache = True
    return conv


def cache_path_for(onnx_path: str | Path, cache_dir: str | Path) -> Path:
    """``<cache_dir>/<sha256>.v<version>.pt`` for an ONNX file."""
    return Path(cache_dir) / f"{file_sha256(onnx_path)}.v{CONVERTER_VERSION}.pt"


def convert_cached(onnx_path: str | Path, feeds: dict[str, Any], cache_dir: str | Path) -> Conversion:
    """The verified conversion of ``onnx_path``: from ``cache_dir`` when converted before, else
    :func:`convert_verified` and saved there (also when the cached file cannot be used: damaged,
    or written by another converter version)."""
    cache = cache_path_for(onnx_path, cache_dir)
    if cache.exists():
        try:
            return load_conversion(onnx_path, cache)
        except ConversionError:
            pass  # converted again below; an error that is the model's own comes back from there
    conv = convert_verified(onnx_path, feeds)
    save_conversion(conv, cache)
    return conv

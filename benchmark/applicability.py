"""What applies to a loaded model: each compression and backend, available or not, and why.

:func:`check_model` answers for every compression (fp16, bf16, int8-dynamic, int8-static, mixed,
prune-unstructured, prune-structured, lowrank, distill) and every registered backend with one row
``{name, kind, available, reason}``. The reason says how it applies ("via ONNX->PyTorch
conversion, outputs match ONNX Runtime within 2.7e-05") or why it does not ("no PyTorch module:
the ONNX->PyTorch conversion failed: no converter for NonMaxSuppression (node /nms)"). The answer
comes from what the model is, never from running a sweep:

- the **ONNX side** (ONNX Runtime, TensorRT; FP16 and INT8 files): the uploaded ONNX file, or the
  ONNX export of a PyTorch model (made when a sweep needs it);
- the **PyTorch side** (the ``pytorch`` backend; FP16/BF16 weights, INT8 modules): the model's
  own module, or for an ONNX upload its converted module;
- **editable layers** (pruning, low-rank, distillation): an eager module's Conv/Linear layers, or
  those of the module converted from an ONNX file or from a TorchScript / ``.pt2`` model's ONNX
  export (:mod:`benchmark.models.conversion`).

The conversion is tried once per file and input shapes (its outcome is kept under the data
folder), in the process that loaded the model: ``slimbench info`` and the Model page run this in
an isolated child (:func:`benchmark.inspection.inspect_isolated`); a sweep's job converts on its own.
Backends that cannot run on this machine (no GPU, package missing) say so first.
"""
from __future__ import annotations

from typing import Any

#: Every compression the check answers for, in the order the pages list them.
COMPRESSIONS = ("fp16", "bf16", "int8-dynamic", "int8-static", "mixed", "prune-unstructured", "prune-structured",
                "lowrank", "distill")
#: Compressions that edit a PyTorch module's layers.
EDITING = ("prune-unstructured", "prune-structured", "lowrank", "distill")
#: Backends that run a PyTorch module (the rest run the ONNX side).
TORCH_BACKENDS = ("pytorch", "torch-tensorrt")
#: ONNX ops whose weights the editing compressions and INT8 layers work on.
_WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "LSTM", "GRU", "RNN")


def _row(name: str, kind: str, available: bool, reason: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "available": bool(available), "reason": reason}


class _Facts:
    """What the decisions rest on: the model's sides and its conversion."""

    def __init__(self, model, status: dict | None):
        import torch

        self.model = model
        module = model.torch_module
        self.native = module is not None and model.format != "onnx"  # an ONNX upload's module is a conversion
        self.script = isinstance(module, torch.jit.ScriptModule)
        self.exported = model.format == "exported"
        self.onnx_file = model.onnx_path is not None
        self.conversion = status.get("conversion") if status and status.get("ok") else None
        self.conversion_error = status.get("error") if status else None
        self.torch_side = self.native or self.conversion is not None
        self.editable = (self.native and not self.script and not self.exported) or self.conversion is not None
        self.weight_layers = self._weight_layers()

    def _weight_layers(self) -> int | None:
        """Conv/Linear/recurrent layers an editing compression can work on (None: unknown)."""
        if self.conversion is not None:
            ops = self.conversion.get("op_counts") or {}
            return sum(int(ops.get(op, 0)) for op in _WEIGHT_OPS)
        if self.editable:
            from .compress.prune import weight_layers

            return len(weight_layers(self.model.torch_module))
        return None

    # --- wording ----------------------------------------------------------------------------
    @property
    def check(self) -> str:
        """``outputs match ONNX Runtime within 2.7e-05`` (the conversion's verification, worst output)."""
        conv = self.conversion or {}
        source = conv.get("source_check")
        if source:
            kind = "TorchScript" if self.script else ".pt2"
            return f"outputs match the uploaded {kind} module within {source['max_abs_err']:.1e}"
        ver = conv.get("verification") or {}
        if ver.get("max_abs_err") is None:
            return "not verified"
        return f"outputs match ONNX Runtime within {ver['max_abs_err']:.1e}"

    @property
    def via(self) -> str:
        """How the editable module is obtained, for reasons."""
        if self.conversion is not None:
            return f"via {self.conversion.get('via')}, {self.check}"
        return "on the PyTorch module"

    def no_module(self, what: str) -> str:
        if self.conversion_error:
            return f"{what}: {self.conversion_error}"
        if self.script or self.exported:
            return f"{what}: the {'TorchScript' if self.script else '.pt2'} module cannot be edited and was not converted"
        return f"{what}: the model was not converted to PyTorch"

    @property
    def onnx_where(self) -> str:
        return "the uploaded ONNX file" if self.onnx_file else "its ONNX export (made when a sweep needs it)"

    @property
    def torch_where(self) -> str:
        return "the PyTorch module" if self.native else "the converted module"


def _precision_rows(f: _Facts) -> list[dict[str, Any]]:
    rows = []
    sides = [f"ONNX Runtime/TensorRT on {f.onnx_where}"]  # every model has one: its file, or its export
    if f.torch_side:
        sides.append(f"pytorch on {f.torch_where}")
    torch_note = "" if f.torch_side else "; not on pytorch (no PyTorch module: see pytorch)"
    rows.append(_row("fp16", "compression", True, "FP16 weights: " + "; ".join(sides) + torch_note))
    if f.torch_side:
        rows.append(_row("bf16", "compression", True, f"BF16 weights on {f.torch_where}; pytorch backend only "
                                                      "(ONNX Runtime has no BF16 CPU kernels)"))
    else:
        rows.append(_row("bf16", "compression", False, f.no_module("needs a PyTorch module (ONNX Runtime has no BF16 "
                                                                   "CPU kernels)")))
    rows.append(_dynamic_row(f))
    static = f"QDQ INT8 on {f.onnx_where}, calibrated on the data (random inputs without data)"
    if f.torch_side and not f.script:
        static += f"; PyTorch INT8 on {f.torch_where} where it traces"
    rows.append(_row("int8-static", "compression", True, static + torch_note))
    rows.append(_row("mixed", "compression", True, "FP16/BF16 with sensitive ops kept in FP32: " + "; ".join(sides)
                     + torch_note))
    return rows


def _dynamic_row(f: _Facts) -> dict[str, Any]:
    """int8-dynamic quantizes MatMul/Gemm/LSTM weights; a graph without them would not change."""
    from .compress.quantize.onnx_int8 import DYNAMIC_OP_TYPES

    targets = _onnx_ops(f, DYNAMIC_OP_TYPES)
    if targets is not None and not targets:
        return _row("int8-dynamic", "compression", False,
                    f"nothing to quantize: the graph has no {'/'.join(DYNAMIC_OP_TYPES)} node "
                    "(dynamic INT8 leaves convolutions in FP32; use int8-static)")
    where = f"ONNX Runtime dynamic INT8 on {f.onnx_where}"
    if targets:
        where += f" ({', '.join(f'{op} x{n}' for op, n in sorted(targets.items()))})"
    if f.torch_side and not f.script:
        where += f"; PyTorch dynamic INT8 (Linear/LSTM/GRU) on {f.torch_where}"
    return _row("int8-dynamic", "compression", True, where)


def _onnx_ops(f: _Facts, ops) -> dict[str, int] | None:
    """Counts of ``ops`` in the uploaded ONNX graph (None: not an ONNX upload, or unreadable)."""
    if not f.onnx_file:
        return None
    counts = (f.conversion or {}).get("op_counts")
    if counts is None:
        import onnx

        from .onnx_graph import walk_graphs

        try:
            proto = onnx.load(str(f.model.onnx_path), load_external_data=False)
        except (OSError, ValueError):
            return None
        counts = {}
        for graph, _ in walk_graphs(proto.graph):
            for node in graph.node:
                counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return {op: int(counts[op]) for op in ops if counts.get(op)}


def _editing_rows(f: _Facts) -> list[dict[str, Any]]:
    what = {"prune-unstructured": "unstructured pruning", "prune-structured": "structured pruning",
            "lowrank": "low-rank factorization", "distill": "distillation"}
    rows = []
    for name in EDITING:
        if not f.editable:
            rows.append(_row(name, "compression", False, f.no_module("needs an editable PyTorch module")))
        elif f.weight_layers == 0:
            rows.append(_row(name, "compression", False, "the model has no Conv/Linear/recurrent layer to "
                                                         + ("prune" if name.startswith("prune") else "edit")))
        else:
            extra = ""
            if name == "distill":
                extra = "; of pruned / low-rank variants against the original's outputs (no labels needed)"
            elif name == "prune-unstructured":
                extra = "; zeros only: no dense speedup"
            rows.append(_row(name, "compression", True, f"{what[name]} {f.via}{extra}"))
    return rows


def _backend_rows(f: _Facts) -> list[dict[str, Any]]:
    from .backends import BACKENDS

    rows = []
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)
        machine = [(d, *backend.availability(d)) for d in backend.devices]
        usable = [d for d, ok, _ in machine if ok]
        if not usable:
            reasons = sorted({r for _, ok, r in machine if not ok and r})
            rows.append(_row(name, "backend", False, "; ".join(reasons) or "not available on this machine"))
            continue
        on = f" (on {', '.join(usable)})"
        if name in TORCH_BACKENDS:
            if not f.torch_side:
                rows.append(_row(name, "backend", False, f.no_module("no PyTorch module")))
            elif name == "torch-tensorrt" and f.script:
                rows.append(_row(name, "backend", False, "torch-tensorrt compiles nn.Module and .pt2 models, not TorchScript"))
            else:
                check = f", {f.check}" if f.conversion is not None and not f.native else ""
                rows.append(_row(name, "backend", True, f"runs {f.torch_where}{check}{on}"))
        else:
            rows.append(_row(name, "backend", True, f"runs {f.onnx_where}{on}"))
    return rows


def conversion_status(model, convert: bool = True, feeds: dict | None = None) -> dict[str, Any] | None:
    """The model's conversion outcome (``{"ok", "error", "conversion"}``): stored from before, else
    converted now when ``convert`` (checked on ``feeds``, else random inputs; and stored); None for a
    model that needs no conversion."""
    from .models.conversion import attach_conversion, cached_status, can_convert, model_status

    if not can_convert(model):
        return None
    if model.conversion is None and not model.conversion_error:
        status = cached_status(model)
        if status is not None or not convert:
            return status
        attach_conversion(model, feeds)
    return model_status(model)


def check_model(model, convert: bool = True, feeds: dict | None = None) -> list[dict[str, Any]]:
    """One row ``{name, kind, available, reason}`` per compression (:data:`COMPRESSIONS`) and per
    registered backend, for a loaded model (see the module docstring). ``convert``: try the
    ONNX->PyTorch conversion when its outcome is not stored yet, checked on ``feeds`` (the user's
    data) or random inputs."""
    status = conversion_status(model, convert, feeds)
    if status is None and model.format in ("onnx", "torchscript", "exported"):
        status = {"ok": False, "error": "the conversion to PyTorch was not tried", "conversion": None}
    facts = _Facts(model, status)
    return _precision_rows(facts) + _editing_rows(facts) + _backend_rows(facts)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``{available: {compressions, backends}, unavailable: {name: reason}}`` for pages and the CLI."""
    out: dict[str, Any] = {"compressions": [], "backends": [], "unavailable": {}}
    for r in rows:
        if r["available"]:
            out["compressions" if r["kind"] == "compression" else "backends"].append(r["name"])
        else:
            out["unavailable"][r["name"]] = r["reason"]
    return out


def model_applicability(model, feeds: dict | None = None) -> dict[str, Any]:
    """``{"applicability": rows, "conversion": record | None, "conversion_error": str | None}`` for
    :func:`benchmark.inspection.model_info` (a failed check is one ``applicability_error`` line);
    ``feeds``: the data's first feed, to check a conversion on."""
    from .errors import BenchmarkError, ResourceError

    try:
        rows = check_model(model, feeds=feeds)
    except ResourceError:
        raise
    except BenchmarkError as exc:
        return {"applicability": [], "applicability_error": str(exc), "conversion": None, "conversion_error": None}
    status = conversion_status(model, convert=False) or {}
    return {"applicability": rows, "conversion": status.get("conversion"), "conversion_error": status.get("error")}


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Text lines ``  name  yes|no  reason`` (compressions, then backends)."""
    width = max((len(r["name"]) for r in rows), default=8)
    return [f"  {r['name']:<{width}}  {'yes' if r['available'] else 'no ':3}  {r['reason']}" for r in rows]


__all__ = ["COMPRESSIONS", "EDITING", "TORCH_BACKENDS", "check_model", "conversion_status", "model_applicability",
           "format_rows", "summarize"]

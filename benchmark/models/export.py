"""PyTorch -> ONNX export with a dynamic batch axis, as a single file.

The dynamo exporter (``torch.onnx.export(dynamo=True)``) is tried first; the TorchScript exporter
(``dynamo=False``) is the fallback, and the reason for any fallback is recorded in
:class:`ExportInfo`. ScriptModules go straight to the TorchScript exporter (``torch.export``
refuses them). A failure of both is an :class:`ExportError` naming the operator or construct.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..config import InputSpec
from ..errors import ExportError

DEFAULT_OPSET = 18


@dataclass
class ExportInfo:
    """How an ONNX file was produced."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    fallback_reason: str | None = None
    warnings: list[str] = field(default_factory=list)


def _open_batch(spec: InputSpec) -> bool:
    return spec.batch_axis is not None and not isinstance(spec.batch_dim, int)


def _example_args(module, inputs: list[InputSpec], batch_size: int | None):
    """Example tensors: ``batch_size`` on each open batch axis; inputs whose batch dim is a number,
    or that have no batch axis, as declared."""
    from .base import LoadedModel

    specs = [s if _open_batch(s) else s.with_batch_axis(None) for s in inputs]
    return LoadedModel(name="export", format="sample", framework="torch", inputs=specs).example_tensors(batch_size)


def _set_eval(module) -> None:
    """Eval mode where the module allows it (an exported program's module() refuses ``eval()``)."""
    try:
        module.eval()
    except NotImplementedError:
        return  # torch.export GraphModules refuse eval(); they are already traced for inference


def _explain(exc: BaseException) -> str:
    """One line naming the unsupported operator or construct behind an export failure."""
    text = f"{type(exc).__name__}: {exc}"
    m = re.search(r"(aten::[\w.]+|torch\.ops\.aten\.[\w.]+|prim::[\w.]+)", text)
    if re.search(r"data.dependent|GuardOnDataDependent|Could not guard on data-dependent|dynamic control flow|Dynamic control flow", text, re.I):
        return "data-dependent control flow (a Python if/loop on tensor values) cannot be exported; rewrite it with torch.where / torch.cond"
    if m and re.search(r"unsupported|not supported|No decomposition|could not find|UnsupportedOperator", text, re.I):
        return f"operator {m.group(1)} is not supported by the ONNX exporter"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return first[:300]


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' progress prints, graph dumps and deprecation warnings."""
    import logging

    sink = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def export_onnx(
    module,
    inputs: list[InputSpec],
    path: str | Path,
    *,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
    output_names: list[str] | None = None,
) -> ExportInfo:
    """Export ``module`` (eager, GraphModule or ScriptModule) to one ONNX file at ``path``.

    Each input's open batch axis (:attr:`InputSpec.batch_axis`, dim 0 unless the model says
    otherwise) is the dynamic ``batch`` dim when ``dynamic_batch`` is set; inputs whose batch dim
    is a number, or that have no batch axis, keep their shapes (and with none open the export is
    static). Integer inputs (token ids, masks) are supported. Returns an :class:`ExportInfo`.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _set_eval(module)
    names = [s.name for s in inputs]
    dynamic_batch = dynamic_batch and any(_open_batch(s) for s in inputs)
    is_script = isinstance(module, torch.jit.ScriptModule)
    # Batch 2 for tracing: torch.export specialises dims of size 0/1.
    args = _example_args(module, inputs, 2 if dynamic_batch else None)
    errors: list[str] = []
    if not is_script:
        try:
            dyn = None
            if dynamic_batch:
                batch = torch.export.Dim("batch", min=1, max=65536)
                dyn = tuple({s.batch_axis: batch} if _open_batch(s) else None for s in inputs)
            with _quiet():
                prog = torch.onnx.export(
                    module, args, None, dynamo=True, external_data=False, dynamic_shapes=dyn,
                    input_names=names, output_names=output_names, opset_version=opset, verbose=False,
                    optimize=False,  # keep BatchNorm separate: params stay comparable with PyTorch; ORT fuses at load
                )
                prog.save(str(path), external_data=False)
            note = _fold_exported(path, keep=set(module.state_dict()) if hasattr(module, "state_dict") else set())
            return ExportInfo(path=path, exporter="dynamo", opset=opset, warnings=[note] if note else [])
        except Exception as exc:  # the dynamo exporter raises many exception types; we fall back and record why
            reason = _explain(exc)
            if reason.startswith("data-dependent"):
                # Tracing would freeze one branch and export a silently wrong model.
                raise ExportError(f"ONNX export failed: {reason}") from None
            errors.append(reason)
    else:
        errors.append("torch.export refuses ScriptModules")
    try:
        dynamic_axes = {s.name: {s.batch_axis: "batch"} for s in inputs if _open_batch(s)} if dynamic_batch else None
        if dynamic_axes and output_names:
            dynamic_axes.update({n: {0: "batch"} for n in output_names})
        with _quiet(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(
                module, args, str(path), dynamo=False, input_names=names,
                output_names=output_names or None, dynamic_axes=dynamic_axes,
                opset_version=min(opset, 17), do_constant_folding=True,
            )
    except Exception as exc:  # TorchScript exporter: same reasoning
        raise ExportError(f"ONNX export failed: {_explain(exc)} (dynamo exporter: {errors[0]})") from None
    frozen = [str(w.message) for w in caught if "TracerWarning" in type(w.message).__name__ and "Python boolean" in str(w.message)]
    if frozen:
        path.unlink(missing_ok=True)
        raise ExportError(
            "ONNX export failed: data-dependent control flow (a Python if/loop on tensor values) would be frozen "
            "by tracing; rewrite it with torch.where / torch.cond"
        )
    if dynamic_batch and not is_script:
        _name_batch_outputs(path)
    return ExportInfo(path=path, exporter="torchscript", opset=min(opset, 17), fallback_reason=errors[0])


def _fold_exported(path: Path, keep: set[str]) -> str | None:
    """Constant-fold the dynamo exporter's unoptimised graph in place, keeping BatchNorm separate.

    The exporter builds zero biases for bias-free convs at run time (``Shape -> Expand`` chains):
    left in, they keep ONNX Runtime from fusing Conv+BatchNorm and made the FP32 reference about 2x
    slower than the same graph folded, which would flatter every compressed variant. Folding
    turns them into constant zero biases, which are then dropped (a zero bias is no bias) unless
    the PyTorch module has a parameter of that name. BatchNorm is not folded into the conv here,
    so parameter counts stay comparable with PyTorch; ONNX Runtime fuses it when it loads the
    model. Returns a note when folding was not possible (the unfolded graph is kept).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    try:
        import onnxscript.optimizer as oso

        proto = onnx.load(str(path))
        oso.fold_constants(proto)
        oso.remove_unused_nodes(proto)
        inits = {t.name: t for t in proto.graph.initializer}
        dropped = set()
        for node in proto.graph.node:
            if node.op_type == "Conv" and len(node.input) > 2 and node.input[2] in inits and node.input[2] not in keep:
                if not np.any(numpy_helper.to_array(inits[node.input[2]])):
                    dropped.add(node.input[2])
                    del node.input[2]
        still_used = {i for n in proto.graph.node for i in n.input}
        for name in dropped - still_used:
            proto.graph.initializer.remove(inits[name])
        onnx.checker.check_model(proto)
    except Exception as exc:  # the optimizer raises many types; keep the unfolded export and say why
        return f"constant folding of the export failed ({_explain(exc)}); the graph is left unfolded"
    onnx.save(proto, str(path))
    return None


def _name_batch_outputs(path: Path) -> None:
    """Give unnamed leading output dims the ``batch`` name so specs read well (no-op if set)."""
    import onnx

    proto = onnx.load(str(path))
    changed = False
    for out in proto.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value") and not dims[0].dim_param:
            dims[0].dim_param = "batch"
            changed = True
    if changed:
        onnx.save(proto, str(path))


def module_fingerprint(module) -> str:
    """A short hash of a module's weights (for caching exported files)."""
    import torch

    h = hashlib.sha256()
    state = module.state_dict() if hasattr(module, "state_dict") else {}
    for k, v in state.items():
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            if t.is_quantized:
                t = t.dequantize()
            h.update(str(tuple(t.shape)).encode())
            h.update(t.contiguous().view(-1).float().numpy().tobytes())
    return h.hexdigest()[:16]


def ensure_onnx(variant, workdir: str | Path) -> Path:
    """The variant's ONNX file, exporting ``variant.torch_module`` to ``workdir`` if there is none.

    Only FP32 eager/scripted modules are exported (quantized or half-precision torch modules are
    not exportable faithfully: those raise :class:`ExportError`). The export info is recorded on
    the variant as ``variant.export_info``.
    """
    if variant.onnx_path is not None:
        return Path(variant.onnx_path)
    if variant.torch_module is None:
        raise ExportError(f"variant {variant.name!r} has neither an ONNX file nor a PyTorch module")
    if variant.torch_precision not in ("fp32",):
        raise ExportError(f"variant {variant.name!r} runs in {variant.torch_precision} in PyTorch; only FP32 modules are exported to ONNX")
    workdir = Path(workdir)
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", f"{variant.model.name}-{variant.name}")
    path = workdir / f"{safe}-{module_fingerprint(variant.torch_module)}.onnx"
    if not path.exists():
        # Export beside the final name and move it into place, so a killed export never leaves a
        # truncated file that a later call would take for a finished one.
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.onnx")
        try:
            info = export_onnx(variant.torch_module, variant.model.inputs, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        info.path = path
        variant.export_info = info
    variant.onnx_path = path
    return path

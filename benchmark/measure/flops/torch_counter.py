"""Counting a PyTorch module: fvcore with MAC handles for the multiply-accumulate family (eager and
``.pt2`` modules), ``torch.utils.flop_counter`` for TorchScript, keyword inputs and when fvcore
cannot trace; quantized conv/linear modules costed from their weight shapes (conventions in
:mod:`benchmark.measure.flops`)."""
from __future__ import annotations

import warnings as _warnings
from collections import Counter
from typing import Any

from ...errors import ConfigError, MeasurementError, one_line
from .formulas import (
    RECURRENT_GATES,
    conv_macs, conv_transpose_macs, einsum_macs, linear_macs, matmul_macs, mha_macs, recurrent_macs,
    recurrent_module_macs, sdpa_macs,
)
from .report import FlopReport

_MAX_WARNINGS_FROM_TRACE = 5


def _jit_shape(value) -> list[int] | None:
    if value.isCompleteTensor():
        return list(value.type().sizes())
    return None


def _ivalue(value):
    return value.toIValue()


def _h_conv(transposed_index: int | None, transposed_default: bool = False):
    def handle(inputs, outputs):
        x, w, y = _jit_shape(inputs[0]), _jit_shape(inputs[1]), _jit_shape(outputs[0])
        transposed = transposed_default
        if transposed_index is not None and len(inputs) > transposed_index:
            transposed = bool(_ivalue(inputs[transposed_index]))
        if transposed:
            return Counter({"conv_transpose": conv_transpose_macs(x, w)})
        return Counter({"conv": conv_macs(y, w)})

    return handle


def _h_linear(inputs, outputs):
    return Counter({"linear": linear_macs(_jit_shape(inputs[0]), _jit_shape(inputs[1]))})


def _h_matmul(name: str, first: int):
    def handle(inputs, outputs):
        return Counter({name: matmul_macs(_jit_shape(inputs[first]), _jit_shape(inputs[first + 1]))})

    return handle


def _h_einsum(inputs, outputs):
    equation = _ivalue(inputs[0])
    shapes = [_jit_shape(v) for v in inputs[1].node().inputs()]
    return Counter({"einsum": einsum_macs(equation, shapes)})


def _h_sdpa(inputs, outputs):
    q, k, v = (_jit_shape(inputs[i]) for i in range(3))
    return Counter({"scaled_dot_product_attention": sdpa_macs(q, k, v)})


def _h_mha(inputs, outputs):
    q, k, v = (_jit_shape(inputs[i]) for i in range(3))
    return Counter({"multi_head_attention": mha_macs(q, k, v, int(_ivalue(inputs[3])))})


def _h_recurrent(name: str):
    """``aten::lstm`` / ``gru`` / ``rnn_tanh`` / ``rnn_relu`` (padded and packed overloads): the
    weights are the last ``Tensor[]`` among the first four inputs (``hx`` of an LSTM is a list too)."""

    def handle(inputs, outputs):
        lists = [v for v in list(inputs)[1:4] if str(v.type()).startswith("List[Tensor")]
        params = [_jit_shape(w) for w in lists[-1].node().inputs()] if lists else []
        x = _jit_shape(inputs[0])
        if x is None or any(p is None for p in params):
            raise ValueError(f"{name}: input or weight shapes unknown")
        return Counter({name: recurrent_macs(x, params)})

    return handle


def _flop_counter_extra() -> dict:
    """FlopCounterMode formulas (in FLOPs = 2 x MACs) for fused ops it does not know."""
    import torch

    def mha_flops(query, key, value, embed_dim, *args, out_shape=None, **kwargs):
        return 2 * mha_macs(query, key, value, embed_dim)

    def sdpa_flops(query, key, value, *args, out_shape=None, **kwargs):
        return 2 * sdpa_macs(query, key, value)

    def rnn_layer_flops(x, w_ih, w_hh, *args, out_shape=None, **kwargs):
        return 2 * recurrent_macs(x, [w_ih, w_hh])

    # one LSTM layer and direction on CPU (oneDNN); GRU/RNN and LSTMs with projections run as addmm/mm
    extra = {torch.ops.aten._native_multi_head_attention: mha_flops,
             torch.ops.aten.mkldnn_rnn_layer: rnn_layer_flops}
    # PyTorch's counter has no formula for the CPU attention kernel (it would count 0).
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        if hasattr(torch.ops.aten, name):
            extra[getattr(torch.ops.aten, name)] = sdpa_flops
    return extra


def _torch_mac_handles() -> dict:
    return {
        "aten::_convolution": _h_conv(6),
        "aten::convolution": _h_conv(6),
        "aten::conv1d": _h_conv(None),
        "aten::conv2d": _h_conv(None),
        "aten::conv3d": _h_conv(None),
        "aten::conv_transpose1d": _h_conv(None, True),
        "aten::conv_transpose2d": _h_conv(None, True),
        "aten::conv_transpose3d": _h_conv(None, True),
        "aten::linear": _h_linear,
        "aten::addmm": _h_matmul("addmm", 1),
        "aten::mm": _h_matmul("mm", 0),
        "aten::matmul": _h_matmul("matmul", 0),
        "aten::bmm": _h_matmul("bmm", 0),
        "aten::baddbmm": _h_matmul("baddbmm", 1),
        "aten::mv": _h_matmul("mv", 0),
        "aten::addmv": _h_matmul("addmv", 1),
        "aten::einsum": _h_einsum,
        "aten::scaled_dot_product_attention": _h_sdpa,
        "aten::_native_multi_head_attention": _h_mha,
        "aten::lstm": _h_recurrent("lstm"),
        "aten::gru": _h_recurrent("gru"),
        "aten::rnn_tanh": _h_recurrent("rnn_tanh"),
        "aten::rnn_relu": _h_recurrent("rnn_relu"),
    }


def _param_tensors_shallow(mod) -> list[tuple[str, Any, Any]]:
    """(name, parameter, effective tensor) of ``mod``'s own parameters.

    A ``torch.nn.utils.prune`` reparametrisation (``weight_orig`` + ``weight_mask``) yields the
    masked weight. Quantized modules (packed weights, no parameters) yield ``weight()`` / ``bias()``.
    """
    import torch

    items = []
    for p_name, p in mod.named_parameters(recurse=False):
        tensor = p
        if p_name.endswith("_orig") and hasattr(mod, p_name[:-5] + "_mask"):
            masked = getattr(mod, p_name[:-5], None)
            if isinstance(masked, torch.Tensor):
                tensor = masked
        items.append((p_name, p, tensor))
    if _is_quantized_module(mod):
        for attr in ("weight", "bias"):
            getter = getattr(mod, attr, None)
            value = getter() if callable(getter) else None
            if isinstance(value, torch.Tensor):
                items.append((attr, value, value))
    return items


def _param_tensors(module) -> list[tuple[str, Any]]:
    """(qualified name, effective tensor) for every parameter of ``module``; shared ones once."""
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()
    for mod_name, mod in module.named_modules():
        for p_name, key, tensor in _param_tensors_shallow(mod):
            if id(key) in seen:
                continue
            seen.add(id(key))
            out.append((f"{mod_name}.{p_name}" if mod_name else p_name, tensor))
    return out


def _own_params(mod) -> int:
    return sum(int(tensor.numel()) for _, _, tensor in _param_tensors_shallow(mod))


def _tensor_zero_count(tensor) -> int:
    import torch

    t = tensor.detach()
    if t.is_quantized:
        t = t.dequantize()
    return int(t.numel() - torch.count_nonzero(t).item())


def _params_and_sparsity(module) -> tuple[int, float]:
    tensors = _param_tensors(module)
    total = sum(int(t.numel()) for _, t in tensors)
    zeros = sum(_tensor_zero_count(t) for _, t in tensors if t.numel())
    return total, (zeros / total if total else 0.0)


def as_torch_inputs(module, example_inputs) -> tuple[tuple, dict]:
    """Positional and keyword inputs as tensors on the module's device, float ones in its dtype."""
    import inspect

    import numpy as np
    import torch

    from ...data.base import contiguous

    dtype = None
    device = None
    for p in module.parameters():
        if p.is_floating_point():
            dtype, device = p.dtype, p.device
            break

    def conv(x):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(contiguous(x))
        if isinstance(x, torch.Tensor):
            if device is not None:
                x = x.to(device)
            if dtype is not None and x.is_floating_point() and x.dtype != dtype:
                x = x.to(dtype)
        return x

    if isinstance(example_inputs, dict):
        items = {k: conv(v) for k, v in example_inputs.items()}
        try:
            names = [n for n, p in inspect.signature(module.forward).parameters.items()
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            names = []
        if names and set(items) <= set(names) and names[:len(items)] == [n for n in names if n in items]:
            return tuple(items[n] for n in names if n in items), {}
        if len(items) == 1 or not names:
            return tuple(items.values()), {}
        return (), items
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    return tuple(conv(x) for x in example_inputs), {}


def _short_warning(w) -> str:
    return f"{w.category.__name__}: {one_line(w.message, 200)}"


def count_torch(module, example_inputs, batch_size: int = 1) -> FlopReport:
    """Count a PyTorch module (eager, a loaded ``.pt2``'s ``ExportedProgram.module()``, or TorchScript).

    ``example_inputs`` is a tuple of tensors (positional) or a dict name -> tensor; numpy arrays
    are converted. Eager and exported modules are counted with fvcore (MAC handles for the
    conv/linear/matmul family only, see the module docstring); a ``torch.jit.ScriptModule``
    (which fvcore cannot hook) with ``torch.utils.flop_counter.FlopCounterMode``, whose FLOPs are
    halved to MACs. ``batch_size`` is recorded in the report; the inputs carry the actual batch.
    """
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"count_torch needs a torch.nn.Module; got {type(module).__name__}")
    args, kwargs = as_torch_inputs(module, example_inputs)
    quantized = not isinstance(module, torch.jit.ScriptModule) and any(
        _is_quantized_module(m) for m in module.modules())
    was_training = module.training
    if not isinstance(module, torch.fx.GraphModule):  # an exported program's module has no train/eval
        module.eval()
    try:
        params, sparsity = _params_and_sparsity(module)
        report = _count_torch_macs(module, args, kwargs, quantized)
    except (RuntimeError, ValueError, TypeError) as exc:
        shapes = ", ".join("x".join(map(str, a.shape)) for a in list(args) + list(kwargs.values())
                           if isinstance(a, torch.Tensor))
        raise MeasurementError(f"counting MACs failed: the model raised {type(exc).__name__} on inputs of shape "
                               f"{shapes or 'none'}: {one_line(exc)}") from None
    finally:
        if not isinstance(module, torch.fx.GraphModule):
            module.train(was_training)
    report.params = params
    report.sparsity = sparsity
    report.batch_size = int(batch_size)
    return report


def _count_torch_macs(module, args: tuple, kwargs: dict, quantized: bool) -> FlopReport:
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        report = _count_flop_counter(module, args, kwargs, scripted=True)
    elif kwargs or quantized:
        report = _count_flop_counter(module, args, kwargs, scripted=False)
        if kwargs:
            report.warnings.insert(0, "inputs passed by keyword: counted with torch.utils.flop_counter "
                                      "(fvcore takes positional inputs only)")
        if quantized:
            _add_quantized_macs(module, args, kwargs, report)
    else:
        try:
            report = _count_fvcore(module, args)
        except (RuntimeError, ValueError, TypeError, AssertionError, AttributeError) as exc:
            report = _count_flop_counter(module, args, kwargs, scripted=False)
            report.warnings.insert(0, f"fvcore could not trace the model ({type(exc).__name__}: {one_line(exc, 200)}); "
                                      "counted with torch.utils.flop_counter instead")
            return report
        opaque = [k for k in report.unsupported_ops if k in ("prim::CallFunction", "prim::CallMethod")]
        if opaque:  # scripted functions called from an eager model: fvcore's trace does not look inside them
            report = _count_flop_counter(module, args, kwargs, scripted=False)
            report.warnings.insert(0, f"the model calls TorchScript code ({', '.join(opaque)}) that fvcore does not "
                                      "look into: counted with torch.utils.flop_counter instead")
    return report


def _is_quantized_module(mod) -> bool:
    """A quantized conv/linear module (weights packed, exposed through ``weight()``), or a
    dynamically quantized LSTM/GRU (weights packed, shapes from its attributes)."""
    kind = type(mod).__module__
    if not kind.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized")):
        return False
    return _is_quantized_rnn(mod) or ("PackedParams" not in type(mod).__name__ and callable(getattr(mod, "weight", None)))


def _is_quantized_rnn(mod) -> bool:
    return str(getattr(mod, "mode", "")).upper() in RECURRENT_GATES and hasattr(mod, "hidden_size")


def _quantized_macs(mod, x, output) -> tuple[str, int] | None:
    """(kind, MACs) of one call of quantized module ``mod`` on input ``x`` (None when not costable)."""
    import torch

    if _is_quantized_rnn(mod):
        x = getattr(x, "data", x)  # a PackedSequence holds its steps in .data
        if not isinstance(x, torch.Tensor):
            return None
        return (f"quantized_{str(mod.mode).lower()}",
                recurrent_module_macs(mod.mode, x.shape, mod.input_size, mod.hidden_size, mod.num_layers,
                                      mod.bidirectional, getattr(mod, "proj_size", 0)))
    w = mod.weight()
    if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
        return None
    if w.dim() >= 3:
        if "ConvTranspose" in type(mod).__name__:
            return "quantized_conv_transpose", conv_transpose_macs(x.shape, w.shape)
        return "quantized_conv", conv_macs(output.shape, w.shape)
    return "quantized_linear", linear_macs(x.shape, w.shape)


def _add_quantized_macs(module, args: tuple, kwargs: dict, report: FlopReport) -> None:
    """Cost quantized conv/linear modules (which no PyTorch counter knows) from their input, output
    and weight shapes, with the same formulas as their float versions, and add them to ``report``."""
    import torch

    found: dict[str, tuple[str, int]] = {}
    names = {id(m): n for n, m in module.named_modules()}
    hooks = []

    def hook(mod, inputs, output):
        costed = _quantized_macs(mod, inputs[0] if inputs else None, output)
        if costed is None:
            return
        kind, macs = costed
        name = names.get(id(mod), "")
        prev = found.get(name, (kind, 0))[1]
        found[name] = (kind, prev + int(macs))

    for mod in module.modules():
        if _is_quantized_module(mod):
            hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    rows = {r["name"]: r for r in report.by_module}
    for name, (kind, macs) in found.items():
        report.macs += macs
        report.by_operator[kind] = report.by_operator.get(kind, 0) + macs
        row = rows.get(name or "(model)")
        if row is None:
            mod = dict(module.named_modules())[name]
            row = {"name": name or "(model)", "op_type": type(mod).__name__, "macs": 0, "params": _own_params(mod)}
            report.by_module.append(row)
        row["macs"] = (row["macs"] or 0) + macs
    report.flops = 2 * report.macs
    if found:
        report.warnings.append(f"{len(found)} quantized module(s) costed from their weight shapes "
                               "(same formulas as their float versions)")


def _module_rows(module, inclusive: dict[str, int], names: dict[int, str]) -> list[dict]:
    """Rows of self MACs (own ops, children excluded) and own parameters per module."""
    rows = []
    for name, mod in module.named_modules():
        children = [c for c in mod.children()]
        child_names = [names.get(id(c)) for c in children]
        total = int(inclusive.get(name, 0))
        self_macs = total - sum(int(inclusive.get(cn, 0)) for cn in set(filter(None, child_names)))
        own = _own_params(mod)
        if self_macs > 0 or own > 0:
            rows.append({"name": name or "(model)", "op_type": type(mod).__name__,
                         "macs": max(self_macs, 0), "params": own})
    return rows


def _count_fvcore(module, args: tuple) -> FlopReport:
    import torch
    from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(module, args)
    analysis.clear_op_handles()
    analysis.set_op_handle(**_torch_mac_handles())
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("all")
    with _warnings.catch_warnings(record=True) as caught, torch.no_grad():
        _warnings.simplefilter("always")
        total = int(analysis.total())
        by_operator = {k: int(v) for k, v in analysis.by_operator().items() if v}
        unsupported = {k: int(v) for k, v in analysis.unsupported_ops().items()}
        by_mod = {k: int(v) for k, v in analysis.by_module().items()}
        uncalled = sorted(analysis.uncalled_modules())
    is_graph = isinstance(module, torch.fx.GraphModule)
    if is_graph:  # an exported graph's guards trip the tracer and its submodules are never "called"
        caught = [w for w in caught if not issubclass(w.category, torch.jit.TracerWarning)]
        uncalled = []
    report_warnings = _dedup_warnings(caught)
    # MultiheadAttention passes out_proj's weights to its kernel without calling out_proj.
    mha = [n for n, m in module.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    uncalled = [u for u in uncalled if not any(u.startswith(f"{n}.") if n else True for n in mha)]
    if uncalled:
        report_warnings.append(f"{len(uncalled)} module(s) not called in the forward pass (their parameters still count): "
                               + ", ".join(uncalled[:10]) + (" ..." if len(uncalled) > 10 else ""))
    names = {id(m): n for n, m in module.named_modules()}
    if is_graph:
        rows, row_warning = _fx_module_rows(module, args)
        if row_warning:
            report_warnings.append(row_warning)
        row_sum = sum(r["macs"] for r in rows if r["macs"] is not None)
        if rows and total and abs(row_sum - total) > 0.01 * total:
            report_warnings.append(f"per-module MACs (fx graph) sum to {row_sum}, fvcore counted {total}")
    else:
        rows = _module_rows(module, by_mod, names)
    return FlopReport(params=0, macs=total, flops=2 * total, size_bytes=None, sparsity=0.0, by_module=rows,
                      by_operator=by_operator, unsupported_ops=unsupported, counter="fvcore",
                      warnings=report_warnings)


def _dedup_warnings(caught) -> list[str]:
    out: list[str] = []
    for w in caught:
        text = _short_warning(w)
        if text not in out:
            out.append(text)
    if len(out) > _MAX_WARNINGS_FROM_TRACE:
        out = out[:_MAX_WARNINGS_FROM_TRACE] + [f"... and {len(out) - _MAX_WARNINGS_FROM_TRACE} more warnings while tracing"]
    return out


def _op_key(op) -> str:
    name = getattr(op, "__name__", None) or str(op)
    return name.split(".")[-1] if "." in name else name


def _fx_module_rows(gm, args: tuple) -> tuple[list[dict], str | None]:
    """Per-module MACs of a flat fx GraphModule (``ExportedProgram.module()``).

    Each node is run under ``FlopCounterMode``; its MACs go to the innermost module in the
    node's ``nn_module_stack`` metadata (recorded by ``torch.export``).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    named = dict(gm.named_modules())
    per_module: dict[str, int] = {}
    type_of: dict[str, str] = {}
    has_stack = False
    for n in gm.graph.nodes:
        for path, type_name in (n.meta.get("nn_module_stack") or {}).values():
            type_of.setdefault(path, str(type_name).rsplit(".", 1)[-1])

    class _Interp(torch.fx.Interpreter):
        def run_node(self, n):
            before = counter.get_total_flops()
            result = super().run_node(n)
            delta = counter.get_total_flops() - before
            if delta:
                stack = n.meta.get("nn_module_stack") or {}
                path = ""
                if stack:
                    nonlocal has_stack
                    has_stack = True
                    path = list(stack.values())[-1][0]
                    path = path if path in named else ""
                per_module[path] = per_module.get(path, 0) + delta // 2
            return result

    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_flop_counter_extra()) as counter:
        _Interp(gm).run(*args)
    rows = []
    for name, mod in gm.named_modules():
        if name == "_guards_fn":
            continue
        macs = per_module.get(name, 0)
        own = _own_params(mod)
        if macs > 0 or own > 0:
            rows.append({"name": name or "(model)", "op_type": type_of.get(name, type(mod).__name__),
                         "macs": int(macs), "params": own})
    warning = None if has_stack else "the exported graph has no module metadata: all MACs are attributed to the model"
    return rows, warning


def _count_flop_counter(module, args: tuple, kwargs: dict, scripted: bool) -> FlopReport:
    """Count with ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs halved to MACs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    report_warnings: list[str] = []
    inclusive: dict[str, int] = {}
    hooks = []
    names = {id(m): n for n, m in module.named_modules()}
    counter = FlopCounterMode(display=False, custom_mapping=_flop_counter_extra())
    if not scripted:
        stack: list[tuple[str, int]] = []

        def pre(mod, _inputs):
            stack.append((names.get(id(mod), ""), counter.get_total_flops()))

        def post(mod, _inputs, _output):
            name, start = stack.pop()
            inclusive[name] = inclusive.get(name, 0) + (counter.get_total_flops() - start) // 2

        for _, mod in module.named_modules():
            hooks.append(mod.register_forward_pre_hook(pre))
            hooks.append(mod.register_forward_hook(post))
    try:
        with _warnings.catch_warnings(record=True) as caught, torch.no_grad(), counter:
            _warnings.simplefilter("always")
            module(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    report_warnings.extend(_dedup_warnings(caught))
    macs = int(counter.get_total_flops()) // 2
    by_operator: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        key = _op_key(op)
        by_operator[key] = by_operator.get(key, 0) + int(flops) // 2
    if scripted:
        rows = []
        for name, mod in module.named_modules():
            own = _own_params(mod)
            if own > 0:
                rows.append({"name": name or "(model)", "op_type": getattr(mod, "original_name", type(mod).__name__),
                             "macs": None, "params": own})
        report_warnings.append("TorchScript runs its submodules inside the interpreter: MACs are exact in total and "
                               "per operator, but cannot be attributed to modules (by_module has parameters only)")
    else:
        rows = _module_rows(module, inclusive, names)
    return FlopReport(params=0, macs=macs, flops=2 * macs, size_bytes=None, sparsity=0.0, by_module=rows,
                      by_operator={k: v for k, v in by_operator.items() if v}, unsupported_ops={},
                      counter="torch.utils.flop_counter", warnings=report_warnings)


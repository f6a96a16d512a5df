"""Parameters, MACs/FLOPs, model size and weight sparsity.

Conventions (the same for every counter, so that a PyTorch model and its ONNX export agree):

- **MAC** = one multiply-accumulate. fvcore calls this a "flop"; here it is ``macs``, and
  ``flops = 2 * macs`` (one multiply + one add). ``torch.utils.flop_counter`` counts FLOPs = 2 x
  MACs; its numbers are halved.
- MACs are counted **only for the multiply-accumulate family**: convolution (incl. transposed,
  grouped, dilated, strided), linear / Gemm, matmul / mm / bmm / baddbmm (batched and
  broadcast; attention products between two activations count too), einsum, and
  ``scaled_dot_product_attention`` (its two products), and ``nn.MultiheadAttention``'s fused
  kernel (four projections + two products). Quantized PyTorch conv/linear modules are costed
  from their weight shapes with the same formulas. Bias additions inside these ops are not
  counted. BatchNorm, LayerNorm, activations, element-wise add/mul, pooling, softmax and
  resizing count **zero** MACs in every counter; the operators that were skipped are listed
  with their counts in ``FlopReport.unsupported_ops`` (pure data movement such as reshape,
  transpose, concat, slicing, casts and ReLU is not listed, as in fvcore). Recurrent layers
  (LSTM/GRU) and control flow (ONNX If/Loop/Scan subgraphs) are skipped and listed too.
- Per-op formulas: conv MACs = ``prod(output shape) * prod(weight.shape[1:])``; transposed conv
  MACs = ``prod(input shape) * prod(weight.shape[1:])``; matmul MACs = ``prod(broadcast batch) *
  M * K * N``; einsum with two operands = product of the sizes of all its distinct indices.
- **Parameters**: PyTorch = elements of ``module.parameters()`` (shared tensors once; a
  ``torch.nn.utils.prune`` mask counts as its weight). ONNX = elements of the weight tensors
  in initializers **and** in ``Constant`` nodes: floating-point tensors, and integer tensors
  that are quantized weights (inputs of ``DequantizeLinear`` / ``QLinearConv`` / ...). Not
  counted: scalars (rank-0 literals, and single-element constants used only by element-wise
  arithmetic, such as an attention scale), int64/bool tensors (shapes, indices), quantization scales
  and zero points, BatchNorm running mean/variance (buffers in PyTorch), unused initializers.
  Known export difference: both ONNX exporters fold an eval-mode BatchNorm into the
  convolution before it, which removes BN's ``2 * C_out`` parameters and adds a ``C_out`` bias
  when the conv had none: ONNX params = PyTorch params - C_out per folded pair (- 2 * C_out
  when the conv had a bias). Exporters also store identical tensors once (e.g. the all-zero
  biases of an untrained model). MACs are unaffected. Float buffers other than BatchNorm
  statistics become ONNX weights.
- **Sparsity** = zero elements / all elements over the weights counted as parameters (a
  quantized weight counts as zero when it equals its zero point).
- **size_bytes** (``count_model``): the model file on disk (plus external-data files beside an
  ONNX file) when there is one, else the bytes of ``torch.save(state_dict)`` (``torch.jit.save``
  for TorchScript).
- **Per-module rows** (``by_module``): modules with their own MACs (children excluded) or
  parameters; for a ``.pt2`` graph the MACs follow each node's ``nn_module_stack``. TorchScript
  runs submodules inside its interpreter, so its rows carry parameters and ``macs=None``.
"""
from __future__ import annotations

import dataclasses
import io
import warnings as _warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..errors import ConfigError, MeasurementError, ModelLoadError

COUNTERS = ("fvcore", "torch.utils.flop_counter", "onnx-graph")
_MAX_WARNINGS_FROM_TRACE = 5


@dataclass
class FlopReport:
    """Counts for one model at one input shape (see the module docstring for the conventions).

    ``macs`` are multiply-accumulates, ``flops = 2 * macs``. ``by_module`` rows are
    ``{name, op_type, macs, params}`` for the modules (PyTorch) or nodes (ONNX) that hold MACs or
    parameters; their ``macs`` sum to ``macs`` (``None`` where a counter cannot attribute MACs to
    modules, e.g. TorchScript). ``by_operator`` maps operator type -> MACs; ``unsupported_ops``
    maps each skipped operator -> how many times it occurred.
    """

    params: int
    macs: int
    flops: int
    size_bytes: int | None
    sparsity: float
    by_module: list[dict] = field(default_factory=list)
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported_ops: dict[str, int] = field(default_factory=dict)
    counter: str = "fvcore"
    batch_size: int = 1
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.counter not in COUNTERS:
            raise ConfigError(f"counter must be one of {', '.join(COUNTERS)}; got {self.counter!r}")
        if self.flops != 2 * self.macs:
            raise ValueError(f"flops must be 2 * macs; got flops={self.flops}, macs={self.macs}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Shape formulas shared by every counter
# --------------------------------------------------------------------------------------------

def _prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def conv_macs(output_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """MACs of a (grouped) convolution: ``prod(output) * (C_in / groups) * prod(kernel)``.

    ``weight_shape`` is ``(C_out, C_in / groups, *kernel)``, so dilation/stride/padding enter
    only through the output shape.
    """
    return _prod(output_shape) * _prod(weight_shape[1:])


def conv_transpose_macs(input_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """MACs of a transposed convolution: every input element meets ``(C_out / groups) * prod(kernel)``
    weights; ``weight_shape`` is ``(C_in, C_out / groups, *kernel)``."""
    return _prod(input_shape) * _prod(weight_shape[1:])


def _broadcast(a: Sequence[int], b: Sequence[int]) -> list[int]:
    a, b = list(a), list(b)
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + a
    b = [1] * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        if x != y and x != 1 and y != 1:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        out.append(max(x, y))
    return out


def matmul_macs(a_shape: Sequence[int], b_shape: Sequence[int]) -> int:
    """MACs of ``a @ b`` with numpy semantics (1-D operands, batched, broadcast batch dims)."""
    a, b = list(a_shape), list(b_shape)
    if not a or not b:
        return 0
    if len(a) == 1:
        a = [1] + a
    if len(b) == 1:
        b = b + [1]
    m, k = a[-2], a[-1]
    n = b[-1]
    batch = _broadcast(a[:-2], b[:-2])
    return _prod(batch) * m * k * n


def linear_macs(input_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """MACs of ``x @ W.T`` with ``W`` of shape ``(out_features, in_features)``."""
    return _prod(input_shape[:-1]) * _prod(weight_shape)


def einsum_macs(equation: str, shapes: Sequence[Sequence[int]]) -> int:
    """MACs of an einsum: for two operands the product of the sizes of all distinct indices;
    one operand (a reduction or permutation) is 0; more operands follow numpy's optimal path."""
    eq = equation.replace(" ", "")
    lhs = eq.split("->")[0]
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum {equation!r} has {len(terms)} operands, got {len(shapes)} shapes")
    if "." in lhs:
        # Ellipsis: expand '...' into fresh letters per operand (right-aligned broadcast).
        free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq]
        n_ell = max(len(s) - len(t.replace("...", "")) for t, s in zip(terms, shapes) if "..." in t)
        ell = "".join(free[:n_ell])
        terms = [t.replace("...", ell[n_ell - (len(s) - len(t.replace("...", ""))):]) if "..." in t else t
                 for t, s in zip(terms, shapes)]
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        if len(term) != len(shape):
            raise ValueError(f"einsum term {term!r} does not match shape {list(shape)}")
        for c, d in zip(term, shape):
            sizes[c] = max(sizes.get(c, 1), int(d))
    if len(terms) == 1:
        return 0
    if len(terms) == 2:
        return _prod(sizes.values())
    import numpy as np

    out = eq.split("->")[1] if "->" in eq else ""
    arrays = [np.empty([sizes[c] for c in t], dtype=np.float32) for t in terms]
    info = np.einsum_path(",".join(terms) + ("->" + out if "->" in eq else ""), *arrays, optimize="optimal")[1]
    for line in info.split("\n"):
        if "optimized flop" in line.lower():
            return int(float(line.split(":")[-1]) // 2)
    raise ValueError(f"cannot cost einsum {equation!r}")


def sdpa_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """MACs of scaled dot-product attention: ``Q @ K^T`` plus ``softmax(.) @ V``."""
    q, k, v = list(q_shape), list(k_shape), list(v_shape)
    batch = _broadcast(q[:-2], k[:-2])
    length, source, e, ev = q[-2], k[-2], q[-1], v[-1]
    return _prod(batch) * length * source * (e + ev)


def mha_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int], embed_dim: int) -> int:
    """MACs of ``nn.MultiheadAttention``'s fused kernel: Q/K/V and output projections plus attention."""
    q, k, v = list(q_shape), list(k_shape), list(v_shape)
    e = int(embed_dim)
    proj = (2 * _prod(q[:-1]) + _prod(k[:-1]) + _prod(v[:-1])) * e * e
    batch = _prod(q[:-2]) if len(q) > 2 else 1
    return proj + batch * q[-2] * k[-2] * 2 * e


def conv_output_spatial(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                        dilations: Sequence[int], pads: Sequence[int], auto_pad: str) -> list[int]:
    """Output spatial size of an ONNX Conv (``pads`` = begins then ends; ``auto_pad`` as in the spec)."""
    n = len(in_spatial)
    out = []
    for i in range(n):
        size, k, s, d = in_spatial[i], kernel[i], strides[i], dilations[i]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-size // s))
        elif auto_pad == "VALID":
            out.append((size - d * (k - 1) - 1) // s + 1)
        else:
            out.append((size + pads[i] + pads[i + n] - d * (k - 1) - 1) // s + 1)
    return out


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------

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


def _flop_counter_extra() -> dict:
    """FlopCounterMode formulas (in FLOPs = 2 x MACs) for fused ops it does not know."""
    import torch

    def mha_flops(query, key, value, embed_dim, *args, out_shape=None, **kwargs):
        return 2 * mha_macs(query, key, value, embed_dim)

    def sdpa_flops(query, key, value, *args, out_shape=None, **kwargs):
        return 2 * sdpa_macs(query, key, value)

    extra = {torch.ops.aten._native_multi_head_attention: mha_flops}
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


def _as_torch_inputs(module, example_inputs) -> tuple[tuple, dict]:
    """Positional and keyword inputs as tensors on the module's device, float ones in its dtype."""
    import inspect

    import numpy as np
    import torch

    dtype = None
    device = None
    for p in module.parameters():
        if p.is_floating_point():
            dtype, device = p.dtype, p.device
            break

    def conv(x):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
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
    text = str(w.message).strip().splitlines()[0] if str(w.message).strip() else type(w.message).__name__
    return f"{w.category.__name__}: {text[:200]}"


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
    args, kwargs = _as_torch_inputs(module, example_inputs)
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
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise MeasurementError(f"counting MACs failed: the model raised {type(exc).__name__} on inputs of shape "
                               f"{shapes or 'none'}: {first}") from None
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
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            report = _count_flop_counter(module, args, kwargs, scripted=False)
            report.warnings.insert(0, f"fvcore could not trace the model ({type(exc).__name__}: {first}); "
                                      "counted with torch.utils.flop_counter instead")
    return report


def _is_quantized_module(mod) -> bool:
    """A quantized conv/linear module (weights packed, exposed through ``weight()``)."""
    kind = type(mod).__module__
    return (kind.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized", "torch.nn.quantized"))
            and "PackedParams" not in type(mod).__name__ and callable(getattr(mod, "weight", None)))


def _add_quantized_macs(module, args: tuple, kwargs: dict, report: FlopReport) -> None:
    """Cost quantized conv/linear modules (which no PyTorch counter knows) from their input, output
    and weight shapes, with the same formulas as their float versions, and add them to ``report``."""
    import torch

    found: dict[str, tuple[str, int]] = {}
    names = {id(m): n for n, m in module.named_modules()}
    hooks = []

    def hook(mod, inputs, output):
        x = inputs[0] if inputs else None
        w = mod.weight()
        if not isinstance(x, torch.Tensor) or not isinstance(output, torch.Tensor):
            return
        if w.dim() >= 3:
            if "ConvTranspose" in type(mod).__name__:
                kind, macs = "quantized_conv_transpose", conv_transpose_macs(x.shape, w.shape)
            else:
                kind, macs = "quantized_conv", conv_macs(output.shape, w.shape)
        else:
            kind, macs = "quantized_linear", linear_macs(x.shape, w.shape)
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


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------

#: Operators that move or select data and do no arithmetic worth listing (fvcore ignores the
#: same kinds of aten ops).
_ONNX_ZERO_COST = {
    "Constant", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Shape", "Size",
    "Concat", "Split", "SplitToSequence", "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile",
    "Cast", "CastLike", "ConstantOfShape", "Range", "Dropout", "Pad", "Relu", "Clip", "Max", "Min",
    "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "Where",
    "NonZero", "Floor", "Ceil", "ScatterND", "ScatterElements", "DepthToSpace", "SpaceToDepth",
    "Optional", "OptionalGetElement", "OptionalHasElement", "SequenceConstruct", "SequenceAt", "EyeLike",
}
_CONTROL_FLOW = {"If", "Loop", "Scan"}
#: op -> (data input index, weight input index) for convolutions.
_CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3), "com.microsoft.FusedConv": (0, 1)}
#: op -> (A index, B index) for matrix products.
_MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3),
               "com.microsoft.MatMulIntegerToFloat": (0, 1), "com.microsoft.DynamicQuantizeMatMul": (0, 1),
               "com.microsoft.FusedMatMul": (0, 1)}
_GEMM_OPS = {"Gemm": (0, 1), "com.microsoft.QGemm": (0, 3)}
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


def _op_name(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _attr(node, name, default=None):
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _walk_graphs(graph, parent: str | None = None):
    """Yield (graph, enclosing control-flow op name or None) for the graph and all subgraphs."""
    import onnx

    yield graph, parent
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield from _walk_graphs(a.g, parent or _op_name(node))
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    yield from _walk_graphs(g, parent or _op_name(node))


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
    for graph, _ in _walk_graphs(model.graph):
        for t in graph.initializer:
            weights[t.name] = _Weight(t.name, t, list(t.dims), t.data_type)
        for st in graph.sparse_initializer:
            weights[st.values.name] = _Weight(st.values.name, None, list(st.dims), st.values.data_type,
                                              nnz=int(_prod(st.values.dims)))
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
                                           nnz=int(_prod(sv.values.dims)))
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
    for graph, _ in _walk_graphs(model.graph):
        for node in graph.node:
            op = _op_name(node)
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
    if _prod(w.dims) == 1 and all(op in _ELEMENTWISE for op, _ in uses):
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
    for graph, _ in _walk_graphs(model.graph):
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and len(node.input) >= 3 and node.input[2]:
                out[node.input[0]] = (node.input[2], int(_attr(node, "axis", 1)))
    return out


def _zero_count(w: _Weight, arr, zp_info, weights, base_dir) -> int:
    import numpy as np

    if w.nnz is not None:
        return _prod(w.dims) - w.nnz
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


def _shape_table(model) -> dict[str, list[int | None]]:
    shapes: dict[str, list[int | None]] = {}

    def from_vi(vi):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return None
        return [d.dim_value if d.WhichOneof("value") == "dim_value" else None for d in tt.shape.dim]

    for graph, _ in _walk_graphs(model.graph):
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
        if _is_mac_op(_op_name(node)) and any(n and not _known(shapes.get(n)) for n in node.input[:2]):
            return True
    return False


def _probe_shapes_with_ort(model, base_dir: Path | None, report_warnings: list[str]) -> dict[str, list[int]]:
    """Shapes of every main-graph value from one ONNX Runtime run on zero inputs of the fixed input shapes.

    Used when static shape inference cannot resolve shapes computed at run time (``Shape`` ->
    ``Concat`` -> ``Reshape`` chains of unoptimised exports). Needs concrete input dims.
    """
    import numpy as np
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        report_warnings.append("onnxruntime is not installed: shapes left unknown by shape inference stay unknown")
        return {}
    init = {t.name for t in model.graph.initializer}
    feeds = {}
    for inp in model.graph.input:
        if inp.name in init:
            continue
        tt = inp.type.tensor_type
        dims = [d.dim_value if d.WhichOneof("value") == "dim_value" else 0 for d in tt.shape.dim]
        if any(d <= 0 for d in dims):
            return {}
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[inp.name] = np.ones(dims, dtype=dtype) if "mask" in inp.name.lower() else np.zeros(dims, dtype=dtype)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    if base_dir is not None:
        onnx.load_external_data_for_model(probe, str(base_dir))
    known_outputs = {o.name for o in probe.graph.output}
    names = [out for node in probe.graph.node for out in node.output if out and out not in known_outputs]
    probe.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names])
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        values = sess.run(None, feeds)
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, RuntimeException)
        report_warnings.append(f"shape probe with ONNX Runtime failed ({str(exc).splitlines()[0][:160]})")
        return {}
    out_names = [o.name for o in sess.get_outputs()]
    report_warnings.append("shapes resolved by one ONNX Runtime run (static shape inference left some unknown)")
    return {n: list(np.shape(v)) for n, v in zip(out_names, values)}


def _known(shape) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _node_macs(node, op: str, shapes: dict) -> tuple[str, int] | None:
    """(operator key, MACs) of a MAC-family node, or None when its shapes are unknown."""
    def s(i):
        return shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None

    if op in _CONV_OPS:
        xi, wi = _CONV_OPS[op]
        x, w = s(xi), s(wi)
        if not (_known(w) and len(w) >= 3):
            return None
        y = shapes.get(node.output[0]) if node.output else None
        if not _known(y):
            if not _known(x):
                return None
            n_sp = len(x) - 2
            kernel = list(_attr(node, "kernel_shape", w[2:]))
            strides = list(_attr(node, "strides", [1] * n_sp))
            dilations = list(_attr(node, "dilations", [1] * n_sp))
            pads = list(_attr(node, "pads", [0] * (2 * n_sp)))
            auto_pad = _attr(node, "auto_pad", b"NOTSET")
            auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
            y = [x[0], w[0]] + conv_output_spatial(x[2:], kernel, strides, dilations, pads, auto_pad)
        return op, conv_macs(y, w)
    if op == "ConvTranspose":
        x, w = s(0), s(1)
        if not (_known(x) and _known(w)):
            return None
        return op, conv_transpose_macs(x, w)
    if op in _GEMM_OPS:
        ai, bi = _GEMM_OPS[op]
        a, b = s(ai), s(bi)
        if not (_known(a) and _known(b)) or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return op, m * k * n
    if op in _MATMUL_OPS:
        ai, bi = _MATMUL_OPS[op]
        a, b = s(ai), s(bi)
        if not (_known(a) and _known(b)):
            return None
        if op == "com.microsoft.FusedMatMul":
            if _attr(node, "transBatchA", 0) or _attr(node, "transBatchB", 0):
                return None
            if _attr(node, "transA", 0) and len(a) >= 2:
                a = a[:-2] + [a[-1], a[-2]]
            if _attr(node, "transB", 0) and len(b) >= 2:
                b = b[:-2] + [b[-1], b[-2]]
        return op, matmul_macs(a, b)
    if op == "com.microsoft.MatMulNBits":
        a = s(0)
        k, n = _attr(node, "K"), _attr(node, "N")
        if not _known(a) or k is None or n is None:
            return None
        return op, _prod(a[:-1]) * int(k) * int(n)
    if op == "Einsum":
        ins = [s(i) for i in range(len(node.input))]
        if not all(_known(x) for x in ins):
            return None
        eq = _attr(node, "equation", b"")
        eq = eq.decode() if isinstance(eq, bytes) else str(eq)
        return op, einsum_macs(eq, ins)
    return None


def _is_mac_op(op: str) -> bool:
    return (op in _CONV_OPS or op in _MATMUL_OPS or op in _GEMM_OPS
            or op in ("ConvTranspose", "Einsum", "com.microsoft.MatMulNBits"))


def _fix_input_dims(model, input_shapes: dict | None, report_warnings: list[str]) -> int:
    """Write concrete dims into the graph inputs; returns the batch size (dim 0 of the first input)."""
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


def _structure_copy(model):
    """A copy of ``model`` whose large tensor payloads are dropped (shape inference needs dims only)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for graph, _ in _walk_graphs(copy.graph):
        for t in graph.initializer:
            if _prod(t.dims) > 1024 and t.data_location != onnx.TensorProto.EXTERNAL:
                t.ClearField("raw_data")
                for f in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
                    t.ClearField(f)
                t.data_location = onnx.TensorProto.EXTERNAL
                entry = t.external_data.add()
                entry.key, entry.value = "location", "__dims_only__"
    return copy


def count_onnx(model_or_path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> FlopReport:
    """Count an ONNX model from its graph (``onnx.shape_inference`` after fixing dynamic dims).

    ``model_or_path``: a path (external data is read from the model's folder after
    :func:`benchmark.safety.check_onnx_external_data`) or an ``onnx.ModelProto``.
    ``input_shapes``: name -> concrete shape for the graph inputs; without it a dynamic dim 0
    counts as 1 (with a warning). ``by_module`` has one row per node with MACs or parameters.
    ``size_bytes`` is the file size plus its external-data files (None for an in-memory model).
    """
    import onnx
    from google.protobuf.message import DecodeError

    report_warnings: list[str] = []
    base_dir: Path | None = None
    size_bytes: int | None = None
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model {str(path)!r} does not exist or is not a file")
        from ..safety import check_onnx_external_data

        external = check_onnx_external_data(path)
        try:
            model = onnx.load(str(path), load_external_data=False)
        except (DecodeError, OSError, ValueError) as exc:
            raise ModelLoadError(f"{path.name} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
        base_dir = path.parent
        size_bytes = path.stat().st_size + sum(p.stat().st_size for p in external)
    elif isinstance(model_or_path, onnx.ModelProto):
        model = onnx.ModelProto()
        model.CopyFrom(model_or_path)
    else:
        raise ConfigError(f"count_onnx needs a path or an onnx.ModelProto; got {type(model_or_path).__name__}")

    batch = _fix_input_dims(model, input_shapes, report_warnings)
    weights = _collect_weights(model)
    uses = _uses(model)
    float_types, int_types = _float_types(), _int_weight_types()

    structure = _structure_copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(structure, check_type=False, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError) as exc:
        report_warnings.append(f"ONNX shape inference failed ({str(exc).splitlines()[0][:200]}); "
                               "only ops with declared shapes are costed")
        inferred = structure
    shapes = _shape_table(inferred)
    if _mac_shapes_missing(model, shapes):
        probed = _probe_shapes_with_ort(model, base_dir, report_warnings)
        for name, shape in probed.items():
            if not _known(shapes.get(name)):
                shapes[name] = shape

    # Parameters and sparsity.
    zp_info = _zero_points(model)
    param_names = [n for n, w in weights.items() if _is_param(w, uses.get(n, []), float_types, int_types)]
    params = 0
    zeros = 0
    unreadable = []
    packed = {}
    for graph, _ in _walk_graphs(model.graph):
        for node in graph.node:
            if _op_name(node) == "com.microsoft.MatMulNBits" and len(node.input) > 1:
                packed[node.input[1]] = int(_attr(node, "K", 0)) * int(_attr(node, "N", 0))
    elements_of: dict[str, int] = {}
    for name in param_names:
        w = weights[name]
        n = packed.get(name, _prod(w.dims))
        elements_of[name] = n
        params += n
        try:
            arr = _weight_array(w, base_dir) if name not in packed else None
        except (OSError, ValueError) as exc:
            unreadable.append(f"{name} ({type(exc).__name__})")
            arr = None
        else:
            if arr is None and w.nnz is None and name not in packed:
                unreadable.append(name)
        zeros += _zero_count(w, arr, zp_info, weights, base_dir)
    if unreadable:
        report_warnings.append(f"weight values unavailable for sparsity: {', '.join(unreadable[:5])}"
                               + (" ..." if len(unreadable) > 5 else ""))
    unused = [n for n, w in weights.items() if not uses.get(n) and w.data_type in float_types and _prod(w.dims) > 1]
    if unused:
        report_warnings.append(f"{len(unused)} unused weight tensor(s) not counted: {', '.join(unused[:5])}"
                               + (" ..." if len(unused) > 5 else ""))

    # Attribute each parameter to the first node that consumes it (through pass-through ops).
    param_set = set(param_names)
    origin: dict[str, set[str]] = {n: {n} for n in param_names}
    claimed: set[str] = set()
    node_params: dict[int, int] = {}
    for idx, node in enumerate(model.graph.node):
        op = _op_name(node)
        sources = set()
        for i, name in enumerate(node.input):
            if name in origin:
                sources |= origin[name]
        if op in _WEIGHT_PASS_THROUGH and node.input and node.input[0] in origin:
            for out in node.output:
                origin[out] = set(origin[node.input[0]])
            continue
        fresh = {s for s in sources if s in param_set and s not in claimed}
        claimed |= fresh
        if fresh:
            node_params[idx] = sum(elements_of[s] for s in fresh)

    # MACs.
    macs = 0
    by_operator: dict[str, int] = {}
    unsupported: Counter = Counter()
    rows = []
    uncosted = []
    for idx, node in enumerate(model.graph.node):
        op = _op_name(node)
        node_macs = 0
        if _is_mac_op(op):
            try:
                got = _node_macs(node, op, shapes)
            except ValueError:  # inconsistent shapes in the graph
                got = None
            if got is None:
                unsupported[f"{op} (unknown shape)"] += 1
                uncosted.append(node.name or (node.output[0] if node.output else op))
            else:
                key, node_macs = got
                macs += node_macs
                by_operator[key] = by_operator.get(key, 0) + node_macs
        elif op in _CONTROL_FLOW:
            unsupported[op] += 1
        elif op not in _ONNX_ZERO_COST:
            unsupported[op] += 1
        p = node_params.get(idx, 0)
        if node_macs or p:
            rows.append({"name": node.name or (node.output[0] if node.output else f"node{idx}"), "op_type": op,
                         "macs": int(node_macs), "params": int(p)})
    leftover = sum(elements_of[n] for n in param_set - claimed)
    if leftover:
        rows.append({"name": "(subgraphs and unattributed weights)", "op_type": "-", "macs": 0, "params": int(leftover)})
    if uncosted:
        report_warnings.append(f"MACs of {len(uncosted)} node(s) not counted, their shapes are unknown: "
                               + ", ".join(uncosted[:5]) + (" ..." if len(uncosted) > 5 else ""))

    for node in model.graph.node:
        op = _op_name(node)
        if op not in _CONTROL_FLOW:
            continue
        inner: Counter = Counter()
        for a in node.attribute:
            subgraphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
            for g in subgraphs:
                for sub, _ in _walk_graphs(g):
                    for n in sub.node:
                        inner[_op_name(n)] += 1
        for inner_op, count in inner.items():
            if inner_op not in _ONNX_ZERO_COST:
                unsupported[f"{inner_op} (inside {op})"] += count
        mac_inner = {k: v for k, v in inner.items() if _is_mac_op(k)}
        label = node.name or (node.output[0] if node.output else op)
        detail = ", ".join(f"{v} {k}" for k, v in sorted(mac_inner.items())) or "no MAC ops"
        report_warnings.append(f"{op} node {label!r} holds subgraph(s) with {detail}; control flow is not costed")

    return FlopReport(params=int(params), macs=int(macs), flops=2 * int(macs), size_bytes=size_bytes,
                      sparsity=(zeros / params if params else 0.0), by_module=rows, by_operator=by_operator,
                      unsupported_ops=dict(sorted(unsupported.items())), counter="onnx-graph", batch_size=batch,
                      warnings=report_warnings)


# --------------------------------------------------------------------------------------------
# LoadedModel / Variant
# --------------------------------------------------------------------------------------------

def _onnx_files_size(path: Path) -> int:
    from ..safety import check_onnx_external_data

    return path.stat().st_size + sum(p.stat().st_size for p in check_onnx_external_data(path))


def _state_dict_bytes(module) -> int:
    import torch

    buf = io.BytesIO()
    if isinstance(module, torch.jit.ScriptModule):
        torch.jit.save(module, buf)
    else:
        torch.save(module.state_dict(), buf)
    return buf.tell()


def count_model(model_or_variant, batch_size: int = 1) -> FlopReport:
    """Count a ``LoadedModel`` or ``Variant`` at ``batch_size``.

    The torch module is counted when there is one (inputs from the model's input specs), else the
    ONNX file. ``size_bytes``: a Variant's ONNX file (+ external data) if it has one, else the
    serialized state_dict of its module; a LoadedModel's own file (``path``, else ``onnx_path``),
    else the serialized state_dict.
    """
    from ..models.base import LoadedModel, Variant

    if isinstance(model_or_variant, Variant):
        model = model_or_variant.model
        module = model_or_variant.torch_module
        onnx_path = model_or_variant.onnx_path
        files = [onnx_path] if onnx_path else []
        label = f"variant {model_or_variant.name!r} of {model.name!r}"
    elif isinstance(model_or_variant, LoadedModel):
        model = model_or_variant
        module = model.torch_module
        onnx_path = model.onnx_path
        files = [p for p in (model.path, model.onnx_path) if p]
        label = f"model {model.name!r}"
    else:
        raise ConfigError(f"count_model needs a LoadedModel or Variant; got {type(model_or_variant).__name__}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be >= 1; got {batch_size}")

    if module is not None:
        feeds = model.example_inputs(batch_size)
        report = count_torch(module, tuple(feeds[s.name] for s in model.inputs), batch_size=batch_size)
    elif onnx_path is not None:
        shapes = {s.name: s.concrete(batch_size) for s in model.inputs}
        report = count_onnx(Path(onnx_path), shapes)
        report.batch_size = int(batch_size)
    else:
        raise ConfigError(f"{label} has neither a torch module nor an ONNX file to count")

    size = None
    for f in files:
        p = Path(f)
        if p.is_file():
            size = _onnx_files_size(p) if p.suffix.lower() == ".onnx" else p.stat().st_size
            break
    if size is None and module is not None:
        size = _state_dict_bytes(module)
    report.size_bytes = size
    return report

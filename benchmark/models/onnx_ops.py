"""ONNX node -> PyTorch module converters for :mod:`benchmark.models.onnx_to_torch`.

Each converter takes a :class:`NodeContext` (the node, its attributes, the values of its constant
inputs) and returns a :class:`Converted`: an ``nn.Module`` and which of the node's inputs it takes
at run time. Nodes with weights become the PyTorch layers a pruner or quantizer understands:
``Conv`` -> ``nn.ConvNd``, ``Gemm`` and ``MatMul`` by a constant matrix -> ``nn.Linear``,
``BatchNormalization`` -> a BatchNorm of any rank, ``LayerNormalization`` -> ``nn.LayerNorm``,
``Gather`` from a constant table -> ``nn.Embedding``, ``LSTM`` -> ``nn.LSTM``. Weightless nodes
become :class:`Op`, a module that calls one function with the node's attributes.

A node this module cannot express raises :class:`Unsupported` with the reason (which attribute or
run-time input is the problem); an op without a converter is simply absent from :data:`CONVERTERS`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import torch.onnx.operators
from torch import nn

#: ONNX TensorProto element type -> torch dtype.
TORCH_DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64,
    9: torch.bool, 10: torch.float16, 11: torch.float64, 12: torch.int32, 13: torch.int64, 16: torch.bfloat16,
}


class Unsupported(Exception):
    """A node this converter cannot express; the message says what about it (not the node name)."""


@dataclass
class Converted:
    """A converted node: ``module(*runtime inputs)``; ``inputs`` are the node input indices it takes
    at run time (None: all); ``wants_env``: the module is called as ``module(env, *inputs)``."""

    module: nn.Module
    inputs: tuple[int, ...] | None = None
    wants_env: bool = False


class NodeContext:
    """One ONNX node as a converter sees it."""

    def __init__(self, node, opset: int, constant: Callable[[str], np.ndarray | None], build_subgraph: Callable | None = None):
        self.node = node
        self.op = node.op_type
        self.opset = opset
        self._constant = constant
        self.build_subgraph = build_subgraph
        from onnx import helper

        self.attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def const(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` when it is a constant (initializer or ``Constant``), else None."""
        return self._constant(self.node.input[i]) if self.has(i) else None

    def require_const(self, i: int, what: str) -> np.ndarray:
        value = self.const(i)
        if value is None:
            raise Unsupported(f"{self.op} with {what} computed at run time")
        return value

    def outputs_used(self) -> int:
        return sum(1 for o in self.node.output if o)


CONVERTERS: dict[str, Callable[[NodeContext], Converted]] = {}


def converter(*ops: str):
    def deco(fn):
        for op in ops:
            CONVERTERS[op] = fn
        return fn
    return deco


def _param(array: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(array, copy=True)))


def _tensor(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array, copy=True))


class Op(nn.Module):
    """A weightless node: ``fn(*inputs, **attrs)``."""

    def __init__(self, op_type: str, fn: Callable, **attrs: Any):
        super().__init__()
        self.op_type = op_type
        self.fn = fn
        self.attrs = attrs

    def forward(self, *xs):
        return self.fn(*xs, **self.attrs)

    def extra_repr(self) -> str:
        return self.op_type + (f" {self.attrs}" if self.attrs else "")


def _op(op: str, fn: Callable, inputs: tuple[int, ...] | None = None, **attrs) -> Converted:
    return Converted(Op(op, fn, **attrs), inputs)


# ---------------------------------------------------------------------------------------------
# Elementwise


def _div(a, b):
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _identity(x, *rest):
    return x


def _selu(x, alpha: float, gamma: float):
    return gamma * torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def _hard_sigmoid(x, alpha: float, beta: float):
    return torch.clamp(alpha * x + beta, 0.0, 1.0)


def _variadic(fn):
    def apply(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return apply


_BINARY = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": torch.pow,
    "Equal": torch.eq, "Greater": torch.gt, "GreaterOrEqual": torch.ge, "Less": torch.lt, "LessOrEqual": torch.le,
    "And": torch.logical_and, "Or": torch.logical_or, "Xor": torch.logical_xor, "BitShift": None,
}
_UNARY = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp, "Log": torch.log,
    "Sqrt": torch.sqrt, "Neg": torch.neg, "Abs": torch.abs, "Erf": torch.erf, "Reciprocal": torch.reciprocal,
    "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round, "Sin": torch.sin, "Cos": torch.cos,
    "Sign": torch.sign, "Softplus": F.softplus, "Softsign": F.softsign, "Not": torch.logical_not,
    "IsNaN": torch.isnan, "HardSwish": F.hardswish, "Mish": F.mish, "Identity": _identity,
}
_VARIADIC = {"Sum": torch.add, "Max": torch.maximum, "Min": torch.minimum}


@converter(*[k for k, v in _BINARY.items() if v is not None])
def _binary(ctx: NodeContext) -> Converted:
    return _op(ctx.op, _BINARY[ctx.op])


@converter(*_UNARY)
def _unary(ctx: NodeContext) -> Converted:
    return _op(ctx.op, _UNARY[ctx.op], (0,))


@converter(*_VARIADIC)
def _variadic_op(ctx: NodeContext) -> Converted:
    return _op(ctx.op, _variadic(_VARIADIC[ctx.op]))


@converter("Mean")
def _mean(ctx: NodeContext) -> Converted:
    return _op("Mean", lambda *xs: torch.stack(torch.broadcast_tensors(*xs)).mean(0))


@converter("Mod")
def _mod(ctx: NodeContext) -> Converted:
    return _op("Mod", torch.fmod if ctx.attr("fmod", 0) else torch.remainder)


@converter("Dropout")
def _dropout(ctx: NodeContext) -> Converted:
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise Unsupported("Dropout whose mask output is used")
    return _op("Dropout", _identity, (0,))


@converter("LeakyRelu")
def _leaky(ctx):
    return _op("LeakyRelu", F.leaky_relu, (0,), negative_slope=float(ctx.attr("alpha", 0.01)))


@converter("Elu")
def _elu(ctx):
    return _op("Elu", F.elu, (0,), alpha=float(ctx.attr("alpha", 1.0)))


@converter("Selu")
def _selu_conv(ctx):
    return _op("Selu", _selu, (0,), alpha=float(ctx.attr("alpha", 1.67326319217681884765625)),
               gamma=float(ctx.attr("gamma", 1.05070102214813232421875)))


@converter("HardSigmoid")
def _hsig(ctx):
    return _op("HardSigmoid", _hard_sigmoid, (0,), alpha=float(ctx.attr("alpha", 0.2)), beta=float(ctx.attr("beta", 0.5)))


@converter("Gelu")
def _gelu(ctx):
    return _op("Gelu", F.gelu, (0,), approximate=ctx.attr("approximate", "none"))


@converter("PRelu")
def _prelu(ctx):
    return _op("PRelu", lambda x, slope: torch.where(x >= 0, x, x * slope))


def _clamp(x, lo=None, hi=None, min_value=None, max_value=None):
    lo = min_value if lo is None else lo
    hi = max_value if hi is None else hi
    return torch.clamp(x, lo, hi)


@converter("Clip")
def _clip(ctx: NodeContext) -> Converted:
    if ctx.opset < 11:
        return _op("Clip", _clamp, (0,), min_value=float(ctx.attr("min", -math.inf)), max_value=float(ctx.attr("max", math.inf)))
    lo, hi = ctx.const(1), ctx.const(2)
    if (lo is not None or not ctx.has(1)) and (hi is not None or not ctx.has(2)):
        return _op("Clip", _clamp, (0,), min_value=None if lo is None else float(lo), max_value=None if hi is None else float(hi))
    return _op("Clip", _clamp)


def _softmax(x, axis: int, legacy: bool, log: bool):
    fn = torch.log_softmax if log else torch.softmax
    if not legacy:
        return fn(x, dim=axis)
    axis = axis % x.dim()
    flat = x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)
    return fn(flat, dim=1).reshape(x.shape)


@converter("Softmax", "LogSoftmax")
def _softmax_conv(ctx: NodeContext) -> Converted:
    legacy = ctx.opset < 13
    return _op(ctx.op, _softmax, (0,), axis=int(ctx.attr("axis", 1 if legacy else -1)), legacy=legacy, log=ctx.op == "LogSoftmax")


# ---------------------------------------------------------------------------------------------
# Layers with weights


def _pads_to_torch(pads: list[int]) -> list[int]:
    """ONNX ``[x1_begin, x2_begin, ..., x1_end, x2_end]`` -> F.pad's ``(xn_begin, xn_end, ..., x1_begin, x1_end)``."""
    n = len(pads) // 2
    out: list[int] = []
    for i in reversed(range(n)):
        out += [int(pads[i]), int(pads[i + n])]
    return out


def _same_pads(x, kernel, strides, dilations, upper: bool) -> list[int]:
    spatial = x.shape[2:]
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((math.ceil(int(size) / s) - 1) * s + (k - 1) * d + 1 - int(size), 0)
        small, big = total // 2, total - total // 2
        begins.append(small if upper else big)
        ends.append(big if upper else small)
    return begins + ends


class Padded(nn.Module):
    """A conv or pool after explicit padding (asymmetric ``pads`` or ``auto_pad=SAME_*``)."""

    def __init__(self, inner: nn.Module, pads: list[int] | None, same: str | None, kernel, strides, dilations, value: float = 0.0):
        super().__init__()
        self.inner = inner
        self.pads = pads
        self.same = same
        self.kernel, self.strides, self.dilations, self.value = list(kernel), list(strides), list(dilations), value

    def forward(self, x):
        pads = self.pads
        if self.same is not None:
            pads = _same_pads(x, self.kernel, self.strides, self.dilations, self.same == "SAME_UPPER")
        return self.inner(F.pad(x, _pads_to_torch(pads), value=self.value))


def _window(ctx: NodeContext, kernel) -> tuple[list[int], list[int], list[int], str | None]:
    """strides, dilations, pads and auto_pad ('SAME_UPPER'/'SAME_LOWER'/None) of a conv or pool."""
    n = len(kernel)
    strides = list(ctx.attr("strides", [1] * n))
    dilations = list(ctx.attr("dilations", [1] * n))
    pads = list(ctx.attr("pads", [0] * (2 * n)))
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto == "VALID":
        pads = [0] * (2 * n)
    same = auto if auto in ("SAME_UPPER", "SAME_LOWER") else None
    return strides, dilations, pads, same


def _wrap_padding(inner_factory, ctx, kernel, value: float = 0.0) -> nn.Module:
    """``inner_factory(padding)`` with symmetric padding, or wrapped in :class:`Padded`."""
    strides, dilations, pads, same = _window(ctx, kernel)
    n = len(kernel)
    if same is None and pads[:n] == pads[n:]:
        return inner_factory(tuple(pads[:n]))
    return Padded(inner_factory((0,) * n), None if same else pads, same, kernel, strides, dilations, value)


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@converter("Conv")
def _conv(ctx: NodeContext) -> Converted:
    w = ctx.require_const(1, "a weight")
    b = ctx.const(2)
    if ctx.has(2) and b is None:
        raise Unsupported("Conv with a bias computed at run time")
    n = w.ndim - 2
    if n not in _CONV:
        raise Unsupported(f"Conv with {n} spatial dims")
    groups = int(ctx.attr("group", 1))
    kernel = list(w.shape[2:])
    strides, dilations, _, _ = _window(ctx, kernel)

    def factory(padding):
        conv = torch.nn.utils.skip_init(_CONV[n], w.shape[1] * groups, w.shape[0], kernel, stride=strides, padding=padding,
                                        dilation=dilations, groups=groups, bias=b is not None)
        conv.weight = _param(w)
        if b is not None:
            conv.bias = _param(b)
        return conv

    return Converted(_wrap_padding(factory, ctx, kernel), (0,))


@converter("ConvTranspose")
def _conv_transpose(ctx: NodeContext) -> Converted:
    w = ctx.require_const(1, "a weight")
    b = ctx.const(2)
    n = w.ndim - 2
    if n not in _CONV_T or ctx.attr("output_shape") is not None or ctx.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise Unsupported("ConvTranspose with output_shape, auto_pad or more than 3 spatial dims")
    kernel = list(w.shape[2:])
    strides, dilations, pads, _ = _window(ctx, kernel)
    if pads[:n] != pads[n:]:
        raise Unsupported("ConvTranspose with asymmetric pads")
    groups = int(ctx.attr("group", 1))
    conv = torch.nn.utils.skip_init(_CONV_T[n], w.shape[0], w.shape[1] * groups, kernel, stride=strides, padding=pads[:n],
                                    output_padding=list(ctx.attr("output_padding", [0] * n)), dilation=dilations,
                                    groups=groups, bias=b is not None)
    conv.weight = _param(w)
    if b is not None:
        conv.bias = _param(b)
    return Converted(conv, (0,))


def _linear(weight_out_in: np.ndarray, bias: np.ndarray | None) -> nn.Linear:
    out_f, in_f = weight_out_in.shape
    lin = torch.nn.utils.skip_init(nn.Linear, in_f, out_f, bias=bias is not None)
    lin.weight = _param(weight_out_in)
    if bias is not None:
        lin.bias = _param(np.broadcast_to(bias, (out_f,)).astype(weight_out_in.dtype))
    return lin


def _gemm(a, b, c=None, alpha: float = 1.0, beta: float = 1.0, trans_a: int = 0, trans_b: int = 0):
    a = a.t() if trans_a else a
    b = b.t() if trans_b else b
    out = alpha * (a @ b)
    return out if c is None else out + beta * c


class TransposedInput(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.t())


@converter("Gemm")
def _gemm_conv(ctx: NodeContext) -> Converted:
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_a, trans_b = int(ctx.attr("transA", 0)), int(ctx.attr("transB", 0))
    w, c = ctx.const(1), ctx.const(2)
    bias_ok = not ctx.has(2) or (c is not None and (c.size == 1 or c.ndim == 1 or (c.ndim == 2 and c.shape[0] == 1)))
    if w is None or not bias_ok:
        return _op("Gemm", _gemm, alpha=alpha, beta=beta, trans_a=trans_a, trans_b=trans_b)
    weight = (w if trans_b else w.T) * np.asarray(alpha, dtype=w.dtype)
    bias = None if c is None else (c.reshape(-1) if c.size > 1 else c.reshape(())) * np.asarray(beta, dtype=c.dtype)
    lin = _linear(np.ascontiguousarray(weight), bias)
    return Converted(TransposedInput(lin) if trans_a else lin, (0,))


def matmul_linear(ctx: NodeContext, bias: np.ndarray | None) -> Converted | None:
    """``MatMul(x, W)`` with a constant 2-D ``W`` (plus an optional fused bias) as ``nn.Linear``; None otherwise."""
    w = ctx.const(1)
    if w is None or w.ndim != 2 or ctx.const(0) is not None:
        return None
    return Converted(_linear(np.ascontiguousarray(w.T), bias), (0,))


@converter("MatMul")
def _matmul(ctx: NodeContext) -> Converted:
    return matmul_linear(ctx, None) or _op("MatMul", torch.matmul)


class AnyRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Inference BatchNorm over dim 1 of inputs of any rank >= 2 (ONNX ``BatchNormalization``)."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"BatchNormalization expects rank >= 2 input (got rank {input.dim()})")


@converter("BatchNormalization")
def _batchnorm(ctx: NodeContext) -> Converted:
    if int(ctx.attr("training_mode", 0)) or ctx.outputs_used() > 1:
        raise Unsupported("BatchNormalization in training mode")
    scale, bias = ctx.require_const(1, "a scale"), ctx.require_const(2, "a bias")
    mean, var = ctx.require_const(3, "a running mean"), ctx.require_const(4, "a running variance")
    bn = AnyRankBatchNorm(scale.shape[0], eps=float(ctx.attr("epsilon", 1e-5)))
    with torch.no_grad():
        bn.weight = _param(scale)
        bn.bias = _param(bias)
        bn.running_mean.copy_(_tensor(mean))
        bn.running_var.copy_(_tensor(var))
    return Converted(bn.eval(), (0,))


class OnnxLayerNorm(nn.LayerNorm):
    """``LayerNormalization`` normalizing from ``axis`` to the last dim."""

    def __init__(self, shape, eps: float, axis: int, bias: bool):
        super().__init__(shape, eps=eps, bias=bias)
        self.axis = axis

    def forward(self, x):
        axis = self.axis % x.dim()
        if x.dim() - axis != len(self.normalized_shape):
            raise RuntimeError(f"LayerNormalization over axis {self.axis} of a rank-{x.dim()} input does not match its scale shape {tuple(self.normalized_shape)}")
        return super().forward(x)


@converter("LayerNormalization")
def _layernorm(ctx: NodeContext) -> Converted:
    if ctx.outputs_used() > 1:
        raise Unsupported("LayerNormalization whose mean / inverse std-dev outputs are used")
    scale, bias = ctx.require_const(1, "a scale"), ctx.const(2)
    axis = int(ctx.attr("axis", -1))
    if axis < 0 and scale.ndim != -axis:
        raise Unsupported(f"LayerNormalization whose scale (shape {list(scale.shape)}) is broadcast over axis {axis}")
    ln = OnnxLayerNorm(tuple(int(d) for d in scale.shape), float(ctx.attr("epsilon", 1e-5)), axis, bias is not None)
    ln.weight = _param(scale)
    if bias is not None:
        ln.bias = _param(np.broadcast_to(bias, scale.shape))
    return Converted(ln, (0,))


class InstanceNorm(nn.Module):
    def __init__(self, scale: np.ndarray, bias: np.ndarray, eps: float):
        super().__init__()
        self.weight, self.bias, self.eps = _param(scale), _param(bias), eps

    def forward(self, x):
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


@converter("InstanceNormalization")
def _instnorm(ctx: NodeContext) -> Converted:
    return Converted(InstanceNorm(ctx.require_const(1, "a scale"), ctx.require_const(2, "a bias"), float(ctx.attr("epsilon", 1e-5))), (0,))


class Embedding(nn.Embedding):
    """``Gather(table, indices)`` on axis 0 (negative indices count from the end, as in ONNX)."""

    def forward(self, idx):
        return super().forward(torch.where(idx < 0, idx + self.num_embeddings, idx))


def _gather(data, idx, axis: int):
    axis = axis % data.dim()
    if idx.dim() == 0:
        return torch.select(data, axis, int(idx))
    idx = torch.where(idx < 0, idx + data.shape[axis], idx)
    flat = torch.index_select(data, axis, idx.reshape(-1))
    return flat.reshape(list(data.shape[:axis]) + list(idx.shape) + list(data.shape[axis + 1:]))


@converter("Gather")
def _gather_conv(ctx: NodeContext) -> Converted:
    axis = int(ctx.attr("axis", 0))
    table = ctx.const(0)
    if table is not None and axis == 0 and table.ndim == 2 and table.dtype.kind == "f" and ctx.const(1) is None:
        emb = torch.nn.utils.skip_init(Embedding, table.shape[0], table.shape[1])
        emb.weight = _param(table)
        return Converted(emb, (1,))
    return _op("Gather", _gather, axis=axis)


@converter("GatherElements")
def _gather_el(ctx):
    return _op("GatherElements", lambda x, i, axis: torch.gather(x, axis, torch.where(i < 0, i + x.shape[axis], i)),
               axis=int(ctx.attr("axis", 0)))


# ---------------------------------------------------------------------------------------------
# Pooling


def _pool_params(ctx: NodeContext):
    kernel = list(ctx.attr("kernel_shape", []))
    if not kernel:
        raise Unsupported(f"{ctx.op} without kernel_shape")
    if len(kernel) not in (1, 2, 3):
        raise Unsupported(f"{ctx.op} with {len(kernel)} spatial dims")
    return kernel


class Pool(nn.Module):
    def __init__(self, kind: str, kernel, strides, padding, dilations, ceil_mode: bool, count_include_pad: bool):
        super().__init__()
        self.kind, self.kernel, self.strides, self.padding = kind, list(kernel), list(strides), list(padding)
        self.dilations, self.ceil_mode, self.count_include_pad = list(dilations), ceil_mode, count_include_pad

    def forward(self, x):
        n = len(self.kernel)
        if self.kind == "max":
            fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
            return fn(x, self.kernel, self.strides, self.padding, self.dilations, ceil_mode=self.ceil_mode)
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
        return fn(x, self.kernel, self.strides, self.padding, ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


@converter("MaxPool", "AveragePool")
def _pool(ctx: NodeContext) -> Converted:
    if ctx.outputs_used() > 1:
        raise Unsupported(f"{ctx.op} whose indices output is used")
    kernel = _pool_params(ctx)
    strides, dilations, pads, same = _window(ctx, kernel)
    kind = "max" if ctx.op == "MaxPool" else "avg"
    if kind == "avg" and dilations != [1] * len(kernel):
        raise Unsupported("AveragePool with dilations")
    include = bool(ctx.attr("count_include_pad", 0))
    n = len(kernel)
    symmetric = same is None and pads[:n] == pads[n:] and all(p <= k // 2 for p, k in zip(pads, kernel))
    ceil_mode = bool(ctx.attr("ceil_mode", 0))
    if symmetric:
        return Converted(Pool(kind, kernel, strides, pads[:n], dilations, ceil_mode, include), (0,))
    if kind == "avg" and not include:
        raise Unsupported("AveragePool with asymmetric or SAME padding that excludes the pad from the average")
    inner = Pool(kind, kernel, strides, [0] * n, dilations, ceil_mode, include)
    value = -math.inf if kind == "max" else 0.0
    return Converted(Padded(inner, None if same else pads, same, kernel, strides, dilations, value), (0,))


@converter("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: NodeContext) -> Converted:
    if ctx.op == "GlobalAveragePool":
        return _op(ctx.op, lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True), (0,))
    return _op(ctx.op, lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True), (0,))


# ---------------------------------------------------------------------------------------------
# Shapes and indexing


def _ints(t) -> list[int]:
    return [int(v) for v in (t.tolist() if hasattr(t, "tolist") else t)]


def _axes(ctx: NodeContext, input_index: int, attr_until: int) -> list[int] | None:
    """Axes from the attribute (opset < ``attr_until``) or from a constant input."""
    if ctx.opset < attr_until:
        axes = ctx.attr("axes")
        return None if axes is None else [int(a) for a in axes]
    if not ctx.has(input_index):
        return None
    return _ints(ctx.require_const(input_index, "axes"))


def _shape(x, start: int = 0, end: int | None = None):
    shape = torch.onnx.operators.shape_as_tensor(x)
    return shape[start:end] if (start or end is not None) else shape


def _reshape(x, shape, allowzero: int = 0):
    # Traced (ONNX export): keep the shape a tensor so a batch dim stays open. allowzero=1 reads the
    # same as 0 when the shape holds no 0 (the torch.export exporter writes allowzero=1).
    if torch.jit.is_tracing() and (not allowzero or 0 not in _ints(shape)):
        return torch.onnx.operators.reshape_from_tensor_shape(x, shape)
    sizes = _ints(shape)
    if not allowzero:
        sizes = [x.shape[i] if v == 0 else v for i, v in enumerate(sizes)]
    return x.reshape(sizes)


def _reshape_const(x, sizes: list[int], allowzero: int = 0):
    if not allowzero:
        sizes = [x.shape[i] if v == 0 else v for i, v in enumerate(sizes)]
    return x.reshape(sizes)


def _flatten(x, axis: int):
    axis = axis + x.dim() if axis < 0 else axis
    if axis == 0:
        return x.reshape(1, -1)
    out = torch.flatten(x, start_dim=axis) if axis < x.dim() else x.unsqueeze(-1)
    return torch.flatten(out, 0, axis - 1)


def _unsqueeze(x, axes: list[int]):
    rank = x.dim() + len(axes)
    for a in sorted(a % rank for a in axes):
        x = x.unsqueeze(a)
    return x


def _squeeze(x, axes: list[int] | None):
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.dim() for a in axes))


@converter("Shape")
def _shape_conv(ctx):
    end = ctx.attr("end")
    return _op("Shape", _shape, (0,), start=int(ctx.attr("start", 0)), end=None if end is None else int(end))


@converter("Size")
def _size(ctx):
    return _op("Size", lambda x: torch.tensor(x.numel(), dtype=torch.int64), (0,))


@converter("Reshape")
def _reshape_conv(ctx: NodeContext) -> Converted:
    allowzero = int(ctx.attr("allowzero", 0))
    shape = ctx.const(1)
    if shape is not None:
        return _op("Reshape", _reshape_const, (0,), sizes=_ints(shape), allowzero=allowzero)
    return _op("Reshape", _reshape, allowzero=allowzero)


@converter("Flatten")
def _flatten_conv(ctx):
    return _op("Flatten", _flatten, (0,), axis=int(ctx.attr("axis", 1)))


@converter("Transpose")
def _transpose(ctx):
    perm = ctx.attr("perm")
    if perm is None:
        return _op("Transpose", lambda x: x.permute(*reversed(range(x.dim()))), (0,))
    return _op("Transpose", lambda x, perm: x.permute(*perm), (0,), perm=[int(p) for p in perm])


@converter("Squeeze")
def _squeeze_conv(ctx):
    return _op("Squeeze", _squeeze, (0,), axes=_axes(ctx, 1, 13))


@converter("Unsqueeze")
def _unsqueeze_conv(ctx):
    axes = _axes(ctx, 1, 13)
    if axes is None:
        raise Unsupported("Unsqueeze without axes")
    return _op("Unsqueeze", _unsqueeze, (0,), axes=axes)


@converter("Concat")
def _concat(ctx):
    return _op("Concat", lambda *xs, axis: torch.cat(xs, dim=axis), axis=int(ctx.attr("axis", 0)))


def _split(x, split=None, axis: int = 0, sizes=None, parts: int = 1):
    sizes = _ints(split) if split is not None else sizes
    if sizes is None:
        sizes = math.ceil(x.shape[axis] / parts)
    return tuple(torch.split(x, sizes, dim=axis))


@converter("Split")
def _split_conv(ctx: NodeContext) -> Converted:
    axis = int(ctx.attr("axis", 0))
    parts = len(ctx.node.output)
    if ctx.opset < 13:
        sizes = ctx.attr("split")
        return _op("Split", _split, (0,), axis=axis, sizes=None if sizes is None else [int(s) for s in sizes], parts=parts)
    split = ctx.const(1)
    if ctx.has(1) and split is None:
        return _op("Split", _split, (0, 1), axis=axis, parts=parts)
    return _op("Split", _split, (0,), axis=axis, sizes=None if split is None else _ints(split), parts=parts)


def _slice_one(x, axis: int, start: int, end: int, step: int):
    dim = x.shape[axis]
    if step > 0:
        index = [slice(None)] * x.dim()
        index[axis] = slice(start, end, step)
        return x[tuple(index)]
    # negative step: clamp as ONNX does, then pick indices explicitly
    start = min(max(start + dim if start < 0 else start, -1), dim - 1)
    end = min(max(end + dim if end < 0 else end, -1), dim - 1)
    idx = torch.arange(start, end, step, device=x.device)
    return torch.index_select(x, axis, idx)


def _slice(x, starts, ends, axes=None, steps=None, c_starts=None, c_ends=None, c_axes=None, c_steps=None):
    starts = _ints(starts) if starts is not None else c_starts
    ends = _ints(ends) if ends is not None else c_ends
    axes = _ints(axes) if axes is not None else (c_axes if c_axes is not None else list(range(len(starts))))
    steps = _ints(steps) if steps is not None else (c_steps if c_steps is not None else [1] * len(starts))
    for a, s, e, st in zip(axes, starts, ends, steps):
        x = _slice_one(x, a % x.dim(), s, e, st)
    return x


@converter("Slice")
def _slice_conv(ctx: NodeContext) -> Converted:
    if ctx.opset < 10:
        starts, ends = _ints(ctx.attr("starts")), _ints(ctx.attr("ends"))
        axes = ctx.attr("axes")
        return _op("Slice", lambda x, **kw: _slice(x, None, None, **kw), (0,), c_starts=starts, c_ends=ends,
                   c_axes=None if axes is None else _ints(axes))
    runtime = [0]
    consts: dict[str, Any] = {}
    for i, key in ((1, "c_starts"), (2, "c_ends"), (3, "c_axes"), (4, "c_steps")):
        value = ctx.const(i)
        if value is not None:
            consts[key] = _ints(value)
        elif ctx.has(i):
            runtime.append(i)
    if runtime == [0]:
        return _op("Slice", lambda x, **kw: _slice(x, None, None, **kw), (0,), **consts)
    return Converted(SliceRuntime(runtime[1:], consts), tuple(runtime))


class SliceRuntime(nn.Module):
    """``Slice`` whose starts/ends/axes/steps (some of them) are computed at run time."""

    _KEYS = {1: "starts", 2: "ends", 3: "axes", 4: "steps"}

    def __init__(self, runtime_indices: list[int], consts: dict[str, list[int]]):
        super().__init__()
        self.runtime_keys = [self._KEYS[i] for i in runtime_indices]
        self.consts = {k[2:]: v for k, v in consts.items()}

    def forward(self, x, *values):
        kw = dict(self.consts)
        kw.update({k: _ints(v) for k, v in zip(self.runtime_keys, values)})
        return _slice(x, kw.get("starts"), kw.get("ends"), kw.get("axes"), kw.get("steps"))


def _expand(x, shape):
    target = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(shape)))
    return x.expand(target)


@converter("Expand")
def _expand_conv(ctx):
    return _op("Expand", _expand)


@converter("Tile")
def _tile(ctx):
    return _op("Tile", lambda x, reps: x.repeat(*_ints(reps)))


def _constant_of_shape(shape, value=None, dtype=torch.float32):
    return torch.full(_ints(shape), value, dtype=dtype)


@converter("ConstantOfShape")
def _cos(ctx: NodeContext) -> Converted:
    from onnx import numpy_helper

    tensor = ctx.attr("value")
    value, dtype = 0.0, torch.float32
    if tensor is not None:
        arr = numpy_helper.to_array(tensor)
        value, dtype = arr.reshape(-1)[0].item(), TORCH_DTYPES.get(tensor.data_type, torch.float32)
    return _op("ConstantOfShape", _constant_of_shape, (0,), value=value, dtype=dtype)


class FloatCast(nn.Module):
    """``Cast(to=float)``: casts to the module's float dtype. A float32 graph cast to float16 or
    bfloat16 (``module.half()``) then computes in that dtype throughout; a literal float32 cast
    would turn an attention mask back to float32 and break the next matrix product."""

    def __init__(self):
        super().__init__()
        self.register_buffer("like", torch.zeros(0), persistent=False)  # follows .half() / .to(dtype)

    def forward(self, x):
        return x.to(self.like.dtype)


@converter("Cast")
def _cast(ctx: NodeContext) -> Converted:
    to = int(ctx.attr("to", 1))
    if to not in TORCH_DTYPES:
        raise Unsupported(f"Cast to ONNX type {to}")
    if to == 1:
        return Converted(FloatCast(), (0,))
    return _op("Cast", lambda x, dtype: x.to(dtype), (0,), dtype=TORCH_DTYPES[to])


@converter("CastLike")
def _cast_like(ctx):
    return _op("CastLike", lambda x, like: x.to(like.dtype))


@converter("Where")
def _where(ctx):
    return _op("Where", torch.where)


@converter("Range")
def _range(ctx):
    return _op("Range", lambda start, limit, delta: torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype))


_REDUCE = {
    "ReduceMean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt((x * x).sum(dim=d, keepdim=k)),
    "ReduceL1": lambda x, d, k: x.abs().sum(dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: (x * x).sum(dim=d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


def _reduce(x, axes=None, kind: str = "ReduceMean", keepdims: bool = True, c_axes=None, noop: bool = False):
    axes = _ints(axes) if axes is not None else c_axes
    if not axes:
        if noop:
            return x
        axes = list(range(x.dim()))
    return _REDUCE[kind](x, tuple(a % x.dim() for a in axes), keepdims)


@converter(*_REDUCE)
def _reduce_conv(ctx: NodeContext) -> Converted:
    attr_until = 13 if ctx.op == "ReduceSum" else 18
    kw = dict(kind=ctx.op, keepdims=bool(ctx.attr("keepdims", 1)), noop=bool(ctx.attr("noop_with_empty_axes", 0)))
    if ctx.opset >= attr_until and ctx.has(1) and ctx.const(1) is None:
        return _op(ctx.op, _reduce, (0, 1), **kw)
    return _op(ctx.op, _reduce, (0,), c_axes=_axes(ctx, 1, attr_until), **kw)


@converter("ArgMax", "ArgMin")
def _argext(ctx: NodeContext) -> Converted:
    if int(ctx.attr("select_last_index", 0)):
        raise Unsupported(f"{ctx.op} with select_last_index=1")
    fn = torch.argmax if ctx.op == "ArgMax" else torch.argmin
    return _op(ctx.op, lambda x, axis, keepdims: fn(x, dim=axis, keepdim=keepdims), (0,),
               axis=int(ctx.attr("axis", 0)), keepdims=bool(ctx.attr("keepdims", 1)))


def _pad(x, pads=None, value=None, c_pads=None, mode: str = "constant", axes=None):
    pads = _ints(pads) if pads is not None else c_pads
    if axes is not None:
        full = [0] * (2 * x.dim())
        n = len(axes)
        for j, a in enumerate(axes):
            full[a % x.dim()], full[a % x.dim() + x.dim()] = pads[j], pads[j + n]
        pads = full
    torch_pads = _pads_to_torch(pads)
    if mode == "constant":
        return F.pad(x, torch_pads, value=0.0 if value is None else float(value))
    return F.pad(x, torch_pads[: 2 * (x.dim() - 2)], mode={"reflect": "reflect", "edge": "replicate", "wrap": "circular"}[mode])


@converter("Pad")
def _pad_conv(ctx: NodeContext) -> Converted:
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise Unsupported(f"Pad with mode={mode}")
    if ctx.opset < 11:
        return _op("Pad", _pad, (0,), c_pads=_ints(ctx.attr("pads")), mode=mode, value=float(ctx.attr("value", 0.0)))
    axes = _ints(ctx.require_const(3, "axes")) if ctx.has(3) else None
    value = ctx.const(2)
    if ctx.has(2) and value is None:
        raise Unsupported("Pad with a constant_value computed at run time")
    pads = ctx.const(1)
    kw = dict(mode=mode, axes=axes, value=None if value is None else float(value))
    if pads is None:
        return _op("Pad", _pad, (0, 1), **kw)
    return _op("Pad", _pad, (0,), c_pads=_ints(pads), **kw)


@converter("Einsum")
def _einsum(ctx):
    return _op("Einsum", lambda *xs, equation: torch.einsum(equation, *xs), equation=ctx.attr("equation"))


@converter("CumSum")
def _cumsum(ctx: NodeContext) -> Converted:
    axis = ctx.require_const(1, "an axis")

    def cumsum(x, axis: int, exclusive: bool, reverse: bool):
        y = x.flip(axis) if reverse else x
        out = torch.cumsum(y, dim=axis)
        if exclusive:
            out = out - y
        return out.flip(axis) if reverse else out

    return _op("CumSum", cumsum, (0,), axis=int(axis), exclusive=bool(ctx.attr("exclusive", 0)), reverse=bool(ctx.attr("reverse", 0)))


@converter("TopK")
def _topk(ctx: NodeContext) -> Converted:
    k = ctx.require_const(1, "k")
    return _op("TopK", lambda x, k, axis, largest, sorted: tuple(torch.topk(x, k, dim=axis, largest=largest, sorted=sorted)), (0,),
               k=int(k.reshape(-1)[0]), axis=int(ctx.attr("axis", -1)), largest=bool(ctx.attr("largest", 1)), sorted=bool(ctx.attr("sorted", 1)))


def _resize(x, runtime=None, mode: str = "nearest", align=None, size=None, scale=None, runtime_is_size: bool = True):
    if runtime is not None:
        if runtime_is_size:
            size = _ints(runtime)
        else:
            scale = [float(v) for v in runtime.tolist()]
    if size is not None:
        return F.interpolate(x, size=size[2:], mode=mode, align_corners=align)
    return F.interpolate(x, scale_factor=scale[2:], mode=mode, align_corners=align)


_LINEAR_MODES = {3: "linear", 4: "bilinear", 5: "trilinear"}


@converter("Resize", "Upsample")
def _resize_conv(ctx: NodeContext) -> Converted:
    mode = ctx.attr("mode", "nearest")
    coord = ctx.attr("coordinate_transformation_mode", "asymmetric" if ctx.op == "Upsample" or ctx.opset < 11 else "half_pixel")
    if mode == "nearest" and coord == "asymmetric" and ctx.attr("nearest_mode", "round_prefer_floor" if ctx.opset >= 11 else "floor") == "floor":
        torch_mode, align = "nearest", None
    elif mode in ("linear", "bilinear") and coord in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        torch_mode, align = "linear", coord == "align_corners"
    else:
        raise Unsupported(f"{ctx.op} with mode={mode}, coordinate_transformation_mode={coord}")
    if ctx.op == "Upsample" and ctx.opset < 9:
        return _op(ctx.op, _resize, (0,), mode=torch_mode.replace("linear", "bilinear"), align=align,
                   scale=[float(s) for s in ctx.attr("scales")])
    scale_idx = 1 if ctx.op == "Upsample" else 2
    kw: dict[str, Any] = dict(mode=torch_mode, align=align)
    runtime = None
    for idx, key in ((scale_idx, "scale"), (3, "size")):
        if idx == 3 and ctx.op == "Upsample":
            continue
        value = ctx.const(idx)
        if value is not None and value.size:
            kw[key] = [float(v) for v in value] if key == "scale" else _ints(value)
        elif value is None and ctx.has(idx):
            runtime = idx
            kw["runtime_is_size"] = key == "size"
    if "scale" not in kw and "size" not in kw and runtime is None:
        raise Unsupported(f"{ctx.op} without scales or sizes")
    if torch_mode == "linear":
        # the rank is known from the constant scales/sizes; with run-time ones, assume an image (NCHW)
        rank = len(kw.get("size") or kw.get("scale") or [0] * 4)
        if rank not in _LINEAR_MODES:
            raise Unsupported(f"{ctx.op} linear on a rank-{rank} input")
        kw["mode"] = _LINEAR_MODES[rank]
    return _op(ctx.op, _resize, (0,) if runtime is None else (0, runtime), **kw)


# ---------------------------------------------------------------------------------------------
# Recurrent layers


def _gate_blocks(w: np.ndarray, order: tuple[int, ...], n: int) -> np.ndarray:
    """Reorder the ``n`` gate blocks along axis 0 of ``w`` (ONNX gate order -> PyTorch's)."""
    blocks = np.split(w, n, axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


class Recurrent(nn.Module):
    """ONNX ``LSTM`` / ``GRU`` / ``RNN`` as ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` (one layer; forward,
    reverse or bidirectional).

    Inputs ``X`` [seq, batch, in] (``layout=1``: [batch, seq, in]), ``initial_h``/``initial_c``
    [dirs, batch, hidden]; outputs ``Y`` [seq, dirs, batch, hidden], ``Y_h``, ``Y_c`` as ONNX lays them out.
    """

    def __init__(self, rnn: nn.Module, direction: str, layout: int):
        super().__init__()
        self.rnn = rnn
        self.reverse = direction == "reverse"
        self.layout = layout
        self.is_lstm = isinstance(rnn, nn.LSTM)

    def forward(self, x, h0=None, c0=None):
        if self.layout == 1:
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
            c0 = None if c0 is None else c0.transpose(0, 1)
        if self.reverse:
            x = x.flip(0)
        seq, batch = x.shape[0], x.shape[1]
        dirs, hidden = (2 if self.rnn.bidirectional else 1), self.rnn.hidden_size
        if self.is_lstm:
            if h0 is None:
                h0 = x.new_zeros(dirs, batch, hidden)
            if c0 is None:
                c0 = x.new_zeros(dirs, batch, hidden)
            y, (h, c) = self.rnn(x, (h0.contiguous(), c0.contiguous()))
        else:
            y, h = self.rnn(x, None if h0 is None else h0.contiguous())
            c = h
        if self.reverse:
            y = y.flip(0)
        y = y.reshape(seq, batch, dirs, hidden)
        if self.layout == 1:
            return y.permute(1, 0, 2, 3), h.transpose(0, 1), c.transpose(0, 1)
        return y.permute(0, 2, 1, 3), h, c


def _recurrent_checks(ctx: NodeContext, default_acts: list[str]) -> tuple[str, int]:
    direction = ctx.attr("direction", "forward")
    if ctx.has(4):
        raise Unsupported(f"{ctx.op} with sequence_lens (sequences of different lengths)")
    if ctx.attr("clip") is not None:
        raise Unsupported(f"{ctx.op} with clip")
    acts = ctx.attr("activations")
    dirs = 2 if direction == "bidirectional" else 1
    if acts is not None and [a.decode() if isinstance(a, bytes) else a for a in acts] != default_acts * dirs:
        raise Unsupported(f"{ctx.op} with activations {acts}")
    return direction, int(ctx.attr("layout", 0))


#: op -> (torch class, gate count, ONNX gate order -> PyTorch's, default activations per direction)
_RECURRENT = {
    "LSTM": (nn.LSTM, 4, (0, 2, 3, 1), ["Sigmoid", "Tanh", "Tanh"]),  # ONNX i, o, f, c -> PyTorch i, f, g, o
    "GRU": (nn.GRU, 3, (1, 0, 2), ["Sigmoid", "Tanh"]),  # ONNX z, r, h -> PyTorch r, z, n
    "RNN": (nn.RNN, 1, (0,), ["Tanh"]),
}


@converter(*_RECURRENT)
def _recurrent(ctx: NodeContext) -> Converted:
    cls, gates, order, acts = _RECURRENT[ctx.op]
    direction, layout = _recurrent_checks(ctx, acts)
    if ctx.op == "LSTM" and (ctx.has(7) or int(ctx.attr("input_forget", 0))):
        raise Unsupported("LSTM with peepholes or input_forget")
    if ctx.op == "GRU" and not int(ctx.attr("linear_before_reset", 0)):
        raise Unsupported("GRU with linear_before_reset=0 (PyTorch's GRU applies the reset gate after the linear map)")
    w, r = ctx.require_const(1, "weights W"), ctx.require_const(2, "recurrence weights R")
    dirs, gates_h, input_size = w.shape
    hidden = gates_h // gates
    b = ctx.const(3)
    if ctx.has(3) and b is None:
        raise Unsupported(f"{ctx.op} with a bias computed at run time")
    b = np.zeros((dirs, 2 * gates * hidden), dtype=w.dtype) if b is None else b
    rnn = cls(input_size, hidden, bidirectional=direction == "bidirectional")
    for d in range(dirs):
        suffix = "_reverse" if d == 1 else ""
        setattr(rnn, f"weight_ih_l0{suffix}", _param(_gate_blocks(w[d], order, gates)))
        setattr(rnn, f"weight_hh_l0{suffix}", _param(_gate_blocks(r[d], order, gates)))
        setattr(rnn, f"bias_ih_l0{suffix}", _param(_gate_blocks(b[d, : gates * hidden], order, gates)))
        setattr(rnn, f"bias_hh_l0{suffix}", _param(_gate_blocks(b[d, gates * hidden:], order, gates)))
    rnn.flatten_parameters()
    return Converted(Recurrent(rnn, direction, layout), (0, 5, 6) if ctx.op == "LSTM" else (0, 5))


# ---------------------------------------------------------------------------------------------
# Control flow


class IfBranches(nn.Module):
    """ONNX ``If``: runs ``then_branch`` or ``else_branch`` (converted subgraphs) on the condition.

    The condition is read in Python, so a traced or exported copy keeps the branch its example
    input took; the converted module itself follows the condition on every call.
    """

    def __init__(self, then_branch: nn.Module, else_branch: nn.Module):
        super().__init__()
        self.then_branch = then_branch
        self.else_branch = else_branch

    def forward(self, env: dict, cond):
        branch = self.then_branch if bool(cond.reshape(-1)[0]) else self.else_branch
        outs = branch.run(dict(env))
        return outs[0] if len(outs) == 1 else tuple(outs)


@converter("If")
def _if(ctx: NodeContext) -> Converted:
    if ctx.build_subgraph is None:
        raise Unsupported("If inside this graph")
    then_g = ctx.build_subgraph(ctx.attrs["then_branch"])
    else_g = ctx.build_subgraph(ctx.attrs["else_branch"])
    return Converted(IfBranches(then_g, else_g), (0,), wants_env=True)


# ---------------------------------------------------------------------------------------------
# The converted graph


class OnnxGraph(nn.Module):
    """A converted ONNX graph: node modules in ``steps``, constants used at run time in ``consts``
    (buffers, so ``.to()`` / ``.half()`` move them with the weights)."""

    def __init__(self, steps: dict[str, nn.Module], plan: list[tuple], consts: dict[str, torch.Tensor],
                 input_names: list[str], output_names: list[str]):
        super().__init__()
        self.steps = nn.ModuleDict(steps)
        self.consts = nn.Module()
        self._const_map: list[tuple[str, str]] = []
        for i, (name, value) in enumerate(consts.items()):
            attr = f"c{i}"
            self.consts.register_buffer(attr, value)
            self._const_map.append((name, attr))
        self._plan = plan  # (step key, input names, output names, wants_env, "op (node name)")
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def run(self, env: dict) -> list:
        """Run the nodes on ``env`` (name -> tensor, updated in place); the graph outputs in order."""
        for name, attr in self._const_map:
            env[name] = getattr(self.consts, attr)
        for key, ins, outs, wants_env, label in self._plan:
            args = [env[n] if n else None for n in ins]
            try:
                res = self.steps[key](env, *args) if wants_env else self.steps[key](*args)
            except (RuntimeError, ValueError, IndexError, TypeError, KeyError, AttributeError, NotImplementedError) as exc:
                text = str(exc).strip()
                if text.startswith("ONNX node "):
                    raise
                raise RuntimeError(f"ONNX node {label}: {text.splitlines()[0] if text else type(exc).__name__}") from exc
            if len(outs) == 1:
                env[outs[0]] = res[0] if isinstance(res, tuple) else res
            else:
                for n, r in zip(outs, res):
                    if n:
                        env[n] = r
        return [env[n] for n in self.output_names]


class OnnxModule(OnnxGraph):
    """An ONNX model as an ``nn.Module``: ``module(*inputs)`` in the graph's input order; one output
    is returned as a tensor, several as a tuple in the graph's output order."""

    def forward(self, *args, **kwargs):
        env = dict(zip(self.input_names, args))
        env.update(kwargs)
        missing = [n for n in self.input_names if n not in env]
        if missing:
            raise TypeError(f"missing model input(s) {', '.join(missing)}; inputs: {', '.join(self.input_names)}")
        outs = self.run(env)
        return outs[0] if len(outs) == 1 else tuple(outs)


def with_signature(module: OnnxModule) -> OnnxModule:
    """Give ``module.forward`` a signature with one parameter per graph input (``torch.export``
    binds inputs to parameter names; a bare ``*args`` makes it reject per-input dynamic shapes).

    The class is made per model; instances deep-copy but, like every converted module, are
    never pickled (caches hold state_dicts).
    """
    import inspect
    import keyword

    params, taken = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)], {"self"}
    for i, name in enumerate(module.input_names):
        ident = re.sub(r"\W", "_", name) or f"input{i}"
        if ident[0].isdigit() or keyword.iskeyword(ident) or ident in taken:
            ident = f"input{i}_{ident}"
        taken.add(ident)
        params.append(inspect.Parameter(ident, inspect.Parameter.POSITIONAL_OR_KEYWORD))

    def forward(self, *args):
        return OnnxModule.forward(self, *args)

    forward.__signature__ = inspect.Signature(params)
    module.__class__ = type("ConvertedOnnxModule", (OnnxModule,), {"forward": forward, "__module__": __name__})
    return module

"""Shape formulas shared by every counter: MACs of one operator from its shapes (a MAC is one
multiply-accumulate; see :mod:`benchmark.measure.flops`)."""
from __future__ import annotations

from typing import Iterable, Sequence


def prod(values: Iterable[int]) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def conv_macs(output_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """MACs of a (grouped) convolution: ``prod(output) * (C_in / groups) * prod(kernel)``.

    ``weight_shape`` is ``(C_out, C_in / groups, *kernel)``, so dilation/stride/padding enter
    only through the output shape.
    """
    return prod(output_shape) * prod(weight_shape[1:])


def conv_transpose_macs(input_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """MACs of a transposed convolution: every input element meets ``(C_out / groups) * prod(kernel)``
    weights; ``weight_shape`` is ``(C_in, C_out / groups, *kernel)``."""
    return prod(input_shape) * prod(weight_shape[1:])


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
    return prod(batch) * m * k * n


def linear_macs(input_shape: Sequence[int], weight_shape: Sequence[int]) -> int:
    """MACs of ``x @ W.T`` with ``W`` of shape ``(out_features, in_features)``."""
    return prod(input_shape[:-1]) * prod(weight_shape)


#: Gate blocks per recurrent cell: each step multiplies the input by ``GATES x H x I`` weights and
#: the state by ``GATES x H x H``.
RECURRENT_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1, "RNN_TANH": 1, "RNN_RELU": 1}


def recurrent_macs(input_shape: Sequence[int], weight_shapes: Iterable[Sequence[int]]) -> int:
    """MACs of a recurrent layer (LSTM, GRU, RNN; any number of layers and directions) run over
    ``input_shape`` ``[..., I]``: every step of every sequence multiplies its input and its state
    by each of the layer's 2-D weights, so MACs = ``prod(input_shape[:-1])`` (steps x batch) x the
    elements of those weights. Per step and direction that is LSTM ``4H(I+H)``, GRU ``3H(I+H)``,
    RNN ``H(I+H)``; a projection (``proj_size`` P) adds its ``P x H``. Biases and the gates'
    element-wise products are not counted."""
    return prod(input_shape[:-1]) * sum(prod(w) for w in weight_shapes if len(w) >= 2)


def recurrent_module_macs(mode: str, input_shape: Sequence[int], input_size: int, hidden_size: int,
                          num_layers: int = 1, bidirectional: bool = False, proj_size: int = 0) -> int:
    """:func:`recurrent_macs` of a ``torch.nn`` LSTM/GRU/RNN described by its attributes (for
    modules whose weights are packed, e.g. dynamically quantized ones)."""
    gates = RECURRENT_GATES[str(mode).upper()]
    dirs = 2 if bidirectional else 1
    out = proj_size or hidden_size
    shapes = []
    for layer in range(int(num_layers)):
        features = input_size if layer == 0 else dirs * out
        for _ in range(dirs):
            shapes += [(gates * hidden_size, features), (gates * hidden_size, out)]
            if proj_size:
                shapes.append((proj_size, hidden_size))
    return recurrent_macs(input_shape, shapes)


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
        return prod(sizes.values())
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
    return prod(batch) * length * source * (e + ev)


def mha_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int], embed_dim: int) -> int:
    """MACs of ``nn.MultiheadAttention``'s fused kernel: Q/K/V and output projections plus attention."""
    q, k, v = list(q_shape), list(k_shape), list(v_shape)
    e = int(embed_dim)
    proj = (2 * prod(q[:-1]) + prod(k[:-1]) + prod(v[:-1])) * e * e
    batch = prod(q[:-2]) if len(q) > 2 else 1
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


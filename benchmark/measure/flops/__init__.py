"""Parameters, MACs/FLOPs, model size and weight sparsity.

The counters: :mod:`.torch_counter` (fvcore, or ``torch.utils.flop_counter`` for TorchScript and
keyword inputs), :mod:`.onnx_counter` (the graph, with a handler per MAC-carrying operator, and
:mod:`.onnx_weights` for parameters and sparsity), :mod:`.model` (a ``LoadedModel`` / ``Variant``:
its module or its ONNX file, plus its size). The shape formulas every counter uses are in
:mod:`.formulas`.

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
  (LSTM, GRU, RNN; also dynamically quantized ones) count their gate products: per step, batch
  element and direction LSTM ``4H(I+H)``, GRU ``3H(I+H)``, RNN ``H(I+H)`` (times the sequence
  length and the layers). An ONNX ``If`` costs the branch taken on the probe inputs; ``Loop`` /
  ``Scan`` bodies are skipped and listed.
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

from .formulas import (
    conv_macs, conv_output_spatial, conv_transpose_macs, einsum_macs, linear_macs, matmul_macs, mha_macs,
    recurrent_macs, recurrent_module_macs, sdpa_macs,
)
from .model import count_model
from .onnx_counter import count_onnx
from .report import COUNTERS, FlopReport
from .torch_counter import count_torch

__all__ = [
    "COUNTERS", "FlopReport", "conv_macs", "conv_output_spatial", "conv_transpose_macs", "count_model", "count_onnx",
    "count_torch", "einsum_macs", "linear_macs", "matmul_macs", "mha_macs", "recurrent_macs", "recurrent_module_macs",
    "sdpa_macs",
]

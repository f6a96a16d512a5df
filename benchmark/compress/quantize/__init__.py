"""Precision compressions: ``fp16``, ``bf16``, ``int8-dynamic``, ``int8-static`` and ``mixed``.

Modules: :mod:`.fp16` (fp16, bf16), :mod:`.int8` (int8-dynamic, int8-static), :mod:`.mixed`;
:mod:`.onnx_int8` and :mod:`.torch_int8` hold the ONNX Runtime and PyTorch INT8 steps, and
:mod:`.common` what every step shares. Importing this package registers the compressions.

Each registered function ``fn(variant, cfg, ctx) -> Variant`` builds both sides of a variant
where it can:

- the **ONNX side** (``onnx_path``, run by ONNX Runtime / TensorRT): a new ONNX file written to
  ``ctx.workdir``, checked with ``onnx.checker`` and test-run once with ONNX Runtime on CPU (finite
  outputs) before it is returned; a model that fails either raises :class:`CompressionError`;
- the **PyTorch side** (``torch_module`` + ``torch_precision``, run by the PyTorch backend).

A side that could not be built, or on which nothing was converted, is set to ``None`` and a warning
in the record says why (the backend then skips that side with that reason). When neither side
changed anything, the variant keeps its input model unchanged and the record has
``changed=False`` with a summary saying so. The input variant is never modified.

Conventions recorded in ``CompressionRecord.details``:

- ``onnx.quantized_ops``: op type -> number of nodes running in INT8: static QDQ nodes whose inputs
  all come from ``DequantizeLinear`` and whose output is re-quantized (see :func:`qdq_summary`), or
  the integer kernels dynamic quantization inserts; ``onnx.float_ops``: compute nodes left in float.
- ``onnx.qdq``: counts of ``QuantizeLinear`` / ``DequantizeLinear`` nodes; each activation
  ``QuantizeLinear`` is one Q/DQ pair, weights are stored as INT8 initializers behind a lone
  ``DequantizeLinear``.
- ``onnx.calibration``: method, samples, batch size, and the ranges observed (number of tensors,
  smallest min, largest max, and the first few tensors' ``[min, max]``).
- ``onnx.int8_format``: ``u8s8`` (uint8 activations, int8 weights) or ``s8s8`` and why it was chosen.
- ``onnx.recipe``: which op types static INT8 quantized. Attention models (Softmax/LayerNorm in the
  graph) get MatMul/Gemm/Conv only; other models every op type ORT's QDQ quantizer supports.
- ``onnx.prep``: what :mod:`benchmark.compress.onnx_prep` did first (Constant weights moved to
  initializers, opset upgrade, constant folding, nodes inside If/Loop subgraphs left float).
"""
from __future__ import annotations

from .common import calibration_batches, validate_onnx
from .fp16 import SENSITIVE_OPS, bf16, fp16
from .int8 import int8_dynamic, int8_static
from .mixed import mixed
from .onnx_int8 import (
    DYNAMIC_OP_TYPES, TRANSFORMER_STATIC_OP_TYPES, choose_int8_format, cpu_flags, dynamic_summary, preprocess,
    qdq_summary, quantize_onnx_static, ranges_from_qdq,
)
from .torch_int8 import quantize_torch_static

__all__ = [
    "SENSITIVE_OPS", "DYNAMIC_OP_TYPES", "TRANSFORMER_STATIC_OP_TYPES", "bf16", "calibration_batches",
    "choose_int8_format", "cpu_flags", "dynamic_summary",
    "fp16", "int8_dynamic", "int8_static", "mixed", "preprocess", "qdq_summary", "quantize_onnx_static",
    "quantize_torch_static", "ranges_from_qdq", "validate_onnx",
]

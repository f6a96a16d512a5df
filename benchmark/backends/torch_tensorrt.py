"""Torch-TensorRT backend (registered as ``torch-tensorrt``; CUDA only, optional).

TensorRT reached from PyTorch directly, without ONNX: the variant's PyTorch module is compiled
with ``torch_tensorrt.compile(module, ir="dynamo", inputs=[torch_tensorrt.Input(min_shape=...,
opt_shape=..., max_shape=..., dtype=...)], ...)``. The result is a ``torch.fx.GraphModule`` whose
TensorRT engines run inside PyTorch, so it is run and timed like an eager module
(:class:`~benchmark.backends.pytorch.TorchSession`: CUDA tensors in and out, CUDA events).
Subgraphs TensorRT cannot convert stay in PyTorch (``min_block_size`` decides how small a
TensorRT block may be).

Install: not an extra of Slimbench, because each torch-tensorrt release is built for one torch
release and needs torch's CUDA build: ``pip install "torch-tensorrt==X.Y.*"`` with X.Y the
version of the installed torch (``python -c "import torch; print(torch.__version__)"``).

Precisions (:func:`compile_settings`, checked against the installed ``compile`` signature):

- ``fp32``: as is, with ``disable_tf32=True`` (IEEE FP32, as on the other backends).
- ``fp16`` / ``bf16``: the module's weights and the inputs are cast to that type (the precision is
  in the graph, which explicitly typed Torch-TensorRT requires); releases that still type weakly
  also get ``enabled_precisions={dtype}``.
- ``autocast-fp16`` / ``autocast-bf16``: FP32 weights with Torch-TensorRT's own autocast
  (``enable_autocast=True``, ``autocast_low_precision_type``) where the release has it; on weakly
  typed releases ``enabled_precisions={float32, dtype}`` lets TensorRT pick per layer; explicitly
  typed releases without autocast skip the row with that reason.
- ``int8``: skipped (Torch-TensorRT INT8 needs a model quantized with NVIDIA ModelOpt; the
  ``tensorrt`` backend builds calibrated INT8 engines).

Shapes follow the ``tensorrt`` backend: one compiled module per timed batch size ``b`` with the
batch dimension ranging over ``min`` 1, ``opt`` = ``max`` = ``b``; evaluation batches use the
smallest compiled module that covers them. Compiling happens in ``prepare`` (batch 1), ``bind``
and ``run``, never in the timed loop.

Recorded in ``SessionInfo.options``: ``torch_tensorrt_version``, ``compile_settings`` (the
keyword arguments given), ``compiled`` (per module: batch range, compile time) and
``build_time_s`` (total compile seconds of this session).

Options (``prepare(..., options={...})``): ``min_block_size`` (default: the release's),
``workspace_mb`` (the builder's workspace limit).
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import time
from typing import Any, Mapping

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, one_line
from .base import Backend, Session, SessionInfo, feeds_batch
from .pytorch import TorchSession, disable_tf32

OPTION_NAMES = ("min_block_size", "workspace_mb")
PRECISIONS = ("fp32", "fp16", "bf16", "autocast-fp16", "autocast-bf16")
INSTALL_HINT = 'pip install "torch-tensorrt==X.Y.*" with X.Y your torch version, on a CUDA build of torch'


def check_options(options: Mapping[str, Any]) -> None:
    """ConfigError for unknown option names or values out of range (checked before any GPU work)."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"unknown torch-tensorrt option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    if "min_block_size" in options and int(options["min_block_size"]) < 1:
        raise ConfigError(f"min_block_size must be >= 1; got {options['min_block_size']}")
    if "workspace_mb" in options and float(options["workspace_mb"]) <= 0:
        raise ConfigError(f"workspace_mb must be > 0; got {options['workspace_mb']}")


def compile_settings(precision: str, params: Mapping[str, inspect.Parameter]) -> tuple[str | None, dict[str, Any], str]:
    """(dtype name the module and inputs are cast to or None, extra ``compile`` kwargs, reason if unsupported).

    ``params``: the parameters of the installed ``torch_tensorrt.dynamo.compile``. Dtypes are
    named (``"float16"``, ``"bfloat16"``, ``"float32"``) so this runs without torch; the caller
    maps them. A non-empty reason means the precision cannot be compiled with this release.
    """
    if precision == "int8":
        return None, {}, ("torch-tensorrt INT8 needs a model quantized with NVIDIA ModelOpt; "
                          "the tensorrt backend builds a calibrated INT8 engine")
    if precision not in PRECISIONS:
        return None, {}, f"torch-tensorrt runs {', '.join(PRECISIONS)}; not {precision!r}"
    explicit_param = params.get("use_explicit_typing")
    explicit = explicit_param is not None and explicit_param.default is True
    if precision == "fp32":  # IEEE FP32, as on the other backends
        return None, ({"disable_tf32": True} if "disable_tf32" in params else {}), ""
    low = "float16" if precision.endswith("fp16") else "bfloat16"
    if not precision.startswith("autocast-"):
        return low, ({} if explicit else {"enabled_precisions": (low,)}), ""
    if "enable_autocast" in params and "autocast_low_precision_type" in params:
        kwargs: dict[str, Any] = {"enable_autocast": True, "autocast_low_precision_type": low}
        if explicit_param is not None:
            kwargs["use_explicit_typing"] = True  # Torch-TensorRT's autocast works on explicitly typed graphs
        return None, kwargs, ""
    if explicit:
        return None, {}, ("this torch-tensorrt release types explicitly and has no autocast; "
                          f"use the {precision.split('-', 1)[1]} variant instead")
    return None, {"enabled_precisions": ("float32", low)}, ""


@functools.lru_cache(maxsize=1)
def _import_check() -> tuple[bool, str]:
    try:
        import torch_tensorrt  # noqa: F401
    except (ImportError, OSError, RuntimeError) as exc:
        return False, f"torch-tensorrt is installed but does not import ({one_line(exc)})"
    return True, ""


def _compile_params() -> Mapping[str, inspect.Parameter]:
    import torch_tensorrt

    return inspect.signature(torch_tensorrt.dynamo.compile).parameters


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


class TorchTensorRTSession(TorchSession):
    """Compiled modules per batch range; runs like :class:`TorchSession` on the one that fits."""

    def __init__(self, source, input_specs: list, cast: str | None, kwargs: dict[str, Any], info: SessionInfo):
        precision = {"float16": "fp16", "bfloat16": "bf16"}.get(cast or "", "fp32")
        super().__init__(None, [s.name for s in input_specs], "cuda", precision, info.threads or 1, info)
        self.cuda_graph = False
        self.source = source
        self.input_specs = input_specs
        self.kwargs = kwargs
        self.compiled: dict[int, tuple[Any, float]] = {}  # max batch -> (module, compile seconds)
        self._bound_batch: int | None = None
        # a model whose batch dimension is a fixed number has one shape: one module serves every call
        dims = [spec.batch_dim for spec in input_specs if spec.batch_axis is not None]
        self.fixed_batch = dims[0] if dims and all(isinstance(d, int) for d in dims) else (None if dims else 1)

    def _example_dtype(self, spec):
        import torch

        dtype = getattr(torch, np.dtype(spec.dtype).name)
        return self._float_dtype if (dtype.is_floating_point and self._float_dtype is not None) else dtype

    def _compile(self, batch: int):
        import torch_tensorrt

        from . import trt_engine as te

        inputs = []
        for spec in self.input_specs:
            lo, opt, hi = te.profile_shapes([spec], [batch])[spec.name]
            dtype = self._example_dtype(spec)
            inputs.append(torch_tensorrt.Input(shape=hi, dtype=dtype) if lo == hi else
                          torch_tensorrt.Input(min_shape=lo, opt_shape=opt, max_shape=hi, dtype=dtype))
        kwargs = {k: ({_torch_dtype(d) for d in v} if k == "enabled_precisions" else
                      _torch_dtype(v) if k == "autocast_low_precision_type" else v)
                  for k, v in self.kwargs.items()}
        t0 = time.perf_counter()
        try:
            module = torch_tensorrt.compile(self.source, ir="dynamo", inputs=inputs, **kwargs)
        except Exception as exc:  # torch-tensorrt raises many types; one line names the batch and the cause
            raise BackendUnavailableError(f"torch-tensorrt could not compile the model for batch <= {batch}: "
                                          f"{one_line(exc)}") from exc
        seconds = time.perf_counter() - t0
        self.compiled[batch] = (module, seconds)
        self.info.options["compiled"].append({"max_batch": batch, "compile_time_s": round(seconds, 3)})
        self.info.options["build_time_s"] = round(sum(s for _, s in self.compiled.values()), 3)
        self.info.warnings.append(f"torch-tensorrt compiled the model for batch <= {batch} in {seconds:.1f} s "
                                  "(not part of the latency)")
        return module

    def _module_for(self, batch: int, exact: bool):
        if self.fixed_batch is not None:
            batch = self.fixed_batch
        fits = [b for b in self.compiled if (b == batch if exact else b >= batch)]
        if fits:
            return self.compiled[min(fits)][0]
        return self._compile(batch)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.module = self._module_for(feeds_batch(feeds, self.input_specs) or 1, exact=False)
        return super().run(feeds)

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        self._bound_batch = self.fixed_batch or feeds_batch(feeds, self.input_specs) or 1
        self.module = self._module_for(self._bound_batch, exact=True)
        super().bind(feeds)

    def build(self) -> dict[str, Any] | None:
        if self._bound_batch is None or self._bound_batch not in self.compiled:
            return None
        return {"build_time_s": round(self.compiled[self._bound_batch][1], 3), "cached": False}

    def close(self) -> None:
        self.compiled = {}
        self.source = None
        super().close()

    def gpu_peak_mb(self) -> float | None:
        """None: TensorRT may allocate the engines' memory outside PyTorch's allocator, so the
        allocator's peak would not be the run's peak."""
        return None


class TorchTensorRTBackend(Backend):
    """Torch-TensorRT on CUDA (see the module docstring). Reports why it cannot run; never pretends to."""

    name = "torch-tensorrt"
    devices = ("cuda",)

    def availability_impl(self, device: str) -> tuple[bool, str]:
        if importlib.util.find_spec("torch_tensorrt") is None:
            return False, f"torch-tensorrt: package not installed ({INSTALL_HINT})"
        from ..machine import cuda_device_status

        ok, reason = cuda_device_status()
        if not ok:
            return False, reason
        return _import_check()

    def supports_impl(self, variant, device: str) -> tuple[bool, str]:
        import torch

        if variant.torch_module is None:
            return False, "no PyTorch module for this variant (ONNX-only model)"
        if isinstance(variant.torch_module, torch.jit.ScriptModule):
            return False, "torch-tensorrt's dynamo path compiles nn.Module and .pt2 models, not TorchScript"
        _, _, reason = compile_settings(variant.torch_precision, _compile_params())
        if reason:
            return False, reason
        from ..machine import gpu_has_native_bf16

        if variant.torch_precision.endswith("bf16") and not gpu_has_native_bf16():
            return False, "this GPU has no native bfloat16 (compute capability below 8.0)"
        return True, ""

    def prepare(self, variant, device: str = "cpu", threads: int = 0, workdir=None,
                options: dict[str, Any] | None = None) -> Session:
        check_options(options or {})
        return super().prepare(variant, device, threads, workdir, options)

    def prepare_impl(self, variant, device: str, threads: int, workdir, options: dict[str, Any]) -> Session:
        import copy

        import torch
        import torch_tensorrt

        params = _compile_params()
        cast, kwargs, _ = compile_settings(variant.torch_precision, params)
        disable_tf32()  # ops left to PyTorch compute in IEEE FP32 too
        notes = []
        if variant.torch_precision == "fp32" and "disable_tf32" not in params:
            notes.append("this torch-tensorrt release has no disable_tf32: its fp32 engines may use TF32")
        if "min_block_size" in options:
            kwargs["min_block_size"] = int(options["min_block_size"])
        if "workspace_mb" in options:
            kwargs["workspace_size"] = int(float(options["workspace_mb"]) * 2**20)
        try:
            source = copy.deepcopy(variant.torch_module)
        except (RuntimeError, TypeError) as exc:
            raise BackendUnavailableError(f"torch-tensorrt: cannot copy the module to compile it ({exc})") from exc
        if cast is not None:
            source = source.to(_torch_dtype(cast))
        source = source.to("cuda").eval()
        info = SessionInfo(
            backend=self.name, device="cuda", threads=torch.get_num_threads(), precision=variant.torch_precision,
            options={"torch_tensorrt_version": getattr(torch_tensorrt, "__version__", None),
                     "torch_version": torch.__version__, "ir": "dynamo",
                     "compile_settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()},
                     "weights_dtype": cast or "float32", "compiled": [], "build_time_s": 0.0},
            warnings=notes,
        )
        session = TorchTensorRTSession(source, list(variant.model.inputs), cast, kwargs, info)
        session.module = session._module_for(1, exact=False)
        return session

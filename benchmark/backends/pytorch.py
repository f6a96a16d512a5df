"""PyTorch eager backend (CPU and CUDA).

How a variant runs is set by ``variant.torch_precision``:

- ``fp32``: as is.
- ``fp16``: ``.half()`` weights, float inputs cast to float16 (runs on CPU too, usually slower there).
- ``bf16``: bfloat16 weights, float inputs cast to bfloat16.
- ``autocast-bf16`` / ``autocast-fp16``: FP32 weights, ``torch.autocast`` at inference.
- ``int8``: a quantized module (``torch.ao.quantization``); CPU only.

Every call runs under ``torch.inference_mode`` (``torch.no_grad`` for TorchScript modules).
``torch.set_num_threads(threads)`` is set at ``prepare`` and again at ``bind`` (it is a process
global); 0 means ``os.cpu_count()``. Outputs are returned as numpy arrays, floating outputs as
float32. The variant's module is never modified: a converted copy is made when the precision or
device needs one.

On ``cuda``: TF32 is turned off (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32``; recorded as ``options["tf32"]``), so fp32 rows compute in
IEEE FP32 like the other backends' fp32 rows; ``synchronize`` is ``torch.cuda.synchronize()``; ``bind`` resets PyTorch's CUDA
peak-memory counter (``torch.cuda.reset_peak_memory_stats``), so ``max_memory_allocated`` after a
timed loop is that run's peak; ``weights_gpu_mb`` records the memory allocated once the module is
on the GPU.

Options (``prepare(..., options={...})``):

- ``cuda_graph`` (False): on ``cuda``, ``bind`` captures one forward pass into a
  ``torch.cuda.CUDAGraph`` (after three warm-up passes on a side stream) and ``run_bound``
  replays it, for bound batch sizes up to ``cuda_graph_max_batch`` (default 16: graphs pay off
  where launch overhead dominates). Recorded as its own setting: ``options["cuda_graph"]`` and
  ``options["cuda_graph_batches"]`` (the batch sizes that really ran as a graph); a capture that
  fails falls back to eager calls with a warning.
- ``interop_threads`` (0 = PyTorch's default): ``torch.set_num_interop_threads``; PyTorch sizes its
  inter-op pool once per process, so a value that cannot be set any more is a warning and
  ``options["interop_threads"]`` records the count really used.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import warnings as _warnings
from typing import Any

import numpy as np

from ..data.base import contiguous
from ..errors import BackendUnavailableError, DataError, MeasurementError, one_line
from ..models.base import set_eval
from .base import Backend, Session, SessionInfo, no_module_reason, runtime_failure

TORCH_PRECISIONS = ("fp32", "fp16", "bf16", "autocast-bf16", "autocast-fp16", "int8")
OPTION_NAMES = ("cuda_graph", "cuda_graph_max_batch", "interop_threads")
CUDA_GRAPH_WARMUP = 3


def _flatten_outputs(out: Any) -> list[Any]:
    """Tensors of a module's output in order: a tensor, (nested) tuples/lists, dicts, ModelOutput-like."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        items = list(out.values())
    elif isinstance(out, (list, tuple)):
        items = list(out)
    elif hasattr(out, "to_tuple"):
        items = list(out.to_tuple())
    elif out is None:
        return []
    else:
        raise MeasurementError(
            f"model output of type {type(out).__name__} is not a tensor, tuple, list or dict of tensors"
        )
    flat: list[Any] = []
    for item in items:
        flat.extend(_flatten_outputs(item))
    return flat


def _to_numpy(t) -> np.ndarray:
    if t.is_quantized:
        t = t.dequantize()
    t = t.detach()
    if t.is_floating_point():
        t = t.float()
    return t.cpu().numpy()


def disable_tf32() -> None:
    """IEEE FP32 for PyTorch's CUDA matmuls and cuDNN convolutions (process-wide; see the module docstring)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def set_interop_threads(wanted: int, notes: list[str]) -> int:
    """Set PyTorch's inter-op threads to ``wanted`` (0: leave them); returns the count in use. PyTorch
    allows this once per process, before inter-op work: a refusal joins ``notes``."""
    import torch

    current = torch.get_num_interop_threads()
    if wanted and wanted != current:
        try:
            torch.set_num_interop_threads(wanted)
        except RuntimeError as exc:
            notes.append(f"PyTorch inter-op threads could not be set to {wanted} ({one_line(exc)}); ran with {current}")
    return torch.get_num_interop_threads()


class TorchSession(Session):
    """A PyTorch module ready to run; ``bind`` converts inputs once, ``run_bound`` only calls forward."""

    def __init__(self, module, input_names: list[str], device: str, precision: str, threads: int, info: SessionInfo):
        import torch

        self.module = module
        self.input_names = input_names
        self.device = device
        self.precision = precision
        self.threads = threads
        self.info = info
        self._bound: list[Any] | None = None
        self._scripted = isinstance(module, torch.jit.ScriptModule)
        self._float_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self._autocast_dtype = {"autocast-bf16": torch.bfloat16, "autocast-fp16": torch.float16}.get(precision)
        self.cuda_graph = bool(info.options.get("cuda_graph", False)) and device == "cuda"
        self.cuda_graph_max_batch = int(info.options.get("cuda_graph_max_batch", 16))
        self._graph = None
        self._graph_out: Any = None

    # --- inputs --------------------------------------------------------------------------------
    def _ordered(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if not missing:
            return [feeds[n] for n in self.input_names]
        if len(feeds) == len(self.input_names) and not any(n in feeds for n in self.input_names):
            return list(feeds.values())
        raise DataError(
            f"inputs {', '.join(missing)} are missing from the feeds; the model takes "
            f"{', '.join(self.input_names)}, the feeds hold {', '.join(feeds)}"
        )

    def convert(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        import torch

        tensors = []
        for arr in self._ordered(feeds):
            t = torch.from_numpy(contiguous(arr))
            if t.is_floating_point() and self._float_dtype is not None:
                t = t.to(self._float_dtype)
            tensors.append(t.to(self.device) if self.device != "cpu" else t)
        return tensors

    # --- running -------------------------------------------------------------------------------
    def _context(self):
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad() if self._scripted else torch.inference_mode())
        if self._autocast_dtype is not None:
            # A captured graph must not point at autocast's weight-cast cache (freed on context exit).
            stack.enter_context(torch.autocast(device_type=self.device, dtype=self._autocast_dtype,
                                               cache_enabled=not self.cuda_graph))
        return stack

    def _forward(self, tensors: list[Any]) -> Any:
        with self._context():
            return self.module(*tensors)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            out = self._forward(self.convert(feeds))
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise runtime_failure(self.info.backend, exc, feeds) from None
        return [_to_numpy(t) for t in _flatten_outputs(out)]

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self._graph, self._graph_out = None, None
        self._bound = self.convert(feeds)
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            batch = int(self._bound[0].shape[0]) if self._bound and self._bound[0].dim() else 1
            if self.cuda_graph and batch <= self.cuda_graph_max_batch:
                self._capture(batch)
        self.synchronize()

    def _capture(self, batch: int) -> None:
        """Capture one forward pass on the bound inputs into a CUDA graph (see the module docstring)."""
        import torch

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(CUDA_GRAPH_WARMUP):
                    self._forward(self._bound)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._forward(self._bound)
        except RuntimeError as exc:
            torch.cuda.synchronize()
            self.info.warnings.append(f"CUDA graph capture failed at batch {batch} ({one_line(exc)}); ran eager calls")
            return
        self._graph, self._graph_out = graph, out
        done = self.info.options.setdefault("cuda_graph_batches", [])
        if batch not in done:
            done.append(batch)

    def run_bound(self) -> Any:
        if self._bound is None:
            raise MeasurementError("run_bound() was called before bind(feeds); bind the inputs first")
        if self._graph is not None:
            self._graph.replay()
            return self._graph_out
        try:
            return self._forward(self._bound)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise runtime_failure(self.info.backend, exc) from None

    def synchronize(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def close(self) -> None:
        self._bound = None
        self._graph, self._graph_out = None, None
        self.module = None
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def gpu_peak_mb(self) -> float | None:
        """PyTorch's allocator peak (``torch.cuda.max_memory_allocated``; None without CUDA)."""
        from ..measure.memory import gpu_peak_mb

        return gpu_peak_mb()


class PyTorchBackend(Backend):
    """Eager PyTorch on CPU or CUDA (see the module docstring for precisions)."""

    name = "pytorch"
    devices = ("cpu", "cuda")

    def availability_impl(self, device: str) -> tuple[bool, str]:
        if importlib.util.find_spec("torch") is None:
            return False, "PyTorch: package not installed"
        if device == "cuda":
            from ..machine import cuda_device_status

            return cuda_device_status()
        return True, ""

    def supports_impl(self, variant, device: str) -> tuple[bool, str]:
        if variant.torch_module is None:
            return False, no_module_reason(variant)
        precision = variant.torch_precision
        if precision not in TORCH_PRECISIONS:
            return False, f"unknown torch precision {precision!r}; known: {', '.join(TORCH_PRECISIONS)}"
        if precision == "int8" and device != "cpu":
            return False, "quantized (int8) PyTorch modules run on CPU only"
        if device == "cuda" and precision in ("bf16", "autocast-bf16"):
            from ..machine import gpu_has_native_bf16

            if not gpu_has_native_bf16():
                return False, "this GPU has no native bfloat16 (compute capability below 8.0)"
        return True, ""

    runtime_options = ("torch_interop_threads",)

    def sweep_options(self, device: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """CUDA-graph capture where the sweep asks for it on cuda; the run's inter-op threads."""
        options: dict[str, Any] = {}
        if device.startswith("cuda") and settings.get("cuda_graph"):
            options["cuda_graph"] = True
        interop = (settings.get("runtime") or {}).get("torch_interop_threads")
        if interop:
            options["interop_threads"] = int(interop)
        return options or None

    def prepare_impl(self, variant, device: str, threads: int, workdir, options: dict[str, Any]) -> Session:
        import torch

        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise BackendUnavailableError(
                f"unknown pytorch option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}"
            )
        cuda_graph = bool(options.get("cuda_graph", False))
        cuda_graph_max_batch = int(options.get("cuda_graph_max_batch", 16))
        if cuda_graph_max_batch < 1:
            raise BackendUnavailableError(f"cuda_graph_max_batch must be >= 1; got {cuda_graph_max_batch}")
        precision = variant.torch_precision
        n_threads = int(threads) if threads else (os.cpu_count() or 1)
        torch.set_num_threads(n_threads)
        notes: list[str] = []
        interop = set_interop_threads(int(options.get("interop_threads") or 0), notes)
        module = variant.torch_module
        convert_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        if convert_dtype is not None or device != "cpu":
            try:
                module = copy.deepcopy(module)
            except (RuntimeError, TypeError) as exc:
                raise BackendUnavailableError(
                    f"pytorch {precision} on {device}: cannot copy the module to convert it ({exc}); "
                    "run it as fp32 on CPU"
                ) from exc
            with _warnings.catch_warnings():
                _warnings.filterwarnings("ignore", message=".*grad attribute of a Tensor that is not a leaf.*")
                if convert_dtype is not None:
                    module = module.to(convert_dtype)
                if device != "cpu":
                    module = module.to(device)
        if hasattr(module, "eval") and not isinstance(module, torch.jit.ScriptModule):
            set_eval(module)  # a .pt2 program's module refuses eval(): it was traced for inference
        if device == "cuda":
            disable_tf32()  # fp32 means IEEE FP32 on every backend
        if cuda_graph and device != "cuda":
            notes.append("cuda_graph applies to device cuda only; ran eager calls")
        if device == "cpu" and precision in ("fp16", "autocast-fp16"):
            notes.append(f"{precision} on CPU runs, but CPUs rarely have fast float16 kernels; expect no speedup")
        info = SessionInfo(
            backend=self.name,
            device=device,
            threads=torch.get_num_threads(),
            precision=precision,
            options={
                "inference_mode": not isinstance(module, torch.jit.ScriptModule),
                "torchscript": isinstance(module, torch.jit.ScriptModule),
                "autocast": precision.startswith("autocast-"),
                "torch_version": torch.__version__,
                "tf32": False if device == "cuda" else None,
                "cuda_graph": cuda_graph and device == "cuda",
                "cuda_graph_max_batch": cuda_graph_max_batch,
                "cuda_graph_batches": [],
                "weights_gpu_mb": (round(torch.cuda.memory_allocated() / 2**20, 3) if device == "cuda" else None),
                "interop_threads": interop,
            },
            warnings=notes,
        )
        input_names = [spec.name for spec in variant.model.inputs]
        return TorchSession(module, input_names, device, precision, n_threads, info)

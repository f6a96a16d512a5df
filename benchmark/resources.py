"""Memory and disk guards for sweep jobs: skip what cannot fit instead of crashing into it.

Memory (before a backend session is prepared, for each batch size it will time)
    The estimate for batch ``B`` is the sum of

    - **inputs**: ``B`` x the bytes of one sample of every input (from the input specs);
    - **outputs**: ``B`` x the bytes of one sample's outputs (measured in a batch-1 run);
    - **activations**: ``ACTIVATION_FACTOR`` (3) x ``B`` x the largest intermediate tensor of a
      batch-1 run of the FP32 model — a layer's input and output plus one tensor held by a skip
      connection. Only tensors computed from the inputs count (a transposed or repacked weight
      is part of the weights). The FP32 model bounds its compressed variants (same or fewer channels, same or
      fewer bytes per element). PyTorch models are probed by one batch-1 forward pass under a
      ``TorchDispatchMode`` (eager, ``.pt2`` and TorchScript modules alike); ONNX models by
      shape inference at batch 1. When neither works the activation term is 0 and the row says so
      in its warnings;
    - **weights**: the variant's size in bytes (the session's own copy of the weights).

    It is compared with the memory available *before* the session is prepared:
    ``psutil.virtual_memory().available`` on CPU, ``torch.cuda.mem_get_info()`` (free bytes) on
    CUDA; ``$SLIMBENCH_MEMORY_LIMIT_MB`` caps that figure (to keep sweeps inside a budget, and for
    tests). A batch size that does not fit becomes a ``skipped`` row:
    ``batch 4096 needs about 9,800 MB, 6,200 MB available: skipped``. It is an estimate, not a
    bound: allocator overheads, workspaces and library caches come on top.

Disk (before a job builds its variant and before each backend session writes exports/engines)
    The job's work folder needs ``DISK_MODEL_FACTOR`` (3) x the model file's size (the variant,
    its ONNX export and an engine) + ``DISK_MARGIN_MB`` (64) MB free (``shutil.disk_usage``);
    ``$SLIMBENCH_MIN_FREE_MB`` replaces that bound with its own figure. Too little free space
    fails the variant with a :class:`~benchmark.errors.ResourceError` naming the folder and both
    numbers.

MB here is 2**20 bytes, as in ``peak_rss_mb``.
"""
from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, ResourceError, one_line

MEMORY_LIMIT_ENV = "SLIMBENCH_MEMORY_LIMIT_MB"
MIN_FREE_ENV = "SLIMBENCH_MIN_FREE_MB"
MB = 2**20
ACTIVATION_FACTOR = 3
DISK_MODEL_FACTOR = 3
DISK_MARGIN_MB = 64

_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int8": 1,
             "uint8": 1, "bool": 1}


def _env_mb(name: str) -> float | None:
    """The number of MB in environment variable ``name`` (None when unset or empty)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or math.isinf(value):
        raise ConfigError(f"{name} must be a number of MB >= 0; got {text!r}")
    return value


def check_environment() -> None:
    """Raise ConfigError now (in the parent) when ``$SLIMBENCH_MEMORY_LIMIT_MB`` or
    ``$SLIMBENCH_MIN_FREE_MB`` is set to something that is not a number of MB."""
    _env_mb(MEMORY_LIMIT_ENV)
    _env_mb(MIN_FREE_ENV)


def format_mb(n_bytes: float, round_up: bool = False) -> str:
    """``9800 MB`` style: whole MB (2**20 bytes) with thousands separators."""
    value = n_bytes / MB
    return f"{(math.ceil(value) if round_up else math.floor(value)):,} MB"


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchMemoryEstimate:
    """Estimated bytes one timed batch needs (see the module docstring for each term)."""

    batch_size: int
    input_bytes: int
    output_bytes: int
    activation_bytes: int
    weight_bytes: int
    activations_known: bool = True

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + self.output_bytes + self.activation_bytes + self.weight_bytes

    def breakdown(self) -> str:
        act = format_mb(self.activation_bytes, True) if self.activations_known else "not estimated"
        return (f"memory estimate for batch {self.batch_size}: inputs {format_mb(self.input_bytes, True)} + "
                f"outputs {format_mb(self.output_bytes, True)} + activations {act} + "
                f"weights {format_mb(self.weight_bytes, True)} = {format_mb(self.total_bytes, True)}")


def estimate_batch_memory(
    batch_size: int,
    *,
    input_bytes_per_sample: int,
    output_bytes_per_sample: int | None,
    largest_activation_bytes_per_sample: int | None,
    weight_bytes: int | None,
    activation_factor: float = ACTIVATION_FACTOR,
) -> BatchMemoryEstimate:
    """Inputs + outputs + ``activation_factor`` x largest intermediate tensor, all x ``batch_size``,
    plus the weights. Unknown terms (None) count 0; ``activations_known`` says whether that term is real."""
    b = int(batch_size)
    if b < 1:
        raise ConfigError(f"batch size must be >= 1; got {batch_size}")
    act = largest_activation_bytes_per_sample
    return BatchMemoryEstimate(
        batch_size=b,
        input_bytes=int(input_bytes_per_sample) * b,
        output_bytes=int(output_bytes_per_sample or 0) * b,
        activation_bytes=int(math.ceil(activation_factor * int(act or 0) * b)),
        weight_bytes=int(weight_bytes or 0),
        activations_known=act is not None,
    )


def memory_skip_reason(estimate: BatchMemoryEstimate, available_bytes: int) -> str | None:
    """None when ``estimate`` fits in ``available_bytes``; else the one-line reason for the skipped row."""
    if estimate.total_bytes <= available_bytes:
        return None
    return (f"batch {estimate.batch_size} needs about {format_mb(estimate.total_bytes, True)}, "
            f"{format_mb(available_bytes)} available: skipped")


def available_memory_bytes(device: str) -> tuple[int, str]:
    """(bytes available for a new session, where the figure comes from).

    CPU: ``psutil.virtual_memory().available``; CUDA: free bytes from ``torch.cuda.mem_get_info``.
    ``$SLIMBENCH_MEMORY_LIMIT_MB`` caps the figure.
    """
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        avail, source = int(free), "free GPU memory (torch.cuda.mem_get_info)"
    else:
        import psutil

        avail, source = int(psutil.virtual_memory().available), "available RAM (psutil)"
    cap = _env_mb(MEMORY_LIMIT_ENV)
    if cap is not None and cap * MB < avail:
        avail, source = int(cap * MB), f"{MEMORY_LIMIT_ENV}={cap:g}"
    return avail, source


def array_bytes(shape, dtype: str) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (a name from the input specs; unknown names count 4)."""
    n = 1
    for d in shape:
        n *= int(d)
    return n * _ITEMSIZE.get(str(dtype), 4)


def check_allocation(n_bytes: int, what: str, device: str = "cpu") -> None:
    """Raise :class:`ResourceError` *before* allocating ``n_bytes`` for ``what`` when they exceed the
    available memory (capped by ``$SLIMBENCH_MEMORY_LIMIT_MB``): ``what`` and both figures in one line."""
    available, source = available_memory_bytes(device)
    if int(n_bytes) > available:
        raise ResourceError(
            f"{what} needs {format_mb(n_bytes, True)} ({n_bytes / 2**30:,.1f} GiB), more than the "
            f"{format_mb(available)} available ({source}); use smaller shapes, batch sizes or samples"
        )


def input_bytes_per_sample(specs) -> int:
    """Bytes of one sample of every input (each at batch 1 on its batch axis; an input without a
    batch axis, fed whole with every batch, counts its whole size)."""
    return sum(array_bytes(spec.concrete(1), spec.dtype) for spec in specs)


@dataclass(frozen=True)
class ActivationProfile:
    """What a batch-1 run of a model shows: its largest intermediate tensor and its outputs, in bytes."""

    largest_bytes: int | None
    output_bytes: int | None
    note: str | None = None  # why a figure is missing


def activation_profile(model) -> ActivationProfile:
    """Probe a :class:`~benchmark.models.LoadedModel` at batch 1 (see the module docstring)."""
    if model.torch_module is not None:
        return _torch_profile(model)
    if model.onnx_path is not None:
        return _onnx_profile(Path(model.onnx_path), model.inputs)
    return ActivationProfile(None, None, "activation memory not estimated: the model has no module or ONNX file")


def _torch_profile(model) -> ActivationProfile:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    from .measure.flops.torch_counter import as_torch_inputs

    def nbytes(t) -> int:
        return int(t.numel()) * int(t.element_size()) if isinstance(t, torch.Tensor) else 0

    def storage(t) -> int:
        try:
            return int(t.untyped_storage().data_ptr())
        except (RuntimeError, NotImplementedError):  # tensor kinds without a plain storage
            return int(t.data_ptr())

    class _Largest(TorchDispatchMode):
        """Largest tensor computed from the inputs (weight-only ops such as a transposed weight do not count)."""

        def __init__(self, inputs):
            super().__init__()
            self.from_inputs = {storage(t) for t in inputs if isinstance(t, torch.Tensor)}
            self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            flat = tree_flatten((args, kwargs or {}))[0]
            derived = any(isinstance(a, torch.Tensor) and storage(a) in self.from_inputs for a in flat)
            out = func(*args, **(kwargs or {}))
            if derived:
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor):
                        self.from_inputs.add(storage(t))
                        self.largest = max(self.largest, nbytes(t))
            return out

    module = model.torch_module
    try:
        feeds = model.example_inputs(1)
        args, kwargs = as_torch_inputs(module, tuple(feeds[s.name] for s in model.inputs))
        mode = _Largest(list(args) + list(kwargs.values()))
        with torch.no_grad(), mode:
            out = module(*args, **kwargs)
        outputs = sum(nbytes(t) for t in tree_flatten(out)[0])
    except Exception as exc:  # the model's own code may raise anything; the estimate then says it lacks this term
        return ActivationProfile(None, None, f"activation memory not estimated: the batch-1 probe raised "
                                             f"{type(exc).__name__} ({one_line(exc, 200)})")
    return ActivationProfile(max(mode.largest, outputs), outputs)


def _onnx_profile(path: Path, specs) -> ActivationProfile:
    import onnx

    from .onnx_graph import dims_only_copy, fix_input_dims, walk_graphs

    try:
        proto = onnx.load(str(path), load_external_data=False)
        fix_input_dims(proto, {s.name: s.concrete(1) for s in specs}, [])
        inferred = onnx.shape_inference.infer_shapes(dims_only_copy(proto), check_type=False, strict_mode=False)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError, OSError, ConfigError) as exc:
        return ActivationProfile(None, None, "activation memory not estimated: ONNX shape inference failed "
                                             f"({one_line(exc, 200)})")

    def size(vi) -> int | None:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            return None
        n = 1
        for d in tt.shape.dim:
            if d.WhichOneof("value") != "dim_value" or d.dim_value <= 0:
                return None
            n *= d.dim_value
        try:
            return n * onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
        except (KeyError, TypeError, ValueError):
            return n * 4

    largest = 0
    for graph, _ in walk_graphs(inferred.graph):
        for vi in list(graph.value_info) + list(graph.output):
            largest = max(largest, size(vi) or 0)
    outs = [size(vi) for vi in inferred.graph.output]
    outputs = sum(o for o in outs if o) if all(o is not None for o in outs) else None
    if not largest:
        return ActivationProfile(None, outputs, "activation memory not estimated: ONNX shape inference left "
                                                "the intermediate shapes unknown")
    return ActivationProfile(largest, outputs)


# --------------------------------------------------------------------------------------------
# disk
# --------------------------------------------------------------------------------------------
def model_file_bytes(model) -> int:
    """Bytes of a loaded model's file (plus ONNX external data); the module's tensors when it has no file."""
    from .measure.memory import first_file_bytes, module_size_bytes

    size = first_file_bytes((model.path, model.onnx_path))
    if size is not None:
        return size
    if model.torch_module is not None:
        return module_size_bytes(model.torch_module)
    return 0


def required_free_bytes(model_bytes: int) -> tuple[int, str]:
    """(bytes the work folder needs free, how that figure was made)."""
    override = _env_mb(MIN_FREE_ENV)
    if override is not None:
        return int(override * MB), f"{MIN_FREE_ENV}={override:g}"
    need = DISK_MODEL_FACTOR * int(model_bytes) + DISK_MARGIN_MB * MB
    return need, f"{DISK_MODEL_FACTOR} x the {format_mb(model_bytes, True)} model + {DISK_MARGIN_MB} MB"


def check_disk_space(
    folder: str | os.PathLike,
    model_bytes: int,
    what: str = "writing model files",
    *,
    free_bytes: int | None = None,
    required_bytes: int | None = None,
) -> dict[str, Any]:
    """Raise :class:`ResourceError` when ``folder`` has less free space than the bound (see the
    module docstring); ``free_bytes`` / ``required_bytes`` replace the measured free space and
    the computed bound. Returns ``{"free_bytes", "required_bytes"}`` when there is enough."""
    folder = Path(folder)
    if required_bytes is None:
        required_bytes, how = required_free_bytes(model_bytes)
    else:
        how = "the given bound"
    if free_bytes is None:
        try:
            free_bytes = shutil.disk_usage(folder).free
        except OSError as exc:
            raise ResourceError(f"cannot read the free space of {folder} before {what}: {exc.strerror or exc}") from None
    if free_bytes < required_bytes:
        raise ResourceError(
            f"not enough disk space in {folder} for {what}: needs {format_mb(required_bytes, True)} free "
            f"({how}), {format_mb(free_bytes)} free; free some space or set SLIMBENCH_DATA_DIR to a larger disk"
        )
    return {"free_bytes": int(free_bytes), "required_bytes": int(required_bytes)}


__all__ = [
    "ACTIVATION_FACTOR", "ActivationProfile", "BatchMemoryEstimate", "DISK_MARGIN_MB", "DISK_MODEL_FACTOR",
    "MEMORY_LIMIT_ENV", "MIN_FREE_ENV", "activation_profile", "array_bytes", "available_memory_bytes",
    "check_allocation", "check_disk_space",
    "check_environment", "estimate_batch_memory", "format_mb", "input_bytes_per_sample", "memory_skip_reason",
    "model_file_bytes", "required_free_bytes",
]

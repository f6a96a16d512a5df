"""Building TensorRT engines (imports ``tensorrt`` and ``torch`` inside; needs a GPU).

:func:`build_serialized_engine` parses the ONNX file, sets the optimization profile, the precision
flags and (INT8) the entropy calibrator, and builds; :func:`make_entropy_calibrator` feeds the
calibration batches from device buffers held as torch CUDA tensors; :func:`make_logger` keeps
TensorRT's messages for one-line error reports. The conventions (precisions, source graph,
profile, calibration) are those of :mod:`benchmark.backends.trt_engine`.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import BackendUnavailableError, ConfigError, DataError, MeasurementError
from .trt_engine import TRT_PRECISIONS, Shape, atomic_write, major_version, strongly_typed_only

log = logging.getLogger(__name__)


def gpu_identity(device_index: int = 0) -> tuple[str, str]:
    """``(GPU name, "major.minor" compute capability)`` of a CUDA device, from torch."""
    import torch

    props = torch.cuda.get_device_properties(device_index)
    return str(props.name), f"{props.major}.{props.minor}"


def make_logger(trt, min_severity: str = "WARNING"):
    """A ``trt.ILogger`` that keeps TensorRT's messages (for one-line error reports) and forwards
    warnings and errors to Python logging."""

    class _CaptureLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg):
            name = getattr(severity, "name", str(severity)).split(".")[-1]
            if name not in ("INTERNAL_ERROR", "ERROR", "WARNING"):
                return
            self.messages.append((name, str(msg)))
            if name in ("INTERNAL_ERROR", "ERROR"):
                log.error("TensorRT: %s", msg)
            elif name == "WARNING" and min_severity in ("WARNING", "INFO", "VERBOSE"):
                log.warning("TensorRT: %s", msg)

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("INTERNAL_ERROR", "ERROR")]

    return _CaptureLogger()


def make_entropy_calibrator(trt, batches: Sequence[dict[str, np.ndarray]], cache_path: str | os.PathLike):
    """A ``trt.IInt8EntropyCalibrator2`` that feeds ``batches`` (see :func:`calibration_batches`)
    through device buffers held as torch CUDA tensors, and reads/writes its calibration cache at
    ``cache_path``."""
    import torch

    if not batches:
        raise DataError("INT8 calibration needs at least one batch of data")
    first = batches[0]
    batch_size = int(next(iter(first.values())).shape[0]) if first else 1

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = list(batches)
            self.index = 0
            self.cache_path = Path(cache_path)
            self.device = {name: torch.empty(arr.shape, dtype=torch.from_numpy(arr[:0]).dtype, device="cuda")
                           for name, arr in first.items()}
            self.used_cache = False

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names, *args):
            if self.index >= len(self.batches):
                return None
            feeds = self.batches[self.index]
            self.index += 1
            ptrs = []
            for name in names:
                if name not in self.device:
                    raise DataError(f"INT8 calibration: the network asks for input {name!r}; the data holds "
                                    f"{', '.join(self.device)}")
                self.device[name].copy_(torch.from_numpy(feeds[name]))
                ptrs.append(int(self.device[name].data_ptr()))
            torch.cuda.synchronize()
            return ptrs

        def read_calibration_cache(self, *args):
            if self.cache_path.is_file():
                self.used_cache = True
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache):
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache_path, bytes(cache))

    return _EntropyCalibrator()


def _parser_error(err) -> str:
    desc = err.desc() if hasattr(err, "desc") else str(err)
    node = err.node() if hasattr(err, "node") else -1
    return f"node {node}: {desc}" if isinstance(node, int) and node >= 0 else str(desc)


def _network_flags(trt) -> int:
    major = major_version(getattr(trt, "__version__", None)) or 10
    if major >= 10:
        return 0  # explicit batch is the only mode in TensorRT 10
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _set_profile(trt, builder, network, config, profile: dict[str, tuple[Shape, Shape, Shape]]) -> dict[str, list]:
    """Add the optimization profile for the network's dynamic inputs; returns the shapes set."""
    set_shapes: dict[str, list[list[int]]] = {}
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        if tensor.name not in profile:
            raise ConfigError(
                f"tensorrt: network input {tensor.name!r} has dynamic shape {dims} and no profile; the profile "
                f"covers {', '.join(profile) or 'no input'}")
        lo, opt, hi = profile[tensor.name]
        if len(lo) != len(dims) or any(d >= 0 and d != x for d, x in zip(dims, lo)):
            raise ConfigError(
                f"tensorrt: profile shape {lo} of input {tensor.name!r} does not fit the network's {dims}")
        opt_profile.set_shape(tensor.name, lo, opt, hi)
        set_shapes[tensor.name] = [list(lo), list(opt), list(hi)]
    if set_shapes:
        config.add_optimization_profile(opt_profile)
    return set_shapes


def _set_precision_flags(trt, builder, config, precision: str, int8_fp16_fallback: bool,
                         warnings_: list[str]) -> list[str]:
    """Set the builder flags of ``precision`` (INT8 itself is set with its calibrator); returns their names."""
    flags = []
    if strongly_typed_only(getattr(trt, "__version__", None)):
        if precision not in ("fp32", "fp16"):
            raise BackendUnavailableError(
                f"tensorrt: TensorRT {trt.__version__} builds only strongly typed networks; a {precision} engine "
                "needs a graph typed in that precision (see plan_engine)")
        # The ONNX file's types decide (an FP16 variant's file has FP16 nodes): no flag to set.
        flags.append("STRONGLY_TYPED")
    elif precision == "fp16" or (precision == "int8" and int8_fp16_fallback):
        if not getattr(builder, "platform_has_fast_fp16", True):
            warnings_.append("this GPU has no fast FP16; TensorRT may keep layers in FP32")
        config.set_flag(trt.BuilderFlag.FP16)
        flags.append("FP16")
    if precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
        flags.append("BF16")
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if precision == "fp32" and tf32 is not None:
        config.clear_flag(tf32)  # fp32 means IEEE FP32 on every backend (TensorRT enables TF32 by default)
        flags.append("no TF32")
    return flags


def _set_int8(trt, builder, network, config, set_shapes: dict[str, list],
              calib_batches: Sequence[dict[str, np.ndarray]] | None,
              calib_cache_path: str | os.PathLike | None) -> tuple[Any, dict[str, Any]]:
    """Set the INT8 flag and an entropy calibrator over ``calib_batches`` (calibrating at the
    calibration batch's shape); returns (the calibrator, the calibration info)."""
    if not calib_batches:
        raise DataError("TensorRT INT8 needs calibration data (none given)")
    if calib_cache_path is None:
        raise ConfigError("TensorRT INT8 needs a calibration cache path")
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    missing = [n for n in names if n not in calib_batches[0]]
    if missing:  # checked here: TensorRT swallows exceptions raised inside the calibrator
        raise DataError(f"INT8 calibration data has no array for input(s) {', '.join(missing)}; "
                        f"it holds {', '.join(calib_batches[0])}")
    config.set_flag(trt.BuilderFlag.INT8)
    calibrator = make_entropy_calibrator(trt, calib_batches, calib_cache_path)
    config.int8_calibrator = calibrator
    if set_shapes:
        # Calibration runs at one fixed shape: the calibration batch (kOPT of this profile).
        cal_profile = builder.create_optimization_profile()
        for name in set_shapes:
            shape = tuple(calib_batches[0][name].shape) if name in calib_batches[0] else None
            if shape is None:
                raise DataError(f"calibration data has no array for input {name!r}")
            cal_profile.set_shape(name, shape, shape, shape)
        config.set_calibration_profile(cal_profile)
    return calibrator, {"calibrator": "IInt8EntropyCalibrator2", "batches": len(calib_batches),
                        "batch_size": int(next(iter(calib_batches[0].values())).shape[0]),
                        "cache": str(calib_cache_path)}


def build_serialized_engine(onnx_path: str | os.PathLike, precision: str,
                            profile: dict[str, tuple[Shape, Shape, Shape]], *,
                            calib_batches: Sequence[dict[str, np.ndarray]] | None = None,
                            calib_cache_path: str | os.PathLike | None = None,
                            workspace_bytes: int | None = None, int8_fp16_fallback: bool = True
                            ) -> tuple[bytes, dict[str, Any]]:
    """Parse ``onnx_path`` and build a serialized engine; returns ``(engine bytes, build info)``.

    Build info: ``build_time_s`` (parse + calibration + build, wall clock), ``builder_flags``,
    ``profile`` (the shapes set), ``calibration`` (batches, batch size, cache reused or written),
    ``output_names`` and TensorRT's warnings. Raises ``BackendUnavailableError`` with TensorRT's
    first errors when parsing or building fails.
    """
    import tensorrt as trt

    if precision not in TRT_PRECISIONS:
        raise ConfigError(f"TensorRT precision must be one of {', '.join(TRT_PRECISIONS)}; got {precision!r}")
    path = Path(onnx_path)
    t0 = time.perf_counter()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errs = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BackendUnavailableError(
            f"tensorrt: the ONNX parser rejected {path.name}: {'; '.join(errs[:3]) or 'no error message'}")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    set_shapes = _set_profile(trt, builder, network, config, profile)
    warnings_: list[str] = []
    flags = _set_precision_flags(trt, builder, config, precision, int8_fp16_fallback, warnings_)
    calibrator, calibration = None, None
    if precision == "int8":
        calibrator, calibration = _set_int8(trt, builder, network, config, set_shapes, calib_batches, calib_cache_path)
        flags.append("INT8")
    blob = builder.build_serialized_network(network, config)
    build_time = time.perf_counter() - t0
    if blob is None:
        errs = logger.errors()
        raise BackendUnavailableError(
            f"tensorrt: building the {precision} engine for {path.name} failed: "
            f"{'; '.join(errs[:3]) or 'TensorRT gave no error message'}")
    if calibrator is not None:
        calibration["cache_reused"] = bool(calibrator.used_cache)
    return bytes(blob), {
        "build_time_s": round(build_time, 3),
        "builder_flags": flags,
        "profile": set_shapes,
        "calibration": calibration,
        "output_names": [network.get_output(i).name for i in range(network.num_outputs)],
        "workspace_bytes": workspace_bytes,
        "trt_warnings": [m for s, m in logger.messages if s == "WARNING"][:20],
        "warnings": warnings_,
    }


def require_cuda_tensors() -> None:
    """Raise ``BackendUnavailableError`` unless torch has a usable CUDA device."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("tensorrt: torch has no CUDA device for the engine's buffers")


def torch_dtype_of(trt_dtype):
    """The torch dtype of a TensorRT ``DataType`` (by name: FLOAT, HALF, BF16, INT8, INT32, INT64, BOOL, UINT8)."""
    import torch

    name = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT8": torch.int8,
             "INT32": torch.int32, "INT64": torch.int64, "BOOL": torch.bool, "UINT8": torch.uint8}
    if name not in table:
        raise MeasurementError(f"tensorrt: I/O tensors of type {name} are not supported; known: {', '.join(table)}")
    return table[name]

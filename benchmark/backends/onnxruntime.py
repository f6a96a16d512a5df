"""ONNX Runtime backend: CPUExecutionProvider on ``cpu``; CUDAExecutionProvider (optionally behind
TensorrtExecutionProvider) on ``cuda``.

A variant runs from ``variant.onnx_path``; a variant that only has an FP32 PyTorch module is
exported first with ``benchmark.models.export.ensure_onnx`` (into ``workdir``, or
``data_dir()/exports`` where exports are cached by weight fingerprint).

Recorded in ``SessionInfo``: the providers the session *really* uses (``session.get_providers()``;
``onnxruntime-gpu`` lists CUDA/TensorRT as available even on machines without a GPU, so that list
is never trusted), ``graph_optimization_level``, ``intra_op_num_threads`` (``threads``; 0 means
``os.cpu_count()``), ``inter_op_num_threads`` and ``execution_mode`` (default 1, sequential) and whether IO binding is
used. Float inputs are cast once to the dtype the graph declares (a float16 graph gets float16
feeds); floating outputs are returned as float32.

Options (``prepare(..., options={...})``):

- ``graph_optimization_level``: ``all`` (default), ``extended``, ``basic`` or ``disable``.
- ``execution_mode``: ``sequential`` (default) or ``parallel`` (independent branches of the graph at
  once, on ``inter_op_num_threads`` threads); ``inter_op_num_threads`` (default 1; 0 = ONNX
  Runtime's default). A sweep sets these three from its runtime settings (``sweep_options``).
- ``tensorrt_ep``: on ``cuda``, put TensorrtExecutionProvider before CUDA (default False).
- ``io_binding``: on ``cuda``, bind inputs in device memory once and keep outputs there for the
  timed calls (default True). On ``cpu`` the timed call is ``session.run(None, feeds)`` on a feed
  dict prepared once.
- ``trt_engine_cache`` (True) / ``trt_engine_cache_dir`` (default ``data_dir()/ort-trt-cache``):
  with ``tensorrt_ep``, TensorRT engines (and timing caches) are kept there between sessions.
- ``profile_file_prefix``: turn on ONNX Runtime's session profiling; the trace (Chrome trace JSON,
  one event per node run) is written to ``<prefix>_<date>.json`` by :meth:`OrtSession.end_profiling`.
  For an untimed profiling pass only (:mod:`benchmark.measure.profile`): profiling slows every run.
- ``trt_calibration_table``: with ``tensorrt_ep``, an INT8 calibration table (a file name inside
  the engine cache folder) for a non-QDQ graph of an int8 variant; ``trt_native_calibration_table``
  (False) says TensorRT's own calibrator wrote it.

With ``tensorrt_ep`` the TensorRT provider's options come from
:func:`benchmark.backends.trt_engine.ort_tensorrt_provider_options` (the variant's precision sets
``trt_fp16_enable`` / ``trt_int8_enable`` / ``trt_bf16_enable``; a QDQ graph is INT8 with the
scales from its Q/DQ nodes) and are recorded in ``options["provider_options"]``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.base import contiguous
from ..errors import BackendUnavailableError, ConfigError, DataError, MeasurementError, one_line
from .base import Backend, Session, SessionInfo, runtime_failure

GRAPH_OPT_LEVELS = ("all", "extended", "basic", "disable")
EXECUTION_MODES = ("sequential", "parallel")
_OPTION_NAMES = ("graph_optimization_level", "execution_mode", "inter_op_num_threads", "tensorrt_ep", "io_binding",
                 "trt_engine_cache",
                 "trt_engine_cache_dir", "trt_calibration_table", "trt_native_calibration_table", "profile_file_prefix")

#: ONNX Runtime type strings -> numpy dtypes (for casting feeds to what the graph declares).
_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _probe_model_bytes() -> bytes:
    """A one-node (Identity) ONNX model used to see which providers really load."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


@functools.lru_cache(maxsize=None)
def _provider_loads(provider: str) -> tuple[bool, str]:
    """Create a session on a tiny model with ``provider`` and check that it is really used."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    try:
        sess = ort.InferenceSession(_probe_model_bytes(), opts, providers=[provider, "CPUExecutionProvider"])
    except (RuntimeError, ValueError) as exc:
        return False, f"onnxruntime: {provider} failed to start ({one_line(exc)})"
    if provider not in sess.get_providers():
        return False, (
            f"onnxruntime: {provider} did not load (CUDA/cuDNN libraries missing? "
            "pip install 'onnxruntime-gpu[cuda,cudnn]')"
        )
    return True, ""


def qdq_report(path: Path) -> tuple[bool, list[str]]:
    """(whether the top-level graph holds QuantizeLinear/DequantizeLinear nodes, the QuantizeLinear
    nodes TensorRT cannot take). TensorRT's Q/DQ is symmetric INT8 only: a uint8 (or absent, hence
    uint8) or non-zero zero point is refused. Zero points held outside the top-level initializers
    are not inspected."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name: t for t in model.graph.initializer}
    has_qdq = False
    bad = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        has_qdq = True
        if node.op_type == "DequantizeLinear":
            continue
        name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if name is None:  # no zero point: uint8 with zero point 0, which TensorRT refuses too
            bad.append(node.name or node.output[0])
            continue
        if name not in inits:
            continue  # computed or a Constant node: not inspected
        arr = numpy_helper.to_array(inits[name])
        if arr.dtype != np.int8 or np.any(arr != 0):
            bad.append(node.name or node.output[0])
    return has_qdq, bad


def tensorrt_ep_options(precision: str, path: Path, options: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """(TensorRT provider options, warnings) for a variant of ``precision`` stored at ``path``."""
    from .trt_engine import file_sha256, ort_tensorrt_provider_options

    warnings: list[str] = []
    trt_precision = precision
    if precision == "int8-dynamic":
        trt_precision = "fp32"
        warnings.append("int8-dynamic: TensorRT cannot run the dynamic-quantization ops; they run on "
                        "CUDAExecutionProvider, the rest in TensorRT FP32")
    cache_dir = options.get("trt_engine_cache_dir")
    engine_cache = bool(options.get("trt_engine_cache", True))
    if cache_dir is None and (engine_cache or options.get("trt_calibration_table")):
        from ..paths import data_dir

        cache_dir = data_dir() / "ort-trt-cache"
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    qdq, bad = qdq_report(path)
    opts = ort_tensorrt_provider_options(
        trt_precision, cache_dir=cache_dir, engine_cache=engine_cache,
        calibration_table=options.get("trt_calibration_table"),
        native_calibration_table=bool(options.get("trt_native_calibration_table", False)),
        qdq=qdq, model_sha256=file_sha256(path) if engine_cache else None)
    if bad:
        warnings.append(
            f"{len(bad)} QuantizeLinear node(s) have uint8 or non-zero zero points (e.g. {bad[0]}); TensorRT "
            "takes only symmetric INT8 Q/DQ, so ONNX Runtime runs those parts on CUDAExecutionProvider "
            "(the tensorrt backend calibrates its own INT8 engine from the FP32 graph)")
    return opts, warnings


def _graph_opt_level(name: str):
    import onnxruntime as ort

    return {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[name]


class OrtSession(Session):
    """An ``onnxruntime.InferenceSession`` with feeds prepared once for the timed calls."""

    def __init__(self, sess, device: str, io_binding: bool, info: SessionInfo):
        self.sess = sess
        self.device = device
        self.io_binding = io_binding
        self.info = info
        self._inputs = [(i.name, _ORT_TYPES.get(i.type)) for i in sess.get_inputs()]
        self._output_names = [o.name for o in sess.get_outputs()]
        self._feeds: dict[str, np.ndarray] | None = None
        self._binding = None
        self._device_values: list[Any] = []

    def convert(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [n for n, _ in self._inputs]
        missing = [n for n in names if n not in feeds]
        if missing:
            if len(feeds) == len(names) and not any(n in feeds for n in names):
                feeds = dict(zip(names, feeds.values()))
            else:
                raise DataError(
                    f"inputs {', '.join(missing)} are missing from the feeds; the model takes "
                    f"{', '.join(names)}, the feeds hold {', '.join(feeds)}"
                )
        out = {}
        for name, dtype in self._inputs:
            arr = np.asarray(feeds[name])
            if dtype is not None and arr.dtype != dtype and (
                np.issubdtype(arr.dtype, np.floating) == np.issubdtype(dtype, np.floating)
            ):
                arr = arr.astype(dtype)
            out[name] = contiguous(arr)
        return out

    @staticmethod
    def _as_float32(outputs) -> list[np.ndarray]:
        res = []
        for o in outputs:
            o = np.asarray(o)
            if np.issubdtype(o.dtype, np.floating) and o.dtype != np.float32:
                o = o.astype(np.float32)
            res.append(o)
        return res

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self._as_float32(self.sess.run(None, self.convert(feeds)))
        except Exception as exc:  # ORT's pybind errors (Fail, InvalidArgument, ...) share no base class
            raise runtime_failure(self.info.backend, exc, feeds) from None

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        self._feeds = self.convert(feeds)
        if self.device == "cuda" and self.io_binding:
            import onnxruntime as ort

            binding = self.sess.io_binding()
            self._device_values = []
            for name, arr in self._feeds.items():
                value = ort.OrtValue.ortvalue_from_numpy(arr, "cuda", 0)
                self._device_values.append(value)
                binding.bind_ortvalue_input(name, value)
            for name in self._output_names:
                binding.bind_output(name, "cuda", 0)
            self._binding = binding
        else:
            self._binding = None

    def run_bound(self) -> Any:
        if self._feeds is None:
            raise MeasurementError("run_bound() was called before bind(feeds); bind the inputs first")
        try:
            if self._binding is not None:
                self.sess.run_with_iobinding(self._binding)
                return None
            return self.sess.run(None, self._feeds)
        except Exception as exc:  # as in run()
            raise runtime_failure(self.info.backend, exc, self._feeds) from None

    def synchronize(self) -> None:
        """Wait for the bound outputs (ORT's Run already waits for its own stream unless told not to)."""
        if self._binding is not None:
            self._binding.synchronize_outputs()

    def end_profiling(self) -> Path:
        """Stop profiling (``profile_file_prefix`` option) and return the trace file ONNX Runtime wrote."""
        if not self.info.options.get("profiling"):
            raise MeasurementError("this ONNX Runtime session was prepared without profile_file_prefix")
        return Path(self.sess.end_profiling())

    def close(self) -> None:
        self._binding = None
        self._device_values = []
        self._feeds = None
        self.sess = None


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime on CPU or CUDA (see the module docstring for what is recorded and the options)."""

    name = "onnxruntime"
    devices = ("cpu", "cuda")
    runtime_options = ("ort_graph_opt_level", "ort_inter_op_threads", "ort_execution_mode")

    def sweep_options(self, device: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The graph optimization level, inter-op threads and execution mode of the run's runtime settings."""
        runtime = settings.get("runtime") or {}
        names = {"ort_graph_opt_level": "graph_optimization_level", "ort_inter_op_threads": "inter_op_num_threads",
                 "ort_execution_mode": "execution_mode"}
        options = {names[k]: v for k, v in runtime.items() if k in names}
        return options or None

    def availability_impl(self, device: str) -> tuple[bool, str]:
        if importlib.util.find_spec("onnxruntime") is None:
            return False, "ONNX Runtime: package not installed"
        if device == "cpu":
            return True, ""
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return False, "onnxruntime: this build has no CUDA provider (install onnxruntime-gpu)"
        from ..machine import cuda_device_status

        ok, reason = cuda_device_status()
        if not ok:
            return ok, reason
        return _provider_loads("CUDAExecutionProvider")

    def supports_impl(self, variant, device: str) -> tuple[bool, str]:
        if variant.onnx_path is not None:
            if not Path(variant.onnx_path).is_file():
                return False, f"ONNX file {variant.onnx_path} does not exist"
            return True, ""
        if variant.torch_module is None:
            return False, "the variant has neither an ONNX file nor a PyTorch module"
        if variant.torch_precision != "fp32":
            return False, (
                f"no ONNX file for this variant and its PyTorch {variant.torch_precision} module is not "
                "exported (run it on the pytorch backend)"
            )
        return True, ""

    def _onnx_path(self, variant, workdir) -> tuple[Path, bool]:
        """(onnx path, exported now?). Without ``workdir`` exports go to ``data_dir()/exports``."""
        if variant.onnx_path is not None:
            return Path(variant.onnx_path), False
        try:
            from ..models.export import ensure_onnx
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__.rsplit('.', 1)[0]}.models.export":
                raise
            raise BackendUnavailableError(
                f"onnxruntime: variant {variant.name!r} has no ONNX file and the ONNX exporter "
                "(benchmark.models.export) is not available"
            ) from exc
        if workdir is None:
            from ..paths import data_dir

            workdir = data_dir() / "exports"
        return Path(ensure_onnx(variant, Path(workdir))), True

    def prepare_impl(self, variant, device: str, threads: int, workdir, options: dict[str, Any]) -> Session:
        import onnxruntime as ort

        unknown = sorted(set(options) - set(_OPTION_NAMES))
        if unknown:
            raise ConfigError(
                f"unknown onnxruntime option(s) {', '.join(unknown)}; known: {', '.join(_OPTION_NAMES)}"
            )
        level = str(options.get("graph_optimization_level", "all"))
        if level not in GRAPH_OPT_LEVELS:
            raise ConfigError(f"graph_optimization_level must be one of {', '.join(GRAPH_OPT_LEVELS)}; got {level!r}")
        mode = str(options.get("execution_mode", "sequential"))
        if mode not in EXECUTION_MODES:
            raise ConfigError(f"execution_mode must be one of {', '.join(EXECUTION_MODES)}; got {mode!r}")
        inter = options.get("inter_op_num_threads", 1)
        if isinstance(inter, bool) or not isinstance(inter, int) or inter < 0:
            raise ConfigError(f"inter_op_num_threads must be an integer >= 0; got {inter!r}")
        want_trt = bool(options.get("tensorrt_ep", False))
        io_binding = bool(options.get("io_binding", True)) and device == "cuda"
        n_threads = int(threads) if threads else (os.cpu_count() or 1)

        if device == "cuda":
            requested = (["TensorrtExecutionProvider"] if want_trt else []) + ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            requested = ["CPUExecutionProvider"]

        path, exported = self._onnx_path(variant, workdir)
        provider_options: dict[str, dict[str, str]] = {}
        ep_warnings: list[str] = []
        if device == "cuda":
            from .trt_engine import ort_cuda_provider_options

            provider_options["CUDAExecutionProvider"] = ort_cuda_provider_options(0)
            if want_trt:
                provider_options["TensorrtExecutionProvider"], ep_warnings = tensorrt_ep_options(
                    variant.precision, path, options)
        providers_arg = [(p, provider_options[p]) if p in provider_options else p for p in requested]
        so = ort.SessionOptions()
        so.graph_optimization_level = _graph_opt_level(level)
        so.intra_op_num_threads = n_threads
        so.inter_op_num_threads = int(inter)
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL if mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if options.get("profile_file_prefix"):
            so.enable_profiling = True
            so.profile_file_prefix = str(options["profile_file_prefix"])
        try:
            sess = ort.InferenceSession(str(path), so, providers=providers_arg)
        except Exception as exc:  # ORT's pybind errors (Fail, InvalidGraph, ...) share no base class
            raise BackendUnavailableError(f"onnxruntime on {device} cannot load {path.name}: {one_line(exc)}") from None

        used = list(sess.get_providers())
        warnings: list[str] = list(ep_warnings)
        if device == "cuda" and "CUDAExecutionProvider" not in used:
            raise BackendUnavailableError(
                f"onnxruntime on cuda: CUDAExecutionProvider did not load (session uses {', '.join(used)}); "
                "install the CUDA/cuDNN libraries: pip install 'onnxruntime-gpu[cuda,cudnn]'"
            )
        if want_trt and "TensorrtExecutionProvider" not in used:
            warnings.append("TensorrtExecutionProvider was asked for but did not load; ran on CUDAExecutionProvider")
        info = SessionInfo(
            backend=self.name,
            device=device,
            providers=used,
            threads=n_threads,
            precision=variant.precision,
            options={
                "graph_optimization_level": level,
                "intra_op_num_threads": n_threads,
                "inter_op_num_threads": int(inter),
                "execution_mode": mode,
                "providers_requested": requested,
                "provider_options": provider_options,
                "io_binding": io_binding,
                "onnx_path": str(path),
                "exported_from_torch": exported,
                "exporter": getattr(getattr(variant, "export_info", None), "exporter", None),
                "onnxruntime_version": ort.__version__,
                "profiling": bool(options.get("profile_file_prefix")),
            },
            warnings=warnings,
        )
        return OrtSession(sess, device, io_binding, info)


class OnnxRuntimeTensorRTBackend(OnnxRuntimeBackend):
    """ONNX Runtime with TensorrtExecutionProvider in front of CUDA (registered as ``onnxruntime-trt``).

    The same session as ``onnxruntime`` with ``tensorrt_ep`` on, under its own name so that a sweep
    holds ORT-CUDA and ORT-TensorRT rows side by side. A session in which the TensorRT provider did
    not load is refused (its rows would be CUDA rows under a TensorRT name). ONNX Runtime builds
    the TensorRT engines inside the session (at creation, or at the first run of a new shape), so
    their build time is part of preparing and evaluating, not a separate figure.
    """

    name = "onnxruntime-trt"
    devices = ("cuda",)

    def availability_impl(self, device: str) -> tuple[bool, str]:
        ok, reason = super().availability_impl(device)
        if not ok:
            return ok, reason
        import onnxruntime as ort

        if "TensorrtExecutionProvider" not in ort.get_available_providers():
            return False, "onnxruntime: this build has no TensorRT provider (install onnxruntime-gpu)"
        return _provider_loads("TensorrtExecutionProvider")

    def prepare_impl(self, variant, device: str, threads: int, workdir, options: dict[str, Any]) -> Session:
        session = super().prepare_impl(variant, device, threads, workdir, {**options, "tensorrt_ep": True})
        session.info.backend = self.name
        session.info.options["tf32"] = "TensorRT's default (on): the TensorRT provider has no TF32 option"
        if variant.precision == "fp32":
            session.info.warnings.append("fp32 through ONNX Runtime's TensorRT provider may use TF32 on Ampere and "
                                         "newer GPUs (the provider cannot turn it off); the other backends' fp32 "
                                         "rows do not")
        if "TensorrtExecutionProvider" not in session.info.providers:
            session.close()
            raise BackendUnavailableError(
                "onnxruntime-trt: TensorrtExecutionProvider did not load (the TensorRT libraries "
                "are missing or do not match this onnxruntime-gpu build)")
        return session

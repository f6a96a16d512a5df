"""Native TensorRT backend (registered as ``tensorrt``; CUDA only).

The ``tensorrt`` package is looked up with ``importlib.util.find_spec`` and imported only inside
methods. TensorRT's wheels fetch their libraries from NVIDIA's package index::

    pip install --extra-index-url https://pypi.nvidia.com "slimbench[tensorrt]"

What runs: the variant's ONNX graph (exported with ``ensure_onnx`` for FP32 PyTorch variants) is
parsed by ``trt.OnnxParser`` and built with ``builder.build_serialized_network`` in the precision
:func:`~benchmark.backends.trt_engine.plan_engine` picks (fp32, fp16, bf16 or int8 with an entropy
calibrator; int8-dynamic and mixed are skipped with the reason). Engines are deserialized with
``trt.Runtime`` and run with ``context.set_input_shape`` / ``set_tensor_address`` /
``execute_async_v3`` on device buffers that are torch CUDA tensors. The engine runs on its own
``torch.cuda.Stream``, ordered after the caller's current stream and back (``wait_stream`` both
ways), so CUDA events recorded on the current stream around ``run_bound`` time the engine.

Engines and shapes: by default (no ``batch_sizes`` option) the session builds one engine per batch
size it is timed at (profile ``min`` 1, ``opt`` = ``max`` = that batch), so every timed batch size
runs on an engine tuned for it; evaluation batches use the smallest engine that covers them.
With ``batch_sizes`` one shared engine covers them all (``opt`` = the largest, or ``opt_batch``).
Building happens in ``prepare`` (batch 1, or the shared profile), ``bind`` and ``run``, never inside
the timed loop.

Engine cache: ``<engine_cache_dir>/<key>.engine`` + ``<key>.json``, keyed by the ONNX file's sha256
(with external data), precision, shape profile, GPU name, compute capability, TensorRT version and
build settings; an engine whose sidecar does not match this machine is rebuilt, with a warning.

Recorded in ``SessionInfo.options``: ``build_time_s`` (seconds spent building engines in this
session; 0.0 when every engine came from the cache), ``engines`` (per engine: profile, build time,
cache hit, file), ``trt_precision``, ``builder_flags``, ``source`` / ``source_onnx``,
``calibration``, ``trt_version``, ``gpu_name``, ``compute_capability`` and
``engine_device_memory_bytes`` (TensorRT's own activation memory, which PyTorch's
``max_memory_allocated`` does not see: ``gpu_peak_mb`` counts only the I/O buffers).

Options (``prepare(..., options={...})``):

- ``batch_sizes``: one shared engine covering these batch sizes (default: one engine per batch).
- ``opt_batch``: the profile's ``opt`` batch for the shared engine (default: the largest).
- ``engine_cache`` (True) and ``engine_cache_dir`` (default ``data_dir()/trt-engines``).
- ``workspace_mb``: builder workspace limit (default: TensorRT's, the device memory).
- ``int8_fp16_fallback`` (True): int8 engines also allow FP16 for layers without INT8 kernels.
- ``calib_data``: a :class:`~benchmark.data.base.Dataset` for INT8 calibration (default: the
  data the int8-static variant was calibrated on, such as a user's ``--data`` file, else the
  model's own dataset, ``calib`` split; ``calib_samples`` of the variant's config, else 128).
- ``calib_batch_size`` (32).
"""
from __future__ import annotations

import dataclasses
import functools
import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..data.base import contiguous
from ..errors import BackendUnavailableError, ConfigError, DataError, MeasurementError, one_line
from .base import Backend, Session, SessionInfo, feeds_batch
from . import trt_build, trt_engine as te

OPTION_NAMES = ("batch_sizes", "opt_batch", "engine_cache", "engine_cache_dir", "workspace_mb",
                "int8_fp16_fallback", "calib_data", "calib_batch_size")
DEFAULT_CALIB_SAMPLES = 128


def check_options(options: dict[str, Any]) -> None:
    """ConfigError for unknown option names or values out of range (checked before any GPU work)."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise ConfigError(f"unknown tensorrt option(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}")
    batch_sizes = options.get("batch_sizes")
    if batch_sizes is not None:
        if isinstance(batch_sizes, (int, str)) or not list(batch_sizes):
            raise ConfigError(f"batch_sizes must be a non-empty list of integers; got {batch_sizes!r}")
        if any(int(b) < 1 for b in batch_sizes):
            raise ConfigError(f"batch sizes must be >= 1; got {list(batch_sizes)}")
    opt_batch = options.get("opt_batch")
    if opt_batch is not None:
        if not batch_sizes:
            raise ConfigError("opt_batch applies to the shared engine: give batch_sizes too")
        if not 1 <= int(opt_batch) <= max(int(b) for b in batch_sizes):
            raise ConfigError(f"opt_batch must be in [1, {max(int(b) for b in batch_sizes)}]; got {opt_batch}")
    workspace_mb = options.get("workspace_mb")
    if workspace_mb is not None and float(workspace_mb) <= 0:
        raise ConfigError(f"workspace_mb must be > 0; got {workspace_mb}")
    if int(options.get("calib_batch_size", te.DEFAULT_CALIB_BATCH)) < 1:
        raise ConfigError(f"calib_batch_size must be >= 1; got {options.get('calib_batch_size')}")
    data = options.get("calib_data")
    if data is not None and not hasattr(data, "arrays"):
        raise ConfigError(f"calib_data must be a benchmark.data.Dataset; got {type(data).__name__}")


@functools.lru_cache(maxsize=1)
def _import_check() -> tuple[bool, str]:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return False, f"TensorRT: the package is installed but does not import ({one_line(exc)})"
    return True, ""


def _gpu_bf16() -> bool | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(0)[0] >= 8


@dataclasses.dataclass
class _Engine:
    """One deserialized engine with its execution context and I/O description."""

    engine: Any
    context: Any
    profile: dict
    max_batch: int | None  # None: static shapes
    inputs: list[tuple[str, Any]]
    outputs: list[tuple[str, Any]]
    record: dict[str, Any]
    applied: Any = None  # the I/O set whose shapes/addresses the context holds now


class _EngineFactory:
    """Builds or loads engines for one variant (same ONNX, precision and settings)."""

    def __init__(self, onnx_path: Path, precision: str, specs: list, cache: te.EngineCache | None,
                 workspace_bytes: int | None, int8_fp16_fallback: bool, calib_batches, trt_version: str,
                 calib_sha256: str | None):
        import tensorrt as trt

        self.trt = trt
        self.onnx_path = onnx_path
        self.precision = precision
        self.specs = specs
        self.cache = cache
        self.workspace_bytes = workspace_bytes
        self.int8_fp16_fallback = int8_fp16_fallback
        self.calib_batches = calib_batches
        self.trt_version = trt_version
        self.model_sha256 = te.file_sha256(onnx_path)
        self.gpu_name, self.compute_capability = trt_build.gpu_identity(0)
        self.logger = trt_build.make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        self.calib_sha256 = calib_sha256
        self.build_time_s = 0.0
        self.warnings: list[str] = []
        self.build_info: dict[str, Any] = {}

    def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"workspace_bytes": self.workspace_bytes,
                                 "tf32": False if self.precision == "fp32" else None}
        if self.precision == "int8":
            extra.update(int8_fp16_fallback=self.int8_fp16_fallback, calib_sha256=self.calib_sha256)
        return extra

    def _calib_cache_path(self) -> Path:
        batch = feeds_batch(self.calib_batches[0], self.specs) or 1
        key = te.calibration_cache_key(self.model_sha256, self.calib_sha256 or "", batch, self.trt_version)
        if self.cache is not None:
            root = self.cache.root
        else:  # never beside the model: that folder may be the user's, or read-only
            from ..paths import data_dir

            root = data_dir() / "trt-engines"
        return te.EngineCache(root).calibration_path(key)

    def engine_for(self, batch_sizes, opt_batch: int | None = None) -> _Engine:
        profile = te.profile_shapes(self.specs, batch_sizes, opt_batch)
        fields = te.engine_key_fields(self.model_sha256, self.precision, profile, self.gpu_name,
                                      self.compute_capability, self.trt_version, self._extra())
        key = te.engine_cache_key(self.model_sha256, self.precision, profile, self.gpu_name,
                                  self.compute_capability, self.trt_version, self._extra())
        record: dict[str, Any] = {"batch_sizes": sorted({int(b) for b in batch_sizes}),
                                  "profile": te.jsonable_profile(profile), "key": key}
        engine = None
        if self.cache is not None:
            cached, notes = self.cache.load(key, fields)
            self.warnings.extend(notes)
            if cached is not None:
                engine = self.runtime.deserialize_cuda_engine(cached.blob)
                if engine is None:
                    self.warnings.append(f"cached TensorRT engine {cached.path.name} did not deserialize; rebuilding")
                    self.cache.discard(key)
                else:
                    record.update(cache_hit=True, path=str(cached.path),
                                  build_time_s=cached.sidecar.get("build_time_s"),
                                  builder_flags=cached.sidecar.get("builder_flags"),
                                  calibration=cached.sidecar.get("calibration"))
        if engine is None:
            calib_path = self._calib_cache_path() if self.precision == "int8" else None
            blob, info = trt_build.build_serialized_engine(
                self.onnx_path, self.precision, profile, calib_batches=self.calib_batches,
                calib_cache_path=calib_path, workspace_bytes=self.workspace_bytes,
                int8_fp16_fallback=self.int8_fp16_fallback)
            self.build_time_s += info["build_time_s"]
            self.warnings.extend(info["warnings"])
            path = None
            if self.cache is not None:
                path = self.cache.store(key, blob, fields, build_time_s=info["build_time_s"],
                                        builder_flags=info["builder_flags"], calibration=info["calibration"],
                                        source_onnx=str(self.onnx_path))
            engine = self.runtime.deserialize_cuda_engine(blob)
            if engine is None:
                errs = self.logger.errors()
                raise BackendUnavailableError(
                    f"tensorrt: the engine built for {self.onnx_path.name} did not deserialize: "
                    f"{'; '.join(errs[:3]) or 'no error message'}")
            record.update(cache_hit=False, path=str(path) if path else None, build_time_s=info["build_time_s"],
                          builder_flags=info["builder_flags"], calibration=info["calibration"])
            self.warnings.append(
                f"TensorRT {self.precision} engine for batch <= {max(record['batch_sizes'])} built in "
                f"{info['build_time_s']:.1f} s (not part of the latency)")
        self.build_info = record
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError("tensorrt: could not create an execution context (out of GPU memory?)")
        trt = self.trt
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = trt_build.torch_dtype_of(engine.get_tensor_dtype(name))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append((name, dtype))
            else:
                outputs.append((name, dtype))
        mem = getattr(engine, "device_memory_size_v2", None)
        if mem is None:
            mem = getattr(engine, "device_memory_size", None)
        record["engine_device_memory_bytes"] = int(mem) if mem is not None else None
        dynamic = any(spec.batch_axis is not None and not isinstance(spec.batch_dim, int) for spec in self.specs)
        return _Engine(engine, context, profile, max(record["batch_sizes"]) if dynamic else None,
                       inputs, outputs, record)


class TrtSession(Session):
    """A TensorRT engine (or one per batch size) on CUDA; see the module docstring."""

    def __init__(self, factory: _EngineFactory, shared: _Engine | None, info: SessionInfo,
                 per_batch: bool):
        import torch

        self.factory = factory
        self.info = info
        self.per_batch = per_batch
        self.engines: list[_Engine] = [shared] if shared is not None else []
        self.stream = torch.cuda.Stream()
        self._bound: tuple[_Engine, dict] | None = None
        self._warnings_seen = 0

    # --- engines -----------------------------------------------------------------------------
    def _note_engine(self, eng: _Engine) -> None:
        self.info.warnings.extend(self.factory.warnings[self._warnings_seen:])
        self._warnings_seen = len(self.factory.warnings)
        self.info.options["engines"].append(eng.record)
        self.info.options["build_time_s"] = round(self.factory.build_time_s, 3)
        mem = [e.record.get("engine_device_memory_bytes") or 0 for e in self.engines]
        self.info.options["engine_device_memory_bytes"] = max(mem) if mem else None

    def _engine(self, batch: int | None, exact: bool) -> _Engine:
        if not self.per_batch or batch is None:
            return self.engines[0]
        fits = [e for e in self.engines if e.max_batch is None or
                (e.max_batch == batch if exact else e.max_batch >= batch)]
        if fits:
            return min(fits, key=lambda e: e.max_batch or 0)
        eng = self.factory.engine_for([batch])
        self.engines.append(eng)
        self._note_engine(eng)
        return eng

    # --- I/O ---------------------------------------------------------------------------------
    def _ordered(self, eng: _Engine, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [n for n, _ in eng.inputs]
        missing = [n for n in names if n not in feeds]
        if not missing:
            return {n: feeds[n] for n in names}
        if len(feeds) == len(names) and not any(n in feeds for n in names):
            return dict(zip(names, feeds.values()))
        raise DataError(
            f"inputs {', '.join(missing)} are missing from the feeds; the engine takes {', '.join(names)}, "
            f"the feeds hold {', '.join(feeds)}")

    def _io(self, eng: _Engine, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        """Device copies of ``feeds`` and freshly allocated outputs for ``eng``'s shapes."""
        import torch

        ordered = self._ordered(eng, feeds)
        bad = te.profile_covers(eng.profile, {k: np.asarray(v).shape for k, v in ordered.items()})
        if bad:
            raise MeasurementError(
                f"tensorrt: input shape outside the engine's optimization profile: {'; '.join(bad)}")
        tensors: dict[str, Any] = {}
        for name, dtype in eng.inputs:
            arr = contiguous(ordered[name])
            t = torch.from_numpy(arr)
            t = t.to(device="cuda", dtype=dtype) if t.dtype != dtype else t.to("cuda")
            tensors[name] = t.contiguous()
        self._apply_inputs(eng, tensors)
        outs: dict[str, Any] = {}
        for name, dtype in eng.outputs:
            shape = tuple(eng.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise MeasurementError(
                    f"tensorrt: output {name!r} has a data-dependent shape {shape}; such models are not supported")
            outs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            eng.context.set_tensor_address(name, int(outs[name].data_ptr()))
        io = {"inputs": tensors, "outputs": outs}
        eng.applied = io
        return io

    @staticmethod
    def _apply_inputs(eng: _Engine, tensors: dict[str, Any]) -> None:
        for name, t in tensors.items():
            if not eng.context.set_input_shape(name, tuple(t.shape)):
                raise MeasurementError(
                    f"tensorrt: input {name!r} of shape {tuple(t.shape)} was refused by the engine "
                    f"(profile {eng.profile.get(name)})")
            eng.context.set_tensor_address(name, int(t.data_ptr()))

    def _reapply(self, eng: _Engine, io: dict[str, Any]) -> None:
        self._apply_inputs(eng, io["inputs"])
        for name, t in io["outputs"].items():
            eng.context.set_tensor_address(name, int(t.data_ptr()))
        eng.applied = io

    def _execute(self, eng: _Engine) -> None:
        import torch

        current = torch.cuda.current_stream()
        self.stream.wait_stream(current)
        ok = eng.context.execute_async_v3(self.stream.cuda_stream)
        current.wait_stream(self.stream)
        if not ok:
            raise MeasurementError("tensorrt: execute_async_v3 failed (see TensorRT's log)")

    # --- Session API -------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        import torch

        eng = self._engine(feeds_batch(feeds, self.factory.specs), exact=False)
        io = self._io(eng, feeds)
        self._execute(eng)
        torch.cuda.current_stream().synchronize()
        res = []
        for t in io["outputs"].values():
            if t.is_floating_point():
                t = t.float()
            res.append(t.cpu().numpy())
        return res

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        import torch

        eng = self._engine(feeds_batch(feeds, self.factory.specs), exact=True)
        self._bound = (eng, self._io(eng, feeds))
        torch.cuda.synchronize()

    def run_bound(self) -> Any:
        if self._bound is None:
            raise MeasurementError("run_bound() was called before bind(feeds); bind the inputs first")
        eng, io = self._bound
        if eng.applied is not io:
            self._reapply(eng, io)
        self._execute(eng)
        return io["outputs"]

    def build(self) -> dict[str, Any] | None:
        if self._bound is None:
            return None
        record = self._bound[0].record
        seconds = record.get("build_time_s")
        return {"build_time_s": None if seconds is None else round(float(seconds), 3),
                "cached": bool(record.get("cache_hit"))}

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()

    def gpu_peak_mb(self) -> float | None:
        """The engines' own device memory (the largest of them), when TensorRT reports it."""
        mem = (self.info.options or {}).get("engine_device_memory_bytes")
        return round(float(mem) / 2**20, 1) if mem else None

    @property
    def applies_precision(self) -> bool:
        """The engine is built at the asked precision from the FP32 graph (fp16, bf16, int8)."""
        return (self.info.options or {}).get("trt_precision") not in (None, "fp32")

    def close(self) -> None:
        import torch

        self._bound = None
        for eng in self.engines:
            eng.applied = None
            eng.context = None
            eng.engine = None
        self.engines = []
        torch.cuda.empty_cache()


class TensorRTBackend(Backend):
    """TensorRT on CUDA (see the module docstring). Reports why it cannot run; never pretends to."""

    name = "tensorrt"
    label = "TensorRT"
    devices = ("cuda",)

    def availability_impl(self, device: str) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "TensorRT: package not installed"
        from ..machine import cuda_device_status

        ok, reason = cuda_device_status()
        if not ok:
            return ok, reason
        return _import_check()

    # --- what runs ---------------------------------------------------------------------------
    def plan(self, variant) -> te.EnginePlan:
        """The engine plan for ``variant`` on this machine (TensorRT version, BF16 support)."""
        return te.plan_engine(variant, te.trt_version(), _gpu_bf16())

    def supports_impl(self, variant, device: str) -> tuple[bool, str]:
        plan = self.plan(variant)
        if not plan.ok:
            return False, plan.note
        if plan.precision == "int8" and not variant.model.dataset and variant.calib_data is None:
            return False, ("TensorRT INT8 calibration needs data: the model has no dataset and the variant "
                           "was not calibrated on any (pass --data, or options={'calib_data': Dataset} to prepare)")
        return True, ""

    def prepare(self, variant, device: str = "cpu", threads: int = 0, workdir=None,
                options: dict[str, Any] | None = None) -> Session:
        """As ``Backend.prepare``; ``options['calib_data']`` lifts the "model has no dataset" refusal."""
        options = dict(options or {})
        check_options(options)
        ok, reason = self.availability(device)
        if ok:
            plan = self.plan(variant)
            ok, reason = plan.ok, plan.note
        if ok and options.get("calib_data") is None:
            ok, reason = self.supports_impl(variant, device)
        if not ok:
            raise BackendUnavailableError(f"{self.name} on {device}: {reason}")
        return self.prepare_impl(variant, device, threads, workdir, options)

    @staticmethod
    def _source_onnx(variant, plan: te.EnginePlan, workdir) -> Path:
        from ..compress import reference_variant
        from ..models.export import ensure_onnx

        if workdir is None:
            from ..paths import data_dir

            workdir = data_dir() / "exports"
        if plan.source == "fp32-graph":
            if variant.model.onnx_path is not None:
                return Path(variant.model.onnx_path)
            return Path(ensure_onnx(reference_variant(variant.model), Path(workdir)))
        if variant.onnx_path is not None:
            return Path(variant.onnx_path)
        return Path(ensure_onnx(dataclasses.replace(variant), Path(workdir)))

    @staticmethod
    def _calibration(variant, options: dict[str, Any]):
        data = options.get("calib_data")
        source = "options['calib_data']"
        if data is None and variant.calib_data is not None:
            data = variant.calib_data
            source = "the data the variant's INT8 ranges were calibrated on"
        if data is None:
            from ..data import resolve_dataset

            data = resolve_dataset(None, variant.model, "calib")
            source = f"dataset {variant.model.dataset!r}, calib split"
            if data is None:
                raise ConfigError("TensorRT INT8 calibration needs data: the model has no dataset; "
                                  "pass options={'calib_data': Dataset}")
        n = int(getattr(variant.config, "calib_samples", 0) or DEFAULT_CALIB_SAMPLES)
        bs = int(options.get("calib_batch_size", te.DEFAULT_CALIB_BATCH))
        batches = te.calibration_batches(data, variant.model.inputs, bs, n)
        info = {"source": source, "dataset": data.name, "samples": sum(
            int(next(iter(b.values())).shape[0]) for b in batches), "batch_size": int(next(iter(batches[0].values())).shape[0]),
            "method": "entropy (IInt8EntropyCalibrator2)"}
        return batches, te.batches_sha256(batches), info

    def prepare_impl(self, variant, device: str, threads: int, workdir, options: dict[str, Any]) -> Session:
        check_options(options)
        trt_build.require_cuda_tensors()
        plan = self.plan(variant)
        batch_sizes = options.get("batch_sizes")
        opt_batch = options.get("opt_batch")
        workspace_mb = options.get("workspace_mb")
        cache = None
        cache_dir = None
        if bool(options.get("engine_cache", True)):
            cache_dir = options.get("engine_cache_dir")
            if cache_dir is None:
                from ..paths import data_dir

                cache_dir = data_dir() / "trt-engines"
            cache = te.EngineCache(Path(cache_dir))
        calib_batches = calib_sha = calib_info = None
        if plan.precision == "int8":
            calib_batches, calib_sha, calib_info = self._calibration(variant, options)
        onnx_path = self._source_onnx(variant, plan, workdir)
        version = te.trt_version() or "unknown"
        factory = _EngineFactory(
            onnx_path, plan.precision, list(variant.model.inputs), cache,
            int(float(workspace_mb) * 2**20) if workspace_mb else None,
            bool(options.get("int8_fp16_fallback", True)), calib_batches, version, calib_sha)
        per_batch = not batch_sizes
        t0 = time.perf_counter()
        first = factory.engine_for(list(batch_sizes) if batch_sizes else [1], opt_batch)
        info = SessionInfo(
            backend=self.name, device=device, providers=["TensorRT"], threads=None, precision=variant.precision,
            options={
                "trt_precision": plan.precision,
                "builder_flags": first.record.get("builder_flags"),
                "source": plan.source,
                "source_note": plan.note,
                "source_onnx": str(onnx_path),
                "model_sha256": factory.model_sha256,
                "profile_mode": "per-batch" if per_batch else "shared",
                "engines": [],
                "build_time_s": 0.0,
                "prepare_time_s": None,
                "engine_cache_dir": str(cache_dir) if cache_dir else None,
                "calibration": calib_info,
                "trt_version": version,
                "gpu_name": factory.gpu_name,
                "compute_capability": factory.compute_capability,
                "engine_device_memory_bytes": None,
                "stream": "own torch.cuda.Stream, ordered after the current stream",
            },
            warnings=[],
        )
        session = TrtSession(factory, first, info, per_batch)
        session._note_engine(first)
        info.options["prepare_time_s"] = round(time.perf_counter() - t0, 3)
        info.warnings.append("gpu_peak_mb counts PyTorch allocations (I/O buffers) only; TensorRT's activation "
                             "memory is engine_device_memory_bytes")
        return session

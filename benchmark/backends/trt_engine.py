"""TensorRT engine helpers: what to build, with which shapes, from which data, and where to cache it.

Pure functions (no GPU, no TensorRT; tested on CPU):

- :func:`plan_engine` maps a variant to a TensorRT precision and the ONNX graph it is built from.
- :func:`profile_shapes` turns input specs and a sweep's batch sizes into one optimization profile.
- :func:`calibration_batches` cuts a calibration :class:`~benchmark.data.base.Dataset` into the
  equal-sized feed dicts an INT8 calibrator hands to TensorRT.
- :func:`file_sha256`, :func:`engine_cache_key`, :func:`calibration_cache_key` and
  :class:`EngineCache` (engine file + JSON sidecar; a sidecar that does not match this machine
  makes the cache refuse the engine, with a warning, so it is rebuilt).
- :func:`ort_tensorrt_provider_options` / :func:`ort_cuda_provider_options` map Slimbench's
  precision and cache settings to ONNX Runtime's TensorRT / CUDA execution-provider options.

GPU-only helpers (import ``tensorrt`` and ``torch`` inside): :func:`gpu_identity`,
:func:`trt_version`, :func:`make_entropy_calibrator` (``trt.IInt8EntropyCalibrator2`` fed from
device buffers held as torch CUDA tensors) and :func:`build_serialized_engine`.

Conventions:

- **Precision**: ``fp32`` builds with no precision flag; ``fp16`` sets ``BuilderFlag.FP16``;
  ``bf16`` sets ``BuilderFlag.BF16`` (TensorRT >= 9 and a GPU with compute capability >= 8.0);
  ``int8`` sets ``BuilderFlag.INT8`` with an entropy calibrator (``IInt8EntropyCalibrator2``) and,
  by default, ``BuilderFlag.FP16`` too so that layers without an INT8 kernel fall back to FP16
  rather than FP32 (TensorRT's usual INT8 recipe; recorded in the engine's build info).
  TensorRT chooses each layer's precision among the allowed ones by speed.
- **Source graph**: reduced precisions are built from the model's FP32 graph, so that TensorRT
  applies its own FP16/BF16/INT8 conversion (ONNX Runtime's QDQ files use uint8 activations with
  zero points, which TensorRT's explicit quantization does not accept). A pruned/low-rank variant
  keeps no FP32 graph after its precision step: its ``fp16`` ONNX (float32 I/O) is built with the
  FP16 flag; its ``int8``/``bf16`` have no TensorRT engine (skipped with that reason).
- **TensorRT 11** removed these builder flags and the INT8 calibrators: every network is strongly
  typed, so the ONNX file's types decide. There ``fp32`` is unchanged, ``fp16`` is built from the
  variant's own FP16 ONNX file (FP16 nodes, float32 I/O, FP32 block list) with no flag, and
  ``bf16``/``int8`` are refused with the reason (they need a BF16-typed graph or explicit symmetric
  INT8 Q/DQ nodes, which Slimbench does not produce). The ``tensorrt`` extra installs 10.x.
- **Profile**: one optimization profile per engine: ``min`` = batch 1 (an evaluation's last,
  partial batch may be smaller than any timed batch size), ``opt`` = ``max`` = the largest batch
  size of the sweep. TensorRT tunes its kernels for ``opt``: smaller batch sizes run correctly but
  may be slower than in an engine built for them; time a batch size alone (``batch_sizes=(b,)``)
  for its best engine. Non-batch dims must be static (or fixed with an input override).
- **INT8 calibration**: ``calib_samples`` samples of the same calibration split the other
  backends use, in batches of ``calib_batch_size`` (32; the last incomplete batch is dropped
  because TensorRT calibrates with one fixed batch shape, set as the calibration profile).
  The calibration cache is written next to the engines and reused when the model, the
  calibration data and the TensorRT version are the same.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.base import fixed_batch
from ..errors import BackendUnavailableError, ConfigError, DataError, MeasurementError

log = logging.getLogger(__name__)

#: Precisions a TensorRT engine is built in.
TRT_PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: Variant precisions that only change number formats (everything else changes the graph).
_PRECISION_STEPS = ("fp16", "bf16", "int8-dynamic", "int8-static", "mixed")
#: Sidecar fields an engine must match to be loaded from the cache.
CHECKED_FIELDS = ("gpu_name", "compute_capability", "trt_version", "model_sha256", "precision", "profile")
DEFAULT_CALIB_BATCH = 32
SIDECAR_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Which engine for which variant


@dataclass(frozen=True)
class EnginePlan:
    """How a variant becomes a TensorRT engine, or why it does not.

    ``precision`` is one of :data:`TRT_PRECISIONS` (None when unsupported); ``source`` is
    ``"variant"`` (the variant's own ONNX file, exported from its FP32 module when it has none) or
    ``"fp32-graph"`` (the model's unquantized FP32 graph); ``note`` says why (or why not).
    """

    precision: str | None
    source: str = "variant"
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.precision is not None


def _major(version: str | None) -> int | None:
    if not version:
        return None
    m = re.match(r"(\d+)", str(version))
    return int(m.group(1)) if m else None


def _structural_steps(variant) -> list[str]:
    """Changed compression steps of ``variant`` that altered the graph (pruning, low-rank, ...)."""
    return [r.method for r in getattr(variant, "records", []) or []
            if r.changed and r.method not in _PRECISION_STEPS]


def _has_fp32_graph(variant) -> bool:
    model = variant.model
    return model.onnx_path is not None or model.torch_module is not None


def strongly_typed_only(trt_version: str | None) -> bool:
    """True for TensorRT >= 11, which has no precision builder flags and no INT8 calibrators."""
    major = _major(trt_version)
    return major is not None and major >= 11


def plan_engine(variant, trt_version: str | None = None, gpu_bf16: bool | None = None) -> EnginePlan:
    """The TensorRT precision and source graph for ``variant`` (see the module docstring).

    ``trt_version`` (e.g. ``"10.3.0"``) and ``gpu_bf16`` (compute capability >= 8.0) decide BF16;
    None means "unknown" and BF16 is then refused.
    """
    p = variant.precision
    structural = _structural_steps(variant)
    if p == "fp32":
        if variant.onnx_path is not None:
            return EnginePlan("fp32", "variant", "built from the variant's ONNX file")
        if variant.torch_module is not None and variant.torch_precision == "fp32":
            return EnginePlan("fp32", "variant", "built from the ONNX export of the variant's FP32 module")
        return EnginePlan(None, note="the variant has neither an ONNX file nor an FP32 PyTorch module to export")
    if p == "int8-dynamic":
        return EnginePlan(None, note=(
            "TensorRT has no dynamic (per-batch) activation quantization; int8-static builds a calibrated "
            "TensorRT INT8 engine"))
    if p == "mixed":
        return EnginePlan(None, note=(
            "mixed is a per-layer ONNX Runtime/PyTorch recipe; TensorRT picks per-layer precision itself: "
            "use fp16 or int8-static"))
    if p not in ("fp16", "bf16", "int8-static"):
        return EnginePlan(None, note=f"precision {p!r} has no TensorRT equivalent; TensorRT builds {', '.join(TRT_PRECISIONS)}")
    trt_p = {"fp16": "fp16", "bf16": "bf16", "int8-static": "int8"}[p]
    if strongly_typed_only(trt_version):
        if trt_p == "fp16" and variant.onnx_path is not None:
            after = f" (after {', '.join(structural)})" if structural else ""
            return EnginePlan("fp16", "variant",
                              f"built from the variant's FP16 ONNX file{after} as a strongly typed network "
                              f"(TensorRT {trt_version} has no FP16 builder flag)")
        needs = {"fp16": "an FP16 ONNX file, and this variant has none",
                 "bf16": "a BF16-typed ONNX graph (e.g. from NVIDIA ModelOpt AutoCast)",
                 "int8": "explicit Q/DQ nodes with symmetric INT8 activations (e.g. from NVIDIA ModelOpt); "
                         "calibrator-based INT8 was removed"}[trt_p]
        return EnginePlan(None, note=(f"TensorRT {trt_version} builds only strongly typed networks: "
                                      f"{trt_p.upper()} needs {needs}; install tensorrt 10.x "
                                      "(pip install 'slimbench[tensorrt]') for TensorRT's own conversion"))
    if trt_p == "bf16":
        major = _major(trt_version)
        if major is None or major < 9:
            return EnginePlan(None, note=f"BF16 engines need TensorRT >= 9 (installed: {trt_version or 'unknown'})")
        if gpu_bf16 is False:
            return EnginePlan(None, note="BF16 engines need a GPU with compute capability >= 8.0")
    if not structural and _has_fp32_graph(variant):
        return EnginePlan(trt_p, "fp32-graph",
                          f"built from the model's FP32 graph with TensorRT's {trt_p.upper()} builder flag")
    if trt_p == "fp16" and variant.onnx_path is not None:
        return EnginePlan("fp16", "variant",
                          f"built from the variant's FP16 ONNX file (after {', '.join(structural)}) with the FP16 flag")
    why = (f"after {', '.join(structural)} the variant keeps no FP32 graph for TensorRT to convert"
           if structural else "the model has no FP32 graph (ONNX file or PyTorch module)")
    return EnginePlan(None, note=f"TensorRT {trt_p.upper()}: {why}; build that step at fp32 and use fp16 on TensorRT")


# ---------------------------------------------------------------------------------------------
# Shapes


Shape = tuple[int, ...]


def _batches(batch_sizes: Iterable[int]) -> list[int]:
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes:
        raise ConfigError("an optimization profile needs at least one batch size")
    if sizes[0] < 1:
        raise ConfigError(f"batch sizes must be >= 1; got {sizes[0]}")
    return sizes


def profile_shapes(input_specs: Sequence, batch_sizes: Iterable[int],
                   opt_batch: int | None = None) -> dict[str, tuple[Shape, Shape, Shape]]:
    """``{input name: (min, opt, max)}`` covering ``batch_sizes`` (dim 0 is the batch axis).

    ``min`` uses batch 1, ``opt`` the largest batch size unless ``opt_batch`` is given (it must
    lie in [1, max]), ``max`` the largest. Inputs whose dim 0 is a fixed number keep their shape
    in all three. Other dynamic dims raise ``ConfigError`` (fix them with an input override).
    """
    sizes = _batches(batch_sizes)
    largest = sizes[-1]
    opt = largest if opt_batch is None else int(opt_batch)
    if not 1 <= opt <= largest:
        raise ConfigError(f"opt batch must be in [1, {largest}] (the largest batch size); got {opt}")
    out: dict[str, tuple[Shape, Shape, Shape]] = {}
    for spec in input_specs:
        if not spec.shape:
            out[spec.name] = ((), (), ())
            continue
        if isinstance(spec.shape[0], int):
            fixed = spec.concrete()
            out[spec.name] = (fixed, fixed, fixed)
            continue
        out[spec.name] = (spec.concrete(1), spec.concrete(opt), spec.concrete(largest))
    return out


def profile_covers(profile: dict[str, tuple[Shape, Shape, Shape]], shapes: dict[str, Shape]) -> list[str]:
    """Inputs of ``shapes`` that fall outside ``profile`` (empty list = every shape fits)."""
    bad = []
    for name, shape in shapes.items():
        if name not in profile:
            continue
        lo, _, hi = profile[name]
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(lo) or any(s < a or s > b for s, a, b in zip(shape, lo, hi)):
            bad.append(f"{name} {'x'.join(map(str, shape))} (profile {'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))})")
    return bad


def _jsonable_profile(profile: dict[str, tuple[Shape, Shape, Shape]]) -> dict[str, list[list[int]]]:
    return {k: [list(map(int, s)) for s in v] for k, v in sorted(profile.items())}


# ---------------------------------------------------------------------------------------------
# INT8 calibration data


def calibration_batches(dataset, input_specs: Sequence, batch_size: int = DEFAULT_CALIB_BATCH,
                        max_samples: int | None = None) -> list[dict[str, np.ndarray]]:
    """``dataset`` as equal-sized, C-contiguous feed dicts for a TensorRT INT8 calibrator.

    Uses the first ``max_samples`` samples (all when None); the batch is ``min(batch_size, n)``
    and an incomplete last batch is dropped (TensorRT calibrates with one fixed shape). Arrays
    are cast to each input's dtype (``bfloat16`` inputs are fed as float32). A fixed batch dim in
    the specs wins over ``batch_size``. Raises ``DataError`` for a dataset that cannot calibrate
    these inputs.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"calibration batch size must be >= 1; got {batch_size}")
    if any(dataset.feed_axis.get(k, False) for k in dataset.arrays):
        raise DataError(
            f"dataset {dataset.name!r} holds whole feeds (no batch axis); TensorRT INT8 calibration needs "
            "arrays whose first axis is the batch")
    missing = [s.name for s in input_specs if s.name not in dataset.arrays]
    if missing:
        raise DataError(
            f"calibration dataset {dataset.name!r} has no array for input(s) {', '.join(missing)}; it holds "
            f"{', '.join(dataset.arrays)}")
    data = dataset.subset(max_samples)
    fixed = fixed_batch(input_specs)
    batches = data.feed_batches(batch_size, fixed, names=[spec.name for spec in input_specs], equal=True)
    if not batches:
        raise DataError(
            f"calibration dataset {dataset.name!r} has {len(data)} samples; the model's fixed batch size is {fixed}")
    dtypes = {spec.name: np.float32 if spec.dtype == "bfloat16" else np.dtype(spec.dtype) for spec in input_specs}
    return [{name: np.ascontiguousarray(arr.astype(dtypes[name], copy=False)) for name, arr in feeds.items()}
            for feeds in batches]


def batches_sha256(batches: Sequence[dict[str, np.ndarray]]) -> str:
    """A digest of calibration batches (names, shapes, dtypes and bytes), for cache keys."""
    h = hashlib.sha256()
    for feeds in batches:
        for name in sorted(feeds):
            arr = np.ascontiguousarray(feeds[name])
            h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Cache keys and the engine cache


def file_sha256(onnx_path: str | os.PathLike) -> str:
    """sha256 of an ONNX file's bytes followed by each external data file it references
    (sorted by relative name; the name is hashed too)."""
    from ..onnx_graph import external_data_files

    path = Path(onnx_path)
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    for ext in sorted(external_data_files(path), key=lambda p: p.name):
        h.update(f"\0external:{ext.relative_to(path.parent).as_posix()}\0".encode())
        with ext.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def engine_key_fields(model_sha256: str, precision: str, profile: dict, gpu_name: str,
                      compute_capability: str, trt_version: str, extra: dict | None = None) -> dict[str, Any]:
    """The fields an engine is keyed by (and that its sidecar records), JSON-ready."""
    if precision not in TRT_PRECISIONS:
        raise ConfigError(f"TensorRT precision must be one of {', '.join(TRT_PRECISIONS)}; got {precision!r}")
    return {
        "model_sha256": str(model_sha256),
        "precision": precision,
        "profile": _jsonable_profile(profile),
        "gpu_name": str(gpu_name),
        "compute_capability": str(compute_capability),
        "trt_version": str(trt_version),
        "extra": json.loads(json.dumps(extra or {}, sort_keys=True, default=str)),
    }


def engine_cache_key(model_sha256: str, precision: str, profile: dict, gpu_name: str,
                     compute_capability: str, trt_version: str, extra: dict | None = None) -> str:
    """A 32-hex-digit key: sha256 of the canonical JSON of :func:`engine_key_fields`.

    ``extra`` holds other build settings that change the engine (workspace limit, INT8 FP16
    fallback, the calibration data digest).
    """
    fields_ = engine_key_fields(model_sha256, precision, profile, gpu_name, compute_capability, trt_version, extra)
    blob = json.dumps(fields_, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def calibration_cache_key(model_sha256: str, data_sha256: str, batch_size: int, trt_version: str) -> str:
    """Key of an INT8 calibration cache: the model, the calibration data, its batch, TensorRT's version."""
    blob = json.dumps([model_sha256, data_sha256, int(batch_size), str(trt_version)])
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class CachedEngine:
    """An engine read from the cache: its bytes and its sidecar."""

    blob: bytes
    sidecar: dict[str, Any]
    path: Path


@dataclass
class EngineCache:
    """Serialized engines under ``root``: ``<key>.engine`` plus ``<key>.json`` (the key fields,
    build time, engine size and sha256, creation time) and INT8 calibration caches
    ``calib-<key>.cache`` beside them.

    :meth:`load` refuses an engine (returns None and a warning; the caller rebuilds) whose
    sidecar is missing, unreadable, records another GPU name, compute capability, TensorRT
    version, model digest, precision or profile, or whose bytes do not match the recorded sha256.
    """

    root: Path
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.root = Path(self.root)

    def engine_path(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    def sidecar_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def calibration_path(self, calib_key: str) -> Path:
        return self.root / f"calib-{calib_key}.cache"

    def load(self, key: str, expected: dict[str, Any]) -> tuple[CachedEngine | None, list[str]]:
        """The cached engine for ``key`` if its sidecar matches ``expected`` (key fields), else
        ``(None, warnings)``; no file at all gives ``(None, [])``."""
        engine, sidecar = self.engine_path(key), self.sidecar_path(key)
        if not engine.is_file():
            return None, []
        name = engine.name
        if not sidecar.is_file():
            return None, [f"cached TensorRT engine {name} has no sidecar {sidecar.name}; rebuilding"]
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return None, [f"cached TensorRT engine {name}: sidecar unreadable ({exc}); rebuilding"]
        if not isinstance(meta, dict):
            return None, [f"cached TensorRT engine {name}: sidecar is not a JSON object; rebuilding"]
        exp = json.loads(json.dumps(expected, sort_keys=True, default=str))
        diffs = []
        for f in CHECKED_FIELDS:
            if f in exp and meta.get(f) != exp[f]:
                diffs.append(f"{f} {meta.get(f)!r} (this machine/run: {exp[f]!r})")
        if diffs:
            return None, [f"cached TensorRT engine {name} was built for {'; '.join(diffs)}; rebuilding"]
        blob = engine.read_bytes()
        if meta.get("engine_sha256") and meta["engine_sha256"] != _sha256_bytes(blob):
            return None, [f"cached TensorRT engine {name} does not match the sha256 in its sidecar "
                          "(truncated or replaced); rebuilding"]
        return CachedEngine(blob, meta, engine), []

    def store(self, key: str, blob: bytes, fields_: dict[str, Any], **info: Any) -> Path:
        """Write ``blob`` and its sidecar (``fields_`` + ``info`` + size, sha256, time) atomically."""
        self.root.mkdir(parents=True, exist_ok=True)
        engine = self.engine_path(key)
        _atomic_write(engine, bytes(blob))
        meta = {
            "sidecar_version": SIDECAR_VERSION,
            "key": key,
            **json.loads(json.dumps(fields_, sort_keys=True, default=str)),
            **json.loads(json.dumps(info, sort_keys=True, default=str)),
            "engine_size_bytes": len(blob),
            "engine_sha256": _sha256_bytes(bytes(blob)),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        _atomic_write(self.sidecar_path(key), json.dumps(meta, indent=2, sort_keys=True).encode())
        return engine

    def discard(self, key: str) -> None:
        """Remove an engine and its sidecar (after TensorRT failed to deserialize it)."""
        for p in (self.engine_path(key), self.sidecar_path(key)):
            p.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# ONNX Runtime execution-provider options


_BOOL = {True: "True", False: "False"}


def ort_tensorrt_provider_options(precision: str = "fp32", *, cache_dir: str | os.PathLike | None = None,
                                  engine_cache: bool = True, calibration_table: str | None = None,
                                  native_calibration_table: bool = False, qdq: bool = False,
                                  device_id: int = 0, workspace_bytes: int | None = None,
                                  timing_cache: bool = True, model_sha256: str | None = None) -> dict[str, str]:
    """Options for ONNX Runtime's ``TensorrtExecutionProvider`` (all values as the strings ORT parses).

    ``precision`` is a Slimbench variant precision or a TensorRT one: ``fp32``; ``fp16`` ->
    ``trt_fp16_enable``; ``bf16`` -> ``trt_bf16_enable``; ``int8``/``int8-static`` ->
    ``trt_int8_enable`` plus ``trt_fp16_enable`` (FP16 fallback for layers without INT8 kernels);
    ``mixed`` is treated as INT8 when ``qdq`` (a QDQ file), else as FP16. ``int8-dynamic`` is
    refused: TensorRT does not run ORT's dynamic-quantization ops (they fall back to CUDA).
    ``calibration_table`` is a file name *inside* ``cache_dir`` (ORT looks for it there); it is
    refused for QDQ models (TensorRT takes the scales from the Q/DQ nodes) and with INT8 off.
    ``native_calibration_table`` says it was written by TensorRT's own calibrator (the
    calibration cache of the native backend) rather than ORT's calibration tool.
    ``engine_cache`` enables ``trt_engine_cache_enable`` + ``trt_engine_cache_path`` (and the
    timing cache beside it when ``timing_cache``); it needs ``cache_dir``. ORT names cached engines
    after the graph's structure, not its weights, so ``model_sha256`` (the file's hash) becomes
    ``trt_engine_cache_prefix``: a retrained model with the same graph never loads the old engine.
    """
    p = {"int8-static": "int8"}.get(precision, precision)
    if p == "mixed":
        p = "int8" if qdq else "fp16"
    if p == "int8-dynamic":
        raise ConfigError(
            "the ONNX Runtime TensorRT provider cannot run int8-dynamic graphs (MatMulInteger/DynamicQuantizeLinear "
            "fall back to CUDA); use int8-static or the CUDA provider alone")
    if p not in TRT_PRECISIONS:
        raise ConfigError(f"precision must be one of fp32, fp16, bf16, int8, int8-static, mixed; got {precision!r}")
    opts: dict[str, str] = {
        "device_id": str(int(device_id)),
        "trt_fp16_enable": _BOOL[p in ("fp16", "int8")],
        "trt_int8_enable": _BOOL[p == "int8"],
    }
    if p == "bf16":
        opts["trt_bf16_enable"] = "True"
    if calibration_table is not None:
        if p != "int8":
            raise ConfigError(f"an INT8 calibration table only applies to int8; precision is {precision!r}")
        if qdq:
            raise ConfigError(
                "a calibration table cannot be used with a QDQ model: TensorRT takes the INT8 scales from its "
                "QuantizeLinear/DequantizeLinear nodes")
        if Path(str(calibration_table)).name != str(calibration_table):
            raise ConfigError(
                f"calibration table must be a file name inside the engine cache folder; got {calibration_table!r}")
        if cache_dir is None:
            raise ConfigError("a calibration table needs cache_dir (ORT reads it from the engine cache folder)")
        opts["trt_int8_calibration_table_name"] = str(calibration_table)
        opts["trt_int8_use_native_calibration_table"] = _BOOL[bool(native_calibration_table)]
    opts["trt_engine_cache_enable"] = _BOOL[bool(engine_cache)]
    if engine_cache and cache_dir is None:
        raise ConfigError("the TensorRT engine cache needs cache_dir (a folder for the engines)")
    if engine_cache or calibration_table is not None:
        opts["trt_engine_cache_path"] = str(cache_dir)
    if engine_cache and model_sha256:
        opts["trt_engine_cache_prefix"] = f"sb_{model_sha256[:16]}"
    if engine_cache and timing_cache:
        opts["trt_timing_cache_enable"] = "True"
        opts["trt_timing_cache_path"] = str(cache_dir)
    if workspace_bytes is not None:
        if int(workspace_bytes) <= 0:
            raise ConfigError(f"workspace must be > 0 bytes; got {workspace_bytes}")
        opts["trt_max_workspace_size"] = str(int(workspace_bytes))
    return opts


def ort_cuda_provider_options(device_id: int = 0) -> dict[str, str]:
    """Options for ONNX Runtime's ``CUDAExecutionProvider``: the device, and TF32 off (``use_tf32``
    "0": fp32 means IEEE FP32 on every backend); ORT's defaults otherwise."""
    return {"device_id": str(int(device_id)), "use_tf32": "0"}


# ---------------------------------------------------------------------------------------------
# GPU-only helpers (TensorRT and a CUDA build of torch)


def trt_version() -> str | None:
    """The installed TensorRT version (from package metadata; the package is not imported)."""
    from ..machine import package_version

    return package_version("tensorrt")


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
            _atomic_write(self.cache_path, bytes(cache))

    return _EntropyCalibrator()


def _parser_error(err) -> str:
    desc = err.desc() if hasattr(err, "desc") else str(err)
    node = err.node() if hasattr(err, "node") else -1
    return f"node {node}: {desc}" if isinstance(node, int) and node >= 0 else str(desc)


def _network_flags(trt) -> int:
    major = _major(getattr(trt, "__version__", None)) or 10
    if major >= 10:
        return 0  # explicit batch is the only mode in TensorRT 10
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


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

    flags = []
    warnings_: list[str] = []
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
    calibration: dict[str, Any] | None = None
    calibrator = None
    if precision == "int8":
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
        flags.append("INT8")
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
        calibration = {"calibrator": "IInt8EntropyCalibrator2", "batches": len(calib_batches),
                       "batch_size": int(next(iter(calib_batches[0].values())).shape[0]),
                       "cache": str(calib_cache_path)}
    blob = builder.build_serialized_network(network, config)
    build_time = time.perf_counter() - t0
    if blob is None:
        errs = logger.errors()
        raise BackendUnavailableError(
            f"tensorrt: building the {precision} engine for {path.name} failed: "
            f"{'; '.join(errs[:3]) or 'TensorRT gave no error message'}")
    if calibrator is not None and calibration is not None:
        calibration["cache_reused"] = bool(calibrator.used_cache)
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    trt_warnings = [m for s, m in logger.messages if s == "WARNING"]
    info = {
        "build_time_s": round(build_time, 3),
        "builder_flags": flags,
        "profile": set_shapes,
        "calibration": calibration,
        "output_names": outputs,
        "workspace_bytes": workspace_bytes,
        "trt_warnings": trt_warnings[:20],
        "warnings": warnings_,
    }
    return bytes(blob), info


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

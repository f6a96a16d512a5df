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

:func:`trt_version` reads the installed TensorRT version from package metadata. Building engines
(GPU only: the builder, the entropy calibrator, the logger) is in :mod:`benchmark.backends.trt_build`.

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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.base import fixed_batch
from ..errors import ConfigError, DataError
from ..machine import package_version

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


def major_version(version: str | None) -> int | None:
    """The leading number of a version string (``"10.3.0"`` -> 10); None when there is none."""
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
    major = major_version(trt_version)
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
        major = major_version(trt_version)
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
    """``{input name: (min, opt, max)}`` covering ``batch_sizes`` on each input's batch axis.

    ``min`` uses batch 1, ``opt`` the largest batch size unless ``opt_batch`` is given (it must
    lie in [1, max]), ``max`` the largest. Inputs whose batch dim is a fixed number, and inputs
    without a batch axis, keep their shape in all three. Other dynamic dims raise ``ConfigError``
    (fix them with an input override).
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
        if spec.batch_axis is None or isinstance(spec.batch_dim, int):
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


def jsonable_profile(profile: dict[str, tuple[Shape, Shape, Shape]]) -> dict[str, list[list[int]]]:
    """A profile as sorted JSON-ready lists (what sidecars and cache keys record)."""
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
    if dataset.per_feed:
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
        "profile": jsonable_profile(profile),
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


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
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
        atomic_write(engine, bytes(blob))
        meta = {
            "sidecar_version": SIDECAR_VERSION,
            "key": key,
            **json.loads(json.dumps(fields_, sort_keys=True, default=str)),
            **json.loads(json.dumps(info, sort_keys=True, default=str)),
            "engine_size_bytes": len(blob),
            "engine_sha256": _sha256_bytes(bytes(blob)),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write(self.sidecar_path(key), json.dumps(meta, indent=2, sort_keys=True).encode())
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
# The installed TensorRT


def trt_version() -> str | None:
    """The installed TensorRT version (from package metadata; the package is not imported)."""
    return package_version("tensorrt")

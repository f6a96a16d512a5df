"""Frozen, validated configuration objects.

Every config is a frozen dataclass validated in ``__post_init__``; a bad value raises
``ConfigError`` naming the field, the value and the allowed values or range. Field metadata:

- ``help``: text for the CLI's ``--help`` and the dashboard widgets' ``help=``;
- ``label``: how messages name the field (default: the field name in words);
- ``bounds``: a :class:`Bounds` every numeric field has: finite, within ``[lo, hi]``, an integer
  where asked; the upper limits are the ``MAX_*`` constants below;
- ``flag`` (and ``metavar``, ``repeat``): the ``slimbench run`` flag of a :class:`SweepConfig`
  field; its TOML keys are the field name and the flag's name with ``_`` for ``-``. A list field's
  flag takes a comma list, or repeats where ``repeat`` is set.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError
from .executors.base import EXECUTORS, parse_target
from .registry import one_of

#: Input dtypes Slimbench can feed (numpy names).
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
#: Precisions a sweep may ask for.
PRECISIONS = ("fp32", "fp16", "bf16", "int8-dynamic", "int8-static", "mixed")
PRUNE_KINDS = ("unstructured", "structured")
CALIB_METHODS = ("minmax", "entropy", "percentile")
DEVICES = ("cpu", "cuda")
#: Quality metrics a row may carry and output kinds a user may name (details in benchmark.measure.quality).
QUALITY_METRICS = ("accuracy", "top1_agreement", "position_agreement", "cosine", "rel_error")
OUTPUT_KINDS = ("logits", "embeddings", "regression")
#: INT8 static formats: ``measure`` times and scores the candidates, ``auto`` reads the CPU flags.
INT8_FORMATS = ("measure", "auto", "u8s8", "s8s8")
#: ONNX Runtime graph optimization levels and execution modes a sweep may ask for.
ORT_OPT_LEVELS = ("all", "extended", "basic", "disable")
ORT_EXECUTION_MODES = ("sequential", "parallel")

#: Upper limits of numeric settings: larger values are a ConfigError, never a stored row.
MAX_BATCH_SIZE = 1_048_576
MAX_THREADS = 1_024
MAX_ITERS = 10_000_000  # timed and warm-up iterations
MAX_DURATION_S = 3_600.0  # timed and warm-up seconds per run
MAX_SAMPLES = 10_000_000  # evaluation and calibration samples
MAX_EPOCHS = 1_000
MAX_TEMPERATURE = 1_000.0
MAX_TIMING_ATTEMPTS = 10

Dim = int | str


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


@dataclass(frozen=True)
class Bounds:
    """The allowed values of a numeric field: finite, ``lo <= v <= hi`` (``<`` where open), an
    integer when ``integer``. ``interval`` (e.g. ``"[0, 1)"``) is how ratio messages show the range."""

    lo: float
    hi: float
    integer: bool = False
    unit: str = ""
    lo_open: bool = False
    hi_open: bool = False
    interval: str | None = None

    def check(self, what: str, value: Any) -> int | float:
        """``value`` as an int or float; ConfigError naming ``what``, the value and the range."""
        noun = "an integer" if self.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{what} must be {noun}; got {value!r}")
        if self.integer and isinstance(value, float) and value.is_integer():
            value = int(value)
        if self.integer and not isinstance(value, numbers.Integral):
            raise ConfigError(f"{what} must be {noun}; got {value!r}")
        value = int(value) if self.integer else float(value)
        below = value < self.lo or (self.lo_open and value == self.lo)
        above = value > self.hi or (self.hi_open and value == self.hi)
        if self.interval is not None and (below or above or not math.isfinite(value)):
            raise ConfigError(f"{what} must be in {self.interval}; got {_num(value)}")
        unit = f" {self.unit}" if self.unit else ""
        if not math.isfinite(value):
            raise ConfigError(f"{what} must be a finite number between {_num(self.lo)} and {_num(self.hi)}{unit}; "
                              f"got {value}")
        if below:
            raise ConfigError(f"{what} must be {'>' if self.lo_open else '>='} {_num(self.lo)}{unit}; got {_num(value)}")
        if above:
            raise ConfigError(f"{what} must be between {_num(self.lo)} and {_num(self.hi)}{unit}; got {_num(value)}")
        return value


def _help(text: str, *, label: str | None = None, bounds: Bounds | None = None, flag: str | None = None,
          metavar: str | None = None, repeat: bool = False, **kw) -> Any:
    meta: dict[str, Any] = {"help": text}
    if repeat:
        meta["repeat"] = True
    for key, value in (("label", label), ("bounds", bounds), ("flag", flag), ("metavar", metavar)):
        if value is not None:
            meta[key] = value
    return field(metadata=meta, **kw)


def help_text(cls, name: str) -> str:
    """The help text of field ``name`` of config class ``cls`` (for widgets and --help)."""
    for f in fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


def field_label(f) -> str:
    """How messages name field ``f`` (a ``dataclasses.Field``)."""
    return f.metadata.get("label") or f.name.rstrip("s").replace("_", " ")


def check_bounds(config) -> None:
    """Check (and store as int/float) every field of ``config`` that declares ``bounds``; tuple
    fields are checked element by element."""
    for f in fields(config):
        bounds = f.metadata.get("bounds")
        if bounds is None:
            continue
        value = getattr(config, f.name)
        if isinstance(value, (tuple, list)):
            checked: Any = tuple(bounds.check(field_label(f), v) for v in value)
        else:
            checked = bounds.check(field_label(f), value)
        object.__setattr__(config, f.name, checked)


RATIO = Bounds(0, 1, hi_open=True, interval="[0, 1)")
RATIO_OFF_OR_UP_TO_1 = Bounds(0, 1, interval="(0, 1] (0 disables)")
BATCH = Bounds(1, MAX_BATCH_SIZE, integer=True)
THREADS = Bounds(0, MAX_THREADS, integer=True)
ITERS = Bounds(1, MAX_ITERS, integer=True)
WARMUP_ITERS = Bounds(0, MAX_ITERS, integer=True)
DURATION = Bounds(0, MAX_DURATION_S, unit="s")
EVAL_SAMPLES = Bounds(0, MAX_SAMPLES, integer=True)
CALIB_SAMPLES = Bounds(1, MAX_SAMPLES, integer=True)
EPOCHS = Bounds(0, MAX_EPOCHS, integer=True)


#: The name a shape override without an input name is parsed with (``--input 1x3x224x224``): it
#: applies to the model's only input.
UNNAMED_INPUT = "<input>"


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape (ints, or strings for symbolic dims), numpy dtype and batch axis.

    ``batch_axis`` is the dim that holds the samples of a batch (``concrete(batch_size)`` writes
    the batch size there), or None for an input without one (a scalar sample rate, a fixed
    state): such an input is fed as given whatever the batch size. It is dim 0 unless the model's
    loader finds another (a state ``[2, batch, 128]`` has batch axis 1) or the user gives one
    (``--batch-axis state:1``); a scalar has none.
    """

    name: str = _help("input name as the model declares it")
    shape: tuple[Dim, ...] = _help("shape; strings or -1 mark dynamic dims", default=())
    dtype: str = _help("numpy dtype name", default="float32")
    batch_axis: int | None = _help("the dim holding the batch (None: fed as given)", default=0)
    #: False for an override that named no dtype (``ids:1x16``): it keeps the model's declared dtype
    dtype_given: bool = field(default=True, compare=False, repr=False)

    def __post_init__(self):
        if not self.name:
            raise ConfigError("input name must not be empty")
        shape = tuple(
            d if isinstance(d, str) else (int(d) if d is not None and int(d) >= 0 else "?")
            for d in self.shape
        )
        object.__setattr__(self, "shape", shape)
        one_of(f"dtype of input {self.name!r}", self.dtype, DTYPES)
        axis = self.batch_axis
        if not shape:
            axis = None  # a scalar has no batch axis
        elif axis is not None:
            if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
                raise ConfigError(f"batch axis of input {self.name!r} must be a dim number or none; got {axis!r}")
            if not -len(shape) <= int(axis) < len(shape):
                raise ConfigError(f"batch axis of input {self.name!r} must be a dim of its shape "
                                  f"{'x'.join(map(str, shape))} (0..{len(shape) - 1}) or none; got {axis}")
            axis = int(axis) % len(shape)
        object.__setattr__(self, "batch_axis", axis)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def dynamic_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]

    @property
    def batch_dim(self) -> Dim | None:
        """The dim at the batch axis (a number when the model fixes it), None without a batch axis."""
        return None if self.batch_axis is None else self.shape[self.batch_axis]

    def concrete(self, batch_size: int | None = None) -> tuple[int, ...]:
        """Concrete shape; the batch axis becomes ``batch_size`` when given (an input without a batch
        axis keeps its shape). Other dynamic dims are an error."""
        shape = list(self.shape)
        if batch_size is not None and self.batch_axis is not None:
            shape[self.batch_axis] = int(batch_size)
        missing = [i for i, d in enumerate(shape) if not isinstance(d, int)]
        if missing:
            dims = ", ".join(f"dim {i} ({shape[i]})" for i in missing)
            example = "x".join(str(d) if isinstance(d, int) else "N" if i == self.batch_axis else f"<{d}>"
                               for i, d in enumerate(self.shape))
            raise ConfigError(
                f"input {self.name!r} has dynamic {dims} without a value; give one with "
                f"--input {self.name}:{example} (a number for each <dim>)"
            )
        return tuple(int(d) for d in shape)

    def with_shape(self, shape, dtype: str | None = None) -> "InputSpec":
        """A copy with another shape (and dtype); the batch axis stays where the rank allows."""
        shape = tuple(shape)
        axis = self.batch_axis if len(shape) == len(self.shape) else (0 if shape else None)
        return InputSpec(self.name, shape, dtype or self.dtype, axis)

    def with_batch_axis(self, axis: int | None) -> "InputSpec":
        return InputSpec(self.name, self.shape, self.dtype, axis)

    def describe(self) -> str:
        text = f"{self.name}: {'x'.join(str(d) for d in self.shape) or 'scalar'} {self.dtype}"
        if self.shape and self.batch_axis != 0:
            text += " (no batch axis)" if self.batch_axis is None else f" (batch axis {self.batch_axis})"
        return text

    _SHAPE = re.compile(r"^[0-9A-Za-z_?,-]+(x[0-9A-Za-z_?,-]+)*$|^$")
    _NAMELESS = re.compile(r"^[0-9]+(x[0-9]+)*$")
    _DTYPE = re.compile(r"^(u?int|float|bfloat|bool|complex|double|half)\d*$")

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """Parse ``name:1x3x32x32[:float32]`` (``N``/``?`` or a word for a dynamic dim). Without a
        dtype the override keeps the model's declared one (float32 where the model declares none).

        Parsed from the right, so names that contain ``:`` (``input:0``) work. A shape of numbers
        without a name (``1x3x224x224[:float32]``) is named :data:`UNNAMED_INPUT`: it applies to a
        single-input model's input.
        """
        parts = text.strip().split(":")
        if cls._NAMELESS.match(parts[0]) and (len(parts) == 1 or (len(parts) == 2 and cls._DTYPE.match(parts[1]))):
            dims = tuple(int(t) for t in parts[0].split("x"))
            return cls(UNNAMED_INPUT, dims, parts[1] if len(parts) == 2 else "float32", dtype_given=len(parts) == 2)
        dtype, given = "float32", False
        if len(parts) >= 3 and (cls._DTYPE.match(parts[-1]) or not cls._SHAPE.match(parts[-1])):
            dtype, given = parts.pop(), True
        if len(parts) < 2 or not parts[0] or not cls._SHAPE.match(parts[-1]):
            raise ConfigError(f"input override {text!r} is not of the form name:1x3x32x32[:float32]")
        raw = parts.pop()
        name = ":".join(parts)
        dims: list[Dim] = []
        for tok in filter(None, re.split(r"[x,]", raw)):
            dims.append(int(tok) if tok.lstrip("-").isdigit() else tok)
        return cls(name, tuple(dims), dtype, dtype_given=given)


def parse_batch_axis(text: str) -> tuple[str, int | None]:
    """Parse a batch-axis setting ``NAME:AXIS`` or ``NAME:none`` (``AXIS`` / ``none`` alone for a
    single-input model: the name is then :data:`UNNAMED_INPUT`). Returns (name, axis or None)."""
    raw = str(text).strip()
    name, sep, value = raw.rpartition(":")
    if not sep:
        name = UNNAMED_INPUT
    value = value.strip().lower()
    if not name or not (value.isdigit() or value in ("none", "-")):
        raise ConfigError(f"batch axis {text!r} is not of the form NAME:AXIS or NAME:none (e.g. state:1, sr:none)")
    return name, (None if value in ("none", "-") else int(value))


@dataclass(frozen=True)
class OutputSpec:
    """One model output as declared by the model (shape may hold symbolic dims)."""

    name: str
    shape: tuple[Dim, ...] = ()
    dtype: str = "float32"

    def describe(self) -> str:
        return f"{self.name}: {'x'.join(str(d) for d in self.shape) or '?'} {self.dtype}"


@dataclass(frozen=True)
class CompressionConfig:
    """How to build one variant: a precision, an optional pruning step, low-rank, distillation."""

    precision: str = _help("numeric precision: " + ", ".join(PRECISIONS), default="fp32")
    prune_ratio: float = _help("fraction of weights (unstructured) or channels (structured) to remove, in [0, 1)",
                               label="prune ratio", bounds=RATIO, default=0.0)
    prune_kind: str = _help("unstructured (zeros, no dense speedup) or structured (removes channels)", default="structured")
    prune_scope: str = _help("unstructured pruning: 'global' ranks all weights together, 'layer' prunes each layer by the ratio", default="global")
    prune_importance: str = _help("structured pruning importance: l1, l2 or bn-scale", default="l2")
    lowrank_ratio: float = _help("low-rank: kept rank as a fraction of full rank, in (0, 1]; 0 disables",
                                 label="low-rank ratio", bounds=RATIO_OFF_OR_UP_TO_1, default=0.0)
    lowrank_energy: float = _help("low-rank: keep the smallest rank holding this share of singular-value energy (0 disables)",
                                  label="low-rank energy", bounds=RATIO_OFF_OR_UP_TO_1, default=0.0)
    distill: bool = _help("fine-tune the pruned/decomposed student against the original (teacher)", default=False)
    distill_epochs: int = _help("distillation epochs", label="distillation epochs", bounds=EPOCHS, default=3)
    distill_temperature: float = _help("distillation softmax temperature", label="distillation temperature",
                                       bounds=Bounds(0, MAX_TEMPERATURE, lo_open=True), default=4.0)
    distill_alpha: float = _help("weight of the KL term (1 - alpha weighs the hard-label loss)", label="distillation alpha",
                                 bounds=Bounds(0, 1, interval="[0, 1]"), default=0.7)
    calib_method: str = _help("INT8 static calibration: minmax, entropy or percentile", default="minmax")
    calib_percentile: float = _help("percentile for percentile calibration", label="calibration percentile",
                                    bounds=Bounds(0, 100, lo_open=True, interval="(0, 100]"), default=99.999)
    calib_samples: int = _help("number of calibration samples", label="calibration samples", bounds=CALIB_SAMPLES,
                               default=128)
    per_channel: bool = _help("INT8: per-channel weight scales", default=True)
    int8_format: str = _help("INT8 static activation/weight format: measure (time and score the candidates, keep the "
                             "fastest within 0.5 points of the best), auto (chosen from the CPU flags), u8s8 or s8s8",
                             default="measure")
    exclude_layers: tuple[str, ...] = _help("layers/nodes kept in FP32 (mixed precision)", default=())
    mixed_base: str = _help("mixed precision: int8 (INT8 with excluded layers) or fp16/bf16 (with an FP32 block list)", default="int8")

    def __post_init__(self):
        one_of("precision", self.precision, PRECISIONS)
        one_of("prune kind", self.prune_kind, PRUNE_KINDS)
        one_of("prune scope", self.prune_scope, ("global", "layer"))
        one_of("prune importance", self.prune_importance, ("l1", "l2", "bn-scale"))
        one_of("calibration method", self.calib_method, CALIB_METHODS)
        one_of("int8 format", self.int8_format, INT8_FORMATS)
        one_of("mixed base", self.mixed_base, ("int8", "fp16", "bf16"))
        check_bounds(self)
        object.__setattr__(self, "exclude_layers", tuple(self.exclude_layers))

    @property
    def lowrank_applies(self) -> bool:
        """A low-rank step is asked for (by rank ratio or by energy)."""
        return self.lowrank_ratio > 0 or self.lowrank_energy > 0

    @property
    def distill_applies(self) -> bool:
        """Distillation is asked for and has a student to recover: a pruned or decomposed model.
        The one rule for building the step, naming the variant, loading training data and estimates."""
        return bool(self.distill) and (self.prune_ratio > 0 or self.lowrank_applies)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "CompressionConfig":
        """The config a ``dataclasses.asdict`` / JSON copy describes (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in (data or {}).items()})

    @property
    def is_reference(self) -> bool:
        """The uncompressed FP32 model every other variant is compared with."""
        return self.precision == "fp32" and self.prune_ratio == 0 and not self.lowrank_applies

    @property
    def name(self) -> str:
        """A short readable variant name, e.g. ``int8-static[entropy]+prune-s0.5+distill``."""
        parts = [self.precision]
        if self.precision == "int8-static":
            parts[0] += f"[{self.calib_method}]"
        if self.precision == "mixed":
            parts[0] += f"[{self.mixed_base}]"
        if self.prune_ratio > 0:
            parts.append(f"prune-{self.prune_kind[0]}{self.prune_ratio:g}")
        if self.lowrank_ratio > 0:
            parts.append(f"lowrank{self.lowrank_ratio:g}")
        elif self.lowrank_energy > 0:
            parts.append(f"lowrank-e{self.lowrank_energy:g}")
        if self.distill_applies:
            parts.append("distill")
        return "+".join(parts)


@dataclass(frozen=True)
class RunConfig:
    """How to time one variant on one backend: device, batch size, threads, warm-up and duration."""

    backend: str = _help("a registered backend: pytorch, onnxruntime, onnxruntime-trt, tensorrt, torch-tensorrt",
                         default="onnxruntime")
    device: str = _help("cpu or cuda", default="cpu")
    batch_size: int = _help("samples per inference", label="batch size", bounds=BATCH, default=1)
    threads: int = _help("intra-op threads (0 = all cores)", label="threads", bounds=THREADS, default=0)
    warmup_iters: int = _help("warm-up iterations (at least)", label="warm-up iterations", bounds=WARMUP_ITERS, default=5)
    warmup_s: float = _help("warm-up seconds (at least)", label="warm-up duration", bounds=DURATION, default=0.2)
    min_iters: int = _help("timed iterations (at least)", label="min iterations", bounds=ITERS, default=20)
    min_duration_s: float = _help("timed seconds (at least)", label="min duration", bounds=DURATION, default=1.0)
    max_iters: int = _help("timed iterations (at most)", label="max iterations", bounds=ITERS, default=10000)
    eval_samples: int = _help("samples used for accuracy/fidelity (0 = whole dataset)", label="eval samples",
                              bounds=EVAL_SAMPLES, default=512)

    def __post_init__(self):
        one_of("device", self.device, DEVICES)
        check_bounds(self)
        if self.max_iters < self.min_iters:
            raise ConfigError(f"need 1 <= min_iters <= max_iters; got {self.min_iters}, {self.max_iters}")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the cross product precisions x prune ratios x backends x batch sizes for one model.

    Every field is a ``slimbench run`` flag (metadata ``flag``) and a TOML key (the field name or
    the flag's name); list fields take comma lists on the command line.
    """

    model: str = _help("model file (.onnx, .pt, .pt2) or sample:NAME")
    precisions: tuple[str, ...] = _help("precisions to build: " + ", ".join(PRECISIONS),
                                        label="precision", flag="--precision", default=("fp32",))
    prune_ratios: tuple[float, ...] = _help("prune ratios in [0, 1) (0 = unpruned)", label="prune ratio",
                                            bounds=RATIO, flag="--prune", default=(0.0,))
    prune_kind: str = _help(" or ".join(PRUNE_KINDS), label="prune kind", flag="--prune-kind", metavar="KIND",
                            default="structured")
    lowrank_ratio: float = _help("low-rank rank ratio for every variant (0 disables)", label="low-rank ratio",
                                 bounds=RATIO_OFF_OR_UP_TO_1, flag="--lowrank", metavar="RATIO", default=0.0)
    distill: bool = _help("distil pruned/low-rank variants from the original", flag="--distill", default=False)
    distill_epochs: int = _help("distillation epochs", label="distillation epochs", bounds=EPOCHS,
                                flag="--distill-epochs", default=3)
    backends: tuple[str, ...] = _help("backends to run on", label="backend",
                                      flag="--backend", default=("pytorch", "onnxruntime"))
    device: str = _help(" or ".join(DEVICES), flag="--device", metavar="DEVICE", default="cpu")
    batch_sizes: tuple[int, ...] = _help("batch sizes to time", label="batch size", bounds=BATCH,
                                         flag="--batch-size", default=(1,))
    data: str | None = _help("evaluation/calibration data: a built-in dataset or a .npz file "
                             "(default: the model's own dataset, else random inputs)",
                             flag="--data", metavar="NAME|PATH.npz", default=None)
    calib_method: str = _help("INT8 static calibration: " + ", ".join(CALIB_METHODS), label="calibration method",
                              flag="--calib-method", metavar="METHOD", default="minmax")
    calib_samples: int = _help("INT8 static calibration samples", label="calibration samples",
                               bounds=CALIB_SAMPLES, flag="--calib-samples", default=128)
    inputs: tuple[str, ...] = _help("input shape/dtype overrides, NAME:1x3x32x32[:float32] (a bare 1x3x32x32 for a "
                                    "single-input model)", label="input",
                                    flag="--input", metavar="NAME:1x3x32x32[:float32]", repeat=True, default=())
    threads: int = _help("intra-op threads (0 = all cores)", label="threads", bounds=THREADS, flag="--threads",
                         default=0)
    min_duration_s: float = _help("timed seconds per run, at least", label="min duration",
                                  bounds=DURATION, flag="--min-duration", metavar="S", default=1.0)
    min_iters: int = _help("timed iterations per run, at least", label="min iterations", bounds=ITERS,
                           flag="--min-iters", default=20)
    trust_pickle: bool = _help("allow a fully pickled nn.Module (runs code from the file; loaded only inside the job)",
                               label="trust pickle", flag="--trust-pickle", default=False)
    eval_samples: int = _help("samples for accuracy/fidelity (0 = the whole evaluation split)",
                              label="eval samples", bounds=EVAL_SAMPLES, flag="--eval-samples", default=512)
    arch: str | None = _help("built-in architecture of a state_dict file (an unknown name lists the known ones)",
                             flag="--arch", metavar="NAME", default=None)
    cuda_graph: bool = _help("PyTorch on cuda: capture each batch size <= 16 into a CUDA graph and time its replay "
                             "(cuts launch overhead; recorded per row)", label="cuda graph", flag="--cuda-graph",
                             default=False)
    # Batch axes (stateful, sequence and scalar-input models)
    batch_axis: tuple[str, ...] = _help("the batch axis of an input, NAME:AXIS, or NAME:none for an input fed as given "
                                        "(default: found from the model's symbolic dims, else dim 0)",
                                        label="batch axis", flag="--batch-axis", metavar="NAME:AXIS|NAME:none",
                                        repeat=True, default=())
    # Many machines (Ray executor): where the jobs run
    executor: str = _help("where jobs run: local (this machine) or ray (the nodes of a Ray cluster)",
                          flag="--executor", metavar="local|ray", default="local")
    ray_address: str | None = _help("Ray cluster to use with executor ray: HOST:PORT of its head, or auto (the "
                                    "cluster this machine belongs to, or $RAY_ADDRESS)", label="Ray address",
                                    flag="--ray-address", metavar="ADDRESS|auto", default=None)
    targets: tuple[str, ...] = _help("with executor ray: run every variant on every node (all, the default), on a "
                                     "node with a Ray resource (resource=NAME) or on one node (node=ID, a unique "
                                     "prefix of its id)", label="target", flag="--target",
                                     metavar="all|resource=NAME|node=ID", repeat=True, default=())
    # --- quality metric and unstable timings (the dashboard with real models) ---
    metric: str | None = _help("quality metric of every row: " + ", ".join(QUALITY_METRICS) + " (default: chosen from "
                               "the model's first output)", label="quality metric", flag="--metric", metavar="METRIC",
                               default=None)
    output_kind: str | None = _help("what the first output is: " + ", ".join(OUTPUT_KINDS) + " (default: told from "
                                    "its name and shape); decides the default quality metric", label="output kind",
                                    flag="--output-kind", metavar="KIND", default=None)
    timing_attempts: int = _help("timings of a run at most, while its timing is unstable (1 = check only)",
                                 label="timing attempts", bounds=Bounds(1, MAX_TIMING_ATTEMPTS, integer=True),
                                 flag="--timing-attempts", default=3)

    # --- explain the numbers: runtime settings, the INT8 format choice, this CPU's peaks -----------------
    ort_opt_levels: tuple[str, ...] = _help(
        "ONNX Runtime graph optimization levels: " + ", ".join(ORT_OPT_LEVELS) + " (several: each is a variant "
        "named @ort-opt=LEVEL)", label="ONNX Runtime optimization level", flag="--ort-opt", default=("all",))
    ort_inter_op_threads: tuple[int, ...] = _help(
        "ONNX Runtime inter-op threads (used by the parallel execution mode; 0 = ONNX Runtime's default)",
        label="ONNX Runtime inter-op threads", bounds=THREADS, flag="--ort-inter-threads", default=(1,))
    ort_execution_modes: tuple[str, ...] = _help(
        "ONNX Runtime execution modes: sequential or parallel (independent branches at once)",
        label="ONNX Runtime execution mode", flag="--ort-mode", default=("sequential",))
    torch_interop_threads: tuple[int, ...] = _help(
        "PyTorch inter-op threads (0 = PyTorch's default; each value runs in its own job process)",
        label="PyTorch inter-op threads", bounds=THREADS, flag="--torch-interop-threads", default=(0,))
    int8_format: str = _help(
        "INT8 static format: " + ", ".join(INT8_FORMATS) + "; measure times and scores U8S8 / S8S8 (and "
        "reduce_range) on the evaluation data and keeps the fastest within 0.5 points of the best",
        label="int8 format", flag="--int8-format", metavar="FORMAT", default="measure")
    skip_peaks: bool = _help("do not measure this CPU's GEMM peaks and memory bandwidth (once per machine, cached): "
                             "rows then carry no fraction of peak", label="skip peaks", flag="--skip-peaks",
                             default=False)

    def _check_quality_settings(self) -> None:
        """An empty metric or output kind means the default; anything else must be a known name."""
        for name, what, allowed in (("metric", "quality metric", QUALITY_METRICS),
                                    ("output_kind", "output kind", OUTPUT_KINDS)):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                object.__setattr__(self, name, None)
            elif value is not None:
                one_of(what, value, allowed)

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"model must be a model file or sample:NAME; got {self.model!r}")
        for f in fields(self):
            if f.type in ("bool", bool) and not isinstance(getattr(self, f.name), bool):
                raise ConfigError(f"{field_label(f)} must be true or false; got {getattr(self, f.name)!r}")
        if self.cuda_graph and self.device != "cuda":
            raise ConfigError("CUDA graphs apply to device cuda only; choose device cuda or turn cuda_graph off")
        if self.arch is not None and not str(self.arch).strip():
            object.__setattr__(self, "arch", None)
        if self.data is not None and not str(self.data).strip():
            raise ConfigError("data must name a built-in dataset or a .npz file; got an empty string")
        for p in self.precisions:
            one_of("precision", p, PRECISIONS)
        one_of("prune kind", self.prune_kind, PRUNE_KINDS)
        one_of("device", self.device, DEVICES)
        one_of("calibration method", self.calib_method, CALIB_METHODS)
        self._check_runtime_settings()
        if not self.precisions:
            raise ConfigError("choose at least one precision")
        if not self.backends:
            raise ConfigError("choose at least one backend")
        if not self.batch_sizes:
            raise ConfigError("choose at least one batch size")
        for name in ("precisions", "prune_ratios", "backends", "batch_sizes", "inputs", "batch_axis"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for spec in self.inputs:
            InputSpec.parse(spec)
        for text in self.batch_axis:
            parse_batch_axis(text)
        self._check_quality_settings()
        check_bounds(self)
        self._check_executor()

    def _check_executor(self) -> None:
        """Many machines: a known executor, targets normalised, Ray settings only with executor ray."""
        one_of("executor", self.executor, EXECUTORS)
        address = None if self.ray_address is None else str(self.ray_address).strip() or None
        if address is not None and any(c.isspace() for c in address):
            raise ConfigError(f"Ray address must be HOST:PORT or auto; got {self.ray_address!r}")
        object.__setattr__(self, "ray_address", address)
        object.__setattr__(self, "targets", tuple(dict.fromkeys(parse_target(t) for t in self.targets)))
        if self.executor != "ray" and (self.targets or self.ray_address):
            raise ConfigError("targets and a Ray address need executor ray; add --executor ray")

    def _check_runtime_settings(self) -> None:
        """Runtime settings (lists, each value once) and the INT8 format."""
        for name, allowed in (("ort_opt_levels", ORT_OPT_LEVELS), ("ort_execution_modes", ORT_EXECUTION_MODES),
                              ("ort_inter_op_threads", None), ("torch_interop_threads", None)):
            values = tuple(getattr(self, name))
            label = field_label(next(f for f in fields(self) if f.name == name))
            if not values:
                raise ConfigError(f"choose at least one {label}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{label} lists a value twice: {', '.join(map(str, values))}")
            for v in values:
                if allowed is not None:
                    one_of(label, v, allowed)
            object.__setattr__(self, name, values)
        one_of("int8 format", self.int8_format, INT8_FORMATS)

    def compressions(self) -> list[CompressionConfig]:
        """One CompressionConfig per (prune ratio, low-rank ratio, precision), uncompressed first.

        Low-rank is an extra point, like a prune ratio: with ``lowrank_ratio`` set the sweep holds
        both the full-rank and the decomposed variants, so every variant keeps its FP32 baseline.
        """
        out = []
        lowranks = (0.0, float(self.lowrank_ratio)) if self.lowrank_ratio > 0 else (0.0,)
        for ratio in self.prune_ratios:
            for lowrank in lowranks:
                for p in self.precisions:
                    out.append(CompressionConfig(
                        precision=p, prune_ratio=float(ratio), prune_kind=self.prune_kind,
                        lowrank_ratio=lowrank, distill=self.distill,
                        distill_epochs=self.distill_epochs, calib_method=self.calib_method,
                        calib_samples=self.calib_samples, int8_format=self.int8_format,
                    ))
        return out

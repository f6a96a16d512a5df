"""Frozen, validated configuration objects.

Every config is a frozen dataclass validated in ``__post_init__``; a bad value raises
``ConfigError`` naming the allowed values. ``field(metadata={"help": ...})`` text feeds the
CLI's ``--help`` and the dashboard widgets' ``help=``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError
from .registry import one_of

#: Input dtypes Slimbench can feed (numpy names).
DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool")
#: Precisions a sweep may ask for.
PRECISIONS = ("fp32", "fp16", "bf16", "int8-dynamic", "int8-static", "mixed")
PRUNE_KINDS = ("unstructured", "structured")
CALIB_METHODS = ("minmax", "entropy", "percentile")
DEVICES = ("cpu", "cuda")

Dim = int | str


def _help(text: str, **kw) -> Any:
    return field(metadata={"help": text}, **kw)


def help_text(cls, name: str) -> str:
    """The help text of field ``name`` of config class ``cls`` (for widgets and --help)."""
    for f in fields(cls):
        if f.name == name:
            return f.metadata.get("help", "")
    raise KeyError(name)


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, shape (ints, or strings for symbolic dims) and numpy dtype."""

    name: str = _help("input name as the model declares it")
    shape: tuple[Dim, ...] = _help("shape; strings or -1 mark dynamic dims", default=())
    dtype: str = _help("numpy dtype name", default="float32")

    def __post_init__(self):
        if not self.name:
            raise ConfigError("input name must not be empty")
        shape = tuple(
            d if isinstance(d, str) else (int(d) if d is not None and int(d) >= 0 else "?")
            for d in self.shape
        )
        object.__setattr__(self, "shape", shape)
        one_of(f"dtype of input {self.name!r}", self.dtype, DTYPES)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def dynamic_dims(self) -> list[int]:
        return [i for i, d in enumerate(self.shape) if not isinstance(d, int)]

    def concrete(self, batch_size: int | None = None) -> tuple[int, ...]:
        """Concrete shape; dim 0 becomes ``batch_size`` when given. Other dynamic dims are an error."""
        shape = list(self.shape)
        if batch_size is not None and shape:
            shape[0] = int(batch_size)
        missing = [i for i, d in enumerate(shape) if not isinstance(d, int)]
        if missing:
            dims = ", ".join(f"dim {i} ({shape[i]})" for i in missing)
            raise ConfigError(
                f"input {self.name!r} has dynamic {dims} without a value; give one with "
                f"--input {self.name}:{'x'.join(str(d) if isinstance(d, int) else 'N' for d in shape)}"
            )
        return tuple(int(d) for d in shape)

    def with_shape(self, shape, dtype: str | None = None) -> "InputSpec":
        return InputSpec(self.name, tuple(shape), dtype or self.dtype)

    def describe(self) -> str:
        return f"{self.name}: {'x'.join(str(d) for d in self.shape) or 'scalar'} {self.dtype}"

    _SHAPE = re.compile(r"^[0-9A-Za-z_?,-]+(x[0-9A-Za-z_?,-]+)*$|^$")

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """Parse ``name:1x3x32x32[:float32]`` (``N``/``?`` or a word for a dynamic dim).

        Parsed from the right, so names that contain ``:`` (``input:0``) work.
        """
        parts = text.strip().split(":")
        dtype = "float32"
        looks_like_dtype = re.match(r"^(u?int|float|bfloat|bool|complex|double|half)\d*$", parts[-1])
        if len(parts) >= 3 and (looks_like_dtype or not cls._SHAPE.match(parts[-1])):
            dtype = parts.pop()
        if len(parts) < 2 or not parts[0] or not cls._SHAPE.match(parts[-1]):
            raise ConfigError(f"input override {text!r} is not of the form name:1x3x32x32[:float32]")
        raw = parts.pop()
        name = ":".join(parts)
        dims: list[Dim] = []
        for tok in filter(None, re.split(r"[x,]", raw)):
            dims.append(int(tok) if tok.lstrip("-").isdigit() else tok)
        return cls(name, tuple(dims), dtype)


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
    prune_ratio: float = _help("fraction of weights (unstructured) or channels (structured) to remove, in [0, 1)", default=0.0)
    prune_kind: str = _help("unstructured (zeros, no dense speedup) or structured (removes channels)", default="structured")
    prune_scope: str = _help("unstructured pruning: 'global' ranks all weights together, 'layer' prunes each layer by the ratio", default="global")
    prune_importance: str = _help("structured pruning importance: l1, l2 or bn-scale", default="l2")
    lowrank_ratio: float = _help("low-rank: kept rank as a fraction of full rank, in (0, 1]; 0 disables", default=0.0)
    lowrank_energy: float = _help("low-rank: keep the smallest rank holding this share of singular-value energy (0 disables)", default=0.0)
    distill: bool = _help("fine-tune the pruned/decomposed student against the original (teacher)", default=False)
    distill_epochs: int = _help("distillation epochs", default=3)
    distill_temperature: float = _help("distillation softmax temperature", default=4.0)
    distill_alpha: float = _help("weight of the KL term (1 - alpha weighs the hard-label loss)", default=0.7)
    calib_method: str = _help("INT8 static calibration: minmax, entropy or percentile", default="minmax")
    calib_percentile: float = _help("percentile for percentile calibration", default=99.999)
    calib_samples: int = _help("number of calibration samples", default=128)
    per_channel: bool = _help("INT8: per-channel weight scales", default=True)
    int8_format: str = _help("INT8 static activation/weight format: auto (chosen from the CPU), u8s8 or s8s8", default="auto")
    exclude_layers: tuple[str, ...] = _help("layers/nodes kept in FP32 (mixed precision)", default=())
    mixed_base: str = _help("mixed precision: int8 (INT8 with excluded layers) or fp16/bf16 (with an FP32 block list)", default="int8")

    def __post_init__(self):
        one_of("precision", self.precision, PRECISIONS)
        one_of("prune kind", self.prune_kind, PRUNE_KINDS)
        one_of("prune scope", self.prune_scope, ("global", "layer"))
        one_of("prune importance", self.prune_importance, ("l1", "l2", "bn-scale"))
        one_of("calibration method", self.calib_method, CALIB_METHODS)
        one_of("int8 format", self.int8_format, ("auto", "u8s8", "s8s8"))
        one_of("mixed base", self.mixed_base, ("int8", "fp16", "bf16"))
        if not 0.0 <= float(self.prune_ratio) < 1.0:
            raise ConfigError(f"prune ratio must be in [0, 1); got {self.prune_ratio}")
        if not 0.0 <= float(self.lowrank_ratio) <= 1.0:
            raise ConfigError(f"low-rank ratio must be in (0, 1] (0 disables); got {self.lowrank_ratio}")
        if not 0.0 <= float(self.lowrank_energy) <= 1.0:
            raise ConfigError(f"low-rank energy must be in (0, 1] (0 disables); got {self.lowrank_energy}")
        if int(self.calib_samples) < 1:
            raise ConfigError(f"calibration samples must be >= 1; got {self.calib_samples}")
        if not 0.0 < float(self.calib_percentile) <= 100.0:
            raise ConfigError(f"calibration percentile must be in (0, 100]; got {self.calib_percentile}")
        if int(self.distill_epochs) < 0:
            raise ConfigError(f"distillation epochs must be >= 0; got {self.distill_epochs}")
        object.__setattr__(self, "exclude_layers", tuple(self.exclude_layers))

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
        if self.distill and (self.prune_ratio > 0 or self.lowrank_ratio > 0 or self.lowrank_energy > 0):
            parts.append("distill")
        return "+".join(parts)


@dataclass(frozen=True)
class RunConfig:
    """How to time one variant on one backend: device, batch size, threads, warm-up and duration."""

    backend: str = _help("a registered backend: pytorch, onnxruntime, onnxruntime-trt, tensorrt, torch-tensorrt",
                         default="onnxruntime")
    device: str = _help("cpu or cuda", default="cpu")
    batch_size: int = _help("samples per inference", default=1)
    threads: int = _help("intra-op threads (0 = all cores)", default=0)
    warmup_iters: int = _help("warm-up iterations (at least)", default=5)
    warmup_s: float = _help("warm-up seconds (at least)", default=0.2)
    min_iters: int = _help("timed iterations (at least)", default=20)
    min_duration_s: float = _help("timed seconds (at least)", default=1.0)
    max_iters: int = _help("timed iterations (at most)", default=10000)
    eval_samples: int = _help("samples used for accuracy/fidelity (0 = whole dataset)", default=512)

    def __post_init__(self):
        one_of("device", self.device, DEVICES)
        if int(self.batch_size) < 1:
            raise ConfigError(f"batch size must be >= 1; got {self.batch_size}")
        if int(self.threads) < 0:
            raise ConfigError(f"threads must be >= 0; got {self.threads}")
        if int(self.min_iters) < 1 or int(self.max_iters) < int(self.min_iters):
            raise ConfigError(f"need 1 <= min_iters <= max_iters; got {self.min_iters}, {self.max_iters}")
        if float(self.min_duration_s) < 0 or float(self.warmup_s) < 0 or int(self.warmup_iters) < 0:
            raise ConfigError("warm-up and duration settings must be >= 0")
        if int(self.eval_samples) < 0:
            raise ConfigError(f"eval samples must be >= 0; got {self.eval_samples}")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep: the cross product precisions x prune ratios x backends x batch sizes for one model."""

    model: str = _help("model path or sample:NAME")
    precisions: tuple[str, ...] = _help("precisions to build", default=("fp32",))
    prune_ratios: tuple[float, ...] = _help("pruning ratios (0 = unpruned)", default=(0.0,))
    prune_kind: str = _help("unstructured or structured", default="structured")
    lowrank_ratio: float = _help("low-rank rank ratio (0 disables)", default=0.0)
    distill: bool = _help("distil pruned/decomposed variants from the original", default=False)
    distill_epochs: int = _help("distillation epochs", default=3)
    backends: tuple[str, ...] = _help("backends to run on", default=("pytorch", "onnxruntime"))
    device: str = _help("cpu or cuda", default="cpu")
    batch_sizes: tuple[int, ...] = _help("batch sizes to time", default=(1,))
    data: str | None = _help("dataset: built-in name or path to .npz (default: the sample's own)", default=None)
    calib_method: str = _help("INT8 static calibration method", default="minmax")
    calib_samples: int = _help("INT8 static calibration samples", default=128)
    inputs: tuple[str, ...] = _help("input overrides name:1x3x32x32[:float32]", default=())
    threads: int = _help("intra-op threads (0 = all cores)", default=0)
    min_duration_s: float = _help("timed seconds per run (at least)", default=1.0)
    min_iters: int = _help("timed iterations per run (at least)", default=20)
    trust_pickle: bool = _help("allow loading a fully pickled nn.Module (executes code from the file)", default=False)
    eval_samples: int = _help("samples used for accuracy/fidelity (0 = the whole evaluation split)", default=512)
    arch: str | None = _help("built-in architecture of a state_dict file (the file holds weights only)", default=None)
    cuda_graph: bool = _help("PyTorch on cuda: capture each batch size <= 16 into a CUDA graph and time its replay "
                             "(cuts launch overhead; recorded per row)", default=False)

    def __post_init__(self):
        if self.cuda_graph and self.device != "cuda":
            raise ConfigError("CUDA graphs apply to device cuda only; choose device cuda or turn cuda_graph off")
        if int(self.eval_samples) < 0:
            raise ConfigError(f"eval samples must be >= 0; got {self.eval_samples}")
        if self.arch is not None and not str(self.arch).strip():
            object.__setattr__(self, "arch", None)
        for p in self.precisions:
            one_of("precision", p, PRECISIONS)
        one_of("prune kind", self.prune_kind, PRUNE_KINDS)
        one_of("device", self.device, DEVICES)
        one_of("calibration method", self.calib_method, CALIB_METHODS)
        if not self.precisions:
            raise ConfigError("choose at least one precision")
        if not self.backends:
            raise ConfigError("choose at least one backend")
        if not self.batch_sizes:
            raise ConfigError("choose at least one batch size")
        for r in self.prune_ratios:
            if not 0.0 <= float(r) < 1.0:
                raise ConfigError(f"prune ratio must be in [0, 1); got {r}")
        for b in self.batch_sizes:
            if int(b) < 1:
                raise ConfigError(f"batch size must be >= 1; got {b}")
        for name in ("precisions", "prune_ratios", "backends", "batch_sizes", "inputs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

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
                        calib_samples=self.calib_samples,
                    ))
        return out

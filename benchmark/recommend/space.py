"""The search space of ``slimbench recommend``: a registry of axes, and the candidates they make.

A :class:`Candidate` is one configuration: a :class:`~benchmark.config.CompressionConfig` (what is
built), a backend (where it runs) and runtime settings (how the session runs: threads, ONNX
Runtime's graph optimization level). Its :attr:`Candidate.name` is the result row's variant name
and holds every setting that varies inside one search (INT8 calibration and format, the number of
layers kept float, runtime settings), so no two candidates share a row key
(``variant | backend | batch``).

Axes (:data:`AXES`, one :class:`Axis` each; :func:`register_axis` plugs in more):

==========================  =======  ==================================================================
axis                        kind     values (the first is the default)
==========================  =======  ==================================================================
precision                   build    fp32, fp16, bf16, int8-dynamic, int8-static
calib_method                build    minmax, percentile, entropy (static INT8)
int8_format                 build    the format this CPU prefers (u8s8 with VNNI), then the other one
keep_float                  build    1, 2, 4: most INT8-sensitive layers kept float (mixed precision)
prune                       build    0, 0.25, 0.5, 0.75 (structured: channels removed)
lowrank                     build    0, 0.5 (kept rank fraction)
distill                     build    off, on (pruned / low-rank students fine-tuned on the train split)
threads                     runtime  0 (all cores), 1
graph_optimization_level    runtime  all, extended, basic (ONNX Runtime backends)
==========================  =======  ==================================================================

How the search uses them (:mod:`benchmark.recommend.search`): axes of stage ``single`` are tried one
value at a time from their anchor (FP32, or static INT8 for the calibration and format axes), on
every backend; axes of stage ``greedy`` (``keep_float``, ``distill``) are tried only where quality
asks for them (INT8 over the budget: keep the most sensitive layers float; a pruned or low-rank
model over the budget: distil it); winners are then combined (a structural step with a precision,
runtime settings on the best builds). ``--axis NAME=V1,V2`` restricts an axis to those values
(``--axis prune=0`` turns pruning off).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from ..config import RATIO, CompressionConfig
from ..errors import ConfigError
from ..registry import Registry

#: Backends a CPU search tries by default (those that are available), and on CUDA.
DEFAULT_BACKENDS = {"cpu": ("onnxruntime", "pytorch"), "cuda": ("onnxruntime", "pytorch", "tensorrt")}
#: Backends that take ONNX Runtime session options.
ORT_BACKENDS = ("onnxruntime", "onnxruntime-trt")
#: Runtime settings a candidate leaves at these values carry no tag in its name.
RUNTIME_DEFAULTS: dict[str, Any] = {"threads": 0, "graph_optimization_level": "all"}


@dataclass(frozen=True)
class Candidate:
    """One configuration the search can measure (see the module docstring)."""

    compression: CompressionConfig = field(default_factory=CompressionConfig)
    backend: str = "onnxruntime"
    runtime: tuple[tuple[str, Any], ...] = ()

    @property
    def settings(self) -> dict[str, Any]:
        """Runtime settings, defaults included."""
        return {**RUNTIME_DEFAULTS, **dict(self.runtime)}

    @property
    def threads(self) -> int:
        return int(self.settings["threads"])

    def session_options(self) -> dict[str, Any] | None:
        """The backend's ``prepare`` options for these settings (threads are passed on their own)."""
        opts = {k: v for k, v in dict(self.runtime).items() if k != "threads"}
        return opts or None

    @property
    def build_name(self) -> str:
        """The built model's name: every build setting, no runtime setting."""
        return compression_name(self.compression)

    @property
    def name(self) -> str:
        """The row's variant name: :attr:`build_name` plus runtime tags (``@t1``, ``@opt-basic``)."""
        tags = []
        for key, value in sorted(self.runtime):
            if key == "threads":
                tags.append(f"@t{int(value)}")
            elif key == "graph_optimization_level":
                tags.append(f"@opt-{value}")
            else:
                tags.append(f"@{key}-{value}")
        return self.build_name + "".join(tags)

    @property
    def key(self) -> str:
        """``name|backend``: one candidate of the search (its outcome's key)."""
        return f"{self.name}|{self.backend}"

    @property
    def family(self) -> str:
        """What kind of change this is, for "why each family lost" (e.g. ``prune 0.5 + distill``)."""
        return family_of(self.compression, self.runtime)

    @property
    def is_reference(self) -> bool:
        """The uncompressed FP32 model with default runtime settings (the baseline of its backend)."""
        return self.compression.is_reference and not self.runtime and not self.compression.distill_applies

    def with_runtime(self, key: str, value: Any) -> "Candidate":
        rest = {k: v for k, v in self.runtime if k != key}
        if value != RUNTIME_DEFAULTS.get(key):
            rest[key] = value
        return dataclasses.replace(self, runtime=tuple(sorted(rest.items())))

    def with_compression(self, **changes: Any) -> "Candidate":
        return dataclasses.replace(self, compression=dataclasses.replace(self.compression, **changes))


def _precision_part(c: CompressionConfig) -> str:
    if c.precision == "int8-static":
        return f"int8-static[{c.calib_method},{c.int8_format}]"
    if c.precision == "mixed":
        inner = f"int8,{c.calib_method},{c.int8_format}" if c.mixed_base == "int8" else c.mixed_base
        return f"mixed[{inner},keep{len(c.exclude_layers)}]"
    return c.precision


def _structure(c: CompressionConfig) -> list[tuple[str, str]]:
    """(name part, family part) of each structural step of ``c``: pruning, low-rank, distillation."""
    steps = []
    if c.prune_ratio > 0:
        steps.append((f"prune-{c.prune_kind[0]}{c.prune_ratio:g}", f"prune {c.prune_ratio:g}"))
    if c.lowrank_ratio > 0:
        steps.append((f"lowrank{c.lowrank_ratio:g}", f"low-rank {c.lowrank_ratio:g}"))
    if c.distill_applies:
        steps.append((f"distill{int(c.distill_epochs)}", "distill"))
    return steps


def compression_name(c: CompressionConfig) -> str:
    """A variant name for ``c`` that names every build setting the search varies."""
    return "+".join([_precision_part(c)] + [name for name, _ in _structure(c)])


_RUNTIME_WORDS = {"threads": lambda v: f"{int(v)} thread{'s' if int(v) != 1 else ''}",
                  "graph_optimization_level": lambda v: f"ORT optimization {v}"}


def family_of(c: CompressionConfig, runtime: tuple[tuple[str, Any], ...] = ()) -> str:
    """``prune 0.5 + distill + int8-static``, ``fp32 @ 1 thread``, ``mixed INT8 (layers kept float)``."""
    parts = [family for _, family in _structure(c)]
    if c.precision == "mixed":
        parts.append("mixed INT8 (layers kept float)")
    elif c.precision != "fp32" or not parts:
        parts.append(c.precision)
    words = [_RUNTIME_WORDS.get(k, lambda v, k=k: f"{k} {v}")(v) for k, v in sorted(runtime)]
    return " + ".join(parts) + "".join(f" @ {w}" for w in words)


# --------------------------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceContext:
    """What the offered values depend on: the machine, the backends, the model's data."""

    device: str = "cpu"
    backends: tuple[str, ...] = ("onnxruntime",)
    cores: int = 1
    int8_formats: tuple[str, ...] = ("u8s8", "s8s8")  # this CPU's preferred format first
    has_train_data: bool = True
    overrides: dict[str, tuple] = field(default_factory=dict)


@dataclass(frozen=True)
class Axis:
    """One setting the search varies. ``offered(ctx)``: its values here (the first is the default);
    ``apply(space, candidate, value)``: the candidate with that value, or None where the axis does not
    apply (e.g. a calibration method on an FP32 model); ``anchor``: the candidate compression the
    ``single`` stage varies it from (``fp32`` or ``int8``); ``parse``: a value from ``--axis`` text."""

    name: str
    help: str
    kind: str  # build | runtime
    stage: str  # single | greedy
    offered: Callable[[SpaceContext], tuple]
    apply: Callable[["Space", Candidate, Any], "Candidate | None"]
    parse: Callable[[str], Any]
    anchor: str = "fp32"


AXES: Registry[Axis] = Registry("search axis")


def register_axis(axis: Axis, replace: bool = False) -> Axis:
    AXES.register(axis.name, axis, replace=replace)
    return axis


def _ratio(text: str) -> float:
    return RATIO.check("a ratio", float(text))


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("on", "true", "yes", "1"):
        return True
    if low in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"expected on or off; got {text!r}")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ConfigError(f"expected a count >= 0; got {text}")
    return value


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in allowed:
            raise ConfigError(f"expected one of {', '.join(allowed)}; got {text!r}")
        return text

    return parse


def _set_precision(space: "Space", cand: Candidate, value: str) -> Candidate | None:
    if value == "int8-static":
        return cand.with_compression(precision=value, int8_format=space.default("int8_format"),
                                     calib_method=space.default("calib_method"))
    return cand.with_compression(precision=value)


def _on_static(field_name: str) -> Callable[["Space", Candidate, Any], "Candidate | None"]:
    def apply(space: "Space", cand: Candidate, value: Any) -> Candidate | None:
        if cand.compression.precision not in ("int8-static", "mixed"):
            return None
        return cand.with_compression(**{field_name: value})

    return apply


def _set_keep_float(space: "Space", cand: Candidate, value: Any) -> Candidate | None:
    return None  # needs the sensitivity ranking: the search builds these (mixed_candidate)


def _set_structure(field_name: str) -> Callable[["Space", Candidate, Any], "Candidate | None"]:
    def apply(space: "Space", cand: Candidate, value: Any) -> Candidate | None:
        changes: dict[str, Any] = {field_name: float(value)}
        if field_name == "prune_ratio":
            changes["prune_kind"] = "structured"
        return cand.with_compression(**changes)

    return apply


def _set_distill(space: "Space", cand: Candidate, value: Any) -> Candidate | None:
    c = cand.compression
    if not (c.prune_ratio > 0 or c.lowrank_applies):
        return None
    return cand.with_compression(distill=bool(value))


def _set_runtime(key: str, backends: tuple[str, ...] | None = None):
    def apply(space: "Space", cand: Candidate, value: Any) -> Candidate | None:
        if backends is not None and cand.backend not in backends:
            return None
        return cand.with_runtime(key, value)

    return apply


def _threads(ctx: SpaceContext) -> tuple:
    return (0, 1) if ctx.device == "cpu" and ctx.cores > 1 else (0,)


for _axis in (
    Axis("precision", "numeric precision of the model", "build", "single",
         lambda ctx: ("fp32", "fp16", "bf16", "int8-dynamic", "int8-static"), _set_precision,
         _choice(("fp32", "fp16", "bf16", "int8-dynamic", "int8-static"))),
    Axis("calib_method", "static INT8 calibration method", "build", "single",
         lambda ctx: ("minmax", "percentile", "entropy"), _on_static("calib_method"),
         _choice(("minmax", "percentile", "entropy")), anchor="int8"),
    Axis("int8_format", "static INT8 format: u8s8 (uint8 activations) or s8s8", "build", "single",
         lambda ctx: tuple(ctx.int8_formats), _on_static("int8_format"), _choice(("u8s8", "s8s8")), anchor="int8"),
    Axis("keep_float", "INT8 over the budget: keep this many most-sensitive layers float (mixed precision); "
         "0 turns it off", "build", "greedy", lambda ctx: (1, 2, 4), _set_keep_float, _count),
    Axis("prune", "structured prune ratio (share of channels removed)", "build", "single",
         lambda ctx: (0.0, 0.25, 0.5, 0.75), _set_structure("prune_ratio"), _ratio),
    Axis("lowrank", "low-rank: kept rank fraction (0 = off)", "build", "single",
         lambda ctx: (0.0, 0.5), _set_structure("lowrank_ratio"), _ratio),
    Axis("distill", "distil pruned / low-rank models that miss the quality budget (on/off)", "build", "greedy",
         lambda ctx: (False, True) if ctx.has_train_data else (False,), _set_distill, _bool),
    Axis("threads", "intra-op threads (0 = all cores)", "runtime", "single", _threads, _set_runtime("threads"),
         _count),
    Axis("graph_optimization_level", "ONNX Runtime graph optimization level", "runtime", "single",
         lambda ctx: ("all", "extended", "basic"),
         _set_runtime("graph_optimization_level", ORT_BACKENDS),
         _choice(("all", "extended", "basic", "disable"))),
):
    register_axis(_axis)


def parse_axis_overrides(items: list[str] | tuple[str, ...] | None) -> dict[str, tuple]:
    """``["prune=0,0.5", "precision=fp32,int8-static"]`` -> ``{"prune": (0.0, 0.5), ...}``."""
    out: dict[str, tuple] = {}
    for item in items or ():
        name, sep, values = str(item).partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ConfigError(f"--axis {item!r} is not NAME=V1,V2 (axes: {', '.join(AXES.names())})")
        axis = AXES.get(name)
        parsed = []
        for text in values.split(","):
            try:
                parsed.append(axis.parse(text.strip()))
            except (ConfigError, ValueError) as exc:
                raise ConfigError(f"--axis {name}: {exc}") from None
        out[name] = tuple(dict.fromkeys(parsed))
    return out


class Space:
    """The axes' values for one search (offered values, restricted by ``--axis`` overrides)."""

    def __init__(self, ctx: SpaceContext):
        self.ctx = ctx
        self.values: dict[str, tuple] = {}
        for name in AXES:
            axis = AXES.get(name)
            offered = tuple(axis.offered(ctx))
            self.values[name] = tuple(ctx.overrides.get(name, offered))
        unknown = set(ctx.overrides) - set(AXES.names())
        if unknown:
            raise ConfigError(f"unknown search axis {', '.join(sorted(unknown))}; known: {', '.join(AXES.names())}")

    def default(self, name: str) -> Any:
        """The axis's default: its first offered value (the first override when the user restricts it)."""
        values = self.values.get(name) or tuple(AXES.get(name).offered(self.ctx))
        return values[0]

    def others(self, name: str) -> tuple:
        """The axis's values besides the baseline's (FP32 / 0 / off / all)."""
        base = AXES.get(name).offered(self.ctx)[0]
        return tuple(v for v in self.values[name] if v != base)

    def baseline(self, backend: str) -> Candidate:
        return Candidate(CompressionConfig(), backend)

    def anchor(self, kind: str, backend: str) -> Candidate | None:
        """FP32, or static INT8 with the default calibration and format (None when INT8 is off)."""
        if kind == "fp32":
            return self.baseline(backend)
        if "int8-static" not in self.values["precision"]:
            return None
        return _set_precision(self, self.baseline(backend), "int8-static")

    def single_axis_candidates(self) -> list[Candidate]:
        """Every ``single``-stage axis value applied alone to its anchor, on every backend
        (the FP32 baselines first), without duplicates."""
        out: dict[str, Candidate] = {}
        for backend in self.ctx.backends:
            base = self.baseline(backend)
            out.setdefault(base.key, base)
        for name in AXES:
            axis = AXES.get(name)
            if axis.stage != "single":
                continue
            values = self.others(name) if axis.anchor == "fp32" else self.values[name]
            for backend in self.ctx.backends:
                anchor = self.anchor(axis.anchor, backend)
                if anchor is None:
                    continue
                for value in values:
                    cand = axis.apply(self, anchor, value)
                    if cand is not None:
                        out.setdefault(cand.key, cand)
        return list(out.values())

    def describe(self) -> dict[str, list]:
        """Each axis's values in this search (for the report)."""
        return {name: list(values) for name, values in self.values.items()}


__all__ = ["AXES", "Axis", "Candidate", "DEFAULT_BACKENDS", "ORT_BACKENDS", "RUNTIME_DEFAULTS", "Space",
           "SpaceContext", "compression_name", "family_of", "parse_axis_overrides", "register_axis"]

"""What a recommendation is asked: the model, the budgets, where it runs and how long to search."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import BATCH, DEVICES, MAX_DURATION_S, Bounds, InputSpec, check_bounds, parse_batch_axis
from ..errors import ConfigError
from ..registry import one_of
from .space import parse_axis_overrides

#: Default seconds a search may take (the final round and the held-out check included).
DEFAULT_TIME_BUDGET_S = 120.0


def _f(text: str, bounds: Bounds | None = None, label: str | None = None, **kw) -> Any:
    meta: dict[str, Any] = {"help": text}
    if bounds is not None:
        meta["bounds"] = bounds
    if label is not None:
        meta["label"] = label
    return field(metadata=meta, **kw)


@dataclass(frozen=True)
class RecommendRequest:
    """A recommendation request; validated like the other configs (one-line ConfigError)."""

    model: str = _f("model file (.onnx, .pt, .pt2) or sample:NAME")
    budget_points: float = _f("allowed quality drop in points of the quality metric (100 x (FP32 - variant))",
                              Bounds(0, 100, unit="points"), "quality budget", default=1.0)
    latency_budget_ms: float | None = _f("p50 latency the chosen variant must stay within (ms)", default=None)
    batch_size: int = _f("batch size the latency is measured at", BATCH, "batch size", default=1)
    backends: tuple[str, ...] = _f("backends to search over (default: every available one among onnxruntime and "
                                   "pytorch)", default=())
    device: str = _f("cpu or cuda", default="cpu")
    time_budget_s: float = _f("seconds the search may take", Bounds(1, MAX_DURATION_S, unit="s"),
                              "time budget", default=DEFAULT_TIME_BUDGET_S)
    data: str | None = _f("evaluation/calibration data: a built-in dataset or a .npz file", default=None)
    inputs: tuple[str, ...] = _f("input shape/dtype overrides, NAME:1x3x32x32[:float32]", default=())
    batch_axis: tuple[str, ...] = _f("batch axis of an input, NAME:AXIS or NAME:none (default: found from the model)",
                                     default=())
    arch: str | None = _f("built-in architecture of a state_dict file", default=None)
    trust_pickle: bool = _f("allow a fully pickled nn.Module (runs code from the file)", default=False)
    metric: str | None = _f("quality metric (default: chosen from the model's outputs)", default=None)
    min_speedup: float = _f("a candidate must be at least this much faster than FP32 to be chosen",
                            Bounds(1, 1000), "minimum speedup", default=1.03)
    repeats: int = _f("interleaved repeats of the final round (at least 3)", Bounds(3, 100, integer=True), "repeats", default=5)
    eval_samples: int = _f("samples of the search split and of the held-out split, each at most",
                           Bounds(2, 10_000_000, integer=True), "eval samples", default=512)
    axes: tuple[str, ...] = _f("restrict search axes: NAME=V1,V2 (e.g. prune=0 turns pruning off)", default=())

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"model must be a model file or sample:NAME; got {self.model!r}")
        one_of("device", self.device, DEVICES)
        for name in ("backends", "inputs", "batch_axis", "axes"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))
        check_bounds(self)
        if self.latency_budget_ms is not None:
            value = Bounds(0, 3_600_000, lo_open=True, unit="ms").check("latency budget", self.latency_budget_ms)
            object.__setattr__(self, "latency_budget_ms", value)
        if self.metric is not None:
            from ..measure.quality import get_metric

            get_metric(self.metric)
        for spec in self.inputs:
            InputSpec.parse(spec)
        for setting in self.batch_axis:
            parse_batch_axis(setting)
        parse_axis_overrides(self.axes)

    @property
    def overrides(self) -> dict[str, tuple]:
        return parse_axis_overrides(self.axes)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RecommendRequest":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


__all__ = ["RecommendRequest", "DEFAULT_TIME_BUDGET_S"]

"""The report every counter returns (see :mod:`benchmark.measure.flops` for the conventions)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError

COUNTERS = ("fvcore", "torch.utils.flop_counter", "onnx-graph")


@dataclass
class FlopReport:
    """Counts for one model at one input shape (see the module docstring for the conventions).

    ``macs`` are multiply-accumulates, ``flops = 2 * macs``. ``by_module`` rows are
    ``{name, op_type, macs, params}`` for the modules (PyTorch) or nodes (ONNX) that hold MACs or
    parameters; their ``macs`` sum to ``macs`` (``None`` where a counter cannot attribute MACs to
    modules, e.g. TorchScript). ``by_operator`` maps operator type -> MACs; ``unsupported_ops``
    maps each skipped operator -> how many times it occurred.
    """

    params: int
    macs: int
    flops: int
    size_bytes: int | None
    sparsity: float
    by_module: list[dict] = field(default_factory=list)
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported_ops: dict[str, int] = field(default_factory=dict)
    counter: str = "fvcore"
    batch_size: int = 1
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.counter not in COUNTERS:
            raise ConfigError(f"counter must be one of {', '.join(COUNTERS)}; got {self.counter!r}")
        if self.flops != 2 * self.macs:
            raise ValueError(f"flops must be 2 * macs; got flops={self.flops}, macs={self.macs}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


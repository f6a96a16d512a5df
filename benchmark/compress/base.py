"""Compression registry and the pipeline that builds one variant from a CompressionConfig.

A compression is a function ``fn(variant, cfg, ctx) -> Variant`` registered by name. It never
mutates its input variant; it returns a new one with a :class:`CompressionRecord` appended that
says what changed (nodes quantized, channels removed, sparsity...). A step that changed nothing
appends a record with ``changed=False`` and says so in its summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import CompressionConfig
from ..data.base import Dataset
from ..models.base import Variant
from ..registry import Registry

Progress = Callable[[str, float | None], None]  # (message, fraction in [0,1] or None)


def _no_progress(message: str, fraction: float | None = None) -> None:
    return None


@dataclass
class CompressContext:
    """What compression steps may use: data, a work folder for files, a progress callback."""

    workdir: Path
    calib_data: Dataset | None = None  # calibration / sensitivity evaluation data
    train_data: Dataset | None = None  # distillation data
    eval_data: Dataset | None = None
    progress: Progress = field(default=_no_progress)
    time_budget_s: float | None = None  # distillation etc. stop when exceeded
    threads: int = 0  # intra-op threads of the runs (0 = all cores), for steps that time candidates
    metric: str | None = None  # the quality metric asked for (None: chosen from the outputs), for steps that score
    output_kind: str | None = None  # what the first output is (None: told from its name and shape)


CompressionFn = Callable[[Variant, CompressionConfig, CompressContext], Variant]
COMPRESSIONS: Registry[CompressionFn] = Registry("compression")


def register_compression(name: str):
    return COMPRESSIONS.register(name)

"""Output comparison between two runs of a model (Polygraphy-style element-wise check).

For each output pair ``(a, b)`` with ``b`` the expected one: ``abs_err = |a - b|`` and
``rel_err = abs_err / |b|`` (infinite where ``b`` is 0 and ``a`` is not). An element mismatches when
``abs_err > atol`` **and** ``rel_err > rtol``; an output passes when no element mismatches, the
shapes agree and neither side holds NaN where the other does not. Errors are computed in float64.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np


@dataclass
class OutputComparison:
    """The comparison of one output."""

    name: str
    passed: bool
    max_abs_err: float
    max_rel_err: float
    mean_abs_err: float
    mismatches: int = 0
    size: int = 0
    note: str = ""


@dataclass
class CompareReport:
    """Per-output comparisons plus the overall verdict and the worst error."""

    outputs: list[OutputComparison]
    passed: bool
    atol: float
    rtol: float
    worst_output: str | None = None
    worst_max_abs_err: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        return (f"{verdict}: {len(self.outputs)} output(s), worst max abs err {self.worst_max_abs_err:.3g}"
                f" ({self.worst_output}) at atol={self.atol:g}, rtol={self.rtol:g}")


def _compare_one(name: str, a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> OutputComparison:
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return OutputComparison(name, False, float("inf"), float("inf"), float("inf"), size=int(b.size),
                                note=f"shape {a.shape} differs from expected {b.shape}")
    if a.size == 0:
        return OutputComparison(name, True, 0.0, 0.0, 0.0)
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    nan_mismatch = int(np.sum(nan_a != nan_b))
    valid = ~(nan_a | nan_b)
    diff = np.abs(a64 - b64)
    diff = np.where(valid, diff, 0.0)
    inf_same = np.isinf(a64) & np.isinf(b64) & (a64 == b64)
    diff = np.where(inf_same, 0.0, diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(b64))
    mism = int(np.sum((diff > atol) & (rel > rtol))) + nan_mismatch
    note = f"{nan_mismatch} NaN position(s) differ" if nan_mismatch else ""
    return OutputComparison(
        name=name,
        passed=mism == 0,
        max_abs_err=float(diff.max()),
        max_rel_err=float(rel.max()),
        mean_abs_err=float(diff.mean()),
        mismatches=mism,
        size=int(a.size),
        note=note,
    )


def compare_outputs(a: Sequence[np.ndarray], b: Sequence[np.ndarray], atol: float = 1e-5, rtol: float = 1e-5,
                    names: Sequence[str] | None = None) -> CompareReport:
    """Compare outputs ``a`` against the expected outputs ``b`` (see the module docstring)."""
    a, b = list(a), list(b)
    n = min(len(a), len(b))
    names = list(names) if names is not None else []
    names = names + [f"output_{i}" for i in range(len(names), n)]
    results = [_compare_one(names[i], a[i], b[i], float(atol), float(rtol)) for i in range(n)]
    notes = []
    if len(a) != len(b):
        notes.append(f"output counts differ: {len(a)} vs {len(b)} expected; compared the first {n}")
    worst = max(results, key=lambda r: r.max_abs_err, default=None)
    return CompareReport(
        outputs=results,
        passed=bool(results) and all(r.passed for r in results) and len(a) == len(b),
        atol=float(atol),
        rtol=float(rtol),
        worst_output=worst.name if worst else None,
        worst_max_abs_err=worst.max_abs_err if worst else 0.0,
        notes=notes,
    )

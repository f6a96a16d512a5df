"""Confidence intervals for interleaved latency repeats (no SciPy needed).

Consecutive iterations of one timed run are correlated (caches, clocks, other work on the machine),
so a bootstrap over one run's iterations understates the spread. The recommendation therefore times
each candidate in **repeats interleaved** with its FP32 reference (A B, B A, A B, ...: the order
alternates so neither side always runs second) and treats each repeat's median as one observation:

- :func:`p50_interval`: a Student-t interval for the median latency from the repeats' medians;
- :func:`ratio_interval`: the paired interval of the speedup ``FP32 p50 / candidate p50``: one
  ratio per repeat (both sides timed back to back), a t-interval on their logarithms, mapped back.
  Pairing removes the machine's slow drift, which both sides share;
- :func:`verdict`: ``faster`` when the whole speedup interval lies above 1, ``slower`` when it lies
  below 1, else ``no significant difference``.

With ``n`` repeats the t quantile has ``n - 1`` degrees of freedom (4.30 for 3 repeats at 95 %), so
few repeats give honest, wide intervals. Bonferroni: comparing ``m`` candidates at once, each
interval is taken at level ``1 - (1 - level) / m``.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..errors import MeasurementError

FASTER, SLOWER, NO_DIFFERENCE = "faster", "slower", "no significant difference"
#: Repeats an interval needs (two give one degree of freedom and a uselessly wide interval).
MIN_REPEATS = 3


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2.0, 0.5, x)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0; got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _check(values: Sequence[float], what: str) -> list[float]:
    out = [float(v) for v in values]
    if any(not math.isfinite(v) or v <= 0 for v in out):
        raise MeasurementError(f"{what} must be positive finite numbers; got {out}")
    return out


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided Student-t interval of the mean of ``values`` (>= 2 values)."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n < 2:
        raise MeasurementError(f"an interval needs at least 2 values; got {n}")
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def p50_interval(repeat_p50s: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(low, high) of the median latency from the medians of interleaved repeats (t-interval)."""
    _, lo, hi = mean_interval(_check(repeat_p50s, "repeat medians"), level)
    return max(lo, 0.0), hi


def ratio_interval(reference_p50s: Sequence[float], candidate_p50s: Sequence[float],
                   level: float = 0.95) -> tuple[float, float, float]:
    """(geometric-mean ratio, low, high) of ``reference / candidate`` over paired repeats.

    Repeat ``i`` of both lists must come from the same round of interleaved timing. The interval is a
    t-interval on the log ratios, exponentiated: > 1 means the candidate is faster."""
    ref = _check(reference_p50s, "reference repeat medians")
    cand = _check(candidate_p50s, "candidate repeat medians")
    if len(ref) != len(cand):
        raise MeasurementError(f"paired repeats differ in number: {len(ref)} vs {len(cand)}")
    logs = [math.log(r / c) for r, c in zip(ref, cand)]
    if len(logs) == 1:
        return math.exp(logs[0]), float("nan"), float("nan")
    mean, lo, hi = mean_interval(logs, level)
    return math.exp(mean), math.exp(lo), math.exp(hi)


def verdict(low: float, high: float) -> str:
    """``faster`` / ``slower`` / ``no significant difference`` from a speedup interval."""
    if math.isfinite(low) and low > 1.0:
        return FASTER
    if math.isfinite(high) and high < 1.0:
        return SLOWER
    return NO_DIFFERENCE


def times(ratio: float) -> str:
    """A speed ratio for people: ``2.23x``, ``0.0021x`` (two significant digits below 0.1)."""
    return f"{ratio:.2g}x" if 0 < abs(ratio) < 0.1 else f"{ratio:.2f}x"


def points(change: float) -> str:
    """A quality change in points for people: ``-3.10``, ``-0.0031`` (small changes keep two digits)."""
    value = float(change) + 0.0  # no "-0.00"
    return f"{value:+.2g}" if 0 < abs(value) < 0.01 else f"{value:+.2f}"


def bonferroni(level: float, comparisons: int) -> float:
    """The per-comparison level that keeps ``level`` for ``comparisons`` intervals together."""
    return 1.0 - (1.0 - float(level)) / max(1, int(comparisons))


__all__ = ["FASTER", "SLOWER", "NO_DIFFERENCE", "MIN_REPEATS", "t_cdf", "t_quantile", "mean_interval",
           "p50_interval", "ratio_interval", "verdict", "bonferroni", "times", "points"]

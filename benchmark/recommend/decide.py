"""The decision: the fastest finalist that is within both budgets and really faster than FP32.

A finalist **wins** when all of these hold:

- its quality drop is within the budget on the search split **and** on the held-out split;
- it is significantly faster than the baseline FP32 (the fastest FP32 backend): the paired
  interval of ``FP32 p50 / its p50`` from its final interleaved repeats lies above 1, at a 95 %
  level shared by all finalists (Bonferroni: each interval at ``1 - 0.05 / finalists``);
- its speedup is at least ``min_speedup`` (default 1.03: differences of a few percent are within
  what this machine reproduces from run to run, not worth shipping a changed model for);
- its p50 is within the latency budget, when one is given.

The chosen variant is the winner with the lowest p50; with no winner it is the baseline FP32 row
("keep FP32") and the reason names what came closest. Every other candidate gets a one-line reason
(over the quality budget, not significantly faster, slower than the chosen one, dropped in a
halving round, failed, not measured), and each family of candidates (``int8-static``,
``prune 0.5 + distill``, ``fp32 @ 1 thread``, ...) is summarised by its member that got furthest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import stats as st
from .measurer import Outcome

if TYPE_CHECKING:
    from .search import Search

LEVEL = 0.95
DEFAULT_MIN_SPEEDUP = 1.03


@dataclass
class Decision:
    """The chosen outcome, whether that is FP32, why, the runners-up and each family's reason."""

    chosen: Outcome
    keep_fp32: bool
    reason: str
    level: float
    runners_up: list[Outcome] = field(default_factory=list)
    families: list[dict[str, Any]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # outcome key -> why it was not chosen
    comparisons: dict[str, dict] = field(default_factory=dict)  # finalist key -> speedup vs the baseline


def _fmt_interval(point: float, lo: float, hi: float) -> str:
    if math.isfinite(lo) and math.isfinite(hi):
        return f"{st.times(point)} [{lo:.2f}, {hi:.2f}]"
    return st.times(point)


class _Judge:
    def __init__(self, search: "Search", latency_budget_ms: float | None, min_speedup: float):
        self.s = search
        self.latency_budget_ms = latency_budget_ms
        self.min_speedup = float(min_speedup)
        self.level = st.bonferroni(LEVEL, max(1, len(search.finalists)))
        self.where = "on this CPU" if search.m.device == "cpu" else f"on this {search.m.device.upper()} device"

    def comparison(self, o: Outcome) -> dict:
        point, lo, hi = self.s.vs_base(o, self.level)
        return {"point": point, "low": lo, "high": hi, "level": self.level, "verdict": st.verdict(lo, hi),
                "repeats": o.timing.repeats, "baseline": f"fp32 on {self.s.base}"}

    def wins(self, o: Outcome, cmp: dict) -> str | None:
        """None when ``o`` wins, else why not."""
        text = _fmt_interval(cmp["point"], cmp["low"], cmp["high"])
        hold = (o.holdout or {}).get("drop_points")
        if hold is not None and hold > self.s.budget:
            return f"{st.points(-hold)} points on the held-out split (budget {self.s.budget:g})"
        if cmp["repeats"] < st.MIN_REPEATS:
            return f"{text} from {cmp['repeats']} repeat(s): too few for an interval"
        if cmp["verdict"] != st.FASTER:
            return f"{text} vs FP32 on {self.s.base} {self.where}: {cmp['verdict']}"
        if cmp["point"] < self.min_speedup:
            return f"{text}: significantly faster, but below the minimum speedup {self.min_speedup:g}x"
        if self.latency_budget_ms is not None and (o.p50_ms or math.inf) > self.latency_budget_ms:
            return f"p50 {o.p50_ms:.4g} ms is over the latency budget {self.latency_budget_ms:g} ms"
        return None

    def why_not(self, o: Outcome) -> str:
        """Why a candidate that is not a finalist lost."""
        speed = self.s.vs_base(o) if o.timing is not None else None
        fast = "" if speed is None else f" ({st.times(speed[0])} the baseline in a short look)"
        if o.status == "failed":
            return f"failed: {o.error}"
        if o.status == "skipped":
            return f"skipped: {o.error}"
        if o.status == "pending":
            return o.error or "not measured: the time budget was spent"
        if o.drop is not None and o.drop > self.s.budget:
            return f"{st.points(-o.drop)} points (budget {self.s.budget:g}){fast}"
        if o.eliminated:
            return o.eliminated
        if speed is not None and speed[0] <= 1.0:
            return f"{st.times(speed[0])} {self.where} in a short look: not faster than FP32 on {self.s.base}"
        return f"not a finalist{fast}"


def _overlap(a: Outcome, b: Outcome) -> bool:
    """True when the p50 intervals of two finalists' final rounds overlap."""
    if a.timing is None or b.timing is None or min(a.timing.repeats, b.timing.repeats) < st.MIN_REPEATS:
        return False
    a_lo, a_hi = st.p50_interval(a.timing.p50s())
    b_lo, b_hi = st.p50_interval(b.timing.p50s())
    return a_lo <= b_hi and b_lo <= a_hi


def _furthest(search: "Search", o: Outcome, chosen: Outcome) -> tuple:
    speed = search.vs_base(o)
    return (o is chosen, o in search.finalists, search.within_budget(o), o.status == "ok", o.rung,
            speed[0] if speed else 0.0)


def decide(search: "Search", latency_budget_ms: float | None = None,
           min_speedup: float = DEFAULT_MIN_SPEEDUP) -> Decision:
    """The decision for a finished ``search`` (see the module docstring)."""
    judge = _Judge(search, latency_budget_ms, min_speedup)
    base = search.ref(search.base)
    reasons: dict[str, str] = {}
    comparisons: dict[str, dict] = {}
    winners = []
    for o in search.finalists:
        if o.status != "ok" or o.timing is None:
            reasons[o.key] = judge.why_not(o)
            continue
        cmp = comparisons[o.key] = judge.comparison(o)
        why = judge.wins(o, cmp)
        if why is None:
            winners.append(o)
        else:
            reasons[o.key] = why
    winners.sort(key=lambda o: o.p50_ms)
    chosen = winners[0] if winners else base
    for o in winners[1:]:
        text = _fmt_interval(comparisons[o.key]["point"], comparisons[o.key]["low"], comparisons[o.key]["high"])
        if _overlap(o, chosen):
            reasons[o.key] = (f"{text}, as fast as {chosen.name} on {chosen.candidate.backend} within the noise "
                              "(their p50 intervals overlap); the chosen one has the lower p50")
        else:
            reasons[o.key] = f"{text}, but slower than {chosen.name} on {chosen.candidate.backend}"
    for o in search.outcomes.values():
        if o is not chosen and o.key not in reasons:
            reasons[o.key] = judge.why_not(o) if o is not base else "the baseline"
    reason = _reason(search, judge, chosen, comparisons, reasons)
    for o in search.outcomes.values():
        o.outcome = "chosen" if o is chosen else ("runner-up" if o in search.finalists else "")
    runners = [o for o in sorted(search.finalists, key=lambda o: o.p50_ms or math.inf) if o is not chosen]
    return Decision(chosen=chosen, keep_fp32=chosen is base, reason=reason, level=judge.level, runners_up=runners,
                    families=_families(search, chosen, reasons), reasons=reasons, comparisons=comparisons)


def _reason(search: "Search", judge: _Judge, chosen: Outcome, comparisons: dict, reasons: dict) -> str:
    if chosen is not search.ref(search.base):
        cmp = comparisons[chosen.key]
        drop = chosen.drop or 0.0
        n = len(search.finalists)
        shared = f", {100 * LEVEL:g} % for all {n} finalists together" if n > 1 else ""
        return (f"{chosen.name} on {chosen.candidate.backend}: {_fmt_interval(cmp['point'], cmp['low'], cmp['high'])} "
                f"the speed of FP32 on {search.base} ({100 * cmp['level']:.3g} % interval over {cmp['repeats']} "
                f"interleaved repeats{shared}), {st.points(-drop)} points on the search split")
    base_p50 = chosen.p50_ms
    if judge.latency_budget_ms is not None and base_p50 is not None and base_p50 > judge.latency_budget_ms:
        lead = (f"keep FP32: FP32 on {search.base} (p50 {base_p50:.4g} ms) is over the latency budget "
                f"{judge.latency_budget_ms:g} ms and no candidate within {search.budget:g} points meets it")
    else:
        lead = f"keep FP32: no candidate within {search.budget:g} points was significantly faster than FP32 on {search.base}"
    if not any(o.timing is not None for o in search.outcomes.values() if not o.candidate.is_reference):
        return (f"keep FP32: the time budget ({search.time_budget_s:g} s) was spent before any candidate was measured; "
                "give the search more time")
    if not search.finalists:
        return lead + " (no candidate within the quality budget was measured faster in a first look)"
    best = min(search.finalists, key=lambda o: o.p50_ms or math.inf)
    return f"{lead}; closest: {best.name} on {best.candidate.backend}, {reasons.get(best.key, '')}"


def _families(search: "Search", chosen: Outcome, reasons: dict[str, str]) -> list[dict[str, Any]]:
    groups: dict[str, list[Outcome]] = {}
    for o in search.outcomes.values():
        if o.candidate.is_reference:
            continue
        groups.setdefault(o.candidate.family, []).append(o)
    out = []
    for family, members in groups.items():
        best = max(members, key=lambda o: _furthest(search, o, chosen))
        won = best is chosen
        reason = "chosen" if won else reasons.get(best.key, "")
        if best.status != "ok" and len({o.candidate.backend for o in members}) > 1:
            by_reason: dict[str, list[str]] = {}
            for o in members:
                by_reason.setdefault(reasons.get(o.key, ""), []).append(o.candidate.backend)
            reason = "; ".join(f"{', '.join(dict.fromkeys(b))}: {r}" for r, b in by_reason.items())
        out.append({"family": family, "won": won, "best": best.name, "backend": best.candidate.backend,
                    "members": len(members), "reason": reason})
    out.sort(key=lambda f: (not f["won"], f["family"]))
    return out


__all__ = ["Decision", "decide", "LEVEL", "DEFAULT_MIN_SPEEDUP"]

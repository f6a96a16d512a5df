"""The recommendation as one JSON-safe object.

The object (what ``slimbench recommend --json`` prints) holds at least ``chosen`` (a result row of
the chosen candidate, the FP32 row when nothing wins), ``candidates`` (every candidate's row, each
with ``speedup_vs_fp32`` and ``quality_drop_points``), ``budget_points``, ``latency_budget_ms``,
``metric``, ``strategy`` and ``elapsed_s``; also ``keep_fp32``, ``reason``, ``runners_up``,
``families`` (each family of candidates and why it lost), ``splits`` (sizes), ``space`` (the axes'
values), ``counts``, ``artifact`` (the chosen model file) and ``notes``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..results import jsonable

if TYPE_CHECKING:
    from .decide import Decision
    from .measurer import Outcome
    from .search import Search


def candidate_entry(search: "Search", decision: "Decision", out: "Outcome", row) -> dict[str, Any]:
    """``row.to_json()`` plus the recommendation's view of the candidate."""
    data = row.to_json()
    data.pop("latency_samples_ms", None)  # kept on the stored row; the object stays small
    cmp = decision.comparisons.get(out.key)
    if cmp is None and out.timing is not None:
        point = search.vs_base(out)
        cmp = None if point is None else {"point": point[0], "low": None, "high": None, "baseline": f"fp32 on {search.base}",
                                          "repeats": out.timing.repeats}
    data.update({
        "name": out.name, "family": out.candidate.family, "stage": out.stage, "round": out.rung,
        "quality_drop_points": out.drop, "holdout_drop_points": (out.holdout or {}).get("drop_points"),
        "vs_baseline": cmp, "outcome": out.outcome or ("baseline" if out is decision.chosen else ""),
        "reason": "chosen" if out is decision.chosen else decision.reasons.get(out.key),
    })
    return data


def build_summary(search: "Search", decision: "Decision", rows: dict[str, Any], *, request: dict[str, Any],
                  splits: dict[str, Any], elapsed_s: float, artifact: dict | None, strategy: str,
                  notes: list[str]) -> dict[str, Any]:
    """The recommendation object (see the module docstring); ``rows``: outcome key -> RunResult."""
    m = search.m
    entries = {o.key: candidate_entry(search, decision, o, rows[o.key]) for o in search.outcomes.values()}
    chosen = dict(entries[decision.chosen.key])
    base = entries[search.ref(decision.chosen.candidate.backend).key] if decision.chosen.candidate.backend in m.refs else None
    if base and base.get("size_bytes") and chosen.get("size_bytes"):
        chosen["size_vs_fp32"] = chosen["size_bytes"] / base["size_bytes"]
    chosen["quality_change_points"] = None if decision.chosen.drop is None else -decision.chosen.drop
    measured = [o for o in search.outcomes.values() if o.timing is not None]
    return jsonable({
        "model": m.model.name, "source": request.get("model"), "device": m.device, "batch_size": m.batch_size,
        "budget_points": search.budget, "latency_budget_ms": request.get("latency_budget_ms"),
        "metric": m.metric, "metric_why": m.metric_why, "strategy": strategy, "elapsed_s": elapsed_s,
        "time_budget_s": search.time_budget_s, "min_speedup": request.get("min_speedup"),
        "baseline": f"fp32 on {search.base}", "keep_fp32": decision.keep_fp32, "reason": decision.reason,
        "level": decision.level, "chosen": chosen,
        "runners_up": [entries[o.key] for o in decision.runners_up],
        "families": decision.families, "candidates": list(entries.values()), "splits": splits,
        "space": search.space.describe(), "sensitivity": search.sensitivity, "artifact": artifact,
        "counts": {"candidates": len(search.outcomes), "measured": len(measured), "built": len(m.builds),
                   "finalists": len(search.finalists)},
        "cpu": (rows[decision.chosen.key].env or {}).get("cpu_model"),
        "notes": list(dict.fromkeys(search.notes + notes)),
    })


__all__ = ["build_summary", "candidate_entry"]

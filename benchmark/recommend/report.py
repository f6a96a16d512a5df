"""The recommendation as one JSON-safe object, and the tables the dashboard shows of it.

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
    chosen["quality_change_points"] = None if decision.chosen.drop is None else 0.0 - decision.chosen.drop
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


def num(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec``; ``-`` for None or a non-finite float."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value + 0.0, spec)  # + 0.0: no "-0.00"


def headline(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value, help) of the chosen variant's key numbers, for the dashboard's metrics."""
    ch = summary["chosen"]
    sig = ch.get("significance") or {}
    lat = ch.get("latency_ms") or {}
    ci = (f"95 % interval {sig['speedup_ci_low']:.2f}-{sig['speedup_ci_high']:.2f}x"
          if sig.get("speedup_ci_low") is not None else "FP32 itself")
    return [
        ("speedup vs FP32 (p50)", f"{num(ch.get('speedup_vs_fp32'), '.2f')}x",
         f"FP32 p50 / its p50 on {ch['backend']}, batch {summary['batch_size']}; {ci}"),
        ("quality change (points)", num(ch.get("quality_change_points"), "+.2f"),
         f"{summary['metric']} on the search split; held-out drop {num(ch.get('holdout_drop_points'), '.2f')} points"),
        ("size vs FP32", f"{num(ch.get('size_vs_fp32'), '.2f')}x", f"{num((ch.get('size_bytes') or 0) / 1024, '.1f')} KiB"),
        ("p50 latency (ms)", num(lat.get("p50"), ".4g"),
         "median of the final round" + (f", 95 % interval {lat['p50_ci_low']:.4g}-{lat['p50_ci_high']:.4g} ms"
                                        if lat.get("p50_ci_low") is not None else "")),
    ]


def star_sentence(summary: dict[str, Any]) -> str:
    """The one sentence that explains the recommended mark on the trade-off plot."""
    ch = summary["chosen"]
    if summary["keep_fp32"]:
        return (f"The gold star marks FP32 on {ch['backend']}: no candidate within {summary['budget_points']:g} points "
                "was significantly faster in interleaved repeats, so the recommendation is to keep FP32.")
    return (f"The gold star marks the recommendation, {ch['variant']} on {ch['backend']}: the fastest candidate within "
            f"{summary['budget_points']:g} points (search and held-out splits) whose speedup over FP32 held in a 95 % "
            "interval from interleaved repeats; horizontal bars are the p50 intervals.")


def families_frame(summary: dict[str, Any]):
    """Each family of candidates and why it lost (the chosen one first)."""
    import pandas as pd

    return pd.DataFrame([{"family": f["family"], "outcome": f["reason"], "best member": f"{f['best']} ({f['backend']})",
                          "candidates": f["members"]} for f in summary["families"]])


def candidates_frame(summary: dict[str, Any]):
    """Every candidate: drop on both splits, p50, speedup with its interval, verdict, outcome (fastest first)."""
    import pandas as pd

    rows = []
    for c in summary["candidates"]:
        lat, sig = c.get("latency_ms") or {}, c.get("significance") or {}
        rows.append({"variant": c["variant"], "backend": c["backend"], "status": c["status"],
                     "quality drop (points)": c.get("quality_drop_points"),
                     "held-out drop (points)": c.get("holdout_drop_points"), "p50 (ms)": lat.get("p50"),
                     "speedup vs FP32 (x)": c.get("speedup_vs_fp32"), "speedup 95 % low": sig.get("speedup_ci_low"),
                     "speedup 95 % high": sig.get("speedup_ci_high"), "repeats": lat.get("repeats"),
                     "verdict": sig.get("verdict"), "outcome": c.get("reason") or c.get("error")})
    frame = pd.DataFrame(rows)
    return frame.sort_values("p50 (ms)", na_position="last", kind="stable").reset_index(drop=True) if len(frame) else frame


__all__ = ["build_summary", "candidate_entry", "num", "headline", "star_sentence", "families_frame", "candidates_frame"]

"""The greedy refinements of a search (step 3 of :mod:`benchmark.recommend.search`), each run
only where the first looks say it can pay off:

- :func:`distill`: pruned / low-rank models over the quality budget are distilled: a binary search
  over the ratios (the middle one first; a distilled model within the budget -> try a larger ratio,
  else a smaller one); a ratio no faster than the best candidate already within the budget is
  skipped (distillation does not change the speed);
- :func:`keep_float`: when every static INT8 candidate misses the budget but INT8 is faster than
  what fits, the layers are ranked by INT8 sensitivity on the search split (calibrated on the
  calibration split) and the 1, 2, 4 most sensitive are kept float until one fits;
- :func:`combine`: the fastest structural change within the budget (pruning, low-rank, with or
  without distillation) with each of the two fastest precisions within the budget, built from the
  structural model (it is not pruned or distilled twice);
- :func:`runtime_on_best`: runtime settings that made FP32 faster on a backend, applied to the
  three fastest builds within the budget on that backend.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from . import stats as st
from .measurer import Outcome, error_text
from .space import Candidate

#: The :class:`benchmark.recommend.search.Search` the steps refine (not imported: it imports this module).
Search = Any

#: Distillation may use at most this share of the search time left.
DISTILL_SHARE = 0.5
#: Layers the INT8 sensitivity ranking tests at most (the largest by MACs).
SENSITIVITY_MAX_LAYERS = 16


def _speed(search: Search, out: Outcome) -> float:
    got = search.vs_base(out)
    return 0.0 if got is None else got[0]


def _structural(c) -> bool:
    return c.prune_ratio > 0 or c.lowrank_applies


def _looks(search: Search, cands: list[Candidate], stage: str, base_build=None, distill_s=None) -> list[Outcome]:
    outs = []
    for cand in cands:
        out = search.add(cand, stage)
        if out is None:
            continue
        if search.search_left() <= 0:
            out.error = "not measured: the time budget was spent"
            continue
        search.first_look(out, base_build=base_build, distill_s=distill_s)
        outs.append(out)
    return outs


def distill(search: Search) -> None:
    """Distil pruned / low-rank models over the budget: per kind, a binary search over the ratios
    (the middle one first; one that fits -> a larger ratio, one that misses -> a smaller one)."""
    if True not in search.space.values.get("distill", ()):
        return
    kinds: dict[str, dict[float, Outcome]] = {"prune": {}, "lowrank": {}}
    for o in search.outcomes.values():
        c = o.candidate.compression
        if o.candidate.backend != search.base or o.status != "ok" or not o.timing or c.distill or o.candidate.runtime \
                or c.precision != "fp32" or not _structural(c) or (c.prune_ratio > 0 and c.lowrank_applies):
            continue
        if c.prune_ratio > 0:
            kinds["prune"][c.prune_ratio] = o
        else:
            kinds["lowrank"][c.lowrank_ratio] = o
    for by_ratio in kinds.values():
        ratios = sorted(by_ratio)
        lo, hi = 0, len(ratios) - 1
        while lo <= hi and search.search_left() > 0:
            mid = (lo + hi) // 2
            o = by_ratio[ratios[mid]]
            if search.within_budget(o):  # fits without distillation: try a larger ratio
                lo = mid + 1
                continue
            speed, best = _speed(search, o), search.best_within()
            if speed <= best:
                search.notes.append(f"not distilled: {o.candidate.build_name} ({st.times(speed)}) is no faster "
                                    f"than a candidate already within the budget ({st.times(best)})")
                lo = mid + 1
                continue
            comp = dataclasses.replace(o.candidate.compression, distill=True)
            budget_s = max(10.0, DISTILL_SHARE * search.search_left())
            outs = _looks(search, [Candidate(comp, search.base)], "distill",
                          base_build=search.m.builds[o.candidate.build_name], distill_s=budget_s)
            if any(search.within_budget(d) for d in outs):
                lo = mid + 1
            else:
                hi = mid - 1


def int8_sensitivity(search: Search) -> list[str]:
    """Layer names, most INT8-sensitive first (measured once per search)."""
    from ..analysis.prepared import fit, prepare
    from ..analysis.sensitivity import sensitivity_table

    if search.sensitivity is None:
        m = search.m
        work = m.workdir / "sensitivity"
        work.mkdir(parents=True, exist_ok=True)
        prep = prepare(m.model, work)
        data = fit(m.splits.search, m.model, prep, "search split")
        calib = fit(m.splits.calib or m.splits.search, m.model, prep, "calibration split")

        def progress(message: str, fraction: float | None = None) -> None:
            search.say(message)

        table = sensitivity_table(m.model, "int8", prep, data, calib, work, progress, SENSITIVITY_MAX_LAYERS,
                                  work / "calib-cache.json")
        search.sensitivity = table.to_dict("records")
    return [row["layer"] for row in search.sensitivity]


def keep_float(search: Search) -> None:
    counts = sorted(k for k in search.space.values.get("keep_float", ()) if k > 0)
    statics = [o for o in search.outcomes.values() if o.candidate.compression.precision == "int8-static"
               and o.candidate.backend == search.base and o.status == "ok" and o.timing and not o.candidate.runtime]
    if not counts or not statics or any(search.within_budget(o) for o in statics):
        return
    best = max(statics, key=lambda o: _speed(search, o))
    speed, within = _speed(search, best), search.best_within()
    if speed <= within:
        search.notes.append(f"no layers kept float: static INT8 ({st.times(speed)}) is no faster than a "
                            f"candidate already within the budget ({st.times(within)})")
        return
    try:
        ranking = int8_sensitivity(search)
    except Exception as exc:  # the ranking is a refinement: the search goes on without it
        search.notes.append(f"INT8 sensitivity not measured: {error_text(exc)}")
        return
    for k in counts:
        if k > len(ranking) or search.search_left() <= 0:
            break
        comp = dataclasses.replace(best.candidate.compression, precision="mixed", mixed_base="int8",
                                   exclude_layers=tuple(ranking[:k]))
        outs = _looks(search, [Candidate(comp, search.base)], "keep_float")
        if any(search.within_budget(o) for o in outs):
            break


def combine(search: Search) -> None:
    eligible = [o for o in search.outcomes.values() if search.within_budget(o) and o.timing and not o.candidate.runtime
                and o.candidate.backend == search.base and _speed(search, o) > 1.0]
    structural = [o for o in eligible if _structural(o.candidate.compression) and o.candidate.compression.precision == "fp32"]
    precisions = [o for o in eligible if not _structural(o.candidate.compression)
                  and o.candidate.compression.precision not in ("fp32", "mixed")]
    if not structural or not precisions:
        return
    s = max(structural, key=lambda o: _speed(search, o))
    picked: dict[str, Outcome] = {}
    for p in sorted(precisions, key=lambda o: -_speed(search, o)):
        picked.setdefault(p.candidate.compression.precision, p)
    sc = s.candidate.compression
    for p in list(picked.values())[:2]:
        comp = dataclasses.replace(p.candidate.compression, prune_ratio=sc.prune_ratio, prune_kind=sc.prune_kind,
                                   lowrank_ratio=sc.lowrank_ratio, distill=sc.distill, distill_epochs=sc.distill_epochs)
        _looks(search, [Candidate(comp, search.base)], "combine", base_build=search.m.builds[s.candidate.build_name])


def runtime_on_best(search: Search) -> None:
    helpful: dict[str, list[tuple]] = {}
    for o in search.outcomes.values():
        c = o.candidate
        if c.compression.is_reference and c.runtime and o.status == "ok" and o.timing and o.timing.ref:
            if o.timing.speedup("ref", 0.95)[0] > 1.0:
                helpful.setdefault(c.backend, []).extend(c.runtime)
    if not helpful:
        return
    tops = sorted((o for o in search.outcomes.values() if search.within_budget(o) and o.timing
                   and not o.candidate.runtime and not o.candidate.compression.is_reference
                   and o.candidate.backend == search.base and o.candidate.backend in helpful),
                  key=lambda o: -_speed(search, o))[:3]
    cands = []
    for o in tops:
        for key, value in helpful[o.candidate.backend]:
            cands.append(o.candidate.with_runtime(key, value))
    _looks(search, cands, "runtime")


__all__ = ["distill", "keep_float", "combine", "runtime_on_best", "int8_sensitivity"]

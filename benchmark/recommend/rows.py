"""Result rows of a recommendation: one :class:`~benchmark.results.RunResult` per candidate.

Rows look like a sweep's (same factory, same fields), with the candidate's name as the variant
(build and runtime settings in it) and:

- ``latency_ms``: statistics over every timed iteration of the candidate's latest round (all its
  interleaved repeats pooled), plus ``p50_ci_low`` / ``p50_ci_high`` (a t-interval of the median
  from the repeats' medians, with 3 or more repeats) and ``repeats``;
- ``speedup_vs_fp32``: FP32 p50 / this p50 on the same backend, device and batch, both pooled from
  the same interleaved rounds; ``significance`` the paired interval of that ratio and its verdict;
- ``stability``: with 3 or more repeats, ``unstable`` when the p50 interval's half-width exceeds
  5 % of the p50 (the per-iteration checks of :mod:`benchmark.measure.stability` are kept in
  ``iteration_checks``: a rare slow iteration inflates the CV without moving the median); None
  for rows timed in fewer repeats;
- ``quality``: the search split's quality object, plus ``holdout`` (value, reference, n and drop in
  points on the held-out split) for the finalists;
- ``config``: the CompressionConfig fields plus ``runtime`` (threads, graph optimization level) and
  ``search`` (the stage that added the candidate, its last round, its outcome and reason).

Candidates that were never measured (the time budget ran out) are ``skipped`` rows saying so.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..results import RunResult
from . import stats as st
from .measurer import Outcome

if TYPE_CHECKING:
    from .measurer import Measurer

METHOD = "paired t-interval of log(FP32 p50 / p50) over interleaved repeats"
#: A row whose p50 interval is wider than this share of its p50 (either side) is flagged unstable.
MAX_P50_HALF_WIDTH = 0.05


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _latency(timing, batch_size: int, threads: int) -> dict[str, Any]:
    from ..measure.stability import assess
    from ..sweep.rows import latency_fields

    pooled = timing.pooled()
    fields = latency_fields(pooled, batch_size)
    lat = fields["latency_ms"]
    lat["repeats"], lat["repeat_p50s"] = timing.repeats, timing.p50s()
    if timing.repeats < st.MIN_REPEATS:
        return fields
    lat["p50_ci_low"], lat["p50_ci_high"] = st.p50_interval(timing.p50s())
    # With interleaved repeats the median's interval says whether the row can be trusted; the
    # per-iteration checks (CV, tails) are kept as information (a rare slow iteration inflates the CV).
    stab = assess(pooled, threads=threads).to_dict()
    half = (lat["p50_ci_high"] - lat["p50_ci_low"]) / 2 / lat["p50"] if lat["p50"] else None
    stab["iteration_checks"] = stab["reasons"]
    stab["unstable"] = bool(half is not None and half > MAX_P50_HALF_WIDTH)
    stab["reasons"] = ([f"p50 interval +/-{100 * half:.1f} % over {timing.repeats} interleaved repeats "
                        f"(> {100 * MAX_P50_HALF_WIDTH:g} %)"] if stab["unstable"] else [])
    stab["thresholds"] = dict(stab.get("thresholds") or {}, max_p50_ci_half_width=MAX_P50_HALF_WIDTH)
    fields["stability"] = stab
    return fields


def _significance(out: Outcome, level: float, reason: str | None) -> tuple[float | None, dict[str, Any]]:
    """(speedup_vs_fp32, significance) from the candidate's latest round."""
    t = out.timing
    sig: dict[str, Any] = {"round": out.rung, "stage": out.stage, "outcome": out.outcome, "reason": reason}
    if t is None:
        return None, sig
    if not t.ref:
        return (1.0 if out.candidate.is_reference else None), sig
    point, lo, hi = t.speedup("ref", level)
    sig.update({"speedup_ci_low": _finite(lo), "speedup_ci_high": _finite(hi), "level": level,
                "repeats": t.repeats, "method": METHOD, "vs": f"fp32 on {out.candidate.backend}",
                "verdict": st.verdict(lo, hi) if t.repeats >= st.MIN_REPEATS else None})
    return point, sig


def outcome_row(m: "Measurer", out: Outcome, env: dict[str, Any] | None, level: float = 0.95,
                reason: str | None = None) -> RunResult:
    """The row of ``out`` (see the module docstring)."""
    from ..sweep.rows import RowFactory, noop_warning

    cand = out.candidate
    built = m.builds.get(cand.build_name)
    ok_build = built is not None and built.variant is not None
    factory = RowFactory(m.model.name, cand.compression, m.device, records=built.records if built else [],
                         compressed_as_asked=(not built.noops) if ok_build else None,
                         size=built.size if built else {}, env=env)
    status = out.status if out.status in ("ok", "failed", "skipped") else "skipped"
    error = None if status == "ok" else (out.error or "not measured: the time budget was spent")
    warnings = list(out.warnings) + [noop_warning(s) for s in (built.noops if ok_build else [])]
    warnings += [w for w in out.session.get("warnings", []) if w not in warnings]
    fields: dict[str, Any] = {}
    if status == "ok":
        speedup, sig = _significance(out, level, reason)
        fields.update(accuracy=out.accuracy, fidelity=out.fidelity, speedup_vs_fp32=speedup, significance=sig,
                      quality=None if out.quality is None else dict(out.quality, holdout=out.holdout),
                      providers=out.session.get("providers", []), threads=out.session.get("threads"))
        if out.session.get("env_session"):
            fields["env"] = dict(env or {}, session=out.session["env_session"])
        if out.timing is not None:
            fields.update(_latency(out.timing, m.batch_size, cand.threads))
    row = factory.row(cand.backend, m.batch_size, status, error=error, warnings=warnings, **fields)
    row.variant = cand.name
    row.config = dict(row.config or {}, runtime=cand.settings,
                      search={"stage": out.stage, "round": out.rung, "outcome": out.outcome, "reason": reason,
                              "family": cand.family})
    return row


__all__ = ["outcome_row", "METHOD"]

"""The search strategy: cheap signals first, successive halving on latency, an honest final round.

Why this strategy. The space is small, discrete and structured (a few precisions, prune ratios,
calibration methods and runtime settings), each point costs a build (seconds to minutes for
distillation) and a timing whose noise is the real enemy on a shared CPU. Bayesian optimisation
(TPE as in Intel Neural Compressor and Olive) models a smooth objective from many trials; here a
handful of trials is all the budget allows and a model of the space would mostly learn the noise.
Successive halving (Jamieson & Talwalkar 2016) needs no model: every candidate gets a short look,
the better third gets three times longer, and so on, so time goes to the candidates that can win,
and the final comparison is made with repeats long enough for a confidence interval. Quality is
cheap and deterministic (one pass over the search split), so it filters before any long timing.

Steps, each stopped when the time budget (minus a reserve for the final round) is spent:

1. **References**: FP32 on every backend (a session kept open), its outputs on both splits, the
   quality metric (chosen from the outputs unless asked for); the fastest FP32 backend (three short
   interleaved rounds) becomes the **baseline**.
2. **First looks** at every ``single``-stage axis value alone (cheapest builds first): build, score
   on the search split, one short interleaved timing against FP32 (round 0). Sizes and MACs are
   counted as each variant is built.
3. **Greedy refinements** where quality asks for them: distil pruned / low-rank models over the
   budget (fastest first; skipped when no faster than the best candidate already within budget,
   since distillation does not change the speed); when static INT8 misses the budget, rank the
   layers by INT8 sensitivity (:func:`benchmark.analysis.sensitivity.sensitivity_table`, on the
   search split) and keep the 1, 2, 4 most sensitive float; combine the best structural change
   with the best precisions; apply the runtime settings that made FP32 faster to the best builds.
4. **Successive halving** over the candidates within the quality budget: rounds ``k = 1, 2, ...``
   time each survivor for ``0.05 s x 3^k`` per side, two interleaved repeats, and keep the fastest
   third (at least :data:`FINALISTS`).
5. **Held-out check**: down the ranking, each candidate is scored on the held-out split until
   :data:`FINALISTS` are within the budget there (the search never decided on that split; it only
   refuses a candidate that does not hold up on it).
6. **Final round**: the finalists, ``repeats`` (>= 3) interleaved repeats each with the baseline
   FP32 (and FP32 on their own backend), confidence intervals from the repeat medians
   (:mod:`benchmark.recommend.stats`).

The decision is :func:`benchmark.recommend.decide.decide`.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

from ..errors import MeasurementError
from . import stats as st
from .measurer import Measurer, Outcome, error_text
from .space import Candidate, Space

FINALISTS = 3
ETA = 3
#: Seconds each side is timed per repeat in the first looks (round 0); round k times 3^k as long.
RUNG0_S = 0.05
FINAL_MAX_S = 0.5
FINAL_MIN_S = 0.05
#: Share of the time budget kept for the final round and the held-out check.
RESERVE_SHARE = 0.2
STRATEGY = ("successive halving: first looks at one axis value at a time, greedy refinements (distillation, "
            "INT8 with sensitive layers kept float, combinations, runtime settings), halving rounds of 3x longer "
            "timing for the fastest third, a final round of interleaved repeats with confidence intervals")

_BUILD_COST = {"fp32": 0.0, "fp16": 1.0, "bf16": 1.0, "int8-dynamic": 2.0, "int8-static": 4.0, "mixed": 5.0}


def build_cost(cand: Candidate) -> float:
    """A rough cost rank of building ``cand`` (cheap first)."""
    c = cand.compression
    cost = _BUILD_COST.get(c.precision, 3.0) + (2.0 if c.calib_method == "entropy" else 0.0)
    cost += 3.0 * (c.prune_ratio > 0) + 3.0 * c.lowrank_applies + 30.0 * c.distill_applies
    return cost


class Search:
    """One recommendation's search over ``space`` (see the module docstring)."""

    def __init__(self, measurer: Measurer, space: Space, *, budget_points: float, time_budget_s: float,
                 repeats: int, metric: str | None, started: float, progress: Callable[[str, float | None], None],
                 emit_row: Callable[[Outcome], None]):
        self.m = measurer
        self.space = space
        self.budget = float(budget_points)
        self.time_budget_s = float(time_budget_s)
        self.repeats = int(repeats)
        self.metric = metric
        self.started = started
        self.progress = progress
        self.emit_row = emit_row
        self.outcomes: dict[str, Outcome] = {}
        self.base: str | None = None
        self.finalists: list[Outcome] = []
        self.notes: list[str] = []
        self.sensitivity: list[dict] | None = None

    # --- time ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def search_left(self) -> float:
        """Seconds left before the reserve for the final round."""
        return self.time_budget_s * (1.0 - RESERVE_SHARE) - self.elapsed()

    def say(self, message: str) -> None:
        self.progress(message, min(0.99, self.elapsed() / self.time_budget_s) if self.time_budget_s else None)

    # --- the whole search ----------------------------------------------------------------------
    def run(self) -> list[Outcome]:
        self.references()
        self.choose_base()
        planned = sorted(self.space.single_axis_candidates(), key=lambda c: (build_cost(c), c.build_name))
        for cand in planned:
            self.outcomes.setdefault(cand.key, Outcome(cand))
        order = self.backend_order()
        for o in self.outcomes.values():
            backend = o.candidate.backend
            if backend not in self.m.refs and o.status == "pending":
                o.status, o.error = "skipped", f"FP32 does not run on {backend}: {self.ref(backend).error}"
            elif backend != self.base and o.status == "pending":
                o.error = self.deferred(backend)
        self.first_looks([o for o in self.outcomes.values() if o.candidate.backend == self.base])
        self.greedy()
        for backend in order[1:]:
            self.first_looks(self.mirrored(backend))
        self.finalists = self.verified(self.halving())
        self.final_round(self.finalists)
        self.held_out([self.ref(b) for b in self.m.refs])
        return self.finalists

    def backend_order(self) -> list[str]:
        """The baseline's backend first, then the others by their FP32 speed (fastest first)."""
        others = [b for b in self.space.ctx.backends if b != self.base and b in self.m.refs]
        others.sort(key=lambda b: -(self.vs_base(self.ref(b)) or (0.0,))[0])
        return [self.base] + others

    def mirrored(self, backend: str) -> list[Outcome]:
        """Looks still to take on ``backend``: its single-axis candidates, then every build the
        greedy steps made on the baseline's backend, on this backend too."""
        outs = [o for o in self.outcomes.values() if o.candidate.backend == backend and o.status == "pending"]
        for o in list(self.outcomes.values()):
            if o.candidate.backend == self.base and o.stage not in ("single", "reference") and o.status == "ok":
                added = self.add(Candidate(o.candidate.compression, backend, o.candidate.runtime), o.stage)
                if added is not None:
                    outs.append(added)
        for o in outs:
            o.error = self.deferred(backend)
        return outs

    def deferred(self, backend: str) -> str:
        """Why a look on ``backend`` may never happen."""
        ref = self.vs_base(self.ref(backend))
        return (f"not measured: the time budget was spent (FP32 on {backend} runs at {st.times(ref[0] if ref else 0)} "
                f"the baseline, so {self.base} was searched first)")

    def references(self) -> None:
        for backend in self.space.ctx.backends:
            self.say(f"FP32 reference on {backend}")
            out = self.m.add_reference(backend, self.metric)
            self.outcomes[out.key] = out
            if out.status == "pending":
                out.status = "ok"
            self.emit_row(out)
        ok = [o for o in self.outcomes.values() if o.status == "ok"]
        if not ok:
            why = "; ".join(f"{o.candidate.backend}: {o.error}" for o in self.outcomes.values())
            raise MeasurementError(f"FP32 runs on none of the backends ({why})")

    def ref(self, backend: str) -> Outcome:
        return self.outcomes[f"fp32|{backend}"]

    def choose_base(self) -> None:
        """The fastest FP32 backend (three short interleaved rounds against the first one) is the
        baseline; the other FP32 references are then timed against it."""
        backends = [b for b in self.space.ctx.backends if b in self.m.refs]
        first = self.base = backends[0]
        speeds = {}
        for backend in backends[1:]:
            out = self.ref(backend)
            out.timing = self.m.time(out, self.m.refs[backend]["session"], first, 0, RUNG0_S, 3)
            speeds[backend] = out.timing.speedup("base", 0.95)[0]
        if speeds and max(speeds.values()) > 1.0:
            self.base = max(speeds, key=speeds.get)
            for backend in backends:
                if backend != self.base:
                    out = self.ref(backend)
                    out.timing = self.m.time(out, self.m.refs[backend]["session"], self.base, 0, RUNG0_S, 3)
        self.notes.append(f"baseline: FP32 on {self.base}, the fastest FP32 backend in three short interleaved rounds")

    # --- first looks ---------------------------------------------------------------------------
    def first_looks(self, outs: list[Outcome]) -> None:
        for out in outs:
            if out.status != "pending":
                continue
            if self.search_left() <= 0:
                break
            out.error = None
            self.first_look(out)

    def first_look(self, out: Outcome, base_build=None, distill_s: float | None = None) -> None:
        """Build, score on the search split, time once (round 0); the row is sent."""
        cand = out.candidate
        self.say(f"first look: {out.name} on {cand.backend}")
        built = self.m.build(cand, time_budget_s=distill_s, base=base_build)
        out.warnings = list(built.warnings)
        if built.error:
            out.status, out.error = "failed", built.error
            self.emit_row(out)
            return
        try:
            session, why = self.m.prepare(cand, built.variant)
        except Exception as exc:
            out.status, out.error = "failed", f"preparing {cand.backend}: {error_text(exc)}"
            self.emit_row(out)
            return
        if session is None:
            out.status, out.error = "skipped", why
            self.emit_row(out)
            return
        try:
            out.session = self.m.session_info(session)
            self.m.score(out, session)
            out.timing = self.m.time(out, session, self.base, 0, RUNG0_S, 1)
            out.status = "ok"
        except Exception as exc:  # one candidate fails; the search goes on
            out.status, out.error = "failed", error_text(exc)
        finally:
            session.close()
        self.emit_row(out)

    # --- estimates -----------------------------------------------------------------------------
    def vs_base(self, out: Outcome, level: float = 0.95) -> tuple[float, float, float] | None:
        """(point, low, high) speedup of ``out`` over the baseline FP32 in its latest round."""
        if out.timing is None:
            return None
        if out.candidate.backend == self.base:
            if out.candidate.is_reference:
                return 1.0, 1.0, 1.0
            return out.timing.speedup("ref", level)
        return out.timing.speedup("base", level)

    def within_budget(self, out: Outcome) -> bool:
        return out.status == "ok" and out.drop is not None and out.drop <= self.budget

    def best_within(self) -> float:
        """The best round-0 speedup over the baseline among candidates within the quality budget."""
        speeds = [self.vs_base(o)[0] for o in self.outcomes.values() if self.within_budget(o) and o.timing]
        return max(speeds, default=1.0)

    def add(self, cand: Candidate, stage: str) -> Outcome | None:
        if cand.key in self.outcomes:
            return None
        out = Outcome(cand, stage=stage)
        self.outcomes[cand.key] = out
        return out

    # --- greedy refinements --------------------------------------------------------------------
    def greedy(self) -> None:
        """The refinements of :mod:`benchmark.recommend.refine`, on the baseline's backend."""
        from .refine import combine, distill, keep_float, runtime_on_best

        for step in (distill, keep_float, combine, runtime_on_best):
            if self.search_left() <= 0:
                self.notes.append(f"time budget spent before {step.__name__.replace('_', ' ')}")
                break
            step(self)

    # --- successive halving --------------------------------------------------------------------
    def halving(self) -> list[Outcome]:
        """Every candidate within the quality budget, best first: the survivors of the last halving
        round, then the others by their latest speed (fallbacks for :meth:`verified`)."""
        pool = [o for o in self.outcomes.values() if self.within_budget(o) and o.timing is not None
                and not (o.candidate.is_reference and o.candidate.backend == self.base)]
        pool.sort(key=lambda o: -self.vs_base(o)[0])
        dropped: list[Outcome] = []
        rung = 1
        while len(pool) > FINALISTS:
            keep = max(FINALISTS, math.ceil(len(pool) / ETA))
            duration = RUNG0_S * ETA ** rung
            if len(pool) * 2 * 2.5 * (duration + 0.1) > self.search_left():
                for o in pool[FINALISTS:]:
                    o.eliminated = (f"{st.times(self.vs_base(o)[0])} the baseline after round {rung - 1}, ranked "
                                    f"{pool.index(o) + 1} of {len(pool)}; the time budget ended the halving")
                    self.emit_row(o)
                self.notes.append(f"halving stopped after round {rung - 1}: the time budget was spent")
                return pool + dropped
            for o in pool:
                self.say(f"round {rung}: {o.name} on {o.candidate.backend} ({len(pool)} left, keeping {keep})")
                self.retime(o, rung, duration, 2)
            pool.sort(key=lambda o: -self.vs_base(o)[0] if o.status == "ok" else 0.0)
            for o in pool[keep:]:
                o.eliminated = (f"round {rung}: {st.times(self.vs_base(o)[0])} the baseline, not among the {keep} fastest"
                                if o.status == "ok" else o.error)
                self.emit_row(o)
            dropped = [o for o in pool[keep:] if o.status == "ok"] + dropped
            pool = [o for o in pool[:keep] if o.status == "ok"]
            rung += 1
        return pool + dropped

    def verified(self, ranked: list[Outcome]) -> list[Outcome]:
        """The first :data:`FINALISTS` of ``ranked`` whose drop on the held-out split is within the
        budget (scored here, once per build); the others that were scored say why they left."""
        finalists: list[Outcome] = []
        for o in ranked:
            if len(finalists) >= FINALISTS:
                break
            self.say(f"held-out split: {o.name} on {o.candidate.backend}")
            try:
                self.m.score(o, split="holdout")
            except Exception as exc:  # scoring failed: this candidate cannot be verified
                o.eliminated = f"held-out split not scored: {error_text(exc)}"
                self.emit_row(o)
                continue
            drop = (o.holdout or {}).get("drop_points")
            if drop is not None and drop > self.budget:
                o.eliminated = f"{st.points(-drop)} points on the held-out split (budget {self.budget:g})"
                self.emit_row(o)
                continue
            o.eliminated = None
            finalists.append(o)
        return finalists

    def retime(self, out: Outcome, rung: int, duration: float, repeats: int) -> None:
        """Time ``out`` again (a fresh session) for ``repeats`` interleaved rounds."""
        cand = out.candidate
        if cand.is_reference and cand.backend in self.m.refs:
            out.timing = self.m.time(out, self.m.refs[cand.backend]["session"], self.base, rung, duration, repeats,
                                     min_iters=10)
            return
        try:
            session, why = self.m.prepare(cand, self.m.builds[cand.build_name].variant)
            if session is None:
                raise MeasurementError(why)
            try:
                out.timing = self.m.time(out, session, self.base, rung, duration, repeats, min_iters=10)
            finally:
                session.close()
        except Exception as exc:
            out.status, out.error = "failed", error_text(exc)
        self.emit_row(out)

    # --- final round ---------------------------------------------------------------------------
    def final_round(self, finalists: list[Outcome]) -> None:
        """``repeats`` interleaved repeats per finalist (at least 3); the baseline alone when there is none."""
        left = max(0.0, self.time_budget_s - self.elapsed())
        n = max(1, len(finalists))
        duration = min(FINAL_MAX_S, max(FINAL_MIN_S, 0.8 * left / (n * self.repeats * 2.5)))
        rung = 1 + max((o.rung for o in self.outcomes.values()), default=0)
        for o in finalists:
            self.say(f"final round: {o.name} on {o.candidate.backend}, {self.repeats} interleaved repeats")
            self.retime(o, rung, duration, self.repeats)
        base = self.ref(self.base)
        self.say(f"final round: FP32 on {self.base}")
        if finalists:
            base.timing = self.base_timing(finalists, rung, duration)
        else:
            base.timing = self.m.time(base, self.m.refs[self.base]["session"], self.base, rung, duration,
                                      self.repeats, min_iters=10)
        self.emit_row(base)

    def base_timing(self, finalists: list[Outcome], rung: int, duration: float):
        """The baseline FP32's runs in the final round, gathered from every finalist's rounds."""
        from .measurer import Timing

        timing = Timing(rung, duration)
        for o in finalists:
            if o.timing is None or o.timing.rung != rung:
                continue
            timing.cand += o.timing.ref if o.candidate.backend == self.base else o.timing.base
        return timing

    def held_out(self, outs: list[Outcome]) -> None:
        """Quality on the held-out split of ``outs`` (the references: drop 0 by definition)."""
        for o in outs:
            if o.status != "ok":
                continue
            self.say(f"held-out split: {o.name} on {o.candidate.backend}")
            try:
                self.m.score(o, split="holdout")
            except Exception as exc:
                o.warnings.append(f"held-out split not scored: {error_text(exc)}")
            self.emit_row(o)

    def describe(self) -> dict[str, Any]:
        return {"base_backend": self.base, "finalists": [o.key for o in self.finalists], "notes": self.notes,
                "sensitivity": self.sensitivity}


__all__ = ["Search", "STRATEGY", "FINALISTS", "ETA", "RUNG0_S", "build_cost"]

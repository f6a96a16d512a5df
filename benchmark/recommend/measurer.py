"""Building, scoring and timing candidates inside the recommendation's child process.

- :meth:`Measurer.build`: one built variant per build name (candidates that differ only in backend
  or runtime settings share it), built by :func:`benchmark.compress.build_variant` with the
  calibration and training splits only; its size facts counted once.
- :meth:`Measurer.score`: the candidate's outputs on the search split (or the held-out split) ->
  its ``quality`` object (the chosen metric against FP32 on the same backend), the drop in points,
  accuracy and fidelity fields. Candidates that differ only in threads share a score (the thread
  count does not change what is computed).
- :meth:`Measurer.time`: interleaved timing of the candidate with FP32 on its backend (and with the
  baseline FP32, the fastest backend's, when that is another backend): ``repeats`` rounds, the
  order reversed every other round, each side timed for ``duration_s`` per round
  (:func:`benchmark.measure.latency.measure_latency`, under the device lock).

The FP32 reference of each backend keeps one session open for the whole search.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..config import RunConfig
from ..errors import BenchmarkError, DataError
from ..sweep.feeds import internal_error
from . import stats as st
from .space import Candidate

#: Warm-up before each timed repeat, at least (switching sessions leaves cold caches; some kernels
#: are created on their first calls).
WARMUP_S = 0.05


def error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, BenchmarkError) else internal_error(exc)


@dataclass
class Built:
    """One built variant: shared by the candidates with its build name."""

    name: str
    variant: Any = None
    error: str | None = None
    build_s: float = 0.0
    size: dict[str, Any] = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    noops: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Timing:
    """One round of interleaved timing of a candidate: its runs and its references' runs, per repeat."""

    rung: int
    duration_s: float
    cand: list[Any] = field(default_factory=list)  # LatencyStats per repeat
    ref: list[Any] = field(default_factory=list)  # FP32 on the same backend (empty: the candidate is that FP32)
    base: list[Any] = field(default_factory=list)  # the baseline FP32 when it runs on another backend

    @property
    def repeats(self) -> int:
        return len(self.cand)

    def pooled(self, which: str = "cand"):
        from ..measure.latency import summarize

        runs = getattr(self, which)
        samples = [s for run in runs for s in run.samples_ms]
        total = sum(run.total_s for run in runs)
        return summarize(samples, total, runs[0].started_at, runs[-1].finished_at, runs[0].timer)

    def p50s(self, which: str = "cand") -> list[float]:
        return [float(run.p50_ms) for run in getattr(self, which)]

    def speedup(self, which: str, level: float) -> tuple[float, float, float] | None:
        """(point, low, high) of ``which`` FP32 p50 / candidate p50: the point from the pooled medians,
        the interval from the paired repeats (NaN below :data:`~.stats.MIN_REPEATS` repeats)."""
        runs = getattr(self, which)
        if not runs:
            return None
        point = self.pooled(which).p50_ms / self.pooled("cand").p50_ms
        if self.repeats < st.MIN_REPEATS:
            return point, float("nan"), float("nan")
        _, lo, hi = st.ratio_interval(self.p50s(which), self.p50s("cand"), level)
        return point, lo, hi


@dataclass
class Outcome:
    """Everything known about one candidate so far."""

    candidate: Candidate
    stage: str = "single"
    status: str = "pending"  # pending | ok | failed | skipped
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    quality: dict | None = None  # search split
    drop: float | None = None
    holdout: dict | None = None  # {value, reference, n, drop_points}
    accuracy: dict | None = None
    fidelity: dict | None = None
    timing: Timing | None = None
    session: dict[str, Any] = field(default_factory=dict)  # providers, threads, options
    eliminated: str | None = None  # why it left the race
    outcome: str = ""  # chosen | runner-up | ... (set by the decision)

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def key(self) -> str:
        return self.candidate.key

    @property
    def rung(self) -> int:
        return -1 if self.timing is None else self.timing.rung

    @property
    def p50_ms(self) -> float | None:
        return None if self.timing is None else float(self.timing.pooled().p50_ms)


def _count(variant) -> tuple[dict[str, Any], list[str]]:
    from ..measure.flops import count_model
    from ..sweep.rows import SIZE_KEYS

    try:
        report = count_model(variant, batch_size=1)
    except BenchmarkError as exc:
        return {k: None for k in SIZE_KEYS}, [f"FLOPs/params not counted: {exc}"]
    return {k: getattr(report, k, None) for k in SIZE_KEYS}, list(getattr(report, "warnings", []) or [])


class Measurer:
    """The child's workshop: model, splits, metric, the FP32 references, builds and sessions."""

    def __init__(self, model, splits, *, device: str, batch_size: int, workdir: Path, emit: Callable[[dict], None]):
        self.model = model
        self.splits = splits
        self.device = device
        self.batch_size = int(batch_size)
        self.workdir = Path(workdir)
        self.emit = emit
        self.metric: str | None = None
        self.metric_why: str | None = None
        self.builds: dict[str, Built] = {}
        self.refs: dict[str, dict[str, Any]] = {}  # backend -> {variant, session, search, holdout, outcome}
        self.scores: dict[tuple, dict] = {}
        self.feeds = self._timing_feeds()

    # --- helpers -------------------------------------------------------------------------------
    def step(self, message: str) -> None:
        self.emit({"type": "step", "message": message})

    def _timing_feeds(self) -> dict:
        from ..sweep.feeds import first_batch

        feeds = first_batch(self.splits.search, self.batch_size)
        return feeds if feeds is not None else self.model.example_inputs(self.batch_size)

    def eval_batch(self) -> int:
        from ..sweep.feeds import fixed_batch

        fixed = fixed_batch(self.model, set())
        return fixed[0] if fixed else max(self.batch_size, 32)

    def prepare(self, cand: Candidate, variant):
        from ..backends import get_backend

        backend = get_backend(cand.backend)
        ok, reason = backend.supports(variant, self.device)
        if not ok:
            return None, reason
        return backend.prepare(variant, device=self.device, threads=cand.threads, workdir=self.workdir,
                               options=cand.session_options()), None

    # --- building ------------------------------------------------------------------------------
    def build(self, cand: Candidate, time_budget_s: float | None = None, base: Built | None = None) -> Built:
        """The built variant of ``cand`` (cached by build name). ``base``: a built variant whose steps
        are the first steps of ``cand``'s (e.g. a distilled pruned model for prune + INT8)."""
        from ..compress import CompressContext, build_variant
        from ..sweep.rows import unapplied_steps

        name = cand.build_name
        if name in self.builds:
            return self.builds[name]
        built = Built(name)
        self.step(f"building {name}")
        ctx = CompressContext(workdir=self.workdir, calib_data=self.splits.calib, train_data=self.splits.train,
                              eval_data=None, time_budget_s=time_budget_s,
                              progress=lambda m, f=None: self.step(m))  # a build that reports is not hung
        start = time.perf_counter()
        try:
            variant = build_variant(self.model, cand.compression, ctx, base=None if base is None else base.variant)
        except Exception as exc:  # a failed build fails its candidates only
            built.error, built.build_s = f"building {name}: {error_text(exc)}", time.perf_counter() - start
            self.builds[name] = built
            return built
        built.build_s = time.perf_counter() - start
        built.variant = variant
        built.records = [r.to_dict() for r in variant.records]
        built.noops = unapplied_steps(cand.compression, variant.records)
        built.size, notes = _count(variant)
        built.warnings = list(variant.warnings) + notes
        self.builds[name] = built
        return built

    # --- references ----------------------------------------------------------------------------
    def add_reference(self, backend: str, metric: str | None) -> "Outcome":
        """FP32 on ``backend``: a session kept open, its outputs on both splits, the metric (chosen from
        the first reference's outputs unless ``metric`` names one)."""
        from ..measure.quality import choose_metric_for

        cand = Candidate(backend=backend)
        out = Outcome(cand, stage="reference")
        built = self.build(cand)
        if built.error:
            out.status, out.error = "failed", built.error
            return out
        self.step(f"preparing FP32 on {backend}")
        try:
            session, why = self.prepare(cand, built.variant)
            if session is None:
                out.status, out.error = "skipped", why
                return out
            search = self._evaluate(session, self.splits.search)
            holdout = self._evaluate(session, self.splits.holdout)
        except Exception as exc:
            out.status, out.error = "failed", f"FP32 on {backend}: {error_text(exc)}"
            return out
        if self.metric is None:
            choice = choose_metric_for(search.logits, search.labels, name=self._output_name(), override=metric)
            self.metric, self.metric_why = choice.metric, choice.reason
        self.refs[backend] = {"variant": built.variant, "session": session, "search": search, "holdout": holdout,
                              "outcome": out}
        out.session = self.session_info(session)
        self.score(out)
        return out

    def _output_name(self) -> str:
        outs = list(self.model.outputs or [])
        return outs[0].name if outs else ""

    def _evaluate(self, session, data, reference=None):
        """The session's outputs on ``data`` (at the evaluation batch, else the timed batch), with
        fidelity to ``reference`` (another report's outputs on the same samples) when given."""
        from ..measure.accuracy import evaluate

        ref = None if reference is None else reference.logits
        try:
            report = evaluate(session, data, self.eval_batch(), reference_outputs=ref)
        except BenchmarkError:
            report = evaluate(session, data, self.batch_size, reference_outputs=ref)
        if isinstance(report.logits, list):
            raise DataError("the model's outputs vary in shape between batches; a recommendation needs one "
                            "output shape to compare quality")
        return report

    @staticmethod
    def session_info(session) -> dict[str, Any]:
        info = session.info
        return {"providers": list(info.providers), "threads": info.threads,
                "env_session": {"precision": info.precision, "options": dict(info.options)},
                "warnings": list(info.warnings)}

    # --- quality -------------------------------------------------------------------------------
    def score(self, out: Outcome, session=None, split: str = "search") -> None:
        """Set ``out``'s quality on ``split`` (the search split: ``quality``, ``drop``, accuracy and
        fidelity; the held-out split: ``holdout``), from ``session`` or a new one."""
        from ..measure.accuracy import fidelity
        from ..measure.quality import drop_points, quality

        cand = out.candidate
        ref = self.refs.get(cand.backend)
        if ref is None:
            raise DataError(f"no FP32 reference on {cand.backend} to compare quality with")
        key = (cand.build_name, cand.backend, cand.settings.get("graph_optimization_level"), split)
        if key not in self.scores:
            if cand.is_reference:
                report = ref[split]
                fid = fidelity(report.logits, report.logits)
            else:
                data = self.splits.search if split == "search" else self.splits.holdout
                report = (self._evaluate(session, data, ref[split]) if session is not None
                          else self._fresh(cand, data, ref[split]))
                fid = {k: getattr(report, k) for k in ("top1_agreement", "cosine", "max_abs_err", "mean_abs_err",
                                                       "rel_error")}
            q = quality(self.metric, report.logits, ref[split].logits, ref[split].labels)
            self.scores[key] = {"report": report, "quality": q, "drop": drop_points(q), "fidelity": fid}
        got = self.scores[key]
        if split == "search":
            rep = got["report"]
            out.quality = dict(got["quality"], why=self.metric_why, split="search")
            out.drop = got["drop"]
            out.accuracy = None if rep.top1 is None else {"top1": rep.top1, "top5": rep.top5, "n": rep.n_samples}
            out.fidelity = dict(got["fidelity"], reference="self" if cand.is_reference else f"fp32 on {cand.backend}",
                                n=rep.n_samples)
        else:
            q = got["quality"]
            out.holdout = {"value": q["value"], "reference": q["reference"], "n": q["n"], "drop_points": got["drop"]}

    def _fresh(self, cand: Candidate, data, reference):
        session, why = self.prepare(cand, self.builds[cand.build_name].variant)
        if session is None:
            raise DataError(why)
        try:
            return self._evaluate(session, data, reference)
        finally:
            session.close()

    # --- timing --------------------------------------------------------------------------------
    def run_config(self, cand: Candidate, duration_s: float, min_iters: int) -> RunConfig:
        return RunConfig(backend=cand.backend, device=self.device, batch_size=self.batch_size, threads=cand.threads,
                         warmup_iters=3, warmup_s=max(WARMUP_S, duration_s / 4), min_iters=int(min_iters),
                         min_duration_s=float(duration_s), max_iters=1_000_000)

    def time(self, out: Outcome, session, base_backend: str, rung: int, duration_s: float, repeats: int,
             min_iters: int = 5) -> Timing:
        """Interleaved rounds of ``out`` (on ``session``) with its references; see the module docstring."""
        from ..measure.latency import measure_latency

        cand = out.candidate
        group: list[tuple[str, Any, Candidate]] = []
        if base_backend in self.refs and not (cand.is_reference and cand.backend == base_backend):
            group.append(("base" if cand.backend != base_backend else "ref", self.refs[base_backend]["session"],
                          self.refs[base_backend]["outcome"].candidate))
        if cand.backend != base_backend and not cand.is_reference and cand.backend in self.refs:
            group.append(("ref", self.refs[cand.backend]["session"], self.refs[cand.backend]["outcome"].candidate))
        group.append(("cand", session, cand))
        timing = Timing(rung, float(duration_s))
        for r in range(int(repeats)):
            order = group if r % 2 == 0 else list(reversed(group))
            for role, sess, c in order:
                self.step(f"timing {out.name} on {cand.backend} (round {rung}, repeat {r + 1}/{repeats})")
                stats = measure_latency(sess, self.feeds, self.run_config(c, duration_s, min_iters), self.device)
                getattr(timing, role).append(stats)
        return timing

    def close(self) -> list[str]:
        notes = []
        for backend, ref in self.refs.items():
            try:
                ref["session"].close()
            except Exception as exc:  # the results stand; say the close failed
                notes.append(f"closing the FP32 session on {backend} failed: {error_text(exc)}")
        return notes


__all__ = ["Built", "Measurer", "Outcome", "Timing", "error_text"]

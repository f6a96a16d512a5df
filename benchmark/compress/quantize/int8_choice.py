"""The INT8 static format, measured rather than assumed (``int8_format="measure"``).

Whether uint8 or int8 activations (U8S8 / S8S8) and 7-bit weights (``reduce_range``) are faster
depends on the CPU's INT8 instructions and ONNX Runtime's kernels for them, and the format also
changes the rounding, hence the quality. So the candidates are each quantized (one calibration,
shared through ONNX Runtime's calibration cache), timed briefly and scored, and the fastest within
:data:`QUALITY_TOLERANCE_POINTS` of the best quality is kept:

- **Candidates**: the format :func:`~benchmark.compress.quantize.onnx_int8.choose_int8_format` picks
  from the CPU flags; ONNX Runtime's own default (``quantize_static``: S8S8, no ``reduce_range``), so
  the result is never slower than what a plain ONNX Runtime user gets (unless that is worse by more
  than the tolerance); and, where the flags asked for ``reduce_range``, U8S8 with 8-bit weights.
- **Timing**: an ONNX Runtime CPU session per candidate (the run's intra-op threads), one batch of
  up to :data:`TIMING_BATCH` evaluation samples, :func:`benchmark.measure.latency.measure_latency`
  with the short :data:`TIMING` settings (holding the CPU lock), :data:`ROUNDS` rounds interleaved
  across candidates; a candidate's time is the median of its rounds' p50s.
- **Score**: on the first :data:`SCORE_SAMPLES` samples of the *evaluation* split (never the
  calibration data), the metric a row would use (the sweep's ``metric`` / ``output_kind``, else
  :func:`benchmark.measure.quality.choose_metric_for` from the FP32 graph's outputs and the labels),
  as a drop in points from the FP32 graph's value.

Everything measured goes into the compression record (``int8_choice``): every candidate's p50,
quality value and drop, the metric, the samples, and the reason for the choice.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...errors import BenchmarkError, one_line

#: Candidates within this many points of the best candidate's quality count as equally good.
QUALITY_TOLERANCE_POINTS = 0.5
#: Evaluation samples each candidate is scored on.
SCORE_SAMPLES = 256
#: Samples per timed batch (fewer when the evaluation data holds fewer).
TIMING_BATCH = 8
#: RunConfig timing settings of one round (short: each candidate is timed in every round).
TIMING = {"warmup_iters": 2, "warmup_s": 0.0, "min_iters": 10, "min_duration_s": 0.1, "max_iters": 2000}
ROUNDS = 3
#: ONNX Runtime's ``quantize_static`` defaults: int8 activations and weights, no reduce_range.
ORT_DEFAULT = ("s8s8", False)


@dataclass
class Candidate:
    """One INT8 format tried, and what it measured."""

    int8_format: str
    reduce_range: bool
    source: str
    p50_ms: float | None = None
    round_p50s_ms: list[float] = field(default_factory=list)
    quality: float | None = None
    drop_points: float | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return self.int8_format.upper() + (" reduce_range" if self.reduce_range else "")

    @property
    def measured(self) -> bool:
        return self.error is None and self.p50_ms is not None and self.drop_points is not None


def candidates(flag_format: str, flag_reduce_range: bool) -> list[Candidate]:
    """The formats to try (see the module docstring), the CPU flags' choice first."""
    out = [Candidate(flag_format, bool(flag_reduce_range), "chosen from the CPU flags")]
    if (flag_format, bool(flag_reduce_range)) != ORT_DEFAULT:
        out.append(Candidate(*ORT_DEFAULT, "ONNX Runtime's default"))
    if flag_format == "u8s8" and flag_reduce_range:
        out.append(Candidate("u8s8", False, "U8S8 with 8-bit weights"))
    return out


def pick(cands: list[Candidate], tolerance: float = QUALITY_TOLERANCE_POINTS) -> tuple[Candidate | None, str]:
    """(the fastest candidate within ``tolerance`` points of the best quality, the reason with every
    candidate's numbers); (None, why) when no candidate was measured."""
    ok = [c for c in cands if c.measured]
    if not ok:
        errors = "; ".join(f"{c.name}: {c.error}" for c in cands if c.error) or "nothing was measured"
        return None, errors
    best = min(c.drop_points for c in ok)
    within = [c for c in ok if c.drop_points <= best + tolerance]
    chosen = min(within, key=lambda c: c.p50_ms)
    numbers = "; ".join(
        f"{c.name} ({c.source}) p50 {c.p50_ms:.3f} ms, drop {c.drop_points:+.2f} points" if c.measured
        else f"{c.name} ({c.source}) failed: {c.error}" for c in cands)
    others = [c for c in ok if c is not chosen]
    why = "fastest" if all(c in within for c in ok) else f"fastest within {tolerance:g} points of the best quality"
    lead = f"measured: {chosen.name} was the {why}" if others else f"measured: only {chosen.name} could be measured"
    return chosen, f"{lead} ({numbers})"


def _outputs(path: Path, batches: list[dict], threads: int):
    """The first output of the graph at ``path`` over ``batches``, concatenated."""
    import numpy as np

    from ...onnx_graph import cpu_session

    sess = cpu_session(path, threads)
    return np.concatenate([np.asarray(sess.run(None, feeds)[0]) for feeds in batches])


def _score(cands: list[Candidate], paths: dict[str, Path], reference: Path, inputs: "MeasureInputs") -> dict[str, Any]:
    """Each candidate's quality and drop in points against the FP32 graph at ``reference``, in the
    metric asked for (``inputs.metric``, else the default for the first output)."""
    import numpy as np

    from ...measure.quality import choose_metric_asked, drop_points, quality

    data, batches, threads = inputs.data, inputs.batches, inputs.threads
    ref = _outputs(reference, batches, threads)
    labels = None if data.labels is None else np.asarray(data.labels)[: len(ref)]
    outputs = getattr(inputs.model, "outputs", None) or []
    choice, note = choose_metric_asked(ref, labels, name=outputs[0].name if outputs else "", kind=inputs.output_kind,
                                       override=inputs.metric)
    for c in cands:
        if c.error:
            continue
        try:
            q = quality(choice.metric, _outputs(paths[c.name], batches, threads), ref, labels)
        except (BenchmarkError, ValueError, RuntimeError) as exc:  # NaN outputs, ORT run errors
            c.error = f"scoring failed: {one_line(exc)}"
            continue
        c.quality, c.drop_points = q["value"], drop_points(q)
    return {"metric": choice.metric, "metric_why": note or choice.reason, "samples": int(len(ref))}


def _time(cands: list[Candidate], paths: dict[str, Path], model, feeds: dict, threads: int) -> None:
    """Each candidate's p50: :data:`ROUNDS` interleaved rounds of :func:`measure_latency`, median of p50s."""
    from ...backends import get_backend
    from ...config import RunConfig
    from ...measure.latency import measure_latency
    from ...models.base import Variant

    batch = len(next(iter(feeds.values())))
    cfg = RunConfig(backend="onnxruntime", device="cpu", batch_size=batch, threads=threads, **TIMING)
    sessions = {}
    try:
        for c in cands:
            if c.error:
                continue
            variant = Variant(name=f"int8-{c.int8_format}", model=model, precision="int8-static",
                              onnx_path=paths[c.name])
            try:
                sessions[c.name] = get_backend("onnxruntime").prepare(variant, "cpu", threads=threads)
            except BenchmarkError as exc:
                c.error = f"session failed: {one_line(exc)}"
        for _ in range(ROUNDS):
            for c in cands:
                if c.name in sessions and c.error is None:
                    try:
                        c.round_p50s_ms.append(float(measure_latency(sessions[c.name], feeds, cfg, "cpu").p50_ms))
                    except BenchmarkError as exc:
                        c.error = f"timing failed: {one_line(exc)}"
        for c in cands:
            if c.round_p50s_ms and c.error is None:
                c.p50_ms = float(statistics.median(c.round_p50s_ms))
    finally:
        for session in sessions.values():
            session.close()


@dataclass
class MeasureInputs:
    """What measuring the candidates needs: the evaluation samples (fitted to the model's inputs), their
    feed batches for scoring, one batch for timing, the model and the intra-op threads."""

    data: Any
    batches: list[dict]
    timing_feeds: dict
    model: Any
    threads: int = 0
    metric: str | None = None  # the quality metric asked for; None: the default for the first output
    output_kind: str | None = None


def measure_inputs(variant, eval_data, threads: int = 0, metric: str | None = None,
                   output_kind: str | None = None) -> tuple[MeasureInputs | None, str | None]:
    """(:class:`MeasureInputs` from the first :data:`SCORE_SAMPLES` of ``eval_data``, None) or (None,
    why they cannot be had); candidates are scored in ``metric`` (see :func:`choose_metric_asked
    <benchmark.measure.quality.choose_metric_asked>`)."""
    from ...data.base import fixed_batch
    from .common import calibration_batches, fit_calibration

    if eval_data is None:
        return None, "no evaluation data to measure on"
    try:
        data = fit_calibration(eval_data.subset(SCORE_SAMPLES), variant)
        batches = calibration_batches(data, variant, 32)
        timing = data.feed_batches(TIMING_BATCH, fixed_batch(variant.model.inputs))
    except BenchmarkError as exc:
        return None, f"the evaluation data cannot feed the model ({one_line(exc)})"
    return MeasureInputs(data, batches, timing[0] if timing else batches[0], variant.model, int(threads), metric,
                         output_kind), None


def quantize_measured(flag: tuple[str, bool, str], quantize: Callable[[Candidate, Path], None], out: Path,
                      reference: Path, workdir: Path, inputs: MeasureInputs | None,
                      note: str | None = None) -> tuple[str, bool, str, dict[str, Any]]:
    """Write the measured choice (or, when it cannot be measured, the CPU flags' choice) to ``out``
    with ``quantize``; returns (format, reduce_range, reason, the ``int8_choice`` record)."""
    import shutil

    fmt, reduce_range, why = flag
    cands = candidates(fmt, reduce_range)
    chosen = None
    if inputs is not None:
        try:
            chosen, path, record = measure_int8_choice(cands, quantize, reference, inputs, workdir)
        except Exception as exc:  # ORT raises arbitrary types: the flags' choice is kept, the reason recorded
            note = f"measuring the candidates failed ({one_line(exc)})"
        else:
            if chosen is None:
                note = f"no candidate could be measured ({record['reason']})"
    if chosen is None:
        quantize(cands[0], out)
        return fmt, reduce_range, f"{why}; not measured: {note}", {"mode": "flags", "reason": note}
    shutil.copyfile(path, out)
    return chosen.int8_format, chosen.reduce_range, record["reason"], record


def measure_int8_choice(cands: list[Candidate], quantize: Callable[[Candidate, Path], None], reference: Path,
                        inputs: MeasureInputs, workdir: Path) -> tuple[Candidate | None, Path | None, dict[str, Any]]:
    """Quantize each candidate with ``quantize(candidate, out_path)`` into ``workdir``, time it, score it
    on the evaluation batches of ``inputs`` against the FP32 graph ``reference``, and pick one.
    Returns (the chosen candidate, its file, the record); (None, None, record) when none could be
    measured (the record's ``reason`` says why)."""
    paths: dict[str, Path] = {}
    for c in cands:
        path = workdir / f"int8-{c.int8_format}{'-rr' if c.reduce_range else ''}.onnx"
        try:
            quantize(c, path)
        except BenchmarkError as exc:
            c.error = f"quantization failed: {one_line(exc)}"
            continue
        paths[c.name] = path
    threads = inputs.threads
    scored = _score(cands, paths, reference, inputs)
    _time(cands, paths, inputs.model, inputs.timing_feeds, threads)
    chosen, reason = pick(cands)
    record = {"mode": "measure", **scored, "tolerance_points": QUALITY_TOLERANCE_POINTS, "rounds": ROUNDS,
              "timing": dict(TIMING), "timing_batch": len(next(iter(inputs.timing_feeds.values()))), "threads": threads,
              "candidates": [asdict(c) | {"name": c.name} for c in cands],
              "chosen": None if chosen is None else chosen.name, "reason": reason}
    return chosen, None if chosen is None else paths[chosen.name], record


__all__ = ["ORT_DEFAULT", "QUALITY_TOLERANCE_POINTS", "ROUNDS", "SCORE_SAMPLES", "TIMING", "TIMING_BATCH", "Candidate",
           "MeasureInputs", "candidates", "measure_inputs", "measure_int8_choice", "pick", "quantize_measured"]

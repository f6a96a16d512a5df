"""The INT8 static format chosen by measuring (``int8_format=measure``) vs chosen from the CPU flags
(``auto``): what each picked, and their speed and quality, on the built-in CNN and transformer samples.

For each sample: FP32, ``int8-static`` with ``auto`` and with ``measure`` are built (calibration: 128
samples of the calibration split; the measured choice scores on the evaluation split). The record of
the measured choice (every candidate's p50 and quality drop) is printed; then the three ONNX files
are timed on ONNX Runtime (CPU), interleaved over ``--rounds`` rounds (median of the rounds' p50),
at each batch size, and evaluated on the whole evaluation split (top-1 accuracy; agreement with FP32).
The load average is printed before and after: other work on the machine makes timings noisy.

Usage::

    python benchmarks/int8_choice.py [--threads 2] [--batch-size 1,32] [--rounds 5] [--min-duration 0.5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from benchmark.backends import get_backend
from benchmark.compress import CompressContext, build_variant, reference_variant
from benchmark.config import CompressionConfig, RunConfig
from benchmark.data import resolve_dataset
from benchmark.measure.accuracy import evaluate
from benchmark.measure.hardware import detect_isa
from benchmark.measure.latency import measure_latency
from benchmark.models import load_model

SAMPLES = ("digits-cnn", "digits-transformer")


def _load() -> str:
    return open("/proc/loadavg").read().strip() if os.path.exists("/proc/loadavg") else "n/a"


def _build(model, fmt: str, ctx: CompressContext):
    variant = build_variant(model, CompressionConfig(precision="int8-static", calib_samples=128, int8_format=fmt), ctx)
    return variant, variant.records[-1].details["onnx"]


def _times(sessions: dict, feeds: dict, batch: int, threads: int, rounds: int, seconds: float) -> dict[str, float]:
    cfg = RunConfig(backend="onnxruntime", device="cpu", batch_size=batch, threads=threads, warmup_iters=5,
                    warmup_s=0.1, min_iters=20, min_duration_s=seconds, max_iters=100000)
    p50s: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            p50s[name].append(measure_latency(session, feeds, cfg, "cpu").p50_ms)
    return {k: statistics.median(v) for k, v in p50s.items()}


def run_sample(name: str, args, work: Path) -> None:
    model = load_model(f"sample:{name}")
    evaluation = resolve_dataset(None, model, "test")
    calib = resolve_dataset(None, model, "calib").subset(128)
    ctx = CompressContext(workdir=work, calib_data=calib, eval_data=evaluation, threads=args.threads)
    variants = {"fp32": reference_variant(model)}
    details = {}
    for fmt in ("auto", "measure"):
        variants[fmt], details[fmt] = _build(model, fmt, ctx)
    print(f"\n{name}: {len(evaluation)} evaluation samples")
    for fmt, d in details.items():
        print(f"  {fmt:8s} -> {d['int8_format'].upper()}{' reduce_range' if d['reduce_range'] else ''}: "
              f"{d['int8_format_reason']}")
    for c in details["measure"]["int8_choice"].get("candidates") or []:
        p50 = "-" if c["p50_ms"] is None else f"{c['p50_ms']:.3f} ms"
        drop = "-" if c["drop_points"] is None else f"{c['drop_points']:+.2f} points"
        print(f"    candidate {c['name']:18s} ({c['source']}): p50 {p50} at batch "
              f"{details['measure']['int8_choice']['timing_batch']}, quality drop {drop}{' ' + c['error'] if c['error'] else ''}")
    backend = get_backend("onnxruntime")
    sessions = {k: backend.prepare(v, "cpu", threads=args.threads, workdir=work) for k, v in variants.items()}
    try:
        reports = {k: evaluate(s, evaluation, 64) for k, s in sessions.items()}
        ref = reports["fp32"].logits
        for k, s in sessions.items():
            agree = evaluate(s, evaluation, 64, reference_outputs=ref).top1_agreement if k != "fp32" else 1.0
            print(f"  {k:8s} top-1 {100 * reports[k].top1:.2f} %, agreement with FP32 {100 * agree:.2f} %")
        for batch in args.batch_sizes:
            feeds = next(iter(evaluation.batches(batch)))[0]
            t = _times(sessions, feeds, batch, args.threads, args.rounds, args.min_duration)
            print(f"  batch {batch}: p50 fp32 {t['fp32']:.3f} ms, auto {t['auto']:.3f} ms ({t['fp32'] / t['auto']:.2f}x), "
                  f"measure {t['measure']:.3f} ms ({t['fp32'] / t['measure']:.2f}x) "
                  f"[median of {args.rounds} interleaved rounds]")
    finally:
        for s in sessions.values():
            s.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", dest="batch_sizes", default="1,32")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--min-duration", type=float, default=0.5)
    args = ap.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print(f"load: {_load()}")
    print(f"cpu: {detect_isa().summary()}; {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for name in SAMPLES:
            run_sample(name, args, Path(tmp))
    print(f"\nload after: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

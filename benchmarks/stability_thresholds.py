"""How often ordinary timings fail each stability check on this machine (numbers, not a test).

Times the built-in ``sample:digits-cnn`` on ONNX Runtime (FP32, batch 1 and 8, 1 and all threads)
``--repeats`` times each, the way a sweep does (bind, warm-up, a timed loop of at least
``--min-duration`` seconds), with the CPU use of other processes sampled around each loop. Prints
one line per timing (p50, CV, p99/p50, min/p50, other processes' CPU cores) and, per check and
threshold, the share of timings it would flag; then the share flagged by the defaults of
:class:`benchmark.measure.stability.Thresholds`, and how far the p50 moved between repeats of the
same setting (the quantity the checks are meant to protect).

On a quiet machine the defaults should flag (almost) nothing; on a busy one the load check flags
what no distribution check can see. Usage::

    python benchmarks/stability_thresholds.py [--repeats 5] [--min-duration 0.5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path


def timings(repeats: int, min_duration_s: float):
    """[(setting, LatencyStats, LoadSample)] for every repeat of every setting."""
    from benchmark.backends import get_backend
    from benchmark.compress import reference_variant
    from benchmark.config import RunConfig
    from benchmark.measure.latency import measure_latency
    from benchmark.measure.stability import LoadProbe
    from benchmark.models import load_model

    model = load_model("sample:digits-cnn")
    variant = reference_variant(model)
    out = []
    with tempfile.TemporaryDirectory() as work:
        for threads in (1, 0):
            session = get_backend("onnxruntime").prepare(variant, device="cpu", threads=threads, workdir=Path(work))
            try:
                for batch in (1, 8):
                    cfg = RunConfig(backend="onnxruntime", batch_size=batch, threads=threads,
                                    min_duration_s=min_duration_s)
                    for _ in range(repeats):
                        with LoadProbe() as probe:
                            stats = measure_latency(session, model.example_inputs(batch), cfg)
                        out.append(((threads, batch), stats, probe.sample))
            finally:
                session.close()
    return out


def main(argv=None) -> int:
    from benchmark.measure.stability import DEFAULT_THRESHOLDS, assess

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-duration", type=float, default=0.5)
    args = ap.parse_args(argv)
    rows = timings(args.repeats, args.min_duration)
    print(f"{os.cpu_count()} CPUs, 1-minute load average {os.getloadavg()[0]:.2f}")
    print(f"{'threads':>7} {'batch':>5} {'p50 ms':>8} {'cv':>6} {'p99/p50':>8} {'min/p50':>8} {'other cores':>11}  "
          "flagged by the defaults")
    verdicts = []
    for (threads, batch), stats, load in rows:
        v = assess(stats, load, DEFAULT_THRESHOLDS, threads=threads)
        verdicts.append(v)
        print(f"{threads or 'all':>7} {batch:>5} {stats.p50_ms:8.4f} {v.cv:6.2f} {v.p99_over_p50:8.2f} "
              f"{v.min_over_p50:8.2f} {v.other_cpu_cores if v.other_cpu_cores is not None else float('nan'):11.2f}  "
              f"{v.reason or '-'}")
    n = len(verdicts)
    print("\nshare of timings each check flags, by threshold:")
    for name, values, limits, above in (("CV", [v.cv for v in verdicts], (0.5, 1.0, 2.0), True),
                                        ("p99/p50", [v.p99_over_p50 for v in verdicts], (2.0, 4.0, 8.0), True),
                                        ("min/p50", [v.min_over_p50 for v in verdicts], (0.3, 0.5, 0.7), False)):
        shares = ", ".join(f"{'>' if above else '<'} {t:g}: {sum((x > t) if above else (x < t) for x in values) / n:.0%}"
                           for t in limits)
        print(f"  {name:8} {shares}")
    print(f"flagged by the defaults (max_cv {DEFAULT_THRESHOLDS.max_cv:g}, p99/p50 {DEFAULT_THRESHOLDS.max_p99_over_p50:g}, "
          f"min/p50 {DEFAULT_THRESHOLDS.min_min_over_p50:g}, other processes' CPU): "
          f"{sum(v.unstable for v in verdicts)}/{n}; without the load check: "
          f"{sum(any(not r.startswith('other processes') for r in v.reasons) for v in verdicts)}/{n}")
    print("\np50 spread between repeats of one setting (max/min):")
    for setting in sorted({s for s, _, _ in rows}):
        p50s = [st.p50_ms for s, st, _ in rows if s == setting]
        print(f"  threads {setting[0] or 'all'}, batch {setting[1]}: {max(p50s) / min(p50s):.2f}x "
              f"(median {statistics.median(p50s):.4f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

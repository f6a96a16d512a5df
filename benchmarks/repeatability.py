"""Repeatability: the same sweep measured 3 times, each in fresh job processes.

Sweep: ``sample:digits-cnn`` fp32 and int8-static on onnxruntime and pytorch, batch 1 and 32.
For each row prints the three p50 latencies and their spread = (max - min) / median. A spread of
a few percent means differences larger than that between variants are real on this machine; noise
from other processes on the machine shows up here first.

One intra-op thread by default (see ``default_sweep.py`` on 2 threads sharing 2 busy cores).

    python benchmarks/repeatability.py [--repeats 3] [--min-duration 0.5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmark.config import SweepConfig
from benchmark.store import Store
from benchmark.sweep import run_sweep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-duration", type=float, default=0.5, help="timed seconds per run (default 0.5)")
    ap.add_argument("--min-iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1; 0 = all cores)")
    ap.add_argument("--db", help="results database (default: a fresh temporary one)")
    args = ap.parse_args(argv)
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="slimbench-repeat-")) / "results.db"
    store = Store(db)
    cfg = SweepConfig(model="sample:digits-cnn", precisions=("fp32", "int8-static"),
                      backends=("onnxruntime", "pytorch"), batch_sizes=(1, 32), min_duration_s=args.min_duration,
                      min_iters=args.min_iters, threads=args.threads, eval_samples=64)
    print(f"load average before {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; threads {args.threads}", flush=True)
    p50s: dict[tuple, list[float | None]] = {}
    t0 = time.perf_counter()
    for i in range(args.repeats):
        sid = run_sweep(cfg, store, lambda m, f: None)
        for r in store.get_results(sid):
            key = (r.variant, r.backend, r.batch_size)
            p50s.setdefault(key, []).append((r.latency_ms or {}).get("p50") if r.status == "ok" else None)
        print(f"repeat {i + 1}/{args.repeats} done (sweep {sid}, {time.perf_counter() - t0:.0f} s)", flush=True)
    head = f"{'variant':22} {'backend':12} {'batch':>5}  " + "  ".join(
        f"{'p50 #' + str(i + 1) + ' (ms)':>13}" for i in range(args.repeats)) + f"  {'spread (%)':>10}"
    print(head)
    print("-" * len(head))
    spreads = []
    for (variant, backend, batch), values in p50s.items():
        cells = "  ".join(f"{v:13.4f}" if v is not None else f"{'failed':>13}" for v in values)
        ok = [v for v in values if v is not None]
        spread = (max(ok) - min(ok)) / statistics.median(ok) * 100 if len(ok) == len(values) and ok else None
        if spread is not None:
            spreads.append(spread)
        print(f"{variant:22} {backend:12} {batch:>5}  {cells}  {spread:10.2f}" if spread is not None
              else f"{variant:22} {backend:12} {batch:>5}  {cells}  {'-':>10}")
    if spreads:
        print(f"\nspread (max-min)/median of p50 over {args.repeats} repeats: median {statistics.median(spreads):.2f} %, "
              f"worst {max(spreads):.2f} %; load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

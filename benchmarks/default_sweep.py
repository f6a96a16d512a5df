"""The default sweep on the built-in ``sample:digits-cnn``, timed end to end.

Variants: fp32, fp16, bf16, int8-dynamic, int8-static and fp32 with structured pruning 0.5;
backends pytorch and onnxruntime; batch sizes 1 and 32 (24 rows). Each variant is built once in
its own isolated job; every row is stored as it lands. Prints the wall time (job start-up, model
load, variant builds, ONNX export, evaluation on the whole test split and the timed loops) and
the result table.

Timing settings (defaults): at least 0.3 s and 10 iterations per run after at least 0.2 s and 5
iterations of warm-up, one intra-op thread. On a 2-core machine that also runs other work, PyTorch
with 2 OpenMP threads measured ~170 ms per batch-1 call of this model instead of ~0.3 ms with 1
thread (the threads wait for each other whenever one loses its core); ``--threads 0`` uses all cores.
Usage::

    python benchmarks/default_sweep.py [--db PATH] [--min-duration 0.3] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmark.cli_run import format_table
from benchmark.config import SweepConfig
from benchmark.store import Store
from benchmark.sweep import estimate_duration_s, plan_sweep, run_sweep


def configs(min_duration_s: float, min_iters: int, threads: int) -> list[SweepConfig]:
    common = dict(model="sample:digits-cnn", backends=("pytorch", "onnxruntime"), batch_sizes=(1, 32),
                  min_duration_s=min_duration_s, min_iters=min_iters, threads=threads, eval_samples=0)
    return [
        SweepConfig(precisions=("fp32", "fp16", "bf16", "int8-dynamic", "int8-static"), **common),
        SweepConfig(precisions=("fp32",), prune_ratios=(0.5,), prune_kind="structured", **common),
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="results database (default: a fresh temporary one)")
    ap.add_argument("--min-duration", type=float, default=0.3, help="timed seconds per run (default 0.3)")
    ap.add_argument("--min-iters", type=int, default=10, help="timed iterations per run (default 10)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1; 0 = all cores)")
    args = ap.parse_args(argv)
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="slimbench-bench-")) / "results.db"
    store = Store(db)
    cfgs = configs(args.min_duration, args.min_iters, args.threads)
    estimate = sum(estimate_duration_s(plan_sweep(c), c) for c in cfgs)
    print(f"default sweep on sample:digits-cnn; estimate {estimate:.0f} s; database {db}; "
          f"load average before {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    t0 = time.perf_counter()
    ids = [run_sweep(c, store, lambda m, f: None) for c in cfgs]
    wall = time.perf_counter() - t0
    results = store.get_results(ids)
    print(format_table(results))
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped")}
    print(f"\n{len(results)} rows ({counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped) "
          f"in {wall:.1f} s wall time (sweeps {', '.join(map(str, ids))}); load average after "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

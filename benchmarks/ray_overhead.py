"""The same sweep through ``--executor ray`` on one Ray node vs the local executor.

Starts a one-node Ray cluster on this machine (``ray.init``, its start-up time printed on its
own: a user connects to a running cluster), then runs the sweep alternately with the local
executor and with the Ray executor (target ``all`` = this one node), ``--rounds`` times each; the
order flips every round (local, ray, ray, local, ...) so drift in the machine's load does not
favour either.
Both executors run the same isolated job under the same per-device queue; the Ray path adds the
task hop, shipping nothing for a built-in sample, and streaming events back through Ray.

Prints the wall time of each sweep, and per row the median p50 latency of each executor over the
rounds with their ratio. Goals: the same p50 within noise (the repeatability spread of this
machine), wall time within +20 %.

Usage::

    python benchmarks/ray_overhead.py [--rounds 2] [--min-duration 0.5] [--threads 1]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmark.config import SweepConfig
from benchmark.store import Store
from benchmark.sweep import run_sweep


def sweep(executor: str, min_duration_s: float, threads: int) -> SweepConfig:
    return SweepConfig(model="sample:digits-cnn", precisions=("fp32", "int8-static"),
                       backends=("onnxruntime", "pytorch"), batch_sizes=(1, 32), min_duration_s=min_duration_s,
                       min_iters=10, threads=threads, eval_samples=256, executor=executor)


def start_ray() -> float:
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=100 * 2**20,
             log_to_driver=False, logging_level=logging.WARNING)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="sweeps per executor, alternating (default 2)")
    ap.add_argument("--min-duration", type=float, default=0.5, help="timed seconds per run (default 0.5)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
    args = ap.parse_args(argv)
    store = Store(Path(tempfile.mkdtemp(prefix="slimbench-ray-bench-")) / "results.db")
    print(f"ray executor overhead on sample:digits-cnn (fp32, int8-static; onnxruntime, pytorch; batch 1, 32); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    print(f"one-node Ray cluster started in {start_ray():.1f} s", flush=True)
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    p50: dict[tuple, dict[str, list[float]]] = {}
    for round_ in range(args.rounds):
        for executor in ("local", "ray") if round_ % 2 == 0 else ("ray", "local"):
            t0 = time.perf_counter()
            sid = run_sweep(sweep(executor, args.min_duration, args.threads), store, lambda m, f: None)
            walls[executor].append(time.perf_counter() - t0)
            for r in store.get_results(sid):
                if r.status != "ok":
                    print(f"  {executor}: {r.variant} {r.backend} batch {r.batch_size}: {r.status} ({r.error})")
                    continue
                p50.setdefault((r.variant, r.backend, r.batch_size), {"local": [], "ray": []})[executor].append(
                    r.latency_ms["p50"])
            print(f"round {round_ + 1}: {executor:5s} sweep {walls[executor][-1]:6.1f} s", flush=True)
    print(f"\n{'variant':20s} {'backend':12s} {'batch':>5s} {'local p50 (ms)':>15s} {'ray p50 (ms)':>13s} "
          f"{'ray/local':>9s}")
    ratios = []
    for (variant, backend, bs), by in sorted(p50.items()):
        if not by["local"] or not by["ray"]:
            continue
        loc, ray_ = statistics.median(by["local"]), statistics.median(by["ray"])
        ratios.append(ray_ / loc)
        print(f"{variant:20s} {backend:12s} {bs:5d} {loc:15.4f} {ray_:13.4f} {ray_ / loc:9.3f}")
    wall_local, wall_ray = statistics.median(walls["local"]), statistics.median(walls["ray"])
    print(f"\np50 ray/local: median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f} "
          f"over {len(ratios)} rows")
    print(f"wall time (median of {args.rounds}): local {wall_local:.1f} s, ray {wall_ray:.1f} s, "
          f"ray/local {wall_ray / wall_local:.3f} (goal <= 1.20); load average {os.getloadavg()[0]:.2f}")
    import ray

    ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

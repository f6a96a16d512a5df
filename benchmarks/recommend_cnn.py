"""``slimbench recommend`` on a sample model, end to end as a user runs it (goal for the CNN sample:
a recommendation within 3 minutes on 2 cores).

Runs ``python -m benchmark recommend MODEL --budget POINTS --json`` in a fresh data folder (its own
results database and device queue), times the whole command (interpreter start, the search child,
model load, every build, the timing, the held-out check, writing the model file) and prints the
recommendation: the chosen variant, its speedup over FP32 with the 95 % interval from interleaved
repeats, the quality drop on the search and the held-out split, the size change, how many
candidates were measured, and why each other family lost.

Usage::

    python benchmarks/recommend_cnn.py [--model sample:digits-cnn] [--budget 1] [--time-budget S]
                                       [--goal-s 180] [--extra "--axis prune=0"]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _num(x, spec: str) -> str:
    return "-" if x is None else format(x + 0.0, spec)


def report(out: dict, wall: float) -> list[str]:
    ch = out["chosen"]
    sig = ch.get("significance") or {}
    ci = f" [{sig['speedup_ci_low']:.2f}, {sig['speedup_ci_high']:.2f}]" if sig.get("speedup_ci_low") else ""
    counts = out["counts"]
    lines = [
        f"model {out['model']}, batch {out['batch_size']}, {out['device']} ({out.get('cpu')}), budget "
        f"{out['budget_points']:g} point(s) of {out['metric']}",
        f"recommendation: {'keep FP32 (' + ch['variant'] + ')' if out['keep_fp32'] else ch['variant']} on {ch['backend']}",
        f"  speedup vs FP32 on {ch['backend']} (p50): {_num(ch.get('speedup_vs_fp32'), '.2f')}x{ci}, "
        f"p50 {_num((ch.get('latency_ms') or {}).get('p50'), '.4g')} ms",
        f"  quality drop: {_num(ch.get('quality_drop_points'), '.2f')} points on the search split "
        f"({out['splits']['search']['samples']} samples), {_num(ch.get('holdout_drop_points'), '.2f')} on the held-out "
        f"split ({out['splits']['holdout']['samples']} samples); size {_num(ch.get('size_vs_fp32'), '.2f')}x FP32",
        f"  reason: {out['reason']}",
        f"candidates: {counts['measured']} measured of {counts['candidates']} ({counts['built']} builds, "
        f"{counts['finalists']} in the final round); search {out['elapsed_s']:.1f} s, command {wall:.1f} s wall",
        "families:",
    ]
    lines += [f"  {f['family']:34s} {'chosen' if f['won'] else f['reason']}" for f in out["families"]]
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sample:digits-cnn")
    ap.add_argument("--budget", default="1", help="quality budget in points (default 1)")
    ap.add_argument("--time-budget", help="seconds the search may take (default: the command's default)")
    ap.add_argument("--goal-s", type=float, default=180.0, help="wall-time goal of the whole command (default 180)")
    ap.add_argument("--extra", default="", help="more recommend flags, e.g. \"--axis prune=0\"")
    args = ap.parse_args(argv)
    data = Path(tempfile.mkdtemp(prefix="slimbench-bench-recommend-"))
    cmd = [sys.executable, "-m", "benchmark", "recommend", args.model, "--budget", args.budget, "--json",
           "--db", str(data / "results.db"), *shlex.split(args.extra)]
    if args.time_budget:
        cmd += ["--time-budget", args.time_budget]
    env = dict(os.environ, SLIMBENCH_DATA_DIR=str(data))
    print(f"{' '.join(cmd[1:])}\nload average before {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
        return proc.returncode
    out = json.loads(proc.stdout)
    print("\n".join(report(out, wall)))
    verdict = "PASS" if wall <= args.goal_s else "FAIL"
    print(f"wall time {wall:.1f} s (goal <= {args.goal_s:g} s): {verdict}; load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Harness overhead: Slimbench's ``measure_latency`` vs a bare ``session.run`` loop.

Both time the same ONNX Runtime session on the same inputs, one ``perf_counter_ns`` pair per
iteration; blocks alternate (A B B A ...) over several rounds so drift and neighbours' load hit
both alike. Prints both p50s and their ratio (goal: <= 1.05) for a tiny MLP (overhead-dominated,
tens of microseconds) and a small CNN (about a millisecond). Random weights: only time matters.

    python benchmarks/harness_overhead.py [--rounds 6] [--block-s 1.0] [--threads 1]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmark.backends import get_backend
from benchmark.config import InputSpec, RunConfig
from benchmark.measure.latency import measure_latency
from benchmark.models.base import LoadedModel, Variant


def _models():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).eval()
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.Linear(64, 10),
    ).eval()
    return [("mlp 64-64-10, batch 1", mlp, (1, 64)), ("cnn 3x64x64, batch 1", cnn, (1, 3, 64, 64))]


def _export(net, shape, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(shape),), str(path), dynamo=False, input_names=["x"], opset_version=17)


def bare_loop(sess, feeds, duration_s: float) -> list[float]:
    """A plain ``session.run(None, feeds)`` loop, one perf_counter_ns pair per call (ms)."""
    samples = []
    perf = time.perf_counter_ns
    run = sess.run
    end = perf() + int(duration_s * 1e9)
    while True:
        t0 = perf()
        if t0 >= end:
            break
        run(None, feeds)
        samples.append((perf() - t0) / 1e6)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--block-s", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    cfg = RunConfig(threads=args.threads, warmup_iters=20, warmup_s=0.2, min_iters=20,
                    min_duration_s=args.block_s, max_iters=10**7)
    backend = get_backend("onnxruntime")
    with tempfile.TemporaryDirectory() as tmp:
        for label, net, shape in _models():
            path = Path(tmp) / "m.onnx"
            _export(net, shape, path)
            model = LoadedModel("m", "onnx", "onnx", [InputSpec("x", shape)], onnx_path=path)
            session = backend.prepare(Variant("fp32", model, onnx_path=path), "cpu", threads=args.threads)
            feeds = model.example_inputs(batch_size=shape[0])
            raw = session.sess
            bare_loop(raw, feeds, 0.3)  # warm-up of the bare loop
            ours: list[float] = []
            bare: list[float] = []
            for r in range(args.rounds):
                order = ("ours", "bare") if r % 2 == 0 else ("bare", "ours")
                for which in order:
                    if which == "ours":
                        ours += measure_latency(session, feeds, cfg).samples_ms
                    else:
                        bare += bare_loop(raw, feeds, args.block_s)
            p_ours, p_bare = float(np.median(ours)), float(np.median(bare))
            print(f"{label}: {args.threads} thread(s), {args.rounds} rounds x {args.block_s:g} s per block")
            print(f"  measure_latency p50 {p_ours * 1000:9.2f} us  ({len(ours)} iterations)")
            print(f"  bare session.run p50 {p_bare * 1000:8.2f} us  ({len(bare)} iterations)")
            print(f"  ratio ours/bare     {p_ours / p_bare:8.3f}  (goal <= 1.05)")
            session.close()


if __name__ == "__main__":
    main()

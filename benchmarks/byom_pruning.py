"""Bring your own model: structured pruning of an uploaded ONNX file through ONNX -> PyTorch conversion.

For each network, an ONNX file is made the way model owners export (look-alikes of torchvision's
resnet18 and mobilenet_v2 at full size, random weights, ``torch.onnx.export(dynamo=False,
do_constant_folding=True)``: BatchNorm folded, equal tensors behind ``Identity`` nodes). Then:

1. conversion: :func:`benchmark.models.onnx_to_torch.convert_verified` (clean-ups, conversion,
   check against ONNX Runtime on the same input): conversion time, max abs error, cosine;
2. structured pruning: :func:`benchmark.compress.prune.prune_structured_module` (Torch-Pruning,
   L2 magnitude, ratio ``--ratio``, the classifier keeps its outputs); MACs before/after from
   Slimbench's counter (1 MAC = 1 multiply-add, batch 1);
3. re-export of the pruned module (and, as a control, of the unpruned converted module) with
   :func:`benchmark.models.export.export_onnx`;
4. latency: plain ``onnxruntime.InferenceSession`` on the uploaded file, the control and the
   pruned file (CPU provider, ``--threads`` intra-op threads, sequential), batch ``--batch``,
   the three interleaved for ``--rounds`` rounds of ``--block-s`` seconds each; median per file.

The goal: latency ratio (uploaded / pruned) at least 0.85x the MACs ratio, and at least 3x on a
ResNet-18-sized net at ratio 0.5.

    python benchmarks/byom_pruning.py [--models resnet18,mobilenetv2] [--ratio 0.5] [--batch 1]
                                      [--threads 2] [--rounds 6] [--block-s 1.0] [--round-to 8]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmark.compress.prune import prune_structured_module
from benchmark.machine import cpu_info
from benchmark.models.export import export_onnx
from benchmark.models.loaders import load_model
from benchmark.models.onnx_to_torch import convert_verified
from sample_models.lookalikes import build_lookalike


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def interleaved_medians(paths: dict[str, Path], feeds: dict, threads: int, rounds: int, block_s: float) -> dict[str, float]:
    """Median per-run latency (ms) of each file, timed in interleaved blocks."""
    sessions = {k: _session(p, threads) for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for sess in sessions.values():  # warm-up
        for _ in range(5):
            sess.run(None, feeds)
    for r in range(rounds):
        order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
        for k in order:
            sess = sessions[k]
            end = time.perf_counter() + block_s
            while time.perf_counter() < end:
                t0 = time.perf_counter_ns()
                sess.run(None, feeds)
                times[k].append((time.perf_counter_ns() - t0) / 1e6)
    return {k: statistics.median(v) for k, v in times.items()}


def run_one(name: str, folder: Path, args) -> None:
    la = build_lookalike(name, folder)
    conv = convert_verified(la.path, la.feeds)
    ver = conv.verification
    loaded = load_model(la.path)
    example = tuple(torch.from_numpy(v[:1]) for v in la.feeds.values())
    t0 = time.perf_counter()
    pruned, stats = prune_structured_module(conv.module, example, args.ratio, "l2", round_to=args.round_to)
    prune_s = time.perf_counter() - t0
    control = export_onnx(conv.module, loaded.inputs, folder / f"{name}-converted.onnx").path
    pruned_path = export_onnx(pruned, loaded.inputs, folder / f"{name}-pruned.onnx").path
    rng = np.random.default_rng(0)
    feeds = {"input": rng.standard_normal((args.batch, *la.feeds["input"].shape[1:])).astype(np.float32)}
    check = np.abs(_session(pruned_path, 1).run(None, feeds)[0] - pruned(torch.from_numpy(feeds["input"])).detach().numpy()).max()
    med = interleaved_medians({"uploaded": la.path, "converted": control, "pruned": pruned_path}, feeds,
                              args.threads, args.rounds, args.block_s)
    macs_ratio = stats["macs_before"] / stats["macs_after"]
    lat_ratio = med["uploaded"] / med["pruned"]
    print(f"{name}: {la.imitates}")
    print(f"  conversion        {conv.conversion_time_s:8.2f} s   max abs err vs ORT {ver.max_abs_err:.2e}   cosine {ver.cosine:.7f}")
    print(f"  pruning (L2 {args.ratio:g})  {prune_s:8.2f} s   params {stats['params_before']:,} -> {stats['params_after']:,}   "
          f"re-exported pruned file vs module: max abs err {check:.1e}")
    print(f"  MACs (batch 1)    {stats['macs_before'] / 1e9:8.3f} G -> {stats['macs_after'] / 1e9:.3f} G   ratio {macs_ratio:.2f}x")
    print(f"  ORT p50 batch {args.batch:<3} uploaded {med['uploaded']:.2f} ms   converted+re-exported {med['converted']:.2f} ms   "
          f"pruned {med['pruned']:.2f} ms")
    goal = 0.85 * macs_ratio
    print(f"  latency ratio     {lat_ratio:8.2f}x  (vs re-exported unpruned {med['converted'] / med['pruned']:.2f}x)   "
          f"latency/MACs {lat_ratio / macs_ratio:.2f}   goal >= {goal:.2f}x: {'met' if lat_ratio >= goal else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenetv2", help="look-alikes to run (comma-separated)")
    ap.add_argument("--ratio", type=float, default=0.5, help="structured pruning ratio")
    ap.add_argument("--batch", type=int, default=1, help="batch size for the latency runs")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved timing rounds")
    ap.add_argument("--block-s", type=float, default=1.0, help="seconds per file per round")
    ap.add_argument("--round-to", type=int, default=None, help="keep pruned channel counts a multiple of this")
    args = ap.parse_args()
    print(f"{cpu_info()[0] or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} thread(s), batch {args.batch}, {args.rounds} rounds x {args.block_s:g} s per file, "
          f"round_to {args.round_to}, load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            run_one(name.strip(), Path(tmp), args)


if __name__ == "__main__":
    main()

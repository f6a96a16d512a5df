"""Bring your own model, end to end: one Slimbench sweep through an uploaded ONNX file.

For each look-alike (torchvision's resnet18 / mobilenet_v2 architectures at full size, random
weights, exported with ``torch.onnx.export(dynamo=False, do_constant_folding=True)`` as torchvision
users do; see :mod:`sample_models.lookalikes`):

1. what applies: :func:`benchmark.applicability.check_model` on the loaded file (this converts the
   graph to PyTorch once and checks it against ONNX Runtime; the conversion time and error come
   from that record);
2. the sweep, exactly as ``slimbench run FILE.onnx --prune 0,RATIO --distill --backend
   onnxruntime,pytorch`` runs it (:func:`benchmark.sweep.run_sweep`, one isolated job per
   variant): FP32 runs the uploaded file on ONNX Runtime and its converted module on PyTorch; the
   pruned variant is the converted module pruned by Torch-Pruning (L2, ratio ``--ratio``), distilled
   without labels on random inputs against the original's outputs (no dataset), re-exported to
   ONNX for ONNX Runtime;
3. printed side by side: the MACs ratio (Slimbench's counter, 1 MAC = 1 multiply-add, batch 1) and
   the measured p50 latency ratio on each backend (fp32 / pruned, same batch and threads), the goal
   (latency ratio >= 0.85 x MACs ratio; >= 3x on a ResNet-18-sized net at ratio 0.5), and fidelity
   to the FP32 model before and after distillation (the distill record: top-1 agreement and cosine on
   the evaluation inputs; the row: fidelity of the pruned+distilled variant on each backend);
4. ``--repeats`` more sweeps without distillation (the pruned architecture is the same), since the
   FP32 and pruned variants are timed in separate jobs minutes apart: the median latency ratio and
   each sweep's, so a machine shared with other work shows as spread instead of hiding in one number.

``--applies`` also prints the "what applies" table of every small look-alike (ONNX-only ops,
recurrent and transformer graphs) for the notes.

    python benchmarks/byom_sweep.py [--models resnet18,mobilenetv2] [--ratio 0.5] [--batch 1]
        [--threads 2] [--min-duration 3] [--distill-epochs 2] [--repeats 2] [--applies]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from benchmark.applicability import check_model, format_rows
from benchmark.config import InputSpec, SweepConfig
from benchmark.machine import cpu_info
from benchmark.models import load_model
from benchmark.store import Store
from benchmark.sweep import run_sweep
from sample_models.lookalikes import SMALL, build_lookalike


def cpu_name() -> str:
    model, flags = cpu_info()
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model or platform.machine()} ({', '.join(isa) or 'no AVX2'})"


def print_applies(name: str, folder: Path) -> None:
    """The table as uploaded; where open dims kept the conversion from being checked, again with
    the shapes of the look-alike's example feeds given as ``--input`` overrides."""
    la = build_lookalike(name, folder)
    overrides = [None]
    for given in overrides:
        model = load_model(la.path, inputs=given)
        t0 = time.perf_counter()
        rows = check_model(model)
        shapes = "" if given is None else " with --input " + " ".join(s.describe() for s in given)
        print(f"\n{name} ({la.imitates}){shapes}: what applies (checked in {time.perf_counter() - t0:.2f} s)")
        for line in format_rows(rows):
            print(line)
        if given is None and any("was not checked" in r["reason"] for r in rows):
            overrides.append([InputSpec(k, tuple(v.shape), str(v.dtype)) for k, v in la.feeds.items()])


def _p50(row) -> float | None:
    return (row.latency_ms or {}).get("p50") if row is not None and row.status == "ok" else None


def sweep(path: Path, folder: Path, args, distill: bool):
    """One ``slimbench run FILE --prune 0,RATIO [--distill] --backend onnxruntime,pytorch``: its rows
    by (variant, backend), the pruned variant's name, and the seconds it took."""
    cfg = SweepConfig(model=str(path), precisions=("fp32",), prune_ratios=(0.0, args.ratio), distill=distill,
                      distill_epochs=args.distill_epochs, backends=("onnxruntime", "pytorch"),
                      batch_sizes=(args.batch,), threads=args.threads, min_duration_s=args.min_duration,
                      eval_samples=64)
    store = Store(folder / "results.db")
    t0 = time.perf_counter()
    results = store.get_results(run_sweep(cfg, store, job_timeout_s=args.timeout))
    pruned = next(r.variant for r in results if r.variant != "fp32")
    bad = [f"{r.variant}/{r.backend}: {r.status} ({r.error})" for r in results if r.status != "ok"]
    if bad:
        print("  rows not measured: " + "; ".join(bad))
    return {(r.variant, r.backend): r for r in results}, pruned, time.perf_counter() - t0


def latency_ratios(by: dict, pruned: str) -> dict[str, float]:
    """fp32 p50 / pruned p50 per backend (where both rows ran)."""
    out = {}
    for backend in ("onnxruntime", "pytorch"):
        a, b = _p50(by.get(("fp32", backend))), _p50(by.get((pruned, backend)))
        if a is not None and b is not None:
            out[backend] = a / b
            print(f"  {backend:<12} p50  fp32 {a:.3f} ms -> pruned {b:.3f} ms   ratio {a / b:.2f}x")
    return out


def print_fidelity(by: dict, pruned: str) -> None:
    """Fidelity before and after distillation: the distill record, and the pruned rows' fidelity."""
    row = by.get((pruned, "onnxruntime"))
    distill = next((c for c in (row.compression if row else []) if c.get("method") == "distill"), None)
    if distill:
        d = distill["details"]
        print(f"  distillation      {d['epochs_run']} epochs on {d['train_samples']} {d['train_data']} inputs, "
              f"{d['output_kind']} ({d['loss']}), {d['seconds']:.1f} s")
        print(f"  fidelity (eval)   {d['metric']} {d['metric_before']:.4f} -> {d['metric_after']:.4f}   "
              f"cosine {d['cosine_before']:.4f} -> {d['cosine_after']:.4f}   (before -> after distillation)")
    for backend in ("onnxruntime", "pytorch"):
        fid = (by[(pruned, backend)].fidelity or {}) if (pruned, backend) in by else {}
        if fid:
            print(f"  row fidelity      {backend}: top-1 agreement {fid.get('top1_agreement')}, cosine "
                  f"{fid.get('cosine'):.4f} vs fp32 on {backend} ({fid.get('n')} samples)")


def run_one(name: str, folder: Path, args) -> None:
    la = build_lookalike(name, folder)
    model = load_model(la.path)
    rows = {r["name"]: r for r in check_model(model)}
    conv = model.conversion or {}
    print(f"\n{name}: {la.imitates}")
    print(f"  conversion        {conv.get('conversion_time_s', float('nan')):8.2f} s   "
          f"{conv.get('summary') or model.conversion_error}")
    print(f"  what applies      prune-structured: {rows['prune-structured']['reason']}")
    by, pruned, seconds = sweep(la.path, folder, args, distill=True)
    print(f"  sweep 1 (--distill) {seconds:6.1f} s")
    ref, small = by.get(("fp32", "onnxruntime")), by.get((pruned, "onnxruntime"))
    if ref is None or small is None or not ref.macs or not small.macs:
        print("  no MACs to compare")
        return
    macs_ratio = ref.macs / small.macs
    print(f"  MACs (batch 1)    {ref.macs / 1e9:8.3f} G -> {small.macs / 1e9:.3f} G   ratio {macs_ratio:.2f}x   "
          f"params {ref.params:,} -> {small.params:,}")
    ratios = {k: [v] for k, v in latency_ratios(by, pruned).items()}
    print_fidelity(by, pruned)
    for i in range(args.repeats):  # the same sweep without distillation: the latency ratio's spread
        by, pruned, seconds = sweep(la.path, folder, args, distill=False)
        print(f"  sweep {i + 2} (no distillation) {seconds:6.1f} s")
        for k, v in latency_ratios(by, pruned).items():
            ratios.setdefault(k, []).append(v)
    goal = 0.85 * macs_ratio
    for backend, values in ratios.items():
        med = statistics.median(values)
        print(f"  {backend:<12} latency ratio (batch {args.batch}) median {med:.2f}x over {len(values)} sweeps "
              f"({', '.join(f'{v:.2f}' for v in values)}) = {med / macs_ratio:.2f} of the MACs ratio {macs_ratio:.2f}x; "
              f"goal >= {goal:.2f}x: {'met' if med >= goal else 'NOT met'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenetv2", help="look-alikes to sweep (comma-separated)")
    ap.add_argument("--ratio", type=float, default=0.5, help="structured pruning ratio")
    ap.add_argument("--batch", type=int, default=1, help="batch size of the timed runs")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads of both backends")
    ap.add_argument("--min-duration", type=float, default=3.0, help="timed seconds per run (at least)")
    ap.add_argument("--distill-epochs", type=int, default=2, help="distillation epochs")
    ap.add_argument("--timeout", type=float, default=1200.0, help="per-step job timeout (s)")
    ap.add_argument("--repeats", type=int, default=2, help="more sweeps without distillation, for the latency ratio's spread")
    ap.add_argument("--applies", action="store_true", help="also print the 'what applies' table of every small look-alike")
    args = ap.parse_args()
    print(f"{cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, onnxruntime {ort.__version__}, "
          f"{args.threads} thread(s), batch {args.batch}, >= {args.min_duration:g} s per run, "
          f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SLIMBENCH_DATA_DIR", str(Path(tmp) / "data"))
        if args.applies:
            for name in SMALL:
                print_applies(name, Path(tmp))
        for name in [n.strip() for n in args.models.split(",") if n.strip()]:
            run_one(name, Path(tmp), args)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

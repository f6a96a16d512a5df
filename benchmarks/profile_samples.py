"""Per-layer profiles and this device's peaks: where the time of FP32 and INT8 variants goes.

For ``sample:digits-cnn`` (and, with ``--resnet``, a ResNet-18-shaped network with random weights,
input 3x224x224, batch 1) the FP32 and INT8-static variants are profiled on
ONNX Runtime and PyTorch (CPU): the end-to-end p50 of a normal timed run, the sum of the per-layer
times of the untimed profiling pass and their gap, the top 5 layers by time with their MACs share,
the whole model's achieved GMAC/s as a fraction of the peak of its precision, and the measured
explanation of each INT8 row. The peaks (GEMM per precision, memory bandwidth) are measured afresh.
Each variant is profiled ``--repeat`` times, interleaved with the other precision; the run with the
median end-to-end p50 is shown, with the medians of the end-to-end p50 and the per-layer sum (the
machine may be shared: the load average is printed before and after).

Usage::

    python benchmarks/profile_samples.py [--threads 2] [--batch-size 32] [--resnet] [--min-duration 1.0] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from benchmark.compress import CompressContext, build_variant
from benchmark.config import CompressionConfig
from benchmark.data import random_dataset, resolve_dataset
from benchmark.explain import explain_row
from benchmark.measure.hardware import detect_isa
from benchmark.measure.roofline import achieved_gmacs_per_s, describe_peaks, device_peaks
from benchmark.models import load_model
from benchmark.profiling import profile_variant


def resnet18_model():
    """A ResNet-18-shaped network (torchvision's layout, random weights) as a LoadedModel; the
    onnxruntime backend runs its ONNX export."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.down = None if stride == 1 and c_in == c_out else nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            chans = [(64, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
                     (256, 512, 2), (512, 512, 1)]
            self.blocks = nn.Sequential(*[Block(a, b, s) for a, b, s in chans])
            self.fc = nn.Linear(512, 1000)

        def forward(self, x):
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    from benchmark.config import InputSpec
    from benchmark.models.base import LoadedModel

    torch.manual_seed(0)
    return LoadedModel(name="resnet18-style", format="torch", framework="torch", torch_module=ResNet18().eval(),
                       inputs=[InputSpec("input", ("batch", 3, 224, 224), "float32")])


def _report(label: str, res: dict, peaks) -> None:
    p50, total = res["end_to_end_p50_ms"], res["layers_total_ms"]
    macs = sum(r["macs"] for r in res["layers"])
    achieved = achieved_gmacs_per_s(macs, 1, p50)
    peak = peaks.peak(res["precision"])
    print(f"\n{label}: e2e p50 {p50:.3f} ms, layers total {total:.3f} ms, gap {res['gap_ms']:+.3f} ms "
          f"({100 * res['gap_fraction']:+.1f} %), {res['runs']} profiled runs; means: e2e "
          f"{res['end_to_end_mean_ms']:.3f} ms (cv {res['timing']['cv']:.2f}), "
          f"layers {res['layers_total_mean_ms']:.3f} ms")
    print(f"  model: {achieved:.1f} GMAC/s = {100 * achieved / peak:.1f} % of the {res['precision']} peak "
          f"({peak:.1f} GMAC/s); MAC layers in INT8 kernels: {res['kernels']['int8_kernel_layers']}"
          f"/{res['kernels']['mac_layers']}")
    for r in res["layers"][:5]:
        gm = "-" if r["gmacs_per_s"] is None else f"{r['gmacs_per_s']:.1f}"
        print(f"  {r['name'][:32]:32s} {','.join(r['kernels'])[:26]:26s} {r['precision']:5s} {r['time_ms']:8.3f} ms "
              f"time {100 * r['time_share']:5.1f} %  MACs {100 * (r['mac_share'] or 0):5.1f} %  {gm:>7s} GMAC/s")


def _median_run(runs: list[dict]) -> dict:
    """The run whose end-to-end p50 is the median, with the medians of the end-to-end p50 and of the
    per-layer sum over all runs (the gap recomputed from them)."""
    import statistics

    ordered = sorted(runs, key=lambda r: r["end_to_end_p50_ms"])
    res = dict(ordered[(len(ordered) - 1) // 2])
    e2e = statistics.median(r["end_to_end_p50_ms"] for r in runs)
    total = statistics.median(r["layers_total_ms"] for r in runs)
    res.update(end_to_end_p50_ms=e2e, layers_total_ms=total, gap_ms=e2e - total, gap_fraction=(e2e - total) / e2e,
               repeats=[(round(r["end_to_end_p50_ms"], 3), round(r["layers_total_ms"], 3)) for r in runs])
    return res


def _profile_pair(variants: dict, backend: str, feeds: dict, batch: int, args, work: Path) -> dict[str, dict]:
    """Each variant profiled ``args.repeat`` times, interleaved (fp32, int8, fp32, ...), as median runs."""
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for _ in range(args.repeat):
        for precision, variant in variants.items():
            runs[precision].append(profile_variant(variant, backend, feeds, batch_size=batch, threads=args.threads,
                                                   workdir=work, timing={"min_duration_s": args.min_duration}))
    return {k: _median_run(v) for k, v in runs.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--min-duration", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3, help="profiles per variant, interleaved; medians are reported")
    ap.add_argument("--resnet", action="store_true", help="also profile a ResNet-18-shaped network (batch 1)")
    args = ap.parse_args(argv)

    print(f"load: {open('/proc/loadavg').read().strip() if os.path.exists('/proc/loadavg') else 'n/a'}")
    print(f"cpu: {detect_isa().summary()}")
    peaks = device_peaks(args.threads, refresh=True)
    print(f"peaks at {args.threads} thread(s), measured in {peaks.measure_s:.1f} s "
          f"(load average {peaks.settings.get('load_average_1m')}):")
    for line in describe_peaks(peaks):
        print(f"  {line}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = [(load_model("sample:digits-cnn"), args.batch_size)]
        if args.resnet:
            models.append((resnet18_model(), 1))
        for model, batch in models:
            evaluation = resolve_dataset(None, model, "test")
            calib = resolve_dataset(None, model, "calib") or random_dataset(model.inputs, 32)
            feeds = (next(iter(evaluation.batches(batch)))[0] if evaluation is not None
                     else model.example_inputs(batch))
            ctx = CompressContext(workdir=work, calib_data=calib.subset(64), eval_data=evaluation, threads=args.threads)
            variants = {p: build_variant(model, CompressionConfig(precision=p, calib_samples=64), ctx)
                        for p in ("fp32", "int8-static")}
            onnx = variants["int8-static"].records[-1].details.get("onnx") or {}
            print(f"\n{model.name}: INT8 format {str(onnx.get('int8_format')).upper()}: {onnx.get('int8_format_reason')}")
            backends = ["onnxruntime"] + (["pytorch"] if model.torch_module is not None else [])
            for backend in backends:
                res = _profile_pair(variants, backend, feeds, batch, args, work)
                for precision, r in res.items():
                    _report(f"{model.name} {precision} on {backend}, batch {batch}", r, peaks)
                    print(f"  runs (e2e p50 ms, layers ms): {r['repeats']}")
                ref, q = res["fp32"], res["int8-static"]
                row = {"precision": "int8-static", "backend": backend, "device": "cpu", "batch_size": batch,
                       "latency_p50_ms": q["end_to_end_p50_ms"],
                       "speedup_vs_fp32": ref["end_to_end_p50_ms"] / q["end_to_end_p50_ms"]}
                for e in explain_row(row, isa=detect_isa(), peaks=peaks, profile=q, reference_profile=ref):
                    print(f"  explanation ({e['topic']}): {e['text']}")
    print(f"\nload after: {open('/proc/loadavg').read().strip() if os.path.exists('/proc/loadavg') else 'n/a'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

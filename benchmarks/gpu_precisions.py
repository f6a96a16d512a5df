"""PyTorch on CUDA: fp32 vs fp16 vs bf16 vs autocast, through Slimbench's PyTorch backend.

Models: ``sample:digits-cnn`` (1x8x8 digits, trained weights), a bigger conv net with random
weights at 3x128x128 (a ResNet-style stack, 32-64-128-256 channels, about 0.5 GMACs per image) and
``sample:digits-transformer`` (token ids + attention mask, sequence 64). Batch sizes 1 and 64.

Each model x precision x batch is prepared with ``PyTorchBackend`` (``torch_precision`` = fp32,
fp16 (``.half()``), bf16 (bfloat16 weights), autocast-fp16 / autocast-bf16 (``torch.autocast``
at inference over FP32 weights)) and timed with ``measure_latency``: inputs bound once, warm-up,
then per-iteration CUDA events (``timer`` = ``cuda_events``). Reported: p50 and mean latency in
ms, throughput in samples/s, speed-up of p50 over fp32, the peak CUDA memory PyTorch allocated
during the timed loop (``torch.cuda.max_memory_allocated``, reset before each run) and the largest
absolute difference of the first output from fp32 on the same inputs; with ``nvidia-ml-py``, the
GPU board's mean power (W) and energy per sample (mJ) over the timed loop (NVML's energy counter,
:mod:`benchmark.measure.energy`). ``--cuda-graph`` adds rows
with the backend's ``cuda_graph`` option (a captured CUDA graph replayed per iteration).

Without a CUDA device it prints "no CUDA device: nothing measured" and exits with status 0.

    python benchmarks/gpu_precisions.py [--min-s 1.0] [--batches 1 64] [--cuda-graph]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

PRECISIONS = ("fp32", "fp16", "bf16", "autocast-fp16", "autocast-bf16")


def _big_conv_net():
    import torch
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        block(32, 32, 1), block(32, 64, 2), block(64, 128, 2), block(128, 256, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    ).eval()


def _models():
    from benchmark.config import InputSpec
    from benchmark.models import load_model
    from benchmark.models.base import LoadedModel

    big = LoadedModel(name="conv-3x128x128 (random)", format="sample", framework="torch",
                      inputs=[InputSpec("image", ("batch", 3, 128, 128), "float32")], torch_module=_big_conv_net())
    return [load_model("sample:digits-cnn"), big, load_model("sample:digits-transformer")]


def _feeds(model, batch: int):
    feeds = model.example_inputs(batch_size=batch, seed=0)
    if "input_ids" in feeds:  # realistic token ids: intensities 0..16
        feeds["input_ids"] = np.random.default_rng(0).integers(0, 17, size=feeds["input_ids"].shape).astype(np.int64)
    return feeds


def main(argv=None) -> int:
    """Print the table (see the module docstring); the NVML meter, if any, is closed on the way out."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-s", type=float, default=1.0, help="timed seconds per run (at least)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--cuda-graph", action="store_true", help="add rows with the cuda_graph option")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0

    from benchmark.backends import get_backend
    from benchmark.config import RunConfig
    from benchmark.errors import BenchmarkError
    from benchmark.measure.energy import nvml_meter
    from benchmark.measure.latency import measure_latency
    from benchmark.measure.memory import gpu_peak_mb, reset_gpu_peak
    from benchmark.models.base import Variant

    props = torch.cuda.get_device_properties(0)
    print(f"device: {props.name} (compute capability {props.major}.{props.minor}, "
          f"{props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}")
    meter, why = nvml_meter("cuda")
    if meter is None:
        print(why)
    try:
        backend = get_backend("pytorch")
        settings = [(p, False) for p in PRECISIONS]
        if args.cuda_graph:
            settings += [(p, True) for p in ("fp32", "fp16")]
        header = (f"{'model':<26} {'batch':>5} {'precision':<22} {'p50 ms':>9} {'mean ms':>9} {'samples/s':>11} "
                  f"{'vs fp32':>8} {'peak MiB':>9} {'max|d| vs fp32':>15} {'W':>6} {'mJ/sample':>10}")
        print(header)
        print("-" * len(header))
        for model in _models():
            for batch in args.batches:
                feeds = _feeds(model, batch)
                ref_out = None
                ref_p50 = None
                for precision, graph in settings:
                    label = precision + (" +cuda_graph" if graph else "")
                    variant = Variant(name=precision, model=model, precision="fp32", torch_module=model.torch_module,
                                      torch_precision=precision)
                    ok, reason = backend.supports(variant, "cuda")
                    if not ok:
                        print(f"{model.name:<26} {batch:>5} {label:<22} skipped: {reason}")
                        continue
                    try:
                        session = backend.prepare(variant, "cuda", options={"cuda_graph": True} if graph else None)
                    except BenchmarkError as exc:
                        print(f"{model.name:<26} {batch:>5} {label:<22} failed: {exc}")
                        continue
                    try:
                        out = session.run(feeds)[0]
                        cfg = RunConfig(backend="pytorch", device="cuda", batch_size=batch, warmup_iters=10,
                                        warmup_s=0.3, min_iters=50, min_duration_s=args.min_s)
                        reset_gpu_peak()
                        stats = measure_latency(session, feeds, cfg, "cuda", meter=meter)
                        peak = gpu_peak_mb()
                    except (BenchmarkError, RuntimeError) as exc:  # RuntimeError: a dtype mismatch inside the model
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        print(f"{model.name:<26} {batch:>5} {label:<22} failed: {first}")
                        continue
                    finally:
                        session.close()
                    if precision == "fp32" and not graph:
                        ref_out, ref_p50 = out, stats.p50_ms
                    diff = float(np.max(np.abs(out - ref_out))) if ref_out is not None else float("nan")
                    speed = ref_p50 / stats.p50_ms if ref_p50 else float("nan")
                    assert stats.timer == "cuda_events", stats.timer
                    energy = "-" if stats.energy is None else (
                        f"{stats.energy.mean_power_w:>6.0f} "
                        f"{1000 * stats.energy.for_run(stats.iterations, batch)['joules_per_sample']:>10.4f}")
                    print(f"{model.name:<26} {batch:>5} {label:<22} {stats.p50_ms:>9.3f} {stats.mean_ms:>9.3f} "
                          f"{stats.throughput_sps(batch):>11.0f} {speed:>7.2f}x {peak or 0:>9.1f} {diff:>15.2e} {energy}")
    finally:
        if meter is not None:
            meter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""INT8 vs FP32 on ONNX Runtime (CPU): static QDQ per-channel, U8S8 vs S8S8.

The network is a small ResNet-style conv net (four stages of two basic blocks, 32-64-128-256
channels, 3x128x128 input, 10 classes; about 0.25 GMACs per image, so batch 32 is compute-bound).
It is trained briefly (``--train-steps`` Adam steps, batch 32, then BatchNorm statistics
recomputed over 256 images) on a synthetic 10-class task:
noisy oriented sinusoidal gratings, the class fixed by the (orientation, frequency) pair. It is
generated here, so nothing is downloaded. Brief training gives the logits real structure, so the
accuracy/agreement numbers mean something; ``--train-steps 0`` keeps random weights.

Quantization uses ``onnxruntime.quantization`` directly: ``quant_pre_process`` then
``quantize_static`` in QDQ format, per-channel weights, MinMax calibration on 128 training images,
once with uint8 activations / int8 weights (U8S8) and once with int8 / int8 (S8S8).

Timing: Slimbench's ``measure_latency``, batch 32, ``--threads`` intra-op threads (default 2),
the three variants interleaved over ``--rounds`` rounds; p50 over all rounds. Accuracy: top-1 on
512 held-out synthetic images, and top-1 agreement / cosine with the FP32 ONNX model's logits.

    python benchmarks/int8_vs_fp32.py [--rounds 3] [--block-s 3] [--threads 2] [--train-steps 20]
"""
from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmark.backends import get_backend
from benchmark.config import InputSpec, RunConfig
from benchmark.data.base import Dataset
from benchmark.measure.accuracy import evaluate
from benchmark.measure.latency import measure_latency
from benchmark.measure.memory import file_size_bytes
from benchmark.models.base import LoadedModel, Variant

SIZE = 128
CLASSES = 10


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class SmallResNet(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), classes: int = CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
            cin = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def gratings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` noisy oriented gratings [n, 3, SIZE, SIZE] and their classes (orientation x frequency)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    freqs = (4.0, 9.0)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE
    out = np.empty((n, 3, SIZE, SIZE), dtype=np.float32)
    for i, c in enumerate(labels):
        theta = angles[c % 5] + rng.normal(0, 0.08)
        f = freqs[c // 5] * rng.uniform(0.9, 1.1)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * f * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
        colour = rng.uniform(0.5, 1.5, size=(3, 1, 1)).astype(np.float32)
        out[i] = colour * wave + rng.normal(0, 0.8, size=(3, SIZE, SIZE))
    return out, labels


def train(net: nn.Module, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        x, y = gratings(32, seed=1000 + step)
        loss = nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    recalibrate_bn(net)
    return float(loss.detach())


def recalibrate_bn(net: nn.Module, batches: int = 8) -> None:
    """Recompute BatchNorm running statistics as plain averages over fresh batches (no gradients):
    after a short training run the momentum-averaged statistics still lag the weights."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for b in range(batches):
            x, _ = gratings(32, seed=5000 + b)
            net(torch.from_numpy(x))
    net.eval()


class Reader:
    """Calibration data for ``quantize_static``: batches of 16 training images."""

    def __init__(self, x: np.ndarray, name: str):
        self.batches = iter([{name: x[i:i + 16]} for i in range(0, len(x), 16)])

    def get_next(self):
        return next(self.batches, None)


def quantize(pre: Path, out: Path, calib: np.ndarray, activation) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre), str(out), Reader(calib, "x"), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=activation, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--block-s", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=20)
    args = ap.parse_args()
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.shape_inference import quant_pre_process

    torch.manual_seed(0)
    net = SmallResNet()
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        net.eval()(torch.zeros(1, 3, SIZE, SIZE))
    macs = fc.get_total_flops() // 2
    t0 = time.perf_counter()
    last_loss = train(net, args.train_steps, args.threads) if args.train_steps else float("nan")
    train_s = time.perf_counter() - t0
    print(f"net: SmallResNet, {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M params, "
          f"{macs / 1e9:.3f} GMACs per 3x{SIZE}x{SIZE} image")
    print(f"weights: {'trained ' + str(args.train_steps) + ' Adam steps (batch 32) on synthetic gratings' if args.train_steps else 'random'}"
          f" ({train_s:.0f} s, last loss {last_loss:.3f})")

    test_x, test_y = gratings(512, seed=7)
    calib_x, _ = gratings(128, seed=11)
    test = Dataset("gratings-test", {"x": test_x}, test_y)
    model = LoadedModel("smallresnet", "onnx", "onnx", [InputSpec("x", ("N", 3, SIZE, SIZE))], num_classes=CLASSES)
    backend = get_backend("onnxruntime")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fp32 = tmp / "fp32.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.zeros(1, 3, SIZE, SIZE),), str(fp32), dynamo=False, input_names=["x"],
                              output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                              opset_version=17)
        pre = tmp / "pre.onnx"
        quant_pre_process(str(fp32), str(pre))
        paths = {"fp32": fp32, "int8 U8S8": tmp / "u8s8.onnx", "int8 S8S8": tmp / "s8s8.onnx"}
        quantize(pre, paths["int8 U8S8"], calib_x, QuantType.QUInt8)
        quantize(pre, paths["int8 S8S8"], calib_x, QuantType.QInt8)

        sessions = {k: backend.prepare(Variant(k, model, onnx_path=p), "cpu", threads=args.threads)
                    for k, p in paths.items()}
        reports = {}
        for k, s in sessions.items():
            ref = reports["fp32"].logits if k != "fp32" else None
            reports[k] = evaluate(s, test, batch_size=64, reference_outputs=ref)
        with torch.inference_mode():
            torch_top1 = float((net(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())

        feeds = model.example_inputs(batch_size=args.batch)
        cfg = RunConfig(threads=args.threads, warmup_iters=3, warmup_s=0.5, min_iters=10,
                        min_duration_s=args.block_s, max_iters=100000)
        samples: dict[str, list[float]] = {k: [] for k in sessions}
        for r in range(args.rounds):
            order = list(sessions) if r % 2 == 0 else list(reversed(sessions))
            for k in order:
                samples[k] += measure_latency(sessions[k], feeds, cfg).samples_ms

        p50 = {k: float(np.median(v)) for k, v in samples.items()}
        print(f"ONNX Runtime CPU, batch {args.batch}, {args.threads} threads, {args.rounds} interleaved rounds "
              f"x {args.block_s:g} s; providers {sessions['fp32'].info.providers}")
        print(f"FP32 top-1 on 512 held-out images: ONNX {reports['fp32'].top1:.3f} (PyTorch {torch_top1:.3f})")
        for k in sessions:
            rep = reports[k]
            line = (f"  {k:10s} p50 {p50[k]:8.1f} ms  speedup x{p50['fp32'] / p50[k]:.2f}  "
                    f"({len(samples[k])} iters, {file_size_bytes(paths[k]) / 1e6:.2f} MB)  top-1 {rep.top1:.3f}")
            if k != "fp32":
                line += (f" (delta {rep.top1 - reports['fp32'].top1:+.3f}), agreement {rep.top1_agreement:.3f}, "
                         f"cosine {rep.cosine:.5f}")
            print(line)
        for s in sessions.values():
            s.close()


if __name__ == "__main__":
    main()

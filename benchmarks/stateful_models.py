"""FP32 and INT8 rows of two stateful voice-activity detectors, from per-feed data, with the plain command.

Builds the ``silero-vad`` look-alike (input [batch, 512], state [2, batch, 128], scalar ``sr``, an
``If`` on ``sr``, one LSTM step) and the ``sequence-lstm`` look-alike (x [time, 1, 40], h/c
[1, 1, 128]) from ``sample_models/lookalikes.py``, writes a per-feed ``.npz`` of each (``--feeds``
whole feeds, each array one rank above its input, as a recorded stream is saved) and runs exactly

    slimbench run FILE.onnx --precision fp32,int8-dynamic,int8-static --data FILE.npz

(no shape or batch flags; a scratch results database). Prints each ok row's p50, speedup over FP32
(p50 ratio, same backend), fidelity to FP32 (relative error and max abs error of the first output
over the evaluated feeds), MACs next to the hand count, and the CPU's flags.

    .venv/bin/python benchmarks/stateful_models.py [--feeds 100]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HAND_MACS = {
    # front-end conv (16 kHz branch) 63 x 64 x 16 + encoder conv 31 x 128 x 64 x 3 + LSTM 4H(I+H) + decoder
    "silero-vad": 63 * 64 * 16 + 31 * 128 * 64 * 3 + 4 * 128 * (128 + 128) + 128,
    # 40 frames x (Linear 40->64 + LSTM 4 x 128 x (64 + 128) + Linear 128->1)
    "sequence-lstm": 40 * (40 * 64 + 4 * 128 * (64 + 128) + 128),
}


def _rows(name: str, folder: Path, feeds: int) -> list[dict]:
    from sample_models.lookalikes import build_lookalike, per_feed_npz

    la = build_lookalike(name, folder)
    npz = per_feed_npz(la, folder / f"{name}.npz", feeds=feeds)
    out = folder / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmark", "run", str(la.path), "--precision", "fp32,int8-dynamic,int8-static",
           "--data", str(npz)]
    print("$ slimbench run", la.path.name, "--precision fp32,int8-dynamic,int8-static --data", npz.name)
    env = dict(os.environ, SLIMBENCH_DB=str(folder / "results.db"))
    subprocess.run(cmd + ["--quiet", "--json", str(out)], check=False, env=env, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def _print(name: str, rows: list[dict]) -> None:
    fp32 = {r["backend"]: r["latency_ms"]["p50"] for r in rows if r["status"] == "ok" and r["variant"] == "fp32"}
    print(f"{'variant':20s} {'backend':12s} {'batch':>5s} {'p50 (ms)':>9s} {'x fp32':>7s} {'rel err (%)':>11s} "
          f"{'max abs err':>11s} {'MACs':>10s}  hand count {HAND_MACS[name]:,}")
    for r in rows:
        if r["status"] != "ok":
            print(f"{r['variant']:20s} {r['backend']:12s} {r['batch_size']:5d} {r['status']}: {(r['error'] or '')[:70]}")
            continue
        p50, fid = r["latency_ms"]["p50"], r["fidelity"] or {}
        speedup = fp32[r["backend"]] / p50 if r["backend"] in fp32 else float("nan")
        rel = fid.get("rel_error")
        print(f"{r['variant']:20s} {r['backend']:12s} {r['batch_size']:5d} {p50:9.4f} {speedup:7.2f} "
              f"{'-' if rel is None else f'{100 * rel:11.3f}':>11s} {fid.get('max_abs_err', 0):11.2e} {r['macs']:>10,}")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=100, help="whole feeds per .npz (first 20 %% calibrate)")
    args = parser.parse_args()
    from benchmark.measure.hardware import detect_isa

    print(f"cpu: {detect_isa().summary()}")
    with tempfile.TemporaryDirectory(prefix="stateful-") as tmp:
        for name in ("silero-vad", "sequence-lstm"):
            _print(name, _rows(name, Path(tmp), args.feeds))


if __name__ == "__main__":
    main()

"""Screenshots of every Results tab, for the README: a sample sweep and an uploaded ONNX sweep.

Runs two sweeps into a fresh data folder, starts the dashboard on it, and drives Debian's chromium
(Playwright) through each Results tab (the Profile tab after profiling its first row), writing
``docs/screenshots/<sweep>-<tab>.png`` (1400x900, reduced to a 256-colour palette to keep the files
small):

- ``sample``: ``sample:digits-cnn`` with fp32, int8-static and structured pruning 0.5, on PyTorch
  and ONNX Runtime, batch 1 and 8;
- ``onnx``: the ResNet-style look-alike ``resnet-small`` (``sample_models/lookalikes.py``: random
  weights, 3x64x64 inputs, 10 classes) as an ONNX file with an ``.npz`` of 256 random images as its
  data (no labels: quality is top-1 agreement with FP32), with fp32, fp16, int8-dynamic and
  int8-static on ONNX Runtime, batch 1 and 8.

Usage (about 5 minutes on 2 cores)::

    python docs/make_screenshots.py [--out docs/screenshots] [--min-duration 0.5]
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABS = ("Trade-off", "Throughput", "Size & MACs", "Latency distribution", "Speedup", "Backends", "Profile")
#: tabs whose plots appear only after a button is pressed (profiling the default row takes up to minutes)
TAB_BUTTONS = {"Profile": "Profile this variant"}
VIEWPORT = {"width": 1400, "height": 900}


def sweeps(folder: Path, min_duration_s: float) -> dict[str, int]:
    """Run the two sweeps into ``folder``'s database; {name: sweep id}."""
    import numpy as np

    from benchmark.config import SweepConfig
    from benchmark.store import Store
    from benchmark.sweep import run_sweep
    from sample_models.lookalikes import build_lookalike

    look = build_lookalike("resnet-small", folder / "upload")
    data = folder / "upload" / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(data, **{name: rng.standard_normal((256, *a.shape[1:])).astype(a.dtype) for name, a in look.feeds.items()})
    timing = dict(batch_sizes=(1, 8), min_duration_s=min_duration_s, threads=1)
    configs = {
        "sample": SweepConfig(model="sample:digits-cnn", precisions=("fp32", "int8-static"), prune_ratios=(0.0, 0.5),
                              backends=("pytorch", "onnxruntime"), **timing),
        "onnx": SweepConfig(model=str(look.path), data=str(data), backends=("onnxruntime",),
                            precisions=("fp32", "fp16", "int8-dynamic", "int8-static"), **timing),
    }
    store = Store(folder / "data" / "results.db")

    def progress(text: str, fraction) -> None:
        if text.rstrip().endswith((": ok", ": skipped")) or ": failed" in text or text.startswith("done"):
            print(text, flush=True)

    return {name: run_sweep(cfg, store, progress) for name, cfg in configs.items()}


@contextmanager
def dashboard(data: Path):
    """The dashboard on a free port, reading ``data``; stopped on exit."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SLIMBENCH_DATA_DIR": str(data)}
    env.pop("SLIMBENCH_DB", None)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                    if resp.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def shrink(path: Path) -> None:
    """Rewrite a screenshot as a 256-colour palette PNG (a third of the size, same look)."""
    from PIL import Image

    with Image.open(path) as img:
        img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def shoot(url: str, ids: dict[str, int], out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport=VIEWPORT)
        for name, sweep_id in ids.items():
            page.goto(url + "/results")
            picker = page.get_by_role("combobox", name="Sweep")
            picker.wait_for(timeout=60_000)
            picker.click()
            page.get_by_role("option", name=re.compile(rf"^#{sweep_id} ")).click()
            expect(picker).to_have_value(re.compile(rf"^#{sweep_id} "), timeout=30_000)
            for tab in TABS:
                page.get_by_role("tab", name=tab, exact=True).click()
                wait_ms = 60_000
                if tab in TAB_BUTTONS:
                    page.get_by_role("tabpanel").get_by_role("button", name=TAB_BUTTONS[tab]).click()
                    wait_ms = 600_000
                panel = page.get_by_role("tabpanel").filter(has=page.locator(".js-plotly-plot"))
                panel.locator(".js-plotly-plot").first.wait_for(timeout=wait_ms)
                page.wait_for_timeout(1500)  # plotly's first draw
                page.get_by_role("tablist").first.evaluate("el => el.scrollIntoView({block: 'start'})")
                page.mouse.wheel(0, -120)  # the controls above the tabs stay in view
                page.wait_for_timeout(500)
                path = out / f"{name}-{re.sub(r'[^a-z]+', '-', tab.lower()).strip('-')}.png"
                page.screenshot(path=str(path))
                shrink(path)
                written.append(path)
        browser.close()
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    ap.add_argument("--min-duration", type=float, default=0.5, help="timed seconds per run (default 0.5)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slimbench-shots-") as tmp:
        folder = Path(tmp)
        os.environ["SLIMBENCH_DATA_DIR"] = str(folder / "data")
        ids = sweeps(folder, args.min_duration)
        with dashboard(folder / "data") as url:
            written = shoot(url, ids, out)
    total = sum(p.stat().st_size for p in written)
    print(f"wrote {len(written)} screenshots to {out} ({total / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

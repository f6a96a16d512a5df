"""The real browser path: Streamlit server in a subprocess, Debian's chromium driven by Playwright.

Skipped (with the reason) when /usr/bin/chromium is missing; CI installs it (.ci/run).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmark.results import parse_iso
from benchmark.store import Store

pytest.importorskip("playwright", reason="the playwright package is not installed (pip install 'slimbench[dev]')")
from playwright.sync_api import expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SWEEP_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_onnx(path: Path) -> Path:
    """Conv(1->4, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(4->3) on x[N,1,8,8]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype("float32"), n)
             for n, s in (("w", (4, 1, 3, 3)), ("b", (4,)), ("fw", (3, 4)), ("fb", (3,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def app(tmp_path):
    """A Streamlit server on a free port with its own data folder; stopped (with its sweeps) afterwards."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run browser tests")
    data = tmp_path / "data"
    env = {**os.environ, "SLIMBENCH_DATA_DIR": str(data)}
    env.pop("SLIMBENCH_DB", None)
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"streamlit did not become healthy: {log_path.read_text()[-2000:]}")
        time.sleep(0.3)
    try:
        yield SimpleNamespace(url=url, data=data, db=data / "results.db", tmp=tmp_path)
    finally:
        if (data / "results.db").exists():
            store = Store(data / "results.db")
            for rec in store.list_sweeps(statuses=("pending", "queued", "running", "cancelling")):
                store.request_cancel(rec.id)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _wait_text(page, app, text, timeout_ms: int = 60_000) -> None:
    """Wait for ``text``; on timeout fail with what the page shows and the server log's tail."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_text(text).wait_for(timeout=timeout_ms)
    except PlaywrightTimeout:
        shown = " | ".join(line for line in page.inner_text("body").splitlines() if line.strip())[-1500:]
        log = (app.tmp / "streamlit.log").read_text(errors="replace")[-1500:]
        pytest.fail(f"{text!r} did not appear in {timeout_ms / 1000:g} s.\nPage: {shown}\nServer log: {log}")


def _goto(page, title: str) -> None:
    """Open page ``title`` from the sidebar; a click that lands while the page reruns is retried."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    path = {"Home": "home", "Model": "model", "Compress & run": "run", "Results": "results"}[title]
    for _ in range(3):
        page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
        try:
            page.wait_for_url(re.compile(rf"/{path}(\?|$)"), timeout=15_000)
            return
        except PlaywrightTimeout:
            continue
    pytest.fail(f"the sidebar link {title!r} did not open its page; the page is at {page.url}")


def _multiselect(page, label: str):
    return page.locator('[data-testid="stMultiSelect"]').filter(has_text=label)


def _small_sweep(page, *, precisions_remove=("int8-static",), backends_remove=(), batches_remove=("8",),
                 seconds="0.05", iters="5") -> None:
    """Trim the Compress & run form to a small, fast sweep."""
    for label, removals in (("Precisions", precisions_remove), ("Backends", backends_remove),
                            ("Batch sizes", batches_remove)):
        for value in removals:
            _multiselect(page, label).get_by_role("button", name=f"Remove {value}", exact=True).click()
            page.wait_for_timeout(300)
    for label, value in (("Timed seconds per run (at least)", seconds), ("Timed iterations per run (at least)", iters)):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        page.wait_for_timeout(300)


def _wait_done(store: Store, sweep_id: int, timeout_s: float = SWEEP_TIMEOUT_S):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rec = store.get_sweep(sweep_id)
        if not rec.active:
            return rec
        time.sleep(0.5)
    raise AssertionError(f"sweep {sweep_id} still {store.get_sweep(sweep_id).status} after {timeout_s} s")


def _first_sweep_done(store: Store):
    """The first sweep stored (waiting up to 30 s for it to appear), once it is done."""
    deadline = time.time() + 30
    while not store.list_sweeps() and time.time() < deadline:
        time.sleep(0.2)
    rec = _wait_done(store, store.list_sweeps()[0].id)
    assert rec.status == "done", rec.error
    return rec


def _upload(browser, app, model: Path):
    """A new page that has uploaded ``model`` on the Model page and shows its summary."""
    page = browser.new_page(viewport={"width": 1440, "height": 1800})
    page.goto(app.url + "/model")
    page.get_by_text("Upload a file").click()
    page.locator('input[type="file"]').set_input_files(str(model))
    _wait_text(page, app, "MACs (multiply-adds)")
    return page


def test_upload_onnx_run_sweep_and_see_results(app, browser):
    page = _upload(browser, app, _tiny_onnx(app.tmp / "tiny.onnx"))
    assert page.get_by_text("2.316 k", exact=True).is_visible()  # 2304 conv + 12 gemm MACs per sample
    page.screenshot(path=str(app.tmp / "model.png"), full_page=True)

    _goto(page, "Compress & run")
    _wait_text(page, app, "Model: tiny.onnx", 30_000)
    _small_sweep(page, batches_remove=())  # fp32 on every usable backend, batch 1 and 8
    page.get_by_text(re.compile(r"^\d+ runs: 1 variant x")).wait_for(timeout=30_000)
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text("Sweeps in progress").wait_for()

    store = Store(app.db)
    rec = _first_sweep_done(store)
    rows = store.get_results(rec.id)
    ok = [r for r in rows if r.status == "ok"]
    assert {(r.backend, r.batch_size) for r in ok} >= {("onnxruntime", 1), ("onnxruntime", 8)}
    assert all(r.status in ("ok", "skipped") for r in rows)

    _goto(page, "Results")
    expect(page.get_by_role("combobox", name="Sweep")).to_have_value(re.compile(r"- done \(\d+ runs\)$"), timeout=60_000)
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(timeout=60_000)
    legend = chart.locator(".legendtext")
    expect(legend.filter(has_text="Pareto front")).to_have_count(1, timeout=30_000)
    expect(legend.filter(has_text="fp32 · onnxruntime")).to_have_count(1)
    table = page.locator('[data-testid="stDataFrame"]').first.locator("table")
    assert table.get_attribute("aria-rowcount") == str(len(ok) + 1)  # header + one row per successful run
    assert "onnxruntime" in table.inner_text()
    page.wait_for_timeout(500)
    page.screenshot(path=str(app.tmp / "results.png"), full_page=True)
    assert (app.tmp / "results.png").stat().st_size > 10_000


def test_two_sessions_start_sweeps_concurrently(app, browser):
    pages = []
    for _ in range(2):
        page = browser.new_context(viewport={"width": 1440, "height": 1800}).new_page()
        page.goto(app.url + "/run")
        _wait_text(page, app, "Sweeps in progress")
        _small_sweep(page, backends_remove=("pytorch",), batches_remove=(), seconds="0.2")
        page.get_by_text(re.compile(r"^2 runs: 1 variant x 1 backend x 2 batch sizes")).wait_for(timeout=30_000)
        pages.append(page)
    for page in pages:
        page.get_by_role("button", name="Run sweep").click()

    store = Store(app.db)
    deadline = time.time() + 30
    while len(store.list_sweeps()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    sweeps = store.list_sweeps()
    assert len(sweeps) == 2
    queued_seen = False
    deadline = time.time() + SWEEP_TIMEOUT_S
    while any(store.get_sweep(s.id).active for s in sweeps) and time.time() < deadline:
        for p in pages:
            if not queued_seen and p.get_by_text(re.compile("queued behind 1 sweep")).count():
                queued_seen = True
                p.screenshot(path=str(app.tmp / "queued.png"), full_page=True)
        time.sleep(0.5)
    for s in sweeps:
        rec = store.get_sweep(s.id)
        assert rec.status == "done", rec.error
    assert queued_seen, "neither page showed a sweep queued behind the other"
    rows = store.get_results([s.id for s in sweeps])
    assert len(rows) == 4 and all(r.status == "ok" for r in rows)
    intervals = sorted((parse_iso(r.started_at), parse_iso(r.finished_at)) for r in rows)
    for (_, end), (start, _) in zip(intervals, intervals[1:]):
        assert end <= start, f"timed intervals overlap: one ended {end}, the next started {start}"
    pages[1].screenshot(path=str(app.tmp / "concurrent.png"), full_page=True)


def test_a_reload_keeps_model_data_and_settings(app, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1800})
    page.goto(app.url + "/model")
    _wait_text(page, app, "MACs (multiply-adds)")
    page.get_by_role("combobox", name="Sample").click()
    page.get_by_role("option", name=re.compile(r"^sample:digits-transformer")).click()
    expect(page.get_by_role("combobox", name="Sample")).to_have_value(re.compile("digits-transformer"), timeout=30_000)
    page.get_by_text(re.compile(r"digits-transformer.*outputs:")).wait_for(timeout=60_000)  # the page has taken it
    _goto(page, "Compress & run")
    _wait_text(page, app, "Model: sample:digits-transformer", 30_000)
    _multiselect(page, "Precisions").get_by_role("button", name="Remove int8-static", exact=True).click()
    page.wait_for_timeout(300)
    page.get_by_role("combobox", name="Evaluation data").click()
    page.get_by_role("option", name="digits-tokens", exact=True).click()
    plan = page.get_by_text(re.compile(r"^4 runs: 1 variant x 2 backends x 2 batch sizes"))
    plan.wait_for(timeout=30_000)
    before = plan.inner_text()
    box = page.get_by_label("Timed seconds per run (at least)", exact=True)
    box.fill("0.4")
    box.press("Enter")
    expect(plan).not_to_have_text(before, timeout=30_000)  # the rerun that saved every choice has finished
    assert re.search(r"[?&]s=[0-9a-f]{32}", page.url), page.url

    page.reload()
    _wait_text(page, app, "Model: sample:digits-transformer", 60_000)
    page.get_by_text(re.compile(r"^4 runs: 1 variant x 2 backends x 2 batch sizes")).wait_for(timeout=30_000)
    expect(page.get_by_role("combobox", name="Evaluation data")).to_have_value("digits-tokens")
    expect(page.get_by_label("Timed seconds per run (at least)", exact=True)).to_have_value("0.40")
    assert _multiselect(page, "Precisions").get_by_role("button", name="Remove int8-static", exact=True).count() == 0
    _goto(page, "Model")  # the Model page shows it too
    expect(page.get_by_role("combobox", name="Sample")).to_have_value(re.compile("digits-transformer"), timeout=30_000)
    page.screenshot(path=str(app.tmp / "reloaded.png"), full_page=True)


def test_a_typed_batch_size_of_40_runs(app, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1800})
    page.goto(app.url + "/run")
    _wait_text(page, app, "Sweeps in progress")
    _small_sweep(page, backends_remove=("pytorch",), batches_remove=("1", "8"))
    sizes = _multiselect(page, "Batch sizes").locator("input")
    sizes.click()
    sizes.fill("40")
    sizes.press("Enter")
    page.keyboard.press("Escape")
    page.get_by_text(re.compile(r"^1 run: 1 variant x 1 backend x 1 batch size")).wait_for(timeout=30_000)
    page.get_by_role("button", name="Run sweep").click()

    store = Store(app.db)
    rec = _first_sweep_done(store)
    rows = store.get_results(rec.id)
    assert [(r.backend, r.batch_size, r.status) for r in rows] == [("onnxruntime", 40, "ok")], [r.error for r in rows]
    _goto(page, "Results")
    expect(page.get_by_role("combobox", name="Sweep")).to_have_value(re.compile(r"- done \(1 runs\)$"), timeout=60_000)
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for(timeout=30_000)
    expect(page.get_by_role("combobox", name="Batch size for the trade-off plots")).to_have_value("40")

"""Quality metric and unstable timings through the real browser path: an embedding model's Results
use cosine similarity by default and can switch metric; a row timed on the seeded-noise backend is
re-measured, flagged, faded on the plot and named in the notice.

Uses the Streamlit server and chromium fixtures of ``test_browser`` (skipped the same way without
/usr/bin/chromium or playwright). The noise comes from ``tests/plugins_noise.py`` (seeded sleeps in
the timed call), so what is asserted does not depend on how busy the machine is.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmark.store import Store
from tiny_models import embedding_onnx

pytest.importorskip("playwright", reason="the playwright package is not installed (pip install 'slimbench[dev]')")
from playwright.sync_api import expect  # noqa: E402
from test_browser import (  # noqa: E402,F401  (fixtures)
    _first_sweep_done, _goto, _multiselect, _small_sweep, _upload, _wait_text, app, browser,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOISE_PLUGIN = str(Path(__file__).with_name("plugins_noise.py"))


def _chip(page, label: str, value: str):
    return _multiselect(page, label).get_by_role("button", name=f"Remove {value}", exact=True)


def _add_option(page, label: str, value: str) -> None:
    """Choose ``value`` in multiselect ``label`` and wait until the page has taken it."""
    box = _multiselect(page, label).locator("input")
    box.click()
    box.fill(value)
    page.get_by_role("option", name=value, exact=True).click()
    page.keyboard.press("Escape")
    expect(_chip(page, label, value)).to_have_count(1, timeout=30_000)
    page.wait_for_timeout(500)


def _open_results(page, runs: int) -> None:
    _goto(page, "Results")
    expect(page.get_by_role("combobox", name="Sweep")).to_have_value(re.compile(rf"- done \({runs} runs\)$"),
                                                                    timeout=60_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)


def _y_title(page):
    return page.locator(".js-plotly-plot").first.locator(".ytitle")


def test_an_embedding_model_is_scored_by_cosine_and_the_metric_can_be_switched(app, browser):
    page = _upload(browser, app, embedding_onnx(app.tmp / "encoder.onnx"))
    _goto(page, "Compress & run")
    _wait_text(page, app, "Model: encoder.onnx", 30_000)
    _small_sweep(page, backends_remove=("pytorch",))  # fp32 on ONNX Runtime, batch 1 ...
    _add_option(page, "Precisions", "int8-dynamic")  # ... and int8-dynamic
    page.get_by_text(re.compile(r"^2 runs: 2 variants x 1 backend x 1 batch size")).wait_for(timeout=30_000)
    page.get_by_role("button", name="Run sweep").click()

    rec = _first_sweep_done(Store(app.db))
    rows = Store(app.db).get_results(rec.id)
    assert [r.quality["metric"] for r in rows] == ["cosine", "cosine"], [r.error for r in rows]

    _open_results(page, 2)
    metric = page.get_by_role("combobox", name="Quality metric")
    expect(metric).to_have_value("cosine similarity to FP32", timeout=30_000)
    expect(_y_title(page)).to_have_text("cosine similarity to FP32", timeout=30_000)
    expect(page.get_by_text("Chosen for this model because output 'last_hidden_state' is named like an embedding")
           ).to_have_count(1, timeout=30_000)
    page.screenshot(path=str(app.tmp / "cosine.png"), full_page=True)

    metric.click()
    page.get_by_role("option", name="relative error vs FP32", exact=True).click()
    expect(metric).to_have_value("relative error vs FP32", timeout=30_000)
    expect(_y_title(page)).to_have_text("relative error vs FP32 (%), lower is better", timeout=30_000)
    page.reload()  # the choice is kept
    expect(page.get_by_role("combobox", name="Quality metric")).to_have_value("relative error vs FP32", timeout=60_000)


@pytest.fixture
def noisy_app(request, monkeypatch):
    """The app with the seeded-noise backend: every timing attempt on ``noisy`` is slowed down."""
    monkeypatch.setenv("SLIMBENCH_PLUGINS", NOISE_PLUGIN)
    monkeypatch.setenv("SLIMBENCH_NOISY_ATTEMPTS", "all")
    return request.getfixturevalue("app")


def test_a_noisy_row_is_re_measured_flagged_and_faded(noisy_app, browser):
    app = noisy_app
    page = browser.new_page(viewport={"width": 1440, "height": 1800})
    page.goto(app.url + "/run")
    _wait_text(page, app, "Sweeps in progress")
    # 30 iterations: with 60 % of them slowed, some are and some are not, whatever the seed's draws
    _small_sweep(page, backends_remove=("pytorch",), iters="30")
    _add_option(page, "Backends", "noisy")  # offered because $SLIMBENCH_PLUGINS names the plugin
    _chip(page, "Backends", "onnxruntime").click()
    expect(_chip(page, "Backends", "onnxruntime")).to_have_count(0, timeout=30_000)
    page.get_by_text(re.compile(r"^1 run: 1 variant x 1 backend x 1 batch size")).wait_for(timeout=30_000)
    expect(_chip(page, "Backends", "noisy")).to_have_count(1)
    page.get_by_role("button", name="Run sweep").click()

    rec = _first_sweep_done(Store(app.db))
    (row,) = Store(app.db).get_results(rec.id)
    assert row.backend == "noisy" and row.status == "ok", row.error
    stab = row.stability
    assert stab["unstable"] and stab["attempts"] == 3
    for reasons in stab["attempts_reasons"]:  # the seeded sleeps, not the machine's load, fail every attempt
        assert any(w in r for r in reasons for w in ("CV ", "p99/p50", "min/p50")), reasons

    _open_results(page, 1)
    notice = page.get_by_text(re.compile(r"run\(s\) have unstable timings"))
    expect(notice).to_contain_text("fp32 on noisy (batch 1)", timeout=30_000)
    opacity = page.evaluate("""() => {
        const plot = document.querySelector('.js-plotly-plot');
        const trace = plot.data.find(t => t.name === 'fp32 · noisy');
        return trace ? trace.marker.opacity : null;
    }""")
    assert opacity is not None and max(opacity) < 1.0, opacity
    expect(page.locator(".js-plotly-plot").first.get_by_text("every timing here is unstable (faded)")
           ).to_have_count(1, timeout=30_000)
    page.screenshot(path=str(app.tmp / "noisy.png"), full_page=True)

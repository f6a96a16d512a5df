"""Hostile uploads through the real browser path: the page shows one line, the server stays healthy.

Uses the Streamlit server and chromium fixtures of ``test_browser`` (skipped the same way without
/usr/bin/chromium or playwright).
"""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

import hostile_files as h

pytest.importorskip("playwright", reason="the playwright package is not installed (pip install 'slimbench[dev]')")
from test_browser import _wait_text, app, browser  # noqa: E402,F401  (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _healthy(url: str) -> bool:
    with urllib.request.urlopen(url + "/_stcore/health", timeout=10) as resp:
        return resp.read().strip() == b"ok"


def _server_rss_mb(url: str) -> float:
    """Resident memory of the Streamlit server listening on ``url``'s port."""
    import psutil

    port = url.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "streamlit" in " ".join(cmd) and port in cmd:
            return proc.memory_info().rss / 2**20
    raise AssertionError(f"no streamlit server on port {port}")


def _error_text(page) -> str:
    alert = page.locator('[data-testid="stAlertContentError"]').first
    alert.wait_for(timeout=60_000)
    return alert.inner_text().strip()


@pytest.mark.parametrize("build", [h.pt2_pickled_weight, h.pt2_pickled_sample_inputs])
def test_hostile_pt2_upload_is_refused_and_the_server_stays_healthy(app, browser, build):  # noqa: F811
    marker = app.tmp / "payload-ran.txt"
    path = build(app.tmp, marker)
    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.goto(app.url + "/model")
    page.get_by_text("Upload a file").click()
    page.locator('input[type="file"]').set_input_files(str(path))
    _wait_text(page, app, "would run code from the file")
    message = _error_text(page)
    assert message.startswith(f"{path.name}: loading this torch.export archive would run code from the file")
    assert "\n" not in message and "Tick 'I trust this file'" in message
    assert "Traceback" not in page.inner_text("body")
    assert _healthy(app.url)
    assert not marker.exists()
    uploads = Path(app.data) / "uploads"
    kept = [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []
    assert kept == []  # the refused upload was removed
    page.screenshot(path=str(app.tmp / "hostile-pt2.png"), full_page=True)


def test_huge_input_shape_is_refused_and_the_server_stays_small(app, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1440, "height": 1400})
    page.goto(app.url + "/model")
    _wait_text(page, app, "MACs (multiply-adds)")
    before_mb = _server_rss_mb(app.url)
    box = page.get_by_label("image (float32)", exact=True)
    box.fill("1x1x100000x100000")
    box.press("Enter")
    _wait_text(page, app, "needs 38,147 MB (37.3 GiB)")
    message = _error_text(page)
    assert message.startswith("example inputs of digits-cnn at batch 1 (image 1x1x100000x100000) needs 38,147 MB")
    assert "\n" not in message and "Traceback" not in page.inner_text("body")
    assert _healthy(app.url)
    assert _server_rss_mb(app.url) < before_mb + 200  # nothing was allocated in the server
    box.fill("1x1x1000x1000")  # fits in memory: counted in the child, not in the server
    box.press("Enter")
    page.get_by_text(re.compile(r"^\d+\.\d{3} G$")).first.wait_for(timeout=300_000)  # ~110 GMACs at 1000x1000
    assert _healthy(app.url)
    assert _server_rss_mb(app.url) < before_mb + 200

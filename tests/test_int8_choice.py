"""The INT8 format measured, not assumed: candidates, the pick (fastest within 0.5 points of the best),
and what a real int8-static build records for every candidate."""
from __future__ import annotations

import pytest

from benchmark.compress.quantize.int8_choice import ORT_DEFAULT, QUALITY_TOLERANCE_POINTS, Candidate, candidates, pick


def _measured(fmt, rr, p50, drop, source="x"):
    return Candidate(fmt, rr, source, p50_ms=p50, drop_points=drop, quality=1 - drop / 100)


def test_candidates_hold_the_flags_choice_and_onnx_runtimes_default():
    assert [(c.int8_format, c.reduce_range) for c in candidates("u8s8", False)] == [("u8s8", False), ORT_DEFAULT]
    # without VNNI the flags ask for 7-bit weights: U8S8 with 8-bit weights is tried as well
    assert [(c.int8_format, c.reduce_range) for c in candidates("u8s8", True)] == [
        ("u8s8", True), ("s8s8", False), ("u8s8", False)]
    assert [(c.int8_format, c.reduce_range) for c in candidates("s8s8", False)] == [("s8s8", False)]


def test_pick_keeps_the_fastest_within_the_quality_budget():
    fast_but_worse = _measured("s8s8", False, 1.0, 2.0)
    slower_best = _measured("u8s8", True, 2.0, 0.1)
    near_best = _measured("u8s8", False, 1.5, 0.1 + QUALITY_TOLERANCE_POINTS - 0.01)
    chosen, reason = pick([slower_best, fast_but_worse, near_best])
    assert chosen is near_best  # the fastest one is 1.9 points worse than the best: out of the budget
    assert reason.startswith("measured: U8S8 was the fastest within 0.5 points of the best quality")
    for text in ("U8S8 reduce_range (x) p50 2.000 ms, drop +0.10 points", "S8S8 (x) p50 1.000 ms, drop +2.00 points"):
        assert text in reason
    equal = [_measured("u8s8", False, 0.9, 0.0), _measured("s8s8", False, 0.5, 0.2)]
    assert pick(equal)[0] is equal[1] and "was the fastest (" in pick(equal)[1]


def test_pick_skips_failed_candidates_and_says_when_none_was_measured():
    broken = Candidate("s8s8", False, "x", error="scoring failed: NaN")
    ok = _measured("u8s8", False, 3.0, 0.0)
    chosen, reason = pick([ok, broken])
    assert chosen is ok and "S8S8 (x) failed: scoring failed: NaN" in reason and "only U8S8" in reason
    assert pick([broken]) == (None, "S8S8: scoring failed: NaN")


@pytest.fixture(scope="module")
def digits():
    from benchmark.data import resolve_dataset
    from benchmark.models import load_model

    model = load_model("sample:digits-cnn")
    return model, resolve_dataset(None, model, "test").subset(128), resolve_dataset(None, model, "calib").subset(64)


def _build(model, ctx, **kw):
    from benchmark.compress import build_variant
    from benchmark.config import CompressionConfig

    variant = build_variant(model, CompressionConfig(precision="int8-static", calib_samples=64, **kw), ctx)
    return variant.records[-1].details["onnx"]


def test_a_real_build_measures_both_formats_on_the_evaluation_data(digits, tmp_path):
    from benchmark.compress import CompressContext

    model, evaluation, calib = digits
    onnx = _build(model, CompressContext(workdir=tmp_path, calib_data=calib, eval_data=evaluation, threads=1))
    choice = onnx["int8_choice"]
    assert choice["mode"] == "measure" and choice["samples"] == 128 and choice["metric"] == "accuracy"
    cands = {c["name"]: c for c in choice["candidates"]}
    assert "S8S8" in cands and len(cands) >= 2  # ONNX Runtime's default is always a candidate
    for c in cands.values():
        assert c["error"] is None and c["p50_ms"] > 0 and len(c["round_p50s_ms"]) == 3
        assert c["drop_points"] is not None and 0 <= c["quality"] <= 1
    best = min(c["drop_points"] for c in cands.values())
    within = [c for c in cands.values() if c["drop_points"] <= best + QUALITY_TOLERANCE_POINTS]
    assert choice["chosen"] == min(within, key=lambda c: c["p50_ms"])["name"]
    chosen = cands[choice["chosen"]]
    assert (onnx["int8_format"], onnx["reduce_range"]) == (chosen["int8_format"], chosen["reduce_range"])
    assert onnx["int8_format_reason"] == choice["reason"] and onnx["int8_format_reason"].startswith("measured: ")
    assert onnx["nodes_quantized"] > 0


def test_without_evaluation_data_the_flags_choose_and_the_record_says_why(digits, tmp_path):
    from benchmark.compress import CompressContext

    model, _, calib = digits
    onnx = _build(model, CompressContext(workdir=tmp_path, calib_data=calib))
    assert onnx["int8_choice"] == {"mode": "flags", "reason": "no evaluation data to measure on"}
    assert onnx["int8_format_reason"].startswith("auto: ") and "not measured: no evaluation data" in onnx["int8_format_reason"]
    forced = _build(model, CompressContext(workdir=tmp_path, calib_data=calib), int8_format="s8s8")
    assert forced["int8_format"] == "s8s8" and "int8_choice" not in forced


def test_the_formats_are_scored_in_the_metric_the_sweep_asks_for(digits, tmp_path):
    from benchmark.compress import CompressContext

    model, evaluation, calib = digits
    onnx = _build(model, CompressContext(workdir=tmp_path, calib_data=calib, eval_data=evaluation, threads=1,
                                         metric="cosine"))
    choice = onnx["int8_choice"]
    assert choice["metric"] == "cosine" and "asked" in choice["metric_why"]
    for c in choice["candidates"]:  # the FP32 graph's cosine with itself is 1: the drop is 100 x (1 - cosine)
        assert c["drop_points"] == pytest.approx(100 * (1 - c["quality"]), abs=1e-6) and 0.5 < c["quality"] <= 1 + 1e-6


def test_a_metric_that_cannot_be_computed_falls_back_with_a_note():
    import numpy as np

    from benchmark.measure.quality import choose_metric_asked

    logits = np.random.default_rng(0).standard_normal((16, 10)).astype(np.float32)
    choice, note = choose_metric_asked(logits, None, override="accuracy")  # no labels: no accuracy
    assert choice.metric == "top1_agreement" and note.startswith("quality metric accuracy not used (")
    choice, note = choose_metric_asked(logits, np.arange(16) % 10, override="accuracy")
    assert choice.metric == "accuracy" and note is None

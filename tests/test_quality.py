"""Quality metric choice and values, drop in points, speedup_vs_fp32 and the quality columns of frames."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from benchmark.errors import ConfigError, MeasurementError
from benchmark.measure import derived
from benchmark.measure.accuracy import fidelity
from benchmark.measure.quality import (METRICS, choose_metric, choose_metric_for, drop_points, looks_like_probabilities,
                                       metric_value, quality, row_quality)
from benchmark.results import RunResult, calibration_summary, calibration_warning, results_to_frame


# --- choosing the metric ----------------------------------------------------------------------
def test_classifier_logits_with_labels_use_accuracy():
    c = choose_metric((100, 10), labels_shape=(100,), max_label=9)
    assert (c.metric, c.kind) == ("accuracy", "logits")


def test_classifier_logits_without_labels_use_top1_agreement():
    assert choose_metric((100, 1000)).metric == "top1_agreement"


def test_hidden_states_use_cosine_by_shape_and_by_name():
    assert choose_metric((8, 128, 384)).metric == "cosine"  # [N, T, D] without class scores
    named = choose_metric((8, 384), name="sentence_embedding")
    assert named.metric == "cosine" and "named like an embedding" in named.reason
    assert choose_metric((8, 128, 384), name="last_hidden_state").metric == "cosine"


def test_labels_that_do_not_index_the_last_axis_mean_embeddings():
    # 384-wide output, labels 0..9 but one label per position would need [N, 384]... here per sample
    c = choose_metric((8, 128, 384), labels_shape=(8,), max_label=9)
    assert c.metric == "cosine" and "do not index" in c.reason


def test_sequence_logits_use_per_position_agreement_or_accuracy():
    probs = np.random.default_rng(0).dirichlet(np.ones(30), size=(4, 25))  # [N, T, C] probabilities
    assert looks_like_probabilities(probs)
    assert choose_metric_for(probs).metric == "position_agreement"
    labels = np.random.default_rng(1).integers(0, 30, size=(4, 25))
    assert choose_metric_for(probs, labels).metric == "accuracy"  # one label per position


def test_one_value_per_sample_is_a_regression():
    assert choose_metric((16, 1)).metric == "rel_error"
    assert choose_metric((16,)).metric == "rel_error"


def test_user_named_kind_and_override_win():
    assert choose_metric((8, 1000), kind="embeddings").metric == "cosine"
    assert choose_metric((8, 128, 384), kind="logits").metric == "position_agreement"
    assert choose_metric((8, 10), override="cosine").metric == "cosine"
    with pytest.raises(ConfigError, match="must be one of accuracy, top1_agreement"):
        choose_metric((8, 10), override="f1")
    with pytest.raises(ConfigError, match="the data has no labels"):
        choose_metric((8, 10), override="accuracy")
    with pytest.raises(ConfigError, match="output kind must be one of logits, embeddings, regression"):
        choose_metric((8, 10), kind="boxes")


# --- values -----------------------------------------------------------------------------------
def test_metric_values_hand_worked():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    out = np.array([[1.0, 0.0], [2.0, 0.0]])  # sample 0 identical, sample 1 orthogonal
    assert metric_value("top1_agreement", out, ref) == pytest.approx(0.5)
    assert metric_value("cosine", out, ref) == pytest.approx(0.5)  # (1 + 0) / 2
    # ||a-b||/||b||: sample 0 -> 0, sample 1 -> sqrt(8)/2
    assert metric_value("rel_error", out, ref) == pytest.approx(math.sqrt(8) / 2 / 2)
    assert metric_value("accuracy", out, labels=np.array([0, 1])) == pytest.approx(0.5)
    with pytest.raises(MeasurementError, match="NaN"):
        metric_value("cosine", np.array([[np.nan, 1.0]]), np.array([[1.0, 1.0]]))
    with pytest.raises(MeasurementError, match="differs from the reference"):
        metric_value("cosine", out, ref[:1])


def test_quality_object_and_drop_points():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((20, 10))
    labels = ref.argmax(axis=1)
    labels[:4] = (labels[:4] + 1) % 10  # the reference gets 16/20 right
    out = ref.copy()
    out[4:8] = np.roll(out[4:8], 1, axis=1)  # the variant gets 4 more wrong
    q = quality("accuracy", out, ref, labels)
    assert q["metric"] == "accuracy" and q["higher_is_better"] is True and q["n"] == 20
    assert q["reference"] == pytest.approx(0.8)
    assert drop_points(q) == pytest.approx(100 * (0.8 - q["value"]))
    assert drop_points(q) > 0  # worse
    err = quality("rel_error", out, ref)
    assert err["reference"] == 0.0 and err["higher_is_better"] is False
    assert drop_points(err) == pytest.approx(100 * err["value"])  # lower is better: sign flipped, still > 0 = worse
    assert drop_points({"metric": "cosine", "value": None, "reference": 1.0}) is None
    assert drop_points(None) is None


def test_row_quality_says_why_not():
    q, note = row_quality("cosine", [np.zeros((2, 3)), np.zeros((1, 4))], [np.zeros((2, 3)), np.zeros((1, 4))])
    assert q is None and "vary in shape" in note
    q, note = row_quality("accuracy", np.zeros((2, 3)))
    assert q is None and "no labels" in note
    q, note = row_quality("cosine", np.ones((2, 3)), None)
    assert q is None and "reference" in note
    q, note = row_quality("cosine", np.ones((2, 3)), np.ones((2, 3)), why="a 3-D output is read as an embedding")
    assert note is None and q["value"] == pytest.approx(1.0) and q["why"].startswith("a 3-D")


def test_fidelity_reports_relative_error():
    ref = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = np.array([[3.0, 5.0], [0.0, 0.0]])
    assert fidelity(out, ref)["rel_error"] == pytest.approx((1 / 5 + 0) / 2)
    assert fidelity(np.array([[1.0, 0.0]]), np.array([[0.0, 0.0]]))["rel_error"] is None  # undefined


# --- rows, frames and speedup -----------------------------------------------------------------
def _row(variant, backend, p50, precision="fp32", prune=0.0, batch=1, sweep=1, status="ok", **kw):
    return RunResult(model="m", variant=variant, backend=backend, batch_size=batch, precision=precision,
                     prune_ratio=prune, status=status, sweep_id=sweep,
                     latency_ms={"p50": p50, "mean": p50 * 2} if p50 else None, **kw)


def test_speedup_uses_p50_of_the_same_backend_batch_and_sweep():
    rows = [_row("fp32", "onnxruntime", 10.0), _row("int8", "onnxruntime", 4.0, "int8-static"),
            _row("fp32", "pytorch", 30.0), _row("int8", "pytorch", 60.0, "int8-static"),
            _row("int8", "onnxruntime", 4.0, "int8-static", batch=8),  # no fp32 at batch 8
            _row("fp32", "onnxruntime", 1.0, sweep=2), _row("bad", "onnxruntime", None, status="failed")]
    got = derived.speedups_vs_fp32(r.to_json() for r in rows)
    assert got == [pytest.approx(1.0), pytest.approx(2.5), pytest.approx(1.0), pytest.approx(0.5), None,
                   pytest.approx(1.0), None]
    frame = derived.add_speedup(results_to_frame(rows))  # the same from flat rows
    assert list(frame["speedup_vs_fp32"].iloc[:4]) == pytest.approx([1.0, 2.5, 1.0, 0.5])


def test_fill_speedups_sets_rows_and_returns_only_the_changed_ones():
    rows = [_row("fp32", "onnxruntime", 10.0), _row("int8", "onnxruntime", 4.0, "int8-static")]
    assert [r.variant for r in derived.fill_speedups(rows)] == ["fp32", "int8"]
    assert rows[1].speedup_vs_fp32 == pytest.approx(2.5)
    assert derived.fill_speedups(rows) == []  # nothing new
    rows.append(_row("int8b", "onnxruntime", 5.0, "int8-static"))
    assert [r.variant for r in derived.fill_speedups(rows)] == ["int8b"]


def test_reference_is_the_variant_named_fp32_not_a_lowrank_one():
    rows = [_row("fp32+lowrank0.5", "onnxruntime", 2.0, macs=50), _row("fp32", "onnxruntime", 10.0, macs=100),
            _row("int8", "onnxruntime", 5.0, "int8-static")]
    assert derived.speedups_vs_fp32(rows) == [pytest.approx(5.0), pytest.approx(1.0), pytest.approx(2.0)]


def test_quality_frame_uses_stored_quality_and_derives_other_metrics():
    stored = {"metric": "cosine", "value": 0.95, "higher_is_better": True, "reference": 1.0, "n": 10}
    rows = [_row("fp32", "onnxruntime", 1.0, fidelity={"top1_agreement": 1.0, "cosine": 1.0},
                 quality={**stored, "value": 1.0}),
            _row("int8", "onnxruntime", 1.0, "int8-static", fidelity={"top1_agreement": 0.5, "cosine": 0.9},
                 quality=stored)]
    df = results_to_frame(rows)
    assert derived.default_metric(df) == "cosine"
    assert derived.available_metrics(df) == ["top1_agreement", "cosine"]
    q = derived.quality_frame(df)
    assert list(q["quality_value"]) == [1.0, 0.95]  # stored values, not the fidelity column (0.9)
    assert q["quality_drop_points"].iloc[1] == pytest.approx(5.0)
    agree = derived.quality_frame(df, "top1_agreement")
    assert list(agree["quality_value"]) == [1.0, 0.5] and agree["quality_drop_points"].iloc[1] == pytest.approx(50.0)


def test_legacy_rows_keep_accuracy_first_with_the_fp32_rows_accuracy_as_reference():
    rows = [_row("fp32", "onnxruntime", 1.0, accuracy={"top1": 0.9}, fidelity={"top1_agreement": 1.0}),
            _row("int8", "onnxruntime", 1.0, "int8-static", accuracy={"top1": 0.85}, fidelity={"top1_agreement": 0.9})]
    q = derived.quality_frame(results_to_frame(rows))
    assert set(q["quality_metric"]) == {"accuracy"}
    assert list(q["quality_reference"]) == [0.9, 0.9]
    assert q["quality_drop_points"].iloc[1] == pytest.approx(5.0)


def test_old_rows_without_the_new_fields_stay_readable():
    old = _row("fp32", "onnxruntime", 1.0).to_json()
    for key in ("quality", "speedup_vs_fp32", "stability"):
        old.pop(key)
    back = RunResult.from_json(json.dumps(old))
    assert back.quality is None and back.stability is None and back.speedup_vs_fp32 is None
    row = back.to_row()
    assert row["quality_metric"] is None and row["unstable"] is None and row["speedup_vs_fp32"] is None


def test_new_fields_flatten_into_row_columns():
    r = _row("int8", "onnxruntime", 1.0, "int8-static", speedup_vs_fp32=2.0,
             quality={"metric": "cosine", "value": 0.9, "higher_is_better": True, "reference": 1.0, "n": 5},
             stability={"unstable": True, "reasons": ["CV 0.80 > 0.25", "p99/p50 5.0 > 3"], "attempts": 3})
    row = r.to_row()
    assert (row["quality_metric"], row["quality_value"], row["quality_n"]) == ("cosine", 0.9, 5)
    assert row["speedup_vs_fp32"] == 2.0 and row["unstable"] is True and row["timing_attempts"] == 3
    assert row["stability_reason"] == "CV 0.80 > 0.25; p99/p50 5.0 > 3"


def test_calibration_requested_vs_used_and_the_warning():
    records = [{"method": "int8-static", "changed": True, "summary": "s", "details": {
        "onnx": {"int8_format": "u8s8", "int8_format_reason": "auto: CPU has avx512_vnni",
                 "calibration": {"method": "minmax", "samples": 6, "batches": 1}}}}]
    summary = calibration_summary(records, {"calib_samples": 128})
    assert summary == {"calib_samples_requested": 128, "calib_samples_used": 6, "int8_format": "u8s8",
                       "int8_format_reason": "auto: CPU has avx512_vnni"}
    text = calibration_warning(summary)
    assert "6 of the 128 samples" in text and "below 64" in text
    assert calibration_warning(calibration_summary(records[:0], {"calib_samples": 128})) is None  # fp32: no calibration
    full = [{"details": {"onnx": {"calibration": {"samples": 128}}}}]
    assert calibration_warning(calibration_summary(full, {"calib_samples": 128})) is None


def test_every_metric_has_a_column_for_old_rows():
    assert set(derived.METRIC_COLUMNS) == set(METRICS)
    cols = set(RunResult(model="", variant="", backend="", batch_size=1).to_row())
    assert set(derived.METRIC_COLUMNS.values()) <= cols
    assert isinstance(results_to_frame([]), pd.DataFrame)

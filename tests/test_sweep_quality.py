"""Sweeps store one quality object per row in a metric that fits the outputs, speedups vs FP32 as
rows arrive, and a stability verdict per timing (re-measured while unstable); the CLI shows them."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmark.__main__ import main
from benchmark.config import SweepConfig
from benchmark.errors import ConfigError
from benchmark.measure.quality import METRICS
from benchmark.results import RunResult
from benchmark.store import Store
from benchmark.sweep import run_settings, run_sweep
from benchmark.sweep.quality import MetricPick, labels_like, row_quality
from benchmark.sweep.rows import refresh_speedups
from tiny_models import embedding_onnx

NOISE_PLUGIN = str(Path(__file__).with_name("plugins_noise.py"))
FAST = dict(min_duration_s=0.05, min_iters=30, eval_samples=32, threads=1)
#: Reasons that come from the timings themselves, not from other processes' CPU use.
DISTRIBUTION_WORDS = ("CV ", "p99/p50", "min/p50")


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------
def test_metric_output_kind_and_attempts_are_checked_and_reach_the_runs():
    from benchmark.config import QUALITY_METRICS

    assert tuple(METRICS) == QUALITY_METRICS  # the config's list of names is the metrics module's
    cfg = SweepConfig(model="m.onnx", metric="cosine", output_kind="embeddings", timing_attempts=2)
    settings = run_settings(cfg)
    assert (settings["metric"], settings["output_kind"], settings["timing_attempts"]) == ("cosine", "embeddings", 2)
    assert SweepConfig(model="m.onnx", metric=" ").metric is None  # empty = the default
    with pytest.raises(ConfigError, match="quality metric must be one of accuracy, .*; got 'top5'"):
        SweepConfig(model="m.onnx", metric="top5")
    with pytest.raises(ConfigError, match="output kind must be one of logits, embeddings, regression; got 'image'"):
        SweepConfig(model="m.onnx", output_kind="image")
    with pytest.raises(ConfigError, match="timing attempts must be between 1 and 10; got 11"):
        SweepConfig(model="m.onnx", timing_attempts=11)


def test_cli_flags_come_from_the_config_fields():
    import argparse

    from benchmark.cli_run import add_run_parser, sweep_config_from_args

    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())
    args = parser.parse_args(["run", "m.onnx", "--metric", "rel_error", "--output-kind", "regression",
                              "--timing-attempts", "1"])
    cfg, _ = sweep_config_from_args(args)
    assert (cfg.metric, cfg.output_kind, cfg.timing_attempts) == ("rel_error", "regression", 1)
    assert main(["run", "m.onnx", "--metric", "top5"]) == 2


# --------------------------------------------------------------------------------------------
# the child's metric choice and a row's quality (no process)
# --------------------------------------------------------------------------------------------
def _report(logits, labels=None, top1=None):
    return SimpleNamespace(logits=logits, labels=labels, top1=top1, top5=None, n_samples=len(logits), warnings=[],
                           cosine=None, top1_agreement=None, max_abs_err=None, mean_abs_err=None, rel_error=None)


def test_the_metric_is_chosen_once_per_job_from_the_reference_outputs():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((8, 4, 16)).astype("float32")
    pick = MetricPick({}, "last_hidden_state")
    first = pick.choose(hidden, None)
    assert first.metric == "cosine" and "named like an embedding" in first.reason
    assert pick.choose(rng.standard_normal((8, 10)), None) is first  # chosen once: later outputs do not change it
    assert MetricPick({"metric": "rel_error"}).choose(hidden, None).metric == "rel_error"
    assert MetricPick({"output_kind": "logits"}).choose(hidden, None).metric == "position_agreement"


def test_accuracy_asked_for_without_labels_falls_back_with_a_note():
    hidden = np.random.default_rng(0).standard_normal((8, 4, 16))
    pick = MetricPick({"metric": "accuracy"}, "last_hidden_state")
    assert pick.choose(hidden, None).metric == "cosine"
    assert pick.note.startswith("quality metric accuracy not used (") and pick.note.endswith("; cosine instead")
    q = row_quality(_report(hidden * 0.9), False, "onnxruntime", None, pick, reference=hidden)
    assert q.quality["metric"] == "cosine" and q.quality["value"] == pytest.approx(1.0)
    assert pick.note in q.notes


def test_per_position_labels_make_sequence_logits_accurate():
    logits = np.zeros((3, 5, 7))
    labels = np.arange(15).reshape(3, 5) % 7
    logits[np.arange(3)[:, None], np.arange(5)[None, :], labels] = 1.0  # every position right
    flat = labels.reshape(-1)  # as the evaluation concatenates them
    assert labels_like(logits, flat).shape == (3, 5)
    pick = MetricPick({}, "output")
    q = row_quality(_report(logits, flat), True, "onnxruntime", None, pick)
    assert pick.choice.metric == "accuracy" and q.quality["value"] == 1.0 and q.quality["reference"] == 1.0


def test_a_reference_row_compares_with_itself_and_a_variant_without_reference_says_why():
    logits = np.random.default_rng(1).standard_normal((6, 10))
    pick = MetricPick({}, "logits")
    ref = row_quality(_report(logits), True, "onnxruntime", None, pick)
    assert ref.quality == {"metric": "top1_agreement", "value": 1.0, "higher_is_better": True, "reference": 1.0,
                           "n": 6, "why": "output 'logits' is named like logits"}
    assert ref.fidelity["rel_error"] == 0.0
    lone = row_quality(_report(logits), False, "onnxruntime", "no fidelity: the reference failed", pick, None)
    assert lone.quality is None and "no fidelity: the reference failed" in lone.notes
    assert any(n.startswith("quality (top1_agreement) not computed") for n in lone.notes)


# --------------------------------------------------------------------------------------------
# speedups stored as rows arrive
# --------------------------------------------------------------------------------------------
def _row(variant, p50, sid, precision=None, backend="onnxruntime"):
    return RunResult(model="m", variant=variant, backend=backend, batch_size=1, status="ok", sweep_id=sid,
                     precision=precision or variant, latency_ms={"p50": p50, "mean": p50})


def test_a_row_whose_reference_arrives_later_gets_its_speedup(tmp_path):
    store = Store(tmp_path / "r.db")
    sid = store.create_sweep("m", {"sweep": {}}, status="running")
    store.add_result(_row("int8-static", 0.5, sid))
    assert refresh_speedups(store, sid) == 0  # no FP32 row yet: nothing to compute
    store.add_result(_row("fp32", 2.0, sid))
    store.add_result(_row("fp16", 1.0, sid, backend="pytorch"))  # another backend: no reference there
    assert refresh_speedups(store, sid) == 2
    speedups = {(r.variant, r.backend): r.speedup_vs_fp32 for r in store.get_results(sid)}
    assert speedups == {("int8-static", "onnxruntime"): 4.0, ("fp32", "onnxruntime"): 1.0, ("fp16", "pytorch"): None}
    assert refresh_speedups(store, sid) == 0


# --------------------------------------------------------------------------------------------
# real sweeps: an embedding model on ONNX Runtime and on the seeded-noise backend
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedding_sweep(tmp_path_factory):
    """fp32 + int8-dynamic of a tiny encoder on onnxruntime and ``noisy`` (its first timing of each
    session slowed down by seeded sleeps), batch 2."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("embedding-sweep")
    mp.setenv("SLIMBENCH_PLUGINS", NOISE_PLUGIN)
    mp.setenv("SLIMBENCH_NOISY_ATTEMPTS", "1")
    mp.setenv("SLIMBENCH_DATA_DIR", str(folder / "data"))
    try:
        store = Store(folder / "r.db")
        cfg = SweepConfig(model=str(embedding_onnx(folder / "encoder.onnx")), precisions=("fp32", "int8-dynamic"),
                          backends=("onnxruntime", "noisy"), batch_sizes=(2,), **FAST)
        sid = run_sweep(cfg, store, job_timeout_s=180)
        yield SimpleNamespace(store=store, sid=sid, db=folder / "r.db",
                              rows={(r.variant, r.backend): r for r in store.get_results(sid)})
    finally:
        mp.undo()


@pytest.mark.slow
def test_an_embedding_sweep_stores_cosine_quality_and_speedups(embedding_sweep):
    rows = embedding_sweep.rows
    assert {k: r.status for k, r in rows.items()} == {k: "ok" for k in rows} and len(rows) == 4
    for (variant, backend), r in rows.items():
        q = r.quality
        assert q["metric"] == "cosine" and q["higher_is_better"] is True and q["reference"] == 1.0 and q["n"] == 32
        assert "named like an embedding" in q["why"]
        assert r.fidelity["rel_error"] is not None and r.speedup_vs_fp32 is not None
        assert r.env["run_settings"]["timing_attempts"] == 3
    assert rows[("fp32", "onnxruntime")].quality["value"] == pytest.approx(1.0)
    assert 0.99 < rows[("int8-dynamic", "onnxruntime")].quality["value"] < 1.0  # INT8 changes the outputs a little
    assert rows[("fp32", "onnxruntime")].speedup_vs_fp32 == 1.0
    int8 = rows[("int8-dynamic", "onnxruntime")]
    assert int8.speedup_vs_fp32 == pytest.approx(rows[("fp32", "onnxruntime")].latency_ms["p50"] / int8.latency_ms["p50"])


@pytest.mark.slow
def test_a_noisy_timing_is_taken_again(embedding_sweep):
    for variant in ("fp32", "int8-dynamic"):
        stab = embedding_sweep.rows[(variant, "noisy")].stability
        assert stab["attempts"] >= 2 and len(stab["attempts_p50_ms"]) == len(stab["attempts_reasons"]) == stab["attempts"]
        first = stab["attempts_reasons"][0]  # the seeded sleeps (not this machine's load) made the first one unstable
        assert any(word in reason for reason in first for word in DISTRIBUTION_WORDS), first
        clean = embedding_sweep.rows[(variant, "onnxruntime")].stability
        assert clean["attempts"] >= 1 and set(clean["thresholds"]) >= {"max_cv", "max_attempts"}


@pytest.mark.slow
def test_the_cli_shows_quality_speedup_and_timing_and_switches_the_metric(embedding_sweep, capsys):
    db = str(embedding_sweep.db)
    assert main(["results", "--db", db]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[1]
    assert "cosine similarity to FP32" in header and "drop (points)" in header and "speedup (x)" in header
    assert "timing" in header and "quality: cosine similarity to FP32; drop = 100 x (reference - value)" in out
    assert main(["results", "--db", db, "--metric", "rel_error", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["quality"]["metric"] for r in rows} == {"rel_error"}
    for r in rows:
        assert r["quality"]["higher_is_better"] is False and r["quality"]["value"] == r["fidelity"]["rel_error"]
        assert r["quality_drop_points"] == pytest.approx(100 * r["fidelity"]["rel_error"])
        assert r["speedup_vs_fp32"] is not None
    assert main(["results", "--db", db, "--metric", "rel_error"]) == 0
    assert "relative error vs FP32 (%)" in capsys.readouterr().out
    out_html = embedding_sweep.db.with_name("report.html")
    assert main(["report", "--db", db, "--out", str(out_html), "--metric", "rel_error"]) == 0
    assert "relative error vs FP32" in out_html.read_text()
    assert main(["results", "--db", db, "--metric", "f1"]) == 2
    assert "quality metric must be one of" in capsys.readouterr().err


@pytest.mark.slow
def test_noise_that_never_stops_flags_the_row(tmp_path, monkeypatch):
    monkeypatch.setenv("SLIMBENCH_PLUGINS", NOISE_PLUGIN)
    monkeypatch.setenv("SLIMBENCH_NOISY_ATTEMPTS", "all")
    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model=str(embedding_onnx(tmp_path / "encoder.onnx")), backends=("noisy",), batch_sizes=(2,),
                      timing_attempts=2, metric="accuracy", **FAST)
    (row,) = store.get_results(run_sweep(cfg, store, job_timeout_s=180))
    assert row.status == "ok" and row.stability["unstable"] and row.stability["attempts"] == 2
    assert any(word in reason for reason in row.stability["reasons"] for word in DISTRIBUTION_WORDS)
    assert any(w.startswith("unstable timing after 2 timings: ") for w in row.warnings)
    assert row.quality["metric"] == "cosine"  # accuracy was asked for, but the data has no labels
    assert any(w.startswith("quality metric accuracy not used") for w in row.warnings)

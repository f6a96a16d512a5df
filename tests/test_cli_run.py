"""`slimbench run` / `results` / `sweeps`: bad input, --json rows, TOML config, concurrent sweeps."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest

from benchmark.__main__ import main
from benchmark.results import RunResult
from benchmark.store import Store

FAST_FLAGS = ["--min-duration", "0.05", "--min-iters", "3", "--eval-samples", "32", "--threads", "1"]


@pytest.fixture
def db_with_a_row(tmp_path, monkeypatch):
    """A results DB (the default one, via SLIMBENCH_DB) that already holds a sweep and a row."""
    path = tmp_path / "existing.db"
    store = Store(path)
    sid = store.create_sweep("old-model", {"sweep": {}}, status="done")
    store.add_result(RunResult(model="old-model", variant="fp32", backend="pytorch", batch_size=1, status="ok",
                               sweep_id=sid, throughput_sps=10.0))
    monkeypatch.setenv("SLIMBENCH_DB", str(path))
    return path


def _snapshot(path):
    store = Store(path)
    return [s.id for s in store.list_sweeps()], [r.to_json() for r in store.get_results()]


@pytest.mark.parametrize("argv, message", [
    (["run", "sample:digits-cnn", "--batch-size", "0"], "batch size must be >= 1; got 0"),
    (["run", "sample:digits-cnn", "--batch-size", "1,x"], "batch size must be an integer; got 'x'"),
    (["run", "sample:digits-cnn", "--backend", "pytorch,nope"], "unknown backend 'nope'; known: "),
    (["run", "sample:digits-cnn", "--precision", "fp32,int4"], "precision must be one of fp32, fp16"),
    (["run", "sample:digits-cnn", "--prune", "1.5"], "prune ratio must be in [0, 1); got 1.5"),
    (["run", "sample:digits-cnn", "--device", "tpu"], "device must be one of cpu, cuda; got 'tpu'"),
    (["run", "sample:digits-cnn", "--timeout", "0"], "timeout must be > 0 s"),
    (["run", "sample:digits-cnn", "--cuda-graph"], "CUDA graphs apply to device cuda only"),
    (["run", "--precision", "fp32"], "no model given"),
    (["run", "--resume", "99"], "no sweep 99 in"),
    (["results", "--sweep", "42"], "no sweep 42 in"),
])
def test_bad_input_is_one_line_exit_2_and_keeps_stored_rows(argv, message, db_with_a_row, capsys):
    before = _snapshot(db_with_a_row)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err
    assert _snapshot(db_with_a_row) == before


def test_cuda_graph_flag_and_toml_key(tmp_path):
    import argparse

    from benchmark.cli_run import add_run_parser, sweep_config_from_args

    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())
    cfg, _ = sweep_config_from_args(parser.parse_args(["run", "sample:digits-cnn", "--device", "cuda", "--cuda-graph"]))
    assert cfg.cuda_graph is True and cfg.device == "cuda"
    cfg, _ = sweep_config_from_args(parser.parse_args(["run", "sample:digits-cnn"]))
    assert cfg.cuda_graph is False
    toml = tmp_path / "s.toml"
    toml.write_text('model = "sample:digits-cnn"\ndevice = "cuda"\ncuda_graph = true\n')
    cfg, _ = sweep_config_from_args(parser.parse_args(["run", "--config", str(toml)]))
    assert cfg.cuda_graph is True


def test_unwritable_db_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["run", "sample:digits-cnn", "--db", str(blocker / "results.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write results database at {blocker / 'results.db'}")
    assert err.count("\n") == 1


def test_toml_unknown_key_and_bad_value(tmp_path, capsys):
    cfg = tmp_path / "sweep.toml"
    cfg.write_text('model = "sample:digits-cnn"\nprecison = ["fp32"]\n')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "unknown key 'precison'; known keys: " in capsys.readouterr().err
    cfg.write_text('model = "sample:digits-cnn"\nbatch_size = [1, 0]\n')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "batch size must be >= 1; got 0" in capsys.readouterr().err


def test_real_process_exit_code_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", "sample:digits-cnn", "--batch-size", "0",
                           "--db", str(tmp_path / "r.db")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "error: batch size must be >= 1; got 0\n"
    debug = subprocess.run([sys.executable, "-m", "benchmark", "--debug", "run", "sample:digits-cnn",
                            "--batch-size", "0", "--db", str(tmp_path / "r.db")],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


@pytest.mark.slow
def test_mismatched_data_exit_2_nothing_stored(db_with_a_row, tmp_path):
    before = _snapshot(db_with_a_row)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark", "run", "sample:digits-cnn", "--data", "digits-tokens",
         "--backend", "pytorch", *FAST_FLAGS], capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr
    assert "input" in lines[0]  # names what does not match
    assert _snapshot(db_with_a_row) == before


JSON_KEYS = {"model", "variant", "precision", "prune_ratio", "prune_kind", "backend", "device", "providers",
             "batch_size", "status", "error", "warnings", "latency_ms", "throughput_sps", "peak_rss_mb",
             "size_bytes", "params", "macs", "flops", "accuracy", "fidelity", "env", "started_at", "finished_at"}


@pytest.mark.slow
def test_json_rows_toml_config_and_results_commands(tmp_path, capsys):
    db = tmp_path / "r.db"
    out = tmp_path / "rows.json"
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(
        'model = "sample:digits-cnn"\nprecision = ["fp32", "fp16"]\nbackend = "onnxruntime"\n'
        'batch_size = [1, 4]\nmin_duration_s = 0.05\nmin_iters = 3\neval_samples = 32\nthreads = 1\n'
    )
    # the flag overrides the file's precision list
    code = main(["run", "--config", str(cfg), "--precision", "fp32", "--db", str(db), "--json", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "p50 (ms)" in captured.out and "throughput (samples/s)" in captured.out
    rows = json.loads(out.read_text())
    assert [(r["variant"], r["backend"], r["batch_size"]) for r in rows] == [("fp32", "onnxruntime", 1),
                                                                              ("fp32", "onnxruntime", 4)]
    for r in rows:
        assert JSON_KEYS <= set(r), JSON_KEYS - set(r)
        assert r["status"] == "ok" and r["error"] is None and r["device"] == "cpu"
        assert {"mean", "std", "p50", "p90", "p95", "p99", "cv"} <= set(r["latency_ms"])
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["p99"]
        assert r["throughput_sps"] == pytest.approx(r["batch_size"] * 1000 / r["latency_ms"]["mean"])
        assert {"top1_agreement", "cosine", "max_abs_err"} <= set(r["fidelity"])
        assert r["accuracy"]["n"] == 32 and 0 <= r["accuracy"]["top1"] <= 1
        assert r["providers"] == ["CPUExecutionProvider"] and r["env"]["threads"] == 1
        assert r["macs"] > 0 and r["flops"] == 2 * r["macs"] and r["size_bytes"] > 0
        assert datetime.fromisoformat(r["started_at"]) < datetime.fromisoformat(r["finished_at"])

    assert main(["results", "--db", str(db), "--format", "json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == [r["id"] for r in rows]
    assert main(["results", "--db", str(db), "--format", "csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert {"latency_p50_ms", "latency_p99_ms", "throughput_sps", "accuracy_top1", "fidelity_cosine"} <= set(header)
    assert main(["sweeps", "--db", str(db)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[1].split()[:3] == ["1", listing[1].split()[1], "done"]


@pytest.mark.slow
def test_two_concurrent_cli_sweeps_share_the_device_queue(tmp_path):
    db = tmp_path / "r.db"
    cmd = [sys.executable, "-m", "benchmark", "run", "sample:digits-cnn", "--precision", "fp32",
           "--backend", "pytorch,onnxruntime", "--batch-size", "1,2", "--db", str(db), "--quiet", *FAST_FLAGS]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=400) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    store = Store(db)
    sweeps = store.list_sweeps()
    assert len(sweeps) == 2 and {s.status for s in sweeps} == {"done"}
    rows = store.get_results()
    assert len(rows) == 8 and {r.status for r in rows} == {"ok"}
    spans = sorted((datetime.fromisoformat(r.started_at), datetime.fromisoformat(r.finished_at), r.sweep_id)
                   for r in rows)
    for (s1, e1, _), (s2, e2, _) in zip(spans, spans[1:]):
        assert e1 <= s2, f"timed intervals overlap: {s1}..{e1} and {s2}..{e2}"
    assert len({sid for *_, sid in spans}) == 2


def test_state_dict_sweep_with_arch_flag_and_toml(tmp_path, capsys):
    import torch

    from benchmark.cli_run import read_toml
    from benchmark.models import load_model

    weights = tmp_path / "digits.pt"
    torch.save(load_model("sample:digits-cnn").torch_module.state_dict(), str(weights))
    cfg = tmp_path / "sweep.toml"
    cfg.write_text(f'model = "{weights}"\narch = "digits-cnn"\n')
    assert read_toml(cfg)["arch"] == "digits-cnn"

    db = tmp_path / "r.db"
    assert main(["run", str(weights), "--db", str(db), "--backend", "pytorch", "--quiet", *FAST_FLAGS]) == 2
    assert "a state_dict holds weights only; choose its architecture with --arch" in capsys.readouterr().err
    assert main(["run", str(weights), "--arch", "nope", "--db", str(db), "--quiet"]) == 2
    assert "unknown architecture 'nope'; known: digits-cnn" in capsys.readouterr().err

    out = tmp_path / "rows.json"
    code = main(["run", "--config", str(cfg), "--db", str(db), "--backend", "pytorch", "--json", str(out), "--quiet",
                 *FAST_FLAGS])
    assert code == 0, capsys.readouterr().err
    [row] = json.loads(out.read_text())
    assert row["status"] == "ok" and row["model"] == "digits" and row["latency_ms"]["p50"] > 0
    assert row["accuracy"]["top1"] > 0.9  # the architecture's own dataset is used for evaluation
    [rec] = [s for s in Store(db).list_sweeps() if s.id == row["sweep_id"]]
    assert rec.config["sweep"]["arch"] == "digits-cnn"


# --------------------------------------------------------------------------------------------
# sensitivity / search / report


@pytest.mark.parametrize("argv, message", [
    (["sensitivity", "sample:digits-cnn", "--method", "int4"], "sensitivity method must be one of int8, prune; got 'int4'"),
    (["sensitivity", "sample:digits-cnn", "--max-layers", "0"], "max_layers must be >= 1; got 0"),
    (["sensitivity", "sample:digits-cnn", "--max-layers", "x"], "max_layers must be an integer; got 'x'"),
    (["sensitivity", "sample:digits-cnn", "--timeout", "0"], "timeout must be > 0 s"),
    (["search", "sample:digits-cnn"], "search needs --budget POINTS"),
    (["search", "sample:digits-cnn", "--budget", "-1"], "accuracy budget must be >= 0 points; got -1.0"),
    (["search", "sample:digits-cnn", "--budget", "x"], "accuracy budget must be a number; got 'x'"),
    (["search", "sample:digits-cnn", "--budget", "1", "--max-trials", "0"], "max_trials must be >= 1; got 0"),
    (["search", "sample:digits-cnn", "--budget", "1", "--save", "/no/such/folder/m.onnx"], "folder /no/such/folder does not exist"),
    (["report"], "report needs --out FILE.html"),
    (["report", "--out", "/no/such/folder/r.html"], "--out /no/such/folder/r.html: folder /no/such/folder does not exist"),
    (["report", "--out", "{tmp}/r.html", "--sweep", "42"], "no sweep 42 in"),
    (["report", "--out", "{tmp}/r.html", "--latency-budget", "-2"], "latency budget must be > 0 ms"),
])
def test_analysis_commands_bad_input_one_line_exit_2(argv, message, db_with_a_row, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "r.html").exists()


def test_sensitivity_errors_from_the_job_are_one_line(capsys):
    assert main(["sensitivity", "sample:nope", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown sample 'nope'; known: digits-cnn" in err
    assert main(["sensitivity", "sample:digits-cnn", "--data", "digits-tokens", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_sensitivity_prints_the_ranked_table_with_units(capsys):
    assert main(["sensitivity", "sample:digits-cnn", "--max-layers", "3", "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("int8 sensitivity of digits-cnn: evaluated on digits:test (360 samples")
    header = next(i for i, ln in enumerate(lines) if ln.startswith("rank"))
    assert "MACs share (%)" in lines[header] and "drop (points)" in lines[header]
    rows = [ln.split() for ln in lines[header + 2: header + 5]]
    assert [r[0] for r in rows] == ["1", "2", "3"]
    drops = [float(r[-1]) for r in rows]
    assert drops == sorted(drops, reverse=True)
    assert "not tested: 3 smaller layer(s) (--max-layers)" in lines


def test_sensitivity_json(capsys):
    assert main(["sensitivity", "sample:digits-cnn", "--method", "prune", "--max-layers", "2", "--json"]) == 0
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    assert captured.err == ""  # --json implies no progress bar
    assert res["method"] == "prune" and res["model"] == "digits-cnn" and len(res["table"]) == 2
    assert res["attrs"]["layers_not_tested"] == 4 and res["attrs"]["metric"] == "accuracy"
    for row in res["table"]:
        assert row["delta"] == pytest.approx((row["metric_before"] - row["metric_after"]) * 100)
        assert 0 < row["macs_share"] <= 1


def test_search_prints_every_trial_and_saves_the_chosen_model(tmp_path, capsys):
    import onnx

    saved = tmp_path / "chosen.onnx"
    assert main(["search", "sample:digits-cnn", "--budget", "1", "--save", str(saved), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["tried"] and res["tried"][0]["excluded_layers"] == [] and res["tried"][0]["trial"] == 0
    chosen = res["chosen"]
    assert chosen["meets_budget"] and chosen["delta"] <= 1 and chosen["saved_to"] == str(saved)
    assert chosen["latency_p50_ms"] > 0 and res["reference_latency_p50_ms"] > 0
    ops = {n.op_type for n in onnx.load(str(saved)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops

    assert main(["search", "sample:digits-cnn", "--budget", "1", "--max-trials", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "FP32 reference: accuracy" in out and "p50 (ms)" in out and "drop (points)" in out
    assert "\nchosen: trial 0" in out and "rebuild: precision=int8-static" in out


def _stored_sweep(db) -> int:
    store = Store(db)
    cfg = {"sweep": {"model": "sample:digits-cnn", "precisions": ["fp32", "int8-static"], "backends": ["onnxruntime"],
                     "batch_sizes": [1]}}
    sid = store.create_sweep("sample:digits-cnn", cfg, status="done", total_runs=3)
    for variant, precision, p50, status, error in [("fp32", "fp32", 0.5, "ok", None),
                                                   ("int8-static[minmax]", "int8-static", 0.2, "ok", None),
                                                   ("fp16", "fp16", None, "failed", "fp16 produced NaN/Inf outputs")]:
        store.add_result(RunResult(
            model="sample:digits-cnn", variant=variant, backend="onnxruntime", batch_size=1, precision=precision,
            status=status, error=error, sweep_id=sid, macs=7_000_000, flops=14_000_000, size_bytes=700_000,
            latency_ms={"mean": p50, "p50": p50, "p95": p50, "iterations": 20} if p50 else None,
            latency_samples_ms=[p50, p50 * 1.1] if p50 else None, throughput_sps=1000 / p50 if p50 else None,
            accuracy={"top1": 0.95, "n": 360} if p50 else None, env={"cpu_model": "test cpu", "cores": 2}))
    return sid


def test_report_writes_the_history_pages_html(tmp_path, capsys):
    db = tmp_path / "r.db"
    first = _stored_sweep(db)
    second = _stored_sweep(db)
    out = tmp_path / "report.html"
    assert main(["report", "--db", str(db), "--out", str(out)]) == 0  # default: the latest sweep
    assert capsys.readouterr().out.startswith(f"wrote {out} (3 rows of sweep(s) {second}")
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and f"Slimbench report: sweeps {second}</title>" in html
    assert "int8-static[minmax]" in html and "fp16 produced NaN/Inf outputs" in html and "test cpu" in html
    assert "plotly" in html.lower()
    assert main(["report", "--db", str(db), "--sweep", str(second), "--sweep", str(first), "--out", str(out),
                 "--latency-budget", "0.3"]) == 0
    assert "6 rows" in capsys.readouterr().out
    assert f"Slimbench report: sweeps {first}, {second}</title>" in out.read_text()
    empty = tmp_path / "empty.db"
    Store(empty)
    assert main(["report", "--db", str(empty), "--out", str(out)]) == 2
    assert "no sweeps in" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "sample:digits-cnn", "--batch-size", "1,99999999999999999999"],
     "batch size must be between 1 and 1048576; got 99999999999999999999"),
    (["run", "sample:digits-cnn", "--min-duration", "nan"],
     "min duration must be a finite number between 0 and 3600 s; got nan"),
    (["run", "sample:digits-cnn", "--min-duration", "inf"],
     "min duration must be a finite number between 0 and 3600 s; got inf"),
    (["run", "sample:digits-cnn", "--min-iters", "99999999999999999999"],
     "min iterations must be between 1 and 10000000; got 99999999999999999999"),
    (["run", "sample:digits-cnn", "--threads", "5000"], "threads must be between 0 and 1024; got 5000"),
    (["run", "sample:digits-cnn", "--eval-samples", "1e99"], "eval samples must be an integer; got '1e99'"),
    (["run", "sample:digits-cnn", "--calib-samples", "-3"], "calibration samples must be >= 1; got -3"),
    (["run", "sample:digits-cnn", "--distill-epochs", "100000"],
     "distillation epochs must be between 0 and 1000; got 100000"),
    (["run", "sample:digits-cnn", "--lowrank", "nan"], "low-rank ratio must be in (0, 1] (0 disables); got nan"),
    (["run", "sample:digits-cnn", "--prune", "0,inf"], "prune ratio must be in [0, 1); got inf"),
    (["run", "sample:digits-cnn", "--timeout", "inf"], "timeout must be a finite number; got 'inf'"),
    (["run", "sample:digits-cnn", "--timeout", "nan"], "timeout must be a finite number; got 'nan'"),
])
def test_out_of_range_and_non_finite_numbers_are_one_line_exit_2(argv, message, db_with_a_row, capsys):
    before = _snapshot(db_with_a_row)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"error: {message}\n"
    assert _snapshot(db_with_a_row) == before  # nothing stored, no sweep left "failed"

"""Runtime settings: config checks, flags and TOML keys, the sweep's cross product and variant names,
the options each backend gets, and rows that record what they ran with."""
from __future__ import annotations

import argparse

import pytest

from benchmark.config import SweepConfig
from benchmark.errors import ConfigError
from benchmark.sweep import plan_sweep
from benchmark.sweep.runtime import combos, process_key


def _parse(argv):
    from benchmark.cli_run import add_run_parser, sweep_config_from_args

    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())
    return sweep_config_from_args(parser.parse_args(["run", *argv]))[0]


def _matmul_onnx(path):
    """x[N, 4] @ w[4, 3] -> y[N, 3]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), dtype="float32"), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_defaults_and_bad_values_are_one_line_config_errors():
    cfg = SweepConfig(model="m")
    assert (cfg.ort_opt_levels, cfg.ort_inter_op_threads, cfg.ort_execution_modes, cfg.torch_interop_threads) == \
        (("all",), (1,), ("sequential",), (0,))
    assert cfg.int8_format == "measure" and cfg.skip_peaks is False
    assert all(c.int8_format == "measure" for c in cfg.compressions())
    assert SweepConfig(model="m", int8_format="s8s8").compressions()[0].int8_format == "s8s8"
    with pytest.raises(ConfigError, match="ONNX Runtime optimization level must be one of all, extended, basic, disable"):
        SweepConfig(model="m", ort_opt_levels=("fast",))
    with pytest.raises(ConfigError, match="ONNX Runtime execution mode must be one of sequential, parallel"):
        SweepConfig(model="m", ort_execution_modes=("async",))
    with pytest.raises(ConfigError, match="lists a value twice"):
        SweepConfig(model="m", ort_opt_levels=("all", "all"))
    with pytest.raises(ConfigError, match="choose at least one PyTorch inter-op threads"):
        SweepConfig(model="m", torch_interop_threads=())
    with pytest.raises(ConfigError, match="ONNX Runtime inter-op threads must be >= 0"):
        SweepConfig(model="m", ort_inter_op_threads=(-1,))
    with pytest.raises(ConfigError, match="int8 format must be one of measure, auto, u8s8, s8s8"):
        SweepConfig(model="m", int8_format="int4")


def test_flags_and_toml_keys_set_the_runtime_settings(tmp_path):
    cfg = _parse(["m.onnx", "--ort-opt", "all,basic", "--ort-mode", "parallel", "--ort-inter-threads", "2",
                  "--torch-interop-threads", "1,2", "--int8-format", "auto", "--skip-peaks"])
    assert cfg.ort_opt_levels == ("all", "basic") and cfg.ort_execution_modes == ("parallel",)
    assert cfg.ort_inter_op_threads == (2,) and cfg.torch_interop_threads == (1, 2)
    assert cfg.int8_format == "auto" and cfg.skip_peaks is True
    toml = tmp_path / "s.toml"
    toml.write_text('model = "m.onnx"\nort_opt = ["extended"]\nort_execution_modes = "sequential,parallel"\n'
                    'torch_interop_threads = [4]\nint8_format = "u8s8"\nskip_peaks = true\n')
    cfg = _parse(["--config", str(toml)])
    assert cfg.ort_opt_levels == ("extended",) and cfg.ort_execution_modes == ("sequential", "parallel")
    assert cfg.torch_interop_threads == (4,) and cfg.int8_format == "u8s8" and cfg.skip_peaks is True


def test_only_settings_that_vary_name_variants_and_only_on_backends_that_honour_them():
    plain = plan_sweep(SweepConfig(model="m", backends=("pytorch", "onnxruntime")))
    assert len(plain) == 1 and [r.variant for r in plain[0].runs] == ["fp32", "fp32"]
    assert dict(plain[0].runs[1].runtime) == {"ort_graph_opt_level": "all", "ort_inter_op_threads": 1,
                                              "ort_execution_mode": "sequential"}
    assert dict(plain[0].runs[0].runtime) == {"torch_interop_threads": 0}

    cfg = SweepConfig(model="m", precisions=("fp32", "int8-static"), backends=("pytorch", "onnxruntime"),
                      ort_opt_levels=("all", "basic"), ort_execution_modes=("sequential", "parallel"))
    plan = plan_sweep(cfg)
    assert len(plan) == 2  # one job per compression: ORT settings need no new process
    keys = [r.key for r in plan[1].runs]
    assert keys == ["int8-static[minmax]|pytorch|1",
                    "int8-static[minmax]@ort-opt=all,ort-mode=sequential|onnxruntime|1",
                    "int8-static[minmax]@ort-opt=all,ort-mode=parallel|onnxruntime|1",
                    "int8-static[minmax]@ort-opt=basic,ort-mode=sequential|onnxruntime|1",
                    "int8-static[minmax]@ort-opt=basic,ort-mode=parallel|onnxruntime|1"]
    assert len(set(keys)) == len(keys)
    assert dict(plan[1].runs[3].runtime)["ort_graph_opt_level"] == "basic"


def test_a_per_process_setting_splits_the_job_and_ort_runs_join_the_first():
    cfg = SweepConfig(model="m", backends=("pytorch", "onnxruntime"), torch_interop_threads=(1, 2))
    plan = plan_sweep(cfg)
    assert [[r.key for r in j.runs] for j in plan] == [
        ["fp32@torch-inter=1|pytorch|1", "fp32|onnxruntime|1"], ["fp32@torch-inter=2|pytorch|1"]]
    assert {process_key(dict(r.runtime)) for r in plan[1].runs} == {(("torch_interop_threads", 2),)}
    assert combos(cfg, "no-such-backend") == [({}, "")]


def test_backends_turn_runtime_settings_into_their_options():
    from benchmark.backends import get_backend

    ort, torch_backend = get_backend("onnxruntime"), get_backend("pytorch")
    runtime = {"ort_graph_opt_level": "basic", "ort_inter_op_threads": 2, "ort_execution_mode": "parallel"}
    assert ort.sweep_options("cpu", {"runtime": runtime}) == {
        "graph_optimization_level": "basic", "inter_op_num_threads": 2, "execution_mode": "parallel"}
    assert ort.sweep_options("cpu", {}) is None
    assert torch_backend.sweep_options("cpu", {"runtime": {"torch_interop_threads": 3}}) == {"interop_threads": 3}
    assert torch_backend.sweep_options("cpu", {"runtime": {"torch_interop_threads": 0}}) is None


def test_ort_session_records_and_checks_its_settings(tmp_path):
    from benchmark.backends import get_backend
    from benchmark.compress import reference_variant
    from benchmark.models import load_model

    variant = reference_variant(load_model(str(_matmul_onnx(tmp_path / "t.onnx"))))
    session = get_backend("onnxruntime").prepare(variant, "cpu", threads=1, options={
        "graph_optimization_level": "basic", "execution_mode": "parallel", "inter_op_num_threads": 2})
    try:
        opts = session.info.options
        assert (opts["graph_optimization_level"], opts["execution_mode"], opts["inter_op_num_threads"]) == \
            ("basic", "parallel", 2)
        assert session.sess.get_session_options().execution_mode.name == "ORT_PARALLEL"
        assert session.sess.get_session_options().inter_op_num_threads == 2
    finally:
        session.close()
    with pytest.raises(ConfigError, match="execution_mode must be one of sequential, parallel"):
        get_backend("onnxruntime").prepare(variant, "cpu", threads=1, options={"execution_mode": "async"})


def test_torch_interop_threads_are_set_once_per_process_or_noted():
    import torch

    from benchmark.backends.pytorch import set_interop_threads

    notes: list[str] = []
    current = torch.get_num_interop_threads()
    assert set_interop_threads(0, notes) == current and notes == []
    other = current + 1
    got = set_interop_threads(other, notes)
    # PyTorch allows one change per process, before inter-op work: either it took, or a note says why not
    assert got == other or (got == current and "could not be set to" in notes[0])


@pytest.mark.slow
def test_a_sweep_over_opt_levels_names_variants_and_records_the_settings(tmp_path):
    from benchmark.store import Store
    from benchmark.sweep import run_sweep

    store = Store(tmp_path / "r.db")
    cfg = SweepConfig(model="sample:digits-cnn", precisions=("fp32",), backends=("pytorch", "onnxruntime"),
                      ort_opt_levels=("all", "basic"), min_duration_s=0.05, min_iters=3, eval_samples=32, threads=1,
                      skip_peaks=True)
    rows = {r.variant + "|" + r.backend: r for r in store.get_results(run_sweep(cfg, store))}
    assert set(rows) == {"fp32|pytorch", "fp32@ort-opt=all|onnxruntime", "fp32@ort-opt=basic|onnxruntime"}
    assert all(r.status == "ok" for r in rows.values()), [r.error for r in rows.values()]
    basic = rows["fp32@ort-opt=basic|onnxruntime"]
    assert basic.runtime["ort_graph_opt_level"] == "basic"
    assert basic.env["session"]["options"]["graph_optimization_level"] == "basic"  # what the session really used
    assert rows["fp32@ort-opt=all|onnxruntime"].env["session"]["options"]["graph_optimization_level"] == "all"
    assert rows["fp32|pytorch"].runtime == {"torch_interop_threads": 0}
    assert basic.to_row()["runtime"] == "ort-opt=basic, ort-inter=1, ort-mode=sequential"
    # each ORT row is its own FP32 reference (same runtime settings)
    assert basic.speedup_vs_fp32 == pytest.approx(1.0)
    assert "peaks" not in basic.env and basic.peak_fraction is None  # skip_peaks


def test_profile_takes_one_value_of_each_runtime_setting(capsys):
    from benchmark.__main__ import EXIT_ERROR, main

    assert main(["profile", "sample:digits-cnn", "--quiet", "--ort-opt", "all,basic"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "--ort-opt has 2 values" in err and err.count("\n") == 1


@pytest.mark.slow
def test_profile_runs_with_the_runtime_settings_it_is_given(capsys):
    import json

    from benchmark.__main__ import main

    code = main(["profile", "sample:digits-cnn", "--ort-opt", "basic", "--ort-mode", "parallel", "--threads", "1",
                 "--runs", "3", "--min-duration", "0.05", "--min-iters", "3", "--json", "--quiet"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0
    assert res["runtime"] == {"ort_graph_opt_level": "basic", "ort_inter_op_threads": 1, "ort_execution_mode": "parallel"}
    assert res["options"] == {"graph_optimization_level": "basic", "inter_op_num_threads": 1,
                              "execution_mode": "parallel"}

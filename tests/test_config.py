"""Configs validate themselves: every numeric field is finite and bounded, messages name the field,
the value and the range; the CLI's flags and TOML keys come from the SweepConfig fields."""
from __future__ import annotations

import dataclasses
import math

import pytest

from benchmark.config import (
    MAX_BATCH_SIZE, MAX_DURATION_S, MAX_EPOCHS, MAX_ITERS, MAX_SAMPLES, MAX_TEMPERATURE, MAX_THREADS,
    CompressionConfig, RunConfig, SweepConfig,
)
from benchmark.errors import ConfigError

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_sizes=(1, 99999999999999999999)),
     f"batch size must be between 1 and {MAX_BATCH_SIZE}; got 99999999999999999999"),
    (dict(batch_sizes=(MAX_BATCH_SIZE + 1,)), f"batch size must be between 1 and {MAX_BATCH_SIZE}; got {MAX_BATCH_SIZE + 1}"),
    (dict(batch_sizes=(0,)), "batch size must be >= 1; got 0"),
    (dict(batch_sizes=(2.5,)), "batch size must be an integer; got 2.5"),
    (dict(min_duration_s=NAN), f"min duration must be a finite number between 0 and {MAX_DURATION_S:g} s; got nan"),
    (dict(min_duration_s=INF), f"min duration must be a finite number between 0 and {MAX_DURATION_S:g} s; got inf"),
    (dict(min_duration_s=1e9), f"min duration must be between 0 and {MAX_DURATION_S:g} s; got 1e+09"),
    (dict(min_duration_s=-1.0), "min duration must be >= 0 s; got -1"),
    (dict(min_iters=0), "min iterations must be >= 1; got 0"),
    (dict(min_iters=MAX_ITERS + 1), f"min iterations must be between 1 and {MAX_ITERS}; got {MAX_ITERS + 1}"),
    (dict(threads=-1), "threads must be >= 0; got -1"),
    (dict(threads=MAX_THREADS + 1), f"threads must be between 0 and {MAX_THREADS}; got {MAX_THREADS + 1}"),
    (dict(threads=True), "threads must be an integer; got True"),
    (dict(eval_samples=-1), "eval samples must be >= 0; got -1"),
    (dict(eval_samples=MAX_SAMPLES + 1), f"eval samples must be between 0 and {MAX_SAMPLES}; got {MAX_SAMPLES + 1}"),
    (dict(calib_samples=0), "calibration samples must be >= 1; got 0"),
    (dict(calib_samples=MAX_SAMPLES + 1),
     f"calibration samples must be between 1 and {MAX_SAMPLES}; got {MAX_SAMPLES + 1}"),
    (dict(distill_epochs=MAX_EPOCHS + 1),
     f"distillation epochs must be between 0 and {MAX_EPOCHS}; got {MAX_EPOCHS + 1}"),
    (dict(prune_ratios=(0.0, NAN)), "prune ratio must be in [0, 1); got nan"),
    (dict(prune_ratios=(1.0,)), "prune ratio must be in [0, 1); got 1"),
    (dict(lowrank_ratio=INF), "low-rank ratio must be in (0, 1] (0 disables); got inf"),
    (dict(lowrank_ratio="0.5"), "low-rank ratio must be a number; got '0.5'"),
])
def test_sweep_config_bounds_every_numeric_field(kwargs, message):
    with pytest.raises(ConfigError) as info:
        SweepConfig(model="sample:digits-cnn", **kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs, message", [
    (dict(model=""), "model must be a model file or sample:NAME; got ''"),
    (dict(distill="yes"), "distill must be true or false; got 'yes'"),
    (dict(trust_pickle=1), "trust pickle must be true or false; got 1"),
    (dict(data=" "), "data must name a built-in dataset or a .npz file; got an empty string"),
    (dict(inputs=("x",)), "input override 'x' is not of the form name:1x3x32x32[:float32]"),
    (dict(precisions=()), "choose at least one precision"),
])
def test_sweep_config_checks_its_other_fields(kwargs, message):
    with pytest.raises(ConfigError) as info:
        SweepConfig(**{"model": "sample:digits-cnn", **kwargs})
    assert str(info.value) == message


def test_sweep_config_limits_themselves_are_allowed_and_values_normalised():
    cfg = SweepConfig(model="m", batch_sizes=(1.0, MAX_BATCH_SIZE), min_duration_s=MAX_DURATION_S, threads=MAX_THREADS,
                      min_iters=MAX_ITERS, eval_samples=0, calib_samples=MAX_SAMPLES, distill_epochs=MAX_EPOCHS,
                      prune_ratios=(0, 0.5), lowrank_ratio=1)
    assert cfg.batch_sizes == (1, MAX_BATCH_SIZE) and all(type(b) is int for b in cfg.batch_sizes)
    assert cfg.prune_ratios == (0.0, 0.5) and type(cfg.lowrank_ratio) is float


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=10**30), f"batch size must be between 1 and {MAX_BATCH_SIZE}; got {10**30}"),
    (dict(warmup_s=NAN), f"warm-up duration must be a finite number between 0 and {MAX_DURATION_S:g} s; got nan"),
    (dict(warmup_iters=-1), "warm-up iterations must be >= 0; got -1"),
    (dict(max_iters=MAX_ITERS + 1), f"max iterations must be between 1 and {MAX_ITERS}; got {MAX_ITERS + 1}"),
    (dict(min_iters=30, max_iters=20), "need 1 <= min_iters <= max_iters; got 30, 20"),
    (dict(threads=10**6), f"threads must be between 0 and {MAX_THREADS}; got 1000000"),
    (dict(eval_samples=INF), "eval samples must be an integer; got inf"),
])
def test_run_config_bounds(kwargs, message):
    with pytest.raises(ConfigError) as info:
        RunConfig(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize("kwargs, message", [
    (dict(calib_samples=MAX_SAMPLES + 1),
     f"calibration samples must be between 1 and {MAX_SAMPLES}; got {MAX_SAMPLES + 1}"),
    (dict(distill_epochs=-1), "distillation epochs must be >= 0; got -1"),
    (dict(distill_temperature=0.0), "distillation temperature must be > 0; got 0"),
    (dict(distill_temperature=NAN),
     f"distillation temperature must be a finite number between 0 and {MAX_TEMPERATURE:g}; got nan"),
    (dict(distill_alpha=1.5), "distillation alpha must be in [0, 1]; got 1.5"),
    (dict(calib_percentile=0.0), "calibration percentile must be in (0, 100]; got 0"),
    (dict(lowrank_energy=NAN), "low-rank energy must be in (0, 1] (0 disables); got nan"),
    (dict(prune_ratio=-0.1), "prune ratio must be in [0, 1); got -0.1"),
])
def test_compression_config_bounds(kwargs, message):
    with pytest.raises(ConfigError) as info:
        CompressionConfig(**kwargs)
    assert str(info.value) == message


def test_every_sweep_field_has_a_flag_and_a_toml_key(tmp_path):
    """The run parser and the TOML reader are built from the SweepConfig fields, not from lists kept by hand."""
    import argparse

    from benchmark.cli_run import add_run_parser, read_toml

    parser = argparse.ArgumentParser()
    run = add_run_parser(parser.add_subparsers())
    dests = {a.dest for a in run._actions}
    for f in dataclasses.fields(SweepConfig):
        assert f.name in dests, f.name
        if f.name != "model":
            assert f.metadata["flag"] in run._option_string_actions, f.name
    # today's flag names are kept; every field name and every flag name is a TOML key
    for flag in ("--prune", "--lowrank", "--precision", "--backend", "--batch-size", "--min-duration", "--input"):
        assert flag in run._option_string_actions
    toml = tmp_path / "s.toml"
    toml.write_text('model = "m"\nprune = [0, 0.5]\nlowrank_ratio = 0.25\nbatch_size = "1,8"\nmin_duration = 0.5\n'
                    'distill_epochs = 2\ninput = ["x:1x4"]\n')
    assert read_toml(toml) == {"model": "m", "prune_ratios": (0.0, 0.5), "lowrank_ratio": 0.25, "batch_sizes": (1, 8),
                               "min_duration_s": 0.5, "distill_epochs": 2, "inputs": ("x:1x4",)}


def test_toml_non_finite_and_huge_values_are_one_line_errors(tmp_path):
    from benchmark.cli_run import read_toml

    toml = tmp_path / "s.toml"
    for text, message in [("min_duration_s = nan", "min duration must be a finite number between 0 and 3600 s; got nan"),
                          ("batch_size = [inf]", "batch size must be an integer; got inf"),
                          ("threads = 99999999999999", f"threads must be between 0 and {MAX_THREADS}; got 99999999999999"),
                          ("min_iters = 1.5", "min iterations must be an integer; got 1.5")]:
        toml.write_text(f'model = "m"\n{text}\n')
        with pytest.raises(ConfigError) as info:
            read_toml(toml)
        assert str(info.value) == message, text

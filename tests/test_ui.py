"""The dashboard's plain helpers: shape text, dashboard words, queue labels, batch sizes, session records."""
from __future__ import annotations

import json
import os
import time

import pytest

from benchmark.config import InputSpec
from benchmark.errors import ConfigError
from benchmark.ui import SessionRecords, dashboard_words, override_text, parse_batch_sizes, public_label, shape_text


def test_shape_text_keeps_readable_names_and_marks_the_rest():
    assert shape_text(["p2o.DynamicDimension.0", 3, "dim2", 320]) == "p2o.DynamicDimension.0x3xdim2x320"
    assert shape_text(["batch", "max_len", "a b", 8]) == "batchx?x?x8"  # an 'x' or a space cannot be read back


def test_override_from_a_symbolic_shape_once_its_unknowns_are_filled():
    text = override_text("x", "p2o.DynamicDimension.0x3x48x320", "float32")
    assert text == "x:Nx3x48x320:float32"
    spec = InputSpec.parse(text)
    assert spec.shape == ("N", 3, 48, 320) and spec.concrete(4) == (4, 3, 48, 320)
    assert override_text("ids", " 1 x 128 ", "int64") == "ids:1x128:int64"
    left_open = InputSpec.parse(override_text("x", "Nx3x?x320", "float32"))
    with pytest.raises(ConfigError, match="dynamic dim 2"):
        left_open.concrete(1)  # a non-batch dim left open still needs a number
    with pytest.raises(ConfigError, match="not of the form"):
        override_text("x", "1xx3", "float32")
    with pytest.raises(ConfigError, match="must be >= 1"):
        override_text("x", "1x0", "float32")


def test_dashboard_words_replace_cli_flags():
    try:
        InputSpec("x", ("N", 3, "H", 320)).concrete(1)
    except ConfigError as exc:
        message = str(exc)
    assert "--input" in message
    said = dashboard_words(message)
    assert "--" not in said and "shape field on the Model page" in said and "dim 2 (H)" in said
    assert "Evaluation data" in dashboard_words("int8-static needs calibration data: pass --data with a dataset or .npz "
                                                "of model inputs")
    assert dashboard_words("choose its architecture with --arch (one of a, b)") == \
        "choose its Architecture on the Model page (one of a, b)"
    assert "--" not in dashboard_words("allow it with --trust-pickle (CLI) or 'I trust this file' (dashboard)")


def test_public_label_drops_folders():
    assert public_label("/home/ann/.local/share/slimbench/uploads/0a1b/net.onnx int8-static[minmax]") == \
        "net.onnx int8-static[minmax]"
    assert public_label("int8 sensitivity analysis sample:digits-cnn") == "int8 sensitivity analysis sample:digits-cnn"
    assert public_label(None) == ""


def test_parse_batch_sizes_accepts_typed_numbers():
    assert parse_batch_sizes([8, "40", "1", 8]) == (1, 8, 40)
    for bad in ("abc", "0", "-4", "2.5"):
        with pytest.raises(ConfigError, match="whole number"):
            parse_batch_sizes([bad])


def test_session_records_round_trip_refuse_bad_tokens_and_prune(tmp_path):
    records = SessionRecords(tmp_path / "sessions", max_age_days=1)
    token = records.new_token()
    assert records.valid(token) and records.load(token) == {}
    records.save(token, {"model": {"source": "sample:digits-cnn"}, "run.batches": ["1", "40"]})
    assert records.load(token)["run.batches"] == ["1", "40"]
    for bad in ("../../etc/passwd", "ABC", "", None, "a" * 100):
        assert not records.valid(bad)
        assert records.load(bad) == {}
    with pytest.raises(ConfigError, match="not a session token"):
        records.save("../x", {})
    old = records.new_token()
    records.save(old, {})
    stale = time.time() - 3 * 86400
    os.utime(tmp_path / "sessions" / f"{old}.json", (stale, stale))
    records.save(token, {"again": True})
    assert not (tmp_path / "sessions" / f"{old}.json").exists()  # untouched for more than a day
    assert json.loads((tmp_path / "sessions" / f"{token}.json").read_text()) == {"again": True}

"""Batch axes per input: found from the model's symbolic dims, from the data or from the user; datasets
slice along them; inputs without one are fed as given; stateful and sequence models run end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmark.__main__ import main
from benchmark.backends.base import feeds_batch
from benchmark.backends.trt_engine import profile_shapes
from benchmark.config import UNNAMED_INPUT, InputSpec, OutputSpec, SweepConfig, parse_batch_axis
from benchmark.data import check_arrays, fixed_batch, random_dataset
from benchmark.data.base import Dataset
from benchmark.errors import ConfigError, DataError
from benchmark.models.base import LoadedModel
from benchmark.models.batch_axes import apply_batch_axes, fit_to_data, infer_batch_axes
from benchmark.models.loaders import load_model
from benchmark.onnx_graph import recurrent_state_axes

# silero-vad look-alike (sample_models/lookalikes.py): front-end conv 64 x 1 x 16 stride 8 over 512 samples at
# 16 kHz -> 63 frames; encoder conv 128 x 64 x 3 stride 2 -> 31 frames; one LSTM step 4H(I+H), H = I = 128;
# decoder Linear 128 -> 1.
SILERO_MACS = 63 * 64 * 16 + 31 * 128 * 64 * 3 + 4 * 128 * (128 + 128) + 128
# sequence-lstm look-alike over 40 frames: Linear 40 -> 64, LSTM 64 -> 128, Linear 128 -> 1, per frame.
SEQUENCE_MACS = 40 * (40 * 64 + 4 * 128 * (64 + 128) + 128)


def _axes(specs):
    return {s.name: s.batch_axis for s in specs}


# ---------------------------------------------------------------------------------------------
# InputSpec and settings


def test_input_spec_batch_axis_moves_the_batch():
    state = InputSpec("state", (2, "batch", 128), batch_axis=1)
    assert state.concrete(4) == (2, 4, 128) and state.batch_dim == "batch"
    assert InputSpec("sr", (), "int64").batch_axis is None  # a scalar has none
    fixed = InputSpec("h0", (1, 1, 128), batch_axis=None)
    assert fixed.concrete(8) == (1, 1, 128)  # fed as given whatever the batch
    assert InputSpec("x", (3, 4), batch_axis=-1).batch_axis == 1
    assert state.with_shape((2, 1, 128)).batch_axis == 1 and state.with_shape((5, 6)).batch_axis == 0
    assert "batch axis 1" in state.describe() and "no batch axis" in fixed.describe()
    with pytest.raises(ConfigError, match=r"batch axis of input 'x' must be a dim of its shape 3x4 \(0..1\)"):
        InputSpec("x", (3, 4), batch_axis=2)


def test_nameless_override_and_batch_axis_settings():
    spec = InputSpec.parse("1x3x224x224")
    assert spec.name == UNNAMED_INPUT and spec.shape == (1, 3, 224, 224)
    assert InputSpec.parse("1x3:float16").dtype == "float16"
    assert InputSpec.parse("x:1x3").name == "x"
    assert parse_batch_axis("state:1") == ("state", 1)
    assert parse_batch_axis("sr:none") == ("sr", None)
    assert parse_batch_axis("input:0:1") == ("input:0", 1)  # names with ':' parse from the right
    assert parse_batch_axis("2") == (UNNAMED_INPUT, 2)
    with pytest.raises(ConfigError, match="NAME:AXIS or NAME:none"):
        parse_batch_axis("state:first")
    cfg = SweepConfig(model="m.onnx", batch_axis=["state:1", "sr:none"])
    assert cfg.batch_axis == ("state:1", "sr:none")
    with pytest.raises(ConfigError, match="NAME:AXIS"):
        SweepConfig(model="m.onnx", batch_axis=("state:x",))


# ---------------------------------------------------------------------------------------------
# Inference from the graph


@pytest.mark.parametrize("inputs, outputs, expected", [
    # Silero VAD: the symbolic 'batch' sits on dim 1 of the state; the scalar sample rate has none
    ([("input", ("batch", "samples")), ("state", (2, "batch", 128)), ("sr", ())],
     [("output", ("batch", 1)), ("stateN", (2, "batch", 128))], {"input": 0, "state": 1, "sr": None}),
    # sequence model: dim 0 is time, the states are all numbers: they fix batch 1 on dim 0 (from shapes
    # alone; loading the ONNX file puts an LSTM initial state's batch on dim 1, see below)
    ([("x", ("time", 1, 40)), ("h0", (1, 1, 128)), ("c0", (1, 1, 128))], [("prob", ("time", 1, 1))],
     {"x": None, "h0": 0, "c0": 0}),
    # unnamed dims: the state's only open dim is its batch axis
    ([("input", ("dim0", 512)), ("state", (2, "dim1", 128))], [], {"input": 0, "state": 1}),
    # a name shared by two inputs (dynamo-style s0), not a batch-like word
    ([("ids", ("s0", "s1")), ("mask", ("s0", "s1"))], [], {"ids": 0, "mask": 0}),
    # HF names; a fully static extra input is fed as given
    ([("input_ids", ("batch_size", "sequence_length")), ("scale", (1,))], [], {"input_ids": 0, "scale": None}),
    # a model exported at batch 1 keeps dim 0 (a fixed batch)
    ([("image", (1, 3, 224, 224))], [("logits", (1, 1000))], {"image": 0}),
    # the batch named only in an output still decides for a transposed input
    ([("feats", (80, "N"))], [("out", ("N", 10))], {"feats": 1}),
    # exported at batch 1 with an open width: the width is not taken for the batch
    ([("image", (1, 3, 224, "dim3"))], [], {"image": 0}),
])
def test_infer_batch_axes(inputs, outputs, expected):
    specs, note = infer_batch_axes([InputSpec(n, s, "int64" if n == "sr" else "float32") for n, s in inputs],
                                   [OutputSpec(n, s) for n, s in outputs])
    assert _axes(specs) == expected
    assert (note is None) == all(v == 0 for v in expected.values())


def test_recurrent_initial_states_have_their_batch_on_dim_1(tmp_path):
    from onnx import TensorProto, helper, save

    # x [time, ?, 8] into an LSTM with initial_h / initial_c graph inputs [1, ?, 4] (unnamed dims)
    x, h0, c0 = (helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
                 for n, s in (("x", ["time", None, 8]), ("h0", [1, None, 4]), ("c0", [1, None, 4])))
    w, r = (helper.make_tensor(n, TensorProto.FLOAT, [1, 16, k], [0.0] * (16 * k)) for n, k in (("W", 8), ("R", 4)))
    lstm = helper.make_node("LSTM", ["x", "W", "R", "", "", "h0", "c0"], ["y"], hidden_size=4)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["time", 1, None, 4])
    path = tmp_path / "lstm.onnx"
    save(helper.make_model(helper.make_graph([lstm], "g", [x, h0, c0], [y], [w, r]),
                           opset_imports=[helper.make_opsetid("", 14)]), str(path))
    assert recurrent_state_axes(path) == {"h0": 1, "c0": 1}
    model = load_model(str(path))
    assert _axes(model.inputs) == {"x": None, "h0": 1, "c0": 1}
    assert any("recurrent nodes' initial states" in n for n in model.notes)
    # without the graph's word, the same shapes would put h0's batch on dim 0 (rule 3)
    specs, _ = infer_batch_axes([InputSpec("x", ("time", 1, 8)), InputSpec("h0", (1, 1, 4))])
    assert _axes(specs) == {"x": None, "h0": 0}
    specs, _ = infer_batch_axes([InputSpec("x", ("time", 1, 8)), InputSpec("h0", (1, 1, 4))], state_axes={"h0": 1})
    assert _axes(specs) == {"x": None, "h0": 1}


def _model(specs) -> LoadedModel:
    return LoadedModel(name="m", format="onnx", framework="onnx", inputs=list(specs))


def test_user_batch_axes_override_with_one_line_errors():
    model = _model([InputSpec("input", ("batch", 512)), InputSpec("state", (2, "batch", 128), batch_axis=1)])
    changed = apply_batch_axes(model, ["state:none"])
    assert _axes(changed.inputs) == {"input": 0, "state": None}
    assert any("set by the user: state none" in n for n in changed.notes)
    with pytest.raises(ConfigError, match="batch axis given for 'h0', which 'm' does not have; inputs: input, state"):
        apply_batch_axes(model, ["h0:1"])
    with pytest.raises(ConfigError, match="names no input, but 'm' has 2 inputs"):
        apply_batch_axes(model, ["1"])
    with pytest.raises(ConfigError, match="must be a dim of its shape"):
        apply_batch_axes(model, ["input:5"])
    single = apply_batch_axes(_model([InputSpec("x", (40, 1, 8))]), ["1"])
    assert single.inputs[0].batch_axis == 1


def test_nameless_shape_override_applies_to_the_only_input():
    model = _model([InputSpec("image", ("N", 3, "H", "W"))])
    assert model.with_inputs([InputSpec.parse("2x3x32x32")]).inputs[0].shape == (2, 3, 32, 32)
    two = _model([InputSpec("a", ("N", 3)), InputSpec("b", ("N", 3))])
    with pytest.raises(ConfigError, match=r"names no input, but 'm' has 2 inputs \(a, b\); write NAME:SHAPE"):
        two.with_inputs([InputSpec.parse("2x3")])
    state = _model([InputSpec("state", (2, "batch", 128), batch_axis=1)])
    assert state.with_inputs([InputSpec.parse("state:2x4x128")]).inputs[0].batch_axis == 1  # overrides keep the axis


# ---------------------------------------------------------------------------------------------
# Datasets along a batch axis


STATE_SPECS = [InputSpec("input", ("batch", 512)), InputSpec("state", (2, "batch", 128), batch_axis=1),
               InputSpec("sr", (), "int64")]


def test_arrays_along_batch_axis_and_constants_batch_together():
    rng = np.random.default_rng(0)
    arrays = {"input": rng.standard_normal((6, 512), dtype=np.float32),
              "state": rng.standard_normal((2, 6, 128), dtype=np.float32), "sr": np.array(16000)}
    data = check_arrays(arrays, None, STATE_SPECS, name="d")
    assert len(data) == 6 and not data.per_feed and data.is_constant("sr")
    batches = [feeds for feeds, _ in data.batches(4)]
    assert [b["state"].shape for b in batches] == [(2, 4, 128), (2, 2, 128)]
    np.testing.assert_array_equal(batches[1]["state"], arrays["state"][:, 4:6])
    assert batches[0]["sr"].shape == () and int(batches[0]["sr"]) == 16000  # 0-d stays 0-d
    assert data.head(3)["state"].shape == (2, 3, 128) and data.head(7) is None
    part = data.subset(2, start=3)
    np.testing.assert_array_equal(part.arrays["state"], arrays["state"][:, 3:5])
    picked = data.take([5, 0])
    np.testing.assert_array_equal(picked.arrays["state"][:, 0], arrays["state"][:, 5])


def test_per_feed_arrays_report_the_batch_of_their_batch_axis():
    feeds = {"input": np.zeros((5, 1, 512), np.float32), "state": np.zeros((5, 2, 1, 128), np.float32),
             "sr": np.full(5, 16000, np.int64)}
    data = check_arrays(dict(reversed(list(feeds.items()))), None, STATE_SPECS, name="d")  # state before input
    assert data.per_feed and len(data) == 5
    assert data.feed_batch() == 1  # the state's batch axis (dim 1), not its leading 2
    first = data.first_feed()
    assert first["state"].shape == (2, 1, 128) and first["sr"].shape == ()
    three = check_arrays({"input": np.zeros((2, 3, 512), np.float32), "state": np.zeros((2, 2, 3, 128), np.float32),
                          "sr": np.full(2, 8000, np.int64)}, None, STATE_SPECS, name="d")
    assert three.feed_batch() == 3


def test_data_rehomes_a_batch_axis_the_graph_got_wrong():
    specs = [InputSpec("input", ("dim0", 512)), InputSpec("state", (2, "dim1", 128))]  # state on dim 0 by mistake
    data = check_arrays({"input": np.zeros((6, 512), np.float32), "state": np.zeros((2, 6, 128), np.float32)},
                        None, specs, name="d")
    assert data.axis("state") == 1 and len(data) == 6
    model, notes = fit_to_data(_model(specs), data)
    assert _axes(model.inputs) == {"input": 0, "state": 1}
    assert any("samples along dim 1" in n for n in notes)
    with pytest.raises(DataError, match=r"arrays must share the sample count N .*input: 6, state: 3.*--batch-axis"):
        check_arrays({"input": np.zeros((6, 512), np.float32), "state": np.zeros((3, 2, 128), np.float32)},
                     None, [InputSpec("input", ("N", 512)), InputSpec("state", ("N", 2, 128))], name="d")


def test_fit_to_data_fills_open_dims_but_not_the_batch():
    specs = [InputSpec("input", ("batch", "samples")), InputSpec("state", (2, "batch", 128), batch_axis=1),
             InputSpec("sr", (), "int64")]
    data = check_arrays({"input": np.zeros((4, 1, 512), np.float32), "state": np.zeros((4, 2, 1, 128), np.float32),
                         "sr": np.full(4, 16000)}, None, specs, name="d")
    model, notes = fit_to_data(_model(specs), data)
    assert [s.shape for s in model.inputs] == [("batch", 512), (2, "batch", 128), ()]
    assert notes == ["input 'input': batchxsamples filled from the data as batchx512"]
    assert fit_to_data(model, None) == (model, [])


def test_fixed_batch_random_data_and_example_inputs_follow_the_axes():
    assert fixed_batch(STATE_SPECS) is None  # [2, batch, 128] fixes nothing
    assert fixed_batch([InputSpec("state", (2, 4, 128), batch_axis=1)]) == 4
    assert fixed_batch([InputSpec("x", (40, 1, 8), batch_axis=None)]) == 1  # no batch axis at all: fed as given
    specs = [InputSpec("input", ("batch", 512)), InputSpec("state", (2, "batch", 128), batch_axis=1),
             InputSpec("sr", (), "int64")]
    data = random_dataset(specs, 5)
    assert data.arrays["state"].shape == (2, 5, 128) and data.arrays["sr"].shape == () and len(data) == 5
    feeds = LoadedModel("m", "onnx", "onnx", specs).example_inputs(3)
    assert feeds["state"].shape == (2, 3, 128) and feeds["input"].shape == (3, 512) and feeds["sr"].shape == ()


def test_backend_batch_and_tensorrt_profiles_use_the_batch_axis():
    specs = [InputSpec("state", (2, "batch", 128), batch_axis=1), InputSpec("input", ("batch", 512)),
             InputSpec("sr", (), "int64")]
    feeds = {"state": np.zeros((2, 3, 128)), "input": np.zeros((3, 512)), "sr": np.array(16000)}
    assert feeds_batch(feeds, specs) == 3 and feeds_batch(feeds) == 2  # without specs: dim 0 of the first
    profile = profile_shapes(specs, [1, 8])
    assert profile["state"] == ((2, 1, 128), (2, 8, 128), (2, 8, 128))
    assert profile["sr"] == ((), (), ())
    fixed_state = profile_shapes([InputSpec("h0", (1, 1, 128), batch_axis=None)], [1, 8])
    assert fixed_state["h0"] == ((1, 1, 128),) * 3


# ---------------------------------------------------------------------------------------------
# The CLI on the look-alikes of stateful models


@pytest.fixture(scope="module")
def vad_files(tmp_path_factory):
    from sample_models.lookalikes import build_lookalike, per_feed_npz

    folder = tmp_path_factory.mktemp("vad")
    out = {}
    for name in ("silero-vad", "sequence-lstm"):
        la = build_lookalike(name, folder)
        out[name] = (la.path, per_feed_npz(la, folder / f"{name}.npz", feeds=12))
    return out


def _info(argv, capsys) -> dict:
    assert main(["info", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_shows_batch_axes_and_fills_dims_from_data(vad_files, capsys):
    path, npz = vad_files["silero-vad"]
    info = _info([str(path), "--data", str(npz)], capsys)
    assert [(s["name"], s["shape"], s["batch_axis"]) for s in info["inputs"]] == [
        ("input", ["batch", 512], 0), ("state", [2, "batch", 128], 1), ("sr", [], None)]
    assert info["macs"] == SILERO_MACS  # the If takes the 16 kHz branch of the data's sample rate
    assert info["by_operator"]["LSTM"] == 4 * 128 * 256 and "LSTM" not in info["unsupported_ops"]
    assert main(["info", str(path)]) == 2  # 'samples' is open without data
    assert "input 'input' has dynamic dim 1 (samples)" in capsys.readouterr().err
    seq_path, seq_npz = vad_files["sequence-lstm"]
    info = _info([str(seq_path), "--data", str(seq_npz)], capsys)
    assert info["inputs"][0]["shape"] == [40, 1, 40] and info["inputs"][0]["batch_axis"] is None
    assert info["macs"] == SEQUENCE_MACS


def test_info_batch_axis_flag_and_errors(vad_files, capsys):
    path, npz = vad_files["silero-vad"]
    info = _info([str(path), "--data", str(npz), "--batch-axis", "state:none", "--input", "state:2x1x128"], capsys)
    assert info["inputs"][1]["batch_axis"] is None
    assert main(["info", str(path), "--batch-axis", "nope:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: batch axis given for 'nope'") and err.count("\n") == 1


def test_nameless_input_on_a_single_input_model(tmp_path, capsys):
    import torch

    from sample_models.lookalikes import export

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 3, 8, 8))
    path = export(model.eval(), (torch.zeros(1, 3, 8, 8),), tmp_path / "conv.onnx", ["x"], ["y"], {"x": {0: "n"}})
    info = _info([str(path), "--input", "2x3x8x8"], capsys)
    assert info["inputs"][0]["shape"] == [2, 3, 8, 8]
    assert info["macs"] == 6 * 6 * 4 * 3 * 9 + 144 * 2  # counted at batch 1: the batch axis takes the count's batch


def _run(path, npz, tmp_path, *extra) -> list[dict]:
    out = tmp_path / f"{path.stem}.json"
    code = main(["run", str(path), "--precision", "fp32,int8-dynamic,int8-static", "--data", str(npz),
                 "--min-duration", "0.05", "--min-iters", "5", "--quiet", "--json", str(out), *extra])
    rows = json.loads(out.read_text())
    assert code == 0, [r.get("error") for r in rows]
    return rows


@pytest.mark.parametrize("name, macs", [("silero-vad", SILERO_MACS), ("sequence-lstm", SEQUENCE_MACS)])
def test_stateful_models_measure_fp32_and_int8_from_per_feed_data(name, macs, vad_files, tmp_path):
    """`slimbench run FILE --precision fp32,int8-dynamic,int8-static --data FILE.npz`, no shape or batch flags."""
    path, npz = vad_files[name]
    rows = _run(path, npz, tmp_path)
    ort = {r["variant"]: r for r in rows if r["backend"] == "onnxruntime"}
    assert set(ort) == {"fp32", "int8-dynamic", "int8-static[minmax]"}
    for variant, row in ort.items():
        assert row["status"] == "ok", (variant, row["error"])
        assert row["batch_size"] == 1  # each feed holds a batch of 1 on its batch axis
        assert row["macs"] == macs
        assert row["latency_ms"]["p50"] > 0
        fid = row["fidelity"]
        assert fid["n"] == 10 and fid["max_abs_err"] is not None and fid["rel_error"] is not None
    assert ort["fp32"]["fidelity"]["max_abs_err"] == 0
    assert ort["int8-dynamic"]["fidelity"]["max_abs_err"] > 0  # the LSTM and Linear weights really are INT8
    assert ort["int8-dynamic"]["size_bytes"] < 0.5 * ort["fp32"]["size_bytes"]
    for row in rows:
        if row["backend"] == "pytorch":
            assert row["status"] in ("ok", "skipped") and (row["status"] == "ok" or row["error"])


def test_other_batch_sizes_of_per_feed_data_are_skipped_with_the_reason(vad_files, tmp_path):
    path, npz = vad_files["silero-vad"]
    out = tmp_path / "rows.json"
    assert main(["run", str(path), "--precision", "fp32", "--data", str(npz), "--batch-size", "1,4",
                 "--backend", "onnxruntime", "--min-duration", "0.05", "--min-iters", "5", "--quiet",
                 "--json", str(out)]) == 0
    rows = {r["batch_size"]: r for r in json.loads(out.read_text())}
    assert rows[1]["status"] == "ok"
    assert rows[4]["status"] == "skipped"
    assert "holds a batch of 1" in rows[4]["error"] and "batch size 4 cannot be built" in rows[4]["error"]


def test_random_inputs_sweep_batch_sizes_on_the_state_axis(vad_files, tmp_path):
    """Without data, random inputs follow the batch axes: the state is [2, 4, 128] at batch 4."""
    path, _ = vad_files["silero-vad"]
    out = tmp_path / "rows.json"
    assert main(["run", str(path), "--precision", "fp32", "--input", "input:Nx512", "--batch-size", "1,4",
                 "--backend", "onnxruntime", "--min-duration", "0.05", "--min-iters", "5", "--quiet",
                 "--json", str(out)]) == 0
    rows = {r["batch_size"]: r for r in json.loads(out.read_text())}
    assert rows[1]["status"] == "ok" and rows[4]["status"] == "ok", [r["error"] for r in rows.values()]
    assert rows[4]["throughput_sps"] > 0


def test_toml_key_batch_axis(tmp_path):
    from benchmark.cli_run import add_run_parser, sweep_config_from_args

    import argparse

    toml = tmp_path / "sweep.toml"
    toml.write_text('model = "m.onnx"\nbatch_axis = ["state:1", "sr:none"]\n')
    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers(dest="command"))
    cfg, _ = sweep_config_from_args(parser.parse_args(["run", "--config", str(toml)]))
    assert cfg.batch_axis == ("state:1", "sr:none")
    flags, _ = sweep_config_from_args(parser.parse_args(["run", "m.onnx", "--batch-axis", "state:1",
                                                         "--batch-axis", "sr:none"]))
    assert flags.batch_axis == ("state:1", "sr:none")


def test_model_page_batch_axes_field(vad_files):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    path, _ = vad_files["silero-vad"]
    pages = Path(__file__).resolve().parents[1] / "app_pages"
    at = AppTest.from_file(str(pages / "model.py"), default_timeout=120).run()
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].upload("silero-vad.onnx", path.read_bytes()).run()
    field = next(t for t in at.text_input if t.label == "Batch axes")
    assert field.value == "input:0, state:1, sr:none"  # found from the graph's symbolic 'batch'
    assert at.session_state["model"]["batch_axis"] == []
    field.set_value("input:0, state:x").run()
    assert any("NAME:AXIS or NAME:none" in e.value for e in at.error)
    next(t for t in at.text_input if t.label == "Batch axes").set_value("input:0, state:1, sr:none, nope:1").run()
    assert any("does not have; inputs: input, state, sr" in e.value for e in at.error)
    next(t for t in at.text_input if t.label == "Batch axes").set_value("input:0, state:none, sr:none").run()
    assert not at.exception
    assert at.session_state["model"]["batch_axis"] == ["state:none"]

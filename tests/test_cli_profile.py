"""``slimbench profile``: bad input fails before any work; a real profile prints one JSON object."""
from __future__ import annotations

import json

import pytest

from benchmark.__main__ import EXIT_ERROR, main


@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp32,int8-static"], "one variant at a time: --precision has 2 values"),
    (["--batch-size", "1,8"], "--batch-size has 2 values"),
    (["--backend", "pytorch,onnxruntime"], "--backend has 2 values"),
    (["--backend", "tensorrt"], "backend onnxruntime or pytorch"),
    (["--device", "cuda"], "device must be cpu"),
    (["--precision", "int4"], "precision must be one of"),
    (["--runs", "0"], "profiled runs must be >= 1"),
    (["--sensitivity", "/nonexistent/sens.json"], "cannot read --sensitivity"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["profile", "sample:digits-cnn", "--quiet", *argv]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_no_model_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["profile"])
    assert exc.value.code == 2 and "model" in capsys.readouterr().err


@pytest.mark.slow
def test_profile_int8_static_json_joins_macs_and_sensitivity(tmp_path, capsys):
    from benchmark.inspection import model_info

    sens = tmp_path / "sens.json"
    sens.write_text(json.dumps({"table": [{"layer": "node_conv2d_2", "delta": 1.5}]}))
    code = main(["profile", "sample:digits-cnn", "--precision", "int8-static", "--batch-size", "8", "--threads", "1",
                 "--runs", "5", "--min-duration", "0.1", "--min-iters", "5", "--calib-samples", "32",
                 "--sensitivity", str(sens), "--json", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    res = json.loads(out)
    assert {"layers", "layers_total_ms", "end_to_end_p50_ms", "gap_ms", "peaks", "isa", "kernels"} <= set(res)
    assert res["backend"] == "onnxruntime" and res["batch_size"] == 8 and res["runs"] == 5
    for layer in res["layers"]:
        assert {"name", "op_type", "time_ms", "macs", "precision", "gmacs_per_s", "peak_fraction", "time_share",
                "mac_share", "provider"} <= set(layer)
    # the layers hold every MAC of the model (the FLOPs table of the file that ran, at the profiled batch)
    assert sum(r["macs"] for r in res["layers"]) == model_info("sample:digits-cnn", batch_size=8)["macs"]
    assert res["kernels"]["int8_kernel_layers"] == res["kernels"]["mac_layers"] > 0
    by_name = {r["name"]: r for r in res["layers"]}
    assert by_name["node_conv2d_2"]["sensitivity_delta"] == 1.5
    assert res["peaks"]["peak_gmacs_per_s"]["int8"] > 0
    assert any(r["peak_fraction"] for r in res["layers"] if r["macs"])

"""`slimbench info`: JSON keys, samples vs their ONNX exports, one-line errors with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmark.__main__ import main
from benchmark.compress import reference_variant
from benchmark.models import load_model
from benchmark.models.export import ensure_onnx
from benchmark.models.samples import sample_names

KEYS = {"format", "inputs", "outputs", "params", "macs", "flops", "size_bytes", "sparsity", "unsupported_ops"}


def _info(capsys, *argv) -> dict:
    assert main(["info", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sample_names())
def test_info_sample_matches_its_onnx_export(name, capsys, tmp_path):
    torch_info = _info(capsys, f"sample:{name}")
    assert KEYS <= set(torch_info)
    assert torch_info["format"] == "sample"
    assert torch_info["flops"] == 2 * torch_info["macs"] > 0
    onnx_path = ensure_onnx(reference_variant(load_model(f"sample:{name}")), tmp_path)
    onnx_info = _info(capsys, str(onnx_path))
    assert onnx_info["format"] == "onnx"
    assert onnx_info["params"] == torch_info["params"]
    assert abs(onnx_info["macs"] - torch_info["macs"]) <= 0.01 * torch_info["macs"]
    assert [i["name"] for i in onnx_info["inputs"]] == [i["name"] for i in torch_info["inputs"]]


def test_info_text_labels_macs_and_flops(capsys):
    assert main(["info", "sample:digits-cnn"]) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "FLOPs" in out and "2 x MACs" in out and "bytes" in out


def test_info_errors_are_one_line_without_traceback(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x00\x01 not a model" * 10)
    proc = subprocess.run([sys.executable, "-m", "benchmark", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: broken.onnx")
    assert "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "benchmark", "--debug", "info", str(bad)], capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_info_unknown_sample_lists_known(capsys):
    assert main(["info", "sample:nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown sample 'nope'" in err and "digits-cnn" in err

"""Bring your own model: uploaded ONNX, TorchScript and .pt2 files get every compression and backend
that can apply (through a verified ONNX->PyTorch conversion), one clear reason for the rest, and a
"what applies" table in `slimbench info`."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from benchmark.__main__ import main
from benchmark.applicability import COMPRESSIONS, check_model, summarize
from benchmark.config import InputSpec
from benchmark.models import load_model
from benchmark.models.conversion import attach_conversion, cached_status
from benchmark.results import RunResult
from sample_models.lookalikes import ResNet, build_lookalike

FAST = ["--min-duration", "0.05", "--min-iters", "3", "--eval-samples", "32", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def resnet_small(tmp_path_factory):
    return build_lookalike("resnet-small", tmp_path_factory.mktemp("la"))


def det_onnx(path):
    """x[N,4,4] -> MatMul(W) -> Det -> y[N]: ONNX Runtime runs it, the converter has no Det."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype("float32"), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Det", ["m"], ["y"], name="det")]
    graph = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def conv_only_onnx(path):
    """x[N,1,8,8] -> Conv(1->4) -> y: no MatMul/Gemm, so dynamic INT8 has nothing to quantize."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 1, 3, 3)).astype("float32"), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _by_name(rows):
    return {r["name"]: r for r in rows}


# ---------------------------------------------------------------------------------------------
# What applies


def test_onnx_upload_gets_every_compression_and_the_pytorch_backend(resnet_small):
    rows = _by_name(check_model(load_model(resnet_small.path)))
    assert set(COMPRESSIONS) <= set(rows) and {"pytorch", "onnxruntime", "tensorrt"} <= set(rows)
    for name in COMPRESSIONS:
        assert rows[name]["available"], rows[name]
    assert rows["prune-structured"]["reason"].startswith(
        "structured pruning via ONNX->PyTorch conversion, outputs match ONNX Runtime within ")
    assert rows["pytorch"]["available"] and "converted module" in rows["pytorch"]["reason"]
    assert rows["onnxruntime"]["reason"].startswith("runs the uploaded ONNX file")
    assert rows["int8-dynamic"]["reason"].startswith("ONNX Runtime dynamic INT8 on the uploaded ONNX file (Gemm x1)")
    if not torch.cuda.is_available():
        assert not rows["tensorrt"]["available"] and rows["tensorrt"]["reason"]


def test_a_missing_converter_is_the_reason_everywhere_it_matters(tmp_path):
    model = load_model(det_onnx(tmp_path / "det.onnx"))
    rows = _by_name(check_model(model))
    why = "the ONNX->PyTorch conversion failed: no converter for Det (node det)"
    for name in ("bf16", "prune-unstructured", "prune-structured", "lowrank", "distill", "pytorch"):
        assert not rows[name]["available"] and why in rows[name]["reason"], rows[name]
    for name in ("fp16", "int8-dynamic", "int8-static", "mixed", "onnxruntime"):
        assert rows[name]["available"], rows[name]
    assert "not on pytorch" in rows["fp16"]["reason"]
    # the outcome is stored: the next check answers without converting again
    again = load_model(model.path)
    status = cached_status(again)
    assert status is not None and status["ok"] is False and why in status["error"]
    assert _by_name(check_model(again, convert=False)) == rows
    summary = summarize(list(rows.values()))
    assert "pytorch" not in summary["backends"] and why in summary["unavailable"]["pytorch"]


def test_nothing_for_dynamic_int8_is_said(tmp_path):
    rows = _by_name(check_model(load_model(conv_only_onnx(tmp_path / "conv.onnx"))))
    assert not rows["int8-dynamic"]["available"]
    assert rows["int8-dynamic"]["reason"].startswith("nothing to quantize: the graph has no MatMul/Gemm")
    assert rows["prune-structured"]["available"]


def test_open_dims_ask_for_shapes_instead_of_failing(tmp_path, resnet_small):
    bert = build_lookalike("bert", tmp_path)
    rows = _by_name(check_model(load_model(bert.path)))
    reason = rows["prune-structured"]["reason"]
    assert not rows["prune-structured"]["available"]
    assert "was not checked: input 'input_ids' has dynamic dim 1 (sequence_length) without a value" in reason
    assert "--input input_ids:Nx<sequence_length>" in reason
    # as the reason says: shapes only; the int64 token inputs keep their dtype
    shaped = load_model(bert.path, inputs=[InputSpec.parse(f"{n}:1x16") for n in
                                          ("input_ids", "attention_mask", "token_type_ids")])
    assert [s.dtype for s in shaped.inputs] == ["int64"] * 3
    rows = _by_name(check_model(shaped))
    assert rows["prune-structured"]["available"] and rows["pytorch"]["available"], rows["pytorch"]


def _scripted_resnet(tmp_path):
    module = ResNet((8, 16, 16, 32), num_classes=10).eval()
    path = tmp_path / "resnet.ts"
    torch.jit.save(torch.jit.trace(module, torch.randn(1, 3, 32, 32)), str(path))
    return path


def test_torchscript_is_edited_through_its_onnx_export(tmp_path):
    path = _scripted_resnet(tmp_path)
    rows = _by_name(check_model(load_model(path)))
    assert not rows["prune-structured"]["available"]
    assert "give one with --input x:Nx<?>" in rows["prune-structured"]["reason"]
    assert rows["pytorch"]["available"]  # the uploaded ScriptModule runs as it is
    model = load_model(path, inputs=[InputSpec.parse("x:1x3x32x32")])
    attach_conversion(model)
    assert model.conversion["route"] == "torchscript" and model.conversion["source_check"]["max_abs_err"] < 1e-4
    assert isinstance(model.torch_module, torch.jit.ScriptModule)  # runs as uploaded
    assert not isinstance(model.converted_module, torch.jit.ScriptModule)
    rows = _by_name(check_model(model))
    assert rows["prune-structured"]["reason"].startswith("structured pruning via TorchScript->ONNX->PyTorch conversion, "
                                                         "outputs match the uploaded TorchScript module within ")


def _exported_resnet(tmp_path, dynamic: bool):
    module = ResNet((8, 16, 16, 32), num_classes=10).eval()
    shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
    program = torch.export.export(module, (torch.randn(2, 3, 32, 32),), dynamic_shapes=shapes)
    path = tmp_path / f"resnet-{'dyn' if dynamic else 'static'}.pt2"
    torch.export.save(program, str(path))
    return path


def test_static_batch_pt2_is_counted_and_converted(tmp_path, capsys):
    path = _exported_resnet(tmp_path, dynamic=False)
    assert main(["info", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["inputs"][0]["shape"] == [2, 3, 32, 32] and info["macs"] > 0
    assert any("counted at batch 2" in n and "scaled to batch 1" in n for n in info["notes"])
    rows = _by_name(info["applicability"])
    assert rows["prune-structured"]["available"], rows["prune-structured"]
    assert ".pt2->ONNX->PyTorch conversion" in rows["prune-structured"]["reason"]
    assert info["conversion"]["route"] == "exported"


def test_info_prints_the_table_and_json(resnet_small, capsys):
    assert main(["info", str(resnet_small.path)]) == 0
    out = capsys.readouterr().out
    assert "compressions (what applies to this model, and why not)" in out
    assert "backends (what applies to this model, and why not)" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("prune-structured"))
    assert " yes " in line and "outputs match ONNX Runtime within" in line
    assert main(["info", str(resnet_small.path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in info["applicability"] if r["kind"] == "compression"] == list(COMPRESSIONS)
    assert info["conversion"]["verification"]["ok"] is True and info["conversion_error"] is None


# ---------------------------------------------------------------------------------------------
# Sweeps through the uploaded file


def _rows(path):
    return {(r["variant"], r["backend"]): r for r in json.loads(path.read_text())}


@pytest.mark.slow
def test_sweep_prunes_and_distils_an_uploaded_onnx_file_on_both_backends(resnet_small, tmp_path):
    """The CLI on the uploaded ONNX file: structured pruning 0.5 with label-free distillation,
    measured on ONNX Runtime (the uploaded file and the pruned re-export) and PyTorch (the converted module)."""
    out = tmp_path / "rows.json"
    cmd = [sys.executable, "-m", "benchmark", "run", str(resnet_small.path), "--prune", "0,0.5", "--backend",
           "onnxruntime,pytorch", "--distill", "--distill-epochs", "2", "--json", str(out), *FAST]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    pruned = "fp32+prune-s0.5+distill"
    assert set(rows) == {("fp32", "onnxruntime"), ("fp32", "pytorch"), (pruned, "onnxruntime"), (pruned, "pytorch")}
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in rows.items()}
    ref, small = rows[("fp32", "onnxruntime")], rows[(pruned, "onnxruntime")]
    assert small["macs"] < 0.5 * ref["macs"] and small["params"] < 0.5 * ref["params"]
    assert rows[("fp32", "pytorch")]["macs"] == ref["macs"]  # the uploaded file is counted on both backends
    records = {r["method"]: r for r in small["compression"]}
    assert records["prune-structured"]["changed"] and records["distill"]["changed"]
    d = records["distill"]["details"]
    assert d["output_kind"] == "logits" and d["metric"] == "top1_agreement" and d["labels_used"] is False
    assert d["train_data"] == "random" and d["cosine_after"] > d["cosine_before"]
    assert any("outputs match ONNX Runtime within" in w for w in small["warnings"])
    assert small["fidelity"]["cosine"] is not None and rows[(pruned, "pytorch")]["fidelity"]["cosine"] is not None
    assert "distilled: top1_agreement" in done.stdout
    flat = RunResult.from_json(small).to_row()
    assert (flat["distill_metric"], flat["distill_before"], flat["distill_after"]) == (
        "top1_agreement", d["metric_before"], d["metric_after"])


@pytest.mark.slow
def test_sweep_gives_one_reason_for_what_cannot_apply(tmp_path):
    out = tmp_path / "rows.json"
    path = det_onnx(tmp_path / "det.onnx")
    assert main(["run", str(path), "--prune", "0,0.5", "--backend", "onnxruntime,pytorch", "--json", str(out),
                 *FAST]) == 1  # rows failed
    rows = _rows(out)
    why = "no converter for Det (node det)"
    assert rows[("fp32", "onnxruntime")]["status"] == "ok"
    assert rows[("fp32", "pytorch")]["status"] == "skipped" and why in rows[("fp32", "pytorch")]["error"]
    for backend in ("onnxruntime", "pytorch"):
        row = rows[("fp32+prune-s0.5", backend)]
        assert row["status"] == "failed"
        assert row["error"].startswith("structured pruning needs an editable PyTorch module: the ONNX->PyTorch "
                                       "conversion failed: ") and why in row["error"]


@pytest.mark.slow
def test_sweep_prunes_torchscript_and_pt2_programs(tmp_path):
    out = tmp_path / "ts.json"
    assert main(["run", str(_scripted_resnet(tmp_path)), "--input", "x:1x3x32x32", "--prune", "0,0.5",
                 "--backend", "onnxruntime,pytorch", "--json", str(out), *FAST]) == 0
    rows = _rows(out)
    assert all(r["status"] == "ok" for r in rows.values()), {k: r["error"] for k, r in rows.items()}
    assert rows[("fp32+prune-s0.5", "pytorch")]["macs"] < 0.5 * rows[("fp32", "pytorch")]["macs"]
    out = tmp_path / "pt2.json"
    assert main(["run", str(_exported_resnet(tmp_path, dynamic=True)), "--prune", "0,0.5", "--batch-size", "1,3",
                 "--backend", "onnxruntime,pytorch", "--json", str(out), *FAST]) == 0
    rows = json.loads(out.read_text())
    assert all(r["status"] == "ok" for r in rows), [(r["variant"], r["backend"], r["error"]) for r in rows]
    pruned = [r for r in rows if r["variant"] == "fp32+prune-s0.5"]
    assert pruned and all(r["macs"] < 0.6 * rows[0]["macs"] for r in pruned)


def test_fp16_and_bf16_of_a_converted_graph_with_a_float_cast(tmp_path):
    """An HF-style additive mask (Cast(mask, to=float)) keeps the module's dtype after .half()/bf16."""
    from benchmark.models.onnx_to_torch import convert_verified

    class Masked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.v = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x, mask):
            scores = self.q(x) @ x.transpose(1, 2) + (1.0 - mask[:, None, :].float()) * -10000.0
            return torch.softmax(scores, -1) @ self.v(x)

    x, mask = torch.randn(2, 4, 8), torch.ones(2, 4, dtype=torch.int64)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated
        warnings.simplefilter("ignore")
        torch.onnx.export(Masked().eval(), (x, mask), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["x", "mask"])
    module = convert_verified(tmp_path / "m.onnx", {"x": x.numpy(), "mask": mask.numpy()}).module
    ref = module(x, mask)
    for dtype in (torch.float16, torch.bfloat16):
        out = copy.deepcopy(module).to(dtype)(x.to(dtype), mask)
        assert out.dtype == dtype and torch.allclose(out.float(), ref, atol=0.1)


# ---------------------------------------------------------------------------------------------
# Model page table, Run page choices


def _page(name: str):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app_pages" / f"{name}.py"), default_timeout=120)


def test_model_page_lists_what_applies_and_run_page_offers_only_that(tmp_path):
    at = _page("model").run()
    at.radio[0].set_value("Upload a file").run()
    at.file_uploader[0].upload("det.onnx", det_onnx(tmp_path / "det.onnx").read_bytes()).run()
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "how, or why not" in d.value.columns)
    rows = {r["compression / backend"]: r for r in table.to_dict("records")}
    assert rows["pytorch"][""] == "no" and "no converter for Det (node det)" in rows["pytorch"]["how, or why not"]
    assert rows["onnxruntime"][""] == "yes" and rows["fp16"][""] == "yes"
    chosen = at.session_state["model"]
    assert "pytorch" in chosen["applies"]["unavailable"] and "onnxruntime" in chosen["applies"]["backends"]

    run = _page("run")
    run.session_state["model"] = chosen
    run.run()
    assert not run.exception
    precisions = next(w for w in run.multiselect if w.label == "Precisions")
    assert "bf16" not in precisions.options and "fp16" in precisions.options
    backends = next(w for w in run.multiselect if w.label == "Backends")
    assert "pytorch" not in backends.options and "onnxruntime" in backends.options
    captions = [c.value for c in run.caption]
    assert any(c.startswith("pytorch is off for this model:") and "no converter for Det" in c for c in captions)
    assert any(c.startswith("prune-structured is off for this model:") for c in captions)
    assert next(s for s in run.slider if s.label.startswith("Low-rank")).disabled
    assert next(c for c in run.checkbox if c.label.startswith("Distil")).disabled

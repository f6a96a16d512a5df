"""Model intake: every format loads with its input specs; bad files get one clear ModelLoadError line."""
from __future__ import annotations

import pickle
import shutil
import zipfile

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from benchmark import ConfigError, InputSpec, ModelLoadError, UnsafeModelError, load_model
from benchmark.errors import ExportError
from benchmark.models.base import LoadedModel
from benchmark.models.export import ensure_onnx, export_onnx
from benchmark.compress import reference_variant


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1).float()
        return self.fc(h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1).float())


class Branchy(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x * 2
        return x


class Marker:
    """Unpickling this writes a marker file: proof that a pickle's code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


SPEC = [InputSpec("image", ("batch", 1, 8, 8))]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    net = TinyNet().eval()
    export_onnx(net, SPEC, d / "tiny.onnx")
    traced = torch.jit.trace(net, torch.randn(2, 1, 8, 8))
    torch.jit.save(traced, d / "tiny_script.pt")
    ep = torch.export.export(net, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    torch.export.save(ep, d / "tiny.pt2")
    torch.save(net, d / "tiny_full.pt")
    export_onnx(TwoInputs().eval(), [InputSpec("input_ids", ("batch", 16), "int64"),
                                     InputSpec("attention_mask", ("batch", 16), "int64")], d / "two.onnx")
    return d, net


def test_onnx_loads_with_symbolic_batch(files):
    d, _ = files
    m = load_model(d / "tiny.onnx")
    assert m.format == "onnx" and m.framework == "onnx"
    assert m.inputs[0].name == "image"
    assert m.inputs[0].shape == ("batch", 1, 8, 8)
    assert m.outputs and m.outputs[0].shape[1] == 10


def test_onnx_multi_integer_inputs(files):
    d, _ = files
    m = load_model(d / "two.onnx")
    assert [(s.name, s.dtype) for s in m.inputs] == [("input_ids", "int64"), ("attention_mask", "int64")]
    feeds = m.example_inputs(batch_size=3)
    assert feeds["input_ids"].shape == (3, 16) and feeds["input_ids"].dtype == np.int64
    assert (feeds["attention_mask"] == 1).all()


def test_torchscript_needs_shapes_then_runs(files):
    d, net = files
    m = load_model(d / "tiny_script.pt")
    assert m.format == "torchscript"
    with pytest.raises(ConfigError, match="dynamic"):
        m.example_inputs(1)
    m = load_model(d / "tiny_script.pt", inputs=[InputSpec.parse(f"{m.inputs[0].name}:2x1x8x8")])
    x = torch.from_numpy(m.example_inputs(2)[m.inputs[0].name])
    torch.testing.assert_close(m.torch_module(x), net(x))


def test_exported_program_keeps_dynamic_batch(files):
    d, net = files
    m = load_model(d / "tiny.pt2")
    assert m.format == "exported"
    assert m.inputs[0].shape == ("batch", 1, 8, 8)
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(m.torch_module(x), net(x))


def test_full_pickle_refused_without_opt_in(files):
    d, _ = files
    with pytest.raises(UnsafeModelError, match="--trust-pickle"):
        load_model(d / "tiny_full.pt")
    m = load_model(d / "tiny_full.pt", trust_pickle=True)
    assert m.format == "pickle"


def test_malicious_pickle_never_executes(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"weights": Marker(marker)}, fh, protocol=2)
    with pytest.raises(UnsafeModelError):
        load_model(evil)
    assert not marker.exists()
    torch.save({"weights": Marker(marker)}, tmp_path / "evil_zip.pt")
    marker.unlink(missing_ok=True)  # torch.save itself does not run __reduce__'s result, but be sure
    with pytest.raises(UnsafeModelError):
        load_model(tmp_path / "evil_zip.pt")
    assert not marker.exists()


def test_input_override_parsing():
    s = InputSpec.parse("input_ids:4x128:int64")
    assert s == InputSpec("input_ids", (4, 128), "int64")
    assert InputSpec.parse("x:Nx3x32x32").shape == ("N", 3, 32, 32)
    with pytest.raises(ConfigError, match="name:1x3x32x32"):
        InputSpec.parse("nonsense")
    with pytest.raises(ConfigError, match="dtype"):
        InputSpec.parse("x:1x3:int4")


def test_override_without_dtype_keeps_the_declared_one():
    declared = LoadedModel(name="enc", format="onnx", framework="onnx",
                           inputs=[InputSpec("ids", ("batch", "seq"), "int64"), InputSpec("x", ("batch", 4), "float16")])
    shaped = declared.with_inputs([InputSpec.parse("ids:1x16"), InputSpec.parse("x:1x4:float32")])
    assert [(s.shape, s.dtype) for s in shaped.inputs] == [((1, 16), "int64"), ((1, 4), "float32")]
    single = LoadedModel(name="one", format="onnx", framework="onnx", inputs=[InputSpec("ids", ("batch", 8), "int32")])
    assert single.with_inputs([InputSpec.parse("2x8")]).inputs[0].dtype == "int32"
    assert single.with_inputs([InputSpec.parse("2x8:int64")]).inputs[0].dtype == "int64"


def test_override_unknown_input_names_the_real_ones(files):
    d, _ = files
    with pytest.raises(ConfigError, match="inputs: image"):
        load_model(d / "tiny.onnx", inputs=[InputSpec("pixels", (1, 1, 8, 8))])


def test_dynamic_dim_without_value_asks_for_one():
    spec = InputSpec("tokens", ("batch", "seq"), "int64")
    with pytest.raises(ConfigError, match="--input tokens:"):
        spec.concrete(batch_size=1)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("empty.onnx", b"", "empty"),
        ("random.onnx", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "ONNX"),
        ("random.pt", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "PyTorch"),
        ("random.pt2", bytes(np.random.default_rng(2).integers(0, 256, 4096, dtype=np.uint8)), "torch.export"),
        ("model.txt", b"hello", "unsupported extension"),
    ],
)
def test_bad_bytes_give_one_line(tmp_path, name, content, expected):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ModelLoadError) as info:
        load_model(p)
    msg = str(info.value)
    assert expected in msg and name in msg and "\n" not in msg


@pytest.mark.parametrize("src, ext", [("tiny.onnx", ".onnx"), ("tiny_script.pt", ".pt"), ("tiny.pt2", ".pt2")])
def test_truncated_files(files, tmp_path, src, ext):
    d, _ = files
    data = (d / src).read_bytes()
    p = tmp_path / f"truncated{ext}"
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError) as info:
        load_model(p)
    assert "truncated" in str(info.value) or "cannot" in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_extension(files, tmp_path):
    d, _ = files
    shutil.copy(d / "tiny.onnx", tmp_path / "renamed.pt")
    with pytest.raises(ModelLoadError, match="looks like an ONNX model"):
        load_model(tmp_path / "renamed.pt")
    shutil.copy(d / "tiny_script.pt", tmp_path / "renamed.onnx")
    with pytest.raises(ModelLoadError, match="PyTorch file"):
        load_model(tmp_path / "renamed.onnx")


def test_onnx_failing_checker(tmp_path):
    # A node that consumes a tensor nobody produces: parses, fails the checker.
    node = helper.make_node("Relu", ["missing"], ["y"])
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "bad.onnx")
    with pytest.raises(ModelLoadError, match="checker"):
        load_model(tmp_path / "bad.onnx")


def test_onnx_with_external_data_loads(files, tmp_path):
    d, _ = files
    proto = onnx.load(d / "tiny.onnx")
    onnx.save(proto, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").exists()
    m = load_model(tmp_path / "ext.onnx")
    assert m.inputs[0].name == "image"


def test_export_records_exporter_and_runs(files, tmp_path):
    d, net = files
    info = export_onnx(net, SPEC, tmp_path / "e.onnx")
    assert info.exporter == "dynamo" and info.fallback_reason is None
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((7, 1, 8, 8)).astype(np.float32)
    (y,) = sess.run(None, {"image": x})
    np.testing.assert_allclose(y, net(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert not any(p.suffix == ".data" for p in tmp_path.iterdir())


def test_export_scriptmodule_falls_back_with_reason(files, tmp_path):
    d, _ = files
    m = load_model(d / "tiny_script.pt", inputs=[InputSpec("x", ("batch", 1, 8, 8))])
    info = export_onnx(m.torch_module, m.inputs, tmp_path / "s.onnx")
    assert info.exporter == "torchscript" and "ScriptModule" in info.fallback_reason
    assert load_model(tmp_path / "s.onnx").inputs[0].shape[0] == "batch"


def test_export_data_dependent_control_flow_is_named(tmp_path):
    with pytest.raises(ExportError, match="data-dependent control flow"):
        export_onnx(Branchy(), [InputSpec("x", ("batch", 4))], tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()


def test_ensure_onnx_exports_once(files, tmp_path):
    d, _ = files
    m = load_model(d / "tiny.pt2")
    v = reference_variant(m)
    p1 = ensure_onnx(v, tmp_path)
    assert p1.exists() and v.onnx_path == p1
    assert ensure_onnx(v, tmp_path) == p1


def test_zip_without_model(tmp_path):
    p = tmp_path / "weird.pt"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("readme.txt", "not a model")
    with pytest.raises(ModelLoadError, match="zip archive without a PyTorch model"):
        load_model(p)


def test_input_names_with_colons():
    assert InputSpec.parse("input:0:1x3x8x8") == InputSpec("input:0", (1, 3, 8, 8), "float32")
    assert InputSpec.parse("serving:input:0:Nx4:int64") == InputSpec("serving:input:0", ("N", 4), "int64")

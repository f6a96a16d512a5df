"""Builders of hostile input files for the security tests (generated per test: no binary blobs).

Every code-running payload is a pickle whose ``__reduce__`` calls ``eval`` on code that writes the
current process id to a *marker* file and then returns a harmless value, so a test can tell
whether (and in which process) the payload ran.
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np


class Payload:
    """Pickles as ``eval(code)``: unpickling writes this process's pid to ``marker``, then returns ``ret``."""

    def __init__(self, marker: Path, ret: str = "None"):
        self.code = f"(open({str(marker)!r}, 'w').write(str(__import__('os').getpid())), {ret})[1]"

    def __reduce__(self):
        return (eval, (self.code,))


def torch_saved(obj) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def exported_linear(path: Path, dynamic: bool = False) -> Path:
    """A valid ``torch.export`` archive of ``Linear(4, 2)``: input [1, 4], or [batch, 4] with ``dynamic``."""
    import torch

    torch.manual_seed(0)
    shapes = {"input": {0: torch.export.Dim("batch", min=1, max=64)}} if dynamic else None
    ep = torch.export.export(torch.nn.Linear(4, 2), (torch.randn(2 if dynamic else 1, 4),), dynamic_shapes=shapes)
    torch.export.save(ep, str(path))
    return path


def rewrite(src: Path, dst: Path, change: Callable[[str, bytes], bytes | None], add: dict[str, bytes] | None = None) -> Path:
    """Copy the zip ``src`` to ``dst`` through ``change(name, data)`` (names without the archive's top
    folder; None drops the member), then add ``add`` (a name starting with ``/`` goes to the zip's root)."""
    prefix = zipfile.ZipFile(src).namelist()[0].split("/")[0]
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename[len(prefix) + 1:], zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name[1:] if name.startswith("/") else f"{prefix}/{name}", data)
    return dst


def _member(archive: Path, name: str) -> bytes:
    """Member ``name`` (without the top folder) of a torch.export archive."""
    with zipfile.ZipFile(archive) as zf:
        prefix = zf.namelist()[0].split("/")[0]
        return zf.read(f"{prefix}/{name}")


def _json_edit(target: str, edit: Callable[[dict], None]) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name == target:
            obj = json.loads(data)
            edit(obj)
            return json.dumps(obj).encode()
        return data
    return change


def pt2_pickled_weight(folder: Path, marker: Path) -> Path:
    """The bias marked ``use_pickle`` and its bytes replaced by a pickle that runs code (torch.export.load
    unpickles it with weights_only=False); it returns a valid Parameter so the model loads when trusted."""
    good = exported_linear(folder / "good_w.pt2")
    evil = torch_saved(Payload(marker, "__import__('torch').nn.Parameter(__import__('torch').zeros(2))"))
    config = _json_edit("data/weights/model_weights_config.json",
                        lambda c: c["config"]["bias"].update(use_pickle=True))
    bias = json.loads(_member(good, "data/weights/model_weights_config.json"))["config"]["bias"]["path_name"]
    return rewrite(good, folder / "pickled_weight.pt2",
                   lambda n, d: evil if n == f"data/weights/{bias}" else config(n, d))


def pt2_pickled_sample_inputs(folder: Path, marker: Path) -> Path:
    """``data/sample_inputs/model.pt`` replaced by a pickle that fails ``weights_only=True``: torch falls
    back to a full unpickle."""
    good = exported_linear(folder / "good_s.pt2")
    evil = torch_saved(Payload(marker, "((__import__('torch').zeros(1, 4),), {})"))
    return rewrite(good, folder / "pickled_sample_inputs.pt2",
                   lambda n, d: evil if n == "data/sample_inputs/model.pt" else d)


def pt2_opaque_constant(folder: Path, marker: Path) -> Path:
    """An ``opaque_obj_0`` constant: torch calls ``pickle.loads`` on it."""
    good = exported_linear(folder / "good_o.pt2")
    config = _json_edit("data/constants/model_constants_config.json", lambda c: c["config"].update(
        {"evil": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}}))
    return rewrite(good, folder / "opaque_constant.pt2", config,
                   add={"data/constants/opaque_obj_0": pickle.dumps(Payload(marker))})


def pt2_guard_code(folder: Path, marker: Path) -> Path:
    """A ``guards_code`` entry that is Python, not a shape check: torch execs it into the module's forward."""
    good = exported_linear(folder / "good_g.pt2", dynamic=True)
    code = f"__import__('builtins').open({str(marker)!r}, 'w').write('guard') > 0"
    return rewrite(good, folder / "guard_code.pt2",
                   _json_edit("models/model.json", lambda p: p["guards_code"].append(code)))


def pt2_sympy_expression(folder: Path, marker: Path) -> Path:
    """A symbolic dim whose ``expr_str`` calls Python: ``sympy.sympify`` evaluates it while loading."""
    good = exported_linear(folder / "good_e.pt2", dynamic=True)
    hook = f"__import__('builtins').open({str(marker)!r}, 'w').write('sympy') and "

    def change(name, data):
        if name != "models/model.json":
            return data
        text = data.decode()
        start = text.index('"expr_str": "') + len('"expr_str": "')
        return (text[:start] + hook.replace('"', '\\"') + text[start:]).encode()
    return rewrite(good, folder / "sympy_expression.pt2", change)


def pt2_aoti(folder: Path) -> Path:
    """An archive that carries an AOTInductor package (compiled code torch would load)."""
    good = exported_linear(folder / "good_a.pt2")
    return rewrite(good, folder / "aoti.pt2", lambda n, d: d,
                   add={"data/aotinductor/model/model.so": b"\x7fELF not really a library"})


def pt2_defaultdict_spec(folder: Path) -> Path:
    """An input spec whose defaultdict context names ``os.system`` as its factory (torch imports it)."""
    good = exported_linear(folder / "good_d.pt2")

    def edit(program):
        sig = program["graph_module"]["module_call_graph"][0]["signature"]
        ctx = {"default_factory_module": "os", "default_factory_name": "system", "dict_context": []}
        sig["in_spec"] = json.dumps([1, {"type": "collections.defaultdict", "context": ctx, "children_spec": []}])
    return rewrite(good, folder / "defaultdict_spec.pt2", _json_edit("models/model.json", edit))


def pt2_empty_weight_record(folder: Path, shape=(100000, 100000)) -> Path:
    """The weight declared huge over an empty record (torch would allocate zeros of the declared shape)."""
    good = exported_linear(folder / "good_z.pt2")

    def edit(c):
        meta = c["config"]["weight"]["tensor_meta"]
        meta["sizes"] = [{"as_int": d} for d in shape]
        meta["strides"] = [{"as_int": shape[1]}, {"as_int": 1}]
    config = _json_edit("data/weights/model_weights_config.json", edit)
    weight = json.loads(_member(good, "data/weights/model_weights_config.json"))["config"]["weight"]["path_name"]
    return rewrite(good, folder / "empty_weight.pt2",
                   lambda n, d: b"" if n == f"data/weights/{weight}" else config(n, d))


# ------------------------------------------------------------------------------------------------
def npz_lying_header(path: Path, shape=(10**9, 1, 8, 8), data_bytes: int = 1024) -> Path:
    """An .npz whose ``image.npy`` header claims ``shape`` float32 over ``data_bytes`` bytes."""
    from numpy.lib import format as npy_format

    member = io.BytesIO()
    npy_format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    member.write(bytes(data_bytes))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("image.npy", member.getvalue())
    return path


def onnx_huge_initializer(path: Path, external: bool = False, n: int = 10**6) -> Path:
    """MatMul with an initializer declared ``n x n`` float32 over 16 bytes (raw, or an external file)."""
    import onnx
    from onnx import TensorProto, helper

    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[n, n], raw_data=b"\x00" * 16)  # the helper checks sizes
    if external:
        (path.parent / "w.bin").write_bytes(b"\x00" * 16)
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "w.bin"), ("offset", "0"), ("length", "16")):
            entry = w.external_data.add()
            entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def digits_npz(path: Path, labels=None, image=None) -> Path:
    """Ten 1x8x8 float32 images for the digits samples, with optional labels."""
    image = np.zeros((10, 1, 8, 8), np.float32) if image is None else image
    arrays = {"image": image}
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    np.savez(path, **arrays)
    return path


def pt2_legacy_fallback(folder: Path, marker: Path) -> Path:
    """A .pt2 with members at the zip's root: torch's PT2 reader refuses it, so ``torch.export.load``
    falls back to the pre-2.7 layout and unpickles ``serialized_constants.pt`` with weights_only=False."""
    good = exported_linear(folder / "good_l.pt2")
    return rewrite(good, folder / "legacy_fallback.pt2", lambda n, d: d, add={
        "/version": b"8.20", "/serialized_exported_program.json": _member(good, "models/model.json"),
        "/serialized_state_dict.pt": torch_saved({}), "/serialized_constants.pt": torch_saved(Payload(marker, "{}")),
        "/serialized_example_inputs.pt": b""})

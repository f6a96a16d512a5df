"""Load a model file (or a built-in sample) into a :class:`LoadedModel`.

Formats, detected from the file's *content* and checked against its extension:

- ONNX (``.onnx``), external data next to it allowed (references must stay inside its folder);
- TorchScript archives (``torch.jit.save``; ``.pt``/``.pth``/``.ts``/``.jit``);
- ``torch.export`` programs (``.pt2``);
- a ``state_dict`` / checkpoint for a registered architecture (``weights_only=True``);
- a fully pickled ``nn.Module`` **only** with ``trust_pickle=True`` (unpickling runs code from the file);
- ``sample:NAME`` for a built-in sample.

Every failure is a :class:`ModelLoadError` with one line: which file, what format was expected,
what is wrong.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Callable

from ..config import InputSpec, OutputSpec
from ..errors import TRUST_OPT_IN, BenchmarkError, ConfigError, ModelLoadError, ResourceError, UnsafeModelError, one_line
from ..onnx_graph import recurrent_state_axes
from ..registry import Registry
from .base import LoadedModel
from .batch_axes import apply_batch_axes, infer_batch_axes

ONNX_EXTS = (".onnx",)
TORCH_EXTS = (".pt", ".pth", ".ts", ".jit", ".bin", ".ckpt")
EXPORT_EXTS = (".pt2",)
SUPPORTED_EXTS = ONNX_EXTS + TORCH_EXTS + EXPORT_EXTS

#: name -> loader(path, arch, trust_pickle) -> LoadedModel
FORMAT_LOADERS: Registry[Callable[..., LoadedModel]] = Registry("model format")

_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
    11: "float64", 16: "bfloat16",
}


def _sniff(path: Path) -> str:
    """Guess the container from the bytes: 'zip', 'pickle', 'onnx', 'empty' or 'unknown'."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    # ONNX ModelProto starts with field 1 (ir_version, varint): tag 0x08.
    if head[:1] == b"\x08":
        return "onnx"
    return "unknown"


def _zip_kind(path: Path) -> str:
    """'torchscript', 'exported', 'torch-save' (torch.save zip) or 'zip'."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise ModelLoadError(f"{path.name}: the file is a damaged zip archive ({exc}); it may be truncated") from None
    if any(n.endswith("/serialized_exported_program.json") or "/models/" in n and n.endswith(".json") for n in names) or any(
        n.endswith("archive_format") for n in names
    ):
        return "exported"
    if any("/code/" in n for n in names) or any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "torch-save"
    return "zip"


def load_model(
    source: str | Path,
    inputs: list[InputSpec] | tuple[InputSpec, ...] | None = None,
    trust_pickle: bool = False,
    arch: str | None = None,
    name: str | None = None,
    batch_axes: list[str] | tuple[str, ...] | None = None,
) -> LoadedModel:
    """Load ``source`` (a path or ``sample:NAME``), find each input's batch axis, apply input overrides.

    ``arch`` names a built-in architecture for state_dict files. ``trust_pickle`` allows a full
    pickle (which executes code from the file); without it such files raise UnsafeModelError.
    Batch axes are found from the model's symbolic dims (:mod:`benchmark.models.batch_axes`);
    ``batch_axes`` (``NAME:AXIS`` / ``NAME:none``) overrides them.
    """
    text = str(source)
    if text.startswith("sample:"):
        model = load_sample(text.split(":", 1)[1])
    else:
        path = Path(text)
        if not path.exists():
            raise ModelLoadError(f"{path}: no such file")
        if path.is_dir():
            raise ModelLoadError(f"{path}: is a folder; give a model file ({', '.join(SUPPORTED_EXTS)})")
        if path.stat().st_size == 0:
            raise ModelLoadError(f"{path.name}: the file is empty (0 bytes); expected a model file ({', '.join(SUPPORTED_EXTS)})")
        model = _load_file(path, arch=arch, trust_pickle=trust_pickle)
    if name:
        model.name = name
    model.inputs, note = infer_batch_axes(model.inputs, model.outputs, model.state_axes)
    if note:
        model.notes.append(note)
    if inputs:
        model = model.with_inputs(list(inputs))
    return apply_batch_axes(model, batch_axes or ())


def _load_file(path: Path, arch: str | None, trust_pickle: bool) -> LoadedModel:
    ext = path.suffix.lower()
    kind = _sniff(path)
    if kind == "zip":
        kind = _zip_kind(path)
    if ext in ONNX_EXTS:
        if kind in ("torchscript", "exported", "torch-save", "pickle"):
            raise ModelLoadError(f"{path.name}: expected an ONNX model (.onnx) but the file is a PyTorch file ({kind}); rename it to .pt/.pt2")
        return FORMAT_LOADERS.get("onnx")(path)
    if ext in EXPORT_EXTS:
        if kind == "onnx":
            raise ModelLoadError(f"{path.name}: expected a torch.export program (.pt2) but the file looks like an ONNX model; rename it to .onnx")
        if kind != "exported":
            raise ModelLoadError(f"{path.name}: expected a torch.export program (.pt2, a zip archive from torch.export.save); the file is not one ({_describe_kind(kind)})")
        return FORMAT_LOADERS.get("exported")(path, trust_pickle=trust_pickle)
    if ext in TORCH_EXTS:
        if kind == "onnx":
            raise ModelLoadError(f"{path.name}: expected a PyTorch file ({ext}) but the file looks like an ONNX model; rename it to .onnx")
        if kind == "torchscript":
            return FORMAT_LOADERS.get("torchscript")(path)
        if kind == "exported":
            raise ModelLoadError(f"{path.name}: this is a torch.export program; rename it to .pt2")
        if kind in ("torch-save", "pickle"):
            return FORMAT_LOADERS.get("state_dict")(path, arch=arch, trust_pickle=trust_pickle)
        raise ModelLoadError(f"{path.name}: expected a PyTorch file ({ext}: TorchScript archive or torch.save checkpoint); {_describe_kind(kind)}")
    raise ModelLoadError(f"{path.name}: unsupported extension {ext or '(none)'}; supported: {', '.join(SUPPORTED_EXTS)}")


def _describe_kind(kind: str) -> str:
    return {
        "unknown": "the bytes match no known model format (random or corrupted data?)",
        "zip": "it is a zip archive without a PyTorch model inside",
        "empty": "the file is empty",
    }.get(kind, f"it looks like {kind}")


# ---------------------------------------------------------------------------------------------
# ONNX


def onnx_io_specs(model_proto) -> tuple[list[InputSpec], list[OutputSpec]]:
    """Input and output specs of an ONNX graph (initializers are not inputs)."""
    inits = {i.name for i in model_proto.graph.initializer}

    def dims(vi):
        t = vi.type.tensor_type
        out = []
        for i, d in enumerate(t.shape.dim):
            if d.HasField("dim_value") and d.dim_value > 0:
                out.append(int(d.dim_value))
            else:
                out.append(d.dim_param or f"dim{i}")
        return tuple(out), _ONNX_DTYPES.get(t.elem_type, "float32")

    ins = []
    for vi in model_proto.graph.input:
        if vi.name in inits:
            continue
        shape, dtype = dims(vi)
        ins.append(InputSpec(vi.name, shape, dtype))
    outs = []
    for vi in model_proto.graph.output:
        shape, dtype = dims(vi)
        outs.append(OutputSpec(vi.name, shape, dtype))
    return ins, outs


@FORMAT_LOADERS.register("onnx")
def load_onnx(path: Path) -> LoadedModel:
    import onnx

    from ..safety import check_onnx_external_data, check_onnx_tensor_sizes

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError / RuntimeError variants
        raise ModelLoadError(f"{path.name}: expected an ONNX model but it cannot be parsed ({one_line(exc)}); the file may be truncated or not ONNX") from None
    if not proto.graph.node and not proto.graph.output:
        raise ModelLoadError(f"{path.name}: expected an ONNX model but the file holds no graph (random bytes or truncated?)")
    check_onnx_external_data(path)
    check_onnx_tensor_sizes(proto, path)
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx.checker.ValidationError and friends
        raise ModelLoadError(f"{path.name}: ONNX checker rejected the model: {one_line(exc)}") from None
    inputs, outputs = onnx_io_specs(proto)
    if not inputs:
        raise ModelLoadError(f"{path.name}: the ONNX graph has no inputs")
    return LoadedModel(name=path.stem, format="onnx", framework="onnx", inputs=inputs, outputs=outputs, path=path,
                       onnx_path=path, state_axes=recurrent_state_axes(proto))


# ---------------------------------------------------------------------------------------------
# TorchScript


@FORMAT_LOADERS.register("torchscript")
def load_torchscript(path: Path) -> LoadedModel:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the C++ loader
        raise ModelLoadError(f"{path.name}: expected a TorchScript archive but it cannot be loaded ({one_line(exc)})") from None
    module.eval()
    names = []
    try:
        args = module.forward.schema.arguments[1:]
        names = [a.name for a in args]
    except (AttributeError, RuntimeError):
        names = []
    inputs = [InputSpec(n or f"input{i}", ("batch", "?"), "float32") for i, n in enumerate(names)] or [InputSpec("input", ("batch", "?"))]
    model = LoadedModel(
        name=path.stem, format="torchscript", framework="torch", inputs=inputs, path=path, torch_module=module,
        notes=["TorchScript archives do not record input shapes: give them with --input NAME:1x3x32x32"],
    )
    return model


# ---------------------------------------------------------------------------------------------
# torch.export


def _exported_specs(ep) -> list[InputSpec]:
    specs = []
    user_inputs = list(ep.graph_signature.user_inputs)
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    for name in user_inputs:
        node = nodes.get(name)
        val = node.meta.get("val") if node is not None else None
        if val is None or not hasattr(val, "shape"):
            continue
        shape = []
        for i, d in enumerate(val.shape):
            if type(d) is int:
                shape.append(d)
            else:  # a SymInt: a dynamic dim
                shape.append("batch" if i == 0 else str(d))
        dtype = str(val.dtype).replace("torch.", "")
        if dtype not in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int8", "uint8", "bool"):
            dtype = "float32"
        specs.append(InputSpec(name, tuple(shape), dtype))
    return specs


@FORMAT_LOADERS.register("exported")
def load_exported(path: Path, trust_pickle: bool = False) -> LoadedModel:
    """A ``.pt2`` archive, checked by :func:`~benchmark.models.pt2_check.check_exported_archive` first
    (parts that would run code need ``trust_pickle``); torch then reads the same open file."""
    import torch

    from .pt2_check import check_exported_archive

    with open(path, "rb") as fh:
        notes = check_exported_archive(fh, path.name, trust_pickle)
        try:
            ep = torch.export.load(fh)
            module = ep.module()
        except Exception as exc:  # torch raises many kinds here (zip, json, version, verifier)
            raise ModelLoadError(f"{path.name}: expected a torch.export program (.pt2) but it cannot be loaded ({one_line(exc)})") from None
    inputs = _exported_specs(ep)
    return LoadedModel(name=path.stem, format="exported", framework="torch", inputs=inputs, path=path, torch_module=module,
                       notes=notes)


# ---------------------------------------------------------------------------------------------
# state_dict / checkpoint / full pickle


def _extract_state_dict(obj: Any) -> dict | None:
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
    return None


@FORMAT_LOADERS.register("state_dict")
def load_state_dict_file(path: Path, arch: str | None = None, trust_pickle: bool = False) -> LoadedModel:
    import pickle

    import torch

    from .archs import arch_names, get_arch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise UnsafeModelError(
                f"{path.name}: this file is a full pickle (it holds Python objects, e.g. a whole nn.Module); "
                f"loading it runs code from the file, so it was refused. Save a state_dict instead. {TRUST_OPT_IN}"
            ) from None
        obj = _load_trusted_pickle(path)
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"{path.name}: expected a PyTorch checkpoint but it cannot be read ({one_line(exc)}); the file may be truncated") from None
    if isinstance(obj, torch.nn.Module):
        obj.eval()
        inputs = []
        if arch:
            inputs = list(get_arch(arch).inputs)
        return LoadedModel(
            name=path.stem, format="pickle", framework="torch", inputs=inputs or [InputSpec("input", ("batch", "?"))],
            path=path, torch_module=obj, arch=arch,
            notes=["loaded from a full pickle because it was marked trusted"],
        )
    state = _extract_state_dict(obj)
    if state is None:
        raise ModelLoadError(f"{path.name}: the checkpoint holds {type(obj).__name__}, not a state_dict of tensors")
    if not arch:
        raise ConfigError(
            f"{path.name}: a state_dict holds weights only; choose its architecture with --arch (one of {', '.join(arch_names())})"
        )
    spec = get_arch(arch)
    module = spec.build()
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path.name}: weights do not fit architecture {arch!r}: {one_line(exc)}") from None
    module.eval()
    return LoadedModel(
        name=path.stem, format="state_dict", framework="torch", inputs=list(spec.inputs), path=path,
        torch_module=module, arch=arch, dataset=spec.dataset, num_classes=spec.num_classes,
    )


def _load_trusted_pickle(path: Path):
    """Full unpickling; only reached when the user opted in (and, in sweeps, inside a child process)."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # arbitrary code ran; report whatever it raised
        raise ModelLoadError(f"{path.name}: trusted pickle failed to load ({one_line(exc)})") from None


# ---------------------------------------------------------------------------------------------
# Samples


def load_sample(name: str) -> LoadedModel:
    import torch

    from .archs import get_arch
    from .samples import get_sample

    spec = get_sample(name)
    arch = get_arch(spec.arch)
    module = arch.build()
    try:
        state = torch.load(str(spec.weights), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"sample {name!r}: weights file {spec.weights} is missing; run python -m sample_models.train") from None
    module.load_state_dict(state)
    module.eval()
    return LoadedModel(
        name=name, format="sample", framework="torch", inputs=list(arch.inputs), path=spec.weights,
        torch_module=module, arch=spec.arch, sample=name, dataset=spec.dataset, num_classes=arch.num_classes,
    )


# ---------------------------------------------------------------------------------------------


def infer_torch_outputs(model: LoadedModel, batch_size: int = 1) -> list[OutputSpec]:
    """Output specs of a torch model from one forward pass (needs static input specs)."""
    import torch

    feeds = model.example_inputs(batch_size)
    args = [torch.from_numpy(feeds[s.name]) for s in model.inputs]
    with torch.inference_mode():
        out = model.torch_module(*args)
    outs = out if isinstance(out, (tuple, list)) else [out]
    specs = []
    for i, t in enumerate(outs):
        if hasattr(t, "shape"):
            shape = ("batch",) + tuple(int(d) for d in t.shape[1:]) if t.dim() else ()
            specs.append(OutputSpec(f"output{i}" if len(outs) > 1 else "output", shape, str(t.dtype).replace("torch.", "")))
    return specs


def describe_io(model: LoadedModel) -> LoadedModel:
    """Fill ``model.outputs`` for torch models when the inputs allow a dry run (best effort, noted)."""
    if model.outputs or model.torch_module is None:
        return model
    from ..data.base import fixed_batch

    try:  # a .pt2 program exported at one batch size refuses any other (its shape guard raises)
        model.outputs = infer_torch_outputs(model, (fixed_batch(model.inputs) if model.format == "exported" else None) or 1)
    except ResourceError:
        raise  # inputs that do not fit in memory are an error of the shapes given, not a note
    except BenchmarkError as exc:
        model.notes.append(f"outputs unknown until input shapes are given: {exc}")
    except (RuntimeError, ValueError, TypeError) as exc:
        model.notes.append(f"outputs unknown: a dry run with the declared inputs failed ({one_line(exc)})")
    return model


__all__ = ["load_model", "load_sample", "onnx_io_specs", "describe_io", "FORMAT_LOADERS", "SUPPORTED_EXTS"]

"""The chosen model as a file a user can ship, written beside the recommendation's record.

- ONNX Runtime backends: the variant's ONNX file (exported from PyTorch where the variant is a
  PyTorch model), as the search timed it; the runtime settings go into the record and the
  ``.json`` written next to the model.
- PyTorch: a TorchScript file traced from the module exactly as the session ran it (weights
  converted to the precision, ``torch.autocast`` around the trace for autocast precisions); load it
  with ``torch.jit.load`` and feed the inputs in the traced dtype.
- Other backends (TensorRT): the ONNX file the engine is built from (engines are tied to one GPU
  and TensorRT version).
"""
from __future__ import annotations

import contextlib
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ExportError
from ..onnx_graph import external_data_files
from .space import ORT_BACKENDS

if TYPE_CHECKING:
    from .measurer import Measurer, Outcome


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:120]


def copy_model_file(src: Path, dest: Path) -> None:
    """Copy a model file and, for ONNX with external weights, the data files it references, under the
    names the graph records (so the copy loads wherever ``dest`` is and whatever it is called)."""
    shutil.copyfile(src, dest)
    if src.suffix.lower() == ".onnx":
        for data in external_data_files(src):
            target = dest.parent / data.relative_to(src.parent)
            if target.resolve() != data.resolve():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data, target)


def _torchscript(m: "Measurer", out: "Outcome", path: Path) -> Path:
    import torch

    variant = m.builds[out.candidate.build_name].variant
    session, why = m.prepare(out.candidate, variant)
    if session is None:
        raise ExportError(f"cannot save {out.name} for pytorch: {why}")
    try:
        tensors = tuple(session.convert(m.feeds))
        module = session.module
        if isinstance(module, torch.jit.ScriptModule):
            traced = module
        else:
            auto = {"autocast-bf16": torch.bfloat16, "autocast-fp16": torch.float16}.get(variant.torch_precision)
            ctx = torch.autocast(device_type=m.device, dtype=auto) if auto is not None else contextlib.nullcontext()
            with torch.no_grad(), ctx:
                traced = torch.jit.trace(module, tensors, check_trace=False)
        torch.jit.save(traced, str(path))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ExportError(f"cannot save {out.name} as TorchScript: {str(exc).splitlines()[0][:300]}") from None
    finally:
        session.close()
    return path


def save_artifact(m: "Measurer", out: "Outcome", folder: Path) -> dict[str, Any]:
    """Write the chosen candidate's model file into ``folder``; returns ``{path, format, backend,
    runtime, how_to_run}``. Raises ExportError when the variant cannot be written."""
    from ..models.export import ensure_onnx

    folder.mkdir(parents=True, exist_ok=True)
    cand = out.candidate
    stem = _safe(f"{m.model.name}-{cand.name}")
    if cand.backend == "pytorch":
        path = _torchscript(m, out, folder / f"{stem}.pt")
        fmt = "torchscript"
        how = "torch.jit.load(path); inputs in the traced dtype"
    else:
        variant = m.builds[cand.build_name].variant
        src = Path(ensure_onnx(variant, m.workdir))
        path = folder / f"{stem}.onnx"
        copy_model_file(src, path)
        fmt = "onnx"
        how = ("onnxruntime.InferenceSession(path) with the runtime settings below" if cand.backend in ORT_BACKENDS
               else f"build the {cand.backend} engine from this ONNX file")
    settings = {"backend": cand.backend, "device": m.device, "batch_size": m.batch_size, **cand.settings}
    record = {"path": str(path), "format": fmt, "backend": cand.backend, "runtime": settings, "how_to_run": how,
              "size_bytes": path.stat().st_size}
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(record, indent=2))
    return record


__all__ = ["save_artifact", "copy_model_file"]

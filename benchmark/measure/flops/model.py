"""Counting a :class:`~benchmark.models.base.LoadedModel` or :class:`~benchmark.models.base.Variant`:
its torch module when it has one, else its ONNX file, plus the size of the model."""
from __future__ import annotations

import io
from pathlib import Path

from ...errors import ConfigError
from ..memory import first_file_bytes
from .onnx_counter import count_onnx
from .report import FlopReport
from .torch_counter import count_torch


def _state_dict_bytes(module) -> int:
    import torch

    buf = io.BytesIO()
    if isinstance(module, torch.jit.ScriptModule):
        torch.jit.save(module, buf)
    else:
        torch.save(module.state_dict(), buf)
    return buf.tell()


def count_model(model_or_variant, batch_size: int = 1, values: dict | None = None) -> FlopReport:
    """Count a ``LoadedModel`` or ``Variant`` at ``batch_size``.

    ``values``: input arrays (e.g. the data's first feed) an ONNX count feeds to its probe run where
    their shapes fit (:func:`~.onnx_counter.count_onnx`), so data-dependent branches follow the data.

    The torch module is counted when there is one (inputs from the model's input specs), else the
    ONNX file. ``size_bytes``: a Variant's ONNX file (+ external data) if it has one, else the
    serialized state_dict of its module; a LoadedModel's own file (``path``, else ``onnx_path``),
    else the serialized state_dict.
    """
    from ...models.base import LoadedModel, Variant

    if isinstance(model_or_variant, Variant):
        model = model_or_variant.model
        module = model_or_variant.torch_module
        onnx_path = model_or_variant.onnx_path
        files = [onnx_path] if onnx_path else []
        label = f"variant {model_or_variant.name!r} of {model.name!r}"
    elif isinstance(model_or_variant, LoadedModel):
        model = model_or_variant
        module = model.torch_module
        onnx_path = model.onnx_path
        files = [p for p in (model.path, model.onnx_path) if p]
        label = f"model {model.name!r}"
    else:
        raise ConfigError(f"count_model needs a LoadedModel or Variant; got {type(model_or_variant).__name__}")
    if int(batch_size) < 1:
        raise ConfigError(f"batch size must be >= 1; got {batch_size}")

    if module is not None:
        feeds = model.example_inputs(batch_size)
        report = count_torch(module, tuple(feeds[s.name] for s in model.inputs), batch_size=batch_size)
    elif onnx_path is not None:
        shapes = {s.name: s.concrete(batch_size) for s in model.inputs}
        report = count_onnx(Path(onnx_path), shapes, values)
        report.batch_size = int(batch_size)
    else:
        raise ConfigError(f"{label} has neither a torch module nor an ONNX file to count")

    size = first_file_bytes(files)
    if size is None and module is not None:
        size = _state_dict_bytes(module)
    report.size_bytes = size
    return report

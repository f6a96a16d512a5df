"""An editable PyTorch module for uploaded models, so PyTorch-side compressions apply to them.

Structured / unstructured pruning, low-rank and distillation edit ``nn.Conv``/``nn.Linear`` layers;
the ``pytorch`` backend runs a module. Uploaded files do not always hold one:

- **ONNX**: the graph is converted by :mod:`benchmark.models.onnx_to_torch` and checked against
  ONNX Runtime on the same inputs. The converted module becomes the model's ``torch_module`` (the
  ``pytorch`` backend runs it) and its ``converted_module``; ONNX Runtime keeps running the
  uploaded file unchanged.
- **TorchScript** and **torch.export (``.pt2``)**: their modules run as uploaded, but a
  ``ScriptModule`` cannot be edited and an exported program's module holds functional ops, not
  layers, so pruners find nothing to prune. Each is exported to ONNX (the TorchScript exporter
  for a ``ScriptModule``, :func:`benchmark.models.export.export_onnx`), that file is converted as
  above, and the converted module is compared with the uploaded module on the same inputs too.
  It becomes ``converted_module`` only; ``torch_module`` stays the uploaded one.

A model that cannot be converted keeps ``conversion_error``: one line naming the op or step
(``no converter for NonMaxSuppression (node /nms)``), which every compression and backend that
needed the module quotes as its reason.

Caching: converted weights are cached by :func:`~benchmark.models.onnx_to_torch.convert_cached`
(a state_dict with the recipe, loaded with ``weights_only=True``) under ``<data folder>/conversions``;
TorchScript / ``.pt2`` exports are kept there by the SHA-256 of the file and its input shapes;
and a small JSON status per model (converted or not, why, the verification numbers) lets the
"what applies" check (:mod:`benchmark.applicability`) answer without converting again.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from ..config import InputSpec
from ..errors import ConfigError, ConversionError, DataError, ExportError, one_line
from .base import LoadedModel, feeds_to_tensors

#: Formats that get a converted module, and how the conversion is named in reasons.
ROUTES = {
    "onnx": "ONNX->PyTorch conversion",
    "torchscript": "TorchScript->ONNX->PyTorch conversion",
    "exported": ".pt2->ONNX->PyTorch conversion",
}
STATUS_VERSION = 1


def conversions_dir() -> Path:
    """``<data folder>/conversions``: converted weights, exports and status files."""
    from ..paths import data_dir

    path = data_dir() / "conversions"
    path.mkdir(parents=True, exist_ok=True)
    return path


def can_convert(model: LoadedModel) -> bool:
    """True for formats whose module is not editable as loaded (ONNX, TorchScript, ``.pt2``)."""
    return model.format in ROUTES and (model.onnx_path is not None or model.torch_module is not None)


def _model_key(model: LoadedModel) -> str:
    """Cache key of a model's status and export: its file's SHA-256 (an ONNX file with its external
    data), the input specs (the check and an export depend on the shapes), the converter's version
    and a digest of its code (a stored failure is not trusted across code changes)."""
    from .onnx_to_torch import CONVERTER_VERSION, file_sha256

    h = hashlib.sha256()
    if model.format == "onnx":
        h.update(file_sha256(model.onnx_path).encode())
    else:
        with open(model.path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    h.update(repr([(s.name, tuple(s.shape), s.dtype) for s in model.inputs]).encode())
    h.update(f"converter {CONVERTER_VERSION}, code {_code_digest()}".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    """SHA-256 of the converter's own source files: a stored outcome is not trusted across code changes."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("onnx_to_torch.py", "onnx_ops.py", "conversion.py", "export.py"):
        with contextlib.suppress(OSError):
            h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _status_path(cache_dir: Path, key: str, fmt: str) -> Path:
    return cache_dir / f"{key}.{fmt}.status.json"


def cached_status(model: LoadedModel, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The stored outcome of converting ``model`` before: ``{"ok", "error", "conversion"}``, or None
    when it was never tried (or the file cannot be read)."""
    if not can_convert(model):
        return None
    try:
        path = _status_path(Path(cache_dir or conversions_dir()), _model_key(model), model.format)
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == STATUS_VERSION else None


def model_status(model: LoadedModel) -> dict[str, Any]:
    """``{"ok", "error", "conversion"}``: the outcome :func:`attach_conversion` left on ``model``."""
    return {"ok": model.conversion is not None, "error": model.conversion_error, "conversion": model.conversion}


def _write_status(cache_dir: Path, key: str, model: LoadedModel) -> None:
    data = {"version": STATUS_VERSION, **model_status(model)}
    path = _status_path(cache_dir, key, model.format)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(OSError):  # a status file only saves time; the result stands without it
        tmp.write_text(json.dumps(data, default=str))
        os.replace(tmp, path)


def probe_feeds(model: LoadedModel) -> dict[str, Any]:
    """Random inputs to check a conversion on: of the given shapes when every dim is given, else the
    model's example inputs at its fixed batch (1 when the batch is open); an open dim other than a
    batch axis is a :class:`ConfigError` saying which ``--input`` shape to give."""
    from ..data.base import fixed_batch
    from ..data.synthetic import random_arrays

    if all(isinstance(d, int) for spec in model.inputs for d in spec.shape):  # every shape given: as given
        return random_arrays(model.inputs, {s.name: tuple(s.shape) for s in model.inputs}, seed=0,
                             what=f"inputs to check the conversion of {model.name}")
    return model.example_inputs(fixed_batch(model.inputs) or 1)


def _export_source(model: LoadedModel, cache_dir: Path, key: str) -> Path:
    """The uploaded TorchScript / ``.pt2`` module exported to ONNX (cached by ``key``), with an open
    batch axis unless a ``.pt2`` program fixes its batch (a TorchScript archive records no shapes:
    dim 0 of an ``--input`` shape is an example batch)."""
    from ..data.base import fixed_batch
    from .export import export_onnx

    path = cache_dir / f"{key}.{model.format}.onnx"
    if path.exists():
        return path
    inputs = list(model.inputs)
    if model.format == "torchscript":  # shapes given with --input are examples: the batch stays open
        inputs = [InputSpec(s.name, tuple("batch" if i == s.batch_axis else d for i, d in enumerate(s.shape)),
                            s.dtype, s.batch_axis) for s in inputs]
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.partial.onnx")
    try:
        fixed = model.format == "exported" and fixed_batch(model.inputs) is not None
        export_onnx(model.torch_module, inputs, tmp, dynamic_batch=not fixed)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _against_source(model: LoadedModel, module, feeds: dict[str, Any]) -> dict[str, Any]:
    """The converted module's outputs against the uploaded module's on ``feeds`` (worst output)."""
    import torch

    from .onnx_to_torch import compare_output

    args = feeds_to_tensors(feeds, model.inputs)
    with torch.no_grad():
        want = model.torch_module(*args)
        got = module(*args)
    want = list(want) if isinstance(want, (tuple, list)) else [want]
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    if len(want) != len(got):
        raise ConversionError(f"the converted module returns {len(got)} outputs, the uploaded module {len(want)}")
    rows = [compare_output(f"output{i}", g.detach().numpy(), w.detach().numpy(), "the uploaded module")
            for i, (g, w) in enumerate(zip(got, want))]
    bad = [r["error"] for r in rows if "error" in r]
    if bad:
        raise ConversionError(f"the converted module differs from the uploaded one: {bad[0]}")
    return {"max_abs_err": max(r["max_abs_err"] for r in rows), "cosine": min(r["cosine"] for r in rows)}


def _convert(model: LoadedModel, feeds: dict[str, Any], cache_dir: Path, key: str) -> dict[str, Any]:
    """Convert and verify; returns the record and sets ``model.converted_module``."""
    from .onnx_to_torch import convert_cached

    if model.format == "onnx":
        conv = convert_cached(model.onnx_path, feeds, cache_dir)
        source_check = None
    else:
        conv = convert_cached(_export_source(model, cache_dir, key), feeds, cache_dir)
        source_check = _against_source(model, conv.module, feeds)
    ver = conv.verification
    if source_check is not None:
        kind = "TorchScript" if model.format == "torchscript" else ".pt2"
        summary = (f"outputs match the uploaded {kind} module within {source_check['max_abs_err']:.1e} "
                   f"(cosine {source_check['cosine']:.6f})")
    else:
        summary = ver.summary() if ver is not None else "converted (not verified)"
    record = {"route": model.format, "via": ROUTES[model.format], "summary": summary, "source_check": source_check,
              **conv.record()}
    model.converted_module = conv.module
    return record


def attach_conversion(model: LoadedModel, feeds: dict[str, Any] | None = None,
                      cache_dir: str | Path | None = None) -> LoadedModel:
    """Give ``model`` a verified converted module where its format needs one (see the module
    docstring); a model that cannot be converted gets ``conversion_error`` instead. ``feeds``: the
    inputs the conversion is checked on (the user's data where given), else :func:`probe_feeds`.
    Returns ``model`` (changed in place)."""
    if not can_convert(model) or model.converted_module is not None or model.conversion_error:
        return model
    cache_dir = Path(cache_dir or conversions_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _model_key(model)
    try:
        feeds = feeds if feeds is not None else probe_feeds(model)
    except ConfigError as exc:  # open dims: nothing to check the conversion on yet
        model.conversion_error = f"the {ROUTES[model.format]} was not checked: {one_line(exc, 400)}"
        _write_status(cache_dir, key, model)
        return model
    try:
        record = _convert(model, feeds, cache_dir, key)
    except (ConversionError, ExportError, ConfigError, DataError) as exc:
        model.conversion_error = f"the {ROUTES[model.format]} failed: {one_line(exc, 400)}"
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError, AssertionError) as exc:
        # the uploaded module raised while being compared or exported: its own code, named as such
        model.conversion_error = f"the {ROUTES[model.format]} failed: {one_line(exc, 300, typed=True)}"
    else:
        model.conversion = record
        if model.format == "onnx":
            model.torch_module = model.converted_module
    _write_status(cache_dir, key, model)
    return model


__all__ = ["ROUTES", "attach_conversion", "cached_status", "can_convert", "conversions_dir", "model_status",
           "probe_feeds"]

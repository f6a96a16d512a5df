"""What every precision step shares: quiet library logging, output file names, the variant's ONNX
source, test runs (ONNX Runtime on CPU, or the torch module) with finite outputs, calibration data
and the assembly of the output variant with its record."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import re
import warnings
from pathlib import Path
from typing import Any

from ...config import CompressionConfig
from ...data.base import fixed_batch
from ...errors import CompressionError, ConfigError, DataError, ExportError, one_line
from ...models.base import CompressionRecord, Variant
from ...onnx_graph import cpu_session, ort_errors
from .. import onnx_prep
from ..base import CompressContext

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_torch_ao():
    """Silence torch.ao.quantization's deprecation and observer warnings (it still works)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*must run observer before calling calculate_qparams", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions .* are deprecated", category=UserWarning)
        yield


@contextlib.contextmanager
def quiet_ort_logging():
    """ORT's quantizer logs advice through the root logger and prints calibration progress to
    stdout; keep both out of the user's console (and out of a job's event stream)."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, logging.ERROR))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(previous)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "model"


def out_path(ctx: CompressContext, variant: Variant, cfg: CompressionConfig, method: str, source: Path | None) -> Path:
    """A file name unique to (model, input variant, config, method, source file)."""
    digest = hashlib.sha256(f"{cfg!r}|{method}|{source}".encode()).hexdigest()[:10]
    name = f"{_slug(variant.model.name)}-{_slug(variant.name)}-{method}-{digest}.onnx"
    out = Path(ctx.workdir) / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def source_onnx(variant: Variant, ctx: CompressContext, warnings_: list[str], details: dict) -> Path | None:
    """The variant's ONNX file (exported from its module when missing); None when there is none,
    with the reason in ``warnings_`` and ``details["onnx"]``."""
    if variant.onnx_path is not None:
        return Path(variant.onnx_path)
    why = "the variant has no ONNX file and no PyTorch module to export"
    if variant.torch_module is not None:
        from ...models.export import ensure_onnx

        probe = dataclasses.replace(variant)  # ensure_onnx records the path on the variant it gets
        try:
            return Path(ensure_onnx(probe, ctx.workdir))
        except ExportError as exc:
            why = f"ONNX export failed ({one_line(exc)})"
    warnings_.append(f"ONNX side not built: {why}")
    details["onnx"] = {"skipped": why}
    return None


def torch_ok(variant: Variant) -> tuple[bool, str | None]:
    if variant.torch_module is None:
        error = getattr(variant.model, "conversion_error", None)
        return False, f"the variant has no PyTorch module ({error})" if error else "the variant has no PyTorch module"
    if variant.torch_precision != "fp32":
        return False, f"its PyTorch module already runs in {variant.torch_precision}"
    return True, None


def is_script(module) -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)


def feeds_to_torch(feeds: dict, variant: Variant) -> tuple:
    from ...models.base import feeds_to_tensors

    return feeds_to_tensors(feeds, variant.model.inputs)


def _torch_outputs(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _torch_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _torch_outputs(o)]
    return []


def torch_finite(module, args) -> tuple[bool, str | None]:
    """Run ``module(*args)`` once without grad; (True, None) when every float output is finite."""
    import torch

    try:
        with torch.no_grad():
            outs = _torch_outputs(module(*args))
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AssertionError) as exc:
        return False, f"test inference failed: {one_line(exc)}"
    for t in outs:
        if t.is_floating_point() and not bool(torch.isfinite(t.float()).all()):
            return False, "test inference gave NaN/Inf outputs"
    return True, None


def batch_for(variant: Variant, wanted: int) -> int:
    """The batch size to feed: a fixed leading dim of any input wins, else ``wanted``."""
    fixed = fixed_batch(variant.model.inputs)
    return fixed if fixed is not None else max(1, int(wanted))


def calibration_batches(data, variant: Variant, batch: int = 32) -> list[dict]:
    """``data`` cut into feed dicts of ``batch`` samples (the model's fixed batch size if it has one;
    then an incomplete last batch is dropped). ConfigError when not even one batch fits."""
    fixed = fixed_batch(variant.model.inputs)
    out = data.feed_batches(batch, fixed)
    if not out:  # only a fixed batch larger than the data leaves no batch
        raise ConfigError(
            f"calibration data {data.name!r} holds {len(data)} samples; the model's fixed batch size is {fixed}: "
            f"give at least {fixed} samples"
        )
    return out


def test_feeds(variant: Variant, ctx: CompressContext) -> tuple[dict | None, str | None]:
    """One batch to test-run a converted model: calibration data when it fits, else random feeds."""
    batch = batch_for(variant, 2)
    if ctx.calib_data is not None:
        try:
            data = fit_calibration(ctx.calib_data, variant)
        except ConfigError as exc:
            log.debug("calibration data unusable for the test run: %s", exc)
        else:
            for feeds, _ in data.batches(batch):
                return feeds, None
    try:
        return variant.model.example_inputs(batch_size=batch), None
    except ConfigError as exc:
        return None, f"not test-run: {one_line(exc)}"


def validate_onnx(path: Path, feeds: dict | None, what: str) -> dict[str, Any]:
    """``onnx.checker`` + one ONNX Runtime CPU inference with finite outputs, else ``CompressionError``.

    Returns ``{"checked": True, "test_run": bool, "output_shapes": [...]}``.
    """
    import numpy as np

    onnx_prep.check_model(path, what)
    try:
        sess = cpu_session(path)
    except ort_errors() as exc:
        raise CompressionError(f"{what} does not load in ONNX Runtime: {one_line(exc)}") from exc
    if feeds is None:
        return {"checked": True, "test_run": False, "output_shapes": []}
    names = {i.name for i in sess.get_inputs()}
    try:
        outs = sess.run(None, {k: v for k, v in feeds.items() if k in names})
    except ort_errors() as exc:
        raise CompressionError(f"{what} fails a test inference in ONNX Runtime: {one_line(exc)}") from exc
    for o in outs:
        arr = np.asarray(o)
        if arr.dtype.kind == "f" and not np.isfinite(arr.astype(np.float32)).all():
            raise CompressionError(f"{what} gives NaN/Inf outputs on a test batch; the conversion is not usable for this model")
    return {"checked": True, "test_run": True, "output_shapes": [list(np.asarray(o).shape) for o in outs]}


def finish(variant: Variant, cfg: CompressionConfig, method: str, *, summary: str, details: dict,
            warnings_: list[str], torch_side: tuple[Any, str] | None, onnx_side: Path | None,
            torch_changed: bool, onnx_changed: bool, calib_data=None) -> Variant:
    """Assemble the output variant; unchanged sides are dropped unless nothing changed at all.
    ``calib_data``: the Dataset a static INT8 step calibrated on (kept on the variant)."""
    changed = bool(torch_changed or onnx_changed)
    if changed:
        torch_module, torch_precision = torch_side if (torch_changed and torch_side) else (None, "fp32")
        onnx_path = onnx_side if onnx_changed else None
    else:
        torch_module, torch_precision = variant.torch_module, variant.torch_precision
        onnx_path = variant.onnx_path
        summary = f"{method}: nothing converted, the model is unchanged ({summary})"
    record = CompressionRecord(method=method, changed=changed, summary=summary, details=details,
                               warnings=list(dict.fromkeys(warnings_)))
    return dataclasses.replace(
        variant, precision=method, torch_module=torch_module, torch_precision=torch_precision,
        onnx_path=onnx_path, records=list(variant.records) + [record],
        calib_data=calib_data if calib_data is not None else variant.calib_data,
    )


def fit_calibration(data, variant: Variant):
    """``data`` checked against the model's inputs (names, static dims, dtypes), else ConfigError."""
    from ...data import fit_to_inputs

    if len(data) == 0:
        raise ConfigError(f"calibration data {data.name!r} is empty (0 samples)")
    try:
        return fit_to_inputs(data, variant.model.inputs, where=f"calibration data {data.name!r} for {variant.model.name!r}")
    except DataError as exc:
        raise ConfigError(str(exc)) from None


def calibration_set(variant: Variant, cfg: CompressionConfig, ctx: CompressContext, method: str):
    if ctx.calib_data is None:
        raise ConfigError(f"{method} needs calibration data: pass --data with a dataset or .npz of model inputs")
    data = fit_calibration(ctx.calib_data, variant)
    return data.subset(int(cfg.calib_samples))

"""What the sweep feeds a model: the batch size a model fixes, a dataset's first batch and the batch
of a per-feed dataset; and the one-line text of a row failed by a bug.
"""
from __future__ import annotations

import contextlib

from ..data.base import fixed_batch as _declared_fixed_batch
from ..errors import memory_error, one_line


def internal_error(exc: BaseException) -> str:
    """The one-line error of a row failed by an exception outside the BenchmarkError tree (a bug;
    an allocation that failed is named as such)."""
    mapped = memory_error(exc)
    return str(mapped) if mapped is not None else f"internal error: {one_line(exc, typed=True)}"


def fixed_batch(model, overridden: set[str]) -> tuple[int, str] | None:
    """(batch, description) when the model only runs one batch size, else None.

    The batch is fixed when an input's dim 0 is a number in the model itself: for ONNX models the
    graph's declared input (whatever ``--input`` overrides say, since ONNX Runtime enforces the
    graph), for PyTorch models the loaded input spec unless the user overrode it (an override such
    as ``x:1x3x32x32`` gives example dims; dim 0 still takes the run's batch size).
    """
    declared = [s for s in model.inputs if s.name not in overridden]
    if model.framework == "onnx" and model.onnx_path is not None:
        import onnx

        from ..models.loaders import onnx_io_specs

        with contextlib.suppress(OSError, ValueError):  # read once by the loader already; else keep the specs
            declared, _ = onnx_io_specs(onnx.load(str(model.onnx_path), load_external_data=False))
    batch = _declared_fixed_batch(declared)
    if batch is None:
        return None
    spec = next(s for s in declared if s.shape and s.shape[0] == batch)
    return batch, f"input {spec.name!r} is {'x'.join(str(d) for d in spec.shape)}"


def per_feed(dataset) -> bool:
    """The dataset holds whole feeds (arrays one rank above the input), run one at a time as given."""
    return dataset is not None and dataset.per_feed


def feed_batch(dataset) -> int:
    """The batch a per-feed dataset's timed feed holds: the leading dim of its first array that has
    one (1 for scalar feeds). Each timed iteration runs one feed as given, so that is the batch the
    throughput is computed with; other batch sizes are skipped."""
    feeds = next(iter(dataset.batches(1)))[0]
    for arr in feeds.values():
        if getattr(arr, "ndim", 0) >= 1:
            return int(arr.shape[0])
    return 1


def first_batch(dataset, batch_size: int) -> dict | None:
    """The first batch of ``dataset`` at ``batch_size`` (None when it holds fewer samples); for
    per-feed data the first feed as given."""
    if per_feed(dataset):
        return next(iter(dataset.batches(1)))[0]
    if len(dataset) < batch_size:
        return None
    import numpy as np

    return {k: np.ascontiguousarray(v[:batch_size]) for k, v in dataset.arrays.items()}

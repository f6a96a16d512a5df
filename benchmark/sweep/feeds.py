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

    The batch is fixed when an input's batch axis (:class:`~benchmark.config.InputSpec`, dim 0
    unless the model or the user says otherwise) is a number in the model itself: for ONNX models
    the graph's declared input (whatever ``--input`` overrides say, since ONNX Runtime enforces the
    graph), for PyTorch models the loaded input spec unless the user overrode it (an override such
    as ``x:1x3x32x32`` gives example dims; the batch axis still takes the run's batch size). A
    model none of whose inputs has a batch axis runs batch 1: each input is fed as given.
    """
    declared = [s for s in model.inputs if s.name not in overridden]
    if model.framework == "onnx" and model.onnx_path is not None:
        import onnx

        from ..models.loaders import onnx_io_specs

        with contextlib.suppress(OSError, ValueError):  # read once by the loader already; else keep the specs
            graph_specs, _ = onnx_io_specs(onnx.load(str(model.onnx_path), load_external_data=False))
            axes = {s.name: s.batch_axis for s in model.inputs}
            declared = [s.with_batch_axis(axes[s.name]) for s in graph_specs if s.name in axes]
    if model.inputs and all(s.batch_axis is None for s in model.inputs):
        return 1, "no input has a batch axis: each is fed as given"
    batch = _declared_fixed_batch(declared)
    if batch is None:
        return None
    spec = next(s for s in declared if s.batch_dim == batch)
    where = "" if spec.batch_axis == 0 else f", batch axis {spec.batch_axis}"
    return batch, f"input {spec.name!r} is {'x'.join(str(d) for d in spec.shape)}{where}"


def per_feed(dataset) -> bool:
    """The dataset holds whole feeds (arrays one rank above the input), run one at a time as given."""
    return dataset is not None and dataset.per_feed


def feed_batch(dataset) -> int:
    """The batch a per-feed dataset's timed feed holds: the size of the batch axis of its first
    array that has one (1 when no input has a batch axis). Each timed iteration runs one feed as
    given, so that is the batch the throughput is computed with; other batch sizes are skipped."""
    return dataset.feed_batch()


def first_batch(dataset, batch_size: int) -> dict | None:
    """The first batch of ``dataset`` at ``batch_size`` (None when it holds fewer samples); for
    per-feed data the first feed as given."""
    return dataset.head(batch_size)

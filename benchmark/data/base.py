"""Datasets: named arrays, one per model input, plus optional labels; and how they are cut into feeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..errors import DataError


@dataclass
class Dataset:
    """Arrays keyed by model input name, all with the same leading sample count N.

    ``feed_axis[name]`` is False when the array's rank equals the input's rank (its leading axis is
    the batch axis: batches are ``arr[i:i+B]``), True when it is one higher (``arr[i]`` is one whole
    feed given as is, for inputs without a batch axis; the batch size is what the feed holds).
    ``labels`` is an int array [N] or None (then accuracy becomes fidelity to the FP32 reference).
    """

    name: str
    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    feed_axis: dict[str, bool] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        if not self.arrays:
            raise DataError(f"dataset {self.name!r} holds no arrays")
        counts = {k: len(v) for k, v in self.arrays.items()}
        if self.labels is not None:
            counts["labels"] = len(self.labels)
        if len(set(counts.values())) != 1:
            raise DataError(f"dataset {self.name!r}: arrays differ in sample count: {counts}")
        if next(iter(counts.values())) == 0:
            raise DataError(f"dataset {self.name!r} is empty (0 samples)")

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def per_feed(self) -> bool:
        """True when some array holds whole feeds (``feed_axis``), not samples along a batch axis."""
        return any(self.feed_axis.get(k, False) for k in self.arrays)

    def subset(self, n: int | None, start: int = 0) -> "Dataset":
        """The first ``n`` samples from ``start`` (all if ``n`` is None or 0)."""
        end = len(self) if not n else min(len(self), start + n)
        return Dataset(
            self.name,
            {k: v[start:end] for k, v in self.arrays.items()},
            None if self.labels is None else self.labels[start:end],
            dict(self.feed_axis),
            self.description,
        )

    def batches(self, batch_size: int, drop_last: bool = False) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Yield ``(feeds, labels)``; feeds arrays are C-contiguous.

        For per-feed arrays (``feed_axis`` True) each step yields ``arr[i]`` and ``batch_size`` is ignored.
        """
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1; got {batch_size}")
        n = len(self)
        step = 1 if self.per_feed else batch_size
        for i in range(0, n, step):
            if drop_last and i + step > n:
                break
            feeds = {
                k: np.ascontiguousarray(v[i] if self.feed_axis.get(k, False) else v[i:i + step])
                for k, v in self.arrays.items()
            }
            labels = None if self.labels is None else self.labels[i:i + step]
            yield feeds, labels

    def feed_batches(self, batch_size: int, fixed_batch: int | None = None, *, names=None,
                     equal: bool = False) -> list[dict[str, np.ndarray]]:
        """The feed dicts a calibrator (or an evaluation loop) runs, in order.

        Batches hold ``fixed_batch`` samples when the model fixes its batch size (see
        :func:`fixed_batch`), else ``min(batch_size, len(self))``. An incomplete last batch is
        dropped when the batch is fixed, or when ``equal`` asks for one shape throughout (TensorRT
        calibrates with one). ``names`` keeps only those arrays (all when None). Empty when not
        one batch fits; per-feed arrays give one feed each, as :meth:`batches` does.
        """
        size = fixed_batch if fixed_batch is not None else max(1, min(int(batch_size), len(self)))
        keep = None if names is None else set(names)
        return [{k: v for k, v in feeds.items() if keep is None or k in keep}
                for feeds, _ in self.batches(size, drop_last=fixed_batch is not None or equal)]


def fixed_batch(specs) -> int | None:
    """The batch size a model's inputs fix: dim 0 of the first input spec whose dim 0 is a number
    (``InputSpec("x", (4, 16))`` -> 4); None when every batch axis is dynamic."""
    for spec in specs:
        if spec.shape and isinstance(spec.shape[0], int) and spec.shape[0] > 0:
            return int(spec.shape[0])
    return None

"""Datasets: named arrays, one per model input, plus optional labels; and how they are cut into feeds."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..errors import DataError


def contiguous(arr) -> np.ndarray:
    """``arr`` as a C-contiguous array; a 0-d array (a scalar input such as a sample rate) stays 0-d,
    where ``np.ascontiguousarray`` would make it 1-d."""
    arr = np.asarray(arr)
    return arr if arr.ndim == 0 else np.ascontiguousarray(arr)


def batch_of(feeds: dict, specs) -> int | None:
    """The batch ``feeds`` hold: the size at the batch axis of the first input spec that has one
    (None when no input has a batch axis)."""
    for spec in specs:
        arr = feeds.get(spec.name)
        if spec.batch_axis is not None and arr is not None and np.ndim(arr) > spec.batch_axis:
            return int(np.shape(arr)[spec.batch_axis])
    return None


def _along(arr: np.ndarray, axis: int, index) -> np.ndarray:
    """``arr`` indexed along ``axis`` by ``index`` (a slice or an index array)."""
    return arr[(slice(None),) * axis + (index,)]


@dataclass
class Dataset:
    """Arrays keyed by model input name, all holding the same number N of samples, plus optional labels.

    Each array is one of three kinds:

    - **samples along a batch axis** (``feed_axis[name]`` False, the default): the array has the
      input's rank and holds the samples along ``batch_axis[name]`` (dim 0 unless set; a state
      ``[2, N, 128]`` has 1); batches are slices along that axis;
    - **whole feeds** (``feed_axis[name]`` True): the array is one rank higher than the input and
      ``arr[i]`` is one feed, given as is; ``batch_axis[name]`` is then the batch axis *within* a
      feed (None when the input has none), which says what batch a feed holds;
    - **a constant** (``feed_axis`` False, ``batch_axis[name]`` None): an input without a batch axis
      (a scalar sample rate) given once, fed as is with every batch; it does not count samples.

    ``labels`` is an int array [N] or None (then accuracy becomes fidelity to the FP32 reference).
    """

    name: str
    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    feed_axis: dict[str, bool] = field(default_factory=dict)
    description: str = ""
    batch_axis: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self):
        if not self.arrays:
            raise DataError(f"dataset {self.name!r} holds no arrays")
        counts = {k: self._count(k) for k in self.arrays if not self.is_constant(k)}
        if self.labels is not None:
            counts["labels"] = len(self.labels)
        if len(set(counts.values())) > 1:
            raise DataError(f"dataset {self.name!r}: arrays differ in sample count: {counts}")
        if counts and next(iter(counts.values())) == 0:
            raise DataError(f"dataset {self.name!r} is empty (0 samples)")

    def axis(self, name: str) -> int | None:
        """The batch axis of array ``name`` (see the class docstring)."""
        return self.batch_axis.get(name, 0)

    def is_constant(self, name: str) -> bool:
        return not self.feed_axis.get(name, False) and self.axis(name) is None

    def _count(self, name: str) -> int:
        arr = self.arrays[name]
        return len(arr) if self.feed_axis.get(name, False) else int(arr.shape[self.axis(name)])

    def __len__(self) -> int:
        for k in self.arrays:
            if not self.is_constant(k):
                return self._count(k)
        return 1  # constants only: one feed

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def per_feed(self) -> bool:
        """True when some array holds whole feeds (``feed_axis``), not samples along a batch axis."""
        return any(self.feed_axis.get(k, False) for k in self.arrays)

    def select(self, index) -> dict[str, np.ndarray]:
        """Every array at sample ``index`` (a slice or an index array; constants whole)."""
        out = {}
        for k, v in self.arrays.items():
            if self.feed_axis.get(k, False):
                out[k] = v[index]
            elif self.axis(k) is None:
                out[k] = v
            else:
                out[k] = _along(v, self.axis(k), index)
        return out

    def _replace(self, arrays: dict[str, np.ndarray], labels, description: str | None = None) -> "Dataset":
        return Dataset(self.name, arrays, labels, dict(self.feed_axis),
                       self.description if description is None else description, dict(self.batch_axis))

    def subset(self, n: int | None, start: int = 0) -> "Dataset":
        """The first ``n`` samples from ``start`` (all if ``n`` is None or 0)."""
        end = len(self) if not n else min(len(self), start + n)
        labels = None if self.labels is None else self.labels[start:end]
        return self._replace(self.select(slice(start, end)), labels)

    def take(self, indices) -> "Dataset":
        """The samples at ``indices`` (an integer array), in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return self._replace(self.select(indices), None if self.labels is None else self.labels[indices])

    def batches(self, batch_size: int, drop_last: bool = False) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray | None]]:
        """Yield ``(feeds, labels)``; feeds arrays are C-contiguous.

        For per-feed arrays (``feed_axis`` True) each step yields ``arr[i]`` and ``batch_size`` is
        ignored; constants are fed whole with every batch.
        """
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1; got {batch_size}")
        n = len(self)
        step = 1 if self.per_feed else batch_size
        for i in range(0, n, step):
            if drop_last and i + step > n:
                break
            picked = self.select(slice(i, i + step))
            feeds = {k: contiguous(v[0] if self.feed_axis.get(k, False) else v) for k, v in picked.items()}
            labels = None if self.labels is None else self.labels[i:i + step]
            yield feeds, labels

    def first_feed(self) -> dict[str, np.ndarray]:
        """What the first step of :meth:`batches` feeds at batch 1 (one sample, or the first whole feed)."""
        return next(iter(self.batches(1)))[0]

    def head(self, batch_size: int) -> dict[str, np.ndarray] | None:
        """The first ``batch_size`` samples as feeds (None when the dataset holds fewer); for
        per-feed data the first feed as given."""
        if self.per_feed:
            return self.first_feed()
        if len(self) < batch_size:
            return None
        return next(iter(self.batches(batch_size)))[0]

    def feed_batch(self) -> int:
        """The batch the first feed holds: the size of its batch axis in the first array that has
        one (1 when none has: every input is fed as given)."""
        first = self.first_feed()
        for k, arr in first.items():
            axis = self.axis(k)
            if axis is not None and np.ndim(arr) > axis:
                return int(np.shape(arr)[axis])
        return 1

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
    """The batch size a model's inputs fix: the size at the batch axis of the first input spec whose
    batch dim is a number (``InputSpec("x", (4, 16))`` -> 4; ``[2, batch, 128]`` fixes nothing);
    1 when no input has a batch axis (every input is fed as given); None when the batch is open."""
    specs = list(specs)
    for spec in specs:
        dim = spec.batch_dim
        if isinstance(dim, int) and dim > 0:
            return int(dim)
    if specs and all(spec.batch_axis is None for spec in specs):
        return 1
    return None

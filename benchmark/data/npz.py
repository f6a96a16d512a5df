"""User data as ``.npz`` files, checked against a model's input specs.

Rules for a user ``.npz`` file:

- one array per model input, named after it, all holding the same number of samples N, plus an
  optional ``labels`` array [N] of integers (class ids);
- where an array's rank equals the input's rank, it holds the samples along the input's batch
  axis (dim 0 unless the model or ``--batch-axis`` says otherwise: a state ``[2, N, 128]`` along
  dim 1; batches are slices along it); where it is one higher, ``arr[i]`` is one whole feed, given
  as is; for an input without a batch axis (a scalar sample rate) an array of its own rank is one
  value fed with every batch;
- where an array of the input's rank counts a different N along its batch axis than every other
  array (which agree), the input's only other open dim holding their N is taken as its batch axis;
- static dims of the input other than the batch axis (of arrays holding samples along it) must match;
- the array's dtype must convert to the input's without changing kind (float64 -> float32 is
  accepted, float -> int is not; integer narrowing is accepted only when every value fits);
- files are read with ``allow_pickle=False``: object arrays are refused, since unpickling them
  would run code from the file.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..config import InputSpec
from ..errors import DataError, UnsafeArchiveError
from .base import Dataset
from .synthetic import numpy_dtype, random_arrays

LABELS = "labels"
#: Refuse ``.npz`` files whose arrays expand beyond this many bytes.
MAX_NPZ_BYTES = 4 * 1024**3

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"


def _numpy_dtype(spec: InputSpec) -> np.dtype:
    """The numpy dtype data for ``spec`` is held in (numpy has no bfloat16: float32 stands in)."""
    return numpy_dtype(spec.dtype)


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _expected(spec: InputSpec) -> str:
    return f"{_fmt_shape(spec.shape)} {spec.dtype} (or one more leading axis for per-feed arrays)"


def _cast(name: str, arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    target = _numpy_dtype(spec)
    if arr.dtype == target:
        return arr
    if arr.dtype.kind in "OVSUaMm":
        raise DataError(
            f"{where}: array {name!r} holds {arr.dtype} data; input {name!r} expects {spec.dtype}"
        )
    if not np.can_cast(arr.dtype, target, casting="same_kind"):
        raise DataError(
            f"{where}: array {name!r} is {arr.dtype} but input {name!r} expects {spec.dtype}; "
            f"{arr.dtype} does not convert to {spec.dtype} without losing its kind (save it as {spec.dtype})"
        )
    if arr.dtype.kind in "iub" and target.kind in "iu" and not np.can_cast(arr.dtype, target, casting="safe") and arr.size:
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise DataError(
                f"{where}: array {name!r} holds values {lo}..{hi} that do not fit input {name!r}'s "
                f"{spec.dtype} ({info.min}..{info.max})"
            )
    return arr.astype(target)


def check_finite_array(name: str, arr: np.ndarray, where: str) -> None:
    """Raise a one-line :class:`DataError` naming array ``name`` when it holds NaN or Inf values."""
    if arr.dtype.kind not in "fc" or not arr.size:
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = ~finite
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    first = int(np.argmax(bad.reshape(len(arr), -1).any(axis=1))) if arr.ndim else 0
    raise DataError(
        f"{where}: array {name!r} holds {n_nan:,} NaN and {int(np.count_nonzero(bad)) - n_nan:,} Inf values "
        f"(first in sample {first}); replace or drop those samples"
    )


def check_labels(labels: np.ndarray | None, num_classes: int | None, where: str) -> None:
    """Class ids must be >= 0 and, when ``num_classes`` is known, below it (one-line :class:`DataError`)."""
    if labels is None or not np.size(labels):
        return
    lo, hi = int(np.min(labels)), int(np.max(labels))
    if lo >= 0 and (not num_classes or hi < num_classes):
        return
    bad = lo if lo < 0 else hi
    allowed = f"the model's {num_classes} classes (0..{num_classes - 1})" if num_classes else "class ids (0 or more)"
    raise DataError(f"{where}: {LABELS!r} holds class id {bad} (labels range {lo}..{hi}), outside {allowed}; "
                    "fix the labels or choose the model they belong to")


def check_arrays(
    arrays: dict[str, np.ndarray],
    labels: np.ndarray | None,
    inputs: list[InputSpec] | tuple[InputSpec, ...],
    *,
    name: str,
    where: str | None = None,
) -> Dataset:
    """Check ``arrays`` (+ ``labels``) against ``inputs`` and build a :class:`Dataset`.

    Arrays are cast to the inputs' dtypes; ``feed_axis`` is set per array from its rank. Every
    problem raises a one-line :class:`DataError` naming the input, what it expects and what was given.
    """
    where = where or name
    inputs = list(inputs)
    expected = [s.name for s in inputs]
    missing = [n for n in expected if n not in arrays]
    extra = [n for n in arrays if n not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing array(s) {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"unknown array(s) {', '.join(map(repr, extra))}")
        raise DataError(
            f"{where}: {'; '.join(parts)}; expected one array per model input named "
            f"{', '.join(map(repr, expected))} plus optional {LABELS!r}"
        )
    out: dict[str, np.ndarray] = {}
    feed_axis: dict[str, bool] = {}
    batch_axis: dict[str, int | None] = {}
    for spec in inputs:
        arr = np.asarray(arrays[spec.name])
        per_feed, axis = _array_kind(spec, arr, where)
        out[spec.name] = _cast(spec.name, arr, spec, where)
        check_finite_array(spec.name, out[spec.name], where)
        feed_axis[spec.name] = per_feed
        batch_axis[spec.name] = axis
    _rehome_batch_axes(out, inputs, feed_axis, batch_axis)
    counts = _sample_counts(out, feed_axis, batch_axis)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.ndim == 0:
            raise DataError(
                f"{where}: {LABELS!r} must be an integer array [N] of class ids; got "
                f"{_fmt_shape(labels.shape)} {labels.dtype}"
            )
        if labels.ndim > 1 and not all(feed_axis.values()):
            raise DataError(
                f"{where}: {LABELS!r} must be [N]; got {_fmt_shape(labels.shape)} (only per-feed data "
                f"may carry one label row per feed)"
            )
        counts[LABELS] = len(labels)
        labels = labels.astype(np.int64)
        check_labels(labels, None, where)
    if len(set(counts.values())) > 1:
        detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
        raise DataError(f"{where}: arrays must share the sample count N (along each input's batch axis, or the "
                        f"leading axis of per-feed arrays); got {detail}; where an input's batch axis is not the one "
                        "counted, give it with --batch-axis NAME:AXIS")
    if counts and next(iter(counts.values()), 0) == 0:
        raise DataError(f"{where}: the arrays hold 0 samples")
    return Dataset(name=name, arrays=out, labels=labels, feed_axis=feed_axis, description=f"user data {where}",
                   batch_axis=batch_axis)


def _array_kind(spec: InputSpec, arr: np.ndarray, where: str) -> tuple[bool, int | None]:
    """(per-feed, batch axis) of the array given for ``spec``; DataError when its rank or a static dim
    does not fit. Per-feed arrays are checked on every static dim of a feed (a feed is fed as given);
    arrays of the input's rank on every static dim but the batch axis; an array of the input's rank
    for an input without a batch axis is a constant, fed as given with every batch."""
    rank = len(spec.shape)
    axis = spec.batch_axis
    if arr.ndim == rank + 1:
        per_feed, feed_shape, skip = True, arr.shape[1:], None
    elif arr.ndim == rank:
        per_feed, feed_shape, skip = False, arr.shape, axis
    else:
        raise DataError(
            f"{where}: array {spec.name!r} has shape {_fmt_shape(arr.shape)} {arr.dtype}; input "
            f"{spec.name!r} expects {_expected(spec)}"
        )
    for d in range(rank):
        want = spec.shape[d]
        if d != skip and isinstance(want, int) and feed_shape[d] != want:
            raise DataError(
                f"{where}: array {spec.name!r} has shape {_fmt_shape(arr.shape)} {arr.dtype}; input "
                f"{spec.name!r} expects {_expected(spec)} (dim {d} must be {want})"
            )
    return per_feed, axis


def _sample_counts(arrays, feed_axis, batch_axis) -> dict[str, int]:
    """Samples each array holds: along its batch axis, or its leading axis for per-feed arrays."""
    return {k: (len(v) if feed_axis[k] else int(v.shape[batch_axis[k]]))
            for k, v in arrays.items() if feed_axis[k] or batch_axis[k] is not None}


def _rehome_batch_axes(arrays: dict[str, np.ndarray], inputs, feed_axis: dict[str, bool],
                       batch_axis: dict[str, int | None]) -> None:
    """Where an array of the input's rank counts a different number of samples along its batch
    axis than every other array (which agree), and exactly one other open dim of the input holds
    their number, that dim is its batch axis (in place). Per-feed arrays and constants stay."""
    for spec in inputs:
        counts = _sample_counts(arrays, feed_axis, batch_axis)
        name = spec.name
        others = {v for k, v in counts.items() if k != name}
        if feed_axis[name] or name not in counts or len(others) != 1 or counts[name] in others:
            continue
        common = next(iter(others))
        fits = [d for d, dim in enumerate(spec.shape)
                if not isinstance(dim, int) and d != batch_axis[name] and arrays[name].shape[d] == common]
        if len(fits) == 1:
            batch_axis[name] = fits[0]


def _read_head(source: str | Path | BinaryIO, label: str) -> bytes:
    if isinstance(source, (str, Path)):
        try:
            with open(source, "rb") as fh:
                return fh.read(8)
        except FileNotFoundError:
            raise DataError(f"{label}: file not found") from None
        except IsADirectoryError:
            raise DataError(f"{label}: is a folder, not a .npz file") from None
    pos = source.tell()
    head = source.read(8)
    source.seek(pos)
    return head


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n:,} bytes"


def _object_array(label: str, key: str) -> DataError:
    return DataError(f"{label}: array {key!r} is an object array; the file holds object arrays, which are refused "
                     "(loading them would run code from the file); save plain numeric arrays")


def check_npz_headers(path: str | Path | BinaryIO, label: str | None = None) -> None:
    """Read every member's ``.npy`` header (never its data) and refuse (:class:`DataError`) object
    arrays and a member whose declared shape needs more bytes than the member holds, then check the
    arrays' total against free memory (numpy allocates the declared shape before it reads a byte).
    Cheap enough to run on an upload before anything else reads it."""
    label = label or (Path(path).name if isinstance(path, (str, Path)) else "uploaded file")
    from numpy.lib import format as npy_format

    from ..resources import check_allocation

    total = 0
    try:
        with zipfile.ZipFile(path if not isinstance(path, Path) else str(path)) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[:-4]
                with archive.open(info) as member:
                    if member.read(6) != _NPY_MAGIC:
                        continue  # numpy reports it when it reads the member
                    member.seek(0)
                    version = npy_format.read_magic(member)
                    read_header = npy_format.read_array_header_1_0 if version == (1, 0) else \
                        npy_format.read_array_header_2_0  # 2.0 and 3.0 share the 4-byte length field
                    shape, _fortran, dtype = read_header(member)
                    held = info.file_size - member.tell()
                if dtype.hasobject:
                    raise _object_array(label, key)
                needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if needed > held:
                    raise DataError(
                        f"{label}: array {key!r} declares shape {_fmt_shape(shape)} {dtype} ({_gib(needed)}) but "
                        f"the file holds {held:,} bytes of it; the file is corrupt or crafted"
                    )
                total += needed
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{label}: is a damaged .npz archive ({exc})") from None
    except ValueError as exc:
        raise DataError(f"{label}: an array header cannot be read ({str(exc).splitlines()[0][:200]})") from None
    check_allocation(total, f"loading the arrays of {label}")


def load_npz(
    path: str | Path | BinaryIO,
    inputs: list[InputSpec] | tuple[InputSpec, ...],
    *,
    name: str | None = None,
    max_bytes: int = MAX_NPZ_BYTES,
) -> Dataset:
    """Load a user ``.npz`` (a path or a binary file object) and check it against ``inputs``.

    See the module docstring for the rules. Raises :class:`DataError` (one line) for an empty or
    non-npz file, object arrays, missing/unknown arrays, wrong shapes or dtypes, and
    :class:`UnsafeArchiveError` when the arrays would expand beyond ``max_bytes``.
    """
    label = str(path) if isinstance(path, (str, Path)) else (getattr(path, "name", None) or "uploaded file")
    label = Path(label).name if label else "uploaded file"
    ds_name = name or Path(label).stem or "data"
    head = _read_head(path, label)
    if not head:
        raise DataError(f"{label}: the file is empty; expected a .npz archive saved with numpy.savez")
    if head.startswith(_NPY_MAGIC):
        kwargs = ", ".join(f"{s.name}=..." for s in inputs)
        raise DataError(
            f"{label}: is a single .npy array without a name; save a .npz with numpy.savez(path, {kwargs}) "
            "so each array is named after its model input"
        )
    if not head.startswith(_ZIP_MAGIC):
        raise DataError(f"{label}: is not a .npz archive (no zip header); save one with numpy.savez")
    try:
        archive = zipfile.ZipFile(path if not isinstance(path, Path) else str(path))
        with archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{label}: is a damaged .npz archive ({exc})") from None
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise UnsafeArchiveError(
            f"{label}: the arrays expand to {total} bytes, over the {max_bytes}-byte bound"
        )
    if not isinstance(path, (str, Path)):
        path.seek(0)
    check_npz_headers(path, label)
    if not isinstance(path, (str, Path)):
        path.seek(0)
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            for key in keys:
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise _object_array(label, key) from None
                    raise DataError(f"{label}: array {key!r} cannot be read ({exc})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(f"{label}: is a damaged .npz archive ({exc})") from None
    except ValueError as exc:
        raise DataError(f"{label}: cannot be read as .npz ({exc})") from None
    if not arrays:
        raise DataError(
            f"{label}: the archive holds no arrays; expected {', '.join(repr(s.name) for s in inputs)} "
            f"plus optional {LABELS!r}"
        )
    input_names = {s.name for s in inputs}
    labels = arrays.pop(LABELS) if LABELS in arrays and LABELS not in input_names else None
    return check_arrays(arrays, labels, inputs, name=ds_name, where=label)


def random_dataset(
    inputs: list[InputSpec] | tuple[InputSpec, ...],
    n: int = 64,
    *,
    seed: int = 0,
    name: str = "random",
) -> Dataset:
    """``n`` random samples matching ``inputs`` (along each input's batch axis), without labels.

    Float inputs are standard normal, integer inputs are 0 or 1 (ones for ``*mask*`` names), bool
    inputs are True - the same conventions as :meth:`LoadedModel.example_inputs`. An input without
    a batch axis gets one array fed with every batch. Dynamic dims other than the batch axis raise
    :class:`ConfigError` (give them with an input override).
    """
    if n < 1:
        raise DataError(f"random dataset needs n >= 1; got {n}")
    shapes = {s.name: s.concrete(n) for s in inputs}
    arrays = random_arrays(inputs, shapes, seed=seed, what=f"{n} random samples of {', '.join(shapes)}")
    return Dataset(name=name, arrays=arrays, labels=None, feed_axis={s.name: False for s in inputs},
                   description=f"{n} random samples (seed {seed})", batch_axis={s.name: s.batch_axis for s in inputs})


__all__ = ["load_npz", "check_npz_headers", "check_arrays", "check_finite_array", "check_labels", "random_dataset", "MAX_NPZ_BYTES",
           "LABELS"]

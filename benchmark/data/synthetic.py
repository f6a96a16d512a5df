"""Random arrays that match input specs: the example inputs of a model and the ``random`` dataset.

Conventions: float inputs are standard normal, integer inputs 0 or 1 (ones for ``*mask*`` names),
bool inputs True. Each array is generated directly in its input's dtype (numpy has no bfloat16:
float32 stands in), in chunks where numpy cannot write that dtype itself, so no float64 copy is
ever made; the total is checked against the available memory (and ``$SLIMBENCH_MEMORY_LIMIT_MB``)
*before* anything is allocated.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

_CHUNK = 1 << 20  # elements generated at a time for dtypes numpy's generator cannot fill directly (4 MB)


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype data of input dtype ``dtype`` is held in (bfloat16 -> float32)."""
    return np.dtype("float32" if dtype == "bfloat16" else dtype)


def _normal(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if dtype in (np.float32, np.float64):
        return rng.standard_normal(shape, dtype=dtype)
    out = np.empty(shape, dtype=dtype)
    flat = out.reshape(-1)
    for start in range(0, flat.size, _CHUNK):
        n = min(_CHUNK, flat.size - start)
        flat[start:start + n] = rng.standard_normal(n, dtype=np.float32)
    return out


def random_arrays(specs: Iterable, shapes: dict[str, tuple[int, ...]], *, seed: int = 0,
                  what: str = "random inputs") -> dict[str, np.ndarray]:
    """One random array per spec (``shapes[spec.name]`` gives its shape), in spec order.

    Raises :class:`~benchmark.errors.ResourceError` naming ``what`` when the arrays would not fit
    in the available memory.
    """
    from ..resources import check_allocation

    specs = list(specs)
    dtypes = {s.name: numpy_dtype(s.dtype) for s in specs}
    total = sum(int(np.prod(shapes[s.name], dtype=object)) * dtypes[s.name].itemsize for s in specs)
    check_allocation(total, what)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        shape, dtype = tuple(int(d) for d in shapes[spec.name]), dtypes[spec.name]
        if dtype.kind == "f":
            arr = _normal(rng, shape, dtype)
        elif dtype.kind == "b":
            arr = np.ones(shape, dtype=bool)
        elif "mask" in spec.name.lower():
            arr = np.ones(shape, dtype=dtype)
        else:
            arr = rng.integers(0, 2, size=shape, dtype=dtype)
        arrays[spec.name] = arr
    return arrays


__all__ = ["numpy_dtype", "random_arrays"]

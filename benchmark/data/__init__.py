"""Datasets: a registry of built-in datasets and user ``.npz`` files.

``get_dataset("digits", "test")`` returns a built-in split; ``load_npz(path, model.inputs)`` reads
a user file (rules in :mod:`benchmark.data.npz`); ``resolve_dataset(spec, model)`` does either,
from a registry name or a path, and checks the data against the model's inputs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError
from .base import Dataset
from .builtin import CALIB_SAMPLES, DATASETS, SPLITS
from .npz import LABELS, MAX_NPZ_BYTES, check_arrays, load_npz, random_dataset

if TYPE_CHECKING:
    from ..models.base import LoadedModel


def dataset_names() -> list[str]:
    """Names of the built-in datasets."""
    return DATASETS.names()


def get_dataset(name: str, split: str = "test") -> Dataset:
    """A split (``train``, ``calib`` or ``test``) of built-in dataset ``name``.

    Unknown names raise ``ConfigError`` listing the known ones.
    """
    return DATASETS.get(name)(split)


def fit_to_inputs(dataset: Dataset, inputs, *, where: str | None = None) -> Dataset:
    """Check ``dataset`` against ``inputs`` (names, static dims, dtypes) and cast its arrays.

    A single-array dataset fed to a single-input model whose input has another name is renamed
    to that input (e.g. built-in ``digits``' ``image`` to an exported model's ``input``).
    """
    inputs = list(inputs)
    arrays = dict(dataset.arrays)
    if len(arrays) == 1 and len(inputs) == 1 and inputs[0].name not in arrays:
        arrays = {inputs[0].name: next(iter(arrays.values()))}
    checked = check_arrays(arrays, dataset.labels, inputs, name=dataset.name, where=where or f"dataset {dataset.name!r}")
    return dataclasses.replace(checked, description=dataset.description)


def resolve_dataset(spec: str | Path | None, model: "LoadedModel", split: str = "test") -> Dataset | None:
    """The dataset to evaluate ``model`` on, checked against its inputs.

    ``spec`` is a built-in dataset name or a path to a ``.npz`` file; None means the model's own
    dataset (``model.dataset``, set for samples and registered architectures), or None when it has
    none (then only fidelity to the FP32 reference can be measured, on random inputs). ``split``
    applies to built-in datasets only.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if not model.dataset:
            return None
        spec = model.dataset
    if isinstance(spec, str) and spec in DATASETS:
        return fit_to_inputs(get_dataset(spec, split), model.inputs, where=f"dataset {spec!r} for model {model.name!r}")
    path = Path(spec)
    if path.suffix.lower() == ".npz" or path.exists():
        return load_npz(path, model.inputs)
    raise DataError(
        f"dataset {str(spec)!r} is neither a built-in dataset ({', '.join(dataset_names())}) nor an "
        f"existing .npz file"
    )


__all__ = [
    "Dataset", "DATASETS", "SPLITS", "CALIB_SAMPLES", "LABELS", "MAX_NPZ_BYTES",
    "dataset_names", "get_dataset", "load_npz", "check_arrays", "fit_to_inputs",
    "resolve_dataset", "random_dataset",
]

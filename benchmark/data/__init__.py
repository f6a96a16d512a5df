"""Datasets: a registry of built-in datasets and user ``.npz`` files.

``get_dataset("digits", "test")`` returns a built-in split; ``load_npz(path, model.inputs)`` reads
a user file (rules in :mod:`benchmark.data.npz`); ``resolve_dataset(spec, model)`` does either,
from a registry name or a path, and checks the data against the model's inputs. A user file is
split by :func:`split_npz` (first 20 % calibrate/train, the rest is evaluated).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DataError
from .base import Dataset, fixed_batch
from .builtin import CALIB_SAMPLES, DATASETS, SPLITS
from .npz import LABELS, MAX_NPZ_BYTES, check_arrays, check_labels, load_npz, random_dataset

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


#: Percentage of a user ``.npz`` file's samples (the first ones) used for calibration / training.
NPZ_CALIB_PERCENT = 20
#: Below this many samples a user ``.npz`` file is not split: every split uses all of it.
NPZ_MIN_SPLIT_SAMPLES = 10
#: The warning given when calibration/training and evaluation use the same samples.
SAME_SAMPLES_WARNING = "calibration and evaluation use the same samples"


def split_npz(dataset: Dataset, split: str) -> tuple[Dataset, str | None]:
    """The ``split`` of a user ``.npz`` dataset, and a warning when the splits overlap.

    Deterministic: with N >= :data:`NPZ_MIN_SPLIT_SAMPLES` samples (feeds, for per-feed arrays) the
    first ``N * 20 // 100`` (:data:`NPZ_CALIB_PERCENT`) are the ``calib`` and ``train`` split and
    the rest the ``test`` split, so INT8 calibration and distillation never see the evaluated samples. With
    fewer, every split is the whole file and the warning says that calibration and evaluation use
    the same samples.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    n = len(dataset)
    if n < NPZ_MIN_SPLIT_SAMPLES:
        return dataset, (f"{SAME_SAMPLES_WARNING}: {dataset.name} holds {n} samples (fewer than "
                         f"{NPZ_MIN_SPLIT_SAMPLES}), too few to split")
    n_calib = n * NPZ_CALIB_PERCENT // 100
    part = dataset.subset(n_calib) if split in ("calib", "train") else dataset.subset(n - n_calib, start=n_calib)
    described = dataclasses.replace(part, description=f"{dataset.description} ({split} split: {len(part)} of {n} samples)")
    return described, None


def model_classes(model: "LoadedModel") -> int | None:
    """The number of classes ``model`` scores: its declared ``num_classes``, else the static last dim
    of its single ``[batch, C]`` output; None when unknown."""
    if model.num_classes:
        return int(model.num_classes)
    outs = list(model.outputs or [])
    if len(outs) == 1 and len(outs[0].shape) == 2 and isinstance(outs[0].shape[1], int) and outs[0].shape[1] > 1:
        return int(outs[0].shape[1])
    return None


def resolve_dataset(spec: str | Path | None, model: "LoadedModel", split: str = "test", *,
                    warnings: list[str] | None = None) -> Dataset | None:
    """The dataset to evaluate ``model`` on, checked against its inputs.

    ``spec`` is a built-in dataset name or a path to a ``.npz`` file; None means the model's own
    dataset (``model.dataset``, set for samples and registered architectures), or None when it has
    none (then only fidelity to the FP32 reference can be measured, on random inputs). ``split``
    (``train``, ``calib`` or ``test``) picks a built-in dataset's split, or a part of a ``.npz``
    file (:func:`split_npz`); a warning about the split (too few samples to split) is appended to
    ``warnings`` when given.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        if not model.dataset:
            return None
        spec = model.dataset
    if isinstance(spec, str) and spec in DATASETS:
        where = f"dataset {spec!r} for model {model.name!r}"
        data = fit_to_inputs(get_dataset(spec, split), model.inputs, where=where)
        check_labels(data.labels, model_classes(model), where)
        return data
    path = Path(spec)
    if path.suffix.lower() == ".npz" or path.exists():
        whole = load_npz(path, model.inputs)
        check_labels(whole.labels, model_classes(model), f"{path.name} for model {model.name!r}")
        data, note = split_npz(whole, split)
        if note and warnings is not None:
            warnings.append(note)
        return data
    raise DataError(
        f"dataset {str(spec)!r} is neither a built-in dataset ({', '.join(dataset_names())}) nor an "
        f"existing .npz file"
    )


__all__ = [
    "Dataset", "DATASETS", "SPLITS", "fixed_batch", "CALIB_SAMPLES", "LABELS", "MAX_NPZ_BYTES",
    "dataset_names", "get_dataset", "load_npz", "check_arrays", "check_labels", "fit_to_inputs", "model_classes",
    "resolve_dataset", "random_dataset", "split_npz", "NPZ_CALIB_PERCENT", "NPZ_MIN_SPLIT_SAMPLES",
    "SAME_SAMPLES_WARNING",
]

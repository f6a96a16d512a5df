"""Built-in datasets, generated offline with fixed seeds.

Each registered dataset is a callable ``(split) -> Dataset`` with splits ``train``, ``calib`` and
``test``. ``train`` and ``test`` are disjoint; ``calib`` is the first ``CALIB_SAMPLES`` samples of
``train`` (calibration data for INT8 must not come from the test set). Arrays are generated once
per process (``functools.lru_cache``) and every call returns fresh copies, so a caller may modify
what it gets.

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images), ``image`` float32 [N, 1, 8, 8] =
  intensity / 16; stratified split, 1437 train / 360 test (seed 0).
- ``digits-tokens``: the same images and split as ``digits``, each read as 64 tokens
  ``input_ids`` int64 [N, 64] (intensity 0..16) with ``attention_mask`` int64 [N, 64]; in every
  sample a random 0..16 tokens (seed 0) are dropped: replaced by the pad id 17 with mask 0.
- ``mnist1d``: MNIST-1D generated locally with ``mnist1d.data.make_dataset(get_dataset_args())``
  (5000 signals, the package's own 4000 / 1000 train/test split, seed 42), ``signal`` float32
  [N, 1, 40]. Nothing is downloaded.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from ..registry import Registry, one_of
from .base import Dataset

SPLITS = ("train", "calib", "test")
#: Size of the ``calib`` split (a prefix of ``train``).
CALIB_SAMPLES = 256
#: Pad id of the ``digits-tokens`` dataset (intensities are 0..16).
DIGITS_PAD_ID = 17
DIGITS_MAX_DROPPED = 16

DATASETS: Registry[Callable[[str], Dataset]] = Registry("dataset")


def _split(name: str, split: str, arrays: dict[str, np.ndarray], labels: np.ndarray,
           train_idx: np.ndarray, test_idx: np.ndarray, description: str) -> Dataset:
    one_of(f"split of dataset {name!r}", split, SPLITS)
    idx = {"train": train_idx, "calib": train_idx[:CALIB_SAMPLES], "test": test_idx}[split]
    return Dataset(
        name=f"{name}:{split}",
        arrays={k: np.ascontiguousarray(v[idx]) for k, v in arrays.items()},
        labels=np.ascontiguousarray(labels[idx]),
        feed_axis={k: False for k in arrays},
        description=description,
    )


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images float64 [1797, 8, 8] in 0..16, labels int64, train_idx, test_idx)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    idx = np.arange(len(labels))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, stratify=labels, random_state=0)
    return images, labels, np.asarray(train_idx), np.asarray(test_idx)


@DATASETS.register("digits")
def digits(split: str = "test") -> Dataset:
    """scikit-learn digits as images: ``image`` float32 [N, 1, 8, 8] (intensity / 16), 10 classes."""
    images, labels, train_idx, test_idx = _digits_arrays()
    image = (images / 16.0).astype(np.float32)[:, None, :, :]
    return _split("digits", split, {"image": image}, labels, train_idx, test_idx,
                  "scikit-learn 8x8 digits, image = intensity/16, 10 classes")


@functools.lru_cache(maxsize=1)
def _digits_token_arrays() -> tuple[np.ndarray, np.ndarray]:
    images, _, _, _ = _digits_arrays()
    ids = images.reshape(len(images), -1).round().astype(np.int64)
    mask = np.ones_like(ids)
    rng = np.random.default_rng(0)
    for i in range(len(ids)):
        k = int(rng.integers(0, DIGITS_MAX_DROPPED + 1))
        drop = rng.choice(ids.shape[1], size=k, replace=False)
        mask[i, drop] = 0
    ids = np.where(mask == 1, ids, DIGITS_PAD_ID)
    return ids, mask


@DATASETS.register("digits-tokens")
def digits_tokens(split: str = "test") -> Dataset:
    """Digits pixels as 64 tokens: ``input_ids`` / ``attention_mask`` int64 [N, 64], 10 classes."""
    _, labels, train_idx, test_idx = _digits_arrays()
    ids, mask = _digits_token_arrays()
    return _split("digits-tokens", split, {"input_ids": ids, "attention_mask": mask}, labels,
                  train_idx, test_idx,
                  f"scikit-learn digits as 64 pixel tokens (0..16, pad {DIGITS_PAD_ID}); "
                  f"0..{DIGITS_MAX_DROPPED} random tokens per sample masked out")


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, int]:
    """(signals float32 [5000, 40], labels int64 [5000], number of train samples)."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset seeds the global `random` and `numpy.random` generators; restore them after.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]]).astype(np.int64)
    return x, y, len(data["y"])


@DATASETS.register("mnist1d")
def mnist1d(split: str = "test") -> Dataset:
    """MNIST-1D generated offline: ``signal`` float32 [N, 1, 40], 10 classes."""
    x, y, n_train = _mnist1d_arrays()
    idx = np.arange(len(y))
    return _split("mnist1d", split, {"signal": x[:, None, :]}, y, idx[:n_train], idx[n_train:],
                  "MNIST-1D (make_dataset with the package's default arguments), 10 classes")

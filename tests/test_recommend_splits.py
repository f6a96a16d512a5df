"""The recommendation's data: search and held-out halves of the evaluation split, calibration and
training splits apart from both, random inputs with independent seeds for models without data."""
import numpy as np
import pytest

from benchmark.data import random_dataset
from benchmark.data.base import Dataset
from benchmark.errors import DataError
from benchmark.recommend.splits import halves, make_splits


def test_halves_partition_the_evaluation_split():
    data = Dataset("d", {"x": np.arange(11, dtype=np.float32)[:, None]}, labels=np.arange(11) % 3)
    search, holdout = halves(data, None)
    assert len(search) == 5 and len(holdout) == 6
    both = np.concatenate([search.arrays["x"], holdout.arrays["x"]])
    assert np.array_equal(both, data.arrays["x"])
    assert np.array_equal(np.concatenate([search.labels, holdout.labels]), data.labels)
    small_s, small_h = halves(data, 2)
    assert len(small_s) == 2 and len(small_h) == 2 and small_h.arrays["x"][0, 0] == 5


def test_one_sample_cannot_be_split():
    with pytest.raises(DataError, match="at least 2 evaluation samples"):
        halves(Dataset("d", {"x": np.zeros((1, 2), np.float32)}), None)


def test_sample_model_splits_keep_calibration_and_training_off_the_evaluated_samples():
    from benchmark.models import load_model

    model = load_model("sample:digits-cnn")
    sp = make_splits(model, None, eval_samples=None)
    assert len(sp.search) + len(sp.holdout) == 360  # the digits test split, halved
    assert sp.calib.name == "digits:calib" and sp.train.name == "digits:train"
    assert sp.describe()["holdout"]["samples"] == 180 and not sp.random


def test_models_without_data_get_independent_random_draws():
    from benchmark.config import InputSpec
    from benchmark.models.base import LoadedModel

    model = LoadedModel(name="m", format="onnx", framework="onnx", inputs=[InputSpec("x", ("batch", 4))])
    sp = make_splits(model, None)
    assert sp.random and sp.train is None and "no dataset" in sp.notes[0]
    arrays = [sp.search.arrays["x"], sp.holdout.arrays["x"], sp.calib.arrays["x"]]
    assert not np.array_equal(arrays[0], arrays[1]) and not np.array_equal(arrays[1], arrays[2])
    assert np.array_equal(arrays[0], random_dataset(model.inputs, 64, seed=11).arrays["x"])

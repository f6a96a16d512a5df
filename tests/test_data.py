"""Built-in datasets and the user .npz loader."""
from __future__ import annotations

import io
import random

import numpy as np
import pytest

from benchmark.config import InputSpec
from benchmark.data import (
    CALIB_SAMPLES,
    Dataset,
    dataset_names,
    fit_to_inputs,
    get_dataset,
    load_npz,
    random_dataset,
    resolve_dataset,
    split_npz,
)
from benchmark.data.builtin import DIGITS_PAD_ID
from benchmark.errors import ConfigError, DataError, UnsafeArchiveError
from benchmark.models.base import LoadedModel

IMAGE = InputSpec("image", ("batch", 1, 8, 8), "float32")
TOKENS = [InputSpec("input_ids", ("batch", 64), "int64"), InputSpec("attention_mask", ("batch", 64), "int64")]


def _rows(arr: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in arr.reshape(len(arr), -1)}


def test_registry_names():
    assert {"digits", "mnist1d", "digits-tokens"} <= set(dataset_names())


@pytest.mark.parametrize(
    "name, key, shape, dtype",
    [
        ("digits", "image", (1, 8, 8), np.float32),
        ("mnist1d", "signal", (1, 40), np.float32),
        ("digits-tokens", "input_ids", (64,), np.int64),
    ],
)
def test_builtin_splits_shapes_and_disjoint(name, key, shape, dtype):
    train, calib, test = (get_dataset(name, s) for s in ("train", "calib", "test"))
    for ds in (train, calib, test):
        arr = ds.arrays[key]
        assert arr.shape[1:] == shape and arr.dtype == dtype
        assert ds.labels is not None and ds.labels.dtype == np.int64 and len(ds.labels) == len(ds)
        assert set(np.unique(ds.labels)) <= set(range(10))
        assert ds.feed_axis == {k: False for k in ds.arrays}
    assert len(calib) == CALIB_SAMPLES
    assert np.array_equal(calib.arrays[key], train.arrays[key][:CALIB_SAMPLES])
    assert not _rows(train.arrays[key]) & _rows(test.arrays[key])
    assert len(train) > len(test) > 100


def test_digits_split_sizes_and_values():
    train, test = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert 0.0 <= train.arrays["image"].min() and train.arrays["image"].max() <= 1.0
    assert len(np.unique(test.labels)) == 10


def test_digits_tokens_mask_matches_pads():
    ds = get_dataset("digits-tokens", "test")
    ids, mask = ds.arrays["input_ids"], ds.arrays["attention_mask"]
    assert set(np.unique(mask)) == {0, 1}
    assert np.array_equal(ids == DIGITS_PAD_ID, mask == 0)
    assert ids[mask == 1].max() <= 16 and ids.min() >= 0
    # Same images as "digits": unmasked tokens equal the pixel intensities.
    img = np.rint(get_dataset("digits", "test").arrays["image"].reshape(len(ds), 64) * 16)
    assert np.array_equal(ids[mask == 1], img[mask == 1].astype(np.int64))
    assert (mask == 0).any(axis=1).mean() > 0.5


def test_mnist1d_offline_and_leaves_global_rng_alone():
    np.random.seed(123)
    random.seed(123)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(123)
    random.seed(123)
    ds = get_dataset("mnist1d", "test")
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)
    assert len(ds) == 1000 and len(get_dataset("mnist1d", "train")) == 4000


def test_datasets_return_fresh_copies():
    a = get_dataset("digits", "test")
    a.arrays["image"][:] = 5.0
    b = get_dataset("digits", "test")
    assert b.arrays["image"].max() <= 1.0


def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match="known: .*digits"):
        get_dataset("cifar")
    with pytest.raises(ConfigError, match="train, calib, test"):
        get_dataset("digits", "val")


# ---------------------------------------------------------------------------------------------
# .npz loader


def _save(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_npz_batch_axis(tmp_path):
    x = np.random.default_rng(0).random((10, 1, 8, 8))  # float64 -> float32 is accepted
    path = _save(tmp_path, image=x, labels=np.arange(10) % 10)
    ds = load_npz(path, [IMAGE])
    assert ds.arrays["image"].dtype == np.float32 and ds.arrays["image"].shape == (10, 1, 8, 8)
    assert ds.feed_axis == {"image": False}
    assert ds.labels.tolist() == list(range(10))
    feeds, labels = next(ds.batches(4))
    assert feeds["image"].shape == (4, 1, 8, 8) and labels.tolist() == [0, 1, 2, 3]


def test_npz_per_feed_axis(tmp_path):
    x = np.zeros((3, 2, 1, 8, 8), dtype=np.float32)  # 3 feeds of batch 2
    ds = load_npz(_save(tmp_path, image=x), [IMAGE])
    assert ds.feed_axis == {"image": True} and len(ds) == 3 and ds.labels is None
    feeds = [f["image"].shape for f, _ in ds.batches(8)]
    assert feeds == [(2, 1, 8, 8)] * 3


def test_npz_two_integer_inputs_and_safe_int_narrowing(tmp_path):
    specs = [InputSpec("ids", ("batch", 5), "int32"), InputSpec("mask", ("batch", 5), "int64")]
    ds = load_npz(_save(tmp_path, ids=np.ones((4, 5), np.int64), mask=np.ones((4, 5), np.uint8)), specs)
    assert ds.arrays["ids"].dtype == np.int32 and ds.arrays["mask"].dtype == np.int64
    with pytest.raises(DataError, match="do not fit"):
        load_npz(_save(tmp_path, "big.npz", ids=np.full((4, 5), 2**40), mask=np.ones((4, 5))), specs[:1] + [
            InputSpec("mask", ("batch", 5), "float32")])


def test_npz_object_array_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, image=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="object arrays, which are refused") as exc:
        load_npz(path, [IMAGE])
    assert "\n" not in str(exc.value)


def test_npz_wrong_shape_names_input_and_shapes(tmp_path):
    with pytest.raises(DataError) as exc:
        load_npz(_save(tmp_path, image=np.zeros((5, 1, 7, 8), np.float32)), [IMAGE])
    msg = str(exc.value)
    assert "'image'" in msg and "[5, 1, 7, 8]" in msg and "[batch, 1, 8, 8]" in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"\[5, 64\]"):
        load_npz(_save(tmp_path, "r.npz", image=np.zeros((5, 64), np.float32)), [IMAGE])


def test_npz_wrong_dtype(tmp_path):
    with pytest.raises(DataError, match="float64 but input 'input_ids' expects int64"):
        load_npz(_save(tmp_path, input_ids=np.zeros((2, 64)), attention_mask=np.ones((2, 64), np.int64)), TOKENS)


def test_npz_missing_and_unknown_arrays(tmp_path):
    with pytest.raises(DataError, match="missing array\\(s\\) 'attention_mask'.*'input_ids', 'attention_mask'"):
        load_npz(_save(tmp_path, input_ids=np.zeros((2, 64), np.int64)), TOKENS)
    with pytest.raises(DataError, match="unknown array\\(s\\) 'extra'"):
        load_npz(_save(tmp_path, "b.npz", image=np.zeros((2, 1, 8, 8), np.float32), extra=np.zeros(2)), [IMAGE])


def test_npz_sample_count_mismatch_and_bad_labels(tmp_path):
    with pytest.raises(DataError, match="share the sample count"):
        load_npz(_save(tmp_path, image=np.zeros((3, 1, 8, 8), np.float32), labels=np.zeros(4, np.int64)), [IMAGE])
    with pytest.raises(DataError, match="integer array"):
        load_npz(_save(tmp_path, "f.npz", image=np.zeros((3, 1, 8, 8), np.float32), labels=np.zeros(3)), [IMAGE])


def test_npz_random_bytes_empty_and_npy(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(DataError, match="not a .npz archive"):
        load_npz(junk, [IMAGE])
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_npz(empty, [IMAGE])
    npy = tmp_path / "x.npz"
    with open(npy, "wb") as fh:
        np.save(fh, np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"single \.npy array.*numpy.savez\(path, image=\.\.\.\)"):
        load_npz(npy, [IMAGE])
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "nope.npz", [IMAGE])


def test_npz_truncated_archive(tmp_path):
    good = _save(tmp_path, image=np.zeros((50, 1, 8, 8), np.float32))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="damaged"):
        load_npz(cut, [IMAGE])


def test_npz_size_bound_and_file_object(tmp_path):
    path = _save(tmp_path, image=np.zeros((50, 1, 8, 8), np.float32))
    with pytest.raises(UnsafeArchiveError, match="over the 1000-byte bound"):
        load_npz(path, [IMAGE], max_bytes=1000)
    ds = load_npz(io.BytesIO(path.read_bytes()), [IMAGE], name="upload")
    assert ds.name == "upload" and len(ds) == 50


# ---------------------------------------------------------------------------------------------
# resolve / fit / random


def _model(inputs, dataset=None):
    return LoadedModel(name="m", format="onnx", framework="onnx", inputs=list(inputs), dataset=dataset)


def test_resolve_dataset(tmp_path):
    assert resolve_dataset(None, _model([IMAGE])) is None
    ds = resolve_dataset(None, _model([IMAGE], dataset="digits"))
    assert len(ds) == 360 and ds.arrays["image"].dtype == np.float32
    assert len(resolve_dataset("digits", _model([IMAGE]), split="calib")) == CALIB_SAMPLES
    path = _save(tmp_path, image=np.zeros((7, 1, 8, 8), np.float32))
    assert len(resolve_dataset(str(path), _model([IMAGE]))) == 7
    with pytest.raises(DataError, match="neither a built-in dataset .*digits.* nor an existing .npz"):
        resolve_dataset("imagenet", _model([IMAGE]))
    with pytest.raises(DataError, match="not found"):
        resolve_dataset(str(tmp_path / "missing.npz"), _model([IMAGE]))


def test_npz_splits_calibration_from_evaluation(tmp_path):
    x = np.arange(20, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 8, 8), np.float32)
    path = str(_save(tmp_path, image=x, labels=np.arange(20) % 10))
    model = _model([IMAGE])
    notes: list[str] = []
    test = resolve_dataset(path, model, "test", warnings=notes)
    calib = resolve_dataset(path, model, "calib", warnings=notes)
    train = resolve_dataset(path, model, "train", warnings=notes)
    assert notes == []
    assert calib.arrays["image"][:, 0, 0, 0].tolist() == [0, 1, 2, 3]  # the first 20 %
    assert train.arrays["image"][:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    assert test.arrays["image"][:, 0, 0, 0].tolist() == list(range(4, 20))  # the rest, never calibrated on
    assert test.labels.tolist() == [i % 10 for i in range(4, 20)]
    assert _rows(test.arrays["image"]).isdisjoint(_rows(calib.arrays["image"]))
    again = resolve_dataset(path, model, "test")  # deterministic
    assert np.array_equal(again.arrays["image"], test.arrays["image"])


def test_small_npz_is_not_split_and_says_so(tmp_path):
    path = str(_save(tmp_path, image=np.random.default_rng(0).random((9, 1, 8, 8)).astype(np.float32)))
    notes: list[str] = []
    calib = resolve_dataset(path, _model([IMAGE]), "calib", warnings=notes)
    test = resolve_dataset(path, _model([IMAGE]), "test")
    assert len(calib) == len(test) == 9
    assert len(notes) == 1 and notes[0].startswith("calibration and evaluation use the same samples")
    assert "9 samples" in notes[0]
    with pytest.raises(DataError, match="split must be one of train, calib, test; got 'val'"):
        split_npz(calib, "val")


def test_per_feed_npz_splits_by_feed(tmp_path):
    x = np.arange(10, dtype=np.float32)[:, None, None, None, None] * np.ones((1, 2, 1, 8, 8), np.float32)
    path = str(_save(tmp_path, image=x))
    test = resolve_dataset(path, _model([IMAGE]), "test")
    assert test.feed_axis == {"image": True} and len(test) == 8
    assert test.arrays["image"][:, 0, 0, 0, 0].tolist() == list(range(2, 10))


def test_resolve_builtin_checks_model_inputs():
    renamed = resolve_dataset("digits", _model([InputSpec("input", ("N", 1, 8, 8), "float32")]))
    assert list(renamed.arrays) == ["input"]
    with pytest.raises(DataError, match="input 'x' expects \\[batch, 3, 32, 32\\]"):
        resolve_dataset("digits", _model([InputSpec("x", ("batch", 3, 32, 32))]))
    with pytest.raises(DataError, match="missing array"):
        resolve_dataset("digits-tokens", _model([IMAGE]))
    half = fit_to_inputs(get_dataset("digits", "calib"), [InputSpec("image", (1, 1, 8, 8), "float16")])
    assert half.arrays["image"].dtype == np.float16


def test_random_dataset():
    ds = random_dataset(TOKENS + [IMAGE], n=6, seed=1)
    assert isinstance(ds, Dataset) and len(ds) == 6 and ds.labels is None
    assert ds.arrays["image"].shape == (6, 1, 8, 8) and ds.arrays["image"].dtype == np.float32
    assert (ds.arrays["attention_mask"] == 1).all() and set(np.unique(ds.arrays["input_ids"])) <= {0, 1}
    with pytest.raises(ConfigError, match="dynamic"):
        random_dataset([InputSpec("x", ("batch", "seq"), "int64")], n=2)

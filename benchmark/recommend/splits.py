"""The data a recommendation uses, in four parts that never overlap where the data allows it.

- **search** split: the first half of the evaluation split (a built-in dataset's ``test`` split, or
  the evaluated 80 % of a ``.npz`` file), at most ``eval_samples`` samples: every candidate's
  quality is measured here, and the search decides on it;
- **held-out** split: the second half, at most ``eval_samples``: scored once, after the search, for
  the finalists only; the report gives each finalist's drop on it, and a finalist whose held-out
  drop exceeds the budget is not recommended;
- **calibration** split (``calib``): INT8 activation ranges;
- **training** split (``train``): distillation (it holds out a fifth of it for its own before/after
  numbers; it never sees the search or held-out splits).

Built-in datasets keep ``calib`` inside ``train`` and both apart from ``test``; a ``.npz`` file's
first 20 % calibrates and trains (:func:`benchmark.data.split_npz`). A model without data gets four
independent draws of random inputs (different seeds), no training split (so no distillation) and
top-1 agreement or cosine with FP32 as its metric.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..data.base import Dataset
from ..errors import DataError

if TYPE_CHECKING:
    from ..models.base import LoadedModel

#: Samples per split at most (each candidate is evaluated on the search split).
DEFAULT_EVAL_SAMPLES = 512
#: Random samples per split for a model without data.
RANDOM_SAMPLES = 64
CALIB_SAMPLES = 128


@dataclass
class Splits:
    """The four parts (``calib`` / ``train`` may be None) and notes about them."""

    search: Dataset
    holdout: Dataset
    calib: Dataset | None
    train: Dataset | None
    random: bool = False
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        def part(d: Dataset | None) -> dict | None:
            return None if d is None else {"name": d.name, "samples": len(d)}

        return {"search": part(self.search), "holdout": part(self.holdout), "calibration": part(self.calib),
                "training": part(self.train), "random_inputs": self.random, "notes": list(self.notes)}


def _random(model: "LoadedModel", seed: int, name: str) -> Dataset:
    from ..data import random_dataset

    return random_dataset(model.inputs, RANDOM_SAMPLES, seed=seed, name=name)


def halves(data: Dataset, limit: int | None) -> tuple[Dataset, Dataset]:
    """(first half, second half) of ``data``, each cut to ``limit`` samples (None/0: no limit)."""
    n = len(data)
    if n < 2:
        raise DataError(f"{data.name} holds {n} sample; a recommendation needs at least 2 evaluation samples "
                        "(half to search on, half held out)")
    first = n // 2
    search = data.subset(min(first, limit) if limit else first)
    holdout = data.subset(min(n - first, limit) if limit else n - first, start=first)
    search.name, holdout.name = f"{data.name} (search half)", f"{data.name} (held-out half)"
    return search, holdout


def make_splits(model: "LoadedModel", data: str | None, eval_samples: int | None = DEFAULT_EVAL_SAMPLES,
                calib_samples: int = CALIB_SAMPLES) -> Splits:
    """The four parts for ``model`` and ``data`` (a built-in dataset name or a ``.npz`` path; None:
    the model's own dataset, else random inputs)."""
    from ..data import resolve_dataset

    notes: list[str] = []
    evaluation = resolve_dataset(data, model, "test", warnings=notes)
    if evaluation is None:
        notes.append(f"{model.name} has no dataset: quality is measured against FP32 on {RANDOM_SAMPLES} random "
                     f"inputs per split (different seeds), INT8 is calibrated on another {RANDOM_SAMPLES}, and "
                     "nothing is distilled (no training data; give --data)")
        return Splits(_random(model, 11, "random (search)"), _random(model, 12, "random (held-out)"),
                      _random(model, 13, "random (calibration)"), None, random=True, notes=notes)
    search, holdout = halves(evaluation, eval_samples)
    calib = resolve_dataset(data, model, "calib", warnings=notes)
    train = resolve_dataset(data, model, "train", warnings=notes)
    if calib is not None:
        calib = calib.subset(calib_samples)
    notes[:] = list(dict.fromkeys(notes))
    return Splits(search, holdout, calib, train, notes=notes)


__all__ = ["Splits", "make_splits", "halves", "DEFAULT_EVAL_SAMPLES", "RANDOM_SAMPLES", "CALIB_SAMPLES"]

"""Sample models: trained weights that ship with Slimbench (see ``sample_models/``).

The registry only: the ``sample_models`` package registers the built-in samples when it is
imported (``benchmark/__init__.py`` imports it), as :mod:`benchmark.models.archs` describes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry


@dataclass(frozen=True)
class SampleSpec:
    """A built-in sample: an architecture, its committed weights and its datasets."""

    name: str  # used as ``sample:NAME``
    arch: str  # key in ARCHITECTURES
    weights: Path  # state_dict file (loaded with weights_only=True)
    dataset: str  # evaluation dataset (DATASETS key), split "test"
    description: str = ""
    metrics: dict | None = None  # what the training script measured (test accuracy ...)


SAMPLES: Registry[SampleSpec] = Registry("sample")


def register_sample(spec: SampleSpec) -> SampleSpec:
    return SAMPLES.register(spec.name, spec)


def get_sample(name: str) -> SampleSpec:
    return SAMPLES.get(name)


def sample_names() -> list[str]:
    return SAMPLES.names()

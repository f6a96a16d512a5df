"""Built-in sample models: architectures, trained weights and the script that trained them.

Importing this package registers the architectures (``benchmark.models.archs.ARCHITECTURES``) and
the samples (``benchmark.models.samples.SAMPLES``) without importing torch; the modules are built
on demand. ``benchmark/__init__.py`` imports it, so every process that imports Slimbench has
them; the registries themselves never import this package. Weights (``<name>.pt``, state_dicts) and ``metrics.json`` (what
``python -m sample_models.train`` measured) live beside this file.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmark.config import InputSpec
from benchmark.models.archs import ARCHITECTURES, ArchSpec, register_arch
from benchmark.models.samples import SAMPLES, SampleSpec, register_sample

HERE = Path(__file__).resolve().parent
METRICS_PATH = HERE / "metrics.json"


def _build(factory: str):
    def build():
        from . import architectures

        return getattr(architectures, factory)()

    build.__name__ = factory
    return build


ARCH_SPECS = (
    ArchSpec(
        name="digits-cnn",
        build=_build("build_digits_cnn"),
        inputs=(InputSpec("image", ("batch", 1, 8, 8), "float32"),),
        num_classes=10,
        description="CNN with conv-bn-relu blocks and a residual block (32-64-64-128 channels) for 8x8 digits",
        dataset="digits",
    ),
    ArchSpec(
        name="mnist1d-cnn",
        build=_build("build_mnist1d_cnn"),
        inputs=(InputSpec("signal", ("batch", 1, 40), "float32"),),
        num_classes=10,
        description="1-D CNN with conv-bn-relu blocks and a residual block for MNIST-1D signals (length 40)",
        dataset="mnist1d",
    ),
    ArchSpec(
        name="digits-transformer",
        build=_build("build_digits_transformer"),
        inputs=(
            InputSpec("input_ids", ("batch", 64), "int64"),
            InputSpec("attention_mask", ("batch", 64), "int64"),
        ),
        num_classes=10,
        description="2-layer transformer encoder (d_model 64, 4 heads) over digits pixels as 64 tokens",
        dataset="digits-tokens",
    ),
)


def load_metrics() -> dict:
    """What the training script recorded per sample ({} when metrics.json is absent)."""
    try:
        return json.loads(METRICS_PATH.read_text())
    except FileNotFoundError:
        return {}


def _register() -> None:
    metrics = load_metrics()
    for spec in ARCH_SPECS:
        if spec.name not in ARCHITECTURES:
            register_arch(spec)
        if spec.name not in SAMPLES:
            register_sample(SampleSpec(
                name=spec.name,
                arch=spec.name,
                weights=HERE / f"{spec.name}.pt",
                dataset=spec.dataset,
                description=spec.description,
                metrics=metrics.get(spec.name),
            ))


_register()

__all__ = ["ARCH_SPECS", "HERE", "METRICS_PATH", "load_metrics"]

"""Slimbench engine: load a model, build compressed variants, run them on backends, measure, store.

The public API (the dashboard pages and the CLI use only this)::

    from benchmark import load_model, SweepConfig, CompressionConfig, RunConfig, InputSpec
"""
from .config import CompressionConfig, InputSpec, OutputSpec, RunConfig, SweepConfig
from .errors import (
    BackendUnavailableError, BenchmarkError, CompressionError, ConfigError, DataError, ExportError,
    MeasurementError, ModelLoadError, StoreError, UnsafeArchiveError, UnsafeModelError,
)
from .models import LoadedModel, Variant, describe_io, load_model
from .inspection import inspect_isolated, model_info

# The built-in architectures and samples register themselves when their package is imported (the
# registries never import it), so `sample:NAME` resolves in every process that imports Slimbench.
import sample_models  # noqa: E402,F401  (after the registries above exist)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError", "BenchmarkError", "CompressionConfig", "CompressionError", "ConfigError",
    "DataError", "ExportError", "InputSpec", "LoadedModel", "MeasurementError", "ModelLoadError",
    "OutputSpec", "RunConfig", "StoreError", "SweepConfig", "UnsafeArchiveError", "UnsafeModelError",
    "Variant", "describe_io", "inspect_isolated", "load_model", "model_info",
]

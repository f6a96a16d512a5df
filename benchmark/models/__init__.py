"""Model intake: loading by format, input specs, built-in architectures and samples, ONNX export."""
from .base import FORMATS, CompressionRecord, LoadedModel, Variant
from .loaders import SUPPORTED_EXTS, describe_io, load_model, load_sample

__all__ = ["FORMATS", "CompressionRecord", "LoadedModel", "Variant", "SUPPORTED_EXTS", "describe_io", "load_model", "load_sample"]

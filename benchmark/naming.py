"""Variant names with a runtime part: ``int8-static[minmax]@ort-opt=basic`` is the variant
``int8-static[minmax]`` run with ONNX Runtime's basic graph optimizations (see
:mod:`benchmark.sweep.runtime`). A compression's own name never holds :data:`SEPARATOR`."""
from __future__ import annotations

#: The separator between a compression's name and its runtime tag in a variant's name.
SEPARATOR = "@"
#: Runtime setting -> its tag in variant names, in naming order.
RUNTIME_TAGS = {"ort_graph_opt_level": "ort-opt", "ort_inter_op_threads": "ort-inter",
                "ort_execution_mode": "ort-mode", "torch_interop_threads": "torch-inter"}


def runtime_tag(variant: str | None) -> str:
    """The runtime part of a variant's name (``ort-opt=basic``), ``""`` when it has none."""
    return str(variant or "").partition(SEPARATOR)[2]


def compression_name(variant: str | None) -> str:
    """A variant's name without its runtime part."""
    return str(variant or "").partition(SEPARATOR)[0]


def describe_runtime(runtime: dict | None) -> str:
    """``ort-opt=all, ort-inter=1, ort-mode=sequential`` for a row's ``runtime`` settings."""
    return ", ".join(f"{RUNTIME_TAGS.get(k, k)}={v}" for k, v in (runtime or {}).items())


__all__ = ["RUNTIME_TAGS", "SEPARATOR", "compression_name", "describe_runtime", "runtime_tag"]

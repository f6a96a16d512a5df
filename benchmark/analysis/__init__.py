"""Analyses of a model, as opposed to compressions of it: how much each layer's compression costs
(:func:`layer_sensitivity`) and which layers an INT8 model should keep in FP32 to stay within an
accuracy budget (:func:`accuracy_aware_search`); both also run isolated in a spawned child
(:func:`sensitivity_isolated`, :func:`search_isolated`). Conventions in
:mod:`benchmark.analysis.sensitivity`.
"""
from __future__ import annotations

from .isolated import (
    DEFAULT_JOB_TIMEOUT_S, RANDOM_SAMPLES, expected_data_note, search_isolated, sensitivity_data, sensitivity_isolated,
)
from .prepared import LATENCY_SETTINGS
from .search import SearchResult, accuracy_aware_search
from .sensitivity import COLUMNS, METHODS, layer_sensitivity, node_macs

__all__ = ["layer_sensitivity", "accuracy_aware_search", "SearchResult", "node_macs", "METHODS", "COLUMNS",
           "sensitivity_data", "expected_data_note", "sensitivity_isolated", "search_isolated",
           "DEFAULT_JOB_TIMEOUT_S", "LATENCY_SETTINGS", "RANDOM_SAMPLES"]

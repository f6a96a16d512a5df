"""Moved to :mod:`benchmark.analysis` (sensitivity and the accuracy-aware search are analyses, not
compressions); these names stay importable from here."""
from __future__ import annotations

from ..analysis import (
    COLUMNS, DEFAULT_JOB_TIMEOUT_S, LATENCY_SETTINGS, METHODS, SearchResult, accuracy_aware_search,
    expected_data_note, layer_sensitivity, node_macs, search_isolated, sensitivity_data, sensitivity_isolated,
)

__all__ = ["layer_sensitivity", "accuracy_aware_search", "SearchResult", "node_macs", "METHODS", "COLUMNS",
           "sensitivity_data", "expected_data_note", "sensitivity_isolated", "search_isolated",
           "DEFAULT_JOB_TIMEOUT_S", "LATENCY_SETTINGS"]

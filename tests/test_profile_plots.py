"""Profile figures: time share vs MAC share per layer, achieved GMAC/s per layer against the peaks;
the results table's roofline, runtime and 'why' columns."""
from __future__ import annotations

import pytest

from benchmark import plots
from benchmark.results import RunResult, results_to_frame

PROFILE = {
    "layers": [
        {"name": "conv1", "op_type": "Conv", "kernels": ["QLinearConv"], "precision": "int8", "time_ms": 3.0,
         "time_share": 0.6, "macs": 2_000_000, "mac_share": 0.8, "gmacs_per_s": 0.667, "peak_fraction": 0.01},
        {"name": "dw", "op_type": "Conv", "kernels": ["Conv"], "precision": "fp32", "time_ms": 1.5,
         "time_share": 0.3, "macs": 500_000, "mac_share": 0.2, "gmacs_per_s": 0.333, "peak_fraction": 0.005},
        {"name": "q", "op_type": "QuantizeLinear", "kernels": ["QuantizeLinear"], "precision": "quant",
         "time_ms": 0.5, "time_share": 0.1, "macs": 0, "mac_share": 0.0, "gmacs_per_s": None, "peak_fraction": None},
    ],
    "peaks": {"peak_gmacs_per_s": {"fp32": 60.0, "int8": 75.0}},
}


def test_share_figure_has_one_point_per_layer_and_the_diagonal():
    fig = plots.profile_share_figure(PROFILE)
    diagonal, *points = fig.data
    assert diagonal.mode == "lines" and list(diagonal.x) == list(diagonal.y)
    assert {t.name: (list(t.x), list(t.y)) for t in points} == {
        "int8": ([80.0], [60.0]), "fp32": ([20.0], [30.0]), "quant": ([0.0], [10.0])}
    assert "MAC" in fig.layout.xaxis.title.text and "time" in fig.layout.yaxis.title.text


def test_gmacs_figure_bars_mac_layers_by_time_with_peak_lines():
    fig = plots.profile_gmacs_figure(PROFILE)
    (bars,) = fig.data
    assert list(bars.y) == ["dw (Conv)", "conv1 (Conv)"]  # largest time at the top; the Q layer has no MACs
    assert list(bars.x) == pytest.approx([0.333, 0.667])
    lines = {s.x0 for s in fig.layout.shapes}
    assert lines == {60.0, 75.0}


def test_profile_figures_say_when_there_is_nothing_to_plot():
    assert plots.is_empty_figure(plots.profile_share_figure(None))
    assert plots.is_empty_figure(plots.profile_gmacs_figure({"layers": [PROFILE["layers"][2]]}))


def test_display_table_shows_fraction_of_peak_runtime_and_why():
    rows = [RunResult(model="m", variant="fp32@ort-opt=basic", backend="onnxruntime", batch_size=1, status="ok",
                      latency_ms={"p50": 1.0, "mean": 1.0}, macs=1_000_000, achieved_gmacs_per_s=1.0,
                      peak_fraction=0.25, runtime={"ort_graph_opt_level": "basic"},
                      explanations=[{"topic": "roofline", "text": "The model ran at 1.0 GMAC/s.", "numbers": {}}])]
    table = plots.display_table(results_to_frame(rows))
    assert table.loc[0, "of this CPU's peak (%)"] == pytest.approx(25.0)
    assert table.loc[0, "achieved GMAC/s (MACs x batch / p50)"] == pytest.approx(1.0)
    assert table.loc[0, "runtime settings"] == "ort-opt=basic"
    assert table.loc[0, "why (measured)"] == "The model ran at 1.0 GMAC/s."
    plain = plots.display_table(results_to_frame([RunResult(model="m", variant="fp32", backend="pytorch", batch_size=1,
                                                            status="ok", latency_ms={"p50": 1.0})]))
    assert "why (measured)" not in plain and "of this CPU's peak (%)" not in plain  # columns no row fills

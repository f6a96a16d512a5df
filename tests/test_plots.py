"""Plot builders: Pareto front on hand-made frames, axis titles with units, empty/failed frames."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from benchmark import plots
from benchmark.results import RunResult, results_to_frame


def _row(variant, backend="onnxruntime", batch=1, p50=1.0, acc=0.9, precision="fp32", prune=0.0,
         macs=1_000_000, size=400_000, status="ok", samples=None, fid=None, error=None, sweep_id=1):
    return RunResult(
        model="m", variant=variant, backend=backend, batch_size=batch, precision=precision, prune_ratio=prune,
        status=status, error=error, sweep_id=sweep_id,
        latency_ms=None if status != "ok" else {"mean": p50 * 1.05, "p50": p50, "p95": p50 * 1.2, "cv": 0.05, "iterations": 20},
        latency_samples_ms=samples, throughput_sps=None if status != "ok" else batch / (p50 * 1.05e-3),
        macs=macs, flops=None if macs is None else 2 * macs, size_bytes=size, params=size // 4,
        accuracy=None if acc is None else {"top1": acc, "n": 100}, fidelity=fid,
    )


@pytest.fixture
def frame():
    rows = [
        _row("fp32", p50=2.0, acc=0.95, samples=[2.0, 2.1, 1.9]),
        _row("int8-static[minmax]", precision="int8-static", p50=0.8, acc=0.94, size=100_000, samples=[0.8, 0.9]),
        _row("fp32+prune-s0.5", prune=0.5, p50=1.0, acc=0.90, macs=300_000, size=120_000),
        _row("fp16", precision="fp16", p50=2.5, acc=0.95),  # dominated by fp32 (slower, same accuracy)
        _row("fp32", backend="pytorch", p50=3.0, acc=0.95),
        _row("int8-static[minmax]", backend="pytorch", precision="int8-static", p50=1.5, acc=0.93),
        _row("fp32", batch=8, p50=6.0, acc=0.95),
        _row("int8-static[minmax]", batch=8, precision="int8-static", p50=2.0, acc=0.94),
        _row("bf16", precision="bf16", status="failed", acc=None, error="bf16 not supported by this backend"),
    ]
    return results_to_frame(rows)


def test_pareto_front_hand_made():
    df = pd.DataFrame({
        "name": ["a", "b", "c", "d", "e", "f"],
        "x": [1.0, 2.0, 3.0, 2.5, 4.0, None],
        "y": [0.5, 0.8, 0.9, 0.7, 0.9, 1.0],
    })
    front = plots.pareto_front(df, "x", "y")
    # d is dominated by b (faster, better); e by c (same y, slower); f has no x.
    assert list(front["name"]) == ["a", "b", "c"]


def test_pareto_front_directions_and_ties():
    df = pd.DataFrame({"name": ["a", "b", "c", "d"], "x": [1, 1, 2, 3], "y": [5, 5, 4, 1]})
    # maximise x, minimise y: d (x=3, y=1) dominates everything else.
    assert list(plots.pareto_front(df, "x", "y", minimize_x=False, maximize_y=False)["name"]) == ["d"]
    # default directions: identical a and b are both kept; c and d are dominated by them? c: x=2 > 1 and y=4 < 5 -> dominated.
    assert list(plots.pareto_front(df, "x", "y")["name"]) == ["a", "b"]
    assert plots.pareto_front(df.iloc[0:0], "x", "y").empty


def test_sweet_spot_best_under_budget():
    df = pd.DataFrame({"v": ["a", "b", "c"], "x": [1.0, 2.0, 5.0], "y": [0.7, 0.9, 0.99]})
    assert plots.sweet_spot(df, "x", "y", 2.5)["v"] == "b"
    assert plots.sweet_spot(df, "x", "y", 10)["v"] == "c"
    assert plots.sweet_spot(df, "x", "y", 0.5) is None


def test_tradeoff_figure_pareto_and_budget(frame):
    fig = plots.tradeoff_figure(frame, latency_budget_ms=1.2)
    assert "latency" in fig.layout.xaxis.title.text and "ms" in fig.layout.xaxis.title.text
    assert "accuracy (%)" in fig.layout.yaxis.title.text
    names = [t.name for t in fig.data]
    front = next(t for t in fig.data if t.name == "Pareto front")
    # batch 1 onnxruntime + pytorch points; front = int8 ort (0.8 ms, 94 %) then fp32 ort (2.0 ms, 95 %).
    assert list(front.x) == [0.8, 2.0]
    assert list(front.y) == pytest.approx([94.0, 95.0])
    star = next(t for t in fig.data if t.name.startswith("sweet spot"))
    assert star.name == "sweet spot: int8-static[minmax] · onnxruntime"
    assert "bf16 · onnxruntime" not in names  # failed rows are not plotted
    assert any(a.text == "budget 1.2 ms" for a in fig.layout.annotations)
    assert fig.layout.xaxis.type == "linear"  # 0.8 .. 3.0 ms: no need for a log axis
    wide = plots.tradeoff_figure(pd.concat([frame, results_to_frame([_row("slow", p50=300.0, acc=0.5)])]))
    assert wide.layout.xaxis.type == "log" and "log scale" in wide.layout.xaxis.title.text
    assert fig.layout.font.size >= 14 and fig.layout.legend.font.size >= 14
    # hover carries the variant's configuration
    ort_fp32 = next(t for t in fig.data if t.name == "fp32 · onnxruntime")
    assert ort_fp32.customdata[0][0] == "fp32" and "precision" in ort_fp32.hovertemplate


def test_tradeoff_budget_with_nothing_under(frame):
    fig = plots.tradeoff_figure(frame, latency_budget_ms=0.1)
    assert not any(t.name and t.name.startswith("sweet spot") for t in fig.data)
    assert any("no variant within 0.1 ms" in (a.text or "") for a in fig.layout.annotations)


def test_tradeoff_uses_fidelity_without_labels():
    rows = [_row("fp32", acc=None, fid={"top1_agreement": 1.0, "cosine": 1.0}),
            _row("fp16", precision="fp16", acc=None, p50=0.5, fid={"top1_agreement": 0.98, "cosine": 0.999})]
    fig = plots.tradeoff_figure(results_to_frame(rows))
    assert "agreement with FP32" in fig.layout.yaxis.title.text


def test_tradeoff_overlay_by_sweep(frame):
    other = results_to_frame([_row("fp32", p50=1.5, acc=0.96, sweep_id=2)])
    fig = plots.tradeoff_figure(pd.concat([frame, other]), color_by="sweep")
    names = [t.name for t in fig.data]
    assert "#2 fp32 · onnxruntime" in names and "#1 fp32 · onnxruntime" in names
    c1 = next(t for t in fig.data if t.name == "#1 fp32 · onnxruntime").marker.color
    c2 = next(t for t in fig.data if t.name == "#2 fp32 · onnxruntime").marker.color
    assert c1 != c2


@pytest.mark.parametrize("builder", [
    plots.tradeoff_figure, plots.throughput_figure, plots.size_macs_figure, plots.speedup_figure,
    plots.agreement_figure,
])
def test_empty_and_failed_only_frames_give_annotated_figures(builder):
    empty = results_to_frame([])
    failed = results_to_frame([_row("fp32", status="failed", acc=None, error="boom")])
    for df in (empty, failed, None):
        fig = builder(df)
        assert isinstance(fig, go.Figure)
        assert plots.is_empty_figure(fig)
        assert fig.layout.annotations[0].text


@pytest.mark.parametrize("builder", [
    plots.tradeoff_figure, plots.throughput_figure, plots.size_macs_figure, plots.speedup_figure,
    plots.agreement_figure,
])
def test_figures_have_axis_titles_with_units(builder, frame):
    fig = builder(frame)
    assert not plots.is_empty_figure(fig)
    titles = [fig.layout[k].title.text for k in fig.layout
              if k.startswith(("xaxis", "yaxis")) and fig.layout[k].title.text]
    assert len(titles) >= 2
    assert any("(" in t for t in titles), titles  # at least one carries a unit


def test_throughput_lines_per_variant(frame):
    fig = plots.throughput_figure(frame)
    ort_int8 = next(t for t in fig.data if t.name == "int8-static[minmax] · onnxruntime")
    assert list(ort_int8.x) == [1, 8]
    assert fig.layout.yaxis.title.text == "throughput (samples/s = batch / mean latency)"
    assert ort_int8.line.color == plots.PALETTE["int8-static"]


def test_speedup_theoretical_and_measured(frame):
    fig = plots.speedup_figure(frame)
    theo = next(t for t in fig.data if t.name.startswith("theoretical"))
    ort = next(t for t in fig.data if t.name == "measured on onnxruntime")
    idx = list(theo.x).index("fp32+prune-s0.5")
    assert theo.y[idx] == pytest.approx(1_000_000 / 300_000)
    assert ort.y[idx] == pytest.approx(2.0 / 1.0)  # p50 latency ratio
    assert ort.y[list(ort.x).index("fp32")] == pytest.approx(1.0)


def test_agreement_needs_two_backends(frame):
    fig = plots.agreement_figure(frame)
    assert {t.name for t in fig.data} == {"onnxruntime", "pytorch"}
    single = frame[frame["backend"] == "onnxruntime"]
    assert plots.is_empty_figure(plots.agreement_figure(single))


def test_agreement_shows_the_cross_backend_check():
    def cross(passed, err):
        return {"reference_backend": "pytorch", "passed": passed, "worst_max_abs_err": err, "worst_max_rel_err": err * 2,
                "atol": 1e-3, "rtol": 1e-3}

    rows = [_row("fp32", backend="pytorch"), _row("fp32", backend="onnxruntime"),
            _row("int8-dynamic", backend="pytorch", precision="int8-dynamic"),
            _row("int8-dynamic", backend="onnxruntime", precision="int8-dynamic")]
    rows[1].cross_backend = cross(True, 2e-6)
    rows[3].cross_backend = cross(False, 0.04)
    fig = plots.agreement_figure(results_to_frame(rows))
    [check] = [t for t in fig.data if t.xaxis == "x3"]
    assert check.name == "onnxruntime" and list(check.x) == ["fp32", "int8-dynamic"]
    assert list(check.text) == ["pass<br>tol 0.001", "FAIL<br>tol 0.001"] and list(check.y) == pytest.approx([2e-6, 0.04])
    assert check.customdata[1][0] == "pytorch" and "atol" in check.hovertemplate
    assert fig.layout.yaxis3.type == "log"  # 2e-6 .. 0.04
    assert any(a.text == "worst abs error vs pytorch (first output)" for a in fig.layout.annotations)
    # rows without the check (older sweeps) keep the two-panel figure
    for r in rows:
        r.cross_backend = None
    plain = plots.agreement_figure(results_to_frame(rows))
    assert not any(t.xaxis == "x3" for t in plain.data) and len(plain.data) == 4


def test_table_says_when_a_compression_did_nothing():
    row = _row("int8-dynamic", precision="int8-dynamic")
    row.compressed_as_asked = False
    table = plots.display_table(results_to_frame([row, _row("fp32")]))
    assert "compressed as asked" in table.columns
    assert table["compressed as asked"].tolist() == [False, None]


def test_table_shows_gpu_columns_only_where_a_row_has_them(frame):
    cpu = plots.display_table(frame)
    for header in ("GPU peak memory (MiB)", "engine build time (s)", "mean GPU power (W)", "GPU energy (mJ/sample)"):
        assert header not in cpu.columns
    trt = _row("fp16", backend="tensorrt", precision="fp16", batch=4)
    trt.device, trt.gpu_peak_mb, trt.build_time_s, trt.build_cached = "cuda", 12.0, 31.5, False
    trt.energy = {"method": "energy_counter", "mean_power_w": 210.0, "joules_per_batch": 0.02,
                  "joules_per_sample": 0.005}
    table = plots.display_table(results_to_frame([trt, _row("fp32")]))
    assert table["engine build time (s)"].tolist()[0] == 31.5
    assert table["mean GPU power (W)"].tolist()[0] == 210.0
    assert table["GPU energy (mJ/sample)"].tolist()[0] == pytest.approx(5.0)
    cached = table["engine from cache"].tolist()[0]
    assert not pd.isna(cached) and not cached
    assert pd.isna(table["mean GPU power (W)"].tolist()[1])  # the CPU row has none


def test_latency_distribution_from_samples(frame):
    results = [_row("fp32", samples=[2.0, 2.1, 1.9]), _row("int8-static[minmax]", precision="int8-static", samples=[0.8, 0.9]),
               _row("bf16", status="failed", acc=None, samples=[5.0])]
    samples = plots.latency_samples_frame(results)
    assert len(samples) == 5  # failed rows' samples are left out
    fig = plots.latency_distribution_figure(samples)
    assert [t.type for t in fig.data] == ["box", "box"]
    assert "ms" in fig.layout.yaxis.title.text
    violin = plots.latency_distribution_figure(samples, kind="violin")
    assert violin.data[0].type == "violin"
    assert plots.is_empty_figure(plots.latency_distribution_figure(plots.latency_samples_frame([])))


def test_layer_and_sensitivity_figures():
    rows = [{"name": "conv1", "op_type": "Conv", "macs": 2_000_000, "params": 320},
            {"name": "fc", "op_type": "Linear", "macs": 10_000, "params": 10_010}]
    fig = plots.layer_figure(rows)
    assert list(fig.data[0].y) == ["fc (Linear)", "conv1 (Conv)"]  # largest at the top
    assert "millions" in fig.layout.xaxis.title.text
    assert plots.is_empty_figure(plots.layer_figure([]))
    sens = plots.sensitivity_figure([{"layer": "b", "op_type": "Conv", "macs_share": 0.7, "delta": 2.5},
                                     {"layer": "a", "op_type": "Gemm", "macs_share": 0.3, "delta": 0.1}])
    assert list(sens.data[0].y) == ["a", "b"] and sens.data[0].x[1] == pytest.approx(2.5)
    assert "percentage points" in sens.layout.xaxis.title.text
    assert plots.is_empty_figure(plots.sensitivity_figure([]))


def test_display_and_failure_tables(frame):
    table = plots.display_table(frame)
    assert "p50 latency (ms)" in table.columns and "top-1 accuracy (%)" in table.columns
    assert "MACs (millions, per sample)" in table.columns
    assert len(table) == 8  # failed row excluded
    assert table["top-1 accuracy (%)"].max() == pytest.approx(95.0)
    fails = plots.failures_table(frame)
    assert list(fails["reason"]) == ["bf16 not supported by this backend"]
    assert plots.failures_table(results_to_frame([])).empty


def test_report_is_one_self_contained_page(frame):
    import re
    from types import SimpleNamespace

    from benchmark.report import build_report, sweep_label, sweeps_table

    rec = SimpleNamespace(id=1, model="/data/uploads/0123456789abcdef/net.onnx", status="done", total_runs=9, counts={"ok": 8, "failed": 1},
                          created_at="2026-01-01T10:00:00+00:00", device="cpu",
                          config={"sweep": {"precisions": ["fp32", "int8-static"], "prune_ratios": [0.0, 0.5],
                                            "backends": ["onnxruntime", "pytorch"], "batch_sizes": [1, 8]}})
    assert sweep_label(rec) == "#1 net.onnx [fp32,int8-static] prune 0,0.5 on onnxruntime,pytorch - done (9 runs)"
    assert sweeps_table([rec]).iloc[0]["failed"] == 1
    samples = plots.latency_samples_frame([_row("fp32", samples=[2.0, 2.1])])
    html = build_report(frame, samples=samples, sweeps=[rec], environment={"cpu_model": "Test CPU 9000"},
                        title="Report <test>", latency_budget_ms=1.0)
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script[^>]*\bsrc=", html)  # plotly.js is inline, nothing is fetched
    assert html.count("Plotly.newPlot") >= 5  # trade-off, throughput, size/MACs, speedup, backends (+ distribution)
    assert "Report &lt;test&gt;" in html  # escaped
    assert "p50 latency (ms)" in html and "bf16 not supported by this backend" in html
    assert "Test CPU 9000" in html and "FLOPs = 2 x MACs" in html


# --- one statistic, one quality metric, one marker legend -----------------------------------------
def test_marker_legend_is_defined_once_and_rendered():
    text = plots.legend_markdown()
    for what, _ in plots.MARKER_LEGEND:
        assert f"**{what}**" in text
    assert "unstable" in text and "recommended" in text and "machine" in text


def test_unstable_rows_are_faded_and_left_out_of_the_front_and_the_star():
    noisy = _row("int8-static[minmax]", precision="int8-static", p50=0.5, acc=0.96)
    noisy.stability = {"unstable": True, "reasons": ["CV 1.70 > 0.5"], "attempts": 3}
    rows = [_row("fp32", p50=2.0, acc=0.95), _row("fp16", precision="fp16", p50=1.0, acc=0.94), noisy]
    fig = plots.tradeoff_figure(results_to_frame(rows), latency_budget_ms=1.5)
    point = next(t for t in fig.data if t.name == "int8-static[minmax] · onnxruntime")
    assert list(point.marker.opacity) == [plots.UNSTABLE_OPACITY]
    assert "unstable timing" in point.customdata[0][14] and "CV 1.70" in point.customdata[0][14]
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.x) == [1.0, 2.0]  # the faster, better, but noisy int8 point is not on it
    star = next(t for t in fig.data if t.name.startswith("sweet spot"))
    assert star.name == "sweet spot: fp16 · onnxruntime"
    assert any("1 unstable run(s)" in (a.text or "") for a in fig.layout.annotations)
    table = plots.display_table(results_to_frame(rows))
    timing = table["timing"].tolist()
    assert pd.isna(timing[0]) and timing[2] == "unstable: CV 1.70 > 0.5"  # rows never checked say nothing


def test_when_every_row_is_unstable_the_front_is_drawn_from_them_and_says_so():
    rows = [_row("fp32", p50=2.0, acc=0.95), _row("fp16", precision="fp16", p50=1.0, acc=0.94)]
    for r in rows:
        r.stability = {"unstable": True, "reasons": ["other processes used 1.6 CPU cores during the run (> 0.5)"]}
    fig = plots.tradeoff_figure(results_to_frame(rows), latency_budget_ms=1.5)
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.x) == [1.0, 2.0]
    notes = [a.text or "" for a in fig.layout.annotations]
    assert any(n.startswith("every timing here is unstable") for n in notes)
    assert any("no stable variant within 1.5 ms" in n for n in notes)  # the star still needs a stable timing
    measured = next(t for t in plots.speedup_figure(results_to_frame(rows)).data if t.name.startswith("measured"))
    assert all(c.startswith("rgba(") and c.endswith(f", {plots.UNSTABLE_OPACITY:g})") for c in measured.marker.color)
    assert measured.marker.line.color == plots.color_for("onnxruntime")  # a faded fill, a solid outline


def test_a_percentage_axis_never_labels_more_than_100():
    from benchmark.measure.quality import get_metric

    assert plots.percent_range([100.0, 100.0], get_metric("top1_agreement")) == pytest.approx([94.6, 100.4])
    assert plots.percent_range([10.0, 100.0], get_metric("accuracy")) == pytest.approx([2.8, 107.2])
    assert plots.percent_range([0.5], get_metric("rel_error")) is None  # lower is better: no ceiling
    assert plots.percent_range([0.99], get_metric("cosine")) is None
    rows = [_row("fp32", p50=2.0, acc=1.0), _row("fp16", precision="fp16", p50=1.0, acc=1.0)]
    assert list(plots.tradeoff_figure(results_to_frame(rows)).layout.yaxis.range) == pytest.approx([94.6, 100.4])


def test_recommended_variant_takes_the_star():
    rows = [_row("fp32", p50=2.0, acc=0.95), _row("fp16", precision="fp16", p50=1.0, acc=0.94)]
    fig = plots.tradeoff_figure(results_to_frame(rows), latency_budget_ms=5.0, recommended=("fp16", "onnxruntime"))
    stars = [t for t in fig.data if t.marker.symbol == "star"]
    assert [t.name for t in stars] == ["recommended: fp16 · onnxruntime"]  # one mark, not two


def test_another_machine_gets_a_dark_outline_and_its_name():
    a, b = _row("fp32", p50=2.0), _row("fp32", p50=1.0)
    a.env, b.env = {"cpu_model": "CPU A"}, {"cpu_model": "CPU B"}
    fig = plots.tradeoff_figure(results_to_frame([a, b]))
    first = next(t for t in fig.data if t.name == "fp32 · onnxruntime @ CPU A")
    second = next(t for t in fig.data if t.name == "fp32 · onnxruntime @ CPU B")
    assert first.marker.line.color == plots.PALETTE["fp32"]
    assert second.marker.line.color == plots.MACHINE_OUTLINES[0] and second.marker.line.width == 3
    assert "machine" in plots.display_table(results_to_frame([a, b])).columns


def test_compared_sweeps_get_their_own_colour_and_front_and_lines():
    s1 = [_row("fp32", p50=2.0, acc=0.95, sweep_id=1), _row("int8", precision="int8-static", p50=1.0, acc=0.9, sweep_id=1),
          _row("fp32", batch=8, p50=6.0, sweep_id=1)]
    s2 = [_row("fp32", p50=1.5, acc=0.95, sweep_id=2), _row("fp32", batch=8, p50=3.0, sweep_id=2)]
    df = results_to_frame(s1 + s2)
    fig = plots.tradeoff_figure(df, color_by="sweep")
    fronts = {t.name: t for t in fig.data if t.name.startswith("Pareto front")}
    assert set(fronts) == {"Pareto front #1", "Pareto front #2"}
    assert list(fronts["Pareto front #1"].x) == [1.0, 2.0] and list(fronts["Pareto front #2"].x) == [1.5]
    assert fronts["Pareto front #1"].line.color != fronts["Pareto front #2"].line.color
    thr = plots.throughput_figure(df, color_by="sweep")
    lines = {t.name: t for t in thr.data}
    assert list(lines["#1 fp32 · onnxruntime"].x) == [1, 8] and list(lines["#2 fp32 · onnxruntime"].x) == [1, 8]
    assert lines["#1 fp32 · onnxruntime"].line.color != lines["#2 fp32 · onnxruntime"].line.color


def test_quality_metric_can_be_switched_and_lower_is_better_flips_the_front():
    fid = [{"top1_agreement": 1.0, "cosine": 1.0, "rel_error": 0.0},
           {"top1_agreement": 0.5, "cosine": 0.99, "rel_error": 0.05},
           {"top1_agreement": 0.9, "cosine": 0.95, "rel_error": 0.20}]
    rows = [_row("fp32", p50=2.0, acc=None, fid=fid[0]), _row("a", precision="fp16", p50=1.0, acc=None, fid=fid[1]),
            _row("b", precision="int8-static", p50=0.5, acc=None, fid=fid[2])]
    df = results_to_frame(rows)
    assert "agreement" in plots.tradeoff_figure(df).layout.yaxis.title.text  # old rows: agreement first
    cos = plots.tradeoff_figure(df, metric="cosine")
    assert cos.layout.yaxis.title.text == "cosine similarity to FP32"
    err = plots.tradeoff_figure(df, metric="rel_error")
    assert "lower is better" in err.layout.yaxis.title.text
    front = next(t for t in err.data if t.name == "Pareto front")
    assert list(front.y) == pytest.approx([20.0, 5.0, 0.0])  # every point: faster ones have more error
    assert plots.display_table(df, metric="cosine").columns[4] == "quality: cosine similarity to FP32"


def test_table_puts_quality_speedup_and_size_first():
    rows = [_row("fp32", p50=2.0), _row("int8", precision="int8-static", p50=0.5, acc=0.9)]
    rows[1].compression = [{"details": {"onnx": {"int8_format": "u8s8", "calibration": {"samples": 6}}}}]
    rows[1].config = {"calib_samples": 128}
    table = plots.display_table(results_to_frame(rows))
    assert list(table.columns[:8]) == ["variant", "backend", "device", "batch (samples)", "quality: top-1 accuracy (%)",
                                       "quality drop (points, + = worse)", "speedup vs FP32 (x, p50)", "size (MB)"]
    assert table["speedup vs FP32 (x, p50)"].tolist() == [1.0, 4.0]
    assert table["quality drop (points, + = worse)"].tolist() == pytest.approx([0.0, 0.0])
    calib = table["calibration samples (used / asked)"].tolist()
    assert pd.isna(calib[0]) and calib[1] == "6 / 128 (few)"
    assert table["INT8 format"].tolist()[1] == "u8s8"
    assert "throughput (samples/s, batch / mean latency)" in table.columns


# --- one sweep across machines (Ray targets) ------------------------------------------------------
A_NODE, B_NODE = "a" * 56, "b" * 56


def _on(row: RunResult, node: str, host: str, **kw) -> RunResult:
    row.target, row.env = f"node={node}", {"hostname": host, "cpu_model": "same CPU model"}
    for key, value in kw.items():
        setattr(row, key, value)
    return row


def _two_machines() -> list[RunResult]:
    """The same sweep on two nodes: INT8 pays off 2x on the first and not at all on the second."""
    return [_on(_row("fp32", p50=2.0, acc=0.95, samples=[2.0, 2.1]), A_NODE, "vnni-box"),
            _on(_row("int8-static[minmax]", precision="int8-static", p50=1.0, acc=0.94, samples=[1.0]), A_NODE, "vnni-box"),
            _on(_row("fp32", p50=1.0, acc=0.95, samples=[1.0]), B_NODE, "avx2-box"),
            _on(_row("int8-static[minmax]", precision="int8-static", p50=1.0, acc=0.93, samples=[1.0]), B_NODE, "avx2-box"),
            _on(_row("fp32", backend="pytorch", p50=4.0, acc=0.95), A_NODE, "vnni-box"),
            _on(_row("fp32", backend="pytorch", p50=3.0, acc=0.95), B_NODE, "avx2-box")]


def test_machine_of_names_ray_targets_for_people():
    assert plots.machine_of({"target": f"node={A_NODE}", "env_host": "vnni-box"}) == "vnni-box (node aaaaaaaa)"
    assert plots.machine_of({"target": "resource=lab_t4", "env_host": "whichever"}) == "resource lab_t4"
    assert plots.machine_of({"target": "", "env_cpu": "CPU A"}) == "CPU A"  # local rows: the CPU model, as before


def test_speedups_and_bars_compare_within_one_machine():
    df = results_to_frame(_two_machines())
    fig = plots.speedup_figure(df)
    bars = {t.name: dict(zip(t.x, t.y)) for t in fig.data if t.name.startswith("measured on onnxruntime")}
    assert bars == {"measured on onnxruntime @ vnni-box (node aaaaaaaa)": {"fp32": 1.0, "int8-static[minmax]": 2.0},
                    "measured on onnxruntime @ avx2-box (node bbbbbbbb)": {"fp32": 1.0, "int8-static[minmax]": 1.0}}
    second = next(t for t in fig.data if t.name.endswith("avx2-box (node bbbbbbbb)") and "onnxruntime" in t.name)
    assert second.marker.line.color == plots.MACHINE_OUTLINES[0]  # the second machine's bars are outlined
    agree = plots.agreement_figure(df)
    latency = {t.name: dict(zip(t.x, t.y)) for t in agree.data if t.xaxis == "x2"}
    assert latency["pytorch @ avx2-box (node bbbbbbbb)"] == {"fp32": 3.0, "int8-static[minmax]": None}
    assert latency["onnxruntime @ vnni-box (node aaaaaaaa)"]["int8-static[minmax]"] == 1.0
    table = plots.display_table(df)
    assert table["speedup vs FP32 (x, p50)"].tolist() == pytest.approx([1.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    assert set(table["machine"]) == {"vnni-box (node aaaaaaaa)", "avx2-box (node bbbbbbbb)"}


def test_tradeoff_coloured_by_machine_has_one_colour_and_front_per_machine():
    df = results_to_frame(_two_machines())
    int8 = df[df["variant"] == "int8-static[minmax]"]  # one variant compared across machines
    fig = plots.tradeoff_figure(int8, color_by="machine")
    points = {t.name: t for t in fig.data if t.mode == "markers" and not t.name.startswith("Pareto")}
    a, b = points["int8-static[minmax] · onnxruntime @ vnni-box (node aaaaaaaa)"], \
        points["int8-static[minmax] · onnxruntime @ avx2-box (node bbbbbbbb)"]
    assert a.marker.color == plots.machine_color(plots.machines(int8), "vnni-box (node aaaaaaaa)") != b.marker.color
    fronts = sorted(t.name for t in fig.data if t.name.startswith("Pareto front"))
    assert fronts == ["Pareto front @ avx2-box (node bbbbbbbb)", "Pareto front @ vnni-box (node aaaaaaaa)"]
    thr = plots.throughput_figure(df, color_by="machine")
    colours = {t.name.split(" @ ")[1]: t.line.color for t in thr.data}
    assert len(set(colours.values())) == 2


def test_latency_samples_and_failures_say_which_machine():
    rows = _two_machines()
    lost = _on(_row("fp16", precision="fp16", status="interrupted", acc=None, error="lost with avx2-box"), B_NODE, "avx2-box")
    samples = plots.latency_samples_frame(rows + [lost])
    assert set(samples["machine"]) == {"vnni-box (node aaaaaaaa)", "avx2-box (node bbbbbbbb)"}
    fig = plots.latency_distribution_figure(samples)
    assert "fp32 · onnxruntime @ avx2-box (node bbbbbbbb)" in {t.name for t in fig.data}
    failures = plots.failures_table(results_to_frame(rows + [lost]))
    assert failures.to_dict("records") == [{"variant": "fp16", "backend": "onnxruntime", "machine": "avx2-box (node bbbbbbbb)",
                                            "batch (samples)": 1, "status": "interrupted", "reason": "lost with avx2-box"}]

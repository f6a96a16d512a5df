"""Measured explanations: every sentence carries the numbers it rests on; no numbers, no sentence."""
from __future__ import annotations

import pytest

from benchmark.explain import explain_int8, explain_low_precision_float, explain_pruning, explain_row, mac_kernel_rate
from benchmark.measure.hardware import isa_from_texts
from benchmark.measure.roofline import Peaks

AVX2_EPYC = isa_from_texts("x86_64", cpuinfo="model name\t: AMD EPYC 7B13\nflags\t\t: sse4_2 avx fma f16c avx2 bmi2\n")
VNNI_EPYC = isa_from_texts("x86_64", cpuinfo="model name\t: AMD EPYC 9B14\nflags\t\t: avx fma avx2 avx512f avx512bw "
                                            "avx512vl avx512dq avx512_vnni avx512_bf16\n")
PEAKS_AVX2 = Peaks(gmacs_per_s={"fp32": {"onnxruntime MatMul": 60.0, "torch.matmul": 55.0},
                                "bf16": {"torch.matmul": 9.5},
                                "fp16": {"torch.matmul": 1.2},
                                "int8": {"onnxruntime MatMulInteger U8S8": 75.0,
                                         "onnxruntime MatMulInteger S8S8": 20.0}},
                   memory_gb_per_s={"torch add": 20.0}, threads=2, key="k")


def _layer(name, kernel, ms, macs, int8, precision=None, groups=None, peak_fraction=None, mac_share=None):
    return {"name": name, "op_type": "Conv" if macs else kernel, "kernels": [kernel], "time_ms": ms, "macs": macs,
            "int8_kernel": int8 if macs else None, "precision": precision or ("int8" if int8 else "fp32"),
            "groups": groups, "peak_fraction": peak_fraction, "mac_share": mac_share}


INT8_PROFILE = {"layers": [_layer("c1", "QLinearConv", 2.0, 82_000_000, True),
                           _layer("c2", "QLinearConv", 1.0, 41_000_000, True),
                           _layer("q", "QuantizeLinear", 0.3, 0, False, precision="quant")],
                "kernels": {"quantized_but_float": [], "quant_time_share": 0.3 / 3.3}}
FP32_PROFILE = {"layers": [_layer("c1", "Conv", 1.6, 82_000_000, False), _layer("c2", "Conv", 0.8, 41_000_000, False)]}


def test_int8_on_a_cpu_without_vnni_cites_kernels_and_peaks():
    row = {"precision": "int8-static", "backend": "onnxruntime", "speedup_vs_fp32": 0.96}
    exp = explain_int8(row, AVX2_EPYC, PEAKS_AVX2, INT8_PROFILE, FP32_PROFILE)
    text = exp["text"]
    assert exp["topic"] == "int8"
    assert "0.96x FP32" in text and "AMD EPYC 7B13" in text and "no VNNI" in text and "AVX2" in text
    assert "QLinearConv" in text and "41.0 GMAC/s" in text  # 123e6 MACs in 3.0 ms
    assert "51.2 GMAC/s" in text and "(Conv)" in text  # the FP32 model's kernels: 123e6 in 2.4 ms
    assert "9.1 %" in text  # Quantize/DequantizeLinear share
    assert "75 GMAC/s" in text and "60 GMAC/s" in text and "1.25x" in text
    assert exp["numbers"]["int8_kernel_gmacs_per_s"] == pytest.approx(41.0)
    assert exp["numbers"]["fp32_kernel_gmacs_per_s"] == pytest.approx(51.25)


def test_int8_fast_on_vnni_says_so_and_s8s8_is_called_out():
    row = {"precision": "int8-static", "backend": "onnxruntime", "speedup_vs_fp32": 0.7, "int8_format": "s8s8"}
    text = explain_int8(row, VNNI_EPYC, PEAKS_AVX2)["text"]
    assert "has AVX-512 with INT8 dot products (avx512_vnni)" in text
    assert "S8S8" in text and "20 GMAC/s" in text and "75 for U8S8" in text


def test_int8_quantized_layers_that_ran_float_are_named():
    profile = {"layers": [_layer("c1", "Conv", 2.0, 10_000_000, False)],
               "kernels": {"quantized_but_float": ["c1"], "quant_time_share": 0.0}}
    text = explain_int8({"precision": "int8-dynamic", "backend": "onnxruntime", "speedup_vs_fp32": 0.5},
                        None, None, profile)["text"]
    assert "no MAC layer ran an INT8 kernel" in text and "5.0 GMAC/s" in text
    assert "1 quantized layer(s) ran as DequantizeLinear -> float op (c1)" in text


def test_no_numbers_no_explanation():
    assert explain_row({"precision": "int8-static"}) == []  # no speedup, no peaks, no profile
    assert explain_int8({"precision": "int8-static", "speedup_vs_fp32": 0.9}) is None  # nothing measured to cite
    assert explain_low_precision_float({"precision": "bf16", "device": "cuda", "speedup_vs_fp32": 0.5}) is None
    assert explain_pruning({"precision": "fp32", "prune_ratio": 0.5, "speedup_vs_fp32": 1.1}) is None


def test_bf16_without_native_support_on_cpu():
    row = {"precision": "bf16", "backend": "pytorch", "device": "cpu", "speedup_vs_fp32": 0.31}
    exp = explain_low_precision_float(row, AVX2_EPYC, PEAKS_AVX2)
    assert exp["topic"] == "bf16"
    assert "0.31x FP32" in exp["text"] and "has no native BF16" in exp["text"]
    assert "9.5 GMAC/s" in exp["text"] and "60.0 for FP32" in exp["text"]
    native = explain_low_precision_float(row, VNNI_EPYC, PEAKS_AVX2)["text"]
    assert "has native BF16" in native


def test_fp16_on_the_cpu_provider_cites_cast_and_fp16_time():
    profile = {"layers": [_layer("c1", "Conv", 3.0, 1000, False, precision="fp16"),
                          _layer("cast", "Cast", 1.0, 0, False, precision="fp32")]}
    row = {"precision": "fp16", "backend": "onnxruntime", "device": "cpu", "speedup_vs_fp32": 0.62}
    text = explain_low_precision_float(row, AVX2_EPYC, PEAKS_AVX2, profile)["text"]
    assert "0.62x FP32" in text and "75 % of the profiled time ran in fp16 kernels" in text
    assert "25 % in Casts" in text and "1.2 GMAC/s" in text


def test_pruning_far_below_the_mac_cut_points_at_the_layers():
    profile = {"layers": [_layer("dw", "Conv", 3.0, 1_000_000, False, groups=32, peak_fraction=0.02, mac_share=0.05),
                          _layer("pw", "Conv", 3.0, 19_000_000, False, groups=1, peak_fraction=0.4, mac_share=0.95),
                          _layer("relu", "Relu", 2.0, 0, False), _layer("pool", "MaxPool", 2.0, 0, False)]}
    row = {"precision": "fp32", "prune_ratio": 0.5, "macs": 20_000_000, "reference_macs": 50_000_000,
           "speedup_vs_fp32": 1.3}
    exp = explain_pruning(row, profile)
    text = exp["text"]
    assert "cut MACs 2.50x but latency only 1.30x" in text
    assert "(MaxPool, Relu) took 40 % of the time" in text
    assert "1 grouped/depthwise convolution(s) hold 5 % of the MACs but 30 % of the time" in text
    assert "below 10 % of this device's peak" in text
    ok = explain_pruning({**row, "speedup_vs_fp32": 2.2}, profile)
    assert ok["text"] == "Pruning cut MACs 2.50x and latency 2.20x (88 % of the MAC cut)."


def test_explain_row_collects_topics_with_roofline():
    row = {"precision": "int8-static", "backend": "onnxruntime", "device": "cpu", "speedup_vs_fp32": 0.96,
           "macs": 50_000_000, "batch_size": 8, "latency_p50_ms": 10.0}
    topics = {e["topic"]: e for e in explain_row(row, isa=AVX2_EPYC.to_dict(), peaks=PEAKS_AVX2.to_dict())}
    assert set(topics) == {"int8", "roofline"}
    roof = topics["roofline"]
    assert roof["numbers"]["achieved_gmacs_per_s"] == pytest.approx(40.0)  # 50e6 x 8 / 10 ms
    assert "53.3 % of this device's INT8 GEMM peak (75.0 GMAC/s" in roof["text"]
    assert "no VNNI" in topics["int8"]["text"]  # the ISA as a dict works as well as the dataclass


def test_mac_kernel_rate_groups_int8_and_float_layers():
    rate = mac_kernel_rate(INT8_PROFILE, int8=True)
    assert rate["layers"] == 2 and rate["kernels"] == {"QLinearConv": 2} and rate["gmacs_per_s"] == pytest.approx(41.0)
    assert mac_kernel_rate(INT8_PROFILE, int8=False) is None and mac_kernel_rate(None, int8=True) is None


# --------------------------------------------------------------------------------------------
# a sweep's rows: speedups, roofline fields and explanations filled from the rows' environment
# --------------------------------------------------------------------------------------------
def _row(variant, precision, backend, p50, env, **kw):
    from benchmark.results import RunResult

    kw.setdefault("status", "ok")
    return RunResult(model="m", variant=variant, backend=backend, batch_size=4, precision=precision,
                     sweep_id=1, macs=50_000_000, latency_ms={"p50": p50, "mean": p50}, env=env, **kw)


def _choice_record():
    cands = [{"name": "U8S8 reduce_range", "source": "chosen from the CPU flags", "p50_ms": 2.1, "drop_points": 0.2},
             {"name": "S8S8", "source": "ONNX Runtime's default", "p50_ms": 2.6, "drop_points": 0.1}]
    return [{"method": "int8-static", "details": {"onnx": {
        "int8_format": "u8s8", "int8_format_reason": "measured: ...",
        "int8_choice": {"mode": "measure", "chosen": "U8S8 reduce_range", "samples": 256, "timing_batch": 8,
                        "metric": "accuracy", "candidates": cands}}}}]


def test_explain_results_fills_a_no_vnni_sweep_from_its_rows_environment():
    from benchmark.explain import explain_results, explanation_lines
    from benchmark.measure.environment import peaks_record

    env = {"isa": AVX2_EPYC.to_dict(), "peaks": peaks_record(PEAKS_AVX2)}
    rows = [_row("fp32", "fp32", "onnxruntime", 10.0, env),
            _row("int8-static[minmax]", "int8-static", "onnxruntime", 10.5, env, compression=_choice_record()),
            _row("int8-static[minmax]", "int8-static", "pytorch", 5.0, env),  # no FP32 row on pytorch
            _row("fp32", "fp32", "onnxruntime", 99.0, env, status="failed")]
    rows[-1].batch_size = 8
    changed = explain_results(rows)
    assert changed == rows[:3]
    ref, int8, lone = rows[:3]
    assert ref.speedup_vs_fp32 == pytest.approx(1.0) and int8.speedup_vs_fp32 == pytest.approx(10.0 / 10.5)
    assert int8.achieved_gmacs_per_s == pytest.approx(50e6 * 4 / 10.5e-3 / 1e9)
    assert int8.peak_fraction == pytest.approx(int8.achieved_gmacs_per_s / 75.0)  # the INT8 peak
    assert ref.peak_fraction == pytest.approx(ref.achieved_gmacs_per_s / 60.0)  # the FP32 peak
    topics = {e["topic"]: e for e in int8.explanations}
    assert set(topics) == {"int8", "int8_format", "roofline"}
    assert "0.95x FP32 speed" in topics["int8"]["text"] and "no VNNI" in topics["int8"]["text"]
    assert "75 GMAC/s" in topics["int8"]["text"] and "60 GMAC/s" in topics["int8"]["text"]
    assert "U8S8 reduce_range (chosen from the CPU flags) 2.100 ms, +0.20 points" in topics["int8_format"]["text"]
    assert "S8S8 (ONNX Runtime's default) 2.600 ms" in topics["int8_format"]["text"]
    assert lone.speedup_vs_fp32 is None and [e["topic"] for e in lone.explanations] == ["roofline"]
    assert rows[3].explanations is None
    assert explain_results(rows) == []  # nothing new the second time
    lines = explanation_lines(rows)
    assert lines[0].startswith("this device's peaks (2 thread(s)") and "int8 75.0" in lines[0]
    assert any(line.startswith("int8-static[minmax] on onnxruntime, batch 4: int8-static on onnxruntime ran at 0.95x")
               for line in lines)
    flat = int8.to_row()
    assert flat["peak_fraction"] == pytest.approx(int8.peak_fraction) and "no VNNI" in flat["explanation"]


def test_an_int8_row_below_extended_optimizations_is_explained_by_its_runtime_setting():
    from benchmark.explain import explain_results

    runtime = {"ort_graph_opt_level": "basic", "ort_inter_op_threads": 1, "ort_execution_mode": "sequential"}
    rows = [_row("fp32@ort-opt=basic", "fp32", "onnxruntime", 2.0, {}, runtime=runtime),
            _row("int8-static[minmax]@ort-opt=basic", "int8-static", "onnxruntime", 2.5, {}, runtime=runtime),
            _row("fp32@ort-opt=all", "fp32", "onnxruntime", 1.0, {}, runtime={**runtime, "ort_graph_opt_level": "all"})]
    explain_results(rows)
    assert rows[1].speedup_vs_fp32 == pytest.approx(0.8)  # against the FP32 row of the same level
    text = next(e["text"] for e in rows[1].explanations if e["topic"] == "runtime")
    assert "graph optimization level basic" in text and "0.80x" in text and "QLinearConv" in text
    assert rows[2].speedup_vs_fp32 == pytest.approx(1.0)


def test_explain_profiled_joins_the_rows_speedup_with_the_profiles_kernels():
    from benchmark.explain import explain_profiled
    from benchmark.results import RunResult

    env = {"isa": AVX2_EPYC.to_dict(), "peaks": PEAKS_AVX2.to_dict()}

    def row(variant, precision, p50):
        return RunResult(model="m", variant=variant, backend="onnxruntime", batch_size=1, status="ok", sweep_id=1,
                         precision=precision, macs=123_000_000, latency_ms={"p50": p50}, env=env)

    rows = [row("fp32", "fp32", 2.4), row("int8-static[minmax]", "int8-static", 2.5)]
    exps = {e["topic"]: e for e in explain_profiled(rows, "int8-static[minmax]|onnxruntime|1", INT8_PROFILE)}
    text = exps["int8"]["text"]
    assert "0.96x FP32" in text and "no VNNI" in text  # 2.4 / 2.5 from the FP32 row of the same sweep
    assert "QLinearConv" in text and "41.0 GMAC/s" in text  # the profile's INT8 kernels: 123e6 MACs in 3.0 ms
    assert exps["roofline"]["numbers"]["achieved_gmacs_per_s"] == pytest.approx(123e6 / 2.5e-3 / 1e9)
    assert explain_profiled(rows, "int8-static[minmax]|pytorch|1", INT8_PROFILE) == []  # no such row

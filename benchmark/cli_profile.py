"""The ``profile`` subcommand of the ``slimbench`` CLI: where one variant's time goes, layer by layer.

``slimbench profile MODEL [--precision P] [--prune R] [--backend B] [--batch-size N] [--threads T]
[--json]`` builds ONE variant the way ``slimbench run`` does (same options, one value each), times
it normally, then profiles it untimed and prints each layer's time, share of the time, share of the
MACs, kernel, precision and achieved GMAC/s as a fraction of this device's peak, with the per-node
sum against the end-to-end p50. ``--json`` prints one object (see
:func:`benchmark.profiling.profile_variant`).
"""
from __future__ import annotations

import argparse
import json

from .config import CALIB_METHODS, PRECISIONS, PRUNE_KINDS
from .errors import ConfigError

DEFAULT_BACKEND = "onnxruntime"
TOP_LAYERS = 25


def add_profile_parser(subparsers) -> argparse.ArgumentParser:
    from .cli_run import add_model_args

    p = subparsers.add_parser(
        "profile", help="per-layer profile of one variant: time, MACs, kernel and achieved GMAC/s per layer",
        description="Build one variant as `run` does, time it, then profile it (untimed) and join each layer's "
                    "time with its MACs and this CPU's peak throughput.",
    )
    add_model_args(p)
    p.add_argument("--precision", dest="precisions", metavar="P", help=f"one of {', '.join(PRECISIONS)} (default fp32)")
    p.add_argument("--prune", dest="prune_ratios", metavar="RATIO", help="prune ratio in [0, 1) (default 0)")
    p.add_argument("--prune-kind", dest="prune_kind", metavar="KIND", help=f"{' or '.join(PRUNE_KINDS)} (default structured)")
    p.add_argument("--lowrank", dest="lowrank_ratio", metavar="RATIO", help="low-rank rank ratio (0 disables)")
    p.add_argument("--distill", action="store_true", default=None, help="distil a pruned/low-rank variant")
    p.add_argument("--backend", dest="backends", metavar="B", help=f"onnxruntime or pytorch (default {DEFAULT_BACKEND})")
    p.add_argument("--device", metavar="DEVICE", help="cpu (the only device profiled for now)")
    p.add_argument("--batch-size", dest="batch_sizes", metavar="N", help="batch size (default 1)")
    p.add_argument("--calib-method", metavar="METHOD", help=f"INT8 static calibration: {', '.join(CALIB_METHODS)}")
    p.add_argument("--calib-samples", metavar="N", help="INT8 static calibration samples (default 128)")
    p.add_argument("--threads", metavar="N", help="intra-op threads (0 = all cores)")
    p.add_argument("--min-duration", dest="min_duration_s", metavar="S", help="seconds of the timed run before profiling (default 1.0)")
    p.add_argument("--min-iters", metavar="N", help="iterations of the timed run, at least (default 20)")
    p.add_argument("--runs", metavar="N", help="profiled runs (default: about one second's worth, 5 to 50)")
    p.add_argument("--int8-format", metavar="FORMAT", help="INT8 static format: measure (default), auto, u8s8, s8s8")
    p.add_argument("--ort-opt", dest="ort_opt_levels", metavar="LEVEL",
                   help="ONNX Runtime graph optimization level: all (default), extended, basic, disable")
    p.add_argument("--ort-inter-threads", dest="ort_inter_op_threads", metavar="N",
                   help="ONNX Runtime inter-op threads (default 1)")
    p.add_argument("--ort-mode", dest="ort_execution_modes", metavar="MODE",
                   help="ONNX Runtime execution mode: sequential (default) or parallel")
    p.add_argument("--torch-interop-threads", metavar="N", help="PyTorch inter-op threads (0 = PyTorch's default)")
    p.add_argument("--sensitivity", metavar="FILE.json",
                   help="join a `slimbench sensitivity --json` table: each layer gets its accuracy drop")
    p.set_defaults(func=cmd_profile, eval_samples=None, cuda_graph=None)
    return p


def _one(values: tuple, flag: str):
    if len(values) != 1:
        raise ConfigError(f"profile takes one variant at a time: {flag} has {len(values)} values "
                          f"({', '.join(map(str, values))}); give one")
    return values[0]


def _sensitivity_rows(path: str | None) -> list[dict] | None:
    if not path:
        return None
    try:
        data = json.loads(open(path, encoding="utf-8").read())
    except OSError as exc:
        raise ConfigError(f"cannot read --sensitivity {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"--sensitivity {path} is not JSON: {exc}") from None
    table = data.get("table") if isinstance(data, dict) else None
    if not isinstance(table, list):
        raise ConfigError(f"--sensitivity {path} holds no 'table' list; write it with `slimbench sensitivity --json`")
    return table


def profile_runtime(cfg, backend: str) -> dict:
    """The runtime settings of ``backend`` in ``cfg``, one value each (profile runs one variant)."""
    import dataclasses

    from .sweep.runtime import SETTINGS, backend_settings

    flags = {f.name: f.metadata.get("flag", f.name) for f in dataclasses.fields(cfg)}
    honoured = backend_settings(backend)
    return {s.key: _one(tuple(getattr(cfg, s.field)), flags[s.field]) for s in SETTINGS if s.key in honoured}


def cmd_profile(args) -> int:
    from .cli_run import convert_field, job_callbacks, job_timeout, sweep_config_from_args
    from .profiling import profile_isolated

    args.backends = args.backends or DEFAULT_BACKEND
    cfg, _ = sweep_config_from_args(args)
    _one(cfg.precisions, "--precision")
    _one(cfg.prune_ratios, "--prune")
    backend = _one(cfg.backends, "--backend")
    batch = _one(cfg.batch_sizes, "--batch-size")
    compression = cfg.compressions()[-1]  # with --lowrank: the decomposed variant
    runtime = profile_runtime(cfg, backend)
    runs = None if args.runs is None else convert_field("runs", int, args.runs)
    timing = {"min_duration_s": cfg.min_duration_s, "min_iters": cfg.min_iters}
    bar, on_wait = job_callbacks(args)
    try:
        res = profile_isolated(cfg.model, compression, backend=backend, device=cfg.device, batch_size=batch,
                               threads=cfg.threads, inputs=list(cfg.inputs), arch=cfg.arch,
                               trust_pickle=cfg.trust_pickle, data=cfg.data, runs=runs, timing=timing,
                               batch_axes=list(cfg.batch_axis), runtime=runtime,
                               sensitivity=_sensitivity_rows(args.sensitivity), on_progress=bar, on_wait=on_wait,
                               timeout_s=job_timeout(args.timeout))
    finally:
        bar.close()
    print(json.dumps(res, indent=2, allow_nan=False) if args.json else format_profile(res))
    return 0


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_profile(res: dict, top: int = TOP_LAYERS) -> str:
    """The profile as text: a header with the end-to-end comparison, then the layers by time."""
    from .cli_run import text_table

    gap = res.get("gap_fraction")
    lines = [
        f"profile of {res.get('model')} {res['variant']} on {res['backend']} {res['device']}, "
        f"batch {res['batch_size']}, "
        f"{res['threads']} thread(s) ({res['runs']} profiled runs)",
        f"end-to-end p50 {res['end_to_end_p50_ms']:.3f} ms (timed run without profiling); layers total "
        f"{res['layers_total_ms']:.3f} ms; gap {res['gap_ms']:+.3f} ms"
        + (f" ({100 * gap:+.1f} % of end-to-end)" if gap is not None else ""),
        f"cpu: {res['isa']['summary']}",
    ]
    peaks = res.get("peaks") or {}
    if peaks.get("peak_gmacs_per_s"):
        lines.append("peaks: " + ", ".join(f"{p} {v:.1f} GMAC/s" for p, v in peaks["peak_gmacs_per_s"].items())
                     + (f", memory {peaks['memory_bandwidth_gb_per_s']:.1f} GB/s"
                        if peaks.get("memory_bandwidth_gb_per_s") else ""))
    rows = []
    for r in res["layers"][:top]:
        rows.append([r["name"], r["op_type"], ",".join(r.get("kernels") or [])[:32], r["precision"],
                     f"{r['time_ms']:.4f}", _pct(r.get("time_share")), _pct(r.get("mac_share")),
                     "-" if r.get("gmacs_per_s") is None else f"{r['gmacs_per_s']:.1f}", _pct(r.get("peak_fraction"))])
    lines.append(text_table(["layer", "op", "kernel", "precision", "time (ms)", "time (%)", "MACs (%)", "GMAC/s",
                              "of peak (%)"], rows, {4, 5, 6, 7, 8}))
    if len(res["layers"]) > top:
        lines.append(f"... {len(res['layers']) - top} more layer(s) (--json lists all)")
    k = res.get("kernels") or {}
    if k.get("mac_layers"):
        lines.append(f"MAC layers: {k['int8_kernel_layers']} in INT8 kernels, {k['float_kernel_layers']} in float "
                     "kernels; "
                     f"Quantize/DequantizeLinear {100 * k['quant_time_share']:.1f} % of the time; layers without MACs "
                     f"{100 * k['zero_mac_time_share']:.1f} %")
    lines += [f"note: {n}" for n in res.get("notes") or []]
    return "\n".join(lines)


__all__ = ["add_profile_parser", "cmd_profile", "format_profile"]

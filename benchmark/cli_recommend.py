"""The ``recommend`` subcommand of the ``slimbench`` CLI: which variant to ship.

``slimbench recommend MODEL --budget POINTS [--latency-budget MS] [--batch-size B] [--backend B,...]
[--device cpu|cuda] [--time-budget S] [--save FILE] [--json]`` searches precision, pruning,
low-rank, distillation, backend and runtime settings for the fastest variant within the quality
budget (points of the quality metric, measured on a search split; checked on a held-out split) and
prints it with its speedup over FP32 (with a confidence interval from interleaved repeats), its
quality and size change, the runners-up, and why every other family of candidates lost. The rows
are stored like a sweep's (``slimbench results``), the chosen model file is written beside the
record and, with ``--save``, copied there. Exit status 0 also when the answer is "keep FP32".
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from .errors import ConfigError, StoreError
from .recommend.report import num


def add_recommend_parser(subparsers) -> argparse.ArgumentParser:
    from .cli_run import add_model_args
    from .recommend.request import DEFAULT_TIME_BUDGET_S
    from .recommend.space import AXES

    p = subparsers.add_parser(
        "recommend", help="the fastest variant within a quality budget, searched over the whole space",
        description="Search precision, pruning, low-rank, distillation, backend and runtime settings for the "
                    "fastest variant whose quality drop stays within --budget points (and p50 within "
                    "--latency-budget); a candidate must beat FP32 by a confidence interval from interleaved "
                    "repeats, else the answer is to keep FP32.",
    )
    add_model_args(p, model_optional=True)
    p.add_argument("--budget", metavar="POINTS", help="allowed quality drop in points of the quality metric (required)")
    p.add_argument("--latency-budget", metavar="MS", help="the chosen variant's p50 must be at most this (ms)")
    p.add_argument("--batch-size", metavar="N", help="batch size the latency is measured at (default 1)")
    p.add_argument("--backend", metavar="B[,B...]", help="backends to search (default: every available one of "
                                                        "onnxruntime, pytorch)")
    p.add_argument("--device", metavar="DEVICE", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--time-budget", metavar="S", help=f"seconds the search may take (default {DEFAULT_TIME_BUDGET_S:g})")
    p.add_argument("--save", metavar="FILE", help="copy the chosen model file here (ONNX, or TorchScript for pytorch; "
                                                  "the suffix follows the file's format)")
    p.add_argument("--metric", metavar="NAME", help="quality metric (default: chosen from the model's outputs)")
    p.add_argument("--min-speedup", metavar="X", help="the chosen variant must be at least this much faster (default 1.03)")
    p.add_argument("--repeats", metavar="N", help="interleaved repeats in the final round (default 5, at least 3)")
    p.add_argument("--eval-samples", metavar="N", help="samples of the search and of the held-out split, each at most "
                                                       "(default 512)")
    p.add_argument("--axis", action="append", metavar="NAME=V1,V2",
                   help=f"restrict a search axis (repeatable; axes: {', '.join(AXES.names())}; e.g. prune=0)")
    p.add_argument("--db", metavar="PATH", help="results database (default $SLIMBENCH_DB or <data dir>/results.db)")
    p.add_argument("--sweep-id", type=int, help=argparse.SUPPRESS)  # background runner of a stored request
    p.set_defaults(func=cmd_recommend)
    return p


def request_from_args(args):
    from .cli_run import convert_field
    from .recommend.request import RecommendRequest

    if not args.model:
        raise ConfigError("recommend needs MODEL: a model file or sample:NAME")
    if args.budget is None:
        raise ConfigError("recommend needs --budget POINTS: the allowed quality drop in points (e.g. --budget 1)")
    kw: dict[str, Any] = {"budget_points": convert_field("budget", float, args.budget)}
    for flag, name, kind in (("latency_budget", "latency_budget_ms", float), ("batch_size", "batch_size", int),
                             ("time_budget", "time_budget_s", float), ("min_speedup", "min_speedup", float),
                             ("repeats", "repeats", int), ("eval_samples", "eval_samples", int)):
        value = getattr(args, flag)
        if value is not None:
            kw[name] = convert_field(flag.replace("_", " "), kind, value)
    backends = tuple(b.strip() for b in (args.backend or "").split(",") if b.strip())
    return RecommendRequest(model=args.model, backends=backends, device=args.device, data=args.data,
                            inputs=tuple(args.input or ()), batch_axis=tuple(args.batch_axis or ()), arch=args.arch, trust_pickle=bool(args.trust_pickle),
                            metric=args.metric, axes=tuple(args.axis or ()), **kw)


def save_chosen(summary: dict, dest: str | Path) -> Path:
    """Copy the chosen model file to ``dest`` (its suffix replaced by the file's format's when they
    differ); the path written."""
    from .recommend.artifact import copy_model_file

    art = summary.get("artifact")
    if not art:
        raise StoreError("no model file was written for the chosen variant (see the notes)")
    src = Path(art["path"])
    dest = Path(dest)
    if dest.suffix.lower() != src.suffix.lower():
        dest = dest.with_suffix(src.suffix)
    try:
        copy_model_file(src, dest)
    except OSError as exc:
        raise StoreError(f"cannot write --save {dest}: {exc.strerror or exc}") from None
    return dest


def cmd_recommend(args) -> int:
    from .cli_run import check_out_file, job_callbacks, job_timeout
    from .recommend import run_recommendation, run_stored_recommendation
    from .store import Store

    bar, _ = job_callbacks(args)
    if args.sweep_id is not None:  # background runner of a recommendation created by the dashboard
        try:
            run_stored_recommendation(Store(args.db, create=False), args.sweep_id, bar)
        finally:
            bar.close()
        return 0
    request = request_from_args(args)
    save = check_out_file(args.save, "--save") if args.save else None
    timeout = job_timeout(args.timeout)
    store = Store(args.db or None)
    try:
        summary = run_recommendation(request, store, progress=bar, timeout_s=timeout)
    finally:
        bar.close()
    if save is not None:
        summary["saved_to"] = str(save_chosen(summary, save))
    print(json.dumps(summary, indent=2, allow_nan=False) if args.json else format_text(summary))
    if save is not None and not args.json:
        print(f"saved: {summary['saved_to']}")
    return 0


def _speed(entry: dict) -> str:
    sig = entry.get("significance") or {}
    text = num(entry.get("speedup_vs_fp32"), ".2f") + "x"
    if sig.get("speedup_ci_low") is not None:
        text += f" [{sig['speedup_ci_low']:.2f}, {sig['speedup_ci_high']:.2f}]"
    return text


def candidates_table(summary: dict[str, Any]) -> str:
    """One line per measured candidate, fastest first."""
    from .cli_run import text_table

    rows = []
    entries = [c for c in summary["candidates"] if c.get("status") == "ok"]
    entries.sort(key=lambda c: (c.get("latency_ms") or {}).get("p50") or math.inf)
    for c in entries:
        lat = c.get("latency_ms") or {}
        sig = c.get("significance") or {}
        rows.append([c["variant"], c["backend"], num(c.get("quality_drop_points"), ".3g"),
                     num(c.get("holdout_drop_points"), ".3g"), num(lat.get("p50"), ".4g"), _speed(c),
                     str(lat.get("repeats") or 1), sig.get("verdict") or "-", (c.get("reason") or "")[:70]])
    return text_table(["variant", "backend", "drop (points)", "held-out drop", "p50 (ms)", "speedup vs FP32 [95 % CI]",
                       "repeats", "verdict", "outcome"], rows, right={2, 3, 4, 6})


def format_text(summary: dict[str, Any]) -> str:
    """The recommendation for people (the command line's output without ``--json``)."""
    ch = summary["chosen"]
    lat = ch.get("latency_ms") or {}
    budget = f"{summary['budget_points']:g} point(s) of {summary['metric']}"
    if summary.get("latency_budget_ms"):
        budget += f", p50 <= {summary['latency_budget_ms']:g} ms"
    lines = [f"recommendation for {summary['model']} (batch {summary['batch_size']}, {summary['device']}"
             f"{': ' + summary['cpu'] if summary.get('cpu') else ''}), budget {budget}",
             f"{'keep FP32' if summary['keep_fp32'] else 'chosen'}: {ch['variant']} on {ch['backend']}",
             f"  {summary['reason']}",
             f"  speedup vs FP32 on {ch['backend']}: {_speed(ch)}; p50 {num(lat.get('p50'), '.4g')} ms"
             + (f" [{lat['p50_ci_low']:.4g}, {lat['p50_ci_high']:.4g}]" if lat.get("p50_ci_low") is not None else ""),
             f"  quality change: {num(ch.get('quality_change_points'), '+.2f')} points on the search split, "
             f"held-out drop {num(ch.get('holdout_drop_points'), '.2f')} points; size "
             f"{num((ch.get('size_bytes') or 0) / 1024, '.1f')} KiB ({num(ch.get('size_vs_fp32'), '.2f')}x FP32)"]
    art = summary.get("artifact")
    if art:
        lines.append(f"  model file: {art['path']} ({art['format']}; {art['how_to_run']})")
    if summary["runners_up"]:
        lines.append("runners-up:")
        lines += [f"  {r['variant']} on {r['backend']}: {r.get('reason') or ''}" for r in summary["runners_up"]]
    lines.append("why the other families lost:")
    lines += [f"  {f['family']}: {f['reason']}" for f in summary["families"] if not f["won"]]
    lines.append(candidates_table(summary))
    counts = summary["counts"]
    sp = summary["splits"]
    lines.append(f"{counts['measured']} of {counts['candidates']} candidates measured ({counts['built']} builds, "
                 f"{counts['finalists']} in the final round) in {summary['elapsed_s']:.1f} s; "
                 f"strategy: {summary['strategy']}")
    lines.append("splits: " + ", ".join(f"{k} {v['name']} ({v['samples']} samples)" for k, v in sp.items()
                                        if isinstance(v, dict)))
    lines += [f"note: {n}" for n in summary.get("notes") or []]
    return "\n".join(lines)


__all__ = ["add_recommend_parser", "cmd_recommend", "request_from_args", "save_chosen", "format_text",
           "candidates_table"]

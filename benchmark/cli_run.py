"""The ``run``, ``results``, ``sweeps``, ``sensitivity``, ``search`` and ``report`` subcommands of
the ``slimbench`` CLI.

``slimbench run MODEL --precision fp32,int8-static --prune 0,0.5 --backend pytorch,onnxruntime
--batch-size 1,32`` expands the cross product, runs it (each variant in an isolated job, through
the per-device queue), prints a progress bar on stderr and a result table on stdout, stores every
row in the results database and, with ``--json PATH``, writes the rows as a JSON list.

A TOML file (``--config sweep.toml``) may hold the same settings as the flags (flags win)::

    model = "sample:digits-cnn"              # or model = "weights.pt" with arch = "digits-cnn"
    precision = ["fp32", "int8-static"]      # or "fp32,int8-static"
    prune = [0, 0.5]
    prune_kind = "structured"
    backend = ["pytorch", "onnxruntime"]
    batch_size = [1, 32]
    min_duration_s = 0.5
    executor = "ray"                         # optional: run on a Ray cluster
    targets = ["resource=lab_t4", "all"]     # with executor ray (default all)

Exit status: 0 when every run is ok or skipped, 1 when some run failed (or was lost with its
machine), 2 on bad input (one line on stderr, nothing stored), 130 when interrupted (finished rows
are kept; ``--resume ID``).

``slimbench sensitivity MODEL [--method int8|prune] [--max-layers N]`` prints the per-layer
sensitivity table (the Sensitivity page's analysis); ``slimbench search MODEL --budget POINTS``
runs the accuracy-aware INT8 search and prints every tried configuration and the chosen one (exit
1 when none met the budget). Both load the model only in a spawned job and hold the CPU queue
while they run. ``slimbench report --out report.html [--sweep ID]`` writes the History page's
self-contained HTML report.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import typing
from pathlib import Path
from typing import Any

from .config import QUALITY_METRICS, SweepConfig, field_label, help_text
from .errors import ConfigError, StoreError

EXIT_FAILED_RUNS = 1
EXIT_INTERRUPTED = 130

_CLI_ONLY = ("timeout", "db", "json", "plugins")


def _sweep_fields() -> list[tuple[Any, type, bool]]:
    """(field, value type, is a list) of every SweepConfig field, in declaration order."""
    hints = typing.get_type_hints(SweepConfig)
    out = []
    for f in dataclasses.fields(SweepConfig):
        hint = hints[f.name]
        is_list = typing.get_origin(hint) is tuple
        args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
        kind = args[0] if (is_list or args) else hint
        out.append((f, kind, is_list))
    return out


_FIELDS = {f.name: (f, kind, is_list) for f, kind, is_list in _sweep_fields()}
#: TOML keys -> SweepConfig fields: each field's name and its flag's name ("prune" for prune_ratios).
_TOML_KEYS = {**{name: name for name in _FIELDS},
              **{f.metadata["flag"].lstrip("-").replace("-", "_"): name
                 for name, (f, _, _) in _FIELDS.items() if "flag" in f.metadata}}
_WHAT = {**{name: field_label(f) for name, (f, _, _) in _FIELDS.items()},
         "max_layers": "max_layers", "max_trials": "max_trials", "budget": "accuracy budget"}


# --------------------------------------------------------------------------------------------
# parsers
# --------------------------------------------------------------------------------------------
def add_run_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "run", help="run a sweep: precisions x prune ratios x backends x batch sizes",
        description="Build each variant once in an isolated job, measure it on each backend and batch size, "
                    "store every row in the results database and print a table.",
    )
    p.add_argument("model", nargs="?", help=help_text(SweepConfig, "model") + " (optional with --resume/--config)")
    for f, kind, is_list in _FIELDS.values():
        if "flag" in f.metadata:
            _add_field_flag(p, f, kind, is_list)
    p.add_argument("--config", metavar="FILE.toml", help="read settings from a TOML file (flags override it)")
    p.add_argument("--db", metavar="PATH", help="results database (default $SLIMBENCH_DB or <data dir>/results.db)")
    p.add_argument("--json", metavar="PATH", help="also write the sweep's rows as a JSON list")
    p.add_argument("--timeout", metavar="S", help="per-step job timeout in seconds (default 300)")
    p.add_argument("--resume", metavar="SWEEP_ID", help="continue an interrupted sweep: run only its missing rows")
    p.add_argument("--plugin", action="append", metavar="MODULE|FILE.py",
                   help="import a plugin (e.g. a backend) in the runner and every job; also $SLIMBENCH_PLUGINS")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--sweep-id", type=int, help=argparse.SUPPRESS)  # run a pre-created sweep (background runner)
    p.set_defaults(func=cmd_run)
    return p


def _add_field_flag(p, f, kind, is_list: bool) -> None:
    """The flag of SweepConfig field ``f``: its help text, a comma list (or a repeated flag) for
    list fields, a switch for booleans, and the default where it says something."""
    text = f.metadata.get("help", "").replace("%", "%%")
    if kind is bool:
        p.add_argument(f.metadata["flag"], dest=f.name, action="store_true", default=None, help=text)
        return
    default = f.default
    if is_list:
        text += "; repeat for several" if f.metadata.get("repeat") else "; comma list"
        default = ",".join(_num_text(v) for v in default)
    if default not in (None, "", ()):
        text += f" (default {_num_text(default)})"
    metavar = f.metadata.get("metavar") or ("LIST" if is_list else "N" if kind is int else "X" if kind is float else "NAME")
    p.add_argument(f.metadata["flag"], dest=f.name, metavar=metavar, help=text,
                   action="append" if f.metadata.get("repeat") else "store")


def _num_text(value) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


_METRIC_HELP = ("show this quality metric instead of the one the rows were measured with: "
                + ", ".join(QUALITY_METRICS) + " (computed from each row's accuracy and fidelity to FP32)")


def _metric(value: str | None) -> str | None:
    """The ``--metric`` of ``results`` / ``report``, checked (one-line ConfigError otherwise)."""
    from .registry import one_of

    return None if value is None else one_of("quality metric", value.strip(), QUALITY_METRICS)


def add_results_parser(subparsers) -> argparse.ArgumentParser:
    """Adds ``results`` and ``sweeps``."""
    p = subparsers.add_parser("results", help="show stored results (table, CSV or JSON)")
    p.add_argument("--db", metavar="PATH", help="results database (default $SLIMBENCH_DB or <data dir>/results.db)")
    p.add_argument("--sweep", metavar="ID", action="append", help="sweep id (repeatable; default: the latest sweep)")
    p.add_argument("--all", action="store_true", help="rows of every sweep")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default table)")
    p.add_argument("--metric", metavar="METRIC", help=_METRIC_HELP)
    p.set_defaults(func=cmd_results)

    s = subparsers.add_parser("sweeps", help="list the stored sweeps and their status")
    s.add_argument("--db", metavar="PATH", help="results database (default $SLIMBENCH_DB or <data dir>/results.db)")
    s.add_argument("--cancel", metavar="ID", help="cancel a running or queued sweep")
    s.add_argument("--delete", metavar="ID", help="delete a finished sweep and its rows")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_sweeps)
    return p


def add_batch_axis_arg(p) -> None:
    """``--batch-axis NAME:AXIS|NAME:none``, repeatable, into ``args.batch_axis`` (help from SweepConfig)."""
    p.add_argument("--batch-axis", dest="batch_axis", action="append", metavar="NAME:AXIS|NAME:none",
                   help=help_text(SweepConfig, "batch_axis") + "; repeat for several inputs")


def add_model_args(p, model_optional: bool = False) -> None:
    p.add_argument("model", nargs="?" if model_optional else None,
                   help="model file (.onnx, .pt TorchScript/state_dict, .pt2) or sample:NAME")
    p.add_argument("--input", action="append", metavar="NAME:1x3x32x32[:float32]",
                   help="override an input's shape/dtype (repeat for several inputs)")
    add_batch_axis_arg(p)
    p.add_argument("--arch", metavar="NAME", help="built-in architecture of a state_dict file")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a fully pickled nn.Module (runs code from the file; loaded only inside the job)")
    p.add_argument("--data", metavar="NAME|PATH.npz",
                   help="evaluation/calibration data (default: the model's own dataset, else 64 random inputs)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--timeout", metavar="S", help="per-step job timeout in seconds (default 300)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_analysis_parsers(subparsers) -> None:
    """Adds ``sensitivity``, ``search`` and ``report``."""
    p = subparsers.add_parser(
        "sensitivity", help="per-layer sensitivity: the quality drop when only one layer is compressed",
        description="Compress one Conv/Gemm/MatMul layer at a time (INT8 or 50 % magnitude pruning) and print "
                    "the drop in percentage points of top-1 accuracy (or agreement with FP32), most sensitive first.",
    )
    add_model_args(p)
    p.add_argument("--method", default="int8", metavar="int8|prune", help="compress each layer with (default int8)")
    p.add_argument("--max-layers", metavar="N", help="test only the N layers with the most MACs (default all)")
    p.set_defaults(func=cmd_sensitivity)

    p = subparsers.add_parser(
        "search", help="accuracy-aware INT8 search: keep sensitive layers FP32 until the drop fits a budget",
        description="Full static INT8 first; while the drop exceeds the budget, keep the next most sensitive layer "
                    "in FP32. Prints every tried configuration and the chosen (fastest within budget) one.",
    )
    add_model_args(p)
    p.add_argument("--budget", metavar="POINTS", help="allowed quality drop in percentage points (required)")
    p.add_argument("--max-trials", metavar="N", help="at most this many configurations (default 10)")
    p.add_argument("--save", metavar="FILE.onnx", help="copy the chosen INT8 model to this file")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("report", help="write a self-contained HTML report of stored sweeps")
    p.add_argument("--db", metavar="PATH", help="results database (default $SLIMBENCH_DB or <data dir>/results.db)")
    p.add_argument("--sweep", metavar="ID", action="append", help="sweep id (repeatable; default: the latest sweep)")
    p.add_argument("--out", metavar="FILE.html", help="where to write the report (required)")
    p.add_argument("--latency-budget", metavar="MS", help="draw a latency budget line on the trade-off plot")
    p.add_argument("--metric", metavar="METRIC", help=_METRIC_HELP)
    p.set_defaults(func=cmd_report)


# --------------------------------------------------------------------------------------------
# building the SweepConfig
# --------------------------------------------------------------------------------------------
def convert_field(field: str, kind, value: Any) -> Any:
    """``value`` (flag text or a TOML value) as ``kind``; a SweepConfig field's number is checked
    against its bounds, any other number must be finite. One-line ConfigError otherwise."""
    what = _WHAT.get(field, field.rstrip("s").replace("_", " "))
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{what} must be true or false; got {value!r}")
    if kind is str:
        return str(value).strip()
    try:
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            number = int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
        else:
            number = float(value)
    except (TypeError, ValueError, OverflowError):
        noun = "an integer" if kind is int else "a number"
        raise ConfigError(f"{what} must be {noun}; got {value!r}") from None
    bounds = _FIELDS[field][0].metadata.get("bounds") if field in _FIELDS else None
    if bounds is not None:
        return bounds.check(what, number)
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number; got {value!r}")
    return number


def _as_list(field: str, value: Any) -> tuple:
    kind = _FIELDS[field][1]
    if isinstance(value, str):
        items = [v for v in (x.strip() for x in value.split(",")) if v]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    return tuple(convert_field(field, kind, v) for v in items)


def _field_value(field: str, value: Any) -> Any:
    """A SweepConfig field's value from flag text or TOML."""
    _, kind, is_list = _FIELDS[field]
    return _as_list(field, value) if is_list else convert_field(field, kind, value)


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """The settings in a sweep TOML file, keyed by SweepConfig field (plus CLI-only keys)."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {path} is not valid TOML: {exc}") from None
    if isinstance(data.get("sweep"), dict):
        data = {**{k: v for k, v in data.items() if k != "sweep"}, **data["sweep"]}
    out: dict[str, Any] = {}
    for key, value in data.items():
        norm = key.replace("-", "_")
        if norm in _CLI_ONLY:
            out[norm] = value
            continue
        field = _TOML_KEYS.get(norm)
        if field is None:
            allowed = ", ".join(sorted(set(_TOML_KEYS) | set(_CLI_ONLY)))
            raise ConfigError(f"config {path}: unknown key {key!r}; known keys: {allowed}")
        out[field] = _field_value(field, value)
    return out


def sweep_config_from_args(args) -> tuple[SweepConfig, dict[str, Any]]:
    """(SweepConfig, CLI-only settings) from parsed flags over an optional TOML file."""
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if getattr(args, "config", None):
        for k, v in read_toml(args.config).items():
            (extra if k in _CLI_ONLY else values)[k] = v
    for field in _FIELDS:
        value = getattr(args, field, None)
        if value is None:
            continue
        values[field] = tuple(value) if _FIELDS[field][0].metadata.get("repeat") else _field_value(field, value)
    for key in ("timeout", "db", "json"):
        if getattr(args, key, None) is not None:
            extra[key] = getattr(args, key)
    if not values.get("model"):
        raise ConfigError("no model given: pass MODEL (a file or sample:NAME), or model = \"...\" in --config")
    for field in ("batch_sizes", "prune_ratios", "precisions", "backends"):
        if field in values and not values[field]:
            raise ConfigError(f"{_FIELDS[field][0].metadata['flag']} is empty; give at least one value")
    return SweepConfig(**values), extra


def _timeout(extra: dict[str, Any]) -> float:
    from .sweep import DEFAULT_JOB_TIMEOUT_S

    if extra.get("timeout") is None:
        return DEFAULT_JOB_TIMEOUT_S
    value = convert_field("timeout", float, extra["timeout"])
    if value <= 0:
        raise ConfigError(f"timeout must be > 0 s; got {extra['timeout']!r}")
    return value


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    return format(value, spec)


def quality_frame(results, metric: str | None = None):
    """The rows as a results frame with ``speedup_vs_fp32`` (computed for rows stored without it) and
    the quality columns of one metric (the rows' own, or ``metric``); see :mod:`benchmark.measure.derived`."""
    from .measure import derived
    from .results import results_to_frame

    frame = results_to_frame(results)
    return derived.quality_frame(derived.add_speedup(frame), metric) if len(frame) else frame


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def json_rows(results, metric: str | None = None) -> list[dict[str, Any]]:
    """Each row's JSON with ``quality_drop_points`` and ``speedup_vs_fp32`` (computed where the row
    was stored without it); with ``metric``, ``quality`` holds that metric's value for the row."""
    from .results import jsonable

    frame = quality_frame(results, metric)
    out = []
    for r, (_, row) in zip(results, frame.iterrows()):
        data = r.to_json()
        if metric is not None and (data.get("quality") or {}).get("metric") != metric:
            data["quality"] = None if not _given(row["quality_value"]) else {
                "metric": metric, "value": row["quality_value"], "higher_is_better": row["quality_higher_is_better"],
                "reference": row["quality_reference"]}
        data["quality_drop_points"] = row["quality_drop_points"]
        data["speedup_vs_fp32"] = row["speedup_vs_fp32"]
        out.append(jsonable(data))
    return out


def format_table(results, metric: str | None = None) -> str:
    """A plain-text table of results, units in the headers: p50 latency, throughput (batch / mean),
    one quality metric (the rows' own, or ``metric``) with its drop in points, speedup vs FP32 (p50)
    and whether the timing was stable; lines below it name the metric and the unstable runs."""
    from .measure.quality import get_metric
    from .plots import timing_text

    frame = quality_frame(results, metric)
    metric = next((m for m in frame.get("quality_metric", []) if isinstance(m, str)), metric)
    m = get_metric(metric) if metric else None
    headers = ["variant", "backend", "batch", "status", "p50 (ms)", "p95 (ms)", "cv", "throughput (samples/s)",
               m.title if m else "quality", "drop (points)", "speedup (x)", "size (KiB)", "MACs (M)", "timing", "note"]
    rows, unstable = [], []
    for r, (_, row) in zip(results, frame.iterrows()):
        lat = r.latency_ms or {}
        value = row.get("quality_value") if m else None
        timing = timing_text(row) or "-"
        if timing.startswith("unstable"):
            where = f" [{target_label(r)}]" if r.target else ""
            unstable.append(f"unstable timing: {r.variant} on {r.backend}{where}, batch {r.batch_size}: "
                            f"{timing.split(': ', 1)[-1]}")
            timing = "UNSTABLE"
        note = r.error or distill_note(r.compression)
        rows.append([
            r.variant, r.backend, str(r.batch_size), r.status,
            _fmt(lat.get("p50"), ".3f"), _fmt(lat.get("p95"), ".3f"), _fmt(lat.get("cv"), ".2f"),
            _fmt(r.throughput_sps, ".1f"), _fmt(value * m.scale if _given(value) else None, ".5f" if m and m.scale == 1 else ".2f"),
            _fmt(row.get("quality_drop_points") if _given(row.get("quality_drop_points")) else None, "+.2f"),
            _fmt(row.get("speedup_vs_fp32") if _given(row.get("speedup_vs_fp32")) else None, ".2f"),
            _fmt(None if r.size_bytes is None else r.size_bytes / 1024, ".1f"),
            _fmt(None if r.macs is None else r.macs / 1e6, ".3f"), timing,
            note if len(note) <= 60 else note[:57] + "...",
        ])
    right = {2, 4, 5, 6, 7, 8, 9, 10, 11, 12}
    if any(r.target for r in results):  # a sweep across machines: say where each row ran
        headers.insert(3, "target")
        for row, r in zip(rows, results):
            row.insert(3, target_label(r))
        right = {i + 1 if i >= 3 else i for i in right}
    lines = [text_table(headers, rows, right=right)]
    if m:
        lines.append(f"quality: {m.label}{'' if m.higher_is_better else ' (lower is better)'}; drop = 100 x "
                     f"(reference - value){', sign flipped' if not m.higher_is_better else ''}, + = worse. "
                     "speedup = FP32 p50 / p50 on the same backend and batch; throughput = batch / mean latency")
    return "\n".join(lines + unstable)


def target_label(result) -> str:
    """Where a row ran, for people: the Ray node's label (host and node id) or the target itself."""
    node = (result.env or {}).get("ray_node") or {}
    if node.get("label") and result.target.startswith("resource="):
        return f"{result.target} @ {node['label']}"
    return node.get("label") or result.target or "local"


def distill_note(compression) -> str:
    """``distilled: top1_agreement 40.6 -> 98.4 %`` for a row whose variant was distilled, else ""."""
    from .measure.quality import METRICS
    from .results import distill_summary

    d = distill_summary(compression)
    metric = METRICS.get(d["distill_metric"] or "")
    if metric is None or d["distill_before"] is None or d["distill_after"] is None:
        return ""
    before, after = metric.scale * d["distill_before"], metric.scale * d["distill_after"]
    digits = ".1f" if metric.scale != 1.0 else ".4f"
    return f"distilled: {metric.name} {before:{digits}} -> {after:{digits}}{' ' + metric.unit if metric.unit else ''}"


def print_explanations(results) -> None:
    """The measured explanations of the rows (and this device's peaks), under a ``why`` heading."""
    from .explain import explanation_lines

    lines = explanation_lines(results)
    if lines:
        print("\nwhy (measured):")
        print("\n".join(f"- {line}" for line in lines))


class _ProgressBar:
    """A one-line progress bar on stderr (a TTY), or one line per finished run otherwise."""

    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_len = 0
        self.last_draw = 0.0
        self.started = time.monotonic()

    def __call__(self, message: str, fraction: float | None) -> None:
        if self.quiet:
            return
        if not self.tty:
            if message.rstrip().endswith((": ok", ": skipped")) or ": failed" in message or message.startswith("done"):
                print(message, file=self.stream, flush=True)
            return
        now = time.monotonic()
        if now - self.last_draw < 0.1 and fraction != 1.0:
            return
        self.last_draw = now
        frac = fraction or 0.0
        width = 24
        filled = int(round(frac * width))
        text = f"[{'#' * filled}{'.' * (width - filled)}] {100 * frac:5.1f}% {now - self.started:6.1f}s {message}"
        cols = 120
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, AttributeError):
            pass
        text = text[: cols - 1]
        self.stream.write("\r" + text + " " * max(0, self.last_len - len(text)))
        self.stream.flush()
        self.last_len = len(text)

    def close(self) -> None:
        if self.tty and self.last_len and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def _write_json(path: str | os.PathLike, results) -> None:
    path = Path(path)
    try:
        path.write_text(json.dumps(json_rows(results), indent=2, allow_nan=False))
    except OSError as exc:
        raise StoreError(f"cannot write JSON results to {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from .jobs import PLUGINS_ENV, plugin_list
    from .store import Store
    from .sweep import run_stored_sweep, run_sweep

    if args.plugin:
        os.environ[PLUGINS_ENV] = ",".join(plugin_list(args.plugin))
    bar = _ProgressBar(quiet=args.quiet)
    if args.sweep_id is not None:  # background runner of a sweep created by start_sweep_background
        store = Store(args.db, create=False)
        try:
            run_stored_sweep(store, args.sweep_id, bar, job_timeout_s=float(args.timeout) if args.timeout else None)
        finally:
            bar.close()
        return 0
    if args.resume is not None:
        sweep = convert_field("resume", int, args.resume)
        store = Store(args.db or None)
        extra = {"timeout": args.timeout, "json": args.json}
        if extra["json"]:
            check_out_file(extra["json"], "--json")
        timeout = _timeout(extra) if args.timeout else None
        try:
            kwargs = {"job_timeout_s": timeout} if timeout else {}
            sweep_id = run_sweep(None, store, bar, resume_sweep_id=sweep, **kwargs)
        finally:
            bar.close()
    else:
        cfg, extra = sweep_config_from_args(args)
        timeout = _timeout(extra)
        if extra.get("json"):
            check_out_file(extra["json"], "--json")
        store = Store(extra.get("db") or None)  # an unwritable path fails here, before any work
        try:
            sweep_id = run_sweep(cfg, store, bar, job_timeout_s=timeout)
        finally:
            bar.close()
    results = store.get_results(sweep_id)
    print(f"sweep {sweep_id} ({store.path})")
    print(format_table(results))
    print_explanations(results)
    if extra.get("json"):
        _write_json(extra["json"], results)
    return EXIT_FAILED_RUNS if any(r.status in ("failed", "interrupted") for r in results) else 0


def cmd_results(args) -> int:
    from .store import Store

    metric = _metric(args.metric)
    store = Store(args.db, create=False)
    if args.all:
        sweep_ids = None
    elif args.sweep:
        sweep_ids = [convert_field("sweep id", int, s) for s in args.sweep]
        for sid in sweep_ids:
            store.get_sweep(sid)  # unknown id -> one-line error naming the recent ones
    else:
        latest = store.list_sweeps(limit=1)
        if not latest:
            print(f"no sweeps in {store.path} yet; run `slimbench run MODEL` first", file=sys.stderr)
            return 0
        sweep_ids = [latest[0].id]
    results = store.get_results(sweep_ids)
    if args.format == "json":
        print(json.dumps(json_rows(results, metric), indent=2, allow_nan=False))
    elif args.format == "csv":
        quality_frame(results, metric).to_csv(sys.stdout, index=False)
    else:
        if sweep_ids and len(sweep_ids) == 1:
            rec = store.get_sweep(sweep_ids[0])
            print(f"sweep {rec.id}: {rec.model} ({rec.status}, {rec.created_at})")
        print(format_table(results, metric))
        print_explanations(results)
    return 0


def cmd_sweeps(args) -> int:
    from .results import FINISHED_STATUSES
    from .store import Store

    store = Store(args.db, create=False)
    if args.cancel is not None:
        status = store.request_cancel(convert_field("sweep id", int, args.cancel))
        print(f"sweep {args.cancel}: {status}")
        return 0
    if args.delete is not None:
        sid = convert_field("sweep id", int, args.delete)
        rec = store.get_sweep(sid)
        if rec.active:
            raise ConfigError(f"sweep {sid} is {rec.status}; cancel it first (slimbench sweeps --cancel {sid})")
        n = store.delete_sweep(sid)
        print(f"deleted sweep {sid} and its {n} rows")
        return 0
    store.mark_interrupted()
    sweeps = store.list_sweeps()
    if args.json:
        print(json.dumps([s.to_dict() for s in sweeps], indent=2, default=str))
        return 0
    if not sweeps:
        print(f"no sweeps in {store.path}")
        return 0
    print(f"{'id':>4}  {'created (UTC)':19}  {'status':11}  {'ok':>4} {'fail':>4} {'skip':>4} {'left':>4}  model / progress")
    for s in sweeps:
        c = s.counts
        left = sum(v for k, v in c.items() if k not in FINISHED_STATUSES)
        extra = f"  {s.progress}" if s.active and s.progress else ""
        if s.error and s.status in ("failed", "interrupted"):
            extra = f"  {s.error}"
        print(f"{s.id:>4}  {s.created_at[:19]:19}  {s.status:11}  {c.get('ok', 0):>4} {c.get('failed', 0):>4} "
              f"{c.get('skipped', 0):>4} {left:>4}  {s.model}{extra}")
    return 0


def check_out_file(path: str | os.PathLike, flag: str) -> Path:
    """Fail before any work when ``path`` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file path")
    if not path.parent.exists():
        raise ConfigError(f"{flag} {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"{flag} {path}: not writable")
    return path


def _write_text(path: Path, text: str, flag: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {flag} {path}: {exc.strerror or exc}") from None


def job_timeout(value) -> float:
    from .analysis import DEFAULT_JOB_TIMEOUT_S

    if value is None:
        return DEFAULT_JOB_TIMEOUT_S
    seconds = convert_field("timeout", float, value)
    if seconds <= 0:
        raise ConfigError(f"timeout must be > 0 s; got {value!r}")
    return seconds


def job_callbacks(args):
    bar = _ProgressBar(quiet=args.quiet or args.json)

    def on_wait(ahead: int) -> None:
        bar(f"queued behind {ahead} job(s) on cpu" if ahead else "waiting for the cpu", 0.0)

    return bar, on_wait


def _pct(value) -> str:
    return _fmt(None if value is None else 100 * value, ".2f")


def text_table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = []
    for row in [headers] + rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_sensitivity(res: dict) -> str:
    """The ranked sensitivity table of :func:`benchmark.analysis.sensitivity_isolated`."""
    attrs = res.get("attrs") or {}
    metric = "top-1 accuracy" if attrs.get("metric") == "accuracy" else "top-1 agreement with FP32"
    rows = [[str(i + 1), r["layer"], r["op_type"], _fmt(None if r["macs_share"] is None else 100 * r["macs_share"], ".2f"),
             _pct(r["metric_before"]), _pct(r["metric_after"]),
             "failed (NaN/Inf)" if r["delta"] is None else format(r["delta"], ".2f")]
            for i, r in enumerate(res["table"])]
    lines = [f"{res['method']} sensitivity of {res['model']}: {res['data_note']}",
             f"metric: {metric}; drop = (before - after) x 100 in percentage points, positive = worse; "
             "MACs share = the layer's multiply-adds over all Conv/Gemm/MatMul layers",
             text_table(["rank", "layer", "op", "MACs share (%)", "before (%)", "after (%)", "drop (points)"],
                         rows, {0, 3, 4, 5, 6})]
    if attrs.get("layers_not_tested"):
        lines.append(f"not tested: {attrs['layers_not_tested']} smaller layer(s) (--max-layers)")
    lines += [f"note: {w}" for w in attrs.get("warnings") or []]
    return "\n".join(lines)


def format_search(res: dict) -> str:
    """Every tried configuration of the accuracy-aware search, and the chosen one."""
    metric = "accuracy" if res["metric"] == "accuracy" else "agreement with FP32"
    rows = [[str(r["trial"]), str(r["n_excluded"]), _pct(r["metric"]),
             "failed (NaN/Inf)" if r["delta"] is None else format(r["delta"], ".2f"),
             _fmt(r["size_bytes"] / 1024, ".1f"), _fmt(r["latency_p50_ms"], ".3f"), _fmt(r["speedup_vs_fp32"], ".2f"),
             "yes" if r["meets_budget"] else "no", ", ".join(r["excluded_layers"]) or "-"]
            for r in res["tried"]]
    lines = [f"accuracy-aware INT8 search of {res['model']}, budget {res['budget_points']:g} points: {res['data_note']}",
             f"FP32 reference: {metric} {_pct(res['reference_metric'])} %, p50 {res['reference_latency_p50_ms']:.3f} ms, "
             f"size {res['reference_size_bytes'] / 1024:.1f} KiB (p50: median latency of one batch of up to 8 samples, "
             "ONNX Runtime CPU, 1 thread)",
             text_table(["trial", "FP32 layers", f"{metric} (%)", "drop (points)", "size (KiB)", "p50 (ms)",
                          "speedup (x)", "within budget", "layers kept FP32"], rows, {0, 1, 2, 3, 4, 5, 6})]
    ch = res["chosen"]
    if ch is None:
        lines.append(f"chosen: none - no tried configuration stayed within {res['budget_points']:g} points; "
                     "raise --budget or --max-trials")
    else:
        kept = ", ".join(ch["excluded_layers"]) or "none (full INT8)"
        cfg = res["chosen_config"]
        lines.append(f"chosen: trial {ch['trial']}, drop {ch['delta']:.2f} points, {ch['speedup_vs_fp32']:.2f}x FP32 speed, "
                     f"kept in FP32: {kept}")
        lines.append(f"rebuild: precision={cfg['precision']}"
                     + (f" exclude_layers={','.join(cfg['exclude_layers'])}" if cfg["exclude_layers"] else ""))
        lines.append(f"model: {ch['onnx_path']}")
    lines += [f"note: {w}" for w in res.get("warnings") or []]
    return "\n".join(lines)


def cmd_sensitivity(args) -> int:
    from .analysis import sensitivity_isolated

    max_layers = None if args.max_layers is None else convert_field("max_layers", int, args.max_layers)
    timeout = job_timeout(args.timeout)
    bar, on_wait = job_callbacks(args)
    try:
        res = sensitivity_isolated(args.model, args.input, args.arch, args.trust_pickle, method=args.method,
                                   data=args.data, max_layers=max_layers, on_progress=bar, on_wait=on_wait,
                                   timeout_s=timeout, batch_axes=args.batch_axis)
    finally:
        bar.close()
    print(json.dumps(res, indent=2, allow_nan=False) if args.json else format_sensitivity(res))
    return 0


def cmd_search(args) -> int:
    import shutil

    from .analysis import search_isolated

    if args.budget is None:
        raise ConfigError("search needs --budget POINTS: the allowed quality drop in percentage points (e.g. --budget 1)")
    budget = convert_field("budget", float, args.budget)
    trials = 10 if args.max_trials is None else convert_field("max_trials", int, args.max_trials)
    timeout = job_timeout(args.timeout)
    save = check_out_file(args.save, "--save") if args.save else None
    bar, on_wait = job_callbacks(args)
    try:
        res = search_isolated(args.model, args.input, args.arch, args.trust_pickle, budget_points=budget,
                              max_trials=trials, data=args.data, on_progress=bar, on_wait=on_wait, timeout_s=timeout,
                              batch_axes=args.batch_axis)
    finally:
        bar.close()
    if save is not None and res["chosen"] is not None:
        try:
            shutil.copyfile(res["chosen"]["onnx_path"], save)
        except OSError as exc:
            raise StoreError(f"cannot write --save {save}: {exc.strerror or exc}") from None
        res["chosen"]["saved_to"] = str(save)
    print(json.dumps(res, indent=2, allow_nan=False) if args.json else format_search(res))
    if save is not None and res["chosen"] is not None and not args.json:
        print(f"saved: {save}")
    return 0 if res["chosen"] is not None else EXIT_FAILED_RUNS


def cmd_report(args) -> int:
    from . import plots
    from .report import build_report
    from .results import results_to_frame
    from .store import Store

    if not args.out:
        raise ConfigError("report needs --out FILE.html: where to write the report")
    out = check_out_file(args.out, "--out")
    metric = _metric(args.metric)
    budget = None
    if args.latency_budget is not None:
        budget = convert_field("latency budget", float, args.latency_budget)
        if budget <= 0:
            raise ConfigError(f"latency budget must be > 0 ms; got {args.latency_budget!r}")
    store = Store(args.db, create=False)
    if args.sweep:
        sweep_ids = sorted({convert_field("sweep id", int, s) for s in args.sweep})
    else:
        latest = store.list_sweeps(limit=1)
        if not latest:
            raise ConfigError(f"no sweeps in {store.path} yet; run `slimbench run MODEL` first")
        sweep_ids = [latest[0].id]
    records = [store.get_sweep(sid) for sid in sweep_ids]  # an unknown id -> one line naming the recent ones
    results = store.get_results(sweep_ids)
    env = next((r.env for r in results if r.env), None)
    html = build_report(results_to_frame(results), samples=plots.latency_samples_frame(results), sweeps=records,
                        environment=env, latency_budget_ms=budget, metric=metric,
                        title=f"Slimbench report: sweeps {', '.join(map(str, sweep_ids))}")
    _write_text(out, html, "--out")
    print(f"wrote {out} ({len(results)} rows of sweep(s) {', '.join(map(str, sweep_ids))}, {len(html) / 1e6:.1f} MB)")
    return 0


__all__ = ["add_run_parser", "add_results_parser", "add_analysis_parsers", "cmd_run", "cmd_results", "cmd_sweeps",
           "cmd_sensitivity", "cmd_search", "cmd_report", "format_table", "json_rows", "quality_frame", "format_sensitivity", "format_search",
           "read_toml", "sweep_config_from_args"]

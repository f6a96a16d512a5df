"""The ``slimbench`` command line (same as ``python -m benchmark``).

Subcommands: ``info`` (what a model is: inputs, params, MACs/FLOPs, size), ``run`` (a sweep),
``results`` / ``sweeps`` (what the database holds), ``report`` (an HTML report of sweeps),
``sensitivity`` / ``search`` (per-layer sensitivity, accuracy-aware INT8 search), ``recommend``
(the fastest variant within a quality budget, searched over the whole space), ``profile``
(per-layer time, MACs and achieved throughput of one variant), ``samples``, ``env``. Errors print
one line and exit with status 2; ``--debug`` shows the traceback. ``info`` loads the model in a
separate process, like every other command, so a file's code or a crash never runs in the CLI itself.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback

from .cli_run import add_batch_axis_arg
from .errors import BenchmarkError, memory_error
from .inspection import inspect_isolated

EXIT_ERROR = 2


def _human(n: float | int | None, unit: str = "") -> str:
    if n is None:
        return "n/a"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3f} {suffix}{unit}"
    return f"{n} {unit}".strip()


def _cmd_info(args) -> int:
    info = inspect_isolated(args.model, args.input, args.arch, args.trust_pickle, batch_size=args.batch_size,
                            batch_axes=args.batch_axis, data=args.data)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model        {info['model']}  ({info['format']})")
    for s in info["inputs"]:
        axis = "no batch axis: fed as given" if s["batch_axis"] is None else f"batch axis {s['batch_axis']}"
        print(f"input        {s['name']}: {'x'.join(map(str, s['shape'])) or 'scalar'} {s['dtype']}  ({axis})")
    for s in info["outputs"]:
        print(f"output       {s['name']}: {'x'.join(map(str, s['shape']))} {s['dtype']}")
    print(f"params       {info['params']:,} ({_human(info['params'])})")
    print(f"MACs         {info['macs']:,} ({_human(info['macs'], 'MAC')}) at batch {info['batch_size']}")
    print(f"FLOPs        {info['flops']:,} ({_human(info['flops'], 'FLOP')}) = 2 x MACs")
    size = info["size_bytes"]
    print(f"size         {size:,} bytes ({size / 2**20:.2f} MiB)" if size is not None else "size         n/a")
    print(f"sparsity     {100 * info['sparsity']:.2f} % zero weights")
    skipped = ", ".join(f"{k} x{v}" for k, v in info["unsupported_ops"].items()) or "none"
    print(f"not counted  {skipped}  (counter: {info['counter']})")
    for note in info["notes"]:
        print(f"note         {note}")
    return 0


def _cmd_samples(args) -> int:
    from .models.samples import get_sample, sample_names

    for name in sample_names():
        spec = get_sample(name)
        acc = (spec.metrics or {}).get("test_accuracy")
        acc_text = f"test accuracy {100 * acc:.2f} %" if acc is not None else ""
        print(f"sample:{name:22s} dataset={spec.dataset:14s} {acc_text}  {spec.description}")
    return 0


def _cmd_env(args) -> int:
    from .backends import backend_status
    from .measure.environment import collect_environment

    env = collect_environment()
    status = backend_status()
    if args.json:
        print(json.dumps({"environment": env, "backends": status}, indent=2, default=str))
        return 0
    for k, v in env.items():
        print(f"{k:22s} {v}")
    for row in status:
        state = "available" if row["available"] else f"unavailable: {row['reason']}"
        print(f"backend {row['backend']:15s} {row['device']:5s} {state}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimbench",
        description="Benchmark compressed deep-learning models: precision, pruning, low-rank and distillation "
                    "variants on PyTorch, ONNX Runtime and TensorRT.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="inputs, outputs, params, MACs/FLOPs, size and sparsity of a model")
    p.add_argument("model", help="model file (.onnx, .pt TorchScript/state_dict, .pt2) or sample:NAME")
    p.add_argument("--input", action="append", metavar="NAME:1x3x32x32[:float32]",
                   help="override an input's shape/dtype (repeat for several inputs; a bare 1x3x32x32 for a "
                        "single-input model)")
    add_batch_axis_arg(p)
    p.add_argument("--data", metavar="NAME|PATH.npz",
                   help="a dataset or .npz of model inputs: its first feed fills the dims the model leaves open")
    p.add_argument("--arch", help="built-in architecture for a state_dict file")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a fully pickled nn.Module (runs code from the file: only for files you trust)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size the MACs are counted at (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("samples", help="list the built-in sample models")
    p.set_defaults(func=_cmd_samples)

    p = sub.add_parser("env", help="machine, versions and which backends/devices are available (and why not)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_env)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """Sweep and analysis commands (run, results, sweeps, sensitivity, search, report) live in benchmark.cli_run;
    profile in benchmark.cli_profile, recommend in benchmark.cli_recommend."""
    from . import cli_profile, cli_recommend, cli_run

    cli_run.add_run_parser(sub)
    cli_run.add_results_parser(sub)
    cli_run.add_analysis_parsers(sub)
    cli_profile.add_profile_parser(sub)
    cli_recommend.add_recommend_parser(sub)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BenchmarkError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (MemoryError, RuntimeError) as exc:
        mapped = memory_error(exc, f"running `slimbench {args.command}`")
        if mapped is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"error: {mapped}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return _closed_stdout()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _closed_stdout() -> int:
    """The reader of stdout went away (``slimbench info ... | head``): stop quietly, as Unix tools do."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    os.close(devnull)
    return 128 + 13  # killed by SIGPIPE, by convention


if __name__ == "__main__":
    sys.exit(main())

"""Per-layer profiles: where the time of one variant on one backend goes, joined with its MACs.

An untimed profiling pass, separate from the timed loop (profilers slow every run):

- **ONNX Runtime**: a second session of the same file with the same settings and session profiling
  on (the backend's ``profile_file_prefix`` option); the Chrome-trace JSON it writes has one event
  per node run (``<node>_kernel_time``) with the kernel's op type (after ONNX Runtime's fusions:
  ``QLinearConv``, ``FusedConv``, an NCHWc ``Conv``...), its execution provider and input types.
- **PyTorch**: the same session, in two passes over every module of the FLOPs table (and every leaf
  module). First forward hooks time each module with ``perf_counter_ns`` (its sub-modules' time
  excluded); work outside any module (functional ops in ``forward``) is the row
  ``(outside modules)`` = the run's wall time minus its outermost modules' time. Then
  ``torch.profiler`` (modules wrapped in ``record_function`` ranges) names each module's heaviest
  operator (``aten::mkldnn_convolution``, ``quantized::conv2d_relu``...) and gives the operator
  table (``ops``). Layer times are not taken from the profiler pass: its per-operator
  instrumentation slowed the digits CNN's runs by 7-20 %, hooks alone by 2-5 %.

Conventions:

- ``time_ms`` of a layer: the median over the profiled runs of its time in one run (the first runs
  are warm-up and not counted); ``time_mean_ms`` the mean. ``layers_total_ms`` = the sum of the
  medians; ``end_to_end_p50_ms`` comes from a normal timed run
  (:func:`benchmark.measure.latency.measure_latency`) of a session without profiling, made before
  the profiling pass; ``gap_ms`` = end-to-end - layers total (the runtime's own work between
  kernels, or a profiler's overhead when negative). ``layers_total_mean_ms`` /
  ``end_to_end_mean_ms`` are the same with means (outliers included). The timed run and the
  profiling pass happen one after the other: on a CPU shared with other work they see different
  load (on a 2-core machine at load 3 the same ResNet-18 INT8 session ran at 4.9 and 6.5 ms p50 a
  few seconds apart), so compare them on a quiet machine.
- ``name`` is the node (ONNX) or module (PyTorch) name of the FLOPs table
  (:func:`benchmark.measure.flops.count_onnx` / :func:`~benchmark.measure.flops.count_model`,
  counted at the profiled batch size), which the sensitivity table uses too. ONNX Runtime renames
  what it fuses (``relu_nchwc``, ``node_Conv_0_token_1``, ``<node>/MatMulScaleFusion/``): a runtime
  node is mapped back to the graph node of the same name after those suffixes are removed, or to the
  node that produces the tensor of that name; a convolution / matrix-product kernel mapped to a
  BatchNorm or activation climbs to the Conv / MatMul / Gemm it was fused with. Runtime nodes with no
  graph counterpart (layout ``Transpose`` / ``Reorder*``, ``SkipLayerNormalization``, inserted Q/DQ)
  are rows of their own with ``in_graph`` False and no MACs.
- ``precision`` of a layer: ``int8`` for integer kernels (QLinear*, MatMulInteger, ConvInteger,
  QGemm...; quantized PyTorch modules), ``quant`` for Quantize/DequantizeLinear, else the dtype of
  its floating inputs (``fp32``, ``fp16``, ``bf16``). ``int8_kernel`` (MAC layers): whether the
  multiply-adds ran in an integer kernel; ``quantized_in_graph``: whether the file quantizes it
  (Q/DQ around it, or an integer op). A layer quantized in the file that ran a float kernel means
  ONNX Runtime executed DequantizeLinear -> float op.
- ``gmacs_per_s`` = layer MACs / layer time; ``peak_fraction`` = that over this device's GEMM peak
  of the layer's precision (:mod:`benchmark.measure.roofline`); ``time_share`` / ``mac_share``: the
  layer's share of ``layers_total_ms`` / of all MACs.
"""
from __future__ import annotations

import json
import re
import statistics
import time
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..errors import ConfigError, MeasurementError

#: Runtime kernels that compute in integers.
INT8_KERNELS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QAttention", "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat", "QOrderedMatMul", "DynamicQuantizeLSTM", "NhwcQLinearConv", "QEmbedLayerNormalization",
})
#: Runtime kernels that do the multiply-adds of a Conv / MatMul / Gemm (float or integer).
MAC_KERNELS = frozenset({"Conv", "FusedConv", "NhwcFusedConv", "NhwcConv", "ConvTranspose", "MatMul", "FusedMatMul",
                         "Gemm", "FusedGemm", "Attention", "MultiHeadAttention", "MatMulNBits", "Einsum"}) | INT8_KERNELS
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
#: Graph ops ONNX Runtime fuses into a preceding Conv / MatMul (a kernel mapped to one climbs past it).
_FUSED_AFTER_MAC = frozenset({"BatchNormalization", "Relu", "Clip", "Add", "Sum", "Sigmoid", "Mul", "HardSigmoid",
                              "LeakyRelu", "Tanh", "HardSwish", "QuantizeLinear", "DequantizeLinear"})
_RUNTIME_SUFFIXES = (re.compile(r"_token_\d+$"), re.compile(r"_nchwc$"), re.compile(r"/[A-Za-z]+Fusion/?$"))
_DTYPES = {"float": "fp32", "float16": "fp16", "bfloat16": "bf16", "double": "fp64", "uint8": "int8",
           "int8": "int8"}
OUTSIDE_MODULES = "(outside modules)"
WARMUP_RUNS = 2
#: Runs of the PyTorch operator pass (torch.profiler); layer times come from the hook-timed pass.
PROFILER_RUNS = 10


# --------------------------------------------------------------------------------------------
# ONNX Runtime traces
# --------------------------------------------------------------------------------------------
@dataclass
class RuntimeNode:
    """One runtime node of a profile: its kernel, provider, input dtypes and time in each run (ms)."""

    name: str
    kernel: str
    provider: str | None = None
    input_types: list[str] = field(default_factory=list)
    per_run_ms: dict[int, float] = field(default_factory=dict)


def parse_ort_trace(events: list[dict], skip_runs: int = WARMUP_RUNS) -> tuple[list[RuntimeNode], list[float]]:
    """(runtime nodes in first-seen order, each counted run's wall time in ms) from ONNX Runtime's
    profile events. Node events (``cat == "Node"``, ``<name>_kernel_time``) are assigned to the
    ``model_run`` they fall in; the first ``skip_runs`` runs are warm-up and dropped."""
    runs = sorted((int(e["ts"]), int(e["ts"]) + int(e["dur"])) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(runs) <= skip_runs:
        raise MeasurementError(f"the ONNX Runtime profile holds {len(runs)} model run(s); need more than {skip_runs}")
    starts = [r[0] for r in runs]
    nodes: dict[str, RuntimeNode] = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        idx = bisect_right(starts, int(e["ts"])) - 1
        if idx < skip_runs or int(e["ts"]) > runs[idx][1]:
            continue
        args = e.get("args") or {}
        node_name = name[: -len("_kernel_time")]
        node = nodes.get(node_name)
        if node is None:
            types = [next(iter(t)) for t in args.get("input_type_shape") or [] if isinstance(t, dict) and t]
            node = nodes[node_name] = RuntimeNode(node_name, str(args.get("op_name", "?")), args.get("provider"), types)
        node.per_run_ms[idx - skip_runs] = node.per_run_ms.get(idx - skip_runs, 0.0) + int(e["dur"]) / 1000.0
    return list(nodes.values()), [(end - start) / 1000.0 for start, end in runs[skip_runs:]]


def median_per_run(per_run_ms: dict[int, float], n_runs: int) -> float:
    """Median over ``n_runs`` runs of a node's time per run (0 in runs where it did not run)."""
    values = [per_run_ms.get(i, 0.0) for i in range(n_runs)]
    return float(statistics.median(values)) if values else 0.0


def layer_times(per_run_ms: dict[int, float], n_runs: int) -> dict[str, float]:
    """``time_ms`` (median per run, see :func:`median_per_run`) and ``time_mean_ms`` (mean per run)."""
    return {"time_ms": median_per_run(per_run_ms, n_runs),
            "time_mean_ms": sum(per_run_ms.values()) / n_runs if n_runs else 0.0}


def _integer_kernel(kernel: str) -> bool:
    """Whether a runtime kernel (or graph op) computes in integers."""
    return kernel in INT8_KERNELS or kernel.startswith("QLinear")


def kernel_precision(kernel: str, input_types: Iterable[str]) -> str:
    """``int8`` / ``quant`` / ``fp32`` / ``fp16`` / ``bf16`` / ``other`` for a runtime kernel."""
    if _integer_kernel(kernel):
        return "int8"
    if kernel in QDQ_OPS:
        return "quant"
    names = [_DTYPES.get(t) for t in input_types]
    floats = [n for n in names if n in ("fp32", "fp16", "bf16", "fp64")]
    if floats:
        return floats[0]
    if names and names[0] == "int8":
        return "int8"  # data movement on quantized tensors (NhwcMaxPool, Transpose of uint8)
    return "other"


def map_runtime_nodes(graph, runtime: Iterable[RuntimeNode], mac_nodes: set[str]) -> dict[str, str | None]:
    """Runtime node name -> graph node name (None: no counterpart). See the module docstring.

    ``graph``: the model's ``onnx.GraphProto``; ``mac_nodes``: graph node names with MACs.
    """
    by_name = {n.name: n for n in graph.node if n.name}
    producer = {out: n for n in graph.node for out in n.output if out}
    out: dict[str, str | None] = {}
    for r in runtime:
        node = by_name.get(r.name)
        if node is None and r.kernel not in QDQ_OPS:
            stem = r.name
            for _ in range(3):
                for pattern in _RUNTIME_SUFFIXES:
                    stem = pattern.sub("", stem)
            node = by_name.get(stem) or producer.get(stem)
        if node is not None and r.kernel in MAC_KERNELS and node.name not in mac_nodes:
            node = _climb_to_mac(node, producer, mac_nodes)
        out[r.name] = node.name if node is not None and node.name else None
    return out


def _climb_to_mac(node, producer: dict, mac_nodes: set[str], max_steps: int = 6):
    """The Conv/MatMul/Gemm a fused BatchNorm/activation chain starts from (``node`` if none)."""
    current = node
    for _ in range(max_steps):
        if current.name in mac_nodes:
            return current
        if current.op_type not in _FUSED_AFTER_MAC:
            break
        parents = [producer[i] for i in current.input if i in producer]
        mac_parents = [p for p in parents if p.name in mac_nodes]
        if len(mac_parents) == 1:
            return mac_parents[0]
        if len(parents) != 1 and current.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            break
        if not parents:
            break
        current = parents[0]
    return node


def quantized_graph_nodes(graph) -> set[str]:
    """Names of graph nodes the file quantizes: integer ops, and ops fed by a DequantizeLinear."""
    producer = {out: n for n in graph.node for out in n.output if out}
    names = set()
    for n in graph.node:
        if _integer_kernel(n.op_type):
            names.add(n.name)
        elif n.op_type not in QDQ_OPS and any(
                producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input):
            names.add(n.name)
    return names


def ort_layers(trace_path: Path, onnx_path: Path, flop_rows: list[dict]) -> tuple[list[dict], list[float], list[str]]:
    """(layer rows before the shared join, counted runs' wall ms, notes) from an ONNX Runtime trace."""
    import onnx

    nodes, run_ms = parse_ort_trace(json.loads(Path(trace_path).read_text()))
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    flops = {r["name"]: r for r in flop_rows}
    mac_nodes = {name for name, r in flops.items() if (r.get("macs") or 0) > 0}
    mapping = map_runtime_nodes(graph, nodes, mac_nodes)
    quantized = quantized_graph_nodes(graph)
    op_of = {n.name: n.op_type for n in graph.node if n.name}
    groups = {n.name: a.i for n in graph.node for a in n.attribute if a.name == "group" and n.name}
    rows: dict[str, dict] = {}
    for r in nodes:
        target = mapping[r.name]
        key = target if target is not None else r.name
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "name": key, "op_type": op_of.get(key, r.kernel), "in_graph": target is not None,
                "kernels": [], "runtime_nodes": [], "provider": r.provider, "per_run": defaultdict(float),
                "precision": kernel_precision(r.kernel, r.input_types),
                "quantized_in_graph": key in quantized if target is not None else None,
                "groups": groups.get(key),
            }
        row["kernels"].append(r.kernel)
        row["runtime_nodes"].append(r.name)
        for i, ms in r.per_run_ms.items():
            row["per_run"][i] += ms
        if r.kernel in MAC_KERNELS:  # the multiply-adds decide the layer's precision
            row["precision"] = kernel_precision(r.kernel, r.input_types)
            row["int8_kernel"] = _integer_kernel(r.kernel)
    out = []
    for row in rows.values():
        row["kernels"] = list(dict.fromkeys(row["kernels"]))
        row.update(layer_times(row.pop("per_run"), len(run_ms)))
        out.append(row)
    notes = []
    unmapped = [r["name"] for r in out if not r["in_graph"]]
    if unmapped:
        notes.append(f"{len(unmapped)} runtime node(s) have no node of that name in the model file (inserted or "
                     f"fused by ONNX Runtime): {', '.join(unmapped[:6])}" + (" ..." if len(unmapped) > 6 else ""))
    return out, run_ms, notes


def profile_ort(backend, variant, feeds: dict, *, device: str, threads: int, workdir: Path, runs: int,
                options: dict | None = None) -> tuple[Path, Path]:
    """Run an ONNX Runtime profiling session of ``variant``: (trace file, ONNX file it ran)."""
    prefix = Path(workdir) / "ort-profile"
    session = backend.prepare(variant, device=device, threads=threads, workdir=workdir,
                              options={**(options or {}), "profile_file_prefix": str(prefix)})
    try:
        session.bind(feeds)
        for _ in range(WARMUP_RUNS + int(runs)):
            session.run_bound()
        session.synchronize()
        trace = session.end_profiling()
        onnx_path = Path(session.info.options["onnx_path"])
    finally:
        session.close()
    return trace, onnx_path


# --------------------------------------------------------------------------------------------
# PyTorch
# --------------------------------------------------------------------------------------------
_MODULE_PREFIX = "slimbench.module::"
_RUN_LABEL = "slimbench::run"


def _module_precision(module, session_precision: str, top_op: str | None = None) -> str:
    """int8 for quantized modules (or a module whose heaviest operator is a quantized one), else the
    dtype of its own parameters, else the session's precision (autocast: its dtype for Conv/Linear)."""
    if module is None:
        return session_precision.replace("autocast-", "")
    if ".quantized" in type(module).__module__ or "quantized" in (top_op or ""):
        return "int8"
    if session_precision.startswith("autocast-") and type(module).__name__.startswith(("Conv", "Linear")):
        return session_precision.split("-", 1)[1]
    for p in module.parameters(recurse=False):
        return _DTYPES.get(str(p.dtype).replace("torch.", "").replace("float32", "float"), "fp32")
    return "fp32" if session_precision in ("int8", "") else session_precision.replace("autocast-", "")


def _hook_targets(module, names: set[str]) -> dict[str, Any]:
    """The modules to time: those of the FLOPs table and every leaf module (name -> module)."""
    targets = {}
    for name, mod in module.named_modules():
        if not name:
            continue
        if name in names or not any(True for _ in mod.children()):
            targets[name] = mod
    return targets


def _install_hooks(targets: dict[str, Any]) -> list:
    import torch

    handles = []
    for name, mod in targets.items():
        stack: list = []

        def pre(_m, _inputs, label=_MODULE_PREFIX + name, stack=stack):
            rf = torch.profiler.record_function(label)
            rf.__enter__()
            stack.append(rf)

        def post(_m, _inputs, _output, stack=stack):
            if stack:
                stack.pop().__exit__(None, None, None)

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    return handles


def _heaviest_op(e) -> tuple[str | None, float]:
    """(name, self ms) of the operator with the largest self time under ``e``, modules excluded."""
    best, best_t = None, -1.0
    for c in e.cpu_children:
        if c.name.startswith(_MODULE_PREFIX):
            continue
        for name, t in ((c.name, c.self_cpu_time_total / 1000.0), _heaviest_op(c)):
            if name is not None and t > best_t:
                best, best_t = name, t
    return best, best_t


def _torch_event_rows(events, n_runs: int) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """(per module: ms per heaviest operator; per operator: self ms per run) from profiler events."""
    modules: dict[str, dict[str, float]] = {}
    ops: dict[str, float] = defaultdict(float)
    for e in events:
        if e.name.startswith(_MODULE_PREFIX):
            op, t = _heaviest_op(e)
            if op is not None:
                row = modules.setdefault(e.name[len(_MODULE_PREFIX):], defaultdict(float))
                row[op] += t
        elif not e.name.startswith("slimbench"):
            ops[e.name] += e.self_cpu_time_total / 1000.0 / max(n_runs, 1)
    return modules, dict(ops)


class _ModuleClock:
    """Forward hooks that time each module with ``perf_counter_ns``: exclusive ms per run (nested
    modules' time subtracted) and the time of the outermost modules per run."""

    def __init__(self, targets: dict[str, Any]):
        self.run = 0
        self.exclusive: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
        self.outermost: dict[int, float] = defaultdict(float)
        self._stack: list[list] = []
        self.handles = []
        for name, mod in targets.items():
            self.handles.append(mod.register_forward_pre_hook(lambda _m, _i, name=name: self._enter(name)))
            self.handles.append(mod.register_forward_hook(lambda _m, _i, _o: self._exit()))

    def _enter(self, name: str) -> None:
        self._stack.append([name, time.perf_counter_ns(), 0])

    def _exit(self) -> None:
        if not self._stack:
            return
        name, start, nested = self._stack.pop()
        inclusive = time.perf_counter_ns() - start
        self.exclusive[name][self.run] += (inclusive - nested) / 1e6
        if self._stack:
            self._stack[-1][2] += inclusive
        else:
            self.outermost[self.run] += inclusive / 1e6

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def profile_torch(session, flop_rows: list[dict], runs: int) -> tuple[list[dict], list[float], list[dict], list[str]]:
    """(layer rows before the shared join, counted runs' wall ms, operator rows, notes) for a PyTorch
    session bound to its inputs (see the module docstring): a pass timed by forward hooks, then a
    ``torch.profiler`` pass (at most :data:`PROFILER_RUNS` runs) for the operators."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    notes: list[str] = []
    scripted = isinstance(session.module, torch.jit.ScriptModule)
    targets = {} if scripted else _hook_targets(session.module, {r["name"] for r in flop_rows})
    if scripted:
        notes.append("TorchScript module: forward hooks do not run inside the interpreter, so time is per operator "
                     "only (the row '(outside modules)' holds it all)")
    for _ in range(WARMUP_RUNS):
        session.run_bound()
    session.synchronize()
    clock, run_ms = _ModuleClock(targets), []
    try:
        for i in range(int(runs)):
            clock.run = i
            t0 = time.perf_counter_ns()
            session.run_bound()
            session.synchronize()
            run_ms.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        clock.remove()
    handles = _install_hooks(targets)
    n_prof = min(int(runs), PROFILER_RUNS)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n_prof):
                with record_function(_RUN_LABEL):
                    session.run_bound()
                session.synchronize()
    finally:
        for h in handles:
            h.remove()
    top_ops, ops = _torch_event_rows(list(prof.events()), n_prof)
    if targets and not clock.exclusive:
        notes.append("no module ran as a module (an exported graph calls its operators directly): time is per "
                     "operator only")
    rows = []
    for name, per_run in clock.exclusive.items():
        mod = targets.get(name)
        candidates = top_ops.get(name) or {}
        top_op = max(candidates, key=candidates.get) if candidates else None
        rows.append({"name": name, "op_type": type(mod).__name__ if mod is not None else "?", "in_graph": True,
                     "kernels": [top_op] if top_op else [], "provider": "pytorch " + session.device,
                     "precision": _module_precision(mod, session.precision, top_op),
                     "groups": getattr(mod, "groups", None), **layer_times(per_run, len(run_ms))})
        if mod is not None and ".quantized" in type(mod).__module__:
            rows[-1]["int8_kernel"] = True
    outside = {i: max(0.0, run_ms[i] - clock.outermost.get(i, 0.0)) for i in range(len(run_ms))}
    rows.append({"name": OUTSIDE_MODULES, "op_type": "-", "in_graph": False, "kernels": [],
                 "provider": "pytorch " + session.device, "precision": _module_precision(None, session.precision),
                 **layer_times(outside, len(run_ms))})
    total_ops = sum(ops.values()) or 1.0
    op_rows = sorted(({"name": k, "self_time_ms": v, "time_share": v / total_ops} for k, v in ops.items()),
                     key=lambda r: -r["self_time_ms"])
    return rows, run_ms, op_rows, notes


# --------------------------------------------------------------------------------------------
# the join
# --------------------------------------------------------------------------------------------
def join_layers(rows: list[dict], flop_rows: list[dict], peaks=None) -> tuple[list[dict], list[str]]:
    """Add MACs, parameters, throughput and shares to profiled layer rows (sorted by time, largest
    first). FLOPs-table rows with MACs that no profiled layer holds are returned by name (fused away
    or folded at load)."""
    from .roofline import peak_fraction

    flops = {r["name"]: r for r in flop_rows}
    total_ms = sum(r["time_ms"] for r in rows) or 0.0
    total_macs = sum(int(r.get("macs") or 0) for r in flop_rows)
    seen = set()
    for r in rows:
        f = flops.get(r["name"]) if r.get("in_graph") else None
        seen.add(r["name"])
        macs = int(f.get("macs") or 0) if f else 0
        r["macs"] = macs
        r["params"] = int(f.get("params") or 0) if f else 0
        r["gmacs_per_s"] = macs / (r["time_ms"] * 1e6) if macs and r["time_ms"] > 0 else None
        r["peak_fraction"] = peak_fraction(r["gmacs_per_s"], peaks, r["precision"])
        r["time_share"] = r["time_ms"] / total_ms if total_ms > 0 else None
        r["mac_share"] = macs / total_macs if total_macs else None
        r["int8_kernel"] = bool(r.get("int8_kernel")) if macs else None
        r.setdefault("quantized_in_graph", r["precision"] == "int8" if macs else None)
    missing = [r["name"] for r in flop_rows if (r.get("macs") or 0) > 0 and r["name"] not in seen]
    return sorted(rows, key=lambda r: -r["time_ms"]), missing


def op_type_table(layers: list[dict]) -> list[dict]:
    """Time, MACs and achieved GMAC/s per (kernel, precision), largest time first."""
    groups: dict[tuple[str, str], dict] = {}
    total = sum(r["time_ms"] for r in layers) or 1.0
    for r in layers:
        kernel = r["kernels"][0] if r.get("kernels") else r["op_type"]
        if r.get("macs"):
            kernel = next((k for k in r["kernels"] if k in MAC_KERNELS), kernel)
        g = groups.setdefault((kernel, r["precision"]), {"kernel": kernel, "precision": r["precision"], "count": 0,
                                                         "time_ms": 0.0, "macs": 0})
        g["count"] += 1
        g["time_ms"] += r["time_ms"]
        g["macs"] += int(r.get("macs") or 0)
    out = []
    for g in groups.values():
        g["time_share"] = g["time_ms"] / total
        g["gmacs_per_s"] = g["macs"] / (g["time_ms"] * 1e6) if g["macs"] and g["time_ms"] > 0 else None
        out.append(g)
    return sorted(out, key=lambda g: -g["time_ms"])


def summarize_kernels(layers: list[dict]) -> dict[str, Any]:
    """Counts behind the INT8 explanation: MAC layers in integer / float kernels, quantized layers
    that ran a float kernel, and the time share of Quantize/DequantizeLinear."""
    mac = [r for r in layers if r.get("macs")]
    total = sum(r["time_ms"] for r in layers) or 1.0
    return {
        "mac_layers": len(mac),
        "int8_kernel_layers": sum(1 for r in mac if r.get("int8_kernel")),
        "float_kernel_layers": sum(1 for r in mac if not r.get("int8_kernel")),
        "quantized_but_float": [r["name"] for r in mac if r.get("quantized_in_graph") and not r.get("int8_kernel")],
        "quant_time_share": sum(r["time_ms"] for r in layers if r["precision"] == "quant") / total,
        "zero_mac_time_share": sum(r["time_ms"] for r in layers if not r.get("macs")) / total,
    }


def check_runs(runs: int) -> int:
    if int(runs) < 1:
        raise ConfigError(f"profiled runs must be >= 1; got {runs}")
    return int(runs)


__all__ = ["INT8_KERNELS", "MAC_KERNELS", "OUTSIDE_MODULES", "QDQ_OPS", "RuntimeNode", "check_runs", "join_layers",
           "kernel_precision", "layer_times", "map_runtime_nodes", "median_per_run", "op_type_table", "ort_layers",
           "parse_ort_trace", "profile_ort", "profile_torch", "quantized_graph_nodes", "summarize_kernels"]

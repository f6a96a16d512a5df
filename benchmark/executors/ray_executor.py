"""The Ray executor: one sweep across the machines of a Ray cluster, one results store.

- Connection: ``ray.init(address=...)`` (``auto`` finds the cluster this machine belongs to, or
  ``$RAY_ADDRESS``). A process that is already connected (a notebook, a script) keeps its
  connection. The driver runs on a machine of the cluster.
- Targets: ``all`` (one target per alive node), ``resource=NAME`` (any alive node with that Ray
  resource, e.g. ``accelerator_type:T4`` or a custom ``slimbench_cpu_avx512``) or ``node=ID`` (a
  unique prefix of a node id is enough). Resolved once when the sweep starts; the concrete list is
  stored with the sweep, so a resumed sweep reruns rows on the targets they belong to.
- Each (variant x target) is one Ray task (:func:`~benchmark.executors.ray_node.node_job`) that
  runs Slimbench's isolated job on its node under that node's own per-device queue. The sweep
  keeps one task in flight per target (jobs of a target run in plan order, the FP32 reference
  first) and the targets run at once.
- Files: the model (with its ONNX external data), a data ``.npz`` and ``.py`` plugins are read once
  on the driver and put into Ray's object store as bytes; each node writes them to a local folder
  (see :mod:`~benchmark.executors.ray_node`). Variants are built on the node that measures them,
  never shipped: INT8's format is chosen from that node's CPU flags and TensorRT engines are built
  for that node's GPU and TensorRT version.
- Results: the task streams the job's events back (Ray generator task); result rows land in the
  driver's store as they finish. A node that dies (or a killed task process) ends its job with
  ``error_type`` :data:`~benchmark.executors.base.LOST`; so does a target with no alive node left.
- Cancelling: ``ray.cancel`` on the task (its job child is killed, the node's device freed);
  ``force=True`` after a grace period.
- Resources asked from Ray per task: 1 CPU, and 1 GPU for device ``cuda`` (so Ray gives the task a
  whole GPU and sets ``CUDA_VISIBLE_DEVICES``). Other Ray work on the same node can still disturb
  timings; keep benchmark nodes for Slimbench, or target them with a resource only they have.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..jobs import JobOutcome
from .base import LOST, RAY_INSTALL, Target, parse_target

#: Seconds a cancelled task gets to stop its job before it is killed (``ray.cancel(force=True)``).
CANCEL_GRACE_S = 10.0
#: How often (seconds) a task that has not started yet checks that its target still has a node.
TARGET_CHECK_S = 3.0
#: Seconds to wait for a TCP answer from a cluster's address before Ray is asked to connect.
REACH_TIMEOUT_S = 5.0


def import_ray():
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"the ray executor needs Ray, which is not installed here: {RAY_INSTALL}") from None
    return ray


def connect(address: str | None) -> bool:
    """Connect this process to the Ray cluster at ``address`` (``auto`` when None) unless it is
    connected already. Returns True when this call made the connection."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or "auto"
    check_reachable(os.environ.get("RAY_ADDRESS", "") if address == "auto" else address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise ConfigError(f"cannot connect to a Ray cluster at {address!r}: {first}; start one with "
                          "`ray start --head` or pass --ray-address HOST:PORT") from None
    except Exception as exc:  # ray.exceptions.AuthenticationError and friends: one line, not a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"cannot connect to the Ray cluster at {address!r}: {type(exc).__name__}: {first}") from None
    return True


def check_reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """A ``[ray://]HOST:PORT`` where nothing answers fails here within seconds (Ray itself keeps
    retrying for about a minute); other forms (``auto``, empty) are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"cannot connect to a Ray cluster at {address!r}: nothing answers there "
                          f"({exc.strerror or exc}); start one with `ray start --head` or check the Ray address"
                          ) from None


def alive_nodes() -> list[dict[str, Any]]:
    """Alive Ray nodes as ``{node_id, hostname, ip, resources, label}``, head node first."""
    ray = import_ray()
    out = []
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        node_id = n["NodeID"]
        resources = dict(n.get("Resources") or {})
        out.append({"node_id": node_id, "hostname": n.get("NodeManagerHostname", ""),
                    "ip": n.get("NodeManagerAddress", ""), "resources": resources,
                    "label": f"{n.get('NodeManagerHostname', '?')} (node {node_id[:8]})",
                    "head": "node:__internal_head__" in resources})
    return sorted(out, key=lambda n: (not n["head"], n["hostname"], n["node_id"]))


#: Ray's own resources, left out where a node's custom resources are listed.
BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def custom_resources(node: dict[str, Any]) -> list[str]:
    """A node's resources a ``resource=NAME`` target can name (Ray's accelerator types and the custom
    ones given with ``ray start --resources``), sorted."""
    return sorted(k for k in node["resources"] if not k.startswith("node:") and k not in BUILTIN_RESOURCES)


def cluster_nodes_job(payload: dict, emit) -> list[dict[str, Any]]:
    """Job body (run in a child by :func:`describe_cluster`): the alive nodes of the cluster at
    ``payload["address"]`` as JSON-safe dicts."""
    connected = connect(payload.get("address"))
    try:
        return [{"node_id": n["node_id"], "hostname": n["hostname"], "ip": n["ip"], "label": n["label"],
                 "head": n["head"], "cpus": n["resources"].get("CPU", 0), "gpus": n["resources"].get("GPU", 0),
                 "resources": custom_resources(n)} for n in alive_nodes()]
    finally:
        if connected:
            import_ray().shutdown()


def describe_cluster(address: str | None, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """The alive nodes of the Ray cluster at ``address`` (``auto`` when None), asked from a child
    process so the caller (the dashboard) never holds a Ray connection; a one-line ConfigError when
    Ray is missing or the cluster cannot be reached."""
    from ..jobs import run_isolated

    outcome = run_isolated(f"{__name__}:cluster_nodes_job", {"address": address}, timeout_s=timeout_s)
    if not outcome.ok:
        raise ConfigError(outcome.error or "cannot list the Ray cluster's nodes")
    return list(outcome.value or [])


def _describe(nodes: list[dict[str, Any]]) -> str:
    parts = []
    for n in nodes:
        parts.append(f"{n['label']} [{', '.join(custom_resources(n)) or 'no custom resources'}]")
    return "; ".join(parts) or "none"


def resolve_targets(specs: tuple[str, ...] | list[str]) -> list[Target]:
    """Concrete targets for ``--target`` values (default ``all``); ConfigError naming the alive
    nodes when a target matches none."""
    nodes = alive_nodes()
    out: list[Target] = []
    for spec in [parse_target(s) for s in (specs or ("all",))]:
        kind, _, name = spec.partition("=")
        if spec == "all":
            found = [Target(f"node={n['node_id']}", n["label"]) for n in nodes]
        elif kind == "resource":
            found = [Target(spec, f"resource {name}")] if any(n["resources"].get(name, 0) > 0 for n in nodes) else []
        else:
            found = [Target(f"node={n['node_id']}", n["label"]) for n in nodes
                     if n["node_id"].lower().startswith(name.lower())]
            if len(found) > 1:
                raise ConfigError(f"target {spec} matches {len(found)} nodes; give more of the node id "
                                  f"(alive nodes: {_describe(nodes)})")
        if not found:
            raise ConfigError(f"target {spec} matches no alive node of the Ray cluster; "
                              f"alive nodes: {_describe(nodes)}")
        out += [t for t in found if t not in out]
    return out


def placement(target: Target, device: str) -> dict[str, Any]:
    """Ray task options that put a job on ``target``."""
    options: dict[str, Any] = {"num_cpus": 1, "num_gpus": 1 if device.startswith("cuda") else 0, "max_retries": 0}
    kind, _, name = target.key.partition("=")
    if kind == "node":
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=name, soft=False)
    elif kind == "resource" and name not in ("CPU", "GPU"):
        options["resources"] = {name: 0.01}
    elif name == "GPU":
        options["num_gpus"] = max(options["num_gpus"], 0.01)
    return options


def file_bundle(path: Path, extra: list[Path] | None = None) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(bundle description, {sha256: bytes}) for a file and the files beside it that it needs."""
    folder = path.parent
    contents: dict[str, bytes] = {}
    files: dict[str, str] = {}
    for p in [path, *(extra or [])]:
        data = p.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        files[p.relative_to(folder).as_posix()] = sha
        contents[sha] = data
    bundle_id = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"id": bundle_id, "main": path.name, "files": files}, contents


def ship_manifest(model: str, data: str | None, plugins: list[str]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """What the nodes need from this machine: the model file (with its ONNX external data), a data
    file and ``.py`` plugins. Built-in samples, datasets and plugin modules are not shipped (each
    node resolves them from its own installation)."""
    from ..data import DATASETS
    from ..safety import check_onnx_external_data

    manifest: dict[str, Any] = {"plugins": {}}
    contents: dict[str, bytes] = {}
    model_path = Path(model)
    if not model.startswith("sample:") and model_path.is_file():
        extra = check_onnx_external_data(model_path) if model_path.suffix.lower() == ".onnx" else []
        folder = model_path.resolve().parent
        manifest["model"], files = file_bundle(model_path.resolve(), [Path(p).resolve() for p in extra
                                                                     if Path(p).resolve().parent == folder
                                                                     or folder in Path(p).resolve().parents])
        contents.update(files)
    if data and data not in DATASETS and Path(data).is_file():
        manifest["data"], files = file_bundle(Path(data).resolve())
        contents.update(files)
    for plugin in plugins:
        if plugin.endswith(".py") and Path(plugin).is_file():
            manifest["plugins"][plugin], files = file_bundle(Path(plugin).resolve())
            contents.update(files)
    return manifest, contents


def _lost_error(exc: BaseException, target: Target) -> str:
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"lost with {target.label} ({type(exc).__name__}: {first})"


class RayExecutor:
    """Jobs run as Ray tasks on the cluster's nodes (see the module docstring)."""

    name = "ray"

    def __init__(self, address: str | None = None, targets: tuple[str, ...] | list[str] = (),
                 stored_targets: list[dict[str, Any]] | None = None):
        self.address = address
        self._connected_here = connect(address)
        ray = import_ray()
        self._targets = ([Target.from_dict(t) for t in stored_targets] if stored_targets
                         else resolve_targets(targets))
        from .ray_node import node_job

        self._task = ray.remote(node_job)
        self._lock = threading.Lock()
        self._used: dict[str, set[str]] = {}  # driver work folder -> ids of the nodes that ran its jobs
        self._shipped: dict[tuple, tuple[dict, dict]] = {}  # (model, data, plugins) -> (manifest, refs)
        self._logs = Path(tempfile.mkdtemp(prefix="slimbench-ray-logs-"))

    def targets(self) -> list[Target]:
        return list(self._targets)

    def unavailable(self, target: Target) -> str | None:
        kind, _, name = target.key.partition("=")
        nodes = alive_nodes()
        if kind == "node" and not any(n["node_id"] == name for n in nodes):
            return (f"{target.label} is not an alive node of the Ray cluster (a restarted node gets a new id; "
                    f"target machines by a resource to resume on a replacement)")
        if kind == "resource" and not any(n["resources"].get(name, 0) > 0 for n in nodes):
            return f"no alive node of the Ray cluster has resource {name}"
        return None

    def _ship(self, payload: dict, plugins: list[str]) -> tuple[dict, dict]:
        """Manifest + object refs of the job's files, put into the object store once per sweep."""
        key = (payload["model"], payload.get("data"), tuple(plugins))
        with self._lock:
            if key not in self._shipped:
                ray = import_ray()
                manifest, contents = ship_manifest(payload["model"], payload.get("data"), plugins)
                self._shipped[key] = (manifest, {sha: ray.put(data) for sha, data in contents.items()})
            return self._shipped[key]

    def execute(self, target: Target, job: str, payload: dict, *, on_event: Callable[[dict], None],
                on_wait: Callable[[int], None], on_start: Callable[[], None], cancel_check: Callable[[], bool],
                timeout_s: float | None, plugins: list[str] | None, log_path, on_tick: Callable[[], None] | None,
                ticket: dict[str, Any]) -> JobOutcome:
        """Run the job as one Ray task on ``target`` and follow its event stream."""
        plugins = list(plugins or [])
        manifest, refs = self._ship(payload, plugins)
        options = placement(target, str(payload["device"]))
        stream = self._task.options(name=f"slimbench {ticket.get('label', job)}", **options).remote(
            job, json.dumps(payload), json.dumps(manifest), refs, json.dumps(plugins), timeout_s,
            json.dumps({**ticket, "db": None}))
        follower = _Follower(self, target, stream, on_event, on_wait, on_start, cancel_check, on_tick)
        try:
            outcome = follower.run()
        except BaseException:
            import_ray().cancel(stream, force=True)
            raise
        finally:
            if follower.node:
                with self._lock:
                    self._used.setdefault(str(payload["workdir"]), set()).add(follower.node["node_id"])
        outcome.wall_s = follower.wall_s()
        if follower.log_tail:
            log = self._logs / Path(str(log_path or "job.log")).name
            log.write_text(follower.log_tail)
            outcome.log_path = log
        return outcome

    def cleanup(self, timeout_s: float = 30.0) -> list[str]:
        """Remove the sweep's folder from every alive node that ran one of its jobs (a dead node
        keeps its folder). Returns the labels of the nodes cleaned."""
        ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .ray_node import remove_sweep_folder

        alive = {n["node_id"] for n in alive_nodes()}
        remove = ray.remote(remove_sweep_folder)
        refs = [remove.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                    node_id=node, soft=False)).remote(workdir)
                for workdir, nodes in self._used.items() for node in nodes if node in alive]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
        self._used.clear()
        labels = []
        for ref in done:
            try:
                labels.append(str(ray.get(ref)))
            except ray.exceptions.RayError:  # the node died since the check: its folder stays with it
                continue
        return labels

    def close(self) -> None:
        import shutil

        self.cleanup()
        self._shipped.clear()
        shutil.rmtree(self._logs, ignore_errors=True)
        if self._connected_here:
            import_ray().shutdown()


class _Follower:
    """Follows one task's event stream until its outcome, a cancel, or the loss of its node."""

    def __init__(self, executor: RayExecutor, target: Target, stream, on_event, on_wait, on_start,
                 cancel_check, on_tick):
        self.ex, self.target, self.stream = executor, target, stream
        self.on_event, self.on_wait, self.on_start = on_event, on_wait, on_start
        self.cancel_check, self.on_tick = cancel_check, on_tick
        self.started = time.monotonic()
        self.node: dict[str, Any] | None = None
        self.cancelled_at: float | None = None
        self.log_tail: str | None = None

    def wall_s(self) -> float:
        return time.monotonic() - self.started

    def run(self) -> JobOutcome:
        ray = import_ray()
        from ray import exceptions as rex

        last_tick = last_cancel = last_check = time.monotonic()
        while True:
            ready, _ = ray.wait([self.stream], timeout=0.2)
            if ready:
                try:
                    text = ray.get(next(self.stream))
                except StopIteration:
                    return JobOutcome(False, error=f"the task on {self.target.label} ended without an outcome",
                                      error_type=LOST)
                except (rex.TaskCancelledError, rex.RayTaskError) as exc:
                    if self.cancelled_at is not None or isinstance(exc, rex.TaskCancelledError) \
                            or isinstance(getattr(exc, "cause", None), rex.TaskCancelledError):
                        return JobOutcome(False, error="cancelled", error_type="cancelled")
                    return JobOutcome(False, error=f"on {self.target.label}: {exc}".splitlines()[0],
                                      error_type=type(exc).__name__)
                except rex.RayError as exc:  # node died, worker killed, object lost: the job is lost
                    return JobOutcome(False, error=_lost_error(exc, self.target), error_type=LOST)
                outcome = self.handle(json.loads(text))
                if outcome is not None:
                    return outcome
            now = time.monotonic()
            if self.cancelled_at is None and now - last_cancel > 0.5:
                last_cancel = now
                if self.cancel_check():
                    self.cancelled_at = now
                    ray.cancel(self.stream)
            elif self.cancelled_at is not None and now - self.cancelled_at > CANCEL_GRACE_S:
                ray.cancel(self.stream, force=True)
                return JobOutcome(False, error="cancelled", error_type="cancelled")
            if self.node is None and self.cancelled_at is None and now - last_check > TARGET_CHECK_S:
                last_check = now
                reason = self.ex.unavailable(self.target)
                if reason:
                    ray.cancel(self.stream, force=True)
                    return JobOutcome(False, error=f"not run: {reason}", error_type=LOST)
            if self.on_tick and now - last_tick > 1.0:
                last_tick = now
                self.on_tick()

    def handle(self, msg: dict) -> JobOutcome | None:
        """Pass one event on; the job's outcome when ``msg`` is it."""
        kind = msg.get("type")
        if kind == "_node":
            self.node = msg.get("node") or {}
        elif kind == "_queue":
            self.on_wait(int(msg.get("ahead") or 0))
        elif kind == "_start":
            self.on_start()
        elif kind == "_outcome":
            self.log_tail = msg.get("log_tail")
            fields = ("ok", "value", "error", "error_type", "exitcode", "traceback", "peak_rss_mb", "last_step")
            return JobOutcome(**{k: msg.get(k) for k in fields})
        else:
            self.on_event(msg)
        return None

"""The node side of the Ray executor: what one Ray task does on the machine it landed on.

:func:`node_job` is the task's body (a generator: Ray streams each value it yields back to the
driver as it is produced). It

1. writes the sweep's files (model, data, ``.py`` plugins), which arrive as bytes through Ray's
   object store, into the sweep's folder on this node (``<work folder>/ray-<sweep>/files/<SHA-256
   of the bundle>``; each file's SHA-256 is checked; the sweep's later jobs on this node skip the
   transfer) and points the job's payload at them;
2. runs the job exactly as the local executor does: it waits in this machine's per-device queue,
   then runs ``module:function`` in an isolated child process that holds the device;
3. yields every event of the child as JSON text (result rows get ``env.ray_node``: the node's id,
   address and label), then the job's outcome.

The sweep's folder on the node (shipped files, exported variants, the FP32 reference outputs shared
by the sweep's jobs there) is removed by :func:`remove_sweep_folder` when the sweep ends.

Only JSON text and bytes cross the wire in either direction; nothing the task gets is unpickled
by Slimbench, and the model is loaded only in the isolated child, with the same pickle refusal as
on the driver's machine (``trust_pickle`` travels in the payload as the user set it).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
import socket
import threading
import uuid
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from ..errors import BenchmarkError, ConfigError

#: Prefix of a sweep's folder under the node's Slimbench work folder.
SWEEP_PREFIX = "ray-"
_LOG_TAIL_BYTES = 4096


def node_info() -> dict[str, Any]:
    """This Ray node: id, IP address, host name and a label for people."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    host = socket.gethostname()
    return {"node_id": node_id, "node_ip": ray.util.get_node_ip_address(), "hostname": host,
            "label": f"{host} (node {node_id[:8]})"}


def _safe_relative(name: str) -> PurePosixPath:
    """A shipped file's name as a relative path that stays inside its bundle folder."""
    path = PurePosixPath(str(name).replace("\\", "/"))
    if not name or path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", str(name)):
        raise ConfigError(f"refusing shipped file name {name!r}: it must be a relative path inside its folder")
    return path


def materialize(bundle: dict[str, Any], fetch, root: Path) -> Path:
    """Write ``bundle`` (``{"id", "main", "files": {name: sha256}}``) under ``root/<id>`` and return
    the path of its main file. ``fetch(sha256) -> bytes`` gets a file's bytes (only for a bundle not
    already on this node); each file's SHA-256 is checked before the bundle is used."""
    bundle_id = str(bundle["id"])
    if not re.fullmatch(r"[0-9a-f]{64}", bundle_id):
        raise ConfigError(f"refusing shipped bundle id {bundle_id!r}")
    folder = root / bundle_id
    main = folder.joinpath(*_safe_relative(bundle["main"]).parts)
    names = {name: _safe_relative(name) for name in bundle["files"]}
    if (folder / ".complete").exists():
        return main
    tmp = root / f".{bundle_id}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        for name, sha in bundle["files"].items():
            data = fetch(sha)
            if hashlib.sha256(data).hexdigest() != sha:
                raise BenchmarkError(f"shipped file {name!r} arrived damaged (SHA-256 mismatch)")
            dest = tmp.joinpath(*names[name].parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        (tmp / ".complete").write_text("")
        try:
            os.rename(tmp, folder)
        except OSError:  # another task on this node wrote the same bundle first
            if not (folder / ".complete").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return main


def localize(payload: dict, manifest: dict, refs: dict, plugins: list[str]) -> tuple[dict, list[str]]:
    """The payload and plugin list with shipped files replaced by their node-local copies, and the
    job's work folder on this node (one per sweep, shared by the sweep's jobs here)."""
    import ray

    workdir = sweep_folder(str(payload["workdir"]))
    root = workdir / "files"
    root.mkdir(parents=True, exist_ok=True)

    def fetch(sha: str) -> bytes:
        return bytes(ray.get(refs[sha]))

    payload = dict(payload)
    for field in ("model", "data"):
        if manifest.get(field):
            payload[field] = str(materialize(manifest[field], fetch, root))
    shipped = manifest.get("plugins") or {}
    plugins = [str(materialize(shipped[p], fetch, root)) if p in shipped else p for p in plugins]
    payload["workdir"] = str(workdir)
    return payload, plugins


def sweep_folder(driver_workdir: str) -> Path:
    """This node's folder of the sweep whose work folder on the driver is ``driver_workdir``."""
    from ..paths import work_root

    token = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(driver_workdir).name).lstrip(".") or "sweep"
    return work_root() / f"{SWEEP_PREFIX}{token}"


def remove_sweep_folder(driver_workdir: str) -> str:
    """Remove this node's folder of a finished sweep; returns the node's label."""
    shutil.rmtree(sweep_folder(driver_workdir), ignore_errors=True)
    return node_info()["label"]


def drop_ray_thread_cap() -> str | None:
    """Undo ``OMP_NUM_THREADS`` when Ray set it for this task (to the task's CPU count) rather than
    the node's own environment: the job sets and records its thread counts itself, and a cap
    inherited from Ray would silently make ``threads = 0`` ("all cores") one thread. Returns the
    value dropped."""
    import psutil

    value = os.environ.get("OMP_NUM_THREADS")
    if value is None:
        return None
    try:
        inherited = psutil.Process(os.getppid()).environ()  # the raylet's: the node's own environment
    except psutil.Error:
        return None
    if "OMP_NUM_THREADS" in inherited:
        return None
    os.environ.pop("OMP_NUM_THREADS", None)  # Ray removes its own value after the task anyway
    return value


def _log_tail(path) -> str | None:
    if not path or not Path(path).is_file():
        return None
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
        return fh.read().decode("utf-8", "replace")


def outcome_dict(outcome) -> dict[str, Any]:
    """A JobOutcome as the JSON the driver gets (its log as the last few KB of text)."""
    return {"type": "_outcome", "ok": outcome.ok, "value": outcome.value, "error": outcome.error,
            "error_type": outcome.error_type, "exitcode": outcome.exitcode, "traceback": outcome.traceback,
            "peak_rss_mb": outcome.peak_rss_mb, "last_step": outcome.last_step, "wall_s": outcome.wall_s,
            "log_tail": _log_tail(outcome.log_path)}


def node_job(job: str, payload_json: str, manifest_json: str, refs: dict, plugins_json: str,
             timeout_s: float | None, ticket_json: str) -> Iterator[str]:
    """The Ray task (see the module docstring). Yields JSON text; the last item is ``_outcome``."""
    from ..jobs import JobOutcome
    from .local import LocalExecutor

    info = node_info()
    yield json.dumps({"type": "_node", "node": info})
    events: queue.Queue = queue.Queue()
    stop = threading.Event()

    def on_event(event: dict) -> None:
        if event.get("type") == "result" and isinstance(event.get("row"), dict):
            row = event["row"]
            row["env"] = dict(row.get("env") or {}, ray_node=info)
        events.put(event)

    def body() -> None:
        try:
            drop_ray_thread_cap()
            payload, plugins = localize(json.loads(payload_json), json.loads(manifest_json), refs,
                                        json.loads(plugins_json))
            log_path = Path(payload["workdir"]) / f"job-{uuid.uuid4().hex[:8]}.log"
            outcome = LocalExecutor().execute(
                None, job, payload, on_event=on_event, on_wait=lambda n: events.put({"type": "_queue", "ahead": n}),
                on_start=lambda: events.put({"type": "_start"}), cancel_check=stop.is_set, timeout_s=timeout_s,
                plugins=plugins, log_path=log_path, on_tick=None, ticket=json.loads(ticket_json))
        except BenchmarkError as exc:
            outcome = JobOutcome(False, error=f"on {info['label']}: {exc}", error_type=type(exc).__name__)
        except Exception as exc:  # a bug on the node: reported as one, the sweep goes on
            outcome = JobOutcome(False, error=f"on {info['label']}: internal error: {type(exc).__name__}: {exc}",
                                 error_type=type(exc).__name__)
        events.put(outcome_dict(outcome))

    worker = threading.Thread(target=body, name="slimbench-node-job", daemon=True)
    worker.start()
    try:
        while True:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                continue
            yield json.dumps(event, default=str)
            if event.get("type") == "_outcome":
                return
    finally:  # ray.cancel raises KeyboardInterrupt here: the job's child is killed, the device released
        stop.set()
        worker.join(60)

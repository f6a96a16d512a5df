"""The Ray executor: targets, file shipping, and sweeps across a local two-node Ray cluster.

The cluster (``ray.cluster_utils.Cluster``: a head node with resource ``slimbench_test_a`` and a
worker node with ``slimbench_test_b``, one CPU each, the smallest object store Ray allows) is
started once for the module. Each node has a Slimbench data folder of its own (so its own device
queue, as two machines would) and each test's driver another one, so rows reach the driver's store
only through the executor.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmark.config import SweepConfig
from benchmark.errors import ConfigError
from benchmark.executors import LOCAL, make_executor, parse_target
from benchmark.executors.ray_node import materialize
from benchmark.results import RunResult, run_key
from benchmark.store import Store
from benchmark.sweep import run_sweep

PLUGIN = str(Path(__file__).with_name("plugins_crash.py"))
FAST = dict(min_duration_s=0.05, min_iters=3, eval_samples=32, threads=1, calib_samples=32)
OBJECT_STORE_BYTES = 78 * 2**20  # Ray's minimum is 75 MiB; it falls back to /tmp when /dev/shm is smaller


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return value


# --------------------------------------------------------------------------------------------
# without a cluster
# --------------------------------------------------------------------------------------------
def test_target_syntax_and_config_checks():
    assert parse_target(" Resource=lab_t4 ") == "resource=lab_t4"
    assert parse_target("ALL") == "all"
    assert parse_target("node=1a2b") == "node=1a2b"
    for bad in ("gpu", "resource=", "node=a|b", "host=x"):
        with pytest.raises(ConfigError, match="target must be all, resource=NAME or node=ID"):
            parse_target(bad)
    with pytest.raises(ConfigError, match="need executor ray"):
        SweepConfig(model="sample:digits-cnn", targets=("all",))
    with pytest.raises(ConfigError, match="executor must be one of local, ray"):
        SweepConfig(model="sample:digits-cnn", executor="slurm")
    assert make_executor("local").targets() == [LOCAL]
    assert run_key("fp32", "onnxruntime", 1) == "fp32|onnxruntime|1"  # local rows keep their keys
    assert RunResult(model="m", variant="fp32", backend="onnxruntime", batch_size=1,
                     target="resource=x").key == "fp32|onnxruntime|1|resource=x"


def test_executor_flags_and_toml_keys_come_from_the_config_fields(tmp_path, monkeypatch, capsys):
    import argparse
    import importlib.util

    from benchmark.__main__ import main
    from benchmark.cli_run import add_run_parser, sweep_config_from_args
    from benchmark.sweep import validate_sweep

    parser = argparse.ArgumentParser()
    add_run_parser(parser.add_subparsers())
    cfg, _ = sweep_config_from_args(parser.parse_args(
        ["run", "sample:digits-cnn", "--executor", "ray", "--ray-address", " 10.0.0.5:6379 ", "--target", "all",
         "--target", "Resource=lab_t4", "--target", "all"]))
    assert (cfg.executor, cfg.ray_address, cfg.targets) == ("ray", "10.0.0.5:6379", ("all", "resource=lab_t4"))
    assert sweep_config_from_args(parser.parse_args(["run", "sample:digits-cnn"]))[0].executor == "local"
    toml = tmp_path / "s.toml"
    toml.write_text('model = "sample:digits-cnn"\nexecutor = "ray"\ntarget = "resource=a, node=1a2b"\n')
    cfg, _ = sweep_config_from_args(parser.parse_args(["run", "--config", str(toml)]))
    assert cfg.targets == ("resource=a", "node=1a2b") and cfg.ray_address is None
    assert main(["run", "sample:digits-cnn", "--target", "resource=a", "--db", str(tmp_path / "r.db")]) == 2
    assert "targets and a Ray address need executor ray; add --executor ray" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs Ray, which is not installed here: pip install 'slimbench\[ray\]'"):
        validate_sweep(SweepConfig(model="sample:digits-cnn", executor="ray"))


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory) -> Path:
    """The CNN sample exported to ONNX with its weights in a separate data file (exported once)."""
    import onnx

    from benchmark.models import load_model
    from benchmark.models.export import export_onnx

    folder = tmp_path_factory.mktemp("cnn-onnx")
    (folder / "weights").mkdir()
    model = load_model("sample:digits-cnn")
    single = folder / "single.onnx"
    export_onnx(model.torch_module, model.inputs, single)
    proto = onnx.load(str(single))
    path = folder / "cnn.onnx"
    onnx.save_model(proto, str(path), save_as_external_data=True, location="weights/cnn.data", size_threshold=1024)
    single.unlink()
    return path


def _copy_model(cnn_onnx: Path, folder: Path) -> Path:
    import shutil

    shutil.copytree(cnn_onnx.parent, folder)
    return folder / cnn_onnx.name


def test_ship_manifest_bundles_external_data_and_materialize_checks_it(cnn_onnx, tmp_path):
    from benchmark.executors.ray_executor import ship_manifest

    model = _copy_model(cnn_onnx, tmp_path / "model")
    manifest, contents = ship_manifest(str(model), "digits", [PLUGIN, "some.module"])
    assert sorted(manifest["model"]["files"]) == ["cnn.onnx", "weights/cnn.data"]
    assert "data" not in manifest  # a built-in dataset is resolved on each node
    assert list(manifest["plugins"]) == [PLUGIN]  # a module name is imported on each node, not shipped
    for sha, data in contents.items():
        assert hashlib.sha256(data).hexdigest() == sha
    fetched = []
    main = materialize(manifest["model"], lambda sha: fetched.append(sha) or contents[sha], tmp_path / "node")
    assert main.read_bytes() == model.read_bytes()
    assert (main.parent / "weights" / "cnn.data").read_bytes() == (model.parent / "weights" / "cnn.data").read_bytes()
    assert materialize(manifest["model"], lambda sha: pytest.fail("fetched twice"), tmp_path / "node") == main
    assert len(fetched) == 2
    with pytest.raises(Exception, match="arrived damaged"):
        materialize(manifest["model"], lambda sha: b"not the file", tmp_path / "other")
    bad = dict(manifest["model"], files={"../escape.onnx": "0" * 64})
    with pytest.raises(ConfigError, match="refusing shipped file name"):
        materialize(bad, lambda sha: b"", tmp_path / "other")


# --------------------------------------------------------------------------------------------
# a local two-node cluster
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    head_data, worker_data = tmp_path_factory.mktemp("ray-head-data"), tmp_path_factory.mktemp("ray-worker-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMBENCH_DATA_DIR", str(head_data))  # inherited by the processes of a node started now
        assert os.environ.get("RAY_AUTH_MODE") == "token"  # set by conftest.py before anything imported ray
        ray = pytest.importorskip("ray")
        from ray.cluster_utils import Cluster

        c = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=1, resources={"slimbench_test_a": 1}, object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False))
        state = {"cluster": c, "head_data": head_data, "worker_data": worker_data}
        state["worker"] = add_worker(state)
        ray.init(address=c.address, log_to_driver=False, logging_level="warning")
        try:
            c.wait_for_nodes()
            yield state
        finally:
            ray.shutdown()
            c.shutdown()


def add_worker(state: dict):
    """Start the worker node (resource ``slimbench_test_b``) with its own data folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLIMBENCH_DATA_DIR", str(state["worker_data"]))
        return state["cluster"].add_node(num_cpus=1, resources={"slimbench_test_b": 1},
                                         object_store_memory=OBJECT_STORE_BYTES)


def ray_is_connected() -> bool:
    import ray

    return ray.is_initialized()


def _node_id_with(resource: str) -> str:
    import ray

    [node] = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource)]
    return node["NodeID"]


@pytest.mark.ray
def test_targets_resolve_to_alive_nodes(cluster):
    from benchmark.executors.ray_executor import resolve_targets

    head, worker = _node_id_with("slimbench_test_a"), _node_id_with("slimbench_test_b")
    assert [t.key for t in resolve_targets(["all"])] == [f"node={head}", f"node={worker}"]  # head first
    [t] = resolve_targets([f"node={worker[:10]}"])  # a unique prefix names the node
    assert t.key == f"node={worker}" and worker[:8] in t.label
    assert [t.key for t in resolve_targets(["resource=slimbench_test_b", "all"])][0] == "resource=slimbench_test_b"
    with pytest.raises(ConfigError, match="matches no alive node.*slimbench_test_a"):
        resolve_targets(["resource=lab_t4"])
    stored = [{"key": "node=" + "f" * 56, "label": "gone-box (node ffffffff)"}, {"key": "resource=lab_t4"}]
    executor = make_executor("ray", stored_targets=stored)  # a resumed sweep's targets, as stored
    assert [t.key for t in executor.targets()] == [s["key"] for s in stored]
    assert "gone-box (node ffffffff) is not an alive node" in executor.unavailable(executor.targets()[0])
    assert "no alive node of the Ray cluster has resource lab_t4" in executor.unavailable(executor.targets()[1])
    assert executor.unavailable(resolve_targets(["all"])[1]) is None
    executor.close()
    assert ray_is_connected()  # the executor keeps a connection it did not make


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_across_two_nodes_and_resume_after_losing_one(cluster, cnn_onnx, tmp_path):
    """Every row lands in the driver's store with its node; killing the worker mid-sweep
    interrupts only its unfinished rows, and a resume runs them on a replacement node."""
    model = _copy_model(cnn_onnx, tmp_path / "model")
    head = _node_id_with("slimbench_test_a")
    cfg = SweepConfig(model=str(model), data="digits", precisions=("fp32", "int8-static"), backends=("onnxruntime",),
                      batch_sizes=(1,), executor="ray",
                      targets=("resource=slimbench_test_a", "resource=slimbench_test_b"), **FAST)
    store = Store(tmp_path / "r.db")

    def both_targets_started():
        started = {r.target for r in store.get_results() if r.status in ("running", "ok")}
        return len(started) == 2

    def worker_int8_running():
        rows = store.get_results()
        return any(r.target == "resource=slimbench_test_b" and r.precision == "int8-static" and r.status == "running"
                   for r in rows)

    away = tmp_path / "away"
    with _sweep_thread(store, lambda: run_sweep(cfg, store, job_timeout_s=120)) as (done, runner):
        _wait(both_targets_started, 240, "a job on each node")
        model.parent.rename(away)  # shipped already: from now on only the nodes' copies exist
        _wait(worker_int8_running, 240, "the worker node's int8 job to start")
        lost_node = _node_id_with("slimbench_test_b")
        cluster["cluster"].remove_node(cluster["worker"], allow_graceful=False)
        runner.join(240)
        assert not runner.is_alive()
    sid = done["id"]
    rows = {(r.target, r.precision): r for r in store.get_results(sid)}
    assert len(rows) == 4
    for precision in ("fp32", "int8-static"):
        row = rows[("resource=slimbench_test_a", precision)]
        assert row.status == "ok", row.error
        assert row.env["ray_node"]["node_id"] == head and row.env["hostname"]
    worker_fp32 = rows[("resource=slimbench_test_b", "fp32")]
    assert worker_fp32.status == "ok" and worker_fp32.env["ray_node"]["node_id"] == lost_node
    lost = rows[("resource=slimbench_test_b", "int8-static")]
    assert lost.status == "interrupted" and "lost with resource slimbench_test_b" in lost.error
    rec = store.get_sweep(sid)
    assert rec.status == "interrupted" and f"--resume {sid}" in rec.error
    assert store.missing_runs(sid) == [lost.key]
    assert not list((Path(cluster["head_data"]) / "work").glob("ray-*"))  # the sweep's folder is removed
    assert list((Path(cluster["worker_data"]) / "work").glob("ray-*/files/*/weights/cnn.data"))  # the dead one's stays

    away.rename(model.parent)  # a resume ships the model again
    cluster["worker"] = add_worker(cluster)
    cluster["cluster"].wait_for_nodes()
    assert run_sweep(None, store, resume_sweep_id=sid, job_timeout_s=120) == sid
    after = {(r.target, r.precision): r for r in store.get_results(sid)}
    resumed = after[("resource=slimbench_test_b", "int8-static")]
    assert resumed.status == "ok", resumed.error
    assert resumed.env["ray_node"]["node_id"] == _node_id_with("slimbench_test_b") != lost_node
    for key, row in rows.items():  # the finished rows were not run again
        if row.status == "ok":
            assert after[key].id == row.id and after[key].started_at == row.started_at
    assert store.get_sweep(sid).status == "done"


@contextlib.contextmanager
def _sweep_thread(store: Store, run):
    """Run ``run()`` (a sweep) in a thread; yields a dict that gets its return value under "id". A
    sweep still running when the block ends (a failed assertion) is cancelled and waited for."""
    done: dict = {}
    runner = threading.Thread(target=lambda: done.setdefault("id", run()))
    runner.start()
    try:
        yield done, runner
    finally:
        if runner.is_alive():
            for rec in store.list_sweeps():
                store.request_cancel(rec.id)
            runner.join(120)


def _job_children(node_data: Path) -> list:
    """Job processes (spawned children) started by the cluster's nodes."""
    import psutil

    out = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "spawn_main" in " ".join(proc.info["cmdline"] or []) and \
                    proc.environ().get("SLIMBENCH_DATA_DIR") == str(node_data):
                out.append(proc)
        except psutil.Error:
            continue
    return out


@pytest.mark.ray
def test_cancel_reaches_the_job_on_its_node(cluster, tmp_path):
    """A plugin file is shipped to the node; cancelling the sweep kills the node's hanging job."""
    from benchmark.sweep import cancel_sweep

    cfg = SweepConfig(model="sample:digits-cnn", backends=("crash-hang",), batch_sizes=(1,), executor="ray",
                      targets=("resource=slimbench_test_a",), **FAST)
    store = Store(tmp_path / "r.db")
    with _sweep_thread(store, lambda: run_sweep(cfg, store, job_timeout_s=120, plugins=[PLUGIN])) as (done, runner):
        _wait(lambda: any(r.status == "running" for r in store.get_results()), 120, "the job to start")
        [child] = _wait(lambda: _job_children(cluster["head_data"]), 60, "the job process on the node")
        assert "OMP_NUM_THREADS" not in child.environ()  # Ray's per-task thread cap does not reach the job
        [shipped] = (Path(cluster["head_data"]) / "work").glob("ray-*/files/*/plugins_crash.py")
        assert shipped.read_bytes() == Path(PLUGIN).read_bytes()
        [rec] = store.list_sweeps()
        cancel_sweep(store, rec.id)
        runner.join(60)
        assert not runner.is_alive()
    assert store.get_sweep(done["id"]).status == "cancelled"
    assert [r.status for r in store.get_results(done["id"])] == ["cancelled"]
    _wait(lambda: not _job_children(cluster["head_data"]), 30, "the node's job process to end")
    assert not shipped.exists()


@pytest.mark.ray
def test_cli_runs_on_one_node_from_a_toml_config(cluster, tmp_path):
    worker, address = _node_id_with("slimbench_test_b"), cluster["cluster"].address
    config = tmp_path / "sweep.toml"
    config.write_text(f'model = "sample:digits-cnn"\nbackend = "onnxruntime"\nexecutor = "ray"\n'
                      f'ray_address = "{address}"\ntargets = ["node={worker[:12]}"]\n')
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "run", "--config", str(config), "--min-duration", "0.05",
                           "--min-iters", "3", "--eval-samples", "32", "--threads", "1", "--db", str(tmp_path / "r.db"),
                           "--json", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "target" in proc.stdout.splitlines()[1] and f"(node {worker[:8]})" in proc.stdout
    [row] = json.loads(out.read_text())
    assert row["status"] == "ok" and row["target"] == f"node={worker}"
    assert row["env"]["ray_node"]["node_id"] == worker


@pytest.mark.ray
def test_run_page_lists_the_cluster_machines_as_targets(cluster):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).parents[1] / "app_pages" / "run.py"), default_timeout=120).run()
    next(r for r in at.radio if r.label == "Run on").set_value("ray").run()
    next(t for t in at.text_input if t.label == "Ray address").set_value(cluster["cluster"].address).run()
    next(b for b in at.button if b.label == "List the cluster's machines").click().run()
    assert not at.exception and not at.error
    head, worker = _node_id_with("slimbench_test_a"), _node_id_with("slimbench_test_b")
    listing = next(c.value for c in at.caption if f"(node {worker[:8]})" in c.value)
    assert f"(node {head[:8]}) (head): 1 CPU, 0 GPU; resources slimbench_test_a" in listing
    assert f"(node {worker[:8]}): 1 CPU, 0 GPU; resources slimbench_test_b" in listing
    options = next(w for w in at.multiselect if w.label == "Target machines").options
    assert {"all", "resource=slimbench_test_a", "resource=slimbench_test_b", f"node={head}", f"node={worker}"} <= set(options)
    next(w for w in at.multiselect if w.label == "Target machines").set_value(["resource=slimbench_test_b"]).run()
    assert not at.error and any(b.label == "Run sweep" for b in at.button)

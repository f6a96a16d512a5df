"""The hostile-input corpus: every case gets one clear line, and no file runs its code without the opt-in.

Payload files are built in each test (``hostile_files``): their pickles write the unpickling
process's pid to a *marker* file, which must never appear unless the file is trusted, and then
only from a child process.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import hostile_files as h
from benchmark.__main__ import main
from benchmark.data import load_npz, random_dataset, resolve_dataset
from benchmark.errors import (
    DataError, ModelLoadError, ResourceError, StoreError, UnsafeArchiveError, UnsafeModelError, memory_error,
)
from benchmark.inspection import inspect_isolated
from benchmark.models import load_model
from benchmark.models.pt2_check import expression_problem, guard_problem
from benchmark.safety import check_onnx_external_data, safe_extract_zip
from benchmark.store import Store

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "app_pages"
OPT_IN = "Only if you trust the file, allow it with --trust-pickle (CLI) or 'I trust this file' (dashboard)"
MB = 2**20


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran.txt"


def _one_line(text: str) -> str:
    assert "\n" not in text.strip(), text
    return text


def _cli(*argv, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmark", *argv], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


# ================================================================================================
# 1. torch.export archives (.pt2): refused before torch reads them, unless trusted
# ================================================================================================
PT2_CASES = {
    "pickled_weight": (lambda d, m: h.pt2_pickled_weight(d, m),
                       "weight 'bias' is stored as a pickle (use_pickle), loaded with weights_only=False"),
    "pickled_sample_inputs": (lambda d, m: h.pt2_pickled_sample_inputs(d, m),
                              "data/sample_inputs/model.pt needs full unpickling (it does not load with "
                              "weights_only=True)"),
    "opaque_constant": (lambda d, m: h.pt2_opaque_constant(d, m),
                        "constant 'evil' is an opaque Python object stored as a pickle"),
    "guard_code": (lambda d, m: h.pt2_guard_code(d, m), "program 'model' has guard code torch would run as Python"),
    "sympy_expression": (lambda d, m: h.pt2_sympy_expression(d, m),
                         "program 'model' has a symbolic expression torch would evaluate as Python"),
    "aoti": (lambda d, m: h.pt2_aoti(d), "it holds AOTInductor compiled code (a shared library torch loads and runs)"),
    "defaultdict_spec": (lambda d, m: h.pt2_defaultdict_spec(d),
                         "has an input/output spec that imports os.system as a defaultdict factory"),
    "legacy_fallback": (lambda d, m: h.pt2_legacy_fallback(d, m),
                        "serialized_constants.pt needs full unpickling (it does not load with weights_only=True)"),
}


@pytest.mark.parametrize("case", sorted(PT2_CASES))
def test_pt2_code_paths_are_refused_by_the_engine(case, tmp_path, marker):
    build, reason = PT2_CASES[case]
    path = build(tmp_path, marker)
    with pytest.raises(UnsafeModelError) as err:
        load_model(str(path))
    message = _one_line(str(err.value))
    assert message.startswith(f"{path.name}: loading this torch.export archive would run code from the file: ")
    assert reason in message and message.endswith(f"it was refused. {OPT_IN}")
    assert not marker.exists()


def test_pt2_payloads_really_run_in_torch(tmp_path, marker, monkeypatch):
    """The fixtures are live: torch.export.load itself runs both payloads of the issue."""
    import logging

    import torch

    # torch logs its weights_only=False fallback with a format string its arguments do not fill
    monkeypatch.setattr(logging.getLogger("torch._export.serde.serialize"), "disabled", True)

    for build in (h.pt2_pickled_weight, h.pt2_pickled_sample_inputs):
        marker.unlink(missing_ok=True)
        torch.export.load(str(build(tmp_path, marker)))
        assert int(marker.read_text()) == os.getpid()


def test_pt2_valid_archives_load_with_guards_and_symbols(tmp_path):
    import torch

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x, mask):
            return self.fc(x * mask)

    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(TwoInputs(), (torch.randn(2, 4), torch.ones(2, 4)),
                             dynamic_shapes={"x": {0: batch}, "mask": {0: batch}})
    assert ep._guards_code  # a real shape guard, which the check must accept
    torch.export.save(ep, str(tmp_path / "two.pt2"))
    model = load_model(str(tmp_path / "two.pt2"))
    assert [s.shape for s in model.inputs] == [("batch", 4), ("batch", 4)] and not model.notes
    assert tuple(model.torch_module(torch.randn(3, 4), torch.ones(3, 4)).shape) == (3, 2)
    assert load_model(str(h.exported_linear(tmp_path / "plain.pt2"))).inputs[0].shape == (1, 4)


def test_pt2_declared_shape_over_an_empty_record_is_refused(tmp_path):
    path = h.pt2_empty_weight_record(tmp_path)
    with pytest.raises(ModelLoadError, match=r"^empty_weight\.pt2: weight 'weight' declares shape 100000x100000 "
                                             r"\(40,000,000,000 bytes\) but its record data/weights/weight_0 holds "
                                             r"0 bytes; the archive is corrupt or crafted$"):
        load_model(str(path))


@pytest.mark.parametrize("text", ["s0", "Symbol('s31', positive=True, integer=True)", "Mul(Integer(2), s0) + 1",
                                  "Max(1, FloorDiv(s0 - 1, 2))", "Eq(Mod(s0, 2), 0)"])
def test_sympy_expressions_torch_writes_are_accepted(text):
    assert expression_problem(text) is None


@pytest.mark.parametrize("text", ["__import__('os').system('x')", "s0.__class__", "eval('1')", "Symbol('x'+'y')",
                                  "lambda: 1", "s0\nimport os", "Symbol('s0', positive=__import__('os'))"])
def test_sympy_expressions_with_python_are_refused(text):
    assert expression_problem(text)


@pytest.mark.parametrize("text", ["L['x'].size()[0] == L['mask'].size()[0]", "(L['ids'].size()[1] % 2) == 0",
                                  "2 <= L['x'].size()[0] <= 64", "math.floor(L['x'].size()[0] / 2) == 1",
                                  "torch.sym_max(L['x'].size()[0], 2) == 4"])
def test_shape_guards_are_accepted(text):
    assert guard_problem(text) is None


@pytest.mark.parametrize("text", ["torch.os.system('x')", "L['x\"); import os; (\"'].size()[0] == 1",
                                  "L['x'].__class__", "open('f').read() == ''", "L['x'].size()[0] == 1\nimport os",
                                  "getattr(L, 'x')", "[c for c in ()]"])
def test_guards_with_python_are_refused(text):
    assert guard_problem(text)


def test_torchscript_pickle_globals_are_rejected_by_torch(tmp_path, marker):
    """torch.jit.load reads TorchScript's own pickles: a Python GLOBAL such as os.system is not a type it knows."""
    import pickle

    import torch

    class System:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.jit.script(torch.nn.Linear(4, 2)).save(str(tmp_path / "ts.pt"))
    h.rewrite(tmp_path / "ts.pt", tmp_path / "evil_ts.pt", lambda n, d: pickle.dumps(System(), 2) if n == "data.pkl" else d)
    with pytest.raises(ModelLoadError, match=r"^evil_ts\.pt: expected a TorchScript archive but it cannot be loaded "
                                             r"\(Unknown type name 'posix\.system':\)$"):
        load_model(str(tmp_path / "evil_ts.pt"))
    assert not marker.exists()


# --- the same files through the CLI, the isolated inspection and the dashboard ------------------
@pytest.mark.parametrize("case", ["pickled_weight", "pickled_sample_inputs"])
def test_cli_info_and_run_refuse_hostile_pt2(case, tmp_path, marker):
    path = PT2_CASES[case][0](tmp_path, marker)
    info = _error_line(_cli("info", str(path)))
    assert info.startswith(f"error: {path.name}: loading this torch.export archive would run code") and OPT_IN in info
    run = _error_line(_cli("run", str(path), "--backend", "onnxruntime", "--min-duration", "0.01", "--min-iters", "1",
                           "--quiet", "--db", str(tmp_path / "r.db")))
    assert run == info
    assert not marker.exists()


def test_trusted_pt2_runs_its_payload_only_in_a_child(tmp_path, marker, capsys):
    path = h.pt2_pickled_weight(tmp_path, marker)
    assert main(["info", str(path), "--trust-pickle", "--json"]) == 0
    assert '"format": "exported"' in capsys.readouterr().out
    assert int(marker.read_text()) != os.getpid()  # `slimbench info` itself never unpickles
    marker.unlink()
    info = inspect_isolated(str(h.pt2_pickled_sample_inputs(tmp_path, marker)), trust_pickle=True)
    assert info["format"] == "exported" and "marked trusted" in " ".join(info["notes"])
    assert int(marker.read_text()) != os.getpid()


def _model_page() -> AppTest:
    at = AppTest.from_file(str(PAGES / "model.py"), default_timeout=120).run()
    at.radio[0].set_value("Upload a file").run()
    return at


def _uploaded_files() -> list[Path]:
    uploads = Path(os.environ["SLIMBENCH_DATA_DIR"]) / "uploads"
    return [p for p in uploads.rglob("*") if p.is_file()] if uploads.exists() else []


@pytest.mark.parametrize("case", ["pickled_weight", "pickled_sample_inputs"])
def test_dashboard_refuses_hostile_pt2_and_removes_it(case, tmp_path, marker):
    path = PT2_CASES[case][0](tmp_path, marker)
    at = _model_page()
    at.file_uploader[0].upload(path.name, path.read_bytes()).run()
    assert not at.exception and len(at.error) == 1
    message = _one_line(at.error[0].value)
    assert "would run code from the file" in message and "Tick 'I trust this file'" in message
    assert not marker.exists()
    assert _uploaded_files() == []  # the refused file is not kept on disk
    assert at.session_state["model"]["source"] == "sample:digits-cnn"
    next(c for c in at.checkbox if c.label.startswith("I trust this file")).check().run()
    assert not at.exception and not at.error
    assert int(marker.read_text()) != os.getpid()  # loaded in a child, never in the server
    assert at.session_state["model"]["trust_pickle"] is True and Path(at.session_state["model"]["source"]).is_file()


# ================================================================================================
# 2. memory: sizes are computed from shapes and headers before anything is allocated
# ================================================================================================
def test_cli_info_huge_input_is_refused_before_allocating():
    line = _error_line(_cli("info", "sample:digits-cnn", "--input", "image:1x1x100000x100000"))
    assert line.startswith("error: example inputs of digits-cnn at batch 1 (image 1x1x100000x100000) needs "
                           "38,147 MB (37.3 GiB), more than the ")
    assert line.endswith("use smaller shapes, batch sizes or samples")


def test_dashboard_huge_shape_is_one_line_error():
    at = AppTest.from_file(str(PAGES / "model.py"), default_timeout=120).run()
    next(t for t in at.text_input if t.label == "image (float32)").set_value("1x1x100000x100000").run()
    assert not at.exception and len(at.error) == 1
    assert _one_line(at.error[0].value).startswith(
        "example inputs of digits-cnn at batch 1 (image 1x1x100000x100000) needs 38,147 MB (37.3 GiB)")


def test_memory_limit_caps_generated_inputs(monkeypatch):
    from benchmark.config import InputSpec

    monkeypatch.setenv("SLIMBENCH_MEMORY_LIMIT_MB", "16")
    big = load_model("sample:digits-cnn").with_inputs([InputSpec("image", (1, 1, 4096, 4096))])
    limit = r"needs 64 MB \(0\.1 GiB\), more than the 16 MB available \(SLIMBENCH_MEMORY_LIMIT_MB=16\)"
    with pytest.raises(ResourceError, match=r"^example inputs of digits-cnn at batch 1 \(image 1x1x4096x4096\) " + limit):
        big.example_inputs(1)
    with pytest.raises(ResourceError, match=limit):  # the same line from the inspection child
        inspect_isolated("sample:digits-cnn", ["image:1x1x4096x4096"])
    with pytest.raises(ResourceError, match=r"^1000 random samples of image needs"):
        random_dataset(big.inputs, 1000)


@pytest.mark.parametrize("dtype", ["float32", "float16", "int64", "bool"])
def test_random_inputs_are_made_in_their_own_dtype(dtype):
    from benchmark.config import InputSpec
    from benchmark.models.base import LoadedModel

    model = LoadedModel("m", "onnx", "onnx", [InputSpec("x", ("batch", 2000, 2000), dtype)])
    tracemalloc.start()
    feeds = model.example_inputs(1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arr = feeds["x"]
    assert arr.dtype == np.dtype(dtype) and arr.shape == (1, 2000, 2000)
    assert peak < arr.nbytes + 5 * MB  # at most one 4 MB chunk besides the array: no float64 / int64 copy
    data = random_dataset(model.inputs, 3)
    assert len(data) == 3 and data.arrays["x"].dtype == np.dtype(dtype)


def test_sweep_random_data_honours_eval_samples(tmp_path):
    import json

    model = h.onnx_huge_initializer(tmp_path / "small.onnx", n=2)  # a valid 2x2 MatMul, no dataset
    line = _cli("run", str(model), "--backend", "onnxruntime", "--min-duration", "0.01", "--min-iters", "1",
                "--eval-samples", "5", "--quiet", "--db", str(tmp_path / "r.db"), "--json", str(tmp_path / "rows.json"))
    assert line.returncode == 0, line.stderr[-2000:]
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert any("fidelity measured on 5 random inputs" in w for r in rows for w in r["warnings"])


def test_npz_header_larger_than_its_data_is_refused(tmp_path):
    path = h.npz_lying_header(tmp_path / "lying.npz")
    with pytest.raises(DataError, match=r"^lying\.npz: array 'image' declares shape \[1000000000, 1, 8, 8\] float32 "
                                        r"\(238\.4 GiB\) but the file holds 1,024 bytes of it; the file is corrupt or "
                                        r"crafted$"):
        load_npz(path, load_model("sample:digits-cnn").inputs)


@pytest.mark.parametrize("external", [False, True])
def test_onnx_tensor_larger_than_its_data_is_refused(tmp_path, external):
    path = h.onnx_huge_initializer(tmp_path / "huge.onnx", external=external)
    expected = ("huge.onnx declares shape 1000000x1000000 (4,000,000,000,000 bytes) but holds 16 bytes; the file is "
                "corrupt or crafted")
    with pytest.raises(ModelLoadError, match=r"^tensor 'w' of " + expected.replace("(", r"\(").replace(")", r"\)")):
        load_model(str(path))
    if external:
        assert _error_line(_cli("info", str(path))) == f"error: tensor 'w' of {expected}"


def test_memory_errors_are_named_not_internal(tmp_path):
    from benchmark.jobs import run_isolated
    from benchmark.sweep.feeds import internal_error as _internal

    oom = MemoryError("Unable to allocate 238. GiB for an array with shape (1000000000, 1, 8, 8) and data type float32")
    assert str(memory_error(oom)).startswith("not enough memory: Unable to allocate 238. GiB for an array")
    torch_oom = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                             "memory: you tried to allocate 40000000000 bytes.")
    assert "you tried to allocate 40000000000 bytes" in str(memory_error(torch_oom, "loading x"))
    assert memory_error(RuntimeError("shape mismatch")) is None
    assert _internal(oom).startswith("not enough memory:")
    plugin = tmp_path / "oom_job.py"
    plugin.write_text("def job(payload, emit):\n    raise MemoryError('Unable to allocate 40.0 GiB for an array')\n")
    out = run_isolated("slimbench_plugin_oom_job:job", None, plugins=[str(plugin)], timeout_s=60)
    assert not out.ok and out.error_type == "ResourceError" and out.is_bad_input
    assert out.error == "not enough memory: Unable to allocate 40.0 GiB for an array; use smaller inputs, batch sizes " \
                        "or samples"


# ================================================================================================
# 3. inputs that used to escape the one-line error path
# ================================================================================================
def test_corrupt_database_is_one_line_with_what_to_do(tmp_path, monkeypatch):
    bad = tmp_path / "results.db"
    bad.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(StoreError) as err:
        Store(bad)
    assert _one_line(str(err.value)).startswith(f"results database {bad} cannot be used (file is not a database); "
                                                "move the file away (or restore a backup)")
    monkeypatch.setenv("SLIMBENCH_DB", str(bad))
    for name in ("results", "history", "run"):
        at = AppTest.from_file(str(PAGES / f"{name}.py"), default_timeout=120).run()
        assert not at.exception, (name, at.exception)
        errors = [e.value for e in at.error]
        assert any(str(bad) in e and "move the file away" in e for e in errors), (name, errors)


def test_not_a_database_is_named_at_once(tmp_path):
    start = time.monotonic()
    line = _error_line(_cli("sweeps", "--db", "/proc/version", timeout=60))
    assert time.monotonic() - start < 20  # no 30 s wait for a lock that can never be taken
    assert line.startswith("error: /proc/version is not a SQLite database (it starts with b'Linux version")
    with pytest.raises(StoreError, match=r"^results database /dev/null is not a regular file"):
        Store("/dev/null")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(StoreError, match=r"is not a SQLite database \(it starts with b'hello'\)"):
        Store(text)


def test_database_where_no_lock_can_be_made_is_named_at_once():
    start = time.monotonic()
    with pytest.raises(StoreError, match=r"^cannot create the set-up lock /proc/self/r\.db\.init\.lock next to the "
                                         r"results database \(No such file or directory\); use a --db path in a "
                                         r"writable folder$"):
        Store("/proc/self/r.db")
    assert time.monotonic() - start < 5


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_database_folder_is_named_at_once(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        start = time.monotonic()
        with pytest.raises(StoreError, match=r"cannot create the set-up lock .*ro/r\.db\.init\.lock next to the results "
                                             r"database \(Permission denied\); use a --db path in a writable folder"):
            Store(folder / "r.db")
        assert time.monotonic() - start < 5
    finally:
        folder.chmod(0o700)


def test_closed_stdout_is_not_a_traceback():
    proc = subprocess.Popen([sys.executable, "-m", "benchmark", "samples"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    proc.stdout.close()  # like `| head` exiting before slimbench writes
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141 and b"Traceback" not in err and b"BrokenPipe" not in err, err


def _interrupted_sweep(store: Store) -> int:
    cfg = {"sweep": {"model": "sample:digits-cnn", "precisions": ["fp32"], "prune_ratios": [0.0],
                     "backends": ["onnxruntime"], "batch_sizes": [1]}}
    return store.create_sweep("sample:digits-cnn", cfg, status="interrupted", total_runs=1)


def test_only_one_runner_can_claim_a_sweep(tmp_path):
    store = Store(tmp_path / "r.db")
    sid = _interrupted_sweep(store)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def claim():
        barrier.wait()
        try:
            Store(tmp_path / "r.db").claim_sweep(sid)
            outcomes.append("claimed")
        except StoreError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("claimed") == 1
    assert all("one runner per sweep" in o for o in outcomes if o != "claimed")


def test_second_resume_of_a_running_sweep_is_refused(tmp_path):
    from benchmark.sweep import run_sweep

    db = tmp_path / "r.db"
    store = Store(db)
    sid = _interrupted_sweep(store)
    holder = subprocess.Popen([sys.executable, "-c", f"import time; from benchmark.store import Store; "
                               f"Store({str(db)!r}).claim_sweep({sid}); print('claimed', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(StoreError, match=rf"^sweep {sid} is still pending \(runner pid {holder.pid}\); one runner "
                                             r"per sweep: wait for it or cancel it first$"):
            run_sweep(None, store, resume_sweep_id=sid)
        line = _error_line(_cli("run", "--resume", str(sid), "--db", str(db), "--quiet"))
        assert f"sweep {sid} is still pending (runner pid {holder.pid}); one runner per sweep" in line
    finally:
        holder.kill()
        holder.wait()
    assert store.get_sweep(sid).status == "pending"  # nothing was measured by the refused runners
    assert store.get_results(sid) == []


def test_resume_that_fails_validation_gives_the_sweep_back(tmp_path, monkeypatch):
    from benchmark.sweep import run_sweep

    store = Store(tmp_path / "r.db")
    sid = _interrupted_sweep(store)
    monkeypatch.setenv("SLIMBENCH_MEMORY_LIMIT_MB", "lots")
    with pytest.raises(Exception, match="SLIMBENCH_MEMORY_LIMIT_MB must be a number"):
        run_sweep(None, store, resume_sweep_id=sid)
    assert store.get_sweep(sid).status == "interrupted"


@pytest.mark.parametrize("labels,match", [
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 1000], r"'labels' holds class id 1000 \(labels range 0\.\.1000\), outside the "
                                        r"model's 10 classes \(0\.\.9\)"),
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, -5], r"'labels' holds class id -5 \(labels range -5\.\.8\), outside class ids "
                                      r"\(0 or more\)"),
])
def test_labels_outside_the_models_classes_are_refused(tmp_path, labels, match):
    path = h.digits_npz(tmp_path / "data.npz", labels=labels)
    with pytest.raises(DataError, match=match):
        resolve_dataset(str(path), load_model("sample:digits-cnn"))


def test_labels_beyond_the_logits_fail_the_evaluation():
    from benchmark.measure.accuracy import topk_accuracy

    with pytest.raises(DataError, match=r"evaluation data: 'labels' holds class id 12 .* the model's 10 classes"):
        topk_accuracy(np.zeros((2, 10)), np.array([1, 12]), 1)


def test_nan_and_inf_in_user_data_are_named_at_load_time(tmp_path):
    image = np.zeros((10, 1, 8, 8), np.float32)
    image[3, 0, 1, 1] = np.nan
    image[5, 0, 2, 2] = np.inf
    path = h.digits_npz(tmp_path / "nan.npz", image=image)
    with pytest.raises(DataError, match=r"^nan\.npz: array 'image' holds 1 NaN and 1 Inf values \(first in sample 3\); "
                                        r"replace or drop those samples$"):
        load_npz(path, load_model("sample:digits-cnn").inputs)


def test_refused_dataset_upload_is_removed(tmp_path):
    path = h.npz_lying_header(tmp_path / "lying.npz")
    at = AppTest.from_file(str(PAGES / "run.py"), default_timeout=120).run()
    data_box = next(s for s in at.selectbox if s.label == "Evaluation data")
    data_box.set_value(data_box.options[-1]).run()
    at.file_uploader[0].upload(path.name, path.read_bytes()).run()
    assert not at.exception
    assert any("array 'image' declares shape [1000000000, 1, 8, 8]" in e.value for e in at.error)
    assert _uploaded_files() == []


def test_refused_zip_upload_is_removed(tmp_path):
    bad = tmp_path / "slip.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("../../evil.onnx", b"x")
    at = _model_page()
    at.file_uploader[0].upload(bad.name, bad.read_bytes()).run()
    assert not at.exception
    assert any("entry '../../evil.onnx' contains a '..' component" in e.value for e in at.error)
    assert _uploaded_files() == []


# ================================================================================================
# cases that were already one clear line (kept here so the corpus is complete)
# ================================================================================================
def test_full_pickle_is_refused(tmp_path, marker):
    path = tmp_path / "whole.pt"
    path.write_bytes(h.torch_saved(h.Payload(marker, "__import__('torch').nn.Linear(4, 2)")))
    with pytest.raises(UnsafeModelError, match=r"^whole\.pt: this file is a full pickle .* it was refused\. Save a "
                                               r"state_dict instead\. Only if you trust the file"):
        load_model(str(path))
    assert not marker.exists()


def test_zip_slip_and_zip_bomb_are_refused(tmp_path):
    slip = tmp_path / "slip.zip"
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("/etc/evil", b"x")
    with pytest.raises(UnsafeArchiveError, match=r"entry '/etc/evil' is an absolute path"):
        safe_extract_zip(slip, tmp_path / "out", max_total_bytes=MB, max_files=10)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(20 * MB))
    with pytest.raises(UnsafeArchiveError, match=r"expands to 21\.0 MB; the limit is 1\.0 MB"):
        safe_extract_zip(bomb, tmp_path / "out", max_total_bytes=MB, max_files=10)
    assert not (tmp_path / "out").exists()


def test_external_data_escape_is_refused(tmp_path):
    import onnx

    path = h.onnx_huge_initializer(tmp_path / "m.onnx", external=True, n=2)
    model = onnx.load(str(path), load_external_data=False)
    model.graph.initializer[0].external_data[0].value = "../../etc/passwd"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UnsafeArchiveError, match=r"stores its data at '\.\./\.\./etc/passwd': a path with '\.\.'"):
        check_onnx_external_data(path)


@pytest.mark.parametrize("content,match", [
    (b"not a zip at all", r"is not a \.npz archive \(no zip header\)"),
    (b"", r"the file is empty"),
])
def test_malformed_npz_is_refused(tmp_path, content, match):
    path = tmp_path / "bad.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_npz(path, load_model("sample:digits-cnn").inputs)


def test_object_arrays_in_npz_are_refused(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, image=np.array([object()] * 10, dtype=object))
    with pytest.raises(DataError, match=r"array 'image' is an object array; .* refused"):
        load_npz(path, load_model("sample:digits-cnn").inputs)


def test_bad_flag_is_one_line():
    line = _error_line(_cli("run", "sample:digits-cnn", "--precision", "int4", "--quiet"))
    assert "precision must be one of" in line and "'int4'" in line

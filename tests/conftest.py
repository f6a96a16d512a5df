"""Shared fixtures and the marker hook: `gpu` needs CUDA, `tensorrt` needs the TensorRT package."""
from __future__ import annotations

import importlib.util
import os
import secrets

import pytest

# Ray reads its authentication mode once per process, when it is first imported, so the test
# process settles it here, before any test can import ray: token authentication with a token of
# this test session only (nothing is written to ~/.ray); the local clusters the `ray` tests start
# inherit it. No usage statistics are sent.
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config, items):
    cuda = _cuda_available()
    trt = importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    skip_trt = pytest.mark.skip(reason="needs TensorRT: the 'tensorrt' package is not installed (pip install 'slimbench[tensorrt]' from NVIDIA's index)")
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
        if "tensorrt" in item.keywords and (not trt or not cuda):
            item.add_marker(skip_trt if not trt else skip_gpu)


@pytest.fixture(scope="session")
def _shared_roofline_cache(tmp_path_factory):
    """One peaks cache for the whole test session: the peaks are a per-machine measurement (a few
    seconds), measured by the first sweep that needs them, as on a user's machine."""
    return tmp_path_factory.mktemp("roofline") / "roofline.json"


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory, monkeypatch, _shared_roofline_cache):
    """Every test gets its own Slimbench data dir (results DB, locks, uploads), never the user's;
    the device's peaks cache is shared by the session."""
    if "SLIMBENCH_DATA_DIR_KEEP" not in os.environ:
        d = tmp_path_factory.mktemp("slimbench-data")
        monkeypatch.setenv("SLIMBENCH_DATA_DIR", str(d))
        monkeypatch.delenv("SLIMBENCH_DB", raising=False)
        monkeypatch.setenv("SLIMBENCH_ROOFLINE_CACHE", str(_shared_roofline_cache))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on a shared 2-core machine two spinning threads slow small models a lot."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

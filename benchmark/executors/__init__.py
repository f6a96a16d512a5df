"""Executors: where a sweep's isolated jobs run.

- ``local`` (default): on this machine, through its per-device queue.
- ``ray``: on the nodes of a Ray cluster, each node under its own per-device queue; the rows
  come back into this machine's results store (:mod:`benchmark.executors.ray_executor`).

Ray is imported only when the ``ray`` executor is used (``pip install 'slimbench[ray]'``).
"""
from __future__ import annotations

import importlib.util
from typing import Any

from ..errors import ConfigError
from .base import EXECUTORS, LOCAL, LOST, RAY_INSTALL, Executor, Target, parse_target, run_per_target
from .local import LocalExecutor


def executor_unavailable(name: str) -> str | None:
    """Why executor ``name`` cannot be used on this machine (Ray not installed), or None."""
    if name == "ray" and importlib.util.find_spec("ray") is None:
        return f"the ray executor needs Ray, which is not installed here: {RAY_INSTALL}"
    return None


def make_executor(name: str, *, ray_address: str | None = None, targets: tuple[str, ...] = (),
                  stored_targets: list[dict[str, Any]] | None = None) -> Executor:
    """The executor ``name`` (``local`` or ``ray``). For Ray: connect to ``ray_address`` (``auto``
    when None) and resolve ``targets``, or reuse ``stored_targets`` (a resumed sweep's)."""
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(ray_address, targets, stored_targets)
    raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}; got {name!r}")


__all__ = ["EXECUTORS", "LOCAL", "LOST", "RAY_INSTALL", "Executor", "LocalExecutor", "Target", "executor_unavailable",
           "make_executor", "parse_target", "run_per_target"]

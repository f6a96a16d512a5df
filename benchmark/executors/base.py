"""What every executor offers a sweep: targets, and one isolated job run on a target.

A *target* is where a sweep's runs execute. The local executor has one, the machine running the
sweep (key ``""``, so rows keep the keys they always had). The Ray executor has one per
``--target`` (``node=ID`` or ``resource=NAME``; ``all`` expands to one ``node=ID`` per alive
node); the key is part of every row's key.

:meth:`Executor.execute` mirrors :func:`benchmark.jobs.run_isolated`: it runs
``module:function(payload, emit)`` in an isolated child on the target, under that machine's own
per-device queue, passes each event the child emits to ``on_event`` and returns a
:class:`~benchmark.jobs.JobOutcome`. A job whose machine (or the process holding it) died returns
an outcome with ``error_type`` :data:`LOST`: its unfinished rows become ``interrupted`` and a
resumed sweep runs them again.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..errors import ConfigError

#: ``JobOutcome.error_type`` of a job lost with its machine (node died, worker process killed).
LOST = "lost"
#: The executors a sweep may use.
EXECUTORS = ("local", "ray")
#: How to install what the ``ray`` executor needs.
RAY_INSTALL = "pip install 'slimbench[ray]'"


@dataclass(frozen=True)
class Target:
    """Where runs execute: ``key`` goes into row keys (``""`` = the sweep's own machine);
    ``label`` is for people ("gpu-box-3 (node 1a2b3c4d)", "resource lab_t4")."""

    key: str = ""
    label: str = "local"

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "label": self.label}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Target":
        return cls(str(data.get("key") or ""), str(data.get("label") or data.get("key") or "local"))


LOCAL = Target()


def parse_target(text: str) -> str:
    """A ``--target`` value, normalised: ``all``, ``resource=NAME`` or ``node=ID``."""
    value = str(text).strip()
    if value.lower() == "all":
        return "all"
    kind, sep, name = value.partition("=")
    kind, name = kind.strip().lower(), name.strip()
    if sep and kind in ("resource", "node") and name and "|" not in name:
        return f"{kind}={name}"
    raise ConfigError(f"target must be all, resource=NAME or node=ID; got {text!r}")


class Executor(Protocol):
    """Runs a sweep's isolated jobs on its targets (see the module docstring)."""

    name: str

    def targets(self) -> list[Target]:
        """The concrete targets of this sweep, in order."""

    def unavailable(self, target: Target) -> str | None:
        """Why ``target`` cannot run a job now (no alive machine), or None when it can."""

    def execute(self, target: Target, job: str, payload: dict, *, on_event: Callable[[dict], None],
                on_wait: Callable[[int], None], on_start: Callable[[], None], cancel_check: Callable[[], bool],
                timeout_s: float | None, plugins: list[str], log_path, on_tick: Callable[[], None],
                ticket: dict[str, Any]):
        """Run ``job`` (``module:function``) on ``target`` and return its JobOutcome. ``on_wait(ahead)``
        while the job waits for the target's device, ``on_start()`` once it holds it; ``ticket`` holds
        what the device queue shows about the job (``sweep_id``, ``db``, ``label``)."""

    def close(self) -> None:
        """Release what the executor holds (connections, shipped files)."""


def run_per_target(work: list[tuple[Target, Any]], fn: Callable[[Target, Any], None],
                   stop: threading.Event) -> None:
    """Call ``fn(target, item)`` for each pair: inline for one pair, else one thread per target
    (targets are different machines and run at once). The first exception is re-raised once every
    thread has ended. Ctrl-C while threads run sets ``stop`` (their cancel checks see it), waits
    for them and propagates."""
    if len(work) <= 1:
        for target, item in work:
            fn(target, item)
        return
    errors: list[BaseException] = []

    def body(target: Target, item: Any) -> None:
        try:
            fn(target, item)
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=body, args=pair, name=f"slimbench-target-{pair[0].label}", daemon=True)
               for pair in work]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        stop.set()
        for t in threads:
            t.join()
        raise
    if errors:
        raise errors[0]

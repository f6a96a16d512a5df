"""The local executor: every job on this machine, one after another per device.

A job waits its turn in this machine's per-device queue (:class:`~benchmark.jobs.DeviceQueue`,
shared by every dashboard session and CLI run using the same data folder), then runs in an
isolated child (:func:`~benchmark.jobs.run_isolated`) while it holds the device. The Ray executor
runs this same step on each node.
"""
from __future__ import annotations

from typing import Any, Callable

from ..jobs import DeviceQueue, JobCancelled, JobOutcome, run_isolated
from .base import LOCAL, Target


class LocalExecutor:
    """Jobs run here; one target, :data:`~benchmark.executors.base.LOCAL`."""

    name = "local"

    def targets(self) -> list[Target]:
        return [LOCAL]

    def unavailable(self, target: Target) -> str | None:
        return None

    def execute(self, target: Target, job: str, payload: dict, *, on_event: Callable[[dict], None],
                on_wait: Callable[[int], None], on_start: Callable[[], None], cancel_check: Callable[[], bool],
                timeout_s: float | None, plugins: list[str] | None, log_path, on_tick: Callable[[], None] | None,
                ticket: dict[str, Any]) -> JobOutcome:
        """Hold ``payload["device"]`` in this machine's queue, then run the job isolated."""
        queue = DeviceQueue(payload["device"])
        try:
            with queue.slot(sweep_id=ticket.get("sweep_id"), db=ticket.get("db"), label=ticket.get("label", ""),
                            on_wait=on_wait, cancel_check=cancel_check):
                on_start()
                return run_isolated(job, payload, on_event=on_event, timeout_s=timeout_s, cancel_check=cancel_check,
                                    plugins=plugins, log_path=log_path, on_tick=on_tick)
        except JobCancelled:
            return JobOutcome(False, error="cancelled", error_type="cancelled")

    def close(self) -> None:
        return None

"""Test-only plugin: misbehaving backends and job functions for the isolation tests.

Loaded in job child processes through ``SLIMBENCH_PLUGINS=<path of this file>`` (or the ``plugins``
argument). Registers three backends that exist only while this module is imported:

- ``crash-segv``: ``prepare`` kills its own process with SIGSEGV;
- ``crash-hang``: ``prepare`` sleeps forever;
- ``crash-raise``: ``prepare`` raises a MeasurementError (an ordinary failure);
- ``notes``: the real PyTorch backend, whose session adds a warning each time it is bound (as
  TensorRT does when it builds a per-batch engine), to check which row such notes land on;
- ``close-raise``: the real PyTorch backend, whose session's ``close`` raises after releasing it;
- ``eval-fails-at-4``: the real PyTorch backend, whose ``run`` (the evaluation path; timing uses
  ``run_bound``) raises on a batch of 4 and notes each other batch size it evaluates at.
"""
from __future__ import annotations

import os
import signal
import time

from benchmark.backends.base import Backend, register_backend
from benchmark.errors import MeasurementError


class _CrashBackend(Backend):
    devices = ("cpu", "cuda")
    mode = ""

    def availability_impl(self, device):
        return True, ""

    def prepare_impl(self, variant, device, threads, workdir, options=None):
        if self.mode == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if self.mode == "hang":
            while True:
                time.sleep(60)
        raise MeasurementError(f"{self.name} refuses to prepare {variant.name} (test backend)")


for _mode in ("segv", "hang", "raise"):
    _cls = type(f"Crash{_mode.title()}Backend", (_CrashBackend,), {"name": f"crash-{_mode}", "mode": _mode})
    register_backend(_cls(), replace=True)


class _WrappedTorchBackend(Backend):
    """The real PyTorch backend under another name; ``wrap`` changes its session."""

    devices = ("cpu",)

    def availability_impl(self, device):
        return True, ""

    def prepare_impl(self, variant, device, threads, workdir, options=None):
        from benchmark.backends import get_backend

        session = get_backend("pytorch").prepare(variant, device, threads=threads)
        session.info.backend = self.name
        self.wrap(session)
        return session

    def wrap(self, session):
        raise NotImplementedError


class _NotesBackend(_WrappedTorchBackend):
    name = "notes"

    def wrap(self, session):
        plain_bind = session.bind

        def bind(feeds):
            plain_bind(feeds)
            session.info.warnings.append(f"bound batch {len(next(iter(feeds.values())))}")

        session.bind = bind


class _CloseRaiseBackend(_WrappedTorchBackend):
    name = "close-raise"

    def wrap(self, session):
        plain_close = session.close

        def close():
            plain_close()
            raise RuntimeError("test backend cannot close")

        session.close = close


class _EvalFailsAt4Backend(_WrappedTorchBackend):
    name = "eval-fails-at-4"

    def wrap(self, session):
        plain_run = session.run

        def run(feeds):
            batch = len(next(iter(feeds.values())))
            if batch == 4:
                raise MeasurementError("test backend cannot evaluate a batch of 4")
            note = f"evaluated a batch of {batch}"
            if note not in session.info.warnings:
                session.info.warnings.append(note)
            return plain_run(feeds)

        session.run = run


register_backend(_NotesBackend(), replace=True)
register_backend(_CloseRaiseBackend(), replace=True)
register_backend(_EvalFailsAt4Backend(), replace=True)


# --- job functions for run_isolated ---------------------------------------------------------
def job_return(payload, emit):
    emit({"type": "progress", "message": "working", "fraction": 0.5})
    return {"echo": payload, "pid": os.getpid()}


def job_segv(payload, emit):
    emit({"type": "step", "message": "about to crash"})
    os.kill(os.getpid(), signal.SIGSEGV)


def job_hang(payload, emit):
    emit({"type": "step", "message": "sleeping forever"})
    while True:
        time.sleep(60)


def job_steps(payload, emit):
    """Emits a step every ``payload`` seconds, 4 times: never exceeds a per-step timeout above it."""
    for i in range(4):
        emit({"type": "step", "message": f"step {i}"})
        time.sleep(payload)
    return "done"


def job_bad_input(payload, emit):
    raise MeasurementError("outputs contain NaN (test)")


def job_bug(payload, emit):
    return {}["missing"]


def job_sigkill(payload, emit):
    os.kill(os.getpid(), signal.SIGKILL)


def job_exit(payload, emit):
    print("last words", flush=True)
    os._exit(3)

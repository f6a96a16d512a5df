"""Test-only plugin: a backend whose timings carry deliberate, seeded jitter (the noise fixture).

Loaded in job child processes through ``SLIMBENCH_PLUGINS=<path of this file>`` (or imported by a
test). Registers ``noisy``: the real ONNX Runtime backend, whose timed call (``run_bound``)
sleeps an extra 2-20 ms on a seeded 60 % of the iterations (so the median
itself is slowed down, as on a machine busy with other work), for the first
``SLIMBENCH_NOISY_ATTEMPTS`` timing attempts of a session (each ``bind`` starts one; default 1;
``all`` keeps every attempt noisy). The outputs are ONNX Runtime's, untouched: only time is added,
as a busy machine would add it.
"""
from __future__ import annotations

import os
import time

import numpy as np

from benchmark.backends.base import Backend, register_backend

#: Share of iterations slowed down, and the range of the extra delay (seconds).
NOISY_SHARE = 0.6
DELAY_S = (0.002, 0.020)


def noisy_attempts() -> float:
    value = os.environ.get("SLIMBENCH_NOISY_ATTEMPTS", "1")
    return float("inf") if value == "all" else float(value)


class _NoisyBackend(Backend):
    name = "noisy"
    devices = ("cpu",)

    def availability_impl(self, device):
        return True, ""

    def prepare_impl(self, variant, device, threads, workdir, options=None):
        from benchmark.backends import get_backend

        session = get_backend("onnxruntime").prepare(variant, device, threads=threads, workdir=workdir)
        session.info.backend = self.name
        rng = np.random.default_rng(1234)
        state = {"binds": 0}
        plain_bind, plain_run_bound = session.bind, session.run_bound

        def bind(feeds):
            state["binds"] += 1
            plain_bind(feeds)

        def run_bound():
            out = plain_run_bound()
            if state["binds"] <= noisy_attempts() and rng.random() < NOISY_SHARE:
                time.sleep(rng.uniform(*DELAY_S))
            return out

        session.bind, session.run_bound = bind, run_bound
        return session


register_backend(_NoisyBackend(), replace=True)

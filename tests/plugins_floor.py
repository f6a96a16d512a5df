"""Test-only plugin: a backend with a fixed latency floor (the "nothing is faster" fixture).

Loaded in job child processes through ``SLIMBENCH_PLUGINS=<path of this file>``. Registers
``floored``: the real ONNX Runtime backend whose timed call (``run_bound``) runs the model and then
sleeps until ``FLOOR_S`` has passed since the call began, as a runtime dominated by a fixed cost per
call would (a remote accelerator, a frame-paced pipeline). Outputs are ONNX Runtime's, untouched;
every variant of a small model then takes the same time, so no compression can be significantly
faster than FP32.
"""
from __future__ import annotations

import time

from benchmark.backends.base import Backend, register_backend

FLOOR_S = 0.002


class _FlooredBackend(Backend):
    name = "floored"
    devices = ("cpu",)

    def availability_impl(self, device):
        return True, ""

    def supports_impl(self, variant, device):
        from benchmark.backends import get_backend

        return get_backend("onnxruntime").supports(variant, device)

    def prepare_impl(self, variant, device, threads, workdir, options=None):
        from benchmark.backends import get_backend

        session = get_backend("onnxruntime").prepare(variant, device, threads=threads, workdir=workdir)
        session.info.backend = self.name
        plain_run_bound = session.run_bound

        def run_bound():
            start = time.perf_counter()
            out = plain_run_bound()
            left = FLOOR_S - (time.perf_counter() - start)
            if left > 0:
                time.sleep(left)  # sleeping, not spinning: the CPU is free, as when waiting on a device
            return out

        session.run_bound = run_bound
        return session


register_backend(_FlooredBackend(), replace=True)

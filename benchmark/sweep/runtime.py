"""Runtime settings of a sweep: ONNX Runtime's graph optimization level, inter-op threads and
execution mode, PyTorch's inter-op threads.

Each is a list in :class:`~benchmark.config.SweepConfig`; a backend honours the settings it names
in ``Backend.runtime_options`` (ONNX Runtime the ``ort_*`` ones, PyTorch ``torch_interop_threads``).
For each backend the sweep runs the cross product of the values of the settings it honours.

Naming: a setting with more than one value in the sweep is part of the variant's name on the
backends that honour it, ``int8-static[minmax]@ort-opt=basic`` (several: comma separated, in the
order of :data:`SETTINGS`), so that a row's key (variant | backend | batch) stays unique; a setting
with one value keeps names as they are. Every row records the settings its backend honoured in
``runtime`` (and the session's own record of what it used in ``env.session.options``).

Process-wide settings (PyTorch's inter-op thread pool is sized once per process) split a variant's
runs into one job process per value.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from ..errors import BenchmarkError
from ..naming import RUNTIME_TAGS, SEPARATOR


@dataclass(frozen=True)
class RuntimeSetting:
    """One runtime setting: its key in a run's ``runtime`` dict, its SweepConfig list field, its tag
    in variant names, and whether it is fixed per process."""

    key: str
    field: str
    tag: str
    per_process: bool = False

    def text(self, value: Any) -> str:
        return f"{self.tag}={value}"


#: Every runtime setting, in naming order.
SETTINGS: tuple[RuntimeSetting, ...] = (
    RuntimeSetting("ort_graph_opt_level", "ort_opt_levels", RUNTIME_TAGS["ort_graph_opt_level"]),
    RuntimeSetting("ort_inter_op_threads", "ort_inter_op_threads", RUNTIME_TAGS["ort_inter_op_threads"]),
    RuntimeSetting("ort_execution_mode", "ort_execution_modes", RUNTIME_TAGS["ort_execution_mode"]),
    RuntimeSetting("torch_interop_threads", "torch_interop_threads", RUNTIME_TAGS["torch_interop_threads"],
                   per_process=True),
)


def backend_settings(backend: str) -> tuple[str, ...]:
    """The runtime setting keys ``backend`` honours (none for a backend that is not registered)."""
    from ..backends import get_backend

    try:
        return tuple(getattr(get_backend(backend), "runtime_options", ()) or ())
    except BenchmarkError:
        return ()


def _values(cfg, setting: RuntimeSetting) -> tuple:
    return tuple(getattr(cfg, setting.field, ()) or ())


def combos(cfg, backend: str) -> list[tuple[dict[str, Any], str]]:
    """``[(runtime settings, name suffix)]`` of ``backend`` in sweep ``cfg``: the cross product of the
    values of the settings it honours; the suffix names those with more than one value (``""``
    when none varies)."""
    honoured = [s for s in SETTINGS if s.key in backend_settings(backend) and _values(cfg, s)]
    if not honoured:
        return [({}, "")]
    out = []
    for values in itertools.product(*(_values(cfg, s) for s in honoured)):
        runtime = {s.key: v for s, v in zip(honoured, values)}
        varying = [s.text(v) for s, v in zip(honoured, values) if len(_values(cfg, s)) > 1]
        out.append((runtime, SEPARATOR + ",".join(varying) if varying else ""))
    return out


def process_key(runtime: dict[str, Any]) -> tuple:
    """The per-process part of a run's settings: runs with different keys need different processes."""
    return tuple((s.key, runtime[s.key]) for s in SETTINGS if s.per_process and s.key in runtime)


__all__ = ["SETTINGS", "RuntimeSetting", "backend_settings", "combos", "process_key"]

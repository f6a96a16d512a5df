"""Planning a sweep: its jobs and runs, their count, a duration estimate, the timing settings, and
the checks the parent makes before anything is stored."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CompressionConfig, RunConfig, SweepConfig
from ..errors import ConfigError
from ..results import run_key

DEFAULT_JOB_TIMEOUT_S = 300.0
DEFAULT_EVAL_SAMPLES = RunConfig.eval_samples if isinstance(RunConfig.eval_samples, int) else 512
RANDOM_EVAL_SAMPLES = 64


@dataclass(frozen=True)
class PlannedRun:
    """One row to produce: a variant on a backend at a batch size."""

    variant: str
    backend: str
    batch_size: int
    target: str = ""  # where it runs (executors.Target.key); "" = this machine
    runtime: tuple[tuple[str, Any], ...] = ()  # the runtime settings its backend honours (sweep.runtime)

    @property
    def key(self) -> str:
        return run_key(self.variant, self.backend, self.batch_size, self.target)

    @property
    def job_key(self) -> str:
        """The key the job's child uses (it does not know the target)."""
        return run_key(self.variant, self.backend, self.batch_size)

    def to_payload(self) -> dict[str, Any]:
        """What the job's child needs of this run."""
        return {"key": self.job_key, "variant": self.variant, "backend": self.backend, "batch_size": self.batch_size,
                "runtime": dict(self.runtime)}


@dataclass
class Job:
    """One isolated child process: build ``compression`` once, measure it for each of ``runs``."""

    compression: CompressionConfig
    runs: list[PlannedRun] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return self.compression.name

    @property
    def is_reference(self) -> bool:
        return self.compression.is_reference


def plan_sweep(cfg: SweepConfig) -> list[Job]:
    """The sweep's jobs: one per distinct compression (the FP32 reference first when asked for),
    each with every backend x runtime settings (:mod:`.runtime`) x batch size. Runs that need
    another value of a per-process setting go to a job of their own for the same compression."""
    from .runtime import combos, process_key

    jobs: list[Job] = []
    seen: set[str] = set()
    combos_of = {b: combos(cfg, b) for b in cfg.backends}
    # runs without a per-process setting join the first process's job (no extra build)
    first = next((k for b in cfg.backends for rt, _ in combos_of[b] if (k := process_key(rt))), ())
    for comp in cfg.compressions():
        if comp.name in seen:
            continue
        seen.add(comp.name)
        by_process: dict[tuple, list[PlannedRun]] = {}
        for b in cfg.backends:
            for runtime, suffix in combos_of[b]:
                by_process.setdefault(process_key(runtime) or first, []).extend(
                    PlannedRun(comp.name + suffix, b, int(bs), runtime=tuple(runtime.items())) for bs in cfg.batch_sizes)
        jobs += [Job(comp, runs) for runs in by_process.values()]
    jobs.sort(key=lambda j: 0 if j.is_reference else 1)  # stable: otherwise the config's order
    return jobs


def plan_size(plan: list[Job]) -> int:
    return sum(len(j.runs) for j in plan)


def plan_for_targets(plan: list[Job], targets) -> list[tuple[Any, list[Job]]]:
    """The plan once per target (``executors.Target``): each run gets the target's key."""
    return [(t, [Job(j.compression, [dataclasses.replace(r, target=t.key) for r in j.runs]) for j in plan])
            for t in targets]


#: Rough costs (seconds, on a 2-core CPU) behind :func:`estimate_duration_s`.
_JOB_START_S = 3.0
_PREPARE_S = 1.0
_BUILD_S = {"fp32": 0.0, "fp16": 1.0, "bf16": 1.0, "int8-dynamic": 3.0, "int8-static": 5.0, "mixed": 6.0}
_PRUNE_S = 3.0
_LOWRANK_S = 2.0
_DISTILL_EPOCH_S = 10.0


def estimate_duration_s(plan: list[Job], cfg: SweepConfig | None = None) -> float:
    """A rough wall-time estimate of a plan (for the UI before it starts; not a measurement):
    child start-up and model load per job, build cost by step, and per run session preparation,
    evaluation, warm-up and the timed loop."""
    settings = run_settings(cfg) if cfg is not None else run_settings(SweepConfig(model="x"))
    total = 0.0
    for job in plan:
        c = job.compression
        total += _JOB_START_S + _BUILD_S.get(c.precision, 3.0)
        if c.prune_ratio > 0:
            total += _PRUNE_S
        if c.lowrank_applies:
            total += _LOWRANK_S
        if c.distill_applies:
            total += _DISTILL_EPOCH_S * max(1, int(c.distill_epochs))
        for _ in job.runs:
            total += _PREPARE_S + 0.5 + float(settings["warmup_s"]) + float(settings["min_duration_s"]) * 1.1
    return round(total, 1)


def run_settings(cfg: SweepConfig) -> dict[str, Any]:
    """Timing and quality settings of a sweep's runs (optional SweepConfig fields fall back to defaults)."""
    min_iters = int(getattr(cfg, "min_iters", 20))
    min_duration_s = float(getattr(cfg, "min_duration_s", 1.0))
    return {
        "threads": int(getattr(cfg, "threads", 0)),
        "min_iters": min_iters,
        "min_duration_s": min_duration_s,
        "warmup_iters": int(getattr(cfg, "warmup_iters", min(5, min_iters))),
        "warmup_s": float(getattr(cfg, "warmup_s", min(0.2, min_duration_s))),
        "max_iters": int(getattr(cfg, "max_iters", max(10000, min_iters))),
        "eval_samples": int(getattr(cfg, "eval_samples", DEFAULT_EVAL_SAMPLES)),
        "cuda_graph": bool(getattr(cfg, "cuda_graph", False)),
        "metric": getattr(cfg, "metric", None),
        "output_kind": getattr(cfg, "output_kind", None),
        "timing_attempts": int(getattr(cfg, "timing_attempts", 3)),
    }


def sweep_config_to_dict(cfg: SweepConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def sweep_config_from_dict(data: dict[str, Any]) -> SweepConfig:
    """Rebuild a SweepConfig from its dict (unknown keys are ignored; lists become tuples)."""
    names = {f.name for f in dataclasses.fields(SweepConfig)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return SweepConfig(**kwargs)


def absolute_paths(cfg: SweepConfig) -> SweepConfig:
    """``cfg`` with an existing relative model / data path made absolute (jobs run in a scratch folder;
    a stored sweep may be resumed from another folder)."""
    from ..data import DATASETS

    changes: dict[str, Any] = {}
    model = str(cfg.model)
    if not model.startswith("sample:") and Path(model).exists() and not Path(model).is_absolute():
        changes["model"] = str(Path(model).resolve())
    data = cfg.data
    if data and data not in DATASETS and Path(data).exists() and not Path(data).is_absolute():
        changes["data"] = str(Path(data).resolve())
    return dataclasses.replace(cfg, **changes) if changes else cfg


def validate_sweep(cfg: SweepConfig, plugins: list[str] | None = None) -> None:
    """Checks the parent can make without loading the model, beyond the config's own: backends
    exist (plugins loaded), the executor is installed, the architecture is a built-in one, the
    resource environment variables are numbers."""
    from ..backends import get_backend
    from ..executors import executor_unavailable
    from ..jobs import load_plugins
    from ..resources import check_environment

    load_plugins(plugins)
    reason = executor_unavailable(cfg.executor)
    if reason:
        raise ConfigError(reason)
    for name in cfg.backends:
        get_backend(name)
    if getattr(cfg, "arch", None):
        from ..models.archs import get_arch

        get_arch(cfg.arch)
    check_environment()

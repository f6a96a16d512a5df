"""The child's first steps for one variant: load the model, choose the evaluation data, build the
variant once, count its FLOPs; the result is the :class:`VariantContext` every backend's runs share."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import CompressionConfig, InputSpec
from ..errors import BenchmarkError
from ..results import RunResult
from .feeds import first_batch, fixed_batch, per_feed
from .plan import RANDOM_EVAL_SAMPLES
from .rows import SIZE_KEYS, RowFactory, noop_warning, unapplied_steps

Emit = Callable[[dict], None]
#: Random inputs a model without data is distilled on.
RANDOM_TRAIN_SAMPLES = 512


class Emitter:
    """What the child tells the parent: steps, progress, which runs are under way, finished rows."""

    def __init__(self, emit: Emit):
        self.emit = emit

    def step(self, message: str) -> None:
        """A new step: its message is the progress line and restarts the job's step timeout."""
        self.emit({"type": "step", "message": message})

    def progress(self, message: str, fraction: float | None = None) -> None:
        self.emit({"type": "progress", "message": message, "fraction": fraction})

    def started(self, keys: list[str]) -> None:
        """The runs a crash from now on would fail."""
        self.emit({"type": "run_started", "keys": list(keys)})

    def send(self, row: RunResult) -> None:
        self.emit({"type": "result", "row": row.to_json()})


@dataclass
class VariantContext:
    """One built variant in the job's child and what its runs on every backend share."""

    out: Emitter
    device: str
    settings: dict[str, Any]
    workdir: Path
    comp: CompressionConfig
    model: Any  # LoadedModel
    variant: Any  # Variant
    eval_data: Any  # Dataset
    fixed: tuple[int, str] | None  # (batch, why) when the model runs one batch size only
    model_bytes: int
    rows: RowFactory
    warnings: list[str]  # on every row of the variant
    noops: list[str]  # steps asked for that changed nothing
    memory_profile: Any = None  # activation profile, estimated once when a memory check needs it

    @property
    def threads(self) -> int:
        return int(self.settings["threads"])

    def with_runtime(self, variant: str, runtime: dict[str, Any]) -> "VariantContext":
        """This context for the runs named ``variant`` with ``runtime`` settings (:mod:`.runtime`):
        rows carry that name and the settings; ``settings["runtime"]`` reaches the backend's
        ``sweep_options``. Everything else (the variant, data, warnings) is shared."""
        if variant == self.comp.name and not runtime:
            return self
        rows = dataclasses.replace(self.rows, variant=variant, runtime=dict(runtime) or None)
        return dataclasses.replace(self, rows=rows, settings={**self.settings, "runtime": dict(runtime)})

    def send_all(self, backend: str, runs: list[dict], status: str, error: str, warnings: list[str]) -> None:
        """The same status and error for each of ``runs`` (a backend that cannot run them at all)."""
        for run in runs:
            self.out.send(self.rows.row(backend, run["batch_size"], status, error=error, warnings=warnings))


def _load(payload: dict, out: Emitter) -> tuple[Any, list[InputSpec]]:
    from ..models import load_model

    out.step(f"loading {payload['model']}")
    overrides = [InputSpec.parse(t) for t in payload["inputs"]]
    model = load_model(payload["model"], inputs=overrides, trust_pickle=bool(payload["trust_pickle"]),
                       arch=payload.get("arch") or None, batch_axes=payload.get("batch_axis"))
    return model, overrides


def _evaluation_data(payload: dict, model, eval_samples: int, overridden: set[str], notes: list[str]):
    """(model, data, fixed batch): the evaluation split (its first ``eval_samples``), or random
    inputs with a note saying so (``eval_samples`` of them, at most :data:`RANDOM_EVAL_SAMPLES`);
    for a fixed-batch model, whole batches only. The model takes the batch axes and the dims its
    data shows (:func:`benchmark.models.batch_axes.fit_to_data`)."""
    from ..data import random_dataset, resolve_dataset
    from ..models.batch_axes import fit_to_data

    data = resolve_dataset(payload["data"], model, "test")
    model, filled = fit_to_data(model, data)
    notes.extend(filled)
    fixed = fixed_batch(model, overridden)
    if data is None:  # random inputs say little more past a few dozen: at most RANDOM_EVAL_SAMPLES
        n_random = min(int(eval_samples), RANDOM_EVAL_SAMPLES) if eval_samples else RANDOM_EVAL_SAMPLES
        data = random_dataset(model.inputs, n_random, name="random")
        notes.append(f"no dataset for {model.name}: fidelity measured on {n_random} random inputs, no accuracy")
    elif eval_samples:
        data = data.subset(int(eval_samples))
    if fixed is not None and not per_feed(data) and len(data) >= fixed[0] and len(data) % fixed[0]:
        data = data.subset(len(data) - len(data) % fixed[0])
    return model, data, fixed


def compress_context(data: str | None, model, comp: CompressionConfig, eval_data, workdir: Path, progress,
                     notes: list[str], *, threads: int, metric: str | None = None, output_kind: str | None = None,
                     timeout_s: float | None = None):
    """The :class:`~benchmark.compress.CompressContext` a variant is built with (by a sweep, and by
    ``slimbench profile`` to build it the same way): calibration data for static INT8, training data
    when distillation applies (without any data: :data:`RANDOM_TRAIN_SAMPLES` random inputs, seeded
    apart from the random evaluation inputs). ``data``: dataset name or ``.npz`` path (None: the
    model's own); ``timeout_s``: the job's limit (compressions get 80 % of it)."""
    from ..compress import CompressContext
    from ..data import random_dataset, resolve_dataset

    calib = train = None
    if comp.precision in ("int8-static", "mixed"):
        calib = resolve_dataset(data, model, "calib", warnings=notes)
        if calib is not None:
            calib = calib.subset(comp.calib_samples)
    if comp.distill_applies:
        train = resolve_dataset(data, model, "train", warnings=notes)
        if train is None:  # no data at all: the teacher's outputs on random inputs are the targets
            train = random_dataset(model.inputs, RANDOM_TRAIN_SAMPLES, seed=1, name="random")
            notes.append(f"no dataset for {model.name}: distilled on {RANDOM_TRAIN_SAMPLES} random inputs (other "
                         "than the evaluation ones); quality on real inputs may recover less")
    notes[:] = list(dict.fromkeys(notes))
    return CompressContext(workdir=workdir, calib_data=calib, train_data=train, eval_data=eval_data,
                           progress=progress, time_budget_s=0.8 * timeout_s if timeout_s else None,
                           threads=int(threads), metric=metric, output_kind=output_kind)


def _convert_if_needed(payload: dict, model, comp: CompressionConfig, eval_data, fixed, out: Emitter,
                       notes: list[str]) -> None:
    """Convert an ONNX / TorchScript / .pt2 model to an editable PyTorch module (verified on the
    evaluation data's first batch) when this job needs one: a PyTorch-side compression or a
    backend that runs a module (:mod:`benchmark.models.conversion`)."""
    from ..applicability import TORCH_BACKENDS
    from ..models.conversion import attach_conversion, can_convert

    wants_module = comp.prune_ratio > 0 or comp.lowrank_applies or comp.distill_applies
    if model.format == "onnx":
        wants_module = wants_module or any(r["backend"] in TORCH_BACKENDS for r in payload["runs"])
    if not wants_module or not can_convert(model):
        return
    out.step(f"converting {model.name} to PyTorch")
    attach_conversion(model, first_batch(eval_data, fixed[0] if fixed else 1))
    if model.conversion:
        notes.append(f"PyTorch module from the {model.conversion['via']}: {model.conversion['summary']}")


def _count(variant, eval_data) -> tuple[dict[str, Any], list[str]]:
    """(params, MACs, FLOPs, size, sparsity of the variant for one sample, notes); the data's first
    feed decides data-dependent branches."""
    from ..measure.flops import count_model

    size: dict[str, Any] = {k: None for k in SIZE_KEYS}
    try:
        report = count_model(variant, batch_size=1, values=eval_data.first_feed() if eval_data is not None else None)
    except BenchmarkError as exc:
        return size, [f"FLOPs/params not counted: {exc}"]
    for k in SIZE_KEYS:
        size[k] = getattr(report, k, None)
    return size, list(getattr(report, "warnings", []) or [])


def build_variant_context(payload: dict, emit: Emit) -> VariantContext:
    """Load, choose the data, build and count the payload's variant; tell the parent what it is."""
    from ..compress import build_variant
    from ..measure.environment import collect_environment
    from ..resources import check_disk_space, model_file_bytes
    from .explained import sweep_peaks

    settings, device, workdir = payload["settings"], payload["device"], Path(payload["workdir"])
    os.chdir(workdir)  # files libraries drop in the current folder land in the sweep's scratch folder
    comp = CompressionConfig.from_dict(payload["compression"])
    out = Emitter(emit)
    model, overrides = _load(payload, out)
    notes: list[str] = []
    model, eval_data, fixed = _evaluation_data(payload, model, settings["eval_samples"], {s.name for s in overrides},
                                               notes)
    out.emit({"type": "checked", "model": model.name, "eval_samples": len(eval_data), "labels": eval_data.has_labels})

    _convert_if_needed(payload, model, comp, eval_data, fixed, out, notes)
    settings = payload["settings"]
    cctx = compress_context(payload["data"], model, comp, eval_data, workdir, out.progress, notes,
                            threads=settings["threads"], metric=settings.get("metric"),
                            output_kind=settings.get("output_kind"), timeout_s=payload.get("timeout_s"))
    model_bytes = model_file_bytes(model)
    check_disk_space(workdir, model_bytes, f"building {comp.name}")
    out.step(f"building {comp.name}")
    variant = build_variant(model, comp, cctx)
    out.step(f"counting FLOPs of {comp.name}")
    size, flop_notes = _count(variant, eval_data)

    peaks, peaks_note = sweep_peaks(device, int(settings["threads"]), bool(payload.get("skip_peaks")), out.step)
    env = collect_environment(int(settings["threads"]), peaks=peaks)
    env["run_settings"] = dict(settings)
    records = [r.to_dict() for r in variant.records]
    noops = unapplied_steps(comp, variant.records)
    rows = RowFactory(model.name, comp, device, records=records, compressed_as_asked=not noops, size=size, env=env)
    warnings = notes + [noop_warning(s) for s in noops] + list(variant.warnings) + flop_notes + \
        ([peaks_note] if peaks_note else [])
    out.emit({"type": "variant", "info": {**size, "compression": records, "warnings": warnings,
                                      "compressed_as_asked": not noops}})
    return VariantContext(out=out, device=device, settings=settings, workdir=workdir, comp=comp, model=model,
                          variant=variant, eval_data=eval_data, fixed=fixed, model_bytes=model_bytes, rows=rows,
                          warnings=warnings, noops=noops)

"""Quality of a variant's rows: the FP32 reference outputs its fidelity is measured against
(computed once per backend and sweep, cached in the work folder), the accuracy / fidelity fields of
a row, and the cross-backend check of its outputs against the job's first backend."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BenchmarkError
from ..results import CROSS_BACKEND_TOLERANCES
from .feeds import internal_error


# --------------------------------------------------------------------------------------------
# cross-backend agreement
# --------------------------------------------------------------------------------------------
def cross_backend_check(logits, reference, reference_backend: str, precision: str) -> tuple[dict | None, str | None]:
    """(cross_backend dict, note) comparing first-output ``logits`` with ``reference`` (another
    backend's, same samples); tolerances from :data:`~benchmark.results.CROSS_BACKEND_TOLERANCES`.
    ``worst_max_rel_err`` is over elements whose reference is non-zero."""
    import numpy as np

    from ..measure.compare import compare_outputs

    atol, rtol = CROSS_BACKEND_TOLERANCES.get(precision, (1e-2, 1e-2))
    a = logits if isinstance(logits, list) else [logits]
    b = reference if isinstance(reference, list) else [reference]
    if isinstance(logits, list) != isinstance(reference, list) or len(a) != len(b):
        return None, f"outputs not compared with {reference_backend}'s: they were batched differently"
    report = compare_outputs(a, b, atol=atol, rtol=rtol)
    worst_rel = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if x.shape != y.shape:
            return ({"reference_backend": reference_backend, "passed": False, "worst_max_abs_err": None,
                     "worst_max_rel_err": None, "atol": atol, "rtol": rtol},
                    f"outputs differ in shape from {reference_backend}'s: {x.shape} vs {y.shape}")
        nz = y != 0
        if nz.any():
            worst_rel = max(worst_rel, float(np.max(np.abs(x[nz] - y[nz]) / np.abs(y[nz]))))
    result = {"reference_backend": reference_backend, "passed": bool(report.passed),
              "worst_max_abs_err": float(report.worst_max_abs_err), "worst_max_rel_err": worst_rel,
              "atol": atol, "rtol": rtol}
    note = None
    if not report.passed:
        note = (f"outputs differ from {reference_backend}'s beyond atol={atol:g} and rtol={rtol:g}: worst abs err "
                f"{report.worst_max_abs_err:.3g}, worst rel err {worst_rel:.3g}")
    return result, note


class CrossBackend:
    """The job's cross-backend reference: the first backend whose evaluation produced outputs.
    Each later backend's first outputs are compared with it once, for all its rows."""

    def __init__(self, precision: str):
        self.precision = precision
        self.reference: tuple[str, Any] | None = None  # (backend, first-output logits)

    def check(self, backend: str, logits) -> tuple[dict | None, str | None]:
        """(cross_backend dict, note) for ``backend``'s outputs; (None, None) on the reference itself."""
        if self.reference is None:
            self.reference = (backend, logits)
            return None, None
        if self.reference[0] == backend:
            return None, None
        return cross_backend_check(logits, self.reference[1], self.reference[0], self.precision)


# --------------------------------------------------------------------------------------------
# FP32 reference outputs (fidelity)
# --------------------------------------------------------------------------------------------
def save_logits(path: Path, logits) -> None:
    import numpy as np

    chunks = logits if isinstance(logits, list) else [logits]
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, *[np.asarray(c) for c in chunks], is_list=np.array(isinstance(logits, list)))
    os.replace(tmp, path)


def load_logits(path: Path):
    import numpy as np

    with np.load(path) as data:
        n = len([k for k in data.files if k.startswith("arr_")])
        chunks = [data[f"arr_{i}"] for i in range(n)]
        return chunks if bool(data["is_list"]) else chunks[0]


def reference_path(workdir: Path, backend: str) -> Path:
    """Where the FP32 reference's outputs on ``backend`` are cached for the sweep."""
    return Path(workdir) / f"reference-{backend}.npz"


@dataclass
class ReferenceOutputs:
    """The FP32 reference's first-output logits on one backend (None when it could not run: ``note``
    says why), and notes for every row of that backend (a failed close of the reference session)."""

    logits: Any = None
    note: str | None = None
    backend_notes: list[str] = field(default_factory=list)


def compute_reference_logits(backend, ref_variant, eval_data, device: str, threads: int, workdir,
                             batch_sizes: list[int]) -> ReferenceOutputs:
    """The FP32 reference's first-output logits on ``eval_data`` on ``backend``, evaluated at the
    largest of ``batch_sizes`` that works."""
    from ..measure.accuracy import evaluate

    ok, reason = backend.supports(ref_variant, device)
    if not ok:
        return ReferenceOutputs(note=f"no fidelity: the FP32 reference does not run on {backend.name}: {reason}")
    try:
        session = backend.prepare(ref_variant, device=device, threads=threads, workdir=workdir)
    except Exception as exc:  # BenchmarkError or a bug: this backend's rows get no fidelity, and say why
        error = str(exc) if isinstance(exc, BenchmarkError) else internal_error(exc)
        return ReferenceOutputs(note=f"no fidelity: preparing the FP32 reference on {backend.name} failed: {error}")
    out = ReferenceOutputs()
    try:
        for bs in sorted(set(batch_sizes), reverse=True):
            try:
                out.logits = evaluate(session, eval_data, bs, None).logits
                out.note = None
                break
            except Exception as exc:
                error = str(exc) if isinstance(exc, BenchmarkError) else internal_error(exc)
                out.note = f"no fidelity: the FP32 reference failed on {backend.name}: {error}"
    finally:
        try:
            session.close()
        except Exception as exc:  # the outputs are kept; the backend's rows say the close failed
            out.backend_notes.append(f"closing the FP32 reference session on {backend.name} failed: "
                                     f"{internal_error(exc)}")
    return out


# --------------------------------------------------------------------------------------------
# the job's quality metric
# --------------------------------------------------------------------------------------------
def labels_like(outputs, labels):
    """``labels`` (flattened by the evaluation) shaped as the output's positions ``[N]`` or ``[N, T]``
    when their count matches, so the metric choice can tell whether they index the last axis."""
    import numpy as np

    if labels is None or outputs is None or isinstance(outputs, (list, tuple)):
        return labels
    lab, shape = np.asarray(labels), np.shape(outputs)
    if len(shape) >= 2 and lab.size == int(np.prod(shape[:-1])):
        return lab.reshape(shape[:-1])
    return lab


class MetricPick:
    """The job's quality metric, chosen once from the first outputs that arrive (the FP32 reference's
    where there are some, else this variant's) and the labels, with the sweep's ``metric`` and
    ``output_kind`` settings (:func:`benchmark.measure.quality.choose_metric_for`). A metric asked
    for that cannot be computed (accuracy without labels) falls back to the default, with a note."""

    def __init__(self, settings: dict, output_name: str = ""):
        self.override = settings.get("metric") or None
        self.kind = settings.get("output_kind") or None
        self.output_name = output_name
        self.choice = None  # MetricChoice once chosen
        self.note: str | None = None  # on every row of the job when the asked-for metric fell back

    def choose(self, outputs, labels):
        """The :class:`~benchmark.measure.quality.MetricChoice` (None when the outputs vary in shape)."""
        from ..measure.quality import choose_metric_asked

        if self.choice is not None or outputs is None or isinstance(outputs, (list, tuple)):
            return self.choice
        self.choice, self.note = choose_metric_asked(outputs, labels_like(outputs, labels), name=self.output_name,
                                                     kind=self.kind, override=self.override)
        return self.choice


# --------------------------------------------------------------------------------------------
# a row's accuracy, fidelity and quality
# --------------------------------------------------------------------------------------------
@dataclass
class Quality:
    """A row's ``accuracy``, ``fidelity`` and ``quality`` fields and the notes that go with them."""

    accuracy: dict | None
    fidelity: dict | None
    notes: list[str]
    quality: dict | None = None


def _quality_object(pick: MetricPick | None, report, reference) -> tuple[dict | None, list[str]]:
    """The row's ``quality`` (the job's metric against ``reference``, the FP32 outputs) and notes."""
    from ..measure.quality import row_quality as metric_quality

    if pick is None:
        return None, []
    choice = pick.choose(reference if reference is not None else report.logits, report.labels)
    notes = [pick.note] if pick.note else []
    if choice is None:
        return None, notes + ["quality not computed: the outputs vary in shape between batches"]
    labels = labels_like(report.logits, report.labels)
    q, note = metric_quality(choice.metric, report.logits, reference, labels, why=choice.reason)
    return q, notes + ([note] if note else [])


def row_quality(report, is_reference: bool, backend: str, reference_note: str | None,
                pick: MetricPick | None = None, reference=None) -> Quality:
    """Accuracy on labels, fidelity to the FP32 reference on the same backend (the reference
    variant's own rows: against itself), and the row's one ``quality`` object in the job's metric
    (``pick``; ``reference``: the FP32 reference's outputs). Without fidelity, ``reference_note`` says why."""
    from ..measure.accuracy import fidelity

    accuracy = fid = None
    notes: list[str] = []
    if report.top1 is not None:
        accuracy = {"top1": report.top1, "top5": report.top5, "n": report.n_samples}
    if is_reference and report.logits is not None:
        fid = dict(fidelity(report.logits, report.logits), reference="self", n=report.n_samples)
        reference = report.logits
    elif report.cosine is not None or report.top1_agreement is not None:
        fid = {"top1_agreement": report.top1_agreement, "cosine": report.cosine,
               "max_abs_err": report.max_abs_err, "mean_abs_err": report.mean_abs_err, "rel_error": report.rel_error,
               "reference": f"fp32 on {backend}", "n": report.n_samples}
    elif reference_note:
        notes.append(reference_note)
    quality, quality_notes = _quality_object(pick, report, reference)
    notes += list(report.warnings) + quality_notes
    return Quality(accuracy, fid, notes, quality)


__all__ = ["CrossBackend", "MetricPick", "Quality", "ReferenceOutputs", "labels_like", "compute_reference_logits", "cross_backend_check",
           "load_logits", "reference_path", "row_quality", "save_logits"]

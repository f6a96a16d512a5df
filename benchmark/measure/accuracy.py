"""Accuracy on labelled data and fidelity to the FP32 reference.

Conventions (also shown in the UI):

- The first model output is the logits. Top-1 accuracy = share of samples whose argmax over the
  last axis equals the label; top-5 only where the output has more than 5 classes. Accuracy needs
  2-D logits ``[N, classes]`` and one label per sample; otherwise it is skipped with a warning.
- Fidelity compares the first output with the FP32 reference's first output on the same samples:
  top-1 agreement (share of positions whose argmax over the last axis agrees), cosine similarity
  (mean over samples of the cosine of each sample's flattened output), max and mean absolute error,
  relative error (mean over samples of ``||output - reference|| / ||reference||``, 0 where both are 0).
- NaN or Inf in any floating output makes the variant fail (``MeasurementError``), never a number.
- Metrics are computed in float64.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import DataError, MeasurementError


@dataclass
class AccuracyReport:
    """Accuracy and fidelity of one variant on one dataset (fractions in [0, 1])."""

    n_samples: int
    top1: float | None = None
    top5: float | None = None
    top1_agreement: float | None = None
    cosine: float | None = None
    max_abs_err: float | None = None
    mean_abs_err: float | None = None
    rel_error: float | None = None
    num_classes: int | None = None
    warnings: list[str] = field(default_factory=list)
    logits: np.ndarray | list[np.ndarray] | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)  # the evaluated samples' labels, in order

    def to_dict(self) -> dict[str, Any]:
        """The metrics, without the logits."""
        return {
            "n_samples": self.n_samples, "top1": self.top1, "top5": self.top5,
            "top1_agreement": self.top1_agreement, "cosine": self.cosine,
            "max_abs_err": self.max_abs_err, "mean_abs_err": self.mean_abs_err, "rel_error": self.rel_error,
            "num_classes": self.num_classes, "warnings": list(self.warnings),
        }


def check_finite(outputs: Sequence[np.ndarray], what: str = "outputs") -> None:
    """Raise ``MeasurementError`` if any floating array holds NaN or Inf."""
    for i, out in enumerate(outputs):
        arr = np.asarray(out)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            n_nan = int(np.isnan(arr).sum())
            n_inf = int(np.isinf(arr).sum())
            raise MeasurementError(
                f"{what} contain NaN/Inf (output {i}: {n_nan} NaN, {n_inf} Inf of {arr.size} values); "
                "the variant is numerically broken"
            )


def _concat(chunks: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """One array along axis 0 when the chunks agree on trailing dims, else the list as is."""
    if not chunks:
        return np.zeros((0,), dtype=np.float32)
    if all(c.ndim >= 1 and c.shape[1:] == chunks[0].shape[1:] for c in chunks):
        return np.concatenate(chunks, axis=0)
    return chunks


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows of ``logits [N, C]`` whose ``k`` largest entries include the label."""
    logits = np.asarray(logits)
    labels = np.asarray(labels).reshape(-1)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise DataError(f"top-{k} needs logits [N, C] and N labels; got {logits.shape} and {labels.shape}")
    from ..data.npz import check_labels

    check_labels(labels, int(logits.shape[1]), "evaluation data")
    if k == 1:
        return float(np.mean(np.argmax(logits, axis=1) == labels))
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def _as_chunks(x) -> list[np.ndarray]:
    if isinstance(x, (list, tuple)):
        return [np.asarray(c, dtype=np.float64) for c in x]
    return [np.asarray(x, dtype=np.float64)]


def fidelity(outputs, reference) -> dict[str, float | None]:
    """Top-1 agreement, mean per-sample cosine, max/mean abs error and mean per-sample relative error
    of ``outputs`` vs ``reference``."""
    a_chunks, b_chunks = _as_chunks(outputs), _as_chunks(reference)
    if len(a_chunks) != len(b_chunks):
        a, b = _concat(a_chunks), _concat(b_chunks)
        if isinstance(a, list) or isinstance(b, list):
            raise MeasurementError(
                f"fidelity: {len(a_chunks)} output chunks cannot be matched with {len(b_chunks)} reference chunks"
            )
        a_chunks, b_chunks = [a], [b]
    agree_n = agree_hits = 0
    cos_sum = 0.0
    rel_sum = 0.0
    rel_ok = True
    n_samples = 0
    max_abs = 0.0
    abs_sum = 0.0
    n_values = 0
    for a, b in zip(a_chunks, b_chunks):
        if a.shape != b.shape:
            raise MeasurementError(f"fidelity: output shape {a.shape} differs from the reference's {b.shape}")
        diff = np.abs(a - b)
        if diff.size:
            max_abs = max(max_abs, float(diff.max()))
        abs_sum += float(diff.sum())
        n_values += diff.size
        if a.ndim >= 2 and a.shape[-1] > 1:
            hits = np.argmax(a, axis=-1) == np.argmax(b, axis=-1)
            agree_hits += int(hits.sum())
            agree_n += hits.size
        a2 = a.reshape(len(a), -1) if a.ndim else a.reshape(1, 1)
        b2 = b.reshape(len(b), -1) if b.ndim else b.reshape(1, 1)
        na = np.linalg.norm(a2, axis=1)
        nb = np.linalg.norm(b2, axis=1)
        dot = np.sum(a2 * b2, axis=1)
        both_zero = (na == 0) & (nb == 0)
        denom = np.where(both_zero, 1.0, na * nb)
        cos = np.where(both_zero, 1.0, np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), 0.0))
        cos_sum += float(cos.sum())
        n_samples += len(cos)
        diff_norm = np.linalg.norm(a2 - b2, axis=1)
        rel_ok = rel_ok and bool(np.all((nb > 0) | (diff_norm == 0)))
        rel_sum += float(np.sum(np.where(nb > 0, diff_norm / np.where(nb > 0, nb, 1.0), 0.0)))
    return {
        "top1_agreement": agree_hits / agree_n if agree_n else None,
        "cosine": cos_sum / n_samples if n_samples else None,
        "max_abs_err": max_abs if n_values else None,
        "mean_abs_err": abs_sum / n_values if n_values else None,
        "rel_error": rel_sum / n_samples if n_samples and rel_ok else None,
    }


def evaluate(session, dataset, batch_size: int, max_samples: int | None = None,
             reference_outputs=None) -> AccuracyReport:
    """Run ``session`` over ``dataset`` (its first ``max_samples`` samples; 0/None = all).

    Returns top-1/top-5 when the dataset has labels, fidelity when ``reference_outputs`` (the FP32
    reference's first-output logits: one array, or a list of per-batch arrays as returned in
    ``AccuracyReport.logits``) is given, and this run's first-output logits in ``logits``.
    Per-feed datasets (``feed_axis`` True) are iterated one feed at a time as given.
    """
    data = dataset.subset(max_samples) if max_samples else dataset
    chunks: list[np.ndarray] = []
    label_chunks: list[np.ndarray] = []
    warnings: list[str] = []
    for feeds, labels in data.batches(int(batch_size)):
        outputs = session.run(feeds)
        if not outputs:
            raise MeasurementError("the model returned no outputs")
        check_finite(outputs)
        first = np.asarray(outputs[0])
        chunks.append(first)
        if labels is not None:
            label_chunks.append(np.asarray(labels).reshape(-1))
    logits = _concat(chunks)
    report = AccuracyReport(n_samples=len(data), logits=logits, warnings=warnings)

    if isinstance(logits, np.ndarray) and logits.ndim >= 2:
        report.num_classes = int(logits.shape[-1])
    if label_chunks:
        labels = np.concatenate(label_chunks)
        report.labels = labels
        if isinstance(logits, np.ndarray) and logits.ndim == 2 and len(logits) == len(labels):
            report.top1 = topk_accuracy(logits, labels, 1)
            if logits.shape[1] > 5:
                report.top5 = topk_accuracy(logits, labels, 5)
        else:
            shape = logits.shape if isinstance(logits, np.ndarray) else f"{len(logits)} chunks of varying shape"
            warnings.append(
                f"accuracy skipped: needs logits [N, classes] with one label per sample; got output {shape} "
                f"and {len(labels)} labels"
            )
    if reference_outputs is not None:
        ref = reference_outputs
        if isinstance(ref, list) and isinstance(logits, np.ndarray):
            ref = _concat([np.asarray(r) for r in ref])
        fid = fidelity(logits, ref)
        report.top1_agreement = fid["top1_agreement"]
        report.cosine = fid["cosine"]
        report.max_abs_err = fid["max_abs_err"]
        report.mean_abs_err = fid["mean_abs_err"]
        report.rel_error = fid["rel_error"]
    return report

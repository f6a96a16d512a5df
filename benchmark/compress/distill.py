"""Knowledge distillation: fine-tune a pruned/decomposed student against the original model.

The ``distill`` compression trains ``variant.torch_module`` (the student) to match the FP32
original ``variant.model.torch_module`` (the teacher) on ``ctx.train_data``:

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, labels)

(Hinton et al. 2015; the KL term is ``F.kl_div(log_softmax(s/T), softmax(t/T), "batchmean")``;
without labels the loss is the KL term alone). Adam, lr 1e-3, batch 64, ``cfg.distill_epochs``
epochs, seeded shuffling; training stops early when ``ctx.time_budget_s`` is spent. Weights that
an earlier unstructured pruning step zeroed stay zero (their masks are re-applied after every
optimizer step).

Accuracy convention: top-1 accuracy on labelled data; on unlabelled data the metric is top-1
agreement with the teacher. It is measured before and after training on ``ctx.eval_data``, or,
when that is absent, on a held-out 20 % of ``ctx.train_data`` (excluded from training).
"""
from __future__ import annotations

import copy
import time
from typing import Any

from ..config import CompressionConfig
from ..data.base import Dataset
from ..errors import CompressionError, ConfigError, DataError
from ..models.base import CompressionRecord, Variant
from .base import CompressContext, register_compression
from .prune import eager_module, first_tensor, new_variant, weight_layers

BATCH_SIZE = 64
LR = 1e-3
SEED = 0
HOLDOUT_SHARE = 0.2
#: Compressions whose damage distillation can recover.
RECOVERABLE = ("prune-structured", "prune-unstructured", "lowrank")


def _tensors(model_inputs, dataset: Dataset, idx=None) -> list:
    """Input tensors of ``dataset`` (rows ``idx``) in the model's input order."""
    import numpy as np
    import torch

    out = []
    arrays = dataset.arrays if idx is None else dataset.select(idx)
    for spec in model_inputs:
        arr = np.ascontiguousarray(arrays[spec.name])
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        out.append(torch.from_numpy(arr))
    return out


def check_data(model_inputs, dataset: Dataset, what: str) -> None:
    """Raise DataError unless ``dataset`` holds a batchable array for every model input."""
    names = [s.name for s in model_inputs]
    missing = [n for n in names if n not in dataset.arrays]
    if missing:
        raise DataError(
            f"{what} {dataset.name!r} has arrays {', '.join(dataset.arrays)} but the model needs "
            f"{', '.join(names)}; name the arrays after the model's inputs"
        )
    if any(dataset.feed_axis.get(n, False) for n in names):
        raise DataError(f"{what} {dataset.name!r} holds whole feeds per sample; distillation needs arrays with a batch axis")


def _logits(module, tensors):
    out = first_tensor(module(*tensors))
    if out is None:
        raise CompressionError("distillation needs a model whose output is a tensor of logits; got no tensor")
    return out


def predict(module, model_inputs, dataset: Dataset, batch_size: int = 256):
    """Top-1 predictions (argmax over the last axis) of ``module`` on ``dataset``, as a numpy array."""
    import numpy as np
    import torch

    preds = []
    was_training = getattr(module, "training", False)
    if hasattr(module, "eval"):
        module.eval()
    with torch.no_grad():
        for i in range(0, len(dataset), batch_size):
            idx = slice(i, i + batch_size)
            preds.append(_logits(module, _tensors(model_inputs, dataset, idx)).argmax(-1).cpu().numpy())
    if was_training:
        module.train()
    return np.concatenate(preds)


def top1_metric(module, model_inputs, dataset: Dataset, reference=None) -> tuple[float, str]:
    """(metric, name): accuracy on labelled data, else agreement with ``reference`` predictions."""
    import numpy as np

    pred = predict(module, model_inputs, dataset)
    if dataset.labels is not None:
        labels = np.asarray(dataset.labels)
        if pred.shape != labels.shape:
            raise DataError(f"labels of {dataset.name!r} have shape {labels.shape} but the model predicts {pred.shape}")
        return float((pred == labels).mean()), "accuracy"
    if reference is None:
        raise DataError(f"dataset {dataset.name!r} has no labels and no reference predictions to compare with")
    return float((pred == reference).mean()), "top1_agreement"


def _masks(module) -> dict[str, Any]:
    """Zero masks of Conv/Linear weights (kept fixed during training after unstructured pruning)."""
    return {name: (m.weight.detach() != 0) for name, m in weight_layers(module)}


def distill_module(
    student,
    teacher,
    model_inputs,
    train: Dataset,
    epochs: int,
    temperature: float = 4.0,
    alpha: float = 0.7,
    keep_zeros: bool = False,
    time_budget_s: float | None = None,
    progress=None,
) -> dict[str, Any]:
    """Train ``student`` in place against ``teacher`` on ``train``; returns what happened.

    Returns ``epochs_run``, ``steps``, ``stopped_early`` (time budget), ``final_loss`` (mean loss of
    the last epoch) and ``seconds``.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    if epochs < 0:
        raise ConfigError(f"distillation epochs must be >= 0; got {epochs}")
    if temperature <= 0:
        raise ConfigError(f"distillation temperature must be > 0; got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distillation alpha must be in [0, 1]; got {alpha}")
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    masks = _masks(student) if keep_zeros else {}
    layers = dict(weight_layers(student))
    labels = None if train.labels is None else torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    a = alpha if labels is not None else 1.0
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise CompressionError("the student has no trainable parameters")
    opt = torch.optim.Adam(params, lr=LR)
    if hasattr(teacher, "eval"):
        teacher.eval()
    n = len(train)
    steps_per_epoch = max(1, -(-n // BATCH_SIZE))
    start = time.perf_counter()
    steps = 0
    epochs_run = 0
    stopped_early = False
    last_loss = float("nan")
    for epoch in range(epochs):
        student.train()
        order = rng.permutation(n)
        total, count = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * BATCH_SIZE:(b + 1) * BATCH_SIZE]
            if len(idx) < 2:  # BatchNorm cannot train on a single sample
                continue
            xs = _tensors(model_inputs, train, idx)
            with torch.no_grad():
                t = _logits(teacher, xs).float()
            s = _logits(student, xs)
            if s.shape != t.shape:
                raise CompressionError(f"student output {tuple(s.shape)} differs from teacher output {tuple(t.shape)}")
            s2, t2 = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
            loss = a * temperature ** 2 * F.kl_div(
                F.log_softmax(s2 / temperature, -1), F.softmax(t2 / temperature, -1), reduction="batchmean")
            if labels is not None and a < 1.0:
                if s.dim() != 2:
                    raise CompressionError(f"hard labels need [batch, classes] logits; the model outputs {tuple(s.shape)}")
                loss = loss + (1.0 - a) * F.cross_entropy(s, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for name, mask in masks.items():
                        layers[name].weight.mul_(mask)
            steps += 1
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if progress is not None:
                progress(f"distillation epoch {epoch + 1}/{epochs}", (epoch + (b + 1) / steps_per_epoch) / epochs)
            if time_budget_s is not None and time.perf_counter() - start > time_budget_s:
                stopped_early = True
                break
        last_loss = total / count if count else float("nan")
        epochs_run = epoch + 1
        if stopped_early:
            break
    student.eval()
    return {
        "epochs_run": epochs_run, "steps": steps, "stopped_early": stopped_early,
        "final_loss": last_loss, "seconds": time.perf_counter() - start,
    }


def _split(train: Dataset) -> tuple[Dataset, Dataset | None]:
    """(train part, held-out part) with a seeded 80/20 split; no hold-out below 10 samples."""
    import numpy as np

    n = len(train)
    if n < 10:
        return train, None
    order = np.random.default_rng(SEED).permutation(n)
    k = max(1, int(round(HOLDOUT_SHARE * n)))
    hold, keep = np.sort(order[:k]), np.sort(order[k:])
    return train.take(keep), train.take(hold)


@register_compression("distill")
def distill(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Distil the pruned/decomposed student from the original model; see the module docstring."""
    student_src = eager_module(variant, "distillation")
    teacher = variant.model.torch_module
    if teacher is None:
        raise CompressionError("distillation needs the original PyTorch model as teacher; this model has none (ONNX)")
    if not cfg.distill:
        rec = CompressionRecord("distill", False, "distillation not requested: model unchanged")
        return new_variant(variant, copy.deepcopy(student_src), rec)
    recoverable = [r.method for r in variant.records if r.changed and r.method in RECOVERABLE]
    if not recoverable:
        rec = CompressionRecord("distill", False,
                                "distillation skipped: the student is not pruned or decomposed, so there is nothing to recover")
        return new_variant(variant, copy.deepcopy(student_src), rec)
    if ctx.train_data is None:
        raise ConfigError("distillation needs training data")
    inputs = variant.model.inputs
    check_data(inputs, ctx.train_data, "training data")
    warnings: list[str] = []
    if ctx.eval_data is not None:
        check_data(inputs, ctx.eval_data, "evaluation data")
        train, held = ctx.train_data, ctx.eval_data
        eval_on = f"evaluation data {ctx.eval_data.name!r} ({len(ctx.eval_data)} samples)"
    else:
        train, held = _split(ctx.train_data)
        if held is None:
            held = train
            eval_on = f"the training data itself ({len(train)} samples: too few to hold any out)"
            warnings.append("distillation accuracy is measured on the training data (too few samples to hold out)")
        else:
            eval_on = f"a held-out 20% of the training data ({len(held)} samples, not trained on)"
    epochs = int(cfg.distill_epochs)
    student = copy.deepcopy(student_src)
    ref = predict(teacher, inputs, held)
    teacher_metric, metric_name = top1_metric(teacher, inputs, held, ref)
    before, _ = top1_metric(student, inputs, held, ref)
    if epochs == 0:
        rec = CompressionRecord("distill", False, f"distillation with 0 epochs: student unchanged ({metric_name} {before:.4f})",
                                {"metric": metric_name, "metric_before": before, "teacher_metric": teacher_metric})
        return new_variant(variant, student, rec)
    ctx.progress(f"distillation: {epochs} epochs on {len(train)} samples", 0.0)
    run = distill_module(
        student, teacher, inputs, train, epochs, float(cfg.distill_temperature), float(cfg.distill_alpha),
        keep_zeros="prune-unstructured" in recoverable, time_budget_s=ctx.time_budget_s, progress=ctx.progress,
    )
    after, _ = top1_metric(student, inputs, held, ref)
    if run["stopped_early"]:
        warnings.append(f"distillation stopped after {run['epochs_run']} of {epochs} epochs: time budget "
                        f"{ctx.time_budget_s:g} s spent")
    if after < before:
        warnings.append(f"distillation lowered {metric_name} from {before:.4f} to {after:.4f}")
    details = {
        "metric": metric_name, "metric_before": before, "metric_after": after, "teacher_metric": teacher_metric,
        "evaluated_on": eval_on, "train_samples": len(train), "epochs": epochs,
        "temperature": float(cfg.distill_temperature), "alpha": float(cfg.distill_alpha) if train.labels is not None else 1.0,
        "batch_size": BATCH_SIZE, "lr": LR, "seed": SEED, "kept_zero_weights": "prune-unstructured" in recoverable,
        **run,
    }
    summary = (
        f"distillation ({run['epochs_run']} epochs, T={cfg.distill_temperature:g}, alpha={details['alpha']:g}): "
        f"{metric_name} {before:.4f} -> {after:.4f} (teacher {teacher_metric:.4f}) on {eval_on}"
    )
    ctx.progress("distillation done", 1.0)
    return new_variant(variant, student, CompressionRecord("distill", True, summary, details, warnings=warnings))

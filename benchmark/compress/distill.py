"""Knowledge distillation: fine-tune a pruned/decomposed student against the original model.

The ``distill`` compression trains ``variant.torch_module`` (the student) to match the FP32
original ``variant.model.torch_module`` (the teacher) on ``ctx.train_data``, with a loss that fits
the model's first output. The output kind is decided by the rule that decides the rows' quality
metric (:func:`benchmark.measure.quality.choose_metric_for` on the teacher's outputs, the labels
and the output's name), so the loss and the number reported before and after agree:

- **logits** (class scores, also per position ``[N, T, C]``):
  ``alpha * (T^2 * KL(softmax(t / T) || softmax(s / T)) + MSE(s, t) / Var(t)) + (1 - alpha) * CE(s, labels)``
  (Hinton et al. 2015; ``F.kl_div(log_softmax(s/T), softmax(t/T), "batchmean")`` over the last
  axis. Softmax ignores a shift of a row's logits, so the scale-free MSE term makes the raw logits
  follow the teacher's too: on pruned random-weight resnet / mobilenet look-alikes distilled on
  random inputs it raised the logits' cosine to the teacher's from 0.91 / 0.90 (KL alone) to
  0.99 / 0.98. Without labels alpha is 1). Metric: top-1 accuracy on labelled data, else top-1
  (or per-position) agreement with the teacher.
- **embeddings** (hidden states, pooled features): ``1 - cosine(s, t)`` per sample (each sample's
  output flattened), averaged. Metric: mean cosine similarity to the teacher.
- **regression** (one value per sample, e.g. a speech probability): mean squared error. Metric:
  mean relative error ``||s - t|| / ||t||`` (lower is better).

Adam, lr 1e-3, batch 64, ``cfg.distill_epochs`` epochs, seeded shuffling; training stops early
when ``ctx.time_budget_s`` is spent. Weights that an earlier unstructured pruning step zeroed stay
zero (their masks are re-applied after every optimizer step). No labels are needed: the teacher's
outputs are the targets. Uploaded ONNX, TorchScript and ``.pt2`` models are distilled through
their converted module (:mod:`benchmark.models.conversion`); the teacher is the model as uploaded
(an ONNX upload's converted module, verified against ONNX Runtime).

The metric is measured before and after training on ``ctx.eval_data``, or, when that is absent, on
a held-out 20 % of ``ctx.train_data`` (excluded from training); the record carries both numbers,
the teacher's own value, the output kind, the loss and why that kind was chosen.
"""
from __future__ import annotations

import copy
import time
from typing import Any

from ..config import CompressionConfig
from ..data.base import Dataset
from ..errors import CompressionError, ConfigError, DataError
from ..models.base import CompressionRecord, Variant, set_eval
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


def _first_output(module, tensors):
    out = first_tensor(module(*tensors))
    if out is None:
        raise CompressionError("distillation needs a model whose first output is a tensor; got no tensor")
    return out


def outputs_of(module, model_inputs, dataset: Dataset, batch_size: int = 256):
    """The first output of ``module`` on ``dataset`` (float32 numpy, samples along axis 0)."""
    import numpy as np
    import torch

    outs = []
    was_training = getattr(module, "training", False)
    set_eval(module)
    with torch.no_grad():
        for i in range(0, len(dataset), batch_size):
            idx = slice(i, i + batch_size)
            outs.append(_first_output(module, _tensors(model_inputs, dataset, idx)).float().cpu().numpy())
    if was_training:
        module.train()
    return np.concatenate(outs)


def distill_loss(kind: str, s, t, temperature: float, alpha: float, labels=None):
    """The distillation loss of student outputs ``s`` against teacher outputs ``t`` for an output
    ``kind`` (see the module docstring); ``labels`` add the hard-label term for logits."""
    import torch.nn.functional as F

    if kind == "embeddings":
        return (1.0 - F.cosine_similarity(s.reshape(len(s), -1), t.reshape(len(t), -1), dim=1, eps=1e-8)).mean()
    if kind == "regression":
        return F.mse_loss(s, t)
    s2, t2 = s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1])
    loss = alpha * temperature ** 2 * F.kl_div(F.log_softmax(s2 / temperature, -1), F.softmax(t2 / temperature, -1),
                                               reduction="batchmean")
    # softmax ignores a shift of a row's logits and a KL at temperature T weighs small logits little:
    # a scale-free MSE on the raw logits (1 = no better than predicting the teacher's mean) makes
    # the logits themselves follow the teacher's, which the rows' cosine and max abs error compare
    loss = loss + alpha * F.mse_loss(s2, t2) / t2.detach().var().clamp_min(1e-8)
    if labels is not None and alpha < 1.0:
        if s.dim() != 2:
            raise CompressionError(f"hard labels need [batch, classes] logits; the model outputs {tuple(s.shape)}")
        loss = loss + (1.0 - alpha) * F.cross_entropy(s, labels)
    return loss


#: The loss each output kind is trained with (as the record names it).
LOSS_NAMES = {"logits": "softmax KL divergence (temperature T) + logit MSE / teacher variance",
              "embeddings": "1 - cosine similarity", "regression": "mean squared error"}


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
    kind: str = "logits",
) -> dict[str, Any]:
    """Train ``student`` in place against ``teacher`` on ``train`` with the loss of output ``kind``
    (:func:`distill_loss`); returns what happened.

    Returns ``epochs_run``, ``steps``, ``stopped_early`` (time budget), ``final_loss`` (mean loss of
    the last epoch) and ``seconds``.
    """
    import numpy as np
    import torch

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
    labels = None
    if train.labels is not None and kind == "logits":
        labels = torch.from_numpy(np.asarray(train.labels, dtype=np.int64))
    a = alpha if labels is not None else 1.0
    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        raise CompressionError("the student has no trainable parameters")
    opt = torch.optim.Adam(params, lr=LR)
    set_eval(teacher)
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
                t = _first_output(teacher, xs).float()
            s = _first_output(student, xs)
            if s.shape != t.shape:
                raise CompressionError(f"student output {tuple(s.shape)} differs from teacher output {tuple(t.shape)}")
            loss = distill_loss(kind, s, t, temperature, a, None if labels is None else labels[idx])
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


def _teacher(variant: Variant):
    """The model as uploaded (an ONNX upload's verified converted module), run forward only."""
    teacher = variant.model.torch_module
    if teacher is None:
        error = getattr(variant.model, "conversion_error", None)
        raise CompressionError("distillation needs the original model as a PyTorch teacher: "
                               + (error or "this model has none (an ONNX graph that was not converted)"))
    return teacher


def _held_out(ctx: CompressContext, inputs, warnings: list[str]) -> tuple[Dataset, Dataset, str]:
    """(training data, data the metric is measured on, what that data is)."""
    if ctx.eval_data is not None:
        check_data(inputs, ctx.eval_data, "evaluation data")
        return ctx.train_data, ctx.eval_data, f"evaluation data {ctx.eval_data.name!r} ({len(ctx.eval_data)} samples)"
    train, held = _split(ctx.train_data)
    if held is None:
        warnings.append("distillation quality is measured on the training data (too few samples to hold out)")
        return train, train, f"the training data itself ({len(train)} samples: too few to hold any out)"
    return train, held, f"a held-out 20% of the training data ({len(held)} samples, not trained on)"


@register_compression("distill")
def distill(variant: Variant, cfg: CompressionConfig, ctx: CompressContext) -> Variant:
    """Distil the pruned/decomposed student from the original model; see the module docstring."""
    from ..measure.quality import choose_metric_for, get_metric, metric_value

    student_src = eager_module(variant, "distillation")
    teacher = _teacher(variant)
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
    train, held, eval_on = _held_out(ctx, inputs, warnings)
    epochs = int(cfg.distill_epochs)
    student = copy.deepcopy(student_src)
    ref = outputs_of(teacher, inputs, held)
    outputs = variant.model.outputs
    # the output's kind (logits, embeddings, regression) picks the loss, its metric the number reported
    choice = choose_metric_for(ref, held.labels, name=outputs[0].name if outputs else "")
    metric_name, metric = choice.metric, get_metric(choice.metric)
    labels = held.labels if metric_name == "accuracy" else None
    teacher_metric = metric_value(metric_name, ref, ref, labels)
    out_before = outputs_of(student, inputs, held)
    before = metric_value(metric_name, out_before, ref, labels)
    kind_details = {"metric": metric_name, "output_kind": choice.kind, "output_kind_reason": choice.reason,
                    "loss": LOSS_NAMES.get(choice.kind, LOSS_NAMES["logits"]), "higher_is_better": metric.higher_is_better}
    if epochs == 0:
        rec = CompressionRecord("distill", False, f"distillation with 0 epochs: student unchanged ({metric_name} {before:.4f})",
                                {**kind_details, "metric_before": before, "teacher_metric": teacher_metric})
        return new_variant(variant, student, rec)
    ctx.progress(f"distillation: {epochs} epochs on {len(train)} samples", 0.0)
    run = distill_module(
        student, teacher, inputs, train, epochs, float(cfg.distill_temperature), float(cfg.distill_alpha),
        keep_zeros="prune-unstructured" in recoverable, time_budget_s=ctx.time_budget_s, progress=ctx.progress,
        kind=choice.kind,
    )
    out_after = outputs_of(student, inputs, held)
    after = metric_value(metric_name, out_after, ref, labels)
    if run["stopped_early"]:
        warnings.append(f"distillation stopped after {run['epochs_run']} of {epochs} epochs: time budget "
                        f"{ctx.time_budget_s:g} s spent")
    if (after < before) if metric.higher_is_better else (after > before):
        warnings.append(f"distillation made {metric_name} worse: {before:.4f} -> {after:.4f}")
    hard_labels = train.labels is not None and choice.kind == "logits"
    details = {
        **kind_details, "metric_before": before, "metric_after": after, "teacher_metric": teacher_metric,
        # a second view for every output kind: the cosine of the student's outputs with the teacher's
        "cosine_before": metric_value("cosine", out_before, ref), "cosine_after": metric_value("cosine", out_after, ref),
        "evaluated_on": eval_on, "train_data": train.name, "train_samples": len(train), "epochs": epochs,
        "temperature": float(cfg.distill_temperature), "alpha": float(cfg.distill_alpha) if hard_labels else 1.0,
        "labels_used": hard_labels, "batch_size": BATCH_SIZE, "lr": LR, "seed": SEED,
        "kept_zero_weights": "prune-unstructured" in recoverable, **run,
    }
    loss_text = f"T={cfg.distill_temperature:g}, alpha={details['alpha']:g}" if choice.kind == "logits" else details["loss"]
    summary = (
        f"distillation ({run['epochs_run']} epochs, {choice.kind or 'logits'}: {loss_text}): "
        f"{metric_name} {before:.4f} -> {after:.4f} (teacher {teacher_metric:.4f}) on {eval_on}"
    )
    ctx.progress("distillation done", 1.0)
    return new_variant(variant, student, CompressionRecord("distill", True, summary, details, warnings=warnings))

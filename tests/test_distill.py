"""Knowledge distillation of a pruned student from its original (teacher) on scikit-learn digits."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from benchmark.compress import distill, prune  # noqa: F401  (register the compressions)
from benchmark.compress.base import COMPRESSIONS, CompressContext
from benchmark.compress.prune import sparsity_report
from benchmark.config import CompressionConfig, InputSpec
from benchmark.data import get_dataset
from benchmark.data.base import Dataset
from benchmark.errors import CompressionError, ConfigError, DataError
from benchmark.models.base import LoadedModel, Variant


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, image):
        return self.fc(self.c2(self.c1(image)).mean(dim=(2, 3)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def digits():
    return get_dataset("digits", "train"), get_dataset("digits", "test")


@pytest.fixture(scope="module")
def teacher(digits):
    """TinyCNN trained 8 epochs on digits (a few seconds)."""
    train, _ = digits
    torch.manual_seed(0)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.from_numpy(train.arrays["image"])
    y = torch.from_numpy(train.labels)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(8):
        for idx in np.array_split(rng.permutation(len(y)), len(y) // 64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    return LoadedModel("tiny-cnn", "sample", "torch", [InputSpec("image", ("batch", 1, 8, 8))],
                       torch_module=model, num_classes=10)


def _acc(module, data):
    with torch.no_grad():
        pred = module(torch.from_numpy(data.arrays["image"])).argmax(1).numpy()
    return float((pred == data.labels).mean())


def _pruned(teacher, tmp_path, kind="structured", ratio=0.75):
    v = Variant("fp32", teacher, torch_module=teacher.torch_module)
    name = f"prune-{kind}"
    return COMPRESSIONS.get(name)(v, CompressionConfig(prune_ratio=ratio, prune_kind=kind), CompressContext(tmp_path))


def test_distillation_recovers_a_pruned_student(teacher, digits, tmp_path):
    train, test = digits
    assert _acc(teacher.torch_module, test) > 0.9  # the fixture really trained
    student = _pruned(teacher, tmp_path)
    teacher_state = {k: v.clone() for k, v in teacher.torch_module.state_dict().items()}
    events = []
    ctx = CompressContext(tmp_path, train_data=train, eval_data=test, progress=lambda m, f: events.append(f))
    out = COMPRESSIONS.get("distill")(student, CompressionConfig(distill=True, distill_epochs=3), ctx)
    rec = out.records[-1]
    d = rec.details
    assert rec.method == "distill" and rec.changed
    assert d["metric"] == "accuracy" and d["epochs_run"] == 3
    assert d["metric_before"] == pytest.approx(_acc(student.torch_module, test))
    assert d["metric_after"] == pytest.approx(_acc(out.torch_module, test))
    assert d["metric_after"] > d["metric_before"] + 0.05
    assert f"{d['metric_before']:.4f} -> {d['metric_after']:.4f}" in rec.summary
    # the student's architecture is kept; teacher and input student are untouched
    assert out.torch_module.c1[0].out_channels == student.torch_module.c1[0].out_channels == 4
    assert not out.torch_module.training
    for k, v in teacher.torch_module.state_dict().items():
        assert torch.equal(v, teacher_state[k])
    assert [r.method for r in out.records] == ["prune-structured", "distill"]
    fractions = [f for f in events if f is not None]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions) and fractions[-1] == 1.0


def test_distillation_is_seeded(teacher, digits, tmp_path):
    train, test = digits
    student = _pruned(teacher, tmp_path)
    ctx = CompressContext(tmp_path, train_data=train.subset(300), eval_data=test)
    cfg = CompressionConfig(distill=True, distill_epochs=1)
    a = COMPRESSIONS.get("distill")(student, cfg, ctx).torch_module
    b = COMPRESSIONS.get("distill")(student, cfg, ctx).torch_module
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k


def test_unstructured_zeros_stay_zero(teacher, digits, tmp_path):
    train, test = digits
    student = _pruned(teacher, tmp_path, kind="unstructured", ratio=0.6)
    before = sparsity_report(student.torch_module)
    ctx = CompressContext(tmp_path, train_data=train.subset(400), eval_data=test)
    out = COMPRESSIONS.get("distill")(student, CompressionConfig(distill=True, distill_epochs=1), ctx)
    after = sparsity_report(out.torch_module)
    assert out.records[-1].details["kept_zero_weights"]
    assert after["zeros"] >= before["zeros"]
    assert after["overall_sparsity"] == pytest.approx(0.6, abs=0.01)


def test_held_out_split_and_unlabelled_data(teacher, digits, tmp_path):
    train, _ = digits
    student = _pruned(teacher, tmp_path)
    unlabelled = dataclasses.replace(train.subset(200), labels=None)
    ctx = CompressContext(tmp_path, train_data=unlabelled)
    out = COMPRESSIONS.get("distill")(student, CompressionConfig(distill=True, distill_epochs=1), ctx)
    d = out.records[-1].details
    assert d["metric"] == "top1_agreement" and d["alpha"] == 1.0
    assert d["train_samples"] == 160 and "held-out 20%" in d["evaluated_on"]
    assert d["teacher_metric"] == 1.0


def test_time_budget_stops_early(teacher, digits, tmp_path):
    train, test = digits
    student = _pruned(teacher, tmp_path)
    ctx = CompressContext(tmp_path, train_data=train, eval_data=test, time_budget_s=0.0)
    out = COMPRESSIONS.get("distill")(student, CompressionConfig(distill=True, distill_epochs=5), ctx)
    d = out.records[-1].details
    assert d["stopped_early"] and d["epochs_run"] == 1 and d["steps"] == 1
    assert any("time budget" in w for w in out.records[-1].warnings)


def test_nothing_to_recover_is_reported(teacher, digits, tmp_path):
    train, test = digits
    v = Variant("fp32", teacher, torch_module=teacher.torch_module)
    ctx = CompressContext(tmp_path, train_data=train, eval_data=test)
    out = COMPRESSIONS.get("distill")(v, CompressionConfig(distill=True), ctx)
    assert not out.records[-1].changed and "nothing to recover" in out.records[-1].summary
    # an unchanged pruning step (ratio 0) is nothing to recover either
    zero = COMPRESSIONS.get("prune-structured")(v, CompressionConfig(prune_ratio=0.0), ctx)
    out = COMPRESSIONS.get("distill")(zero, CompressionConfig(distill=True), ctx)
    assert not out.records[-1].changed


def test_bad_input(teacher, digits, tmp_path):
    train, test = digits
    student = _pruned(teacher, tmp_path)
    cfg = CompressionConfig(distill=True, distill_epochs=1)
    with pytest.raises(ConfigError, match="distillation needs training data"):
        COMPRESSIONS.get("distill")(student, cfg, CompressContext(tmp_path))
    wrong = Dataset("wrong", {"pixels": train.arrays["image"]}, train.labels)
    with pytest.raises(DataError, match="model needs image"):
        COMPRESSIONS.get("distill")(student, cfg, CompressContext(tmp_path, train_data=wrong))
    no_teacher = Variant("fp32", dataclasses.replace(teacher, torch_module=None), torch_module=student.torch_module,
                         records=student.records)
    with pytest.raises(CompressionError, match="teacher"):
        COMPRESSIONS.get("distill")(no_teacher, cfg, CompressContext(tmp_path, train_data=train))
    scripted = dataclasses.replace(student, torch_module=torch.jit.script(student.torch_module))
    with pytest.raises(CompressionError, match="editable PyTorch module"):
        COMPRESSIONS.get("distill")(scripted, cfg, CompressContext(tmp_path, train_data=train))


class _MLP(nn.Module):
    def __init__(self, out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU())
        self.head = nn.Linear(64, out)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("out_name, width, kind, metric, loss", [
    ("hidden_state", 32, "embeddings", "cosine", "1 - cosine similarity"),
    ("score", 1, "regression", "rel_error", "mean squared error"),
    ("output", 10, "logits", "top1_agreement",
     "softmax KL divergence (temperature T) + logit MSE / teacher variance"),
])
def test_the_loss_and_metric_fit_the_output_kind(tmp_path, out_name, width, kind, metric, loss):
    """No labels: the output's kind (the rule that picks the rows' quality metric) picks the loss too,
    and distillation improves that metric on held-out inputs."""
    from benchmark.config import OutputSpec

    torch.manual_seed(0)
    teacher = _MLP(width).eval()
    model = LoadedModel("mlp", "sample", "torch", [InputSpec("x", ("batch", 16))],
                        outputs=[OutputSpec(out_name, ("batch", width))], torch_module=teacher)
    student = _pruned(model, tmp_path, ratio=0.6)
    rng = np.random.default_rng(0)
    train = Dataset("random", {"x": rng.standard_normal((512, 16)).astype(np.float32)}, None)
    held = Dataset("held", {"x": rng.standard_normal((128, 16)).astype(np.float32)}, None)
    ctx = CompressContext(tmp_path, train_data=train, eval_data=held)
    out = COMPRESSIONS.get("distill")(student, CompressionConfig(distill=True, distill_epochs=4), ctx)
    d = out.records[-1].details
    assert (d["output_kind"], d["metric"], d["loss"]) == (kind, metric, loss)
    assert d["labels_used"] is False and d["alpha"] == 1.0
    improved = d["metric_after"] < d["metric_before"] if metric == "rel_error" else d["metric_after"] >= d["metric_before"]
    assert improved, d
    assert d["cosine_after"] > d["cosine_before"]
    assert d["higher_is_better"] is (metric != "rel_error")

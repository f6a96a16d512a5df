"""Train the built-in samples on CPU and write their weights and metrics.

    python -m sample_models.train [--only NAME] [--threads N]

For each sample: seeds ``random``, ``numpy`` and ``torch`` (seed 0), trains on the dataset's
``train`` split with AdamW and a cosine learning-rate schedule, then measures top-1 accuracy on the
``test`` split once, after the last epoch (no model selection on the test set). Writes
``sample_models/<name>.pt`` (a state_dict, loadable with ``torch.load(weights_only=True)``) and
updates ``sample_models/metrics.json`` (test accuracy as a fraction in [0, 1], epochs, seed,
parameter count, training seconds). Every sample trains in well under a minute on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass

import numpy as np

SEED = 0


@dataclass(frozen=True)
class Recipe:
    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    #: "resample-mask": every training batch drops a fresh random 0..16 tokens per sample (the
    #: same distribution as the fixed masks of the digits-tokens dataset).
    augment: str | None = None


RECIPES = {
    "digits-cnn": Recipe(epochs=30, lr=3e-3),
    "mnist1d-cnn": Recipe(epochs=40, lr=3e-3, weight_decay=1e-3),
    "digits-transformer": Recipe(epochs=40, lr=3e-3, weight_decay=5e-2, augment="resample-mask"),
}


def seed_everything(seed: int = SEED) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def _tensors(dataset, input_names):
    import torch

    return [torch.from_numpy(dataset.arrays[n]) for n in input_names], torch.from_numpy(dataset.labels)


def _resample_mask_batches(train, gen):
    """Batch maker for digits-tokens: unmasked pixel tokens of the train split, new masks per batch."""
    import torch

    from benchmark.data import get_dataset
    from benchmark.data.builtin import DIGITS_MAX_DROPPED, DIGITS_PAD_ID

    images = get_dataset("digits", "train")
    if not np.array_equal(images.labels, train.labels):
        raise RuntimeError("digits and digits-tokens train splits are not aligned")
    full = torch.from_numpy(np.rint(images.arrays["image"].reshape(len(images), -1) * 16).astype(np.int64))

    def make(idx):
        ids = full[idx]
        b, t = ids.shape
        k = torch.randint(0, DIGITS_MAX_DROPPED + 1, (b, 1), generator=gen)
        rank = torch.rand(b, t, generator=gen).argsort(1).argsort(1)  # a random permutation per row
        mask = (rank >= k).long()  # drops exactly k tokens
        return ids.masked_fill(mask == 0, DIGITS_PAD_ID), mask

    return make


def evaluate(module, dataset, input_names, batch_size: int = 256) -> float:
    """Top-1 accuracy (fraction) of ``module`` on a labelled dataset, in eval mode."""
    import torch

    module.eval()
    xs, y = _tensors(dataset, input_names)
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(y), batch_size):
            logits = module(*(x[i:i + batch_size] for x in xs))
            correct += int((logits.argmax(-1) == y[i:i + batch_size]).sum())
    return correct / len(y)


def train_one(name: str, log=print) -> dict:
    """Train sample ``name``; save its weights; return its metrics entry."""
    import torch

    from benchmark.data import get_dataset
    from benchmark.models.archs import get_arch
    from benchmark.models.samples import get_sample

    sample = get_sample(name)
    arch = get_arch(sample.arch)
    recipe = RECIPES[name]
    seed_everything(SEED)
    module = arch.build()
    names = [s.name for s in arch.inputs]
    train = get_dataset(sample.dataset, "train")
    test = get_dataset(sample.dataset, "test")
    xs, y = _tensors(train, names)
    n = len(y)
    steps_per_epoch = (n + recipe.batch_size - 1) // recipe.batch_size
    opt = torch.optim.AdamW(module.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch, pct_start=0.15
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    gen = torch.Generator().manual_seed(SEED)
    if recipe.augment == "resample-mask":
        make_batch = _resample_mask_batches(train, gen)
    else:
        def make_batch(idx):
            return [x[idx] for x in xs]
    t0 = time.perf_counter()
    for epoch in range(recipe.epochs):
        module.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, recipe.batch_size):
            idx = perm[i:i + recipe.batch_size]
            loss = loss_fn(module(*make_batch(idx)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == recipe.epochs - 1:
            log(f"  {name} epoch {epoch + 1}/{recipe.epochs} train loss {total / n:.4f}")
    train_s = time.perf_counter() - t0
    module.eval()
    acc = evaluate(module, test, names)
    from sample_models import HERE

    torch.save(module.state_dict(), HERE / f"{name}.pt")
    return {
        "test_accuracy": round(acc, 4),
        "test_samples": len(test),
        "train_samples": n,
        "dataset": sample.dataset,
        "epochs": recipe.epochs,
        "batch_size": recipe.batch_size,
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
        "optimizer": "AdamW + OneCycleLR",
        "augment": recipe.augment,
        "seed": SEED,
        "params": sum(p.numel() for p in module.parameters()),
        "train_seconds": round(train_s, 1),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from sample_models import METRICS_PATH, load_metrics

    parser = argparse.ArgumentParser(prog="python -m sample_models.train", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RECIPES), help="train only this sample")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    metrics = load_metrics()
    for name in [args.only] if args.only else list(RECIPES):
        print(f"training {name} ...", flush=True)
        metrics[name] = train_one(name)
        m = metrics[name]
        print(f"{name}: test accuracy {m['test_accuracy']:.4f} on {m['test_samples']} samples, "
              f"{m['params']} params, {m['train_seconds']} s", flush=True)
        METRICS_PATH.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

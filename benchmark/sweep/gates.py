"""Gates before a backend session is prepared: each run the backend, the model, the data or the
memory cannot take becomes a ``skipped`` (or ``failed``) row with the reason; the rest go on."""
from __future__ import annotations

from ..errors import BenchmarkError
from .feeds import feed_batch, internal_error, per_feed
from .variant import VariantContext


def batch_skip_reason(batch_size: int, fixed: tuple[int, str] | None, eval_data) -> str | None:
    """Why ``batch_size`` cannot be measured for this model/data (None when it can)."""
    if fixed is not None and int(batch_size) != fixed[0]:
        return (f"model has a fixed batch of {fixed[0]} ({fixed[1]}): batch size {batch_size} cannot run; "
                f"export it with a dynamic batch dim to sweep batch sizes")
    if per_feed(eval_data):
        feed_bs = feed_batch(eval_data)
        if int(batch_size) != feed_bs:
            return (f"per-feed data: each feed of {eval_data.name} is run as given and holds a batch of {feed_bs}; "
                    f"batch size {batch_size} cannot be built from it (sweep batch size {feed_bs})")
    return None


def backend_gate(ctx: VariantContext, name: str, backend, runs: list[dict]) -> bool:
    """True when ``backend`` (registered as ``name``) supports the variant on the device; else its
    rows are sent (skipped with the backend's reason, or failed when asking it raised a bug)."""
    try:
        ok, reason = backend.supports(ctx.variant, ctx.device)
    except BenchmarkError as exc:
        ok, reason = False, str(exc)
    except Exception as exc:  # a backend bug: this backend's rows fail, the job goes on
        ctx.send_all(name, runs, "failed", f"{name}: {internal_error(exc)}", ctx.warnings)
        return False
    if not ok:
        ctx.send_all(name, runs, "skipped", f"{name} on {ctx.device}: {reason}", ctx.warnings)
    return ok


def batch_gate(ctx: VariantContext, backend_name: str, runs: list[dict]) -> list[dict]:
    """Send a skipped row for each batch size the model or data cannot run; return the others."""
    left = []
    for run in runs:
        reason = batch_skip_reason(int(run["batch_size"]), ctx.fixed, ctx.eval_data)
        if reason is None:
            left.append(run)
        else:
            ctx.send_all(backend_name, [run], "skipped", reason, ctx.warnings)
    return left


def memory_gate(ctx: VariantContext, backend_name: str, runs: list[dict]) -> list[dict]:
    """Send a skipped row for each run whose batch would not fit in memory; return the others."""
    from ..resources import (
        activation_profile, available_memory_bytes, estimate_batch_memory, input_bytes_per_sample, memory_skip_reason,
    )

    if ctx.memory_profile is None:
        ctx.out.step(f"estimating activation memory of {ctx.model.name}")
        ctx.memory_profile = activation_profile(ctx.model)
        if ctx.memory_profile.note:
            ctx.warnings.append(f"{ctx.memory_profile.note}; the memory check counted inputs, outputs and weights only")
    profile = ctx.memory_profile
    available, source = available_memory_bytes(ctx.device)
    try:
        per_input = input_bytes_per_sample(ctx.model.inputs)
    except BenchmarkError:  # dynamic non-batch dims: the run itself reports them
        return runs
    size_bytes = ctx.rows.size.get("size_bytes")
    weight_bytes = size_bytes if size_bytes is not None else ctx.model_bytes
    fitting = []
    for run in runs:
        est = estimate_batch_memory(int(run["batch_size"]), input_bytes_per_sample=per_input,
                                    output_bytes_per_sample=profile.output_bytes,
                                    largest_activation_bytes_per_sample=profile.largest_bytes,
                                    weight_bytes=weight_bytes)
        reason = memory_skip_reason(est, available)
        if reason is None:
            fitting.append(run)
            continue
        notes = [est.breakdown(), f"available memory from {source}"]
        ctx.out.send(ctx.rows.row(backend_name, est.batch_size, "skipped", error=reason,
                                  warnings=list(ctx.warnings) + notes))
    return fitting


def runnable(ctx: VariantContext, name: str, backend, runs: list[dict]) -> list[dict]:
    """The runs of ``backend`` (registered as ``name``) that pass every gate (the others' rows are sent)."""
    if not backend_gate(ctx, name, backend, runs):
        return []
    runs = batch_gate(ctx, name, runs)
    return memory_gate(ctx, name, runs) if runs else []

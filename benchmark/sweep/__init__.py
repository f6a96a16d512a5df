"""Sweeps: plan the cross product, run each variant in an isolated job, store every row at once.

A sweep is the cross product *compressions x backends x batch sizes* for one model
(:class:`~benchmark.config.SweepConfig`). :func:`plan_sweep` groups it into :class:`Job` s, one per
compression: the job's child process loads the model, builds the variant **once**, counts its
FLOPs, and measures it on every backend x batch size of the job.

Inside the child, for each backend: ``supports`` (a refusal becomes a ``skipped`` row with the
reason) -> batch sizes the model or data cannot run become ``skipped`` rows -> ``prepare`` ->
accuracy on the evaluation split (labels) and fidelity to the FP32 reference (the unpruned FP32
variant's outputs on the same samples on the same backend, computed once per sweep and cached in
the sweep's work folder) -> cross-backend check -> latency -> peak memory -> one
:class:`~benchmark.results.RunResult`, sent to the parent and committed to the store at once.

Measurement conventions: latency settings come from the sweep (``min_duration_s``,
``min_iters``; warm-up is ``min(5, min_iters)`` iterations and ``min(0.2, min_duration_s)``
seconds unless the config says otherwise); statistics use every timed iteration, the row stores
at most :data:`~benchmark.results.MAX_STORED_SAMPLES` of them (evenly spaced). Accuracy uses the
first ``eval_samples`` (default 512) samples of the evaluation split, evaluated once per backend at
its largest batch size; if that fails, the rows say so and each run evaluates at its own batch
size. A model without a dataset gets fidelity on 64 random inputs (said in the row's warnings). A
user ``.npz`` file is split: its first 20 % calibrate/train, the rest is evaluated
(:func:`benchmark.data.split_npz`).

Row honesty:

- Batch sizes: each input's batch axis is found from the model's symbolic dims, the data or
  ``--batch-axis`` (:mod:`benchmark.models.batch_axes`; a state ``[2, batch, 128]`` has axis 1, a
  scalar sample rate none and is fed as given). A model whose own input declares a number on its
  batch axis (an ONNX graph input ``[1, 4]``), or none of whose inputs has a batch axis, runs that
  batch only; other batch sizes are ``skipped`` ("model has a fixed batch of 1 ..."). With
  per-feed data (arrays one rank above the input) each timed iteration runs one feed as given, so
  the size of the feed's batch axis is the batch (1 without one; throughput = that / mean latency)
  and other batch sizes are ``skipped`` with the reason.
- A compression step the config asks for that changed nothing (its record says ``changed=False``)
  keeps the requested config on the row, sets ``compressed_as_asked=False`` and adds a warning
  ("int8-dynamic quantized nothing: this row is the unquantized model").
- Cross-backend agreement: the first backend of the job whose evaluation produced outputs is the
  reference; every later backend's first output on the same evaluation samples is compared with it
  element-wise (:func:`cross_backend_check`) and stored in ``cross_backend``.
- Memory: :func:`~benchmark.measure.memory.reset_peak_rss` starts a new peak-RSS window just
  before a backend's session is prepared (its first run) and before each later run's evaluation and
  timing, so ``peak_rss_mb`` is that run's peak, not the job's; ``gpu_peak_mb`` is what the
  session reports (``Session.gpu_peak_mb``: PyTorch's allocator peak, TensorRT's engine memory;
  None elsewhere).
- Errors: any exception of a backend while preparing, evaluating or timing fails only the rows it
  concerns (a :class:`BenchmarkError` with its message, anything else as "internal error: ...");
  the job's other runs go on. A session (or GPU energy meter) that fails to close is noted on the
  last row of its own backend: it is closed before that row is sent.

Reliability:

- A crash, OOM kill or hang of one job fails only the run that was in progress (``status=failed``
  with the cause); the job's remaining runs are retried in a fresh child.
- Every row is committed as soon as it exists; a sweep whose runner died becomes ``interrupted``
  (:meth:`Store.mark_interrupted`) and :func:`run_sweep` with ``resume_sweep_id`` runs only the
  rows that are missing.
- Jobs wait their turn in the per-device queue (:class:`~benchmark.jobs.DeviceQueue`); while
  waiting the sweep's status is ``queued`` and its progress says how many sweeps are ahead.
- Cancelling (:func:`cancel_sweep`) kills the running job of that sweep only.
- Resources (:mod:`benchmark.resources`): before a backend session is prepared, each batch size's
  memory is estimated (inputs + outputs + activations + weights) and one that would not fit in the
  available memory is a ``skipped`` row saying both numbers; before the variant is built and
  before each session writes exports/engines, the work folder's free disk space is checked and too
  little fails the variant with the folder and both numbers.

Layout of this package, one step per module:

- :mod:`.plan`: the jobs and runs of a config, a duration estimate, timing settings, checks made
  before anything is stored;
- :mod:`.child`: the job's child process (``JOB_TARGET``), which builds the variant
  (:mod:`.variant`), then per backend runs the gates (:mod:`.gates`) and the measurement
  (:mod:`.backend_run`);
- :mod:`.rows`: the one factory of result rows (ok, failed, skipped, pending) and their fields;
- :mod:`.quality`: FP32 reference outputs, accuracy / fidelity fields, the cross-backend check;
- :mod:`.runner`: the parent: queue, jobs, store, resume, cancel, background start;
- :mod:`.feeds`: what a run feeds the model (fixed batch, per-feed data, first batch), one-line bug text.

Backend-specific facts come from the backend and its session (``Backend.sweep_options``,
``Session.gpu_peak_mb``, ``Session.applies_precision``); the sweep never asks a backend's name.
"""
from __future__ import annotations

from .child import JOB_TARGET
from .plan import (
    DEFAULT_EVAL_SAMPLES, DEFAULT_JOB_TIMEOUT_S, RANDOM_EVAL_SAMPLES, Job, PlannedRun, absolute_paths,
    estimate_duration_s, plan_size, plan_sweep, run_settings, sweep_config_from_dict, sweep_config_to_dict,
    validate_sweep,
)
from .quality import cross_backend_check
from .rows import RSS_NOT_RESET, RowFactory, noop_warning, row_extras, stored_samples, unapplied_steps
from .runner import (
    Progress, SweepInterrupted, cancel_sweep, run_stored_sweep, run_sweep, start_sweep_background,
)

__all__ = [
    "Job", "PlannedRun", "plan_sweep", "plan_size", "estimate_duration_s", "run_settings", "run_sweep",
    "start_sweep_background", "run_stored_sweep", "cancel_sweep", "sweep_config_to_dict",
    "sweep_config_from_dict", "validate_sweep", "unapplied_steps", "noop_warning", "cross_backend_check",
    "absolute_paths", "row_extras", "stored_samples", "RowFactory", "Progress", "SweepInterrupted", "JOB_TARGET",
    "DEFAULT_JOB_TIMEOUT_S", "DEFAULT_EVAL_SAMPLES", "RANDOM_EVAL_SAMPLES", "RSS_NOT_RESET",
]

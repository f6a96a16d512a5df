"""Backend protocol and registry.

A backend turns a :class:`~benchmark.models.base.Variant` into a runnable session on a device.
The base class owns the public steps and their checks; subclasses fill the ``*_impl`` methods
(Polygraphy's shape). Heavy packages are imported inside methods, never at module import.

Lifecycle::

    backend = get_backend("onnxruntime")
    ok, reason = backend.availability()           # package importable? device present?
    ok, reason = backend.supports(variant, "cpu")  # can this backend run this variant here?
    session = backend.prepare(variant, device="cpu", threads=2)
    outputs = session.run(feeds)                   # dict[str, np.ndarray] -> list[np.ndarray]
    session.bind(feeds); session.run_bound()       # the timed call: inputs converted/bound once
    session.synchronize(); session.close()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError, MeasurementError
from ..registry import Registry


@dataclass
class SessionInfo:
    """What a prepared session really uses (recorded on every result row)."""

    backend: str
    device: str
    providers: list[str] = field(default_factory=list)  # ORT: session.get_providers()
    threads: int | None = None
    precision: str = "fp32"
    options: dict[str, Any] = field(default_factory=dict)  # graph opt level, engine cache path, ...
    warnings: list[str] = field(default_factory=list)  # non-fatal gaps (asked-for provider not loaded, ...)


class Session:
    """A prepared, runnable variant. ``run`` takes numpy feeds and returns numpy outputs."""

    info: SessionInfo

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def bind(self, feeds: dict[str, np.ndarray]) -> None:
        """Convert/copy ``feeds`` once (dtype, device, IO binding) for repeated ``run_bound`` calls."""
        self._bound_feeds = feeds

    def run_bound(self) -> Any:
        """Run once on the feeds given to ``bind``; this is the call a latency loop times.

        Outputs stay where the backend leaves them (device memory on CUDA, no numpy conversion).
        Work queued on a device must be finished or be on the stream ``synchronize`` waits for.
        """
        feeds = getattr(self, "_bound_feeds", None)
        if feeds is None:
            raise MeasurementError("run_bound() was called before bind(feeds); bind the inputs first")
        return self.run(feeds)

    def build(self) -> dict[str, Any] | None:
        """What the bound inputs run on, if this backend built it: ``{"build_time_s", "cached"}``.

        ``build_time_s``: seconds the engine or compiled module took to build (for one loaded from
        a cache, its recorded build time); ``cached``: loaded from a cache in this session. None
        where nothing is built ahead of running (eager PyTorch, ONNX Runtime).
        """
        return None

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU)."""

    def close(self) -> None:
        """Release resources."""

    # --- facts the sweep records, answered by each backend ------------------------------------
    def gpu_peak_mb(self) -> float | None:
        """Peak GPU memory (MiB) of this session's work since the last
        :func:`~benchmark.measure.memory.reset_gpu_peak`, where the backend can see it; None where
        it cannot (the default: memory outside PyTorch's allocator, or no GPU)."""
        return None

    @property
    def applies_precision(self) -> bool:
        """True when the backend applied the variant's precision itself (an engine built at the
        asked precision from the FP32 graph), so a precision step that changed nothing in the
        variant is not a no-op on this session's rows."""
        return False


class Backend:
    """Base class: subclasses set ``name`` and implement the ``*_impl`` methods."""

    name: str = ""
    label: str = ""  # how reasons name it (default: ``name``)
    devices: tuple[str, ...] = ("cpu",)
    #: Sweep runtime settings (:mod:`benchmark.sweep.runtime`) this backend honours through
    #: ``sweep_options``: only these vary its runs and name its variants.
    runtime_options: tuple[str, ...] = ()

    def availability(self, device: str = "cpu") -> tuple[bool, str]:
        """(ok, reason). Never raises; never imports heavy packages at module import."""
        if device not in self.devices:
            if self.devices == ("cuda",):
                return False, f"{self.label or self.name} runs on NVIDIA GPUs only (device 'cuda'), not on {device}"
            return False, f"{self.name} does not run on {device}"
        return self.availability_impl(device)

    def supports(self, variant, device: str = "cpu") -> tuple[bool, str]:
        """(ok, reason) for running ``variant`` on ``device``; a False becomes a ``skipped`` row."""
        ok, reason = self.availability(device)
        if not ok:
            return ok, reason
        return self.supports_impl(variant, device)

    def sweep_options(self, device: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The ``prepare`` options a sweep's run settings (:func:`benchmark.sweep.run_settings`)
        ask of this backend on ``device``; None when they ask nothing of it."""
        return None

    def prepare(self, variant, device: str = "cpu", threads: int = 0, workdir=None,
                options: dict[str, Any] | None = None) -> Session:
        """A runnable session. ``options`` are backend specific (see each backend's docstring)."""
        ok, reason = self.supports(variant, device)
        if not ok:
            raise BackendUnavailableError(f"{self.name} on {device}: {reason}")
        return self.prepare_impl(variant, device, threads, workdir, dict(options or {}))

    # --- to implement -------------------------------------------------------------------------
    def availability_impl(self, device: str) -> tuple[bool, str]:
        raise NotImplementedError

    def supports_impl(self, variant, device: str) -> tuple[bool, str]:
        return True, ""

    def prepare_impl(self, variant, device: str, threads: int, workdir, options: dict[str, Any]) -> Session:
        raise NotImplementedError


def feeds_batch(feeds: dict[str, np.ndarray], specs=None) -> int | None:
    """The batch size of ``feeds``: with input ``specs``, the size at the batch axis of the first
    input that has one (None when none has); without, dim 0 of the first input that has dimensions
    (None: all scalars)."""
    if specs is not None:
        from ..data.base import batch_of

        return batch_of(feeds, specs)
    for arr in feeds.values():
        if np.ndim(arr):
            return int(np.shape(arr)[0])
    return None


def no_module_reason(variant) -> str:
    """Why ``variant`` has no PyTorch module to run: the ONNX->PyTorch conversion's error when it
    failed, else that the variant is ONNX only (a precision step built no PyTorch side, or the model
    was not converted)."""
    model = getattr(variant, "model", None)
    error = getattr(model, "conversion_error", None)
    if error:
        return f"no PyTorch module: {error}"
    if getattr(model, "framework", None) == "onnx" and getattr(model, "torch_module", None) is None:
        return "no PyTorch module: the ONNX model was not converted to PyTorch"
    return "no PyTorch module for this variant (its compression built an ONNX file only)"


def runtime_failure(backend: str, exc: BaseException, feeds: dict | None = None) -> MeasurementError:
    """A MeasurementError (one line) for an exception a runtime raised while running a model."""
    text = str(exc).strip() or type(exc).__name__
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    shapes = ""
    if feeds:
        shapes = " with inputs " + ", ".join(f"{k} {'x'.join(map(str, getattr(v, 'shape', ())))}" for k, v in feeds.items())
    return MeasurementError(f"{backend} failed to run the model{shapes}: {first[:300]}")


BACKENDS: Registry[Backend] = Registry("backend")


def register_backend(backend: Backend, replace: bool = False) -> Backend:
    BACKENDS.register(backend.name, backend, replace=replace)
    return backend


def get_backend(name: str) -> Backend:
    return BACKENDS.get(name)

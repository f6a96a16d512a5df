"""GPU power and energy over a timed loop, read from NVML (``nvidia-ml-py``, imported as ``pynvml``).

Conventions (also shown in the UI):

- NVML reports the **whole board**: idle draw and the work of any other process on that GPU count.
  The reading covers the timed iterations only (warm-up excluded) on the GPU the session runs on.
- ``energy_counter`` (preferred): ``nvmlDeviceGetTotalEnergyConsumption`` (millijoules since the
  driver loaded; Volta and newer) read when the timed interval starts and when it ends. Energy is
  the difference; mean power = energy / interval.
- ``power_sampling`` (GPUs without the counter): a background thread reads
  ``nvmlDeviceGetPowerUsage`` (milliwatts) every ``sample_every_s``; mean power is the
  time-weighted mean of the samples and energy = mean power x interval.
- ``joules_per_batch`` = energy / timed iterations; ``joules_per_sample`` = energy /
  (iterations x batch size).
- NVML refreshes its readings a few times a second, so an interval shorter than
  :data:`MIN_RELIABLE_S` gives coarse figures; the reading says so in ``note``.
- Without ``nvidia-ml-py`` or without an NVIDIA driver, :func:`nvml_meter` returns no meter and the
  reason; nothing is estimated.
"""
from __future__ import annotations

import importlib.util
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from ..errors import MeasurementError

#: Intervals shorter than this (seconds) are flagged: NVML refreshes power and energy a few times a second.
MIN_RELIABLE_S = 1.0
METHODS = ("energy_counter", "power_sampling")


@dataclass
class EnergyReading:
    """Board energy over one timed interval (see the module docstring)."""

    method: str
    interval_s: float
    energy_j: float
    mean_power_w: float
    power_samples: int = 0  # power_sampling only
    gpu: str = ""
    note: str = ""

    def for_run(self, iterations: int, batch_size: int) -> dict[str, Any]:
        """The reading as stored on a result row, with energy per batch and per sample."""
        if iterations < 1 or batch_size < 1:
            raise MeasurementError(f"need iterations >= 1 and batch size >= 1; got {iterations}, {batch_size}")
        out = asdict(self)
        out["joules_per_batch"] = self.energy_j / iterations
        out["joules_per_sample"] = self.energy_j / (iterations * batch_size)
        return out


class EnergyMeter:
    """Reads board energy between :meth:`start` and :meth:`stop`.

    ``read_energy_mj`` returns a cumulative energy counter in millijoules, ``read_power_mw`` the
    present power draw in milliwatts; give at least one (the counter wins when both are given).
    ``clock`` returns seconds (``time.perf_counter``).
    """

    def __init__(self, read_energy_mj: Callable[[], float] | None = None,
                 read_power_mw: Callable[[], float] | None = None, *, gpu: str = "",
                 sample_every_s: float = 0.02, clock: Callable[[], float] = time.perf_counter,
                 on_close: Callable[[], None] | None = None):
        if read_energy_mj is None and read_power_mw is None:
            raise MeasurementError("an energy meter needs an energy counter or a power reading")
        if sample_every_s <= 0:
            raise MeasurementError(f"sample_every_s must be > 0; got {sample_every_s}")
        self.read_energy_mj = read_energy_mj
        self.read_power_mw = read_power_mw
        self.method = "energy_counter" if read_energy_mj is not None else "power_sampling"
        self.gpu = gpu
        self.sample_every_s = float(sample_every_s)
        self.clock = clock
        self._on_close = on_close
        self._t0: float | None = None
        self._e0: float | None = None
        self._samples: list[tuple[float, float]] = []  # (time s, power W)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # --- power sampling thread ---------------------------------------------------------------
    def _sample(self) -> None:
        self._samples.append((self.clock(), float(self.read_power_mw()) / 1000.0))

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.sample_every_s):
                self._sample()
        except Exception as exc:  # kept and raised by stop(): a reading must not fail silently
            self._error = exc

    # --- public ------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin an interval (call right before the first timed iteration)."""
        if self._t0 is not None:
            raise MeasurementError("the energy meter is already running; stop() it first")
        self._samples, self._error = [], None
        if self.method == "energy_counter":
            self._e0 = float(self.read_energy_mj())
            self._t0 = self.clock()
            return
        self._t0 = self.clock()
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="slimbench-nvml-power", daemon=True)
        self._thread.start()

    def stop(self) -> EnergyReading:
        """End the interval and return its reading."""
        if self._t0 is None:
            raise MeasurementError("stop() was called before start()")
        t0, self._t0 = self._t0, None
        if self.method == "energy_counter":
            e1 = float(self.read_energy_mj())
            t1 = self.clock()
            interval = t1 - t0
            energy = (e1 - float(self._e0)) / 1000.0
            if energy < 0:
                raise MeasurementError("the GPU energy counter went backwards (driver reloaded?); energy not measured")
            power = energy / interval if interval > 0 else 0.0
            return EnergyReading("energy_counter", interval, energy, power, 0, self.gpu, self._note(interval))
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if isinstance(self._error, MeasurementError):
            raise self._error
        if self._error is not None:
            raise MeasurementError(f"reading GPU power failed: {self._error}")
        self._sample()
        t1 = self.clock()
        interval = t1 - t0
        power = time_weighted_mean(self._samples)
        return EnergyReading("power_sampling", interval, power * interval, power, len(self._samples), self.gpu,
                             self._note(interval))

    @staticmethod
    def _note(interval: float) -> str:
        if interval < MIN_RELIABLE_S:
            return (f"timed interval of {interval:.2f} s is shorter than {MIN_RELIABLE_S:.0f} s; NVML refreshes "
                    "a few times a second, so the energy figures are coarse (raise the minimum duration)")
        return ""

    @property
    def running(self) -> bool:
        return self._t0 is not None

    def abort(self) -> None:
        """Drop an unfinished interval (the timed loop failed); the meter can start again."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._t0 = None

    def close(self) -> None:
        """Stop sampling and release NVML."""
        self.abort()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


def time_weighted_mean(samples: list[tuple[float, float]]) -> float:
    """Mean of (time, value) samples, each value held until the next sample (trapezoids)."""
    if not samples:
        raise MeasurementError("no power samples were taken")
    if len(samples) == 1 or samples[-1][0] <= samples[0][0]:
        return sum(v for _, v in samples) / len(samples)
    area = 0.0
    for (ta, va), (tb, vb) in zip(samples, samples[1:]):
        area += (tb - ta) * (va + vb) / 2.0
    return area / (samples[-1][0] - samples[0][0])


def _checked(read: Callable[[], float]) -> Callable[[], float]:
    """``read`` with any failure turned into a one-line MeasurementError (the row keeps its latency)."""
    def reader() -> float:
        try:
            return float(read())
        except Exception as exc:  # NVMLError and friends: the reading is lost, the measurement is not
            raise MeasurementError(f"reading the GPU's energy/power from NVML failed: {exc}") from exc

    return reader


def _nvml_handle(pynvml, device: str):
    """The NVML handle of the CUDA device torch calls ``device`` (matched by UUID, CUDA_VISIBLE_DEVICES-safe)."""
    import torch

    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
    return pynvml.nvmlDeviceGetHandleByIndex(index)


def nvml_meter(device: str = "cuda") -> tuple[EnergyMeter | None, str]:
    """An :class:`EnergyMeter` for the CUDA ``device``, or (None, why not). Never raises."""
    if not device.startswith("cuda"):
        return None, f"GPU energy is measured on CUDA devices only, not on {device}"
    if importlib.util.find_spec("pynvml") is None:
        return None, "GPU energy not measured: nvidia-ml-py is not installed (pip install 'slimbench[gpu]')"
    import pynvml

    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError (no driver, no library) or a broken install
        return None, f"GPU energy not measured: NVML did not start ({exc})"
    try:
        handle = _nvml_handle(pynvml, device)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else str(name)
        readers: dict[str, Callable[[], float]] = {}
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            readers["read_energy_mj"] = _checked(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except pynvml.NVMLError:  # counter not supported (pre-Volta): sample power instead
            pynvml.nvmlDeviceGetPowerUsage(handle)
            readers["read_power_mw"] = _checked(lambda: pynvml.nvmlDeviceGetPowerUsage(handle))
    except Exception as exc:  # NVMLError, or torch/pynvml mismatches: no meter, and the reason
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as shut:
            exc = f"{exc}; shutting NVML down also failed: {shut}"
        return None, f"GPU energy not measured: NVML cannot read this GPU's power ({exc})"
    return EnergyMeter(**readers, gpu=name, on_close=pynvml.nvmlShutdown), ""

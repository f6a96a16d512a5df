"""What the engine passes around: a loaded model and its compressed variants."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import UNNAMED_INPUT, InputSpec, OutputSpec
from ..errors import ConfigError

#: Model formats Slimbench reads.
FORMATS = ("onnx", "torchscript", "exported", "state_dict", "pickle", "sample")


@dataclass
class LoadedModel:
    """A model as loaded from a file or a built-in sample.

    Exactly one of ``torch_module`` / ``onnx_path`` is the *source of truth* (``framework``);
    the other may be produced later by ``benchmark.models.export.ensure_onnx``.

    - ``torch_module``: an eager ``nn.Module`` (also a loaded ``.pt2``'s ``ExportedProgram.module()``)
      or a ``torch.jit.ScriptModule``, in eval mode, on CPU, FP32.
    - ``onnx_path``: a single ONNX file (external data, if any, beside it).
    - ``converted_module``: an eager module converted from the ONNX graph and verified against ONNX
      Runtime (:func:`benchmark.models.conversion.attach_conversion`); an ONNX upload runs it as its
      ``torch_module`` too, while a TorchScript or ``.pt2`` model keeps running its own module and
      uses the converted one only where a compression needs layers it can edit.
    """

    name: str
    format: str
    framework: str  # "torch" or "onnx"
    inputs: list[InputSpec]
    outputs: list[OutputSpec] = field(default_factory=list)
    path: Path | None = None
    torch_module: Any = None
    onnx_path: Path | None = None
    arch: str | None = None  # registered built-in architecture, if any
    sample: str | None = None  # built-in sample name, if any
    dataset: str | None = None  # default evaluation dataset (registry name)
    num_classes: int | None = None
    notes: list[str] = field(default_factory=list)
    #: batch axis of each input the graph itself names (an ONNX recurrent node's initial state)
    state_axes: dict[str, int] = field(default_factory=dict)
    # ONNX -> PyTorch conversion (benchmark.models.conversion): ONNX uploads, and TorchScript / .pt2
    # programs through their ONNX export, get an editable nn.Module for pruning, low-rank and distillation
    converted_module: Any = None  # the converted nn.Module (for an ONNX upload also ``torch_module``)
    conversion: dict[str, Any] | None = None  # how it was converted and verified (plain data)
    conversion_error: str | None = None  # why there is no converted module

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise ConfigError(f"model {self.name!r} has no input {name!r}; inputs: {', '.join(s.name for s in self.inputs)}")

    def with_inputs(self, overrides: list[InputSpec] | tuple[InputSpec, ...]) -> "LoadedModel":
        """A copy whose input specs take the shapes and dtypes of ``overrides`` (matched by name; an
        override without a dtype keeps the declared one; each input keeps its batch axis where the
        rank allows). An override without a name
        (:data:`~benchmark.config.UNNAMED_INPUT`, from ``--input 1x3x224x224``) applies to a
        single-input model's input; names must otherwise match, the error lists them.
        """
        if not overrides:
            return self
        names = [s.name for s in self.inputs]
        by_name = {}
        for o in overrides:
            if o.name == UNNAMED_INPUT:
                if len(names) != 1:
                    raise ConfigError(f"input shape {'x'.join(map(str, o.shape))} names no input, but {self.name!r} has "
                                      f"{len(names)} inputs ({', '.join(names)}); write NAME:SHAPE")
                o = InputSpec(names[0], o.shape, o.dtype, dtype_given=o.dtype_given)
            by_name[o.name] = o
        unknown = [n for n in by_name if n not in names]
        if unknown:
            raise ConfigError(
                f"input override for {', '.join(map(repr, unknown))} does not match any input of "
                f"{self.name!r}; inputs: {', '.join(names)}"
            )
        new_inputs = [s.with_shape(o.shape, o.dtype if o.dtype_given else None) if (o := by_name.get(s.name)) else s
                      for s in self.inputs]
        return dataclasses.replace(self, inputs=new_inputs)

    def example_tensors(self, batch_size: int = 1, seed: int = 0) -> tuple:
        """:meth:`example_inputs` as a tuple of CPU tensors in input order."""
        return feeds_to_tensors(self.example_inputs(batch_size, seed), self.inputs)

    def example_inputs(self, batch_size: int = 1, seed: int = 0) -> dict[str, Any]:
        """Random numpy feeds matching the input specs (``batch_size`` on each input's batch axis; an
        input without one as declared), each in its input's dtype.

        Integer inputs get values in [0, 2) for masks/ids (``attention_mask``-like names get ones).
        Inputs that would not fit in the available memory raise ``ResourceError`` before anything
        is allocated (:func:`benchmark.data.synthetic.random_arrays`).
        """
        from ..data.synthetic import random_arrays

        shapes = {spec.name: spec.concrete(batch_size) for spec in self.inputs}
        return random_arrays(self.inputs, shapes, seed=seed,
                             what=f"example inputs of {self.name} at batch {batch_size} "
                                  f"({', '.join(s.name + ' ' + 'x'.join(map(str, shapes[s.name])) for s in self.inputs)})")


def set_eval(module) -> None:
    """Inference mode where the module allows it: a loaded ``.pt2`` program's module refuses
    ``eval()`` (it was traced for inference already), so that refusal is not an error."""
    try:
        module.eval()
    except NotImplementedError:
        return


def feeds_to_tensors(feeds: dict[str, Any], inputs) -> tuple:
    """Numpy feeds as a tuple of CPU tensors in input order (bfloat16 inputs cast; integers stay integers)."""
    import torch

    from ..data.base import contiguous

    args = []
    for spec in inputs:
        t = torch.from_numpy(contiguous(feeds[spec.name]))
        if spec.dtype == "bfloat16":
            t = t.to(torch.bfloat16)
        args.append(t)
    return tuple(args)


@dataclass
class CompressionRecord:
    """What a compression step did. ``changed=False`` means the step was a no-op and is reported so."""

    method: str
    changed: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Variant:
    """One compressed (or reference) version of a model, runnable by the backends.

    ``torch_module`` and/or ``onnx_path`` hold the variant's weights. ``torch_precision`` tells the
    PyTorch backend how to run ``torch_module``: ``fp32``, ``fp16`` (``.half()``), ``bf16``
    (bf16 weights), ``autocast-bf16`` / ``autocast-fp16`` (mixed: AMP at inference), or ``int8``
    (a quantized module; CPU only). ``onnx_path`` is run as is by ONNX Runtime / TensorRT.
    """

    name: str
    model: LoadedModel
    precision: str = "fp32"
    prune_ratio: float = 0.0
    prune_kind: str | None = None
    torch_module: Any = None
    torch_precision: str = "fp32"
    onnx_path: Path | None = None
    records: list[CompressionRecord] = field(default_factory=list)
    config: Any = None  # the CompressionConfig that built it
    export_info: Any = None  # benchmark.models.export.ExportInfo when exported here
    calib_data: Any = None  # the Dataset its INT8 ranges were calibrated on (TensorRT calibrates on it too)

    @property
    def warnings(self) -> list[str]:
        return [w for r in self.records for w in r.warnings]

    def describe(self) -> str:
        return "; ".join(r.summary for r in self.records) or "reference (no compression)"

"""Which dim of each model input holds the batch, and dims filled in from data.

A model's inputs do not all carry the batch on dim 0: a recurrent state is ``[2, batch, 128]``, a
sample rate is a scalar, a sequence model's ``x`` is ``[time, 1, 40]``. :func:`infer_batch_axes`
finds each input's batch axis from the graph; the first rule that applies wins:

0. the initial state of a recurrent node (``initial_h`` / ``initial_c`` of an ONNX LSTM, GRU or RNN,
   ``[directions, batch, hidden]``) has the batch on dim 1 (dim 0 with ``layout=1``);
1. a symbolic dim named like a batch (``batch``, ``batch_size``, ``bs``, ``N``, ``B``, or any name
   holding ``batch``) is the batch axis of every input that has it;
2. else a symbolic dim shared by two or more inputs, or by an input and an output (not a
   time/sequence dim such as ``time``, ``seq``, ``length``): the one held by the most inputs,
   then the one nearest dim 0;
3. inputs without that dim, or every input when no name says anything: dim 0 when it is open
   (unnamed, or named but not a time/sequence dim); a scalar, or an input whose dim 0 is a
   time/sequence dim, has none. Where another input has an open batch, an input whose dim 0 is a
   number takes its only other open dim (``[2, ?, 128]`` beside ``[?, 512]`` -> 1), and one that is
   all numbers has none (a state exported at batch 1); otherwise dim 0, a number (the model fixes
   its batch, e.g. ``[1, 3, 224, 224]``).

The user's setting (``--batch-axis NAME:AXIS|NAME:none``, :func:`apply_batch_axes`) overrides
them; :func:`fit_to_data` fills dynamic dims from a dataset's arrays. An input without a batch
axis is fed as given, whatever the batch size.
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from typing import TYPE_CHECKING, Iterable

from ..config import UNNAMED_INPUT, InputSpec, parse_batch_axis
from ..errors import ConfigError

if TYPE_CHECKING:
    from .base import LoadedModel

_BATCH_NAME = re.compile(r"^(n|b|bs|nb|batches|num_batch(es)?)$|batch", re.IGNORECASE)
_SEQUENCE_NAME = re.compile(r"^(t|time|times|timesteps?|steps?|seq|seqlen|seq_len|sequence|sequence_length|length|len|"
                            r"frames?|num_frames|tokens?|num_tokens)$|time|sequence|seq_len", re.IGNORECASE)
_UNNAMED = re.compile(r"^(\?|dim\d+|-1|)$")


def _named(dim) -> bool:
    """A symbolic dim with a real name (``?``, ``dim3`` and other placeholders are unnamed)."""
    return isinstance(dim, str) and not _UNNAMED.match(dim)


def _open(dim) -> bool:
    return not isinstance(dim, int)


def _sequence(dim) -> bool:
    return _named(dim) and bool(_SEQUENCE_NAME.search(dim)) and not _BATCH_NAME.search(dim)


def _batch_name(inputs: list[InputSpec], outputs: Iterable) -> str | None:
    """The symbolic dim that is the batch (rules 1 and 2 of the module docstring), or None."""
    names_in: dict[str, set[str]] = {}
    first_axis: dict[str, int] = {}
    for spec in inputs:
        for i, d in enumerate(spec.shape):
            if _named(d):
                names_in.setdefault(d, set()).add(spec.name)
                first_axis[d] = min(first_axis.get(d, i), i)
    for d in sorted(names_in, key=lambda n: first_axis[n]):
        if _BATCH_NAME.search(d):
            return d
    in_outputs = {d for out in outputs for d in getattr(out, "shape", ()) if _named(d)}
    shared = [d for d, held in names_in.items()
              if not _sequence(d) and (len(held) > 1 or d in in_outputs)]
    if not shared:
        return None
    return min(shared, key=lambda d: (-len(names_in[d]), first_axis[d]))


def _fallback_axis(spec: InputSpec, others_open: bool) -> int | None:
    """Rule 3 of the module docstring for one input; ``others_open``: some input of the model has
    an open batch (the batch-named dim, or an open dim 0)."""
    shape = spec.shape
    if not shape:
        return None
    if _open(shape[0]):
        return None if _sequence(shape[0]) else 0
    if others_open:
        candidates = [i for i, d in enumerate(shape) if _open(d) and not _sequence(d)]
        if len(candidates) == 1:
            return candidates[0]
        if spec.is_static:
            return None
    return 0


def infer_batch_axes(inputs: list[InputSpec], outputs: Iterable = (),
                     state_axes: dict[str, int] | None = None) -> tuple[list[InputSpec], str | None]:
    """``inputs`` with the batch axis each one has by the rules of the module docstring, and a note
    saying how they were found when some input's batch axis is not dim 0 (None otherwise).
    ``state_axes``: rule 0, ``{input: axis}`` of recurrent states (:func:`benchmark.onnx_graph.recurrent_state_axes`)."""
    inputs = list(inputs)
    batch = _batch_name(inputs, list(outputs))
    axes: dict[str, int | None] = {}
    for spec in inputs:
        axis = (state_axes or {}).get(spec.name)
        if axis is not None and axis < len(spec.shape):
            axes[spec.name] = axis
        elif batch is not None and batch in spec.shape:
            axes[spec.name] = spec.shape.index(batch)
    rest = [s for s in inputs if s.name not in axes]
    others_open = bool(axes) or any(_open(s.shape[0]) and not _sequence(s.shape[0]) for s in rest if s.shape)
    for spec in rest:
        axes[spec.name] = _fallback_axis(spec, others_open)
    out = [s.with_batch_axis(axes[s.name]) for s in inputs]
    if all(s.batch_axis == 0 or not s.shape for s in out):
        return out, None
    how = f"the symbolic dim {batch!r}" if batch is not None else "the inputs' shapes"
    if any(s.name in (state_axes or {}) for s in out):
        how += " and the recurrent nodes' initial states"
    return out, f"batch axes from {how}: {describe_axes(out)} (change with --batch-axis NAME:AXIS|NAME:none)"


def describe_axes(specs: Iterable[InputSpec]) -> str:
    """``input dim 0, state dim 1, sr none``."""
    return ", ".join(f"{s.name} {'none' if s.batch_axis is None else f'dim {s.batch_axis}'}" for s in specs)


def apply_batch_axes(model: "LoadedModel", settings: Iterable[str]) -> "LoadedModel":
    """A copy of ``model`` with the user's batch axes (``NAME:AXIS`` / ``NAME:none``; a bare ``AXIS``
    on a single-input model). One-line ConfigError for an unknown input or an axis outside its rank."""
    settings = list(settings or ())
    if not settings:
        return model
    names = [s.name for s in model.inputs]
    chosen: dict[str, int | None] = {}
    for text in settings:
        name, axis = parse_batch_axis(text)
        if name == UNNAMED_INPUT:
            if len(names) != 1:
                raise ConfigError(f"batch axis {text!r} names no input, but {model.name!r} has {len(names)} inputs "
                                  f"({', '.join(names)}); write NAME:AXIS")
            name = names[0]
        if name not in names:
            raise ConfigError(f"batch axis given for {name!r}, which {model.name!r} does not have; inputs: {', '.join(names)}")
        chosen[name] = axis
    inputs = [s.with_batch_axis(chosen[s.name]) if s.name in chosen else s for s in model.inputs]
    note = f"batch axes set by the user: {describe_axes(s for s in inputs if s.name in chosen)}"
    return dataclasses.replace(model, inputs=inputs, notes=list(model.notes) + [note])


def fill_dims(spec: InputSpec, feed_shape: tuple[int, ...]) -> InputSpec:
    """``spec`` with its dynamic dims other than the batch axis taken from one feed's shape."""
    if len(feed_shape) != len(spec.shape):
        return spec
    shape = [d if isinstance(d, int) or i == spec.batch_axis else int(feed_shape[i])
             for i, d in enumerate(spec.shape)]
    return spec.with_shape(shape)


def fit_to_data(model: "LoadedModel", dataset) -> tuple["LoadedModel", list[str]]:
    """``model`` with the batch axes its data shows and its open dims filled from the data.

    - An input whose array holds its samples along another dim than the input's batch axis (see
      :func:`benchmark.data.npz.check_arrays`) takes that dim as its batch axis.
    - Dynamic dims other than the batch axis take their size from the data's first feed.

    Returns the new model and notes saying what changed (none when ``dataset`` is None).
    """
    if dataset is None:
        return model, []
    notes = []
    inputs = []
    first = dataset.first_feed()
    for spec in model.inputs:
        arr = first.get(spec.name)
        if arr is None:
            inputs.append(spec)
            continue
        axis = dataset.axis(spec.name)
        if not dataset.feed_axis.get(spec.name, False) and axis is not None and axis != spec.batch_axis:
            notes.append(f"input {spec.name!r}: the data holds its samples along dim {axis}, taken as its batch axis")
            spec = spec.with_batch_axis(axis)
        filled = fill_dims(spec, tuple(arr.shape))
        if filled.shape != spec.shape:
            notes.append(f"input {spec.name!r}: {'x'.join(map(str, spec.shape))} filled from the data as "
                         f"{'x'.join(map(str, filled.shape))}")
        inputs.append(filled)
    return dataclasses.replace(model, inputs=inputs), notes


__all__ = ["apply_batch_axes", "describe_axes", "fill_dims", "fit_to_data", "infer_batch_axes"]

"""Built-in architectures: a state_dict for one of these can be loaded safely (weights_only=True)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..config import InputSpec
from ..registry import Registry


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture: how to build it, its input specs, its class count."""

    name: str
    build: Callable[[], object]  # () -> torch.nn.Module in eval mode
    inputs: tuple[InputSpec, ...]
    num_classes: int | None = None
    description: str = ""
    dataset: str | None = None  # default evaluation dataset


ARCHITECTURES: Registry[ArchSpec] = Registry("architecture")


def register_arch(spec: ArchSpec) -> ArchSpec:
    return ARCHITECTURES.register(spec.name, spec)


def get_arch(name: str) -> ArchSpec:
    _load_builtins()
    return ARCHITECTURES.get(name)


def arch_names() -> list[str]:
    _load_builtins()
    return ARCHITECTURES.names()


def _load_builtins() -> None:
    """Importing ``sample_models`` registers the built-in architectures and samples."""
    import sample_models  # noqa: F401

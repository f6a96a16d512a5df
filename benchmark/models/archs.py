"""Architectures: a state_dict for one of these can be loaded safely (weights_only=True).

This module is the registry only; it never imports what registers here. The built-in
architectures come from the ``sample_models`` package, which ``benchmark/__init__.py`` imports,
so they are registered in every process that imports Slimbench (child processes included).
Plugins (``$SLIMBENCH_PLUGINS``) call :func:`register_arch` the same way.
"""
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
    return ARCHITECTURES.get(name)


def arch_names() -> list[str]:
    return ARCHITECTURES.names()

"""Layers and size checks every architecture builds on: MLP stacks, activations, and the checks
that turn a bad model config into a one-line :class:`ConfigError`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mtl_runner.errors import ConfigError
from mtl_runner.schema import Activation

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def activation_layer(name: str) -> nn.Module:
    return ACTIVATIONS[Activation(name).value]()


def check_sizes(key: str, sizes: Sequence[int], allow_empty: bool = False) -> list[int]:
    """The widths as ints; one or more positive widths (or none, with ``allow_empty``)."""
    widths = [int(size) for size in sizes]
    if (not widths and not allow_empty) or (widths and min(widths) < 1):
        wanted = "zero or more" if allow_empty else "one or more"
        raise ConfigError(f"model.{key}={widths} is not allowed: give {wanted} positive widths")
    return widths


def check_count(key: str, value: int, minimum: int, what: str) -> int:
    """``value`` as an int, at least ``minimum``; ``what`` says why in the message."""
    count = int(value)
    if count < minimum:
        raise ConfigError(f"model.{key}={count} is not allowed: {what}")
    return count


def check_dropout(dropout: float) -> float:
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout={dropout} is not allowed: use 0 <= dropout < 1")
    return float(dropout)


def mlp(in_features: int, sizes: Sequence[int], activation: str, dropout: float) -> nn.Sequential:
    """Linear → activation (→ dropout) for every width in ``sizes`` (empty: the identity)."""
    layers: list[nn.Module] = []
    width = in_features
    for size in sizes:
        layers += [nn.Linear(width, size), activation_layer(activation)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    return nn.Sequential(*layers)

"""One-line validation of weighting hyperparameters (``weighting.<key>=<value> is not allowed``)."""

from __future__ import annotations

import math

from mtl_runner.errors import ConfigError


def require(condition: bool, key: str, value: object, allowed: str) -> None:
    """Raise the one-line ConfigError ``weighting.<key>=<value> is not allowed: <allowed>``."""
    if not condition:
        raise ConfigError(f"weighting.{key}={value} is not allowed: {allowed}")


def require_finite(key: str, value: float) -> None:
    require(math.isfinite(value), key, value, "it must be a finite number")


def require_non_negative(key: str, value: float) -> float:
    require(value >= 0 and math.isfinite(value), key, value, "it must be a number >= 0")
    return float(value)

"""Weighting methods, one per module; ``conf/weighting/<name>.yaml`` names the class.

:func:`build_weighting` turns a composed ``weighting`` config into a method, validating its
hyperparameters against the class's ``__init__`` annotations first.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Sequence
from typing import Any

from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mtl_runner.errors import ConfigError
from mtl_runner.weighting.base import Combined, LossWeighting, StepContext, Weighting
from mtl_runner.weighting.gradients import Aggregation, GradientWeighting, GradSource

__all__ = [
    "Aggregation",
    "Combined",
    "GradSource",
    "GradientWeighting",
    "LossWeighting",
    "StepContext",
    "Weighting",
    "build_weighting",
]

_RUNTIME_ARGUMENTS = ("self", "task_names")


def build_weighting(cfg: DictConfig, task_names: Sequence[str]) -> Weighting:
    """Instantiate the method named by ``cfg._target_`` with validated hyperparameters."""
    options = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    target = options.pop("_target_", None)
    method_class = _method_class(target)
    return method_class(tuple(task_names), **validated_options(method_class, options))


def _method_class(target: object) -> type[Weighting]:
    if not isinstance(target, str):
        raise ConfigError("weighting._target_ is missing: name the method's class")
    try:
        method_class = get_class(target)
    except Exception as error:  # hydra wraps import errors of every kind
        raise ConfigError(f"weighting._target_={target} cannot be imported: {error}") from error
    if not (isinstance(method_class, type) and issubclass(method_class, Weighting)):
        raise ConfigError(
            f"weighting._target_={target} is not a weighting method "
            "(a subclass of mtl_runner.weighting.Weighting)"
        )
    return method_class


def options_schema(method_class: type[Weighting]) -> type:
    """A dataclass of the method's hyperparameters, typed by its ``__init__`` annotations."""
    hints = typing.get_type_hints(method_class.__init__)
    fields = []
    for name, parameter in inspect.signature(method_class.__init__).parameters.items():
        if name in _RUNTIME_ARGUMENTS:
            continue
        default: Any = (
            MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        )
        if isinstance(default, (list, dict)):
            default = dataclasses.field(default_factory=lambda value=default: value)
        fields.append((name, hints.get(name, Any), default))
    return dataclasses.make_dataclass(f"{method_class.__name__}Options", fields)


def validated_options(method_class: type[Weighting], options: dict[str, Any]) -> dict[str, Any]:
    """Check types and presence; raise one line naming the bad key and what is allowed."""
    schema = options_schema(method_class)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), options)
        instance = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        allowed = [f.name for f in dataclasses.fields(schema)]
        raise ConfigError(_describe(error, options, allowed)) from error
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


def _describe(error: OmegaConfBaseException, options: dict[str, Any], allowed: list[str]) -> str:
    key = str(getattr(error, "full_key", "") or "").split("[")[0]
    reason = str(error).splitlines()[0]
    if type(error).__name__ == "MissingMandatoryValue":
        return f"weighting.{key} is missing: set it, e.g. weighting.{key}=<value>"
    if type(error).__name__ == "ConfigKeyError":
        return f"weighting: {reason}; allowed keys: {', '.join(allowed) or 'none'}"
    return f"weighting.{key}={options.get(key)!r} is not allowed: {reason}"

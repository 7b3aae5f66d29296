"""Multi-task architectures: each config in conf/model/ builds a :class:`MultiTaskModel`."""

from mtl_runner.models.base import MultiTaskModel

__all__ = ["MultiTaskModel"]

"""Datasets: each config in conf/dataset/ builds a :class:`MultiTaskData`."""

from mtl_runner.data.base import MultiTaskData, Split

__all__ = ["MultiTaskData", "Split"]

"""The in-memory form every dataset takes: features and per-task targets for three splits."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mtl_runner.errors import ConfigError
from mtl_runner.tasks import Task


@dataclass
class Split:
    """One split: ``features`` [n, d] float32 and one target tensor [n] per task."""

    features: torch.Tensor
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(
            self.features.to(device),
            {name: target.to(device) for name, target in self.targets.items()},
        )


@dataclass
class MultiTaskData:
    tasks: tuple[Task, ...]
    train: Split
    val: Split
    test: Split
    feature_names: tuple[str, ...]
    info: dict[str, object] = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        return int(self.train.features.shape[1])

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)

    def only(self, task_name: str) -> MultiTaskData:
        """The same rows and splits with one task: the data of its single-task baseline."""
        (task,) = (t for t in self.tasks if t.name == task_name)

        def keep(split: Split) -> Split:
            return Split(split.features, {task_name: split.targets[task_name]})

        info = {**self.info, "single_task": task_name}
        return MultiTaskData(
            (task,), keep(self.train), keep(self.val), keep(self.test), self.feature_names, info
        )

    def to(self, device: torch.device) -> MultiTaskData:
        return MultiTaskData(
            self.tasks,
            self.train.to(device),
            self.val.to(device),
            self.test.to(device),
            self.feature_names,
            self.info,
        )


def split_indices(
    n: int, fractions: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A seeded random train/val/test partition of ``range(n)``."""
    if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigError(
            f"dataset.split={dict(zip(('train', 'val', 'test'), fractions))} is not allowed: "
            "the three fractions must be positive and sum to 1"
        )
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    if min(n_train, n_val, n - n_train - n_val) < 1:
        raise ConfigError(f"dataset.n={n} is too small: every split needs at least one row")
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def label_summary(tasks: tuple[Task, ...], splits: dict[str, Split]) -> dict[str, object]:
    """Rows, labelled rows per task and class prevalence per task, for every split.

    ``{"n": {split: rows}, "labelled": {split: {task: count}},
    "prevalence": {split: {task: {class: fraction of the labelled rows}}}}`` — written to
    results.json and the log, so a reader sees how rare F4 is in each split.
    """
    summary: dict[str, dict] = {"n": {}, "labelled": {}, "prevalence": {}}
    for split_name, split in splits.items():
        summary["n"][split_name] = len(split)
        summary["labelled"][split_name] = {}
        summary["prevalence"][split_name] = {}
        for task in tasks:
            target = split.targets[task.name]
            labelled = task.labelled(target)
            count = int(labelled.sum())
            summary["labelled"][split_name][task.name] = count
            if not task.is_classification:
                continue
            counts = torch.bincount(target[labelled].long().cpu(), minlength=task.output_size)
            names = task.classes or tuple(str(c) for c in range(task.output_size))
            summary["prevalence"][split_name][task.name] = {
                name: (int(c) / count if count else float("nan"))
                for name, c in zip(names, counts.tolist())
            }
    return summary

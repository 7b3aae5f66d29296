"""Seed-shaped synthetic data with a planted, learnable signal and tunable task relatedness.

Each task k has a unit latent direction ``w_k = sqrt(r)·u_0 + sqrt(1-r)·u_k`` built from
orthonormal ``u_0, …, u_K``, so two tasks' directions have cosine ``r`` (``relatedness``).
Its score is ``s_k = w_kᵀx + nonlinearity·sin(2·w_kᵀx)``, standardised; the observed value is
``signal·s_k + noise·ε``. A classification label is the quantile bin of that value (balanced
classes), a regression target the value itself. ``x ~ N(0, I)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from mtl_runner.data.base import MultiTaskData, Split, label_summary, split_indices
from mtl_runner.errors import ConfigError
from mtl_runner.schema import TaskType
from mtl_runner.tasks import Task


def make_synthetic(
    n: int,
    num_features: int,
    tasks: Mapping[str, Any],
    signal: float,
    noise: float,
    relatedness: float,
    nonlinearity: float,
    seed: int,
    split: Mapping[str, float],
) -> MultiTaskData:
    task_specs = _task_specs(tasks)
    _check_ranges(n, num_features, len(task_specs), relatedness, noise)
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n, num_features))
    directions = _task_directions(rng, num_features, len(task_specs), relatedness)
    targets: dict[str, np.ndarray] = {}
    for task, direction in zip(task_specs, directions.T):
        projection = features @ direction
        score = projection + nonlinearity * np.sin(2.0 * projection)
        observed = signal * (score - score.mean()) / score.std() + noise * rng.standard_normal(n)
        targets[task.name] = _label(task, observed)
    fractions = (float(split["train"]), float(split["val"]), float(split["test"]))
    parts = split_indices(n, fractions, seed)
    train, val, test = (_split(features, targets, task_specs, rows) for rows in parts)
    return MultiTaskData(
        tasks=task_specs,
        train=train,
        val=val,
        test=test,
        feature_names=tuple(f"x{i}" for i in range(num_features)),
        info=label_summary(task_specs, {"train": train, "val": val, "test": test}),
    )


def _task_specs(tasks: Mapping[str, Any]) -> tuple[Task, ...]:
    if not tasks:
        raise ConfigError("dataset.tasks is empty: name at least one task")
    specs = []
    for name, spec in tasks.items():
        task_type = TaskType(spec["type"])
        classification = task_type is not TaskType.regression
        num_classes = spec.get("num_classes") if classification else None
        if classification and (num_classes is None or num_classes < 2):
            raise ConfigError(
                f"dataset.tasks.{name}.num_classes={num_classes} is not allowed: "
                "a classification task needs at least 2 classes"
            )
        specs.append(Task(str(name), task_type, num_classes))
    return tuple(specs)


def _check_ranges(n: int, num_features: int, num_tasks: int, relatedness: float, noise: float):
    if num_features < num_tasks + 1:
        raise ConfigError(
            f"dataset.num_features={num_features} is too small for {num_tasks} tasks: "
            f"the generator needs at least num_tasks + 1 = {num_tasks + 1} features"
        )
    if not 0.0 <= relatedness <= 1.0:
        raise ConfigError(f"dataset.relatedness={relatedness} is not allowed: use 0 <= r <= 1")
    if noise < 0:
        raise ConfigError(f"dataset.noise={noise} is not allowed: it must be >= 0")
    if n < 3:
        raise ConfigError(f"dataset.n={n} is too small: use at least 3 rows")


def _task_directions(
    rng: np.random.Generator, num_features: int, num_tasks: int, relatedness: float
) -> np.ndarray:
    """Unit columns with pairwise cosine ``relatedness`` ([num_features, num_tasks])."""
    basis, _ = np.linalg.qr(rng.standard_normal((num_features, num_tasks + 1)))
    shared, own = basis[:, :1], basis[:, 1:]
    return np.sqrt(relatedness) * shared + np.sqrt(1.0 - relatedness) * own


def _label(task: Task, observed: np.ndarray) -> np.ndarray:
    if task.type is TaskType.regression:
        return observed
    edges = np.quantile(observed, np.linspace(0, 1, task.num_classes + 1)[1:-1])
    return np.digitize(observed, edges)


def _split(
    features: np.ndarray, targets: dict[str, np.ndarray], tasks: tuple[Task, ...], rows
) -> Split:
    dtypes = {t.name: torch.long if t.is_classification else torch.float32 for t in tasks}
    return Split(
        torch.as_tensor(features[rows], dtype=torch.float32),
        {
            name: torch.as_tensor(values[rows], dtype=dtypes[name])
            for name, values in targets.items()
        },
    )

"""The MMoE synthetic generator (Ma et al., KDD 2018, §3.2): tasks with a set task correlation.

Procedure, for K tasks in ``d = num_features`` dimensions:

1. ``u_1, …, u_K``: orthonormal vectors in R^d, the first K columns of a seeded Haar-random
   orthogonal matrix (QR of a Gaussian matrix, signs fixed). They depend only on ``seed``, d and K
   (see :func:`task_weights`).
2. ``w_1 = c·u_1`` and, for each later task k, ``w_k = c·(p_k·u_1 + sqrt(1 - p_k²)·u_k)``, so
   ``cos(w_1, w_k) = p_k`` exactly (the paper's "task correlation", ``-1 <= p_k <= 1``); ``c`` is
   ``scale``, ``p_k`` the task's ``correlation`` or the global one. Two later tasks j, k have
   ``cos(w_j, w_k) = p_j·p_k``.
3. ``x ~ N(0, I_d)``, stored as float32; the labels are computed from exactly those values.
4. ``y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε_k`` with ``m = num_sines`` and
   ``ε_k ~ N(0, noise²)``: ``noise`` is the **standard deviation** (the paper writes N(0, 0.01);
   Google Research's reimplementation reads 0.01 as the std, and so does the default here).

The paper does not give α, β. The defaults here are ``α_i = i`` and ``β_i = i²`` for
``i = 1..m``. Google's code instead uses ``α_i = i`` (1..10) with ``β_i = i²`` for ``i = 0..9``,
i.e. ``betas=[0, 1, 4, …, 81]``; pass that list to reproduce it. The choice matters: at p = 0.9
(c = 1, m = 10) the population label correlation is about 0.29 with the defaults here and 0.46
with Google's β; without the sines (``num_sines=0``) it is p itself.

A ``regression`` task's target is ``y_k``. A ``binary`` / ``multiclass`` / ``ordinal`` task's
label is the quantile bin of ``y_k`` into ``num_classes`` classes, with the bin edges computed on
the training rows only and then applied to val and test (balanced classes on train).

``info`` holds :func:`~mtl_runner.data.base.label_summary` of the splits plus
``label_correlation`` (Pearson r of the raw ``y_1`` and each other ``y_k`` on the training rows,
keys ``"<task 1>~<task k>"``), ``label_correlation_matrix`` (all pairs, ``{task: {task: r}}``) and
``task_correlation`` (the planted cosines ``p_k``, same keys as ``label_correlation``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mtl_runner.data.base import MultiTaskData, Split, label_summary, split_indices
from mtl_runner.errors import ConfigError
from mtl_runner.schema import TaskType
from mtl_runner.tasks import Task

log = logging.getLogger("mtl_runner")

_SPLITS = ("train", "val", "test")


def make_synthetic_correlated(
    n: int,
    num_features: int,
    tasks: Mapping[str, Any],
    correlation: float,
    scale: float,
    num_sines: int,
    alphas: Sequence[float] | None,
    betas: Sequence[float] | None,
    noise: float,
    seed: int,
    split: Mapping[str, float],
) -> MultiTaskData:
    """Build the dataset; ``tasks`` maps a name to ``{type, num_classes, correlation}`` (the
    first task is the reference direction ``u_1``; its ``correlation`` must be null or 1)."""
    task_specs, correlations = _task_specs(tasks, correlation)
    _check_ranges(n, num_features, len(task_specs), scale, num_sines, noise)
    alphas = _coefficients("alphas", alphas, num_sines, lambda i: float(i))
    betas = _coefficients("betas", betas, num_sines, lambda i: float(i * i))
    fractions = (float(split["train"]), float(split["val"]), float(split["test"]))
    parts = split_indices(n, fractions, seed)

    weights = task_weights(num_features, correlations, scale, seed)
    rng = np.random.default_rng([seed, 1])  # a stream of its own: x, then the noise
    features = rng.standard_normal((n, num_features)).astype(np.float32).astype(np.float64)
    raw = mmoe_labels(features, weights, alphas, betas)
    raw = raw + noise * rng.standard_normal(raw.shape)

    train_rows = parts[0]
    targets: dict[str, np.ndarray] = {}
    for k, task in enumerate(task_specs):
        if task.is_classification:
            edges = quantile_edges(raw[train_rows, k], task.num_classes)
            targets[task.name] = np.digitize(raw[:, k], edges)
        else:
            targets[task.name] = raw[:, k]
    splits = {
        name: _split(features, targets, task_specs, rows) for name, rows in zip(_SPLITS, parts)
    }

    names = [task.name for task in task_specs]
    matrix = _pearson_matrix(raw[train_rows])
    pairs = {f"{names[0]}~{names[k]}": matrix[0][k] for k in range(1, len(names))}
    planted = {f"{names[0]}~{names[k]}": correlations[k] for k in range(1, len(names))}
    info: dict[str, object] = dict(label_summary(task_specs, splits))
    info["label_correlation"] = pairs
    info["label_correlation_matrix"] = {
        a: {b: matrix[i][j] for j, b in enumerate(names)} for i, a in enumerate(names)
    }
    info["task_correlation"] = planted
    log.info(
        "synthetic_correlated: label correlation on train (planted cosine) %s",
        ", ".join(f"{key} {_fmt(r)} ({planted[key]:g})" for key, r in pairs.items())
        or "(one task)",
    )
    return MultiTaskData(
        tasks=task_specs,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        feature_names=tuple(f"x{i}" for i in range(num_features)),
        info=info,
    )


def task_weights(
    num_features: int, correlations: Sequence[float], scale: float, seed: int
) -> np.ndarray:
    """The task vectors ``w_k`` as rows ([K, num_features]); ``correlations[0]`` is ignored
    (task 1 is ``c·u_1``), ``correlations[k]`` is ``cos(w_1, w_k)``."""
    num_tasks = len(correlations)
    rng = np.random.default_rng([seed, 0])
    q, r = np.linalg.qr(rng.standard_normal((num_features, num_tasks)))
    units = (q * np.where(np.diag(r) < 0, -1.0, 1.0)).T  # rows u_1..u_K, Haar-distributed
    weights = np.empty_like(units)
    weights[0] = units[0]
    for k in range(1, num_tasks):
        p = float(correlations[k])
        weights[k] = p * units[0] + math.sqrt(max(0.0, 1.0 - p * p)) * units[k]
    return scale * weights


def mmoe_labels(
    features: np.ndarray, weights: np.ndarray, alphas: Sequence[float], betas: Sequence[float]
) -> np.ndarray:
    """Noise-free labels ``w_kᵀx + Σ_i sin(α_i·w_kᵀx + β_i)``, one column per task ([n, K])."""
    projection = features @ weights.T
    labels = projection.copy()
    for alpha, beta in zip(alphas, betas):
        labels += np.sin(alpha * projection + beta)
    return labels


def quantile_edges(train_values: np.ndarray, num_classes: int) -> np.ndarray:
    """The ``num_classes - 1`` inner quantile edges of the training values (``np.digitize``)."""
    return np.quantile(train_values, np.linspace(0.0, 1.0, num_classes + 1)[1:-1])


def _task_specs(
    tasks: Mapping[str, Any], correlation: float
) -> tuple[tuple[Task, ...], list[float]]:
    if not tasks:
        raise ConfigError("dataset.tasks is empty: name at least one task")
    _check_correlation("dataset.correlation", correlation)
    specs: list[Task] = []
    correlations: list[float] = []
    for index, (name, spec) in enumerate(tasks.items()):
        try:
            task_type = TaskType(spec.get("type", TaskType.regression))
        except ValueError:
            allowed = ", ".join(t.value for t in TaskType)
            raise ConfigError(
                f"dataset.tasks.{name}.type={spec.get('type')} is not allowed: use one of {allowed}"
            ) from None
        num_classes = spec.get("num_classes")
        if task_type is TaskType.regression:
            num_classes = None
        elif task_type is TaskType.binary:
            if num_classes is None:
                num_classes = 2
            if num_classes != 2:
                raise ConfigError(
                    f"dataset.tasks.{name}.num_classes={num_classes} is not allowed: "
                    "a binary task has exactly 2 classes (use multiclass or ordinal for more)"
                )
        elif num_classes is None or num_classes < 2:
            raise ConfigError(
                f"dataset.tasks.{name}.num_classes={num_classes} is not allowed: "
                f"a {task_type.value} task needs at least 2 classes"
            )
        own = spec.get("correlation")
        if index == 0:
            if own is not None and float(own) != 1.0:
                raise ConfigError(
                    f"dataset.tasks.{name}.correlation={own} is not allowed: the first task is "
                    "the reference direction u_1 (cosine 1 with itself); leave it null"
                )
            correlations.append(1.0)
        else:
            if own is not None:
                _check_correlation(f"dataset.tasks.{name}.correlation", own)
            correlations.append(float(correlation if own is None else own))
        specs.append(Task(str(name), task_type, None if num_classes is None else int(num_classes)))
    return tuple(specs), correlations


def _check_correlation(key: str, value: float) -> None:
    if not -1.0 <= float(value) <= 1.0:
        raise ConfigError(f"{key}={value} is not allowed: use -1 <= correlation <= 1")


def _check_ranges(
    n: int, num_features: int, num_tasks: int, scale: float, num_sines: int, noise: float
) -> None:
    if num_features < num_tasks:
        raise ConfigError(
            f"dataset.num_features={num_features} is not allowed: {num_tasks} tasks need "
            f"{num_tasks} orthogonal directions, so at least num_features={num_tasks}"
        )
    if not scale > 0:
        raise ConfigError(f"dataset.scale={scale} is not allowed: it must be > 0")
    if num_sines < 0:
        raise ConfigError(f"dataset.num_sines={num_sines} is not allowed: it must be >= 0")
    if not noise >= 0:
        raise ConfigError(f"dataset.noise={noise} is not allowed: it must be >= 0 (a std)")
    if n < 3:
        raise ConfigError(f"dataset.n={n} is too small: use at least 3 rows")


def _coefficients(key: str, values: Sequence[float] | None, num_sines: int, default) -> list[float]:
    if values is None:
        return [default(i) for i in range(1, num_sines + 1)]
    values = [float(v) for v in values]
    if len(values) != num_sines:
        raise ConfigError(
            f"dataset.{key}={values} is not allowed: give num_sines={num_sines} values, "
            "or null for the default formula"
        )
    return values


def _pearson_matrix(values: np.ndarray) -> list[list[float | None]]:
    """Pearson r of the columns; None where undefined (a constant column or a single row)."""
    num_tasks = values.shape[1]
    centred = values - values.mean(axis=0)
    norms = np.sqrt((centred * centred).sum(axis=0))
    matrix: list[list[float | None]] = []
    for i in range(num_tasks):
        row: list[float | None] = []
        for j in range(num_tasks):
            denominator = norms[i] * norms[j]
            if not denominator > 0:
                row.append(None)
            elif i == j:
                row.append(1.0)
            else:
                r = float(centred[:, i] @ centred[:, j] / denominator)
                row.append(max(-1.0, min(1.0, r)))
        matrix.append(row)
    return matrix


def _fmt(r: float | None) -> str:
    return "n/a" if r is None else f"{r:.3f}"


def _split(
    features: np.ndarray, targets: dict[str, np.ndarray], tasks: tuple[Task, ...], rows
) -> Split:
    return Split(
        torch.as_tensor(features[rows], dtype=torch.float32),
        {
            task.name: torch.as_tensor(
                targets[task.name][rows],
                dtype=torch.long if task.is_classification else torch.float32,
            )
            for task in tasks
        },
    )

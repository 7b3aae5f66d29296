"""Seeded train/val/test and k-fold row assignments, stratified and group-aware.

One greedy assignment serves every case. Rows are bundled into groups (a patient or centre; a
row on its own when there is no group column), and each group goes, largest first and otherwise
in seeded random order, to the part whose row count and per-class counts it brings closest to
their targets (``fraction · total``). Hence:

- a group never spans two parts;
- without groups, every class is spread in proportion up to one row per part;
- a class too rare to reach every part (2 rows of F4 for 3 splits) simply lands where it fits
  best: nothing fails, and the caller logs which split lacks it;
- rows whose stratification label is missing form a stratum of their own, so they are split
  like the rest.

K-fold: the test part is drawn first from all rows with the same seed, so it is identical for
every fold; the remaining rows are then dealt into ``folds`` equal parts and fold ``i`` is val.
"""

from __future__ import annotations

import numpy as np

from mtl_runner.errors import ConfigError

Parts = tuple[np.ndarray, np.ndarray, np.ndarray]


def strata_matrix(n: int, labels: list[np.ndarray], num_classes: list[int]) -> np.ndarray:
    """One-hot [n, S] of the stratification labels (``-100`` = missing, its own column)."""
    blocks = [np.ones((n, 1))]  # the row count itself, so an unstratified split balances sizes
    for values, classes in zip(labels, num_classes):
        codes = np.where(values < 0, classes, values)  # missing -> the extra last column
        blocks.append(np.eye(classes + 1)[codes])
    return np.concatenate(blocks, axis=1)


def group_codes(groups: np.ndarray | None, n: int) -> np.ndarray:
    """Integer group id per row; a row without a group (or with a missing one) is its own group."""
    if groups is None:
        return np.arange(n)
    codes = np.empty(n, dtype=np.int64)
    present = ~_is_missing(groups)
    _, codes[present] = np.unique(groups[present].astype(str), return_inverse=True)
    codes[~present] = codes[present].max(initial=-1) + 1 + np.arange(int((~present).sum()))
    return codes


def holdout_split(
    strata: np.ndarray, groups: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> Parts:
    """Row indices of train, val and test (each sorted)."""
    rows = np.arange(len(strata))
    part = _assign(strata, groups, np.asarray(fractions, dtype=float), seed)
    train, val, test = (rows[part == p] for p in range(3))
    _check_non_empty({"train": train, "val": val, "test": test}, groups)
    return train, val, test


def kfold_split(
    strata: np.ndarray, groups: np.ndarray, test: float, folds: int, fold: int, seed: int
) -> Parts:
    """Train, val (fold ``fold`` of ``folds``) and the held-out test rows, each sorted."""
    rows = np.arange(len(strata))
    held_out = _assign(strata, groups, np.array([1.0 - test, test]), seed) == 1
    rest = rows[~held_out]
    which = _assign(strata[rest], groups[rest], np.full(folds, 1.0 / folds), seed)
    parts = {"train": rest[which != fold], "val": rest[which == fold], "test": rows[held_out]}
    _check_non_empty(parts, groups)
    return parts["train"], parts["val"], parts["test"]


def _assign(strata: np.ndarray, groups: np.ndarray, fractions: np.ndarray, seed: int) -> np.ndarray:
    """Part index per row: the greedy deal of whole groups described in the module docstring."""
    codes, inverse = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(codes), strata.shape[1]))
    np.add.at(counts, inverse, strata)
    totals = counts.sum(axis=0)
    # squared misses are weighted by 1/total so that a rare class (5 rows of F4) counts as much
    # as a common one: one row too many of F4 is a 20 % error in its prevalence
    weight = 1.0 / np.maximum(totals, 1.0)
    targets = fractions[:, None] * totals[None, :]
    filled = np.zeros_like(targets)
    order = np.random.default_rng(seed).permutation(len(codes))
    order = order[np.argsort(-counts[order, 0], kind="stable")]  # big groups first
    part_of_group = np.empty(len(codes), dtype=np.int64)
    for g in order:
        increase = (counts[g] * (2.0 * (filled - targets) + counts[g]) * weight).sum(axis=1)
        best = int(np.argmin(increase))
        part_of_group[g] = best
        filled[best] += counts[g]
    return part_of_group[inverse]


def _check_non_empty(parts: dict[str, np.ndarray], groups: np.ndarray) -> None:
    empty = [name for name, rows in parts.items() if len(rows) == 0]
    if empty:
        raise ConfigError(
            f"the {', '.join(empty)} split would be empty: {len(groups)} rows in "
            f"{len(np.unique(groups))} groups are too few for these dataset.split fractions "
            "(or dataset.folds)"
        )


def _is_missing(values: np.ndarray) -> np.ndarray:
    return np.array([v is None or (isinstance(v, float) and np.isnan(v)) for v in values])

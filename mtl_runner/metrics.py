"""Validation and test metrics per task type: scikit-learn's definitions, NaN-safe.

Each metric is computed in numpy and tested equal to its scikit-learn function (sklearn's input
validation would cost ~10x the arithmetic, once per task per epoch); see :func:`compute_metrics`
for the conventions (F1 labels, AUROC averaging, Brier scaling).

The metric names and their directions are fixed here; the CSV columns are
``val/<metric>/<task>`` (DESIGN.md §4) and model selection reads the direction from
:data:`HIGHER_IS_BETTER`.
"""

from __future__ import annotations

import re

import numpy as np

from mtl_runner.schema import TaskType

_CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1_macro", "auroc", "brier")

#: metrics written for each task type, in CSV column order
METRICS_BY_TYPE: dict[TaskType, tuple[str, ...]] = {
    TaskType.binary: _CLASSIFICATION,
    TaskType.multiclass: _CLASSIFICATION,
    TaskType.ordinal: (*_CLASSIFICATION, "qwk", "mae"),
    TaskType.regression: ("mse", "mae", "r2"),
}

#: an ordinal task's AUROC of "stage >= k" (e.g. fibrosis >= F2), k = 1..C-1, as clinicians read it
THRESHOLD_AUROC = re.compile(r"auroc_ge(\d+)")


class _Directions(dict):
    """The direction table, which also knows every ``auroc_ge<k>`` (higher is better)."""

    def __missing__(self, key: object) -> bool:
        if isinstance(key, str) and THRESHOLD_AUROC.fullmatch(key):
            return True
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key) or bool(
            isinstance(key, str) and THRESHOLD_AUROC.fullmatch(key)
        )

    def get(self, key: object, default: object = None) -> object:
        return self[key] if key in self else default  # noqa: SIM401 (self.get is this method)


#: direction of every quantity the runner writes: True when higher is better
HIGHER_IS_BETTER: dict[str, bool] = _Directions(
    {
        "loss": False,
        "accuracy": True,
        "balanced_accuracy": True,
        "f1_macro": True,
        "auroc": True,
        "brier": False,
        "qwk": True,
        "mae": False,
        "mse": False,
        "r2": True,
    }
)


def metric_names(task_type: TaskType, num_classes: int | None) -> tuple[str, ...]:
    """The metrics of a task, in CSV column order: :data:`METRICS_BY_TYPE`, plus for an
    ordinal task of C > 2 classes ``auroc_ge1`` .. ``auroc_ge{C-1}`` (P(stage ≥ k) scored by
    Σ_{c ≥ k} p_c against the binarised label: AUROC for ≥F2, ≥F3, F4)."""
    names = METRICS_BY_TYPE[TaskType(task_type)]
    if TaskType(task_type) is TaskType.ordinal and num_classes and num_classes > 2:
        names = (*names, *(f"auroc_ge{k}" for k in range(1, num_classes)))
    return names


# Label of a missing classification row: tasks.MISSING_CLASS (tasks imports this module, so the
# value is repeated here rather than imported; a test keeps the two equal).
_MISSING_CLASS = -100

_NAN = float("nan")


def compute_metrics(
    task_type: TaskType,
    num_classes: int | None,
    predictions: np.ndarray,
    targets: np.ndarray,
) -> dict[str, float]:
    """The metrics of :func:`metric_names`, in that order, as Python floats.

    ``predictions``: class probabilities ``[n, C]`` (classification) or values ``[n]``
    (regression). ``targets``: class indices with :data:`_MISSING_CLASS` for a missing label, or
    values with NaN. Rows with a missing label are dropped first; with no labelled row (or,
    for classification, a non-finite probability in a labelled row) every metric is NaN.

    Each metric equals scikit-learn's (``tests/test_metrics.py`` checks it) but is computed in
    numpy from one confusion matrix and one argmax: sklearn's input validation costs over 10x the
    arithmetic, and this runs once per task per epoch. No warning is ever emitted.

    Conventions (classification; the predicted class is the argmax of the probabilities):

    * ``balanced_accuracy``: mean recall over the classes present in the labels (sklearn,
      not adjusted for chance).
    * ``f1_macro``: mean F1 over the classes that occur in the labels *or* the predictions
      (sklearn's ``labels=None``). A class absent from both adds no 0: with ``labels=range(C)``
      a split lacking a stage would cap the score below 1 for a perfect model.
    * ``auroc``: with 2 classes, the AUROC of ``p[:, 1]``; with more, the one-vs-rest AUROCs
      averaged over the classes present in the labels (each needs positives and negatives;
      sklearn 1.9 returns NaN as soon as one class is absent). NaN with fewer than 2 classes.
    * ``brier``: ``mean_i Σ_c (p_ic - 1[y_i = c])²`` halved when C = 2, so a 2-class task
      gets the usual ``mean (p1 - y)²`` in [0, 1] and C > 2 classes the original (Brier 1950)
      sum in [0, 2]: sklearn's ``brier_score_loss(..., labels=range(C))`` default.
    * ``qwk`` (ordinal): Cohen's kappa with quadratic weights over ``labels=range(C)``; NaN
      when undefined (no expected disagreement, e.g. labels and predictions one same class).
    * ``mae`` (ordinal): mean ``|argmax - label|``, in stages.
    * ``auroc_ge<k>`` (ordinal, C > 2): the AUROC of P(stage ≥ k) = Σ_{c ≥ k} p_c for the
      binarised label stage ≥ k (what hepatologists read for ≥F2, ≥F3, F4); NaN when the split
      has no row on one side of the threshold.

    Regression: ``mse``, ``mae`` and ``r2``; ``r2`` is NaN with fewer than 2 labelled rows or
    constant targets (where sklearn warns, or returns 0 or 1 by convention).
    """
    task_type = TaskType(task_type)
    names = metric_names(task_type, num_classes)
    # overflowing or NaN predictions give inf / NaN metrics, not RuntimeWarnings
    with np.errstate(all="ignore"):
        if task_type is TaskType.regression:
            values = _regression_metrics(predictions, targets)
        else:
            values = _classification_metrics(task_type, num_classes, predictions, targets)
    if values is None:
        return dict.fromkeys(names, _NAN)
    return {name: float(values[name]) for name in names}


# ------------------------------------------------------------------------------ classification
def _classification_metrics(
    task_type: TaskType, num_classes: int | None, predictions: np.ndarray, targets: np.ndarray
) -> dict[str, float] | None:
    proba = np.asarray(predictions, dtype=np.float64)
    labels = np.asarray(targets).reshape(-1)
    n_classes = _check_classification_input(num_classes, proba, labels)
    labelled = labels != _MISSING_CLASS
    proba, y = proba[labelled], labels[labelled].astype(np.intp)
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"class labels must lie in 0..{n_classes - 1} (or be {_MISSING_CLASS}, missing); "
            f"got {int(y.min())}..{int(y.max())}"
        )
    if len(y) == 0 or not np.isfinite(proba).all():
        return None  # no labelled row, or undefined probabilities (a diverged model)
    predicted = proba.argmax(axis=1)  # once, for every count-based metric
    # rows: true class, columns: predicted class
    confusion = np.bincount(y * n_classes + predicted, minlength=n_classes * n_classes)
    confusion = confusion.reshape(n_classes, n_classes)
    support, hits = confusion.sum(axis=1), np.diag(confusion)
    values = {
        "accuracy": hits.sum() / len(y),
        "balanced_accuracy": np.mean(hits[support > 0] / support[support > 0]),
        "f1_macro": _f1_macro(confusion),
        "auroc": _auroc(proba, y, support),
        "brier": _brier(proba, y),
    }
    if task_type is TaskType.ordinal:
        values["qwk"] = _quadratic_kappa(confusion)
        values["mae"] = np.abs(predicted - y).mean()
        values.update(_threshold_aurocs(proba, y))
    return values


def _threshold_aurocs(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``auroc_ge<k>``: AUROC of Σ_{c ≥ k} p_c for the label y ≥ k; NaN when a side is empty."""
    at_least = np.cumsum(proba[:, ::-1], axis=1)[:, ::-1]  # column k: P(stage >= k)
    values = {}
    for k in range(1, proba.shape[1]):
        positive = y >= k
        defined = 0 < np.count_nonzero(positive) < len(y)
        values[f"auroc_ge{k}"] = _binary_auroc(at_least[:, k], positive) if defined else _NAN
    return values


def _check_classification_input(
    num_classes: int | None, proba: np.ndarray, labels: np.ndarray
) -> int:
    """The number of classes C; raises unless ``proba`` is ``[n, C]`` with n = len(labels)."""
    if proba.ndim != 2 or proba.shape[0] != len(labels):
        raise ValueError(
            f"expected class probabilities [{len(labels)}, C], got shape {proba.shape}"
        )
    n_classes = proba.shape[1] if num_classes is None else int(num_classes)
    if proba.shape[1] != n_classes or n_classes < 2:
        raise ValueError(
            f"expected probabilities for {num_classes} classes (at least 2), got {proba.shape[1]}"
        )
    return n_classes


def _f1_macro(confusion: np.ndarray) -> float:
    """Mean F1 over the classes in the labels or the predictions (sklearn's ``labels=None``).

    F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted count), which is what sklearn
    computes; that denominator is 0 exactly for the classes left out.
    """
    hits = np.diag(confusion)
    seen = confusion.sum(axis=1) + confusion.sum(axis=0)
    return float(np.mean(2 * hits[seen > 0] / seen[seen > 0]))


def _auroc(proba: np.ndarray, y: np.ndarray, support: np.ndarray) -> float:
    """AUROC of ``p[:, 1]`` (2 classes) or the one-vs-rest macro AUROC over the present classes."""
    if np.count_nonzero(support) < 2:
        return _NAN  # no class has both positives and negatives
    classes = np.array([1]) if proba.shape[1] == 2 else np.flatnonzero(support)
    return float(np.mean([_binary_auroc(proba[:, c], y == c) for c in classes]))


def _binary_auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney U / (n+ n-): equal to the trapezoidal ROC area sklearn computes, a tie
    between a positive and a negative counting one half (average ranks)."""
    n_pos = np.count_nonzero(positive)
    n_neg = len(score) - n_pos
    rank_sum = _average_ranks(score)[positive].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their mean rank (scipy's rankdata, whose import
    costs a second)."""
    order = np.argsort(values)  # any order within ties: they share one rank
    ordered = values[order]
    starts_group = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    starts = np.flatnonzero(starts_group)
    ends = np.append(starts[1:], len(values))  # a group holds positions starts..ends-1
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(starts_group) - 1]
    return ranks


def _brier(proba: np.ndarray, y: np.ndarray) -> float:
    """``mean_i Σ_c (p_ic - 1[y_i = c])²``, halved for 2 classes (sklearn's ``scale_by_half``
    "auto"), which is then ``mean (p1 - y)²``."""
    n_classes = proba.shape[1]
    total = np.square(proba - np.eye(n_classes)[y]).sum(axis=1).mean()
    return float(total / 2 if n_classes == 2 else total)


def _quadratic_kappa(confusion: np.ndarray) -> float:
    """Cohen's kappa with weights (i - j)², as sklearn's ``cohen_kappa_score``; NaN when the
    expected disagreement is 0."""
    stage = np.arange(confusion.shape[0])
    weights = np.square(stage[:, None] - stage[None, :])
    # the agreement expected by chance: the outer product of the two marginals
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / confusion.sum()
    disagreement = np.sum(weights * expected)
    if disagreement == 0:
        return _NAN
    return float(1 - np.sum(weights * confusion) / disagreement)


# ---------------------------------------------------------------------------------- regression
def _regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float] | None:
    value = np.asarray(predictions, dtype=np.float64).reshape(-1)
    target = np.asarray(targets, dtype=np.float64).reshape(-1)
    if value.shape != target.shape:
        raise ValueError(f"expected {len(target)} predicted values, got {len(value)}")
    labelled = ~np.isnan(target)
    value, target = value[labelled], target[labelled]
    if len(target) == 0:
        return None
    error = value - target
    return {
        "mse": np.mean(np.square(error)),
        "mae": np.mean(np.abs(error)),
        "r2": _r2(error, target),
    }


def _r2(error: np.ndarray, target: np.ndarray) -> float:
    """1 - SS_res / SS_tot; NaN with fewer than 2 rows or constant targets (SS_tot = 0, and a
    near-0 rounding residue would give a huge negative score)."""
    if len(target) < 2 or target.min() == target.max():
        return _NAN
    return float(1 - np.sum(np.square(error)) / np.sum(np.square(target - target.mean())))

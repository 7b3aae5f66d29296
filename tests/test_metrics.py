"""compute_metrics against scikit-learn and against values worked out by hand."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
from sklearn import metrics as skm

from mtl_runner.metrics import HIGHER_IS_BETTER, METRICS_BY_TYPE, compute_metrics, metric_names
from mtl_runner.schema import TaskType
from mtl_runner.tasks import MISSING_CLASS

CLASSIFICATION_TYPES = (TaskType.binary, TaskType.multiclass, TaskType.ordinal)


@pytest.fixture(autouse=True)
def no_warning_escapes() -> Iterator[None]:
    """Every test here fails on any warning compute_metrics lets out."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def metrics(
    task_type: TaskType, predictions: list | np.ndarray, targets: list | np.ndarray
) -> dict[str, float]:
    proba = np.asarray(predictions, dtype=np.float64)
    num_classes = None if task_type is TaskType.regression else proba.shape[1]
    result = compute_metrics(task_type, num_classes, proba, np.asarray(targets))
    assert list(result) == list(metric_names(task_type, num_classes))
    assert all(type(value) is float for value in result.values())
    return result


def assert_all_nan(result: dict[str, float]) -> None:
    assert all(math.isnan(value) for value in result.values()), result


# ----------------------------------------------------------------------------- by hand
def test_binary_by_hand() -> None:
    # y = 0 0 1 1, p1 = .1 .6 .4 .8 -> predicted 0 1 0 1
    proba = [[0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.2, 0.8]]
    result = metrics(TaskType.binary, proba, [0, 0, 1, 1])
    assert result["accuracy"] == pytest.approx(0.5)  # rows 0 and 3 right
    assert result["balanced_accuracy"] == pytest.approx(0.5)  # recalls 1/2, 1/2
    # each class: TP 1, FP 1, FN 1 -> F1 = 2/(2+1+1) = 1/2
    assert result["f1_macro"] == pytest.approx(0.5)
    # positives .4 .8 vs negatives .1 .6: .4>.1, .4<.6, .8>.1, .8>.6 -> 3 of 4 pairs
    assert result["auroc"] == pytest.approx(0.75)
    # (.1² + .6² + .6² + .2²) / 4 = (.01 + .36 + .36 + .04) / 4 = .1925 (half-scale form)
    assert result["brier"] == pytest.approx(0.1925)


def test_binary_auroc_counts_a_tie_as_one_half() -> None:
    # one pair, scores equal -> 1/2; the other pair (.5 vs .2) ordered -> (1/2 + 1) / 2
    result = metrics(TaskType.binary, [[0.5, 0.5], [0.5, 0.5], [0.8, 0.2]], [0, 1, 0])
    assert result["auroc"] == pytest.approx(0.75)


# y = 0 1 2 2, predicted 0 1 1 2
THREE_CLASS_PROBA = [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]
THREE_CLASS_Y = [0, 1, 2, 2]


@pytest.mark.parametrize("task_type", [TaskType.multiclass, TaskType.ordinal])
def test_three_classes_by_hand(task_type: TaskType) -> None:
    result = metrics(task_type, THREE_CLASS_PROBA, THREE_CLASS_Y)
    assert result["accuracy"] == pytest.approx(3 / 4)
    assert result["balanced_accuracy"] == pytest.approx((1 + 1 + 1 / 2) / 3)  # recalls
    # F1: class 0 TP1 -> 1; class 1 TP1 FP1 -> 2/3; class 2 TP1 FN1 -> 2/3
    assert result["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # OvR: class 0: .7 above .2 .1 .2 -> 1; class 1: .5 vs .2 .6 .2 -> 2/3;
    # class 2: .3 .6 vs .1 .3 -> (1 + 1/2 + 1 + 1) / 4 = 7/8
    assert result["auroc"] == pytest.approx((1 + 2 / 3 + 7 / 8) / 3)
    # Σ_c (p - onehot)²: .09+.04+.01 = .14; .04+.25+.09 = .38; .01+.36+.49 = .86;
    # .04+.04+.16 = .24 -> 1.62 / 4 = .405 (full sum, range 0..2)
    assert result["brier"] == pytest.approx(0.405)
    if task_type is TaskType.ordinal:
        # observed weighted disagreement: one row true 2 -> predicted 1, weight 1 -> 1.
        # expected = outer(true [1,1,2], predicted [1,2,1]) / 4, weighted by (i-j)²:
        # row 0 (0+2+4)/4, row 1 (1+0+1)/4, row 2 (8+4+0)/4 -> 20/4 = 5 -> 1 - 1/5
        assert result["qwk"] == pytest.approx(0.8)
        assert result["mae"] == pytest.approx(1 / 4)  # one stage off in one of 4 rows
        # P(>=1) = p1 + p2 = .3 .8 .9 .8: the positives (y >= 1) .8 .9 .8 all above .3 -> 1
        assert result["auroc_ge1"] == pytest.approx(1.0)
        # P(>=2) = p2 = .1 .3 .3 .6: positives .3 .6 vs .1 .3 -> (1 + 1/2 + 1 + 1) / 4
        assert result["auroc_ge2"] == pytest.approx(0.875)


def test_threshold_aurocs_equal_sklearn_and_are_nan_without_one_side() -> None:
    generator = np.random.default_rng(3)
    proba = generator.dirichlet(np.ones(5), size=200)
    y = generator.integers(0, 5, size=200)
    result = metrics(TaskType.ordinal, proba, y)
    for k in range(1, 5):
        expected = skm.roc_auc_score(y >= k, proba[:, k:].sum(axis=1))
        assert result[f"auroc_ge{k}"] == pytest.approx(expected, rel=1e-12)
    no_f4 = metrics(TaskType.ordinal, proba, np.minimum(y, 3))  # no row at stage 4
    assert math.isnan(no_f4["auroc_ge4"]) and math.isfinite(no_f4["auroc_ge3"])
    assert HIGHER_IS_BETTER["auroc_ge2"] and "auroc_ge3" in HIGHER_IS_BETTER
    assert HIGHER_IS_BETTER.get("auroc_ge9") is True and "auroc_gex" not in HIGHER_IS_BETTER
    assert metric_names(TaskType.ordinal, 2) == METRICS_BY_TYPE[TaskType.ordinal]


def test_absent_class_averages_the_present_classes() -> None:
    # 3 ordinal classes, the split lacks class 2; y = 0 0 1 1, predicted 0 2 1 0
    proba = [[0.6, 0.3, 0.1], [0.3, 0.3, 0.4], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]]
    y = [0, 0, 1, 1]
    result = metrics(TaskType.ordinal, proba, y)
    # class 0: .6 .3 vs .2 .5 -> 3 of 4 pairs; class 1: .7 .4 vs .3 .3 -> 4 of 4
    assert result["auroc"] == pytest.approx((3 / 4 + 1) / 2)
    p, t = np.array(proba), np.array(y)
    by_class = [skm.roc_auc_score(t == c, p[:, c]) for c in (0, 1)]
    assert result["auroc"] == pytest.approx(np.mean(by_class))
    assert result["accuracy"] == pytest.approx(2 / 4)
    assert result["balanced_accuracy"] == pytest.approx(0.5)  # recalls 1/2, 1/2; class 2 none
    # over classes 0, 1, 2 (2 is predicted once): 2/(2+1+1), 2/(2+0+1), 0
    assert result["f1_macro"] == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    # observed: (0 -> 2) weight 4 + (1 -> 0) weight 1 = 5; expected = outer([2,2,0], [2,1,1])/4:
    # row 0 (0+2+8)/4 + row 1 (4+0+2)/4 = 4 -> 1 - 5/4, still defined
    assert result["qwk"] == pytest.approx(-0.25)
    assert result["mae"] == pytest.approx(3 / 4)  # 0 + 2 + 0 + 1 stages
    # .26 + .74 + .14 + .62 = 1.76 -> / 4
    assert result["brier"] == pytest.approx(0.44)
    assert result["brier"] == pytest.approx(skm.brier_score_loss(t, p, labels=[0, 1, 2]))


@pytest.mark.parametrize("task_type", CLASSIFICATION_TYPES)
def test_single_class_split_has_nan_auroc_and_no_warning(task_type: TaskType) -> None:
    two_rows = [[0.8, 0.2, 0.0], [0.3, 0.7, 0.0]]  # predicted 0, 1; both truly class 1
    proba = [row[:2] for row in two_rows] if task_type is TaskType.binary else two_rows
    result = metrics(task_type, proba, [1, 1])
    assert math.isnan(result["auroc"])
    assert result["accuracy"] == pytest.approx(0.5)
    assert result["balanced_accuracy"] == pytest.approx(0.5)
    if task_type is TaskType.ordinal:
        # a single true class: observed disagreement equals the expected one -> kappa 0
        assert result["qwk"] == pytest.approx(0.0)


def test_qwk_is_nan_when_labels_and_predictions_are_one_class() -> None:
    # no disagreement is expected by chance: kappa is 0/0 (sklearn: NaN with a warning)
    result = metrics(TaskType.ordinal, [[0.1, 0.8, 0.1], [0.2, 0.7, 0.1]], [1, 1])
    assert math.isnan(result["qwk"])
    assert result["accuracy"] == 1.0
    assert result["mae"] == 0.0


def test_regression_by_hand() -> None:
    # the NaN target is dropped; errors .5 0 -1
    result = metrics(TaskType.regression, [1.5, 2.0, 2.0, 100.0], [1.0, 2.0, 3.0, np.nan])
    assert result["mse"] == pytest.approx(1.25 / 3)  # (.25 + 0 + 1) / 3
    assert result["mae"] == pytest.approx(1.5 / 3)
    assert result["r2"] == pytest.approx(1 - 1.25 / 2)  # SS_tot about the mean 2: 1 + 0 + 1


@pytest.mark.parametrize("targets", [[0.1, 0.1, 0.1], [2.0, np.nan], [5.0]])
def test_r2_is_nan_for_constant_or_single_targets(targets: list[float]) -> None:
    result = metrics(TaskType.regression, [0.0] * len(targets), targets)
    assert math.isnan(result["r2"])
    assert not math.isnan(result["mse"])


# ------------------------------------------------------------------------- missing labels
@pytest.mark.parametrize("task_type", [*CLASSIFICATION_TYPES, TaskType.regression])
def test_all_missing_gives_all_nan(task_type: TaskType) -> None:
    if task_type is TaskType.regression:
        assert_all_nan(metrics(task_type, [1.0, 2.0], [np.nan, np.nan]))
        assert_all_nan(metrics(task_type, np.zeros(0), np.zeros(0)))
    else:
        proba = [[0.5, 0.5, 0.0], [0.2, 0.2, 0.6]]
        proba = [row[:2] for row in proba] if task_type is TaskType.binary else proba
        assert_all_nan(metrics(task_type, proba, [MISSING_CLASS, MISSING_CLASS]))


def test_missing_rows_are_dropped() -> None:
    # the known 3-class example with two unlabelled rows inserted: nothing changes
    proba = [*THREE_CLASS_PROBA[:2], [0.0, 0.0, 1.0], *THREE_CLASS_PROBA[2:], [1.0, 0.0, 0.0]]
    y = [*THREE_CLASS_Y[:2], MISSING_CLASS, *THREE_CLASS_Y[2:], MISSING_CLASS]
    assert metrics(TaskType.ordinal, proba, y) == metrics(
        TaskType.ordinal, THREE_CLASS_PROBA, THREE_CLASS_Y
    )


def test_missing_marker_is_the_tasks_one() -> None:
    from mtl_runner import metrics as module

    assert module._MISSING_CLASS == MISSING_CLASS


# ----------------------------------------------------------------- against scikit-learn
def random_split(
    rng: np.random.Generator, n: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities drawn from 12 distinct rows (many ties), labels with ~20% missing."""
    pool = rng.dirichlet(np.ones(num_classes), size=12)
    proba = pool[rng.integers(0, len(pool), n)]
    y = rng.integers(0, num_classes, n)
    y[rng.random(n) < 0.2] = MISSING_CLASS
    return proba, y


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("task_type", "num_classes"),
    [(TaskType.binary, 2), (TaskType.multiclass, 3), (TaskType.multiclass, 2)]
    + [(TaskType.ordinal, 5)],
)
def test_classification_equals_sklearn(task_type: TaskType, num_classes: int, seed: int) -> None:
    proba, y = random_split(np.random.default_rng(seed), 300, num_classes)
    result = metrics(task_type, proba, y)
    p, t = proba[y != MISSING_CLASS], y[y != MISSING_CLASS]
    predicted = p.argmax(axis=1)
    labels = list(range(num_classes))
    if num_classes == 2:
        auroc = skm.roc_auc_score(t, p[:, 1])
        brier = skm.brier_score_loss(t, p[:, 1])  # mean (p1 - y)²
    else:
        auroc = skm.roc_auc_score(t, p, multi_class="ovr", average="macro", labels=labels)
        brier = skm.brier_score_loss(t, p, labels=labels)  # full sum over the classes
    expected = {
        "accuracy": skm.accuracy_score(t, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(t, predicted),
        "f1_macro": skm.f1_score(t, predicted, average="macro", zero_division=0),
        "auroc": auroc,
        "brier": brier,
    }
    if task_type is TaskType.ordinal:
        expected["qwk"] = skm.cohen_kappa_score(t, predicted, weights="quadratic", labels=labels)
        expected["mae"] = skm.mean_absolute_error(t, predicted)
        for k in range(1, num_classes if num_classes > 2 else 1):
            expected[f"auroc_ge{k}"] = skm.roc_auc_score(t >= k, p[:, k:].sum(axis=1))
    assert result == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_f1_and_balanced_accuracy_equal_sklearn_with_classes_absent() -> None:
    # 5 classes: 3 never occurs, 4 is only predicted (sklearn's labels=None: the union)
    y = np.array([0, 0, 1, 1, 2, 2, 2, 0])
    predicted = np.array([0, 1, 1, 4, 2, 2, 0, 0])
    proba = np.eye(5)[predicted] * 0.6 + 0.08
    result = metrics(TaskType.multiclass, proba, y)
    assert result["f1_macro"] == pytest.approx(
        skm.f1_score(y, predicted, average="macro", zero_division=0)
    )
    with warnings.catch_warnings():  # sklearn warns that class 4 is not in y_true
        warnings.simplefilter("ignore")
        assert result["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(y, predicted)
        )


@pytest.mark.parametrize("seed", range(3))
def test_regression_equals_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(size=200)
    value = y + rng.normal(scale=0.7, size=200)
    y[rng.random(200) < 0.2] = np.nan
    result = metrics(TaskType.regression, value, y.astype(np.float32))  # torch's float32
    keep = ~np.isnan(y)
    t, v = y[keep].astype(np.float32).astype(np.float64), value[keep]
    expected = {
        "mse": skm.mean_squared_error(t, v),
        "mae": skm.mean_absolute_error(t, v),
        "r2": skm.r2_score(t, v),
    }
    assert result == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------------ edge cases
def test_non_finite_probabilities_give_nan() -> None:
    proba = [[np.nan, np.nan], [0.2, 0.8]]
    assert_all_nan(metrics(TaskType.binary, proba, [0, 1]))
    # ... unless only an unlabelled row has them
    assert metrics(TaskType.binary, proba, [MISSING_CLASS, 1])["accuracy"] == 1.0


def test_overflowing_regression_predictions_warn_nothing() -> None:
    result = metrics(TaskType.regression, [1e200, np.inf, 0.0], [0.0, 1.0, 2.0])
    assert result["mse"] == math.inf
    assert result["r2"] == -math.inf


def test_accepts_type_names_and_the_classification_alias() -> None:
    by_name = compute_metrics("ordinal", 3, np.array(THREE_CLASS_PROBA), np.array(THREE_CLASS_Y))
    assert by_name == metrics(TaskType.ordinal, THREE_CLASS_PROBA, THREE_CLASS_Y)
    assert list(metrics(TaskType.classification, THREE_CLASS_PROBA, THREE_CLASS_Y)) == list(
        METRICS_BY_TYPE[TaskType.multiclass]
    )


@pytest.mark.parametrize(
    ("num_classes", "proba", "targets", "message"),
    [
        (3, np.full((2, 3), 1 / 3), np.array([0, 3]), "must lie in 0..2"),
        (3, np.full((2, 3), 1 / 3), np.array([0, -1]), "must lie in 0..2"),
        (4, np.full((2, 3), 1 / 3), np.array([0, 1]), "for 4 classes"),
        (3, np.full((3, 3), 1 / 3), np.array([0, 1]), r"\[2, C\]"),
    ],
)
def test_bad_input_is_an_error(
    num_classes: int, proba: np.ndarray, targets: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compute_metrics(TaskType.multiclass, num_classes, proba, targets)


def test_regression_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected 2 predicted values"):
        compute_metrics(TaskType.regression, None, np.zeros(3), np.zeros(2))


# ------------------------------------------------------------------------------ directions
def test_every_metric_has_a_direction() -> None:
    for names in METRICS_BY_TYPE.values():
        assert set(names) <= set(HIGHER_IS_BETTER)
    assert set(METRICS_BY_TYPE) == {
        TaskType.binary,
        TaskType.multiclass,
        TaskType.ordinal,
        TaskType.regression,
    }

"""dataset=synthetic_correlated: the MMoE generator (Ma et al., KDD 2018, §3.2)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from mtl_runner.data.synthetic_correlated import (
    make_synthetic_correlated,
    quantile_edges,
    task_weights,
)
from mtl_runner.errors import ConfigError
from mtl_runner.run import instantiate
from mtl_runner.schema import TaskType, register_schemas

register_schemas()

GOOGLE_BETAS = [float(i * i) for i in range(10)]  # Google Research's β_i = i², i = 0..9


def make(**overrides):
    kwargs = dict(
        n=300,
        num_features=6,
        tasks={"y1": {"type": "regression"}, "y2": {"type": "regression"}},
        correlation=0.5,
        scale=1.0,
        num_sines=10,
        alphas=None,
        betas=None,
        noise=0.01,
        seed=0,
        split={"train": 0.7, "val": 0.15, "test": 0.15},
    )
    kwargs.update(overrides)
    return make_synthetic_correlated(**kwargs)


def raw_labels(data, split: str, task: str) -> np.ndarray:
    return getattr(data, split).targets[task].double().numpy()


def population_r(p: float, alphas, betas, scale: float = 1.0) -> float:
    """Population Pearson r of y_1, y_2 (no noise), by Gauss–Hermite quadrature.

    (w_1ᵀx, w_2ᵀx) is bivariate normal with sd c and correlation p whatever u_1, u_2 and d are,
    so this is the exact target the sample r estimates."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    weights = weights / weights.sum()
    z1, e = np.meshgrid(nodes, nodes, indexing="ij")
    w = np.outer(weights, weights)
    z2 = p * z1 + math.sqrt(1 - p * p) * e

    def f(z):
        s = scale * z
        return s + sum(np.sin(a * s + b) for a, b in zip(alphas, betas))

    a, b = f(z1), f(z2)
    a, b = a - (w * a).sum(), b - (w * b).sum()
    return float((w * a * b).sum() / (w * a * a).sum())


def test_task_vectors_have_the_planted_cosines() -> None:
    correlations = [1.0, 0.5, -0.3, 1.0, -1.0, 0.0]
    w = task_weights(num_features=7, correlations=correlations, scale=2.5, seed=3)
    assert w.shape == (6, 7)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 2.5, atol=1e-12)
    u1 = w[0] / 2.5
    units = [u1]
    for k, p in enumerate(correlations[1:], start=1):
        assert w[0] @ w[k] / (np.linalg.norm(w[0]) * np.linalg.norm(w[k])) == pytest.approx(
            p, abs=1e-12
        )
        if abs(p) < 1:  # recover u_k from w_k = c·(p·u_1 + sqrt(1-p²)·u_k)
            units.append((w[k] / 2.5 - p * u1) / math.sqrt(1 - p * p))
    units = np.array(units)
    np.testing.assert_allclose(units @ units.T, np.eye(len(units)), atol=1e-12)
    # two later tasks: cos(w_j, w_k) = p_j·p_k
    assert w[1] @ w[2] / 2.5**2 == pytest.approx(0.5 * -0.3, abs=1e-12)


def test_labels_follow_the_formula_in_a_hand_made_case() -> None:
    # d = 2, m = 1, no noise: y_k = s_k + sin(1.5·s_k + 0.3), s_k = w_kᵀx
    data = make(
        n=40, num_features=2, num_sines=1, alphas=[1.5], betas=[0.3], noise=0.0, scale=2.0,
        correlation=0.6, seed=11,
    )  # fmt: skip
    w = task_weights(2, [1.0, 0.6], 2.0, seed=11)
    assert w[0] @ w[0] == pytest.approx(4.0) and w[1] @ w[1] == pytest.approx(4.0)
    assert w[0] @ w[1] == pytest.approx(4.0 * 0.6)
    for split in ("train", "val", "test"):
        x = getattr(data, split).features.double().numpy()
        for k, name in enumerate(("y1", "y2")):
            s = w[k, 0] * x[:, 0] + w[k, 1] * x[:, 1]
            expected = s + np.sin(1.5 * s + 0.3)
            np.testing.assert_allclose(raw_labels(data, split, name), expected, atol=1e-5)


def test_default_alphas_and_betas_are_i_and_i_squared() -> None:
    default = make(num_sines=4)
    explicit = make(num_sines=4, alphas=[1, 2, 3, 4], betas=[1, 4, 9, 16])
    google = make(num_sines=4, betas=[0, 1, 4, 9])
    for name in ("y1", "y2"):
        assert torch.equal(default.train.targets[name], explicit.train.targets[name])
        assert not torch.equal(default.train.targets[name], google.train.targets[name])


@pytest.mark.parametrize("p", [0.9, 0.5, -0.5])
def test_linear_label_correlation_is_p(p: float) -> None:
    # Sample r over 14,000 training rows has sd about (1 - p²)/sqrt(14000) <= 0.009: 0.03 is > 3 sd.
    data = make(n=20000, num_features=100, correlation=p, num_sines=0, noise=0.0)
    assert data.info["task_correlation"] == {"y1~y2": p}
    assert abs(data.info["label_correlation"]["y1~y2"] - p) < 0.03


def test_sines_make_the_label_correlation_well_below_p() -> None:
    """At p = 0.9, d = 100, n = 20000, c = 1, m = 10.

    The expected values are the population r by quadrature: 0.294 with the default β_i = i²
    (i = 1..m) and 0.457 with Google's β_i = i² (i = 0..9), which is data_eval.md's table (0.452).
    The sampling sd of r at 14,000 rows is below 0.01, so 0.03 is a 3-sd tolerance."""
    alphas = [float(i) for i in range(1, 11)]
    default = make(n=20000, num_features=100, correlation=0.9)
    r = default.info["label_correlation"]["y1~y2"]
    expected = population_r(0.9, alphas, [a * a for a in alphas])
    assert expected == pytest.approx(0.294, abs=0.002)
    assert abs(r - expected) < 0.03 and r < 0.9 - 0.5
    google = make(n=20000, num_features=100, correlation=0.9, betas=GOOGLE_BETAS)
    r = google.info["label_correlation"]["y1~y2"]
    expected = population_r(0.9, alphas, GOOGLE_BETAS)
    assert expected == pytest.approx(0.452, abs=0.01)
    assert abs(r - expected) < 0.03


CLASSIFICATION_TASKS = {
    "f": {"type": "ordinal", "num_classes": 5},
    "b": {"type": "multiclass", "num_classes": 3},
    "m": {"type": "binary"},
}


def test_bin_edges_come_from_the_training_rows_only() -> None:
    # the same seed with regression heads draws the same raw y (the head type draws nothing)
    kwargs = dict(n=400, num_features=5, correlation=0.7, seed=5)
    binned = make(tasks=CLASSIFICATION_TASKS, **kwargs)
    raw = make(tasks={name: {"type": "regression"} for name in CLASSIFICATION_TASKS}, **kwargs)
    for name, spec in CLASSIFICATION_TASKS.items():
        classes = spec.get("num_classes", 2)
        train_y = raw_labels(raw, "train", name)
        edges = np.quantile(train_y, np.linspace(0, 1, classes + 1)[1:-1])  # by hand
        np.testing.assert_array_equal(edges, quantile_edges(train_y, classes))
        for split in ("train", "val", "test"):
            expected = np.digitize(raw_labels(raw, split, name), edges)
            np.testing.assert_array_equal(getattr(binned, split).targets[name].numpy(), expected)
        # discriminating: edges from all rows would label some rows differently
        everything = np.concatenate([raw_labels(raw, s, name) for s in ("train", "val", "test")])
        all_rows = np.digitize(everything, quantile_edges(everything, classes))
        assert (all_rows != np.digitize(everything, edges)).any()
    # edges are a function of the train values: changing the test rows' y changes nothing
    train_y = raw_labels(raw, "train", "f")
    before = quantile_edges(train_y, 5)
    raw.test.targets["f"] *= 100.0
    np.testing.assert_array_equal(quantile_edges(raw_labels(raw, "train", "f"), 5), before)


def test_classification_heads_are_balanced_on_train() -> None:
    data = make(n=1000, num_features=5, tasks=CLASSIFICATION_TASKS)
    n_train = data.info["n"]["train"]
    assert [t.type for t in data.tasks] == [TaskType.ordinal, TaskType.multiclass, TaskType.binary]
    assert [t.num_classes for t in data.tasks] == [5, 3, 2]
    for task in data.tasks:
        target = data.train.targets[task.name]
        assert target.dtype == torch.long
        counts = torch.bincount(target, minlength=task.num_classes)
        assert len(counts) == task.num_classes
        assert (counts - n_train / task.num_classes).abs().max() <= 1
        prevalence = data.info["prevalence"]["train"][task.name]
        balanced = {str(c): 1 / task.num_classes for c in range(task.num_classes)}
        assert prevalence == pytest.approx(balanced, abs=1 / n_train)


def test_per_task_correlation_overrides_the_global_one() -> None:
    tasks = {
        "y1": {"type": "regression"},
        "y2": {"type": "regression", "correlation": 0.9},
        "y3": {"type": "regression"},
    }
    data = make(n=5000, num_features=10, tasks=tasks, correlation=-0.5, num_sines=0, noise=0)
    assert data.info["task_correlation"] == {"y1~y2": 0.9, "y1~y3": -0.5}
    assert set(data.info["label_correlation"]) == {"y1~y2", "y1~y3"}
    matrix = data.info["label_correlation_matrix"]
    assert matrix["y1"]["y1"] == 1.0 and matrix["y2"]["y3"] == matrix["y3"]["y2"]
    assert matrix["y2"]["y3"] == pytest.approx(0.9 * -0.5, abs=0.05)  # cos(w_2, w_3) = p_2·p_3
    w = task_weights(10, [1.0, 0.9, -0.5], 1.0, seed=0)
    assert w[0] @ w[1] == pytest.approx(0.9) and w[0] @ w[2] == pytest.approx(-0.5)


def test_info_is_json_and_the_label_correlation_is_logged(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mtl_runner"):
        data = make(tasks=CLASSIFICATION_TASKS)
    text = json.dumps(data.info, allow_nan=False)
    assert set(json.loads(text)) == {
        "n", "labelled", "prevalence", "label_correlation", "label_correlation_matrix",
        "task_correlation",
    }  # fmt: skip
    assert data.info["n"] == {"train": 210, "val": 45, "test": 45}
    assert any("f~b" in r.getMessage() and "f~m" in r.getMessage() for r in caplog.records)


def test_the_same_seed_gives_the_same_data() -> None:
    first, again, other = make(seed=4), make(seed=4), make(seed=5)
    for split in ("train", "val", "test"):
        a, b, c = (getattr(d, split) for d in (first, again, other))
        assert torch.equal(a.features, b.features)
        assert all(torch.equal(a.targets[t], b.targets[t]) for t in ("y1", "y2"))
    assert not torch.equal(first.train.features, other.train.features)
    assert first.info == again.info


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"correlation": 1.5}, "dataset.correlation=1.5 is not allowed: use -1 <= correlation"),
        (
            {
                "tasks": {
                    "y1": {"type": "regression"},
                    "y2": {"type": "regression", "correlation": -1.2},
                }
            },
            "dataset.tasks.y2.correlation=-1.2 is not allowed",
        ),
        (
            {"tasks": {"y1": {"type": "regression", "correlation": 0.5}}},
            "dataset.tasks.y1.correlation=0.5 is not allowed: the first task is the reference",
        ),
        ({"num_features": 1}, "dataset.num_features=1 is not allowed: 2 tasks need 2 orthogonal"),
        (
            {"tasks": {"y1": {"type": "ordinal", "num_classes": 1}}},
            "dataset.tasks.y1.num_classes=1 is not allowed: a ordinal task needs at least 2",
        ),
        (
            {"tasks": {"y1": {"type": "multiclass", "num_classes": None}}},
            "dataset.tasks.y1.num_classes=None is not allowed",
        ),
        (
            {"tasks": {"y1": {"type": "binary", "num_classes": 3}}},
            "dataset.tasks.y1.num_classes=3 is not allowed: a binary task has exactly 2",
        ),
        ({"tasks": {"y1": {"type": "poisson"}}}, "dataset.tasks.y1.type=poisson is not allowed"),
        ({"noise": -0.1}, "dataset.noise=-0.1 is not allowed: it must be >= 0"),
        ({"scale": 0.0}, "dataset.scale=0.0 is not allowed: it must be > 0"),
        ({"num_sines": -1}, "dataset.num_sines=-1 is not allowed"),
        ({"alphas": [1.0, 2.0]}, "dataset.alphas=[1.0, 2.0] is not allowed: give num_sines=10"),
        ({"tasks": {}}, "dataset.tasks is empty"),
        ({"n": 2}, "dataset.n=2 is too small"),
    ],
)
def test_bad_values_give_one_line_config_errors(overrides, message) -> None:
    with pytest.raises(ConfigError) as raised:
        make(**overrides)
    text = str(raised.value)
    assert text.startswith(message) and "\n" not in text, text


def test_composes_through_hydra_and_instantiates(compose_config) -> None:
    cfg = compose_config("dataset=synthetic_correlated", "dataset.n=600")
    assert cfg.dataset.num_features == 100 and cfg.dataset.correlation == 0.5
    assert list(cfg.dataset.tasks) == ["y1", "y2"]
    assert cfg.dataset.noise == 0.01 and cfg.dataset.alphas is None
    data = instantiate(cfg.dataset)
    assert data.train.features.shape == (420, 100) and data.test.features.shape == (90, 100)
    assert all(t.type is TaskType.regression for t in data.tasks)
    assert data.train.targets["y1"].dtype == torch.float32
    model = instantiate(cfg.model, in_features=data.num_features, tasks=data.tasks)
    assert {k: tuple(v.shape) for k, v in model(data.val.features).items()} == {
        "y1": (90, 1),
        "y2": (90, 1),
    }


def test_classification_heads_through_hydra(compose_config) -> None:
    cfg = compose_config(
        "dataset=synthetic_correlated", "dataset.n=600", "dataset.num_features=10",
        "dataset.tasks.y1.type=ordinal", "dataset.tasks.y1.num_classes=5",
        "dataset.tasks.y2.type=binary", "dataset.tasks.y2.correlation=-0.9",
        "dataset.betas=[0,1,4,9,16,25,36,49,64,81]",
    )  # fmt: skip
    data = instantiate(cfg.dataset)
    assert [(t.type, t.num_classes) for t in data.tasks] == [
        (TaskType.ordinal, 5),
        (TaskType.binary, 2),
    ]
    assert data.info["task_correlation"] == {"y1~y2": -0.9}
    assert int(data.train.targets["y1"].max()) == 4 and data.train.targets["y2"].dtype == torch.long
    model = instantiate(cfg.model, in_features=data.num_features, tasks=data.tasks)
    outputs = model(data.train.features)
    assert outputs["y1"].shape == (420, 5) and outputs["y2"].shape == (420, 2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dataset.corelation=0.3", "Key 'corelation' not in 'SyntheticCorrelatedDatasetConf'"),
        ("dataset.tasks.y1.type=ordinl", "Invalid value 'ordinl'"),
        ("dataset.num_sines=many", "could not be converted to Integer"),
    ],
)
def test_the_schema_rejects_typos(compose_config, override, message) -> None:
    with pytest.raises(Exception) as raised:
        compose_config("dataset=synthetic_correlated", override)
    chain = [raised.value, raised.value.__cause__]
    assert any(message in str(error) for error in chain), [str(e) for e in chain]

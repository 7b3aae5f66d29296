"""``mtl-run`` end to end, in-process: files against their contract, weights against hand values."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

TASKS = ("a", "b", "c")
CONTRACT_COLUMNS = [
    "epoch",
    "step",
    "time_s",
    "lr",
    *(f"train/loss/{t}" for t in TASKS),
    *(f"weight/{t}" for t in TASKS),
    *(f"val/loss/{t}" for t in TASKS),
    # the classification metrics of DESIGN.md §4, by family then task
    *(
        f"val/{m}/{t}"
        for m in ("accuracy", "balanced_accuracy", "f1_macro", "auroc", "brier")
        for t in TASKS
    ),
]
METHODS = ["equal", "fixed", "inverse_loss", "dwa"]
METHOD_ARGS = {"fixed": ["weighting.weights=[1,0.5,0.25]"]}


def dwa_from_csv(metrics: pd.DataFrame, temperature: float) -> list[list[float]]:
    """DWA's weights recomputed from the logged train losses (DESIGN.md §5)."""
    losses = metrics[[f"train/loss/{t}" for t in TASKS]].to_numpy()
    expected = []
    for epoch in range(len(losses)):
        if epoch < 2:
            expected.append([1.0] * len(TASKS))
            continue
        ratio = losses[epoch - 1] / losses[epoch - 2]
        exps = [math.exp(r / temperature) for r in ratio]
        expected.append([len(TASKS) * e / sum(exps) for e in exps])
    return expected


@pytest.mark.parametrize("method", METHODS)
def test_each_method_writes_the_contract(mtl_run, method: str) -> None:
    outcome = mtl_run(f"weighting={method}", *METHOD_ARGS.get(method, []))
    assert outcome.code == 0, outcome.stderr
    metrics = outcome.metrics
    assert list(metrics.columns) == CONTRACT_COLUMNS
    assert metrics["epoch"].tolist() == [1, 2, 3]
    # 420 training rows (0.7 of 600) in batches of 64 -> 7 steps per epoch
    assert metrics["step"].tolist() == [7, 14, 21]
    assert metrics["time_s"].is_monotonic_increasing
    assert (metrics["lr"] == 1e-3).all()
    assert metrics.notna().all().all()
    assert (metrics.filter(like="val/accuracy/") <= 1).all().all()


def test_results_json_reports_the_best_epoch_and_test_once(mtl_run) -> None:
    outcome = mtl_run("trainer.epochs=5")
    results, metrics = outcome.results, outcome.metrics
    mean_val_loss = metrics[[f"val/loss/{t}" for t in TASKS]].mean(axis=1)
    best_row = metrics.loc[mean_val_loss.idxmin()]
    assert results["status"] == "completed"
    assert results["monitor"] == "val/loss" and results["monitor_mode"] == "min"
    assert results["best_epoch"] == int(best_row["epoch"])
    assert results["best_value"] == pytest.approx(mean_val_loss.min(), rel=1e-12)
    assert results["val"] == {k: pytest.approx(best_row[k], rel=1e-12) for k in results["val"]}
    assert set(results["test"]) == {"test/" + c.split("/", 1)[1] for c in CONTRACT_COLUMNS[10:]}
    assert results["epochs_completed"] == 5 and results["steps"] == 35
    assert results["n"] == {"train": 420, "val": 90, "test": 90}
    assert results["data"]["labelled"]["val"] == {t: 90 for t in TASKS}
    assert results["stopped_early"] is False and results["mode"] == "multi_task"
    assert results["wall_time_s"] > 0
    assert {"torch", "hydra", "omegaconf", "mtl_runner", "python"} <= set(results["versions"])
    assert (outcome.run_dir / "checkpoints" / "last.pt").is_file()
    assert (outcome.run_dir / "checkpoints" / "best.pt").is_file()
    assert (outcome.run_dir / ".hydra" / "config.yaml").is_file()
    assert (outcome.run_dir / "mtl_run.log").is_file()


def test_the_monitor_can_be_a_metric_to_maximise(mtl_run) -> None:
    outcome = mtl_run(
        "trainer.epochs=5", "trainer.monitor=val/accuracy/b", "trainer.monitor_mode=max"
    )
    results, metrics = outcome.results, outcome.metrics
    # the first epoch with the highest accuracy wins (ties keep the earlier one)
    assert results["best_epoch"] == int(metrics.loc[metrics["val/accuracy/b"].idxmax(), "epoch"])
    assert results["best_value"] == pytest.approx(metrics["val/accuracy/b"].max())


def test_checkpoint_holds_what_resuming_needs(mtl_run) -> None:
    outcome = mtl_run("weighting=dwa")
    state = torch.load(outcome.run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["step"] == 21
    assert {"model", "optimizer", "scaler", "weighting", "rng"} <= set(state)
    assert {"torch", "numpy", "python", "shuffle"} <= set(state["rng"])
    assert len(state["weighting"]["history"]) == 2


def test_dwa_weights_recompute_from_the_csv(mtl_run) -> None:
    outcome = mtl_run("weighting=dwa", "weighting.temperature=0.5", "trainer.epochs=6")
    metrics = outcome.metrics
    logged = metrics[[f"weight/{t}" for t in TASKS]].to_numpy().tolist()
    # the method applies float32 weights; the CSV's float64 losses recompute them to 1e-7
    for logged_row, expected_row in zip(logged, dwa_from_csv(metrics, 0.5), strict=True):
        assert logged_row == pytest.approx(expected_row, abs=1e-6)
    assert logged[2] != pytest.approx([1.0, 1.0, 1.0], abs=1e-6)  # it really moved


def test_inverse_loss_logged_weights_sum_to_one(mtl_run) -> None:
    metrics = mtl_run("weighting=inverse_loss").metrics
    sums = metrics[[f"weight/{t}" for t in TASKS]].sum(axis=1)
    assert sums.tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-6)
    # task a (5 classes) has the largest loss, so the smallest weight
    assert (metrics["weight/a"] < metrics["weight/c"]).all()


def test_fixed_weights_are_logged_as_given(mtl_run) -> None:
    metrics = mtl_run("weighting=fixed", "weighting.weights=[1,0.5,0.25]").metrics
    assert metrics[[f"weight/{t}" for t in TASKS]].to_numpy().tolist() == [[1.0, 0.5, 0.25]] * 3


def test_the_same_seed_gives_the_same_csv(mtl_run) -> None:
    first = mtl_run("weighting=dwa", "trainer.epochs=4").metrics.drop(columns="time_s")
    second = mtl_run("weighting=dwa", "trainer.epochs=4").metrics.drop(columns="time_s")
    other_seed = mtl_run("weighting=dwa", "trainer.epochs=4", "trainer.seed=1").metrics
    pd.testing.assert_frame_equal(first, second, check_exact=True)
    assert not first["train/loss/a"].equals(other_seed["train/loss/a"])


def test_full_batch_training(mtl_run) -> None:
    metrics = mtl_run("trainer.batch_size=null").metrics
    assert metrics["step"].tolist() == [1, 2, 3]


def test_a_sweep_writes_one_csv_per_job(mtl_run, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    outcome = mtl_run(
        "-m",
        "weighting=dwa",
        "weighting.temperature=1,2,4",
        "trainer.epochs=4",
        "trainer.seed=3",
        f"hydra.sweep.dir={sweep}",
    )
    assert outcome.code == 0, outcome.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "results.json").is_file())
    # the seed is not part of a job's name (DESIGN.md §4)
    fast = "dataset.n=600,trainer.batch_size=64,trainer.epochs=4,trainer.progress=log"
    assert jobs == [
        f"{i}_{fast},weighting.temperature={t},weighting=dwa" for i, t in enumerate((1, 2, 4))
    ]
    weights = {}
    for job, temperature in zip(jobs, (1.0, 2.0, 4.0), strict=True):
        metrics = pd.read_csv(sweep / job / "metrics.csv")
        logged = metrics[[f"weight/{t}" for t in TASKS]].to_numpy().tolist()
        for logged_row, expected_row in zip(logged, dwa_from_csv(metrics, temperature)):
            assert logged_row == pytest.approx(expected_row, abs=1e-6)
        weights[temperature] = logged[3]
    assert weights[1.0] != pytest.approx(weights[2.0], abs=1e-6)
    assert weights[2.0] != pytest.approx(weights[4.0], abs=1e-6)
    # a sweep prints one log line per epoch, never progress bars
    assert outcome.stdout.count("epoch 4/4") == 3
    assert "epochs:" not in outcome.stderr


def test_log_lines_and_bar(mtl_run) -> None:
    logged = mtl_run("trainer.progress=log")
    assert "epoch 3/3 | train loss a=" in logged.stdout
    assert "| weight a=1.0000 b=1.0000 c=1.0000 |" in logged.stdout
    bar = mtl_run("trainer.progress=bar")
    assert "epochs: 100%" in bar.stderr
    assert "epoch 3/3 | train loss" in (bar.run_dir / "mtl_run.log").read_text()
    quiet = mtl_run("trainer.progress=none")
    assert "epoch 1/3" not in quiet.stdout and "epochs:" not in quiet.stderr
    assert "epoch 3/3 | train loss" in (quiet.run_dir / "mtl_run.log").read_text()


def test_steps_csv_holds_every_nth_step_and_averages_to_the_epoch_weights(mtl_run) -> None:
    outcome = mtl_run("weighting=rlw", "trainer.steps_every=1")
    assert outcome.code == 0, outcome.stderr
    steps = pd.read_csv(outcome.run_dir / "steps.csv")
    assert list(steps.columns) == [
        "step", "epoch", *(f"loss/{t}" for t in TASKS), *(f"weight/{t}" for t in TASKS)
    ]  # fmt: skip
    assert steps["step"].tolist() == list(range(1, 22))  # 7 steps per epoch, 3 epochs
    weights = steps[[f"weight/{t}" for t in TASKS]]
    assert weights.sum(axis=1).to_numpy() == pytest.approx(1.0)  # RLW: a softmax per step
    epoch_means = weights.groupby(steps["epoch"]).mean().to_numpy()
    logged = outcome.metrics[[f"weight/{t}" for t in TASKS]].to_numpy()
    assert epoch_means == pytest.approx(logged, rel=1e-9)
    every_third = mtl_run("weighting=rlw", "trainer.steps_every=3")
    assert pd.read_csv(every_third.run_dir / "steps.csv")["step"].tolist() == list(range(3, 22, 3))

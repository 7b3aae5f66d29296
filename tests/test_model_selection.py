"""Model selection on validation only: monitors, directions, early stopping, one test pass."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_trainer import small_data

from mtl_runner.errors import ConfigError
from mtl_runner.models.hps import HardParameterSharing
from mtl_runner.schema import MonitorMode, Progress
from mtl_runner.training.trainer import Trainer, TrainerSettings, seed_everything
from mtl_runner.weighting.equal import Equal


def trainer(out_dir: Path, **settings) -> Trainer:
    seed_everything(0, deterministic=True)
    data = small_data()
    model = HardParameterSharing(data.num_features, data.tasks, hidden_sizes=[16, 8])
    options = {"epochs": 6, "batch_size": 64, "seed": 0, "progress": Progress.none}
    merged = TrainerSettings(**{**options, **settings})
    return Trainer(
        model,
        Equal(data.task_names),
        data,
        torch.optim.Adam,
        1e-2,
        merged,
        torch.device("cpu"),
        out_dir,
    )


def test_test_split_is_evaluated_once_after_training_with_the_best_state(tmp_path: Path) -> None:
    fitted = trainer(tmp_path, monitor="val/accuracy/a", checkpoint=True)
    calls: list[str] = []
    evaluate = fitted.evaluate

    def recording(split, prefix):
        calls.append(prefix)
        return evaluate(split, prefix)

    fitted.evaluate = recording
    result = fitted.fit()
    assert calls == ["val"] * 6 + ["test"]
    # the test values are those of the best checkpoint, not of the last epoch
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch
    fitted.model.load_state_dict(best["model"])
    assert evaluate(fitted.data.test, "test") == result.test
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert result.best_value == metrics["val/accuracy/a"].max()
    assert result.best_epoch == int(metrics["epoch"][metrics["val/accuracy/a"].idxmax()])


@pytest.mark.parametrize(
    ("monitor", "maximise"),
    [("val/loss", False), ("val/auroc", True), ("val/brier/a", False), ("val/mae/r", False)],
)
def test_auto_mode_takes_the_metrics_direction(tmp_path: Path, monitor, maximise) -> None:
    assert trainer(tmp_path, monitor=monitor).maximise is maximise


def test_a_mean_monitor_averages_the_tasks_that_have_the_metric(tmp_path: Path) -> None:
    fitted = trainer(tmp_path, monitor="val/auroc", epochs=2, checkpoint=False)
    result = fitted.fit()
    expected = (result.best_val["val/auroc/a"] + result.best_val["val/auroc/b"]) / 2
    assert result.best_value == pytest.approx(expected)


def test_early_stopping_stops_patience_epochs_after_the_best(tmp_path: Path) -> None:
    # maximising the validation loss, which falls: epoch 1 stays best
    fitted = trainer(
        tmp_path, monitor="val/loss", monitor_mode=MonitorMode.max, patience=2, checkpoint=False
    )
    result = fitted.fit()
    assert result.best_epoch == 1
    assert result.epochs_completed == 3 and result.stopped_early
    assert len(pd.read_csv(tmp_path / "metrics.csv")) == 3


def test_min_delta_demands_a_real_improvement(tmp_path: Path) -> None:
    result = trainer(tmp_path, patience=1, min_delta=1e3, checkpoint=False).fit()
    assert (result.best_epoch, result.epochs_completed) == (1, 2)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"patience": 0}, "trainer.patience=0 is not allowed"),
        ({"min_delta": -1.0}, "trainer.min_delta=-1.0 is not allowed"),
        ({"monitor": "test/loss"}, "trainer.monitor=test/loss is not a validation value"),
    ],
)
def test_bad_selection_settings_are_refused(tmp_path: Path, settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        trainer(tmp_path, **settings)


def test_single_task_mode_trains_one_model_per_task_with_the_same_files(mtl_run) -> None:
    outcome = mtl_run("mode=single_task", "trainer.monitor=val/accuracy/a")
    assert outcome.code == 0, outcome.stderr
    run_dir = outcome.run_dir
    results = outcome.results
    assert results["mode"] == "single_task" and results["status"] == "completed"
    # each baseline selects on its own task's accuracy
    assert results["monitor"] == {t: f"val/accuracy/{t}" for t in ("a", "b", "c")}
    metrics = outcome.metrics
    multi = mtl_run()
    assert list(metrics.columns) == list(multi.metrics.columns)
    assert (metrics.filter(like="weight/") == 1.0).all().all()
    for task in ("a", "b", "c"):
        own = pd.read_csv(run_dir / "tasks" / task / "metrics.csv")
        assert list(own.filter(like="/").columns) == [
            c for c in metrics.columns if c.endswith(f"/{task}")
        ]
        pd.testing.assert_series_equal(
            own[f"val/loss/{task}"], metrics[f"val/loss/{task}"], check_names=False
        )
        state = torch.load(run_dir / "tasks" / task / "checkpoints" / "best.pt", weights_only=True)
        heads = {k.split(".")[1] for k in state["model"] if k.startswith("heads.")}
        assert heads == {task}
        best = results["best_epoch"][task]
        own_results = json.loads((run_dir / "tasks" / task / "results.json").read_text())
        assert own_results["best_epoch"] == best and own_results["tasks"] == [task]
        assert results["val"][f"val/accuracy/{task}"] == own[f"val/accuracy/{task}"][best - 1]
    assert set(results["test"]) == set(multi.results["test"])

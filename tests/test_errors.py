"""Every bad input: one clear line naming the value, exit code 1, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch


def assert_one_line(outcome, message: str) -> None:
    assert outcome.code == 1
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert lines == [f"mtl-run: error: {message}"] or (
        len(lines) == 1 and lines[0].startswith("mtl-run: error: ") and message in lines[0]
    ), outcome.stderr
    assert "Traceback" not in outcome.stderr + outcome.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trainer.epochs=0"], "trainer.epochs=0 is not allowed: it must be a positive integer"),
        (["trainer.epochs=-3"], "trainer.epochs=-3 is not allowed"),
        (
            ["trainer.batch_size=0"],
            "trainer.batch_size=0 is not allowed: use a positive integer, or null for full batch",
        ),
        (["trainer.lr=0"], "trainer.lr=0.0 is not allowed: it must be a positive number"),
        (["trainer.lr=-0.1"], "trainer.lr=-0.1 is not allowed"),
        (
            ["weighting=fixed", "weighting.weights=[1,2]"],
            "weighting.weights=[1.0, 2.0] has 2 entries but the dataset has 3 tasks (a, b, c): "
            "give one per task",
        ),
        (
            ["weighting=fixed", "weighting.weights=[1,-1,1]"],
            "weighting.weights=[1.0, -1.0, 1.0] is not allowed: weights must be non-negative",
        ),
        (["weighting=fixed"], "weighting.weights is missing"),
        (
            ["weighting=dwa", "weighting.temperature=hot"],
            "weighting.temperature='hot' is not allowed: Value 'hot' of type 'str' could not be "
            "converted to Float",
        ),
        (
            ["weighting=dwa", "weighting.temperature=-1"],
            "weighting.temperature=-1.0 is not allowed",
        ),
        (
            ["weighting=dwa", "+weighting.temp=1"],
            "Key 'temp' not in 'DWAOptions'; allowed keys: temperature",
        ),
        (["trainer.monitor=test/loss/a"], "trainer.monitor=test/loss/a is not a validation value"),
        (["dataset.relatedness=2"], "dataset.relatedness=2.0 is not allowed: use 0 <= r <= 1"),
        (["model.hidden_sizes=[]"], "model.hidden_sizes=[] is not allowed"),
        (["device.precision=bf16", "device=cpu"], "device.precision=bf16 needs CUDA"),
        (
            ["weighting._target_=torch.nn.Linear"],
            "weighting._target_=torch.nn.Linear is not a weighting method",
        ),
        (["trainer.patience=0"], "trainer.patience=0 is not allowed"),
        (["trainer.monitor=val/qwk"], "trainer.monitor=val/qwk is not a validation value"),
    ],
)
def test_bad_values(mtl_run, overrides: list[str], message: str) -> None:
    outcome = mtl_run(*overrides)
    assert_one_line(outcome, message)
    results = outcome.results
    assert results["status"] == "failed" and message in results["error"]
    assert not (outcome.run_dir / "metrics.csv").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset=penguins", "dataset.path=no_such.csv"], "dataset.path='no_such.csv'"),
        (["dataset=csv", "dataset.path=x.csv"], "dataset.features lists no column"),
        (
            ["dataset=penguins", "dataset.tasks.species.classes=[Adelie,Gentoo]"],
            "Chinstrap",
        ),
        (["dataset=penguins", "dataset.features.numeric=[flipper]"], "flipper"),
    ],
)
def test_bad_data_files_fail_before_training(mtl_run, overrides, message: str) -> None:
    outcome = mtl_run(*overrides, "trainer.epochs=1", fast=False)
    assert_one_line(outcome, message)
    assert outcome.results["status"] == "failed"
    assert not (outcome.run_dir / "metrics.csv").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(mtl_run) -> None:
    outcome = mtl_run("device=cuda")
    assert_one_line(outcome, "device=cuda was requested but CUDA is not available here")


def test_divergence_stops_keeps_rows_and_marks_failed(mtl_run) -> None:
    outcome = mtl_run("weighting._target_=diverging_weighting.DivergeAtEpoch", "trainer.epochs=5")
    assert_one_line(outcome, "training diverged at epoch 3: the loss of task a is not finite")
    metrics = outcome.metrics
    assert metrics["epoch"].tolist() == [1, 2]  # the rows written before stay, whole
    assert metrics.notna().all().all()
    results = outcome.results
    assert results["status"] == "failed"
    assert "epoch 3" in results["error"]
    log = (outcome.run_dir / "mtl_run.log").read_text()
    assert "run failed: training diverged at epoch 3" in log


@pytest.mark.parametrize("key", ["hydra.run.dir"])
def test_unwritable_output_directory(mtl_run, tmp_path: Path, key: str) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    outcome = mtl_run(f"{key}={blocker}/run")
    assert_one_line(outcome, f"cannot write the output directory {blocker}/run")
    assert f"choose a writable one with {key}=<path>" in outcome.stderr


def test_unwritable_sweep_directory(mtl_run, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    outcome = mtl_run("-m", "weighting=equal,dwa", f"hydra.sweep.dir={blocker}/sweep")
    assert_one_line(outcome, f"cannot write the output directory {blocker}/sweep")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("weighting=nonexistent", "Could not find 'weighting/nonexistent'"),
        ("trainer.epochs=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
        ("trainer.epoch=3", "Key 'epoch' not in 'TrainerConf'"),
    ],
)
def test_composition_errors_are_hydras_message_without_traceback(mtl_run, override, message):
    outcome = mtl_run(override)
    assert outcome.code == 1
    assert message in outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert outcome.run_dir is None  # nothing was created


def test_full_error_shows_the_traceback(mtl_run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    outcome = mtl_run("trainer.epochs=0")
    assert outcome.code == 1
    assert "Traceback" in outcome.stderr and "ConfigError" in outcome.stderr


def test_a_failing_job_in_a_sweep_does_not_stop_the_others(mtl_run, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    outcome = mtl_run("-m", "trainer.epochs=0,2", f"hydra.sweep.dir={sweep}")
    assert outcome.code == 1
    assert "trainer.epochs=0 is not allowed" in outcome.stderr
    failed, completed = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert json.loads((failed / "results.json").read_text())["status"] == "failed"
    assert json.loads((completed / "results.json").read_text())["status"] == "completed"
    assert len(pd.read_csv(completed / "metrics.csv")) == 2

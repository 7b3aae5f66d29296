"""Resume: an interrupted run continues from its last checkpoint and ends bit for bit where an
uninterrupted one ends (metrics.csv identical apart from time_s, same test metrics)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mtl_runner.training.trainer import Trainer

# dropout, a stateful method and a scheduler: every piece of state a resume must restore
SETUP = [
    "dataset.n=3000",
    "trainer.epochs=6",
    "trainer.batch_size=64",
    "trainer.progress=log",
    "model.dropout=0.2",
    "weighting=dwa",
    "trainer.steps_every=5",
    "+trainer.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:2}",
]


def without_time(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics.drop(columns="time_s")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("reference")
    subprocess.run(
        [str(Path(sys.executable).parent / "mtl-run"), *SETUP, f"hydra.run.dir={run_dir}"],
        check=True,
        capture_output=True,
    )
    return run_dir


def resume(mtl_run, run_dir: Path, *extra: str):
    return mtl_run(
        *SETUP, f"trainer.resume={run_dir}", f"hydra.run.dir={run_dir}", *extra, fast=False
    )


def assert_same_run(run_dir: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(
        without_time(pd.read_csv(run_dir / "metrics.csv")),
        without_time(pd.read_csv(reference / "metrics.csv")),
        check_exact=True,
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(run_dir / "steps.csv"), pd.read_csv(reference / "steps.csv"), check_exact=True
    )
    ours = pd.read_json(run_dir / "results.json", typ="series")
    theirs = pd.read_json(reference / "results.json", typ="series")
    assert ours["test"] == theirs["test"] and ours["best_epoch"] == theirs["best_epoch"]


@pytest.mark.parametrize("interrupt_at_step", [10, 130, 180])
def test_interrupted_mid_epoch_then_resumed_equals_uninterrupted(
    mtl_run, monkeypatch, tmp_path: Path, uninterrupted: Path, interrupt_at_step: int
) -> None:
    run_dir = tmp_path / "run"
    original = Trainer._optimizer_step
    steps = iter(range(1, 10**6))

    def interrupting(self) -> None:
        if next(steps) == interrupt_at_step:  # 33 steps per epoch: in epochs 1, 4 and 6
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Trainer, "_optimizer_step", interrupting)
    try:
        stopped = mtl_run(*SETUP, f"hydra.run.dir={run_dir}", fast=False)
        assert stopped.code != 0
    except KeyboardInterrupt:  # how far it travels depends on Hydra's handler
        pass
    assert pd.read_json(run_dir / "results.json", typ="series")["status"] == "stopped"
    monkeypatch.setattr(Trainer, "_optimizer_step", original)
    outcome = resume(mtl_run, run_dir)
    assert outcome.code == 0, outcome.stderr
    assert_same_run(run_dir, uninterrupted)


@pytest.mark.parametrize("rows_before_kill", [1, 4])
def test_kill_9_then_resume_equals_uninterrupted(
    mtl_run, tmp_path: Path, uninterrupted: Path, rows_before_kill: int
) -> None:
    run_dir = tmp_path / "run"
    command = [str(Path(sys.executable).parent / "mtl-run"), *SETUP, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run_dir / "metrics.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) > rows_before_kill:
            break
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    written = len(pd.read_csv(metrics))
    assert written < 6, "the run ended before the kill: the test proved nothing"
    outcome = resume(mtl_run, run_dir)
    assert outcome.code == 0, outcome.stderr
    assert_same_run(run_dir, uninterrupted)


def test_a_finished_run_extended_equals_a_longer_run(mtl_run, tmp_path: Path) -> None:
    plain = [s for s in SETUP if "scheduler" not in s and "epochs" not in s]
    short, long = tmp_path / "short", tmp_path / "long"
    assert mtl_run(*plain, "trainer.epochs=3", f"hydra.run.dir={short}", fast=False).code == 0
    assert mtl_run(*plain, "trainer.epochs=5", f"hydra.run.dir={long}", fast=False).code == 0
    extended = mtl_run(
        *plain, "trainer.epochs=5", f"trainer.resume={short}", f"hydra.run.dir={short}", fast=False
    )
    assert extended.code == 0, extended.stderr
    assert_same_run(short, long)


def test_resume_errors_are_one_line(mtl_run, tmp_path: Path) -> None:
    from test_errors import assert_one_line

    absent = tmp_path / "absent"
    outcome = mtl_run(f"trainer.resume={absent}")
    assert_one_line(outcome, f"trainer.resume={absent}: no such run directory")

    run_dir = tmp_path / "run"
    assert mtl_run(f"hydra.run.dir={run_dir}").code == 0
    other_tasks = mtl_run(f"trainer.resume={run_dir}", "dataset=penguins", fast=False)
    assert_one_line(other_tasks, "the checkpoint's metrics.csv columns differ from this config's")

    (run_dir / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    broken = mtl_run(f"trainer.resume={run_dir}")
    assert_one_line(broken, "is not a readable checkpoint")

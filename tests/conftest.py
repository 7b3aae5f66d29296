"""Shared helpers: compose configs with the Compose API, run ``mtl-run`` in-process."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from mtl_runner import cli
from mtl_runner.config_dir import config_dir

# small and fast, but with the default's shape (10 features, tasks a/b/c with 5/3/2 classes)
FAST = ["dataset.n=600", "trainer.epochs=3", "trainer.batch_size=64", "trainer.progress=log"]


@dataclass
class RunOutcome:
    code: int
    stdout: str
    stderr: str
    run_dir: Path | None

    @property
    def metrics(self) -> pd.DataFrame:
        assert self.run_dir is not None
        return pd.read_csv(self.run_dir / "metrics.csv")

    @property
    def results(self) -> dict:
        assert self.run_dir is not None
        return json.loads((self.run_dir / "results.json").read_text())


@pytest.fixture
def compose_config() -> Iterator[Callable[..., DictConfig]]:
    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    yield _compose


@pytest.fixture
def mtl_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> Callable[..., RunOutcome]:
    """Call the console script's ``main`` in-process; single runs go to ``tmp_path/run<i>``."""
    counter = iter(range(1000))

    def _run(*overrides: str, fast: bool = True) -> RunOutcome:
        run_dir = tmp_path / f"run{next(counter)}"
        flags = [o for o in overrides if o.startswith("-")]  # argparse wants flags first
        values = [o for o in overrides if not o.startswith("-")]
        argv = ["mtl-run", *flags, *(FAST if fast else []), *values]
        if "-m" not in overrides and not any(o.startswith("hydra.run.dir=") for o in overrides):
            argv.append(f"hydra.run.dir={run_dir}")
        monkeypatch.setattr(sys, "argv", argv)
        code = 0
        try:
            cli.main()
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return RunOutcome(code, captured.out, captured.err, run_dir if run_dir.exists() else None)

    return _run

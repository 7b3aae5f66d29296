"""Hydra callbacks configured in conf/config.yaml."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mtl_runner.errors import OutputDirError, report_and_exit


class OutputDirCheck(Callback):
    """Stop before anything runs when the run or sweep directory cannot be written.

    Hydra itself would fail inside its own job set-up with a stack trace; this turns that into
    one line naming the directory, before any job starts (also before a sweep's first job).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        HydraConfig.instance().set_config(config)  # ${hydra:...} in the directory name
        directory = Path(str(OmegaConf.select(config, key)))
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
            # Hydra turns a callback's exception into a warning and goes on; exit instead
            report_and_exit(
                OutputDirError(
                    f"cannot write the output directory {directory} ({reason}): "
                    f"choose a writable one with {key}=<path>"
                )
            )

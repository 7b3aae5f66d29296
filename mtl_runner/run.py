"""One job: config → data → model → weighting → trainer → files.

Called by the ``mtl-run`` console script through Hydra, and directly by tests. torch is imported
here, not in the CLI, so that ``mtl-run --help`` stays fast.
"""

from __future__ import annotations

import logging
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mtl_runner import __version__
from mtl_runner.errors import ConfigError, UserError
from mtl_runner.training.progress import log_to_files_only
from mtl_runner.training.run_files import RESULTS_FILE, write_json_atomic

log = logging.getLogger("mtl_runner")


def check_trainer(cfg: DictConfig) -> None:
    """Range checks the schema's types cannot express; one line per bad value."""
    if cfg.epochs < 1:
        raise ConfigError(
            f"trainer.epochs={cfg.epochs} is not allowed: it must be a positive integer"
        )
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError(
            f"trainer.batch_size={cfg.batch_size} is not allowed: use a positive integer, "
            "or null for full batch"
        )
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"trainer.lr={cfg.lr} is not allowed: it must be a positive number")
    if cfg.eval_batch_size < 1:
        raise ConfigError(
            f"trainer.eval_batch_size={cfg.eval_batch_size} is not allowed: it must be positive"
        )


def run(cfg: DictConfig, out_dir: Path, multirun: bool = False) -> dict[str, Any]:
    """Train one configuration and write its files into ``out_dir``; return results.json."""
    started = time.perf_counter()
    results: dict[str, Any] = {"status": "failed", "run_dir": str(out_dir)}
    try:
        results.update(_train(cfg, out_dir, multirun))
        results["status"] = "completed"
        return results
    except KeyboardInterrupt:
        results.update(status="stopped", error="interrupted")
        raise
    except UserError as error:
        results["error"] = str(error)
        log_to_files_only(logging.ERROR, f"run failed: {error}")
        raise
    except Exception as error:
        results["error"] = f"{type(error).__name__}: {error}"
        log.exception("run failed")
        raise
    finally:
        results["wall_time_s"] = time.perf_counter() - started
        results["versions"] = _versions()
        write_json_atomic(out_dir / RESULTS_FILE, results)


def _train(cfg: DictConfig, out_dir: Path, multirun: bool) -> dict[str, Any]:
    check_trainer(cfg.trainer)
    import torch  # noqa: F401  (deferred: the CLI must start fast)

    from mtl_runner.training.device import autocast_dtype, resolve_device
    from mtl_runner.training.trainer import Trainer, TrainerSettings, seed_everything
    from mtl_runner.weighting import build_weighting

    trainer_cfg = cfg.trainer
    seed_everything(trainer_cfg.seed, trainer_cfg.deterministic)
    device = resolve_device(cfg.device)
    settings = TrainerSettings(
        epochs=trainer_cfg.epochs,
        batch_size=trainer_cfg.batch_size,
        seed=trainer_cfg.seed,
        eval_batch_size=trainer_cfg.eval_batch_size,
        monitor=trainer_cfg.monitor,
        monitor_mode=trainer_cfg.monitor_mode,
        checkpoint=trainer_cfg.checkpoint,
        progress=trainer_cfg.progress,
        multirun=multirun,
        autocast_dtype=autocast_dtype(cfg.device, device),
    )
    data = instantiate(cfg.dataset)
    model = instantiate(cfg.model, in_features=data.num_features, tasks=data.tasks)
    weighting = build_weighting(cfg.weighting, data.task_names)
    optimizer_factory = _optimizer_factory(trainer_cfg.optimizer)
    log.info(
        "%s on %s: tasks %s, n %s, device %s",
        type(weighting).__name__,
        type(model).__name__,
        ", ".join(data.task_names),
        data.info.get("n"),
        device,
    )
    trainer = Trainer(
        model, weighting, data, optimizer_factory, trainer_cfg.lr, settings, device, out_dir
    )
    fit = trainer.fit()
    return {
        "weighting": cfg.weighting.get("_target_"),
        "device": str(device),
        "tasks": list(data.task_names),
        "n": data.info.get("n"),
        "epochs_completed": fit.epochs_completed,
        "steps": fit.steps,
        "monitor": settings.monitor,
        "monitor_mode": str(getattr(settings.monitor_mode, "value", settings.monitor_mode)),
        "best_epoch": fit.best_epoch,
        "best_value": fit.best_value,
        "val": fit.best_val,
        "test": fit.test,
    }


def instantiate(cfg: DictConfig, **kwargs: Any) -> Any:
    """Build ``cfg._target_`` with the config's values plus runtime objects (``kwargs``).

    Runtime objects are passed to the partial rather than through ``hydra.utils.instantiate``,
    which would convert them to configs; and our one-line errors are not wrapped by Hydra.
    """
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(cfg, _convert_="all", _partial_=True)(**kwargs)


def _optimizer_factory(cfg: DictConfig) -> Any:
    """A callable ``(param_groups, lr=...) -> torch.optim.Optimizer`` from a ``_target_``."""
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(cfg, _convert_="all", _partial_=True)


def _versions() -> dict[str, str]:
    versions = {"mtl_runner": __version__, "python": platform.python_version()}
    for name in ("torch", "hydra", "omegaconf", "numpy", "pandas"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "unknown")
    return versions

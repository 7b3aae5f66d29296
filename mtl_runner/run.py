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
from mtl_runner.training.run_files import RESULTS_FILE, SPLITS_FILE, write_json_atomic

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
    if cfg.steps_every is not None and cfg.steps_every < 1:
        raise ConfigError(
            f"trainer.steps_every={cfg.steps_every} is not allowed: use a positive number of "
            "steps, or null for no steps.csv"
        )
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

    from mtl_runner.schema import RunMode
    from mtl_runner.training.device import resolve_device
    from mtl_runner.training.trainer import seed_everything

    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    device = resolve_device(cfg.device)
    data = instantiate(cfg.dataset)
    _log_data(data)
    info = dict(data.info)
    if "rows" in info:  # the file rows of each split: its own file, results.json stays small
        write_json_atomic(out_dir / SPLITS_FILE, _json_safe(info.pop("rows")))
    summary = {"mode": RunMode(cfg.mode.type).value, "data": _json_safe(info)}
    if RunMode(cfg.mode.type) is RunMode.single_task:
        from mtl_runner.single_task import train_single_task

        return {**summary, **train_single_task(cfg, data, device, out_dir, multirun)}
    weighting = _build_weighting(cfg, data.task_names)
    return {**summary, **fit(cfg, data, weighting, device, out_dir, multirun)}


def _build_weighting(cfg: DictConfig, task_names: tuple[str, ...]) -> Any:
    from mtl_runner.weighting import build_weighting

    return build_weighting(cfg.weighting, task_names)


def fit(
    cfg: DictConfig, data: Any, weighting: Any, device: Any, out_dir: Path, multirun: bool
) -> dict[str, Any]:
    """Train one model on ``data`` with ``weighting``; the results.json fields of the fit."""
    from mtl_runner.training.trainer import Trainer

    settings = _settings(cfg, device, multirun)
    model = instantiate(cfg.model, in_features=data.num_features, tasks=data.tasks)
    _check_grad_source(cfg, model, weighting)
    optimizer_factory = _optimizer_factory(cfg.trainer.optimizer)
    log.info(
        "%s on %s: tasks %s, device %s",
        type(weighting).__name__,
        type(model).__name__,
        ", ".join(data.task_names),
        device,
    )
    trainer = Trainer(
        model, weighting, data, optimizer_factory, cfg.trainer.lr, settings, device, out_dir
    )
    if cfg.trainer.resume:
        trainer.resume_from(Path(cfg.trainer.resume))
    result = trainer.fit()
    return {
        "weighting": cfg.weighting.get("_target_"),
        "device": str(device),
        "tasks": list(data.task_names),
        "n": data.info.get("n"),
        "epochs_completed": result.epochs_completed,
        "stopped_early": result.stopped_early,
        "steps": result.steps,
        "monitor": settings.monitor,
        "monitor_mode": "max" if trainer.maximise else "min",
        "best_epoch": result.best_epoch,
        "best_value": result.best_value,
        "val": result.best_val,
        "test": result.test,
    }


def _check_grad_source(cfg: DictConfig, model: Any, weighting: Any) -> None:
    """grad_source=features needs an architecture whose z is shared (MultiTaskModel)."""
    source = getattr(getattr(weighting, "grad_source", None), "value", None)
    if source == "features" and not type(model).feature_gradients:
        raise ConfigError(
            f"weighting.grad_source=features is not supported by model {type(model).__name__}: "
            "its representation is one block per task, so per-task gradients with respect to "
            "it do not meet; use weighting.grad_source=params"
        )


def _settings(cfg: DictConfig, device: Any, multirun: bool) -> Any:
    from mtl_runner.training.device import autocast_dtype
    from mtl_runner.training.trainer import TrainerSettings

    trainer_cfg = cfg.trainer
    return TrainerSettings(
        epochs=trainer_cfg.epochs,
        batch_size=trainer_cfg.batch_size,
        seed=trainer_cfg.seed,
        eval_batch_size=trainer_cfg.eval_batch_size,
        monitor=trainer_cfg.monitor,
        monitor_mode=trainer_cfg.monitor_mode,
        patience=trainer_cfg.patience,
        min_delta=trainer_cfg.min_delta,
        checkpoint=trainer_cfg.checkpoint,
        progress=trainer_cfg.progress,
        multirun=multirun,
        autocast_dtype=autocast_dtype(cfg.device, device),
        scheduler=_optimizer_factory(trainer_cfg.scheduler) if trainer_cfg.scheduler else None,
        steps_every=trainer_cfg.steps_every,
    )


def _log_data(data: Any) -> None:
    """n and class prevalence per task per split: how rare the rare classes are, up front."""
    info = data.info
    log.info("data: %s rows per split %s", type(data).__name__, info.get("n"))
    for task in data.tasks:
        labelled = {s: counts.get(task.name) for s, counts in info.get("labelled", {}).items()}
        prevalence = {
            s: {c: round(f, 3) for c, f in per_task[task.name].items()}
            for s, per_task in info.get("prevalence", {}).items()
            if task.name in per_task
        }
        log.info(
            "task %s (%s): labelled %s%s",
            task.name,
            task.type.value,
            labelled,
            f", prevalence {prevalence}" if prevalence else "",
        )


def _json_safe(value: Any) -> Any:
    """``info`` as plain JSON values (NaN stays NaN: json writes it, pandas reads it)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    return value


def instantiate(cfg: DictConfig, **kwargs: Any) -> Any:
    """Build ``cfg._target_`` with the config's values plus runtime objects (``kwargs``).

    Runtime objects are passed to the partial rather than through ``hydra.utils.instantiate``,
    which would convert them to configs; and our one-line errors are not wrapped by Hydra.
    """
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(cfg, _convert_="all", _partial_=True)(**kwargs)


def _optimizer_factory(cfg: DictConfig) -> Any:
    """A callable from a ``_target_`` partial: ``(param_groups, lr=...) -> Optimizer``, or
    ``(optimizer) -> LR scheduler``."""
    from hydra.utils import instantiate as hydra_instantiate

    return hydra_instantiate(cfg, _convert_="all", _partial_=True)


def _versions() -> dict[str, str]:
    versions = {"mtl_runner": __version__, "python": platform.python_version()}
    for name in ("torch", "hydra", "omegaconf", "numpy", "pandas"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "unknown")
    return versions

"""One training loop for every weighting method.

Per step: forward on an in-memory batch, the K unweighted task losses (each the mean over the
batch's labelled rows), then the weighting method's ``step`` (which fills the gradients and
returns its weights c), then the optimizer. Per epoch: the epoch means of the losses and
weights, a validation pass, one metrics.csv row, the checkpoints, and the early-stopping check.
At the end the best checkpoint (by the monitored validation value) is evaluated once on the
test split: model selection never reads it. The trainer knows no method by name.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtl_runner.data import MultiTaskData, Split
from mtl_runner.errors import CheckpointError, ConfigError, TrainingDiverged
from mtl_runner.metrics import HIGHER_IS_BETTER
from mtl_runner.models import MultiTaskModel
from mtl_runner.schema import MonitorMode, Progress
from mtl_runner.training.progress import EpochProgress
from mtl_runner.training.run_files import (
    CHECKPOINT_DIR,
    METRICS_FILE,
    STEPS_FILE,
    MetricsWriter,
    save_checkpoint_atomic,
)
from mtl_runner.weighting import StepContext, Weighting
from mtl_runner.weighting.taps import TaskTaps

log = logging.getLogger("mtl_runner")

MEAN_VAL_LOSS = "val/loss"  # the monitor meaning "mean of val/loss/<task> over tasks"


@dataclass(frozen=True)
class TrainerSettings:
    epochs: int
    batch_size: int | None
    seed: int
    eval_batch_size: int = 8192
    monitor: str = MEAN_VAL_LOSS
    monitor_mode: MonitorMode = MonitorMode.auto
    patience: int | None = None
    min_delta: float = 0.0
    checkpoint: bool = True
    progress: Progress = Progress.auto
    multirun: bool = False
    autocast_dtype: torch.dtype | None = None
    scheduler: Any = None  # a factory optimizer -> LR scheduler, stepped once per epoch
    steps_every: int | None = None  # write steps.csv: every n-th step's losses and weights


@dataclass
class FitResult:
    epochs_completed: int = 0
    steps: int = 0
    best_epoch: int | None = None
    best_value: float | None = None
    best_val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (loadable with weights_only=True)."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.copy()),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy(),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate(
        (python_state["version"], tuple(python_state["state"]), python_state["gauss_next"])
    )


def metrics_columns(data: MultiTaskData) -> list[str]:
    """The metrics.csv header (DESIGN.md §4): families of ``<split>/<quantity>/<task>``."""
    names = data.task_names
    metric_names = list(dict.fromkeys(m for task in data.tasks for m in task.metric_names))
    return [
        "epoch",
        "step",
        "time_s",
        "lr",
        *(f"train/loss/{t}" for t in names),
        *(f"weight/{t}" for t in names),
        *(f"val/loss/{t}" for t in names),
        *(f"val/{m}/{t.name}" for m in metric_names for t in data.tasks if m in t.metric_names),
    ]


class Trainer:
    def __init__(
        self,
        model: MultiTaskModel,
        weighting: Weighting,
        data: MultiTaskData,
        optimizer_factory: Any,
        lr: float,
        settings: TrainerSettings,
        device: torch.device,
        out_dir: Path,
    ) -> None:
        self.settings = settings
        self.device = device
        self.data = data.to(device)
        self.model = model.to(device)
        self.weighting = weighting
        self.tasks = data.tasks
        self.out_dir = out_dir
        self.columns = metrics_columns(data)
        self._check_monitor()
        self.optimizer = optimizer_factory(self._parameter_groups(), lr=lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=settings.autocast_dtype is torch.float16)
        self.scheduler = settings.scheduler(self.optimizer) if settings.scheduler else None
        self._shared = tuple(self.model.shared_parameters())
        self._task_parameters = {
            name: tuple(self.model.task_parameters(name)) for name in data.task_names
        }
        # shuffling draws from its own CPU generator: the same order on every device
        self._shuffle = torch.Generator().manual_seed(settings.seed)
        # only data with missing training labels pays for the masked losses and the per-step
        # presence check; class weights take the masked path too, so that the logged epoch mean
        # is over the labelled rows' weights as in every masked run
        self._masked_losses = any(
            task.class_weights is not None
            or not bool(task.labelled(self.data.train.targets[task.name]).all())
            for task in self.tasks
        )
        self.result = FitResult()
        self._best_state: dict[str, torch.Tensor] | None = None
        self._epochs_since_best = 0
        self._elapsed_before = 0.0  # wall time of the epochs before a resume

    # ----------------------------------------------------------------------------- set-up
    def _parameter_groups(self) -> list[dict[str, Any]]:
        groups = [{"params": list(self.model.parameters())}]
        method_parameters = self.weighting.parameters()
        if method_parameters:
            groups.append({"params": method_parameters})
        return groups

    def _monitor_choices(self) -> list[str]:
        """``val/<quantity>`` (its mean over the tasks that have it) or one val column."""
        columns = [c for c in self.columns if c.startswith("val/")]
        means = list(dict.fromkeys("/".join(c.split("/")[:2]) for c in columns))
        return means + columns

    def _check_monitor(self) -> None:
        allowed = self._monitor_choices()
        if self.settings.monitor not in allowed:
            raise ConfigError(
                f"trainer.monitor={self.settings.monitor} is not a validation value: "
                f"allowed are {', '.join(allowed)}"
            )
        patience = self.settings.patience
        if patience is not None and patience < 1:
            raise ConfigError(
                f"trainer.patience={patience} is not allowed: use a positive number of epochs, "
                "or null to train all trainer.epochs"
            )
        if not self.settings.min_delta >= 0:
            raise ConfigError(
                f"trainer.min_delta={self.settings.min_delta} is not allowed: it must be >= 0"
            )

    @property
    def maximise(self) -> bool:
        """Whether a larger monitored value is better (``monitor_mode=auto``: the metric's)."""
        mode = self.settings.monitor_mode
        if mode is MonitorMode.auto:
            return HIGHER_IS_BETTER[self.settings.monitor.split("/")[1]]
        return mode is MonitorMode.max

    # ----------------------------------------------------------------------------- loop
    def fit(self) -> FitResult:
        first_epoch = self.result.epochs_completed + 1  # > 1 after resume_from
        writer = MetricsWriter(self.out_dir / METRICS_FILE, self.columns, keep_rows=first_epoch - 1)
        every = self.settings.steps_every
        steps_writer = None
        if every:
            steps_writer = MetricsWriter(
                self.out_dir / STEPS_FILE,
                self._step_columns(),
                keep_rows=self.result.steps // every,
            )
        progress = EpochProgress(
            self.settings.progress,
            self.settings.multirun,
            self.settings.epochs,
            self.data.task_names,
        )
        started = time.perf_counter() - self._elapsed_before
        try:
            with progress.active():
                for epoch in range(first_epoch, self.settings.epochs + 1):
                    if self._patience_spent():  # a resumed run that had already stopped
                        break
                    train_losses, mean_weights, step_rows = self._train_epoch(epoch)
                    for step_row in step_rows:
                        steps_writer.write(step_row)  # type: ignore[union-attr]
                    self.weighting.on_epoch_end(train_losses)
                    if self.scheduler is not None:
                        self.scheduler.step()
                    val = self.evaluate(self.data.val, "val")
                    row = self._row(epoch, started, train_losses, mean_weights, val)
                    writer.write(row)
                    self.result.epochs_completed = epoch
                    self._track_best(epoch, val)
                    self._save_checkpoints(epoch, float(row["time_s"]))
                    progress.update(row)
                    if self._patience_spent():
                        self.result.stopped_early = True
                        log.info(
                            "early stop after epoch %d: %s has not improved for %d epochs "
                            "(best %.6g at epoch %s)",
                            epoch,
                            self.settings.monitor,
                            self._epochs_since_best,
                            self.result.best_value,
                            self.result.best_epoch,
                        )
                        break
        finally:
            writer.close()
            if steps_writer is not None:
                steps_writer.close()
        self._evaluate_test()
        return self.result

    def _batches(self, split: Split) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        n = len(split)
        size = self.settings.batch_size or n
        features, targets = split.features, split.targets
        if size < n:  # one gather per epoch; every batch is then a view
            order = torch.randperm(n, generator=self._shuffle).to(self.device)
            features = features[order]
            targets = {name: target[order] for name, target in targets.items()}
        for start in range(0, n, size):
            stop = start + size
            yield features[start:stop], {name: t[start:stop] for name, t in targets.items()}

    def _step_columns(self) -> list[str]:
        """steps.csv (DESIGN.md §4): ``step``, ``epoch``, ``loss/<task>``, ``weight/<task>``."""
        names = self.data.task_names
        return ["step", "epoch", *(f"loss/{t}" for t in names), *(f"weight/{t}" for t in names)]

    def _step_rows(
        self, epoch: int, losses: list[torch.Tensor], labelled: list, weights: list[torch.Tensor]
    ) -> list[dict[str, float | int]]:
        """Every n-th step of the epoch as a steps.csv row (one host sync, here)."""
        every = self.settings.steps_every
        if not every:
            return []
        first = self.result.steps - len(weights) + 1
        picked = [i for i in range(len(weights)) if (first + i) % every == 0]
        if not picked:
            return []
        loss_rows = torch.stack([losses[i] for i in picked]).double()
        if self._masked_losses:  # a batch without a task's label has no loss for it
            counts = torch.stack([labelled[i] for i in picked])
            loss_rows = torch.where(counts > 0, loss_rows, torch.nan)
        weight_rows = torch.stack([weights[i] for i in picked]).double()
        names = self.data.task_names
        rows = []
        for i, loss_row, weight_row in zip(picked, loss_rows.tolist(), weight_rows.tolist()):
            row: dict[str, float | int] = {"step": first + i, "epoch": epoch}
            row.update({f"loss/{t}": v for t, v in zip(names, loss_row)})
            row.update({f"weight/{t}": v for t, v in zip(names, weight_row)})
            rows.append(row)
        return rows

    def _train_epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        """The labelled-row mean losses, the mean per-step weights and the steps.csv rows."""
        self.model.train()
        # kept per batch and reduced once per epoch: no extra kernels in the step
        batch_losses: list[torch.Tensor] = []
        # per batch and task: labelled rows (class-weighted); the batch size when all are
        batch_labelled: list[torch.Tensor | int] = []
        step_weights: list[torch.Tensor] = []
        own_batches: list[int] = []  # each step's own batch (draw_batch adds others between)
        batches = self._batches(self.data.train)

        def forward(features: torch.Tensor, targets: dict[str, torch.Tensor], tapped: bool):
            losses, labelled, shared, copies = self._losses(features, targets, tapped)
            batch_losses.append(losses.detach())
            batch_labelled.append(features.shape[0] if labelled is None else labelled)
            return losses, shared, copies

        def draw_batch() -> tuple[torch.Tensor, torch.Tensor] | None:
            batch = next(batches, None)
            return None if batch is None else forward(*batch, tapped=False)[:2]

        for features, targets in batches:
            losses, shared, copies = forward(features, targets, tapped=True)
            own_batches.append(len(batch_losses) - 1)
            self.optimizer.zero_grad(set_to_none=True)
            context = StepContext(
                self._backward,
                self._shared,
                self._task_parameters,
                shared,
                draw_batch,
                self._loss_scale(),
                copies,
                self._present(batch_labelled[-1]),
            )
            step_weights.append(self.weighting.step(losses, context).detach())
            regularization = self.model.regularization()
            if regularization is not None:  # the architecture's own term, weight 1
                self._backward(regularization)
            self._optimizer_step()
            self.weighting.after_step(lambda f=features, t=targets: self._losses_after_step(f, t))
        self.result.steps += len(step_weights)
        # float64: the logged means are exact to the float32 values applied. Each task's mean
        # is over its labelled rows; a weight's over the steps in which the task was present.
        losses = torch.stack(batch_losses).double()
        if self._masked_losses:
            labelled = torch.stack(batch_labelled).double()  # type: ignore[arg-type]
        else:
            sizes = torch.tensor(batch_labelled, dtype=torch.float64, device=self.device)
            labelled = sizes[:, None].expand_as(losses)
        train_losses = ((labelled * losses).sum(0) / labelled.sum(0)).cpu()
        mean_weights = torch.stack(step_weights).double().nanmean(dim=0).cpu()
        self._check_finite(epoch, train_losses)  # one host sync per epoch, here
        step_rows = self._step_rows(
            epoch,
            [batch_losses[i] for i in own_batches],
            [batch_labelled[i] for i in own_batches],
            step_weights,
        )
        return train_losses, mean_weights, step_rows

    def _present(self, labelled: torch.Tensor | int) -> torch.Tensor | None:
        """The mask of the tasks labelled in this batch, or None when all are (StepContext)."""
        if not isinstance(labelled, torch.Tensor):
            return None
        present = labelled > 0
        return None if bool(present.all()) else present

    @torch.no_grad()
    def _losses_after_step(
        self, features: torch.Tensor, targets: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return self._losses(features, targets)[0]

    def _loss_scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler.is_enabled() else 1.0

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.settings.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _losses(
        self, features: torch.Tensor, targets: dict[str, torch.Tensor], tapped: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, TaskTaps | None]:
        """The K masked-mean losses, their labelled-row weights (None when the training data
        has every label: the plain mean losses then), and the shared representation z of a
        batch; with ``tapped`` (a step's own batch), the heads read the taps of z the method
        asks for, returned too (StepContext)."""
        copies = None
        with self._autocast():
            shared = self.model.encode(features)
            if tapped:
                copies = self.weighting.representation_taps(shared)
            if copies is not None:
                outputs = {
                    name: self.model.decode_task(name, z, features) for name, z in copies.items()
                }
            else:
                outputs = self.model.decode(shared, features)
        if not self._masked_losses:
            plain = [t.unmasked_loss(outputs[t.name].float(), targets[t.name]) for t in self.tasks]
            return torch.stack(plain), None, shared, copies
        terms = [t.loss_terms(outputs[t.name].float(), targets[t.name]) for t in self.tasks]
        totals = torch.stack([total for total, _ in terms])
        labelled = torch.stack([weight for _, weight in terms]).detach()
        return totals / labelled.clamp_min(1e-12), labelled, shared, copies

    def _backward(self, total: torch.Tensor) -> None:
        if self.scaler.is_enabled():  # fp16 only; skipping it otherwise saves ~10% of a step
            total = self.scaler.scale(total)
        total.backward()

    def _optimizer_step(self) -> None:
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _check_finite(self, epoch: int, train_losses: torch.Tensor) -> None:
        bad = [t.name for t, v in zip(self.tasks, train_losses.tolist()) if not math.isfinite(v)]
        if bad:
            values = ", ".join(
                f"{t.name}={v}" for t, v in zip(self.tasks, train_losses.tolist()) if t.name in bad
            )
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the loss of task {bad[0]} is not finite "
                f"(epoch mean {values}); rows of earlier epochs are kept in {METRICS_FILE}. "
                "Lower trainer.lr or check the data"
            )

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, split: Split, prefix: str) -> dict[str, float]:
        """Loss and metrics of a whole split, keyed ``<prefix>/<quantity>/<task>``."""
        self.model.eval()
        size = self.settings.eval_batch_size
        chunks = [
            self.model(split.features[start : start + size]) for start in range(0, len(split), size)
        ]
        values: dict[str, float] = {}
        for task in self.tasks:
            output = torch.cat([chunk[task.name] for chunk in chunks]).float()
            target = split.targets[task.name]
            values[f"{prefix}/loss/{task.name}"] = float(task.loss(output, target))
            for name, value in task.metrics(output, target).items():
                values[f"{prefix}/{name}/{task.name}"] = value
        return values

    def _row(
        self,
        epoch: int,
        started: float,
        train_losses: torch.Tensor,
        mean_weights: torch.Tensor,
        val: dict[str, float],
    ) -> dict[str, float | int]:
        row: dict[str, float | int] = {
            "epoch": epoch,
            "step": self.result.steps,
            "time_s": time.perf_counter() - started,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
        }
        names = self.data.task_names
        row.update({f"train/loss/{t}": v for t, v in zip(names, train_losses.tolist())})
        row.update({f"weight/{t}": v for t, v in zip(names, mean_weights.tolist())})
        row.update({k: v for k, v in val.items() if k in self.columns})
        return row

    def monitored(self, val: dict[str, float]) -> float:
        """The monitored value: one val column, or the mean of a quantity over the tasks
        (NaN when a task's value is undefined, so such an epoch is never selected)."""
        monitor = self.settings.monitor
        if monitor in val:
            return val[monitor]
        values = [v for key, v in val.items() if key.startswith(monitor + "/")]
        return sum(values) / len(values)

    def _track_best(self, epoch: int, val: dict[str, float]) -> None:
        value = self.monitored(val)
        best = self.result.best_value
        delta = self.settings.min_delta
        improved = best is None or (value > best + delta if self.maximise else value < best - delta)
        if improved and math.isfinite(value):
            self.result.best_epoch, self.result.best_value, self.result.best_val = epoch, value, val
            self._best_state = copy.deepcopy(self.model.state_dict())
            self._epochs_since_best = 0
        else:
            self._epochs_since_best += 1

    def _patience_spent(self) -> bool:
        patience = self.settings.patience
        return patience is not None and self._epochs_since_best >= patience

    def _evaluate_test(self) -> None:
        """Evaluate the best checkpoint once on the test split (model selection never sees it)."""
        if self._best_state is None:
            return
        self.model.load_state_dict(self._best_state)
        self.result.test = self.evaluate(self.data.test, "test")

    # ----------------------------------------------------------------------------- checkpoints
    def checkpoint_state(self, epoch: int, time_s: float = 0.0) -> dict[str, Any]:
        """Everything the next epoch depends on, so a resumed run continues bit for bit."""
        return {
            "epoch": epoch,
            "step": self.result.steps,
            "time_s": time_s,
            "columns": list(self.columns),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "scaler": self.scaler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "best_epoch": self.result.best_epoch,
            "best_value": self.result.best_value,
            "best_val": self.result.best_val,
            # the best epoch's weights travel with last.pt: resuming needs this one file only
            "best_model": self._best_state or {},
            "epochs_since_best": self._epochs_since_best,
            "rng": {**rng_state(), "shuffle": self._shuffle.get_state()},
        }

    def _save_checkpoints(self, epoch: int, time_s: float) -> None:
        if not self.settings.checkpoint:
            return
        directory = self.out_dir / CHECKPOINT_DIR
        state = self.checkpoint_state(epoch, time_s)
        if self.result.best_epoch == epoch:
            save_checkpoint_atomic(directory / "best.pt", state)
        save_checkpoint_atomic(directory / "last.pt", state)

    def resume_from(self, run_dir: Path) -> None:
        """Continue the run in ``run_dir`` from its last checkpoint (before :meth:`fit`)."""
        if not run_dir.is_dir():
            raise CheckpointError(f"trainer.resume={run_dir}: no such run directory")
        path = run_dir / CHECKPOINT_DIR / "last.pt"
        if not path.is_file():  # killed during its first epoch: nothing to skip
            log.warning("trainer.resume=%s: no checkpoint yet, training from epoch 1", run_dir)
            return
        last = load_checkpoint(path)
        if last["columns"] != list(self.columns):
            raise CheckpointError(
                f"trainer.resume={run_dir}: the checkpoint's metrics.csv columns differ from "
                "this config's (different tasks or dataset): resume with the run's own config"
            )
        self._restore(last, run_dir)
        self._best_state = last["best_model"] or None
        log.info("resumed %s after epoch %d (step %d)", run_dir, last["epoch"], last["step"])

    def _restore(self, state: dict[str, Any], run_dir: Path) -> None:
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.weighting.load_state_dict(state["weighting"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise CheckpointError(
                f"trainer.resume={run_dir}: the checkpoint does not match this config ({reason})"
            ) from None
        self.result.epochs_completed = state["epoch"]
        self.result.steps = state["step"]
        self.result.best_epoch = state["best_epoch"]
        self.result.best_value = state["best_value"]
        self.result.best_val = state["best_val"]
        self._epochs_since_best = state["epochs_since_best"]
        self._elapsed_before = state["time_s"]
        restore_rng_state(state["rng"])
        self._shuffle.set_state(state["rng"]["shuffle"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint loaded with ``weights_only=True``; one-line errors when absent or broken."""
    if not path.is_file():
        raise CheckpointError(
            f"trainer.resume: no checkpoint at {path} (was the run started with "
            "trainer.checkpoint=false, or killed before its first epoch ended?)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, not a checkpoint, or not loadable safely
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointError(
            f"trainer.resume: {path} is not a readable checkpoint ({reason})"
        ) from None

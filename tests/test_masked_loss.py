"""Missing labels: masked losses, the presence mask the methods see, and the logged means."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from mtl_runner.data.base import MultiTaskData, Split, label_summary
from mtl_runner.models.hps import HardParameterSharing
from mtl_runner.schema import Progress, TaskType
from mtl_runner.tasks import MISSING_CLASS, Task
from mtl_runner.training.trainer import Trainer, TrainerSettings, seed_everything
from mtl_runner.weighting import StepContext
from mtl_runner.weighting.base import LossWeighting, fill_absent


def test_classification_loss_is_the_mean_over_labelled_rows() -> None:
    task = Task("t", TaskType.multiclass, 2)
    # logits (0, 0) -> CE ln 2; (ln 3, 0) with label 0 -> -ln(3/4) = ln(4/3)
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]])
    target = torch.tensor([1, 0, MISSING_CLASS])
    assert task.loss(logits, target).item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


def test_class_weights_give_torchs_weighted_mean() -> None:
    task = Task("t", TaskType.binary, 2, class_weights=(1.0, 3.0))
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    target = torch.tensor([1, 0, MISSING_CLASS])
    # (3·ln 2 + 1·ln(4/3)) / (3 + 1)
    expected = (3 * math.log(2) + math.log(4 / 3)) / 4
    assert task.loss(logits, target).item() == pytest.approx(expected)


def test_regression_loss_skips_nan_targets() -> None:
    task = Task("r", TaskType.regression)
    output = torch.tensor([[1.0], [2.0], [10.0]])
    target = torch.tensor([0.0, 4.0, float("nan")])
    assert task.loss(output, target).item() == pytest.approx((1 + 4) / 2)


@pytest.mark.parametrize(
    ("task", "target"),
    [
        (Task("t", TaskType.multiclass, 3), torch.full((4,), MISSING_CLASS)),
        (Task("r", TaskType.regression), torch.full((4,), float("nan"))),
    ],
)
def test_a_batch_without_labels_contributes_exactly_zero(task: Task, target) -> None:
    output = torch.randn(4, task.output_size, requires_grad=True)
    loss = task.loss(output, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(output.grad, torch.zeros_like(output))


def test_fill_absent_uses_the_mean_of_the_present_losses() -> None:
    losses = torch.tensor([1.0, 0.0, 3.0], requires_grad=True)
    filled = fill_absent(losses, torch.tensor([True, False, True]))
    assert filled.tolist() == [1.0, 2.0, 3.0]
    filled.sum().backward()
    assert losses.grad.tolist() == [1.0, 0.0, 1.0]  # the fill is a constant


class StepIndexWeights(LossWeighting):
    """Weights (s, s, s) at step s = 1, 2, ...; records what each step saw."""

    def __init__(self, task_names) -> None:
        super().__init__(task_names)
        self.seen: list[tuple[list[float], list[bool] | None]] = []

    def backward(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        present = None if context.present is None else context.present.tolist()
        self.seen.append((losses.detach().tolist(), present))
        return super().backward(losses, context)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.full_like(losses, float(len(self.seen)))


def sparse_data() -> MultiTaskData:
    """12 training rows in batches of 4: task b is labelled only in rows 0-3 (batch 1)."""
    generator = torch.Generator().manual_seed(0)
    tasks = (Task("a", TaskType.binary, 2), Task("b", TaskType.multiclass, 3))

    def split(n: int, b_labelled: int) -> Split:
        b = torch.randint(3, (n,), generator=generator)
        b[b_labelled:] = MISSING_CLASS
        a = torch.randint(2, (n,), generator=generator)
        return Split(torch.randn(n, 4, generator=generator), {"a": a, "b": b})

    train, val, test = split(12, 4), split(6, 6), split(6, 6)
    info = label_summary(tasks, {"train": train, "val": val, "test": test})
    return MultiTaskData(tasks, train, val, test, ("x0", "x1", "x2", "x3"), info)


def sparse_trainer(method, out_dir: Path) -> Trainer:
    seed_everything(0, deterministic=True)
    data = sparse_data()
    model = HardParameterSharing(4, data.tasks, hidden_sizes=[8])
    # batch_size 12 would be one full batch; 4 -> three batches, shuffled: pin the order
    settings = TrainerSettings(
        epochs=1, batch_size=4, seed=0, progress=Progress.none, checkpoint=False
    )
    trainer = Trainer(
        model, method, data, torch.optim.SGD, 0.1, settings, torch.device("cpu"), out_dir
    )
    trainer._batches = (
        lambda split: (  # unshuffled: batch 1 = rows 0-3
            (split.features[i : i + 4], {k: v[i : i + 4] for k, v in split.targets.items()})
            for i in range(0, len(split), 4)
        )
    )
    return trainer


def test_methods_are_told_which_tasks_are_present_and_logged_means_skip_absent_steps(
    tmp_path: Path,
) -> None:
    method = StepIndexWeights(["a", "b"])
    trainer = sparse_trainer(method, tmp_path)
    trainer.fit()
    presence = [present for _, present in method.seen]
    assert presence == [None, [True, False], [True, False]]
    # in the absent steps b's loss is replaced by the mean of the present ones (here: a's)
    for losses, _ in method.seen[1:]:
        assert losses[1] == pytest.approx(losses[0])
    row = pd.read_csv(tmp_path / "metrics.csv").iloc[0]
    assert row["weight/a"] == pytest.approx((1 + 2 + 3) / 3)
    assert row["weight/b"] == pytest.approx(1.0)  # only step 1 had labels for b
    # b's epoch loss is the mean over its 4 labelled rows: batch 1's loss alone
    assert row["train/loss/b"] == pytest.approx(method.seen[0][0][1])
    assert row["train/loss/a"] == pytest.approx(sum(s[0][0] for s in method.seen) / 3)


def test_fully_labelled_data_never_builds_a_presence_mask(tmp_path: Path) -> None:
    method = StepIndexWeights(["a", "b"])
    trainer = sparse_trainer(method, tmp_path)
    for split in (trainer.data.train,):
        split.targets["b"][:] = 0
    trainer._masked_losses = False
    trainer.fit()
    assert all(present is None for _, present in method.seen)


def test_label_summary_counts_labelled_rows_and_prevalence() -> None:
    data = sparse_data()
    assert data.info["labelled"]["train"] == {"a": 12, "b": 4}
    train_b = data.train.targets["b"][:4].tolist()
    prevalence = data.info["prevalence"]["train"]["b"]
    assert prevalence == {str(c): train_b.count(c) / 4 for c in range(3)}


@pytest.mark.parametrize(
    "task",
    [
        Task("t", TaskType.multiclass, 3),
        Task("w", TaskType.multiclass, 3, class_weights=(1.0, 2.0, 0.5)),
        Task("r", TaskType.regression),
    ],
)
def test_the_fully_labelled_fast_path_gives_the_masked_value(task: Task) -> None:
    generator = torch.Generator().manual_seed(1)
    output = torch.randn(32, task.output_size, generator=generator)
    if task.is_classification:
        target = torch.randint(3, (32,), generator=generator)
    else:
        target = torch.randn(32, generator=generator)
    fast, masked = task.unmasked_loss(output, target), task.loss(output, target)
    assert fast.item() == pytest.approx(masked.item(), rel=1e-6)

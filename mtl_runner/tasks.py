"""What a task is: its name, type, output size, loss and validation metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtl_runner.schema import TaskType

if TYPE_CHECKING:
    import torch

# Label value of a classification row whose label is missing (torch's ignore_index default).
MISSING_CLASS = -100

# Direction of every metric the runner writes: True when higher is better.
HIGHER_IS_BETTER: dict[str, bool] = {"loss": False, "accuracy": True, "mae": False}


@dataclass(frozen=True)
class Task:
    name: str
    type: TaskType
    num_classes: int | None = None

    @property
    def output_size(self) -> int:
        return self.num_classes if self.type is TaskType.classification else 1

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Validation metrics besides the loss, in CSV column order."""
        return ("accuracy",) if self.type is TaskType.classification else ("mae",)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the batch's rows (cross-entropy, or MSE for regression)."""
        import torch.nn.functional as F

        if self.type is TaskType.classification:
            return F.cross_entropy(output, target)
        return F.mse_loss(output.squeeze(-1), target)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Metrics of a whole split's outputs, as 0-dim tensors (no host sync here)."""
        if self.type is TaskType.classification:
            return {"accuracy": (output.argmax(-1) == target).float().mean()}
        return {"mae": (output.squeeze(-1) - target).abs().mean()}

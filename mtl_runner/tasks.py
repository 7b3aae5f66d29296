"""What a task is: its name, type, classes, masked loss and validation metrics.

Missing labels are part of the data contract: a classification target holds
:data:`MISSING_CLASS` where the label is missing, a regression target holds NaN. Every loss and
metric skips those rows, so a row keeps its other tasks' labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mtl_runner.metrics import HIGHER_IS_BETTER, metric_names
from mtl_runner.schema import TaskType

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["HIGHER_IS_BETTER", "MISSING_CLASS", "Task"]

# Label value of a classification row whose label is missing (torch's ignore_index default).
MISSING_CLASS = -100


@dataclass(frozen=True)
class Task:
    """One prediction target.

    ``classes``: the class names in label order (index i is class i), when known; for ordinal
    tasks that order is the clinical order (F0 < F1 < ...). ``class_weights``: optional
    cross-entropy weights, one per class.
    """

    name: str
    type: TaskType
    num_classes: int | None = None
    classes: tuple[str, ...] | None = None
    class_weights: tuple[float, ...] | None = None

    @property
    def is_classification(self) -> bool:
        return self.type is not TaskType.regression

    @property
    def output_size(self) -> int:
        return int(self.num_classes) if self.is_classification else 1

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Validation metrics besides the loss, in CSV column order."""
        return metric_names(self.type, self.num_classes)

    def labelled(self, target: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the rows whose label is present."""
        import torch

        if self.is_classification:
            return target != MISSING_CLASS
        return ~torch.isnan(target)

    def loss_terms(
        self, output: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sum of the per-row losses over the labelled rows, and their total weight.

        ``sum / weight`` is the masked mean; returned apart so the caller can pool batches and
        never divides by zero without a host sync.
        """
        import torch
        import torch.nn.functional as F

        if self.is_classification:
            weight = None
            if self.class_weights is not None:
                weight = torch.as_tensor(
                    self.class_weights, dtype=output.dtype, device=output.device
                )
            per_row = F.cross_entropy(
                output, target, weight=weight, ignore_index=MISSING_CLASS, reduction="none"
            )
            labelled = target != MISSING_CLASS
            if weight is None:
                row_weight = labelled.to(output.dtype)
            else:  # torch's weighted mean: Σ w_y l / Σ w_y over the labelled rows
                row_weight = torch.where(labelled, weight[target.clamp_min(0)], 0.0)
            return per_row.sum(), row_weight.sum()
        labelled = ~torch.isnan(target)
        error = torch.where(labelled, output.squeeze(-1) - target.nan_to_num(), 0.0)
        return error.square().sum(), labelled.to(output.dtype).sum()

    def unmasked_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """:meth:`loss` for a batch whose every row is labelled: the same value in fewer
        kernels (the trainer's path for fully labelled training data)."""
        import torch
        import torch.nn.functional as F

        if self.is_classification:
            weight = None
            if self.class_weights is not None:
                weight = torch.as_tensor(
                    self.class_weights, dtype=output.dtype, device=output.device
                )
            return F.cross_entropy(output, target, weight=weight)
        return F.mse_loss(output.squeeze(-1), target)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean loss over the labelled rows (cross-entropy, or MSE for regression); exactly 0,
        with no gradient, when no row of the batch is labelled."""
        total, weight = self.loss_terms(output, target)
        return total / weight.clamp_min(1e-12)

    def metrics(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Metrics of a whole split's outputs (labelled rows only; NaN where undefined)."""
        from mtl_runner.metrics import compute_metrics

        predictions = self.predictions(output)
        return compute_metrics(self.type, self.num_classes, predictions, target.cpu().numpy())

    def predictions(self, output: torch.Tensor) -> np.ndarray:
        """Class probabilities [n, C] (classification) or values [n] (regression), float64."""
        if self.is_classification:
            return output.double().softmax(-1).cpu().numpy()
        return output.squeeze(-1).double().cpu().numpy()

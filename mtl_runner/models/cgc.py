"""Customized Gate Control (CGC), the single-level form of PLE.

Paper: H. Tang, J. Liu, M. Zhao, X. Gong, "Progressive Layered Extraction (PLE): A Novel
Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020,
https://dl.acm.org/doi/10.1145/3383313.3412236.
Model: S shared expert MLPs and T task-specific expert MLPs per task, all on the input x; task
k's gate g_k(x) = softmax(W_k x) mixes the S shared experts and task k's own T experts, and
task k's tower reads the mixture: y_k = h_k(Σ_e g_k,e(x) · [shared experts, task-k experts]_e).
Shared: every expert (``encode``): the shared experts and also the task-specific ones, which are
parameters of ``encode``; their Jacobian columns are nonzero only in their own task's row, so
the parameter-level Jacobian stays exact. z = [shared experts' outputs | task 1's experts' |
... | task K's], each block [B, n·d] flattened, d the last width of ``expert_sizes``. Task k's
parameters are its gate (which reads the batch's ``features``) and its tower.
Grad sources: params — the Jacobian w.r.t. all the experts' parameters; features — ∂L_k/∂z:
task k's row is nonzero on the shared experts' block and on its own experts' block only; the
rows overlap on the shared block (every task reads every shared expert), so it is
meaningful; the task-specific blocks take part in the aggregation as each task's own
coordinates (e.g. MGDA's min-norm point weighs them with the rest).
Sizes: ``shared_experts`` (2, at least 1: with none the tasks share nothing);
``task_experts`` (1 per task; 0 makes CGC an MMoE with ``shared_experts`` experts);
``expert_sizes`` ([32]) and ``tower_sizes`` ([16]) as in MMoE.
Differences: the paper's experts and towers are unspecified MLPs and its gates softmax(W x) on
the input without a bias, as here (DeepCTR's PLE with one level, which also allows gate
MLPs). CGC is ``model=ple`` with ``levels=1``, and is built as exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence

from mtl_runner.models.ple import PLE
from mtl_runner.tasks import Task


class CGC(PLE):
    """PLE with one extraction level: the task gates read the input x itself."""

    def __init__(
        self,
        in_features: int,
        tasks: Sequence[Task],
        shared_experts: int = 2,
        task_experts: int = 1,
        expert_sizes: Sequence[int] = (32,),
        tower_sizes: Sequence[int] = (16,),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(
            in_features,
            tasks,
            levels=1,
            shared_experts=shared_experts,
            task_experts=task_experts,
            expert_sizes=expert_sizes,
            tower_sizes=tower_sizes,
            activation=activation,
            dropout=dropout,
        )

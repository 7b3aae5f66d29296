"""Random loss weighting (RLW).

Paper: B. Lin, F. Ye, Y. Zhang, I. W. Tsang, "Reasonable Effectiveness of Random Weighting: A
Litmus Test for Multi-Task Learning", TMLR 2022, https://arxiv.org/abs/2111.10603
(Algorithm 2 with the standard normal distribution).
Weight: c = softmax(z) with z ~ N(0, I_K) drawn afresh at every optimizer step, and
L_total = Σ_k c_k L_k with c detached. The weights are positive and sum to 1; ``weight/<task>``
is their epoch mean (1/K in expectation).
Hyperparameters: none. (The paper also tries other sampling distributions; the standard normal
with a softmax is the one LibMTL and torchjd implement, and the only one here.)
State: none. The draws come from torch's global generator of the losses' device (seeded by the
trainer and saved in checkpoints), so a run is reproducible on the same device; CPU and CUDA
runs draw different weights.
Grad sources: n/a (loss-based: L_total is backpropagated once; heads get c_k ∇_head L_k).
Other implementations: LibMTL's ``RLW`` draws the same softmax(N(0, I)) on the CPU generator;
torchjd's ``Random`` scalarizer draws on the losses' device and dtype, as here (identical draws
for float32 losses).
"""

from __future__ import annotations

import torch

from mtl_runner.weighting.base import LossWeighting


class RLW(LossWeighting):
    permutation_invariant = False  # random: a permuted step draws other weights

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        draws = torch.randn(self.num_tasks, device=losses.device)
        return torch.softmax(draws, dim=0).to(losses.dtype)

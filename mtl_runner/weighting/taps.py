"""The shared representation z, tapped once per task: how a method sees each ∂L_k/∂z.

A gradient-based method needs the K gradients ∂L_k/∂z separately, but an ordinary backward adds
them up where the heads meet z. :class:`TaskTaps` gives each task's head its own tap of z (the
same values) and joins the K taps again in one autograd node. In the backward that node receives
all K gradients at once and hands them to a *route*, which returns the one gradient the trunk
receives. The default route is their sum, i.e. the ordinary backward, so taps change nothing until
a method sets a route. The Jacobian, the method's solve and the trunk's backward then happen
inside one backward pass: one traversal of the graph, which is what keeps a feature-level method's
step close to an equal-weighting step.

Autograd also stops at a tap when asked for gradients *with respect to* the taps
(``torch.autograd.grad(loss, taps)``): the parameter-level path reads ∂L_k/∂z that way and then
takes the trunk's vector-Jacobian products itself. It never routes, so its taps
(``routed=False``) are plain views of z, without the node: a Python autograd node costs about 2%
of such a step on the reference model (benchmarks/gradient_methods.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

#: turns the K gradients ∂(Σ_j L_j)/∂tap_k = ∂L_k/∂z (task order) into the trunk's gradient of z
Route = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]


class _Router:
    """The route of one step's taps (None: the sum). Held by the autograd node, not the taps,
    so the taps are not kept alive by their own graph."""

    route: Route | None = None


class _Join(torch.autograd.Function):
    """Forward: K views of z. Backward: the K incoming gradients → the router's route."""

    @staticmethod
    def forward(ctx, router: _Router, shared: torch.Tensor, count: int):  # type: ignore[override]
        ctx.router = router  # gradients are materialised: an unused tap (absent task) sends zeros
        return tuple(shared.view_as(shared) for _ in range(count))

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):  # type: ignore[override]
        route = ctx.router.route
        trunk_grad = torch.stack(grads).sum(0) if route is None else route(grads)
        return None, trunk_grad, None


class TaskTaps(dict[str, torch.Tensor]):
    """z once per task (task name → tap), for the heads; see the module docstring.

    A plain dict of the taps (read it, do not change it: the method's route expects one tap per
    task, in task order) that also knows its route.
    """

    def __init__(
        self, shared: torch.Tensor, task_names: Sequence[str], routed: bool = True
    ) -> None:
        if routed:
            router: _Router | None = _Router()
            super().__init__(zip(task_names, _Join.apply(router, shared, len(task_names))))
        else:  # only points where autograd.grad stops: an ordinary backward adds them up
            router = None
            super().__init__((name, shared.view_as(shared)) for name in task_names)
        self._router = router

    def route_gradients(self, route: Route | None) -> None:
        """What the trunk receives in the next backward through the taps (None: the sum)."""
        if self._router is None:
            raise RuntimeError("these taps were made with routed=False: they cannot route")
        self._router.route = route

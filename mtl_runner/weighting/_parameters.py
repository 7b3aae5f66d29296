"""Learnable parameters of weighting methods (UW, IMTL, GradNorm): device and checkpoints."""

from __future__ import annotations

import torch


def follow_device(parameter: torch.nn.Parameter, like: torch.Tensor) -> torch.nn.Parameter:
    """Move a learnable parameter onto ``like``'s device, keeping the same Parameter object.

    The trainer builds its optimizer (which holds this object) before the first step and the
    optimizer creates its state on the first step, so moving the data in place at the first call
    keeps both valid.
    """
    if parameter.device != like.device:
        parameter.data = parameter.data.to(like.device)
    return parameter


def load_parameter(parameter: torch.nn.Parameter, value: object) -> None:
    """Restore a learnable parameter in place (the optimizer keeps referring to it)."""
    value = torch.as_tensor(value)
    if value.shape != parameter.shape:
        raise ValueError(
            f"saved weighting state has shape {tuple(value.shape)}, expected "
            f"{tuple(parameter.shape)}"
        )
    with torch.no_grad():
        parameter.copy_(value.to(parameter.device, parameter.dtype))

"""Turn the ``device`` config group into a torch device and an autocast dtype."""

from __future__ import annotations

from typing import Any

import torch

from mtl_runner.errors import ConfigError, DeviceError
from mtl_runner.schema import DeviceType, Precision

_AUTOCAST_DTYPES = {Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def resolve_device(cfg: Any) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without CUDA stops with one clear line."""
    kind = DeviceType(cfg.type)
    index = 0 if cfg.index is None else int(cfg.index)
    if kind is DeviceType.cpu or (kind is DeviceType.auto and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device=cuda was requested but CUDA is not available here (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda}): use device=cpu or device=auto"
        )
    count = torch.cuda.device_count()
    if not 0 <= index < count:
        raise DeviceError(
            f"device.index={index} is not available: this machine has {count} CUDA device(s), "
            f"indices 0..{count - 1}"
        )
    return torch.device("cuda", index)


def autocast_dtype(cfg: Any, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype, or None for full fp32."""
    precision = Precision(cfg.precision)
    if precision is Precision.fp32:
        return None
    if device.type != "cuda":
        raise ConfigError(
            f"device.precision={precision.value} needs CUDA but the run is on {device}: "
            "use device.precision=fp32"
        )
    if precision is Precision.bf16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            f"device.precision=bf16 is not supported by {torch.cuda.get_device_name(device)}"
        )
    return _AUTOCAST_DTYPES[precision]

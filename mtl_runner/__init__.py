"""mtl-runner: multi-task loss weighting as a reproducible Hydra experiment."""

__version__ = "0.1.0"

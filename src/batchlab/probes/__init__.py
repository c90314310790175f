"""Probes: what is measured during and after training, as functions of stacked parameters."""
from .geometry import geometry, is_weight
from .metrics import evaluate, per_run_loss

__all__ = ["geometry", "is_weight", "evaluate", "per_run_loss"]

"""What the engine needs to know about an architecture, declared by the model class instead of matched by name."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelTraits:
    """A model class declares these as `TRAITS`; a module without them (any nn.Module) gets the defaults.

    The activation factors scale the engine's memory estimates, which are written for an MLP of the run's
    widths: `step_activations` for a training step (runs_that_fit sizes a group's chunks by it) and
    `eval_activations` for an evaluation (the probes' chunks shrink by it).
    """

    images: bool = False  # takes images [N, 1, 28, 28] (else flat examples [N, features])
    folds: bool = False  # the folded SGD step (engine/fold.py) writes out its forward and backward passes
    step_activations: int = 1
    eval_activations: int = 1


def traits_of(model) -> ModelTraits:
    """The traits a model class (or an instance of one) declares, else the defaults."""
    return getattr(model, "TRAITS", ModelTraits())

"""What the engine needs to know about an architecture, declared by the model class instead of matched by name."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


@torch.no_grad()
def activation_elements(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Elements of every tensor that any submodule outputs on the examples `x`, per example: a conservative
    count of one example's activations (what a backward pass keeps is at most about this), measured on a
    model the engine knows nothing else about (the user's). The module is left in the mode it was in."""
    total = [0]

    def count(_module, _inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel()

    was_training = model.training
    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return max(1, -(-total[0] // max(1, x.shape[0])))

"""Models: each an ordinary nn.Module, and a `Stack` of independent copies for lock-step training."""

from __future__ import annotations

from torch import nn

from .cnn import CNN
from .init import INITS, init_module
from .linear import LinearRegression
from .mlp import ACTIVATIONS, MLP
from .stack import Stack, init_params
from .traits import ModelTraits, activation_elements, traits_of

# RunSpec.model -> its class (build_model constructs it)
MODEL_CLASSES: dict[str, type[nn.Module]] = {"mlp": MLP, "cnn": CNN, "cnn-bn": CNN, "linear": LinearRegression}
MODELS = tuple(MODEL_CLASSES)


def model_traits(name: str) -> ModelTraits:
    """What the engine needs to know about the named architecture (see ModelTraits); a model given by reference
    ("package.module:factory", the user's) has the defaults: no fold, the generic stacked path."""
    if ":" in name:
        return ModelTraits()
    return traits_of(MODEL_CLASSES[name])


def build_model(
    name: str,
    *,
    input_dim: int = 784,
    num_outputs: int = 10,
    widths: tuple[int, ...] = (1024, 1024),
    activation: str = "relu",
    bias: bool = True,
) -> nn.Module:
    """An uninitialised-by-us template of the named architecture (init comes from `init_module`)."""
    if name == "mlp":
        return MLP((input_dim, *widths, num_outputs), activation)
    if name in ("cnn", "cnn-bn"):
        return CNN(batchnorm=name == "cnn-bn", num_classes=num_outputs)
    if name == "linear":
        return LinearRegression(input_dim, num_outputs, bias=bias)
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


__all__ = [
    "MLP",
    "CNN",
    "LinearRegression",
    "Stack",
    "build_model",
    "init_module",
    "init_params",
    "ModelTraits",
    "model_traits",
    "traits_of",
    "activation_elements",
    "MODELS",
    "INITS",
    "ACTIVATIONS",
]

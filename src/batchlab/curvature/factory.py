"""`batchlab sharpness --model ... [--data ...] [--loss ...]`: the model, loss and data to measure.

- no `--model`: batchlab's quick MLP (784-256-256-10, Glorot init from the seed) on MNIST's training images;
- `--model pkg.mod:factory` returning `(model, loss_fn, data)`, as `batchlab noise-scale --model` takes it;
- `--model pkg.mod:factory` returning an `nn.Module` (as the studies take it: built under `torch.manual_seed(seed)`,
  `--model-arg k=v`) with `--data pkg.mod:factory` (its training split: `(x_train, y_train, x_test, y_test)` tensors
  or `(train, test)` Datasets) and `--loss pkg.mod:fn`, or the studies' loss: cross-entropy for integer targets,
  mean squared error for float ones.

The references are imported by `batchlab.references` (the one importer of user code); every problem is a
ValueError of one line naming the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError, one_line
from ..noise.factory import check_factory_result
from ..noise.measure import Data
from ..references import check_fit, kind_of, load_data, load_loss, load_reference

BUILTIN_WIDTHS = (784, 256, 256, 10)  # the quick profile's MLP
CHECK_EXAMPLES = 4


def load_setup(
    model: str | None = None,
    model_args: dict | None = None,
    data: str | None = None,
    data_args: dict | None = None,
    loss: str | None = None,
    seed: int = 0,
) -> tuple[nn.Module, Callable, Data, str]:
    """(model, loss_fn, data, a description) for `sharpness`, from references (see the module)."""
    if model is None:
        if data is not None or loss is not None or model_args:
            raise ValueError("--data, --loss and --model-arg need a model given by reference (--model pkg.mod:factory)")
        return _builtin(seed)
    try:
        factory = load_reference(model, "model")
    except UsageError as e:
        raise ValueError(str(e)) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        try:
            built = factory(**(model_args or {}))
        except Exception as exc:
            raise ValueError(f"model factory {model!r} raised {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(built, nn.Module):
        if data is not None or loss is not None:
            raise ValueError(f"model factory {model!r} returns its own data and loss ({kind_of(built)}): drop --data "
                             "and --loss, or make it return an nn.Module")  # fmt: skip
        net, loss_fn, examples = check_factory_result(model, built)
        return net, loss_fn, examples, f"{model} (its own loss and data)"
    if data is None:
        raise ValueError(f"model factory {model!r} returns an nn.Module: give its data with --data pkg.mod:factory")
    try:
        x, y, _, _ = load_data(data, data_args or {})
        loss_fn = load_loss(loss) if loss is not None else _auto_loss(y)
        with torch.no_grad():
            out = built(x[:CHECK_EXAMPLES])
        check_fit(model, loss or "auto", out, y[:CHECK_EXAMPLES], None if loss is None else loss_fn)
    except UsageError as e:
        raise ValueError(str(e)) from None
    return built, loss_fn, (x, y), f"{model} on {data}'s training split"


def _auto_loss(y: torch.Tensor) -> Callable:
    """The studies' loss for these targets: cross-entropy over the last dimension, or mean squared error."""
    if y.is_floating_point():
        return lambda out, target: F.mse_loss(out, target.reshape(out.shape).to(out.dtype))
    return lambda out, target: F.cross_entropy(out.flatten(0, -2), target.flatten())


def _builtin(seed: int) -> tuple[nn.Module, Callable, Data, str]:
    from ..datasets import load_dataset
    from ..models import MLP, init_params

    net = MLP(BUILTIN_WIDTHS)
    net.load_state_dict(init_params(net, "glorot", seed))
    mnist = load_dataset("mnist")
    widths = "-".join(map(str, BUILTIN_WIDTHS))
    return (
        net,
        F.cross_entropy,
        (mnist.x_train, mnist.y_train),
        f"the built-in {widths} MLP at its seed-{seed} init, MNIST",
    )

"""Device-resident data for a run, and each run's own data order.

Data is loaded once per process and device and kept there; batches are gathered on the device by
index (airbench style), so there is no DataLoader and no host work inside the step loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .. import references
from ..datasets import Dataset, load_dataset
from ..errors import UsageError
from ..models import build_model, model_traits
from ..probes import per_run_loss
from ..probes.metrics import square_loss
from .spec import RunSpec


def data_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The permutation of the n training examples that run `seed` uses in `epoch` (CPU, int64).

    A pure function of (seed, epoch): a run's batches never depend on its group, and training can
    resume at any epoch.
    """
    state = np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, dtype=np.uint64)
    g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
    return torch.randperm(n, generator=g)


def compute_dtype(precision: str) -> torch.dtype:
    return torch.float64 if precision == "float64" else torch.float32


@functools.lru_cache(maxsize=8)
def _load(name, device, dtype, train_subset, test_subset, normalize, flatten, data_dir, regression) -> Dataset:
    n, d, noise, seed = regression
    return load_dataset(
        name,
        device=device,
        dtype=dtype,
        train_subset=train_subset,
        test_subset=test_subset,
        normalize=normalize,
        flatten=flatten,
        data_dir=data_dir,
        seed=seed,
        n=n,
        d=d,
        noise=noise,
    )


def template_model(spec: RunSpec, data: Dataset) -> nn.Module:
    """The run's architecture sized to its data, as a template (the engine initialises the weights; a user's
    model is its factory's module built under the run's seed)."""
    if spec.user_model:
        return references.build_model(spec.model, spec.model_args, spec.seed)
    return build_model(
        spec.model,
        input_dim=data.input_dim,
        num_outputs=data.num_classes or 1,
        widths=spec.widths,
        activation=spec.activation,
        bias=spec.bias,
    )


def load_for(spec: RunSpec, device: torch.device, data_dir: str | None = None) -> Dataset:
    """The dataset a run trains on, on `device`, in the run's compute dtype (cached per process)."""
    if references.is_reference(spec.dataset):
        return _load_user(
            spec.dataset,
            json.dumps(spec.dataset_args, sort_keys=True),
            spec.code_version,
            str(device),
            compute_dtype(spec.precision),
            spec.train_subset,
            spec.test_subset,
        )
    flatten = not model_traits(spec.model).images
    return _load(
        spec.dataset,
        str(device),
        compute_dtype(spec.precision),
        spec.train_subset,
        spec.test_subset,
        spec.normalize,
        flatten,
        data_dir,
        tuple(spec.regression),
    )


@functools.lru_cache(maxsize=8)
def _load_user(ref, args_json, code_version, device, dtype, train_subset, test_subset) -> Dataset:
    """A user's dataset: its factory's tensors as they are (neither flattened nor standardised), float inputs and
    targets in the compute dtype, integer ones (token ids, class labels) as int64. Integer targets make a
    classification task, float targets a regression. `code_version` is only part of the cache's key."""
    x_train, y_train, x_test, y_test = references.load_data(ref, json.loads(args_json))

    def first(t: torch.Tensor, k: int | None, name: str) -> torch.Tensor:
        if k is not None and k > t.shape[0]:
            raise UsageError(f"dataset {ref!r}: {name}_subset {k} exceeds its {t.shape[0]} {name} examples")
        return t if k is None else t[:k]

    def to(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        t = t.to(dtype) if t.is_floating_point() else t.long()
        return t.to(device).contiguous()

    x_train, y_train = (to(first(t, train_subset, "train")) for t in (x_train, y_train))
    x_test, y_test = (to(first(t, test_subset, "test")) for t in (x_test, y_test))
    classification = not y_train.is_floating_point()
    num_classes = int(max(y_train.max(), y_test.max())) + 1 if classification else None
    return Dataset(
        name=ref,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=num_classes,
        task="classification" if classification else "regression",
    )


def loss_for(spec: RunSpec) -> Callable | None:
    """The run's loss function (fn(output, target) -> mean loss): the user's, the built-in square loss, or None
    for "auto"."""
    if spec.loss == "square":
        return square_loss
    return None if spec.loss == "auto" else references.load_loss(spec.loss)


def check_run(spec: RunSpec, device: torch.device, data_dir: str | None = None, examples: int = 2) -> None:
    """Before anything is trained or written: the run's data loads, its model builds, and the model's output on
    a couple of training examples fits the targets under its loss (and gives a gradient). A UsageError (one
    line, naming the reference) otherwise. Built-in models on built-in data need no such check."""
    if not (spec.user_model or references.is_reference(spec.dataset) or references.is_reference(spec.loss)):
        return
    refs = {"model": spec.model, "dataset": spec.dataset, "loss": spec.loss}
    now = references.source_hash(refs)
    if spec.code_version != now:  # planned against other sources (edited since, or a copied spec's version)
        raise UsageError(
            f"run {spec.key}: code_version {spec.code_version[:12] or '(none)'} is not that of the sources of "
            f"{', '.join(r for r in refs.values() if references.is_reference(r))} now ({now[:12]}); "
            "make the spec anew (leave code_version out) so that its key follows the code"
        )
    data = load_for(spec, device, data_dir)
    largest = max([spec.batch_size, *(b for _, b in spec.batch_switch)])
    if largest > data.n_train:
        raise UsageError(f"batch size {largest} exceeds the {data.n_train} training examples of {spec.dataset!r}")
    model = template_model(spec, data).to(device)
    if spec.precision == "float64":
        model = model.double()
    x, y = data.x_train[:examples], data.y_train[:examples]
    name = spec.model
    try:
        out = model.train()(x)
    except references.USER_ERRORS as exc:
        raise UsageError(
            f"model {name!r} on {list(x.shape)} inputs of dataset {spec.dataset!r} raised {references.error_text(exc)}"
        ) from None
    references.check_fit(name, spec.loss, out, y, loss_for(spec))
    if spec.user_model:  # the generic path runs it stacked: two copies under vmap, with the gradient
        check_stacked(spec, model, x, y, loss_for(spec), data.task)


def check_stacked(spec: RunSpec, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, task: str) -> None:
    """The model runs as the generic path runs it: two stacked copies under `vmap(functional_call)`, in training
    mode, and gives every parameter's gradient. A model that draws random numbers in its forward pass (dropout)
    cannot: each run would have to own its draws, independent of its group (a run's result never depends on
    which runs share its group), which vmap does not give."""
    from ..models import Stack

    stack = Stack.from_modules([model, model], x.device, next(model.parameters()).dtype)
    for p in stack.params.values():
        p.requires_grad_(True)
    try:
        out = stack.forward(torch.stack([x, x]))
        losses = per_run_loss(out, torch.stack([y, y]), task, "mean", loss_fn)
        torch.autograd.grad(losses.sum(), list(stack.params.values()), allow_unused=True)
    except references.USER_ERRORS as exc:
        text = " ".join(str(exc).split())
        if "randomness" in text:
            raise UsageError(
                f"model {spec.model!r} draws random numbers in its forward pass (dropout?), which the stacked runs "
                "cannot each own: set its dropout to 0 (model_args) or make it deterministic"
            ) from None
        raise UsageError(
            f"model {spec.model!r} does not run stacked (torch.func.vmap over functional_call): "
            f"{type(exc).__name__}: {text[:300]}"
        ) from None

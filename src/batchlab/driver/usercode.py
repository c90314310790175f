"""The user's code named by a study's config (--model, --data, --loss), checked at prepare before anything is
written: each reference imported and called once, on the CPU, with its arguments; what it returns checked
(an `nn.Module`; four tensors or two Datasets of matching lengths); a few training examples put through the
model and the loss. Every problem is one line naming the reference (UsageError).

Importing the user's module runs it: that is the point of a reference, and the docs say so.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import UsageError, one_line
from ..studies import Study
from ..studies.common import StudyConfig, is_reference

OPTION = {"model": "--model", "dataset": "--data", "loss": "--loss"}
PROBE_EXAMPLES = 4  # training examples put through the model and the loss


USER_KEYS = ("model", "dataset", "loss", "model_args", "dataset_args")


def check_accepts(study: Study, overrides: dict[str, Any]) -> None:
    """Refuse user code (a reference or factory arguments among the overrides) for a study that declares it
    cannot take it: its reason, one line (before its config is even validated: it may have no such keys)."""
    given = [k for k in USER_KEYS if k in overrides and (is_reference(overrides[k]) or k.endswith("_args"))]
    if given and study.accepts_user_model is not None:
        named = ", ".join(f"{OPTION.get(k, '--set ' + k)} {overrides[k]}" for k in given if k in OPTION)
        raise UsageError(
            f"{study.name} does not take a user model or data ({named or ', '.join(given)}): {study.accepts_user_model}"
        )


def resolve(ref: str, what: str) -> Callable:
    """The callable a reference names, imported with the current directory on sys.path (batchlab.references)."""
    try:
        load = importlib.import_module("batchlab.references").load_reference
    except ModuleNotFoundError:  # before the engine's references.py: the same rule, here
        load = _load_reference
    try:
        obj = load(ref, what)
    except UsageError as e:
        raise UsageError(_named(ref, what, str(e))) from None
    if not callable(obj):
        raise UsageError(f"{OPTION[what]} {ref}: not callable (it is {_kind(obj)})")
    return obj


def _load_reference(ref: str, what: str) -> Any:
    module_name, _, attr = ref.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UsageError(f"{OPTION[what]} {ref}: no module named {e.name!r} (searched {cwd} and sys.path)") from None
    except Exception as e:
        raise UsageError(f"{OPTION[what]} {ref}: importing {module_name} raised {type(e).__name__}: {one_line(e)}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{OPTION[what]} {ref}: module {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _named(ref: str, what: str, message: str) -> str:
    """A message that names the option and the reference once."""
    message = one_line(message)
    return message if ref in message else f"{OPTION[what]} {ref}: {message}"


def _call(ref: str, what: str, fn: Callable, kwargs: dict[str, Any]) -> Any:
    try:
        return fn(**kwargs)
    except Exception as e:  # the user's code raising: its exception in one line
        args = f" with {', '.join(f'{k}={v!r}' for k, v in kwargs.items())}" if kwargs else ""
        raise UsageError(f"{OPTION[what]} {ref}: calling it{args} raised {type(e).__name__}: {one_line(e)}") from None


def _kind(obj: Any) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return "None" if obj is None else f"a {type(obj).__name__}"


def load_data(cfg: StudyConfig) -> tuple[torch.Tensor, torch.Tensor, int]:
    """A user dataset's first training examples (x, y) and its number of training examples."""
    ref = cfg.dataset
    result = _call(ref, "dataset", resolve(ref, "dataset"), cfg.dataset_args)
    expected = "must return (x_train, y_train, x_test, y_test) tensors or (train, test) Datasets"
    if isinstance(result, (tuple, list)) and len(result) == 4:
        if not all(isinstance(t, torch.Tensor) for t in result):
            kinds = ", ".join(_kind(t) for t in result)
            raise UsageError(f"--data {ref}: {expected}; got a {type(result).__name__} of {kinds}")
        for split, (x, y) in (("train", result[:2]), ("test", result[2:])):
            if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
                raise UsageError(
                    f"--data {ref}: x_{split} has {_length(x)} examples but y_{split} {_length(y)}; they must match"
                )
            if len(x) == 0:
                raise UsageError(f"--data {ref}: the {split} split is empty")
        x, y = result[0], result[1]
        return x[:PROBE_EXAMPLES], y[:PROBE_EXAMPLES], len(x)
    if isinstance(result, (tuple, list)) and len(result) == 2:
        for split, ds in zip(("train", "test"), result):
            if not (isinstance(ds, torch.utils.data.Dataset) and hasattr(ds, "__len__")):
                raise UsageError(f"--data {ref}: {expected}; its {split} part is {_kind(ds)}, not a sized Dataset")
            if len(ds) == 0:
                raise UsageError(f"--data {ref}: the {split} Dataset is empty")
        train = result[0]
        try:
            items = [train[i] for i in range(min(PROBE_EXAMPLES, len(train)))]
            x = torch.stack([torch.as_tensor(item[0]) for item in items])
            y = torch.stack([torch.as_tensor(item[1]) for item in items])
        except Exception as e:
            raise UsageError(
                f"--data {ref}: its train Dataset's items must be (x, y) pairs of tensors; reading them raised "
                f"{type(e).__name__}: {one_line(e)}"
            ) from None
        return x, y, len(train)
    raise UsageError(f"--data {ref}: {expected}; got {_kind(result)}")


def _length(t: torch.Tensor) -> str:
    return "no" if t.ndim == 0 else str(len(t))


def load_model(cfg: StudyConfig) -> nn.Module:
    ref = cfg.model
    net = _call(ref, "model", resolve(ref, "model"), cfg.model_args)
    if not isinstance(net, nn.Module):
        raise UsageError(f"--model {ref}: must return a torch.nn.Module; got {_kind(net)}")
    return net


def check_fit(cfg: StudyConfig, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The model's output on a few training examples fits the loss (auto: CE for integer targets, MSE for float)."""
    ref = cfg.model
    try:
        out = net(x.float() if x.is_floating_point() else x)
    except Exception as e:
        shape = "x".join(map(str, x.shape))
        raise UsageError(
            f"--model {ref}: its forward pass on a batch of the data ({shape}) raised {type(e).__name__}: {one_line(e)}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise UsageError(f"--model {ref}: its forward pass must return a tensor; got {_kind(out)}")
    got = "x".join(map(str, out.shape))
    if is_reference(cfg.loss):
        fn = resolve(cfg.loss, "loss")
        try:
            value = fn(out, y)
        except Exception as e:
            raise UsageError(
                f"--loss {cfg.loss}: on the model's output ({got}) and the targets raised {type(e).__name__}: "
                f"{one_line(e)}"
            ) from None
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise UsageError(f"--loss {cfg.loss}: must return the mean loss as a 1-element tensor; got {_kind(value)}")
        return
    if y.is_floating_point():
        if out.shape != y.shape:
            want = "x".join(map(str, y.shape))
            raise UsageError(
                f"--model {ref}: its output ({got}) does not fit the float targets ({want}) of mean squared error; "
                "the shapes must be equal (or give --loss package.module:fn)"
            )
        return
    classes = int(y.max()) + 1
    if out.ndim != 2 or out.shape[0] != len(y) or y.ndim != 1:
        raise UsageError(
            f"--model {ref}: its output ({got}) does not fit cross-entropy on integer targets: it must be "
            f"[batch, classes] for targets [batch] (or give --loss package.module:fn)"
        )
    if out.shape[1] < classes:
        raise UsageError(
            f"--model {ref}: its output has {out.shape[1]} classes but the targets reach class {classes - 1}"
        )


def check_user_code(cfg: StudyConfig) -> int | None:
    """Import and call the user's code a config names (once, on the CPU); the user dataset's training examples
    (None for a built-in dataset). Raises UsageError with one line naming the reference and the problem."""
    if not cfg.user_code:
        return None
    if is_reference(cfg.dataset) and not is_reference(cfg.model):
        raise UsageError(
            f"--data {cfg.dataset} needs a model given as a reference too (--model package.module:factory): "
            f"the built-in {cfg.model} takes the built-in datasets' images"
        )
    if is_reference(cfg.loss) and not is_reference(cfg.model):
        raise UsageError(f"--loss {cfg.loss} needs a model given as a reference (--model package.module:factory)")
    data = load_data(cfg) if is_reference(cfg.dataset) else None
    net = load_model(cfg)
    if data is not None:
        with torch.no_grad():
            check_fit(cfg, net, data[0], data[1])
    elif is_reference(cfg.loss):
        resolve(cfg.loss, "loss")
    return None if data is None else data[2]

"""`batchlab noise-scale --model package.module:function`: import and call the user's factory, checking
what it returns, with errors that say what to fix."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..errors import UsageError
from ..references import error_text, kind_of, load_reference
from .measure import Data


def load_factory(spec: str) -> tuple[nn.Module, Callable, Data]:
    """Import and call a factory named "package.module:function" (or "path/to/file.py:function").

    The function takes no arguments and returns `(model, loss_fn, data)` as `noise_scale` takes them. A
    dotted module is searched on sys.path with the current folder first, so from the repository root
    "examples.noise_scale_mlp:factory" works under the `batchlab` command as well as `python -m`.
    Raises ValueError for a malformed spec, a module or attribute that cannot be found, or a wrong
    return value; errors raised inside the factory itself propagate unchanged, but exit() becomes a ValueError.
    """
    if not isinstance(spec, str):
        raise ValueError(f"factory spec must be a string 'package.module:function' (got {type(spec).__name__})")
    try:  # the one importer of user references (batchlab.references); this API's errors are ValueErrors
        factory = load_reference(spec, "factory")
    except UsageError as e:
        raise ValueError(str(e)) from None
    try:
        result = factory()
    except SystemExit as e:  # exit() in the factory must not end the caller (the CLI, silently, with its code)
        raise ValueError(f"factory {spec!r} {error_text(e)}") from None
    return check_factory_result(spec, result)


def check_factory_result(spec: str, result) -> tuple[nn.Module, Callable, Data]:
    """`result` if it is `(model, loss_fn, data)` as `noise_scale` takes them, else a ValueError naming `spec`."""
    expected = "must return (model, loss_fn, data) with data as (x, y) tensors or a DataLoader"
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise ValueError(f"factory {spec!r} {expected}; got {kind_of(result)}")
    model, loss_fn, data = result
    if not isinstance(model, nn.Module):
        raise ValueError(f"factory {spec!r} {expected}; its model is {kind_of(model)}, not a torch.nn.Module")
    if not callable(loss_fn):
        raise ValueError(f"factory {spec!r} {expected}; its loss_fn is {kind_of(loss_fn)}, not callable")
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
            raise ValueError(f"factory {spec!r} {expected}; its data is {kind_of(data)}")
    elif not isinstance(data, Iterable):
        raise ValueError(f"factory {spec!r} {expected}; its data is {kind_of(data)}")
    return model, loss_fn, data

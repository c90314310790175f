"""`batchlab noise-scale --model package.module:function`: import and call the user's factory, checking
what it returns, with errors that say what to fix."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from .measure import Data


def load_factory(spec: str) -> tuple[nn.Module, Callable, Data]:
    """Import and call a factory named "package.module:function" (or "path/to/file.py:function").

    The function takes no arguments and returns `(model, loss_fn, data)` as `noise_scale` takes them. A
    dotted module is searched on sys.path with the current folder first, so from the repository root
    "examples.noise_scale_mlp:factory" works under the `batchlab` command as well as `python -m`.
    Raises ValueError for a malformed spec, a module or attribute that cannot be found, or a wrong
    return value; errors raised inside the factory itself propagate unchanged.
    """
    if not isinstance(spec, str):
        raise ValueError(f"factory spec must be a string 'package.module:function' (got {type(spec).__name__})")
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr:
        raise ValueError(f"factory spec {spec!r} must look like 'package.module:function'")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise ValueError(f"factory spec {spec!r}: {attr!r} is not a Python name")
    module = _import_file(where, spec) if where.endswith(".py") or os.sep in where or "/" in where else None
    if module is None:
        if not all(part.isidentifier() for part in where.split(".")):
            raise ValueError(f"factory spec {spec!r}: {where!r} is not a dotted module name")
        module = _import_module(where, spec)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"factory spec {spec!r}: module {module.__name__!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"factory spec {spec!r}: {attr!r} is not callable (its type is {type(obj).__name__})")
    result = obj()
    expected = "must return (model, loss_fn, data) with data as (x, y) tensors or a DataLoader"
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise ValueError(f"factory {spec!r} {expected}; got {_kind(result)}")
    model, loss_fn, data = result
    if not isinstance(model, nn.Module):
        raise ValueError(f"factory {spec!r} {expected}; its model is {_kind(model)}, not a torch.nn.Module")
    if not callable(loss_fn):
        raise ValueError(f"factory {spec!r} {expected}; its loss_fn is {_kind(loss_fn)}, not callable")
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(t, torch.Tensor) for t in data):
            raise ValueError(f"factory {spec!r} {expected}; its data is {_kind(data)}")
    elif not isinstance(data, Iterable):
        raise ValueError(f"factory {spec!r} {expected}; its data is {_kind(data)}")
    return model, loss_fn, data


def _import_module(name: str, spec: str):
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise ValueError(
                f"factory spec {spec!r}: no module named {exc.name!r} (searched the current folder {cwd} and "
                "sys.path); run from the folder that contains it, or give a file: path/to/file.py:function"
            ) from exc
        raise ValueError(f"factory spec {spec!r}: importing {name!r} failed: {exc}") from exc
    except Exception as exc:
        raise ValueError(f"factory spec {spec!r}: importing {name!r} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(where: str, spec: str):
    path = Path(where)
    if not path.is_file():
        raise ValueError(f"factory spec {spec!r}: no file {str(path)!r}")
    name = f"_batchlab_factory_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"factory spec {spec!r}: {str(path)!r} is not a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ValueError(f"factory spec {spec!r}: importing {str(path)!r} failed: {type(exc).__name__}: {exc}") from exc
    return module


def _kind(obj) -> str:
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return "None" if obj is None else f"a {type(obj).__name__}"

"""The user's own code, named by reference: "package.module:factory" (or "path/to/file.py:factory").

A `RunSpec` names its model, dataset and loss either by a built-in name or by such a reference; the engine
imports it here, in whatever process trains the run (a Ray worker imports the same reference by name), calls
it and checks what it returns. Importing a module runs its code: a reference is trusted like any script the
user runs. Every failure is a `UsageError` whose message is one line naming the reference and the problem
(the CLI prints it and exits with code 2).

- `is_reference(s)`: whether a string is a reference (has a ":"), not a built-in name.
- `load_reference(ref, what)`: the callable it names (`what`: "model", "dataset" or "loss", for messages).
- `source_hash(refs)`: SHA-256 of the source files of the modules the references name (`RunSpec.code_version`),
  so an edited model, dataset or loss never reuses stale results.
- `build_model(ref, args)`, `load_data(ref, args)`, `check_fit(...)`: call a factory and check its result.
- `user_frame(exc)`: where the user's code raised an exception that escaped later, during training.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .errors import UsageError, one_line

WHATS = ("model", "dataset", "loss")
# what the user's code may raise, and is reported in one line: exit() in a factory (SystemExit) too, which would
# otherwise end batchlab silently with the factory's exit code
USER_ERRORS = (Exception, SystemExit)


def error_text(exc: BaseException) -> str:
    """An exception of the user's code for a message: "ValueError: no weights file", or what exit() did."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: it called exit({exc.code!r}) instead of returning"
    return f"{type(exc).__name__}: {one_line(exc)}"


# Python's own library, torch's and batchlab's: frames from these files are not the user's
_NOT_USERS = tuple(
    str(Path(p).resolve()) + os.sep
    for p in {
        *(sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")),
        Path(torch.__file__).parent,
        Path(__file__).parent,
    }
)


def user_frame(exc: BaseException) -> str | None:
    """ "file.py:line" of the innermost frame of `exc`'s traceback in the user's code (any file but Python's own
    library, torch's and batchlab's), or None when it passed through none: then it is batchlab's own failure, shown
    whole. The start-up checks call every factory once; a model can still raise later, at a shape or a step it
    had not met then, or call exit() in its forward."""
    tb, where = exc.__traceback__, None
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if not name.startswith("<") and not str(Path(name).resolve()).startswith(_NOT_USERS):
            where = f"{name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def is_reference(s) -> bool:
    """A reference "package.module:factory" (or "file.py:factory"), as opposed to a built-in name."""
    return isinstance(s, str) and ":" in s


def _split(ref: str, what: str) -> tuple[str, str, bool]:
    """(module or file, attribute path, is_file) of a well-formed reference, else a UsageError."""
    where, sep, attr = ref.rpartition(":")
    shape = f"{what} reference {ref!r} must look like 'package.module:factory' (or 'path/to/file.py:factory')"
    if not sep or not where or not attr:
        raise UsageError(shape)
    if not all(part.isidentifier() for part in attr.split(".")):
        raise UsageError(f"{shape}: {attr!r} is not a Python name")
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    if not is_file and not all(part.isidentifier() for part in where.split(".")):
        raise UsageError(f"{shape}: {where!r} is not a dotted module name")
    return where, attr, is_file


def check_syntax(ref: str, what: str) -> None:
    """Raise a UsageError when `ref` is not a well-formed reference (nothing is imported)."""
    _split(ref, what)


def _with_cwd():
    """The current folder on sys.path (first), so that "examples.model:factory" works from a checkout's root under
    the `batchlab` command as well as `python -m`; returns a function that undoes it."""
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        return lambda: None
    sys.path.insert(0, cwd)
    return lambda: sys.path.remove(cwd) if cwd in sys.path else None


def _import(ref: str, what: str):
    where, attr, is_file = _split(ref, what)
    if is_file:
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"{what} reference {ref!r}: no file {str(path)!r}")
        name = "_batchlab_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12] + "_" + path.stem
        if name in sys.modules:
            return sys.modules[name], attr
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"{what} reference {ref!r}: {str(path)!r} is not a Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except USER_ERRORS as exc:
            del sys.modules[name]
            raise UsageError(f"{what} reference {ref!r}: importing {str(path)!r} failed: {error_text(exc)}") from None
        return module, attr
    undo = _with_cwd()
    try:
        return importlib.import_module(where), attr
    except ModuleNotFoundError as exc:
        if exc.name and (where == exc.name or where.startswith(exc.name + ".")):
            raise UsageError(
                f"{what} reference {ref!r}: no module named {exc.name!r} (searched the current folder and sys.path)"
            ) from None
        raise UsageError(f"{what} reference {ref!r}: importing {where!r} failed: {one_line(exc)}") from None
    except USER_ERRORS as exc:
        raise UsageError(f"{what} reference {ref!r}: importing {where!r} failed: {error_text(exc)}") from None
    finally:
        undo()


def load_reference(ref: str, what: str) -> Callable:
    """The callable `ref` names, imported (which runs the module's code); a UsageError when it cannot be."""
    module, attr = _import(ref, what)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{what} reference {ref!r}: module {module.__name__!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{what} reference {ref!r}: {attr!r} is not callable (it is {kind_of(obj)})")
    return obj


def source_file(ref: str, what: str) -> Path:
    """The source file of the module a reference names, found without running it (its parent packages are
    imported, as Python does to find a submodule)."""
    where, _, is_file = _split(ref, what)
    if is_file:
        path = Path(where)
        if not path.is_file():
            raise UsageError(f"{what} reference {ref!r}: no file {str(path)!r}")
        return path
    module = sys.modules.get(where)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        undo = _with_cwd()
        try:
            found = importlib.util.find_spec(where)
        except ModuleNotFoundError as exc:
            raise UsageError(f"{what} reference {ref!r}: no module named {exc.name!r}") from None
        except USER_ERRORS as exc:
            raise UsageError(f"{what} reference {ref!r}: finding {where!r} failed: {error_text(exc)}") from None
        finally:
            undo()
        if found is None:
            raise UsageError(
                f"{what} reference {ref!r}: no module named {where!r} (searched the current folder and sys.path)"
            )
        origin = found.origin
    if not origin or not os.path.isfile(origin):
        raise UsageError(f"{what} reference {ref!r}: module {where!r} has no source file to hash")
    return Path(origin)


_HASHES: dict[tuple[str, int, int], str] = {}


def _file_hash(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _HASHES:
        _HASHES[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _HASHES[key]


def source_hash(refs: dict[str, str]) -> str:
    """SHA-256 over the source files of the modules that the references name ({what: reference}); "" for none.

    The hash covers each referenced module's own file (not the modules it imports)."""
    h = hashlib.sha256()
    found = False
    for what, ref in sorted(refs.items()):
        if is_reference(ref):
            found = True
            h.update(f"{what}={ref}\0".encode())
            h.update(_file_hash(source_file(ref, what)).encode())
    return h.hexdigest() if found else ""


# --- calling factories and checking what they return ---------------------------------------------------------


def _call(ref: str, what: str, args: dict):
    factory = load_reference(ref, what)
    try:
        return factory(**args)
    except USER_ERRORS as exc:
        raise UsageError(f"{what} factory {ref!r} raised {error_text(exc)}") from None


def build_model(ref: str, args: dict, seed: int | None = None) -> nn.Module:
    """The module `ref(**args)` builds; with `seed`, built under `torch.manual_seed(seed)` (the global RNG is
    restored afterwards), so that a run's initialisation is the factory's own, drawn from the run's seed."""
    if seed is None:
        model = _call(ref, "model", args)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = _call(ref, "model", args)
    if not isinstance(model, nn.Module):
        raise UsageError(f"model factory {ref!r} must return a torch.nn.Module; got {kind_of(model)}")
    if not any(True for _ in model.parameters()):
        raise UsageError(f"model factory {ref!r} returned a module without parameters (nothing to train)")
    return model


def load_loss(ref: str) -> Callable:
    """The loss function `ref` names: fn(output, target) -> the mean loss over the batch's examples."""
    return load_reference(ref, "loss")


def load_data(ref: str, args: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test) from a factory returning those four tensors or (train, test) Datasets
    (each materialised to tensors once, example by example: `dataset[i]` -> (x, y))."""
    out = _call(ref, "dataset", args)
    expected = "must return (x_train, y_train, x_test, y_test) tensors or (train_dataset, test_dataset)"
    if not isinstance(out, (tuple, list)) or len(out) not in (2, 4):
        raise UsageError(f"dataset factory {ref!r} {expected}; got {kind_of(out)}")
    if len(out) == 2:
        out = (*_materialise(ref, out[0], "train"), *_materialise(ref, out[1], "test"))
    names = ("x_train", "y_train", "x_test", "y_test")
    tensors = []
    for name, t in zip(names, out):
        if not isinstance(t, torch.Tensor):
            try:
                import numpy as np

                if isinstance(t, np.ndarray):
                    t = torch.from_numpy(t)
            except ImportError:  # pragma: no cover
                pass
        if not isinstance(t, torch.Tensor):
            raise UsageError(f"dataset factory {ref!r} {expected}; its {name} is {kind_of(t)}")
        if t.dim() == 0 or t.shape[0] == 0:
            raise UsageError(f"dataset factory {ref!r}: {name} has no examples (shape {list(t.shape)})")
        tensors.append(t)
    x_train, y_train, x_test, y_test = tensors
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.shape[0] != y.shape[0]:
            raise UsageError(
                f"dataset factory {ref!r}: x_{split} has {x.shape[0]} examples but y_{split} has {y.shape[0]}"
            )
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UsageError(
            f"dataset factory {ref!r}: train examples are {list(x_train.shape[1:])}, test examples "
            f"{list(x_test.shape[1:])}"
        )
    for name, y in (("y_train", y_train), ("y_test", y_test)):
        if y.dtype == torch.bool or y.is_complex():
            raise UsageError(f"dataset factory {ref!r}: {name} must be integer class labels or float targets")
    if y_train.is_floating_point() != y_test.is_floating_point():
        raise UsageError(f"dataset factory {ref!r}: y_train and y_test must both be integer labels or both floats")
    return x_train, y_train, x_test, y_test


def _materialise(ref: str, dataset, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise UsageError(f"dataset factory {ref!r}: its {split} dataset is {kind_of(dataset)}, not a torch Dataset")
    xs, ys = [], []
    try:
        for i in range(len(dataset)):
            item = dataset[i]
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise UsageError(
                    f"dataset factory {ref!r}: {split} dataset item {i} is {kind_of(item)}, not a pair (x, y)"
                )
            xs.append(torch.as_tensor(item[0]))
            ys.append(torch.as_tensor(item[1]))
        if not xs:
            raise UsageError(f"dataset factory {ref!r}: its {split} dataset is empty")
        return torch.stack(xs), torch.stack(ys)
    except UsageError:
        raise
    except USER_ERRORS as exc:
        raise UsageError(f"dataset factory {ref!r}: reading its {split} dataset failed: {error_text(exc)}") from None


def check_fit(
    model_name: str, loss_name: str, out: torch.Tensor, y: torch.Tensor, loss_fn: Callable | None
) -> torch.Tensor:
    """Whether a model's output `out` on a few examples fits their targets `y` under the loss; returns the loss.

    The "auto" loss (loss_fn None): integer targets [B, ...] need logits [B, ..., C] with C above every label;
    float targets need as many values per example as the output."""
    where = f"model {model_name!r} on dataset examples"
    if not isinstance(out, torch.Tensor):
        raise UsageError(f"{where}: the model returns {kind_of(out)}, not a tensor")
    if loss_fn is None:
        if not y.is_floating_point():
            if not out.is_floating_point() or out.dim() != y.dim() + 1 or out.shape[:-1] != y.shape:
                raise UsageError(
                    f"{where}: output {list(out.shape)} does not fit integer targets {list(y.shape)} "
                    f"(cross-entropy needs logits [{', '.join(map(str, y.shape))}, classes])"
                )
            if int(y.min()) < 0 or int(y.max()) >= out.shape[-1]:
                raise UsageError(
                    f"{where}: labels {int(y.min())}..{int(y.max())} do not fit the {out.shape[-1]} classes of the "
                    "output (cross-entropy needs labels in 0..classes-1)"
                )
        elif out.shape != y.shape and (out.shape[0] != y.shape[0] or out[0].numel() != y[0].numel()):
            raise UsageError(
                f"{where}: output {list(out.shape)} does not fit float targets {list(y.shape)} "
                "(mean squared error needs as many outputs per example as targets)"
            )
        return torch.zeros(())
    try:
        value = loss_fn(out, y)
    except USER_ERRORS as exc:
        raise UsageError(
            f"loss {loss_name!r} on model {model_name!r}'s output {list(out.shape)} and targets {list(y.shape)} "
            f"raised {error_text(exc)}"
        ) from None
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise UsageError(
            f"loss {loss_name!r} must return the mean loss over the examples (one number); got {kind_of(value)}"
        )
    if not value.requires_grad:
        raise UsageError(f"loss {loss_name!r}: its value does not depend on the model's output (no gradient)")
    return value


def kind_of(obj) -> str:
    """What a value is, for an error message: "a tuple of 2", "a tensor of shape [8, 3]", "None"."""
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {list(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"a {type(obj).__name__} of {len(obj)}"
    return "None" if obj is None else f"a {type(obj).__name__}"

"""The user's code named by a study's config (--model, --data, --loss), checked at prepare before anything is
written: a study that cannot take it refuses it; otherwise each reference is imported and called once, on the
CPU, with its arguments (`batchlab.references`: the same code the engine trains with), what it returns is
checked, and a few training examples go through the model and the loss. Every problem is one line naming the
reference (UsageError).

Importing the user's module runs it: that is the point of a reference, and the docs say so.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UsageError, one_line
from ..references import USER_ERRORS, build_model, check_fit, error_text, is_reference, load_data, load_loss
from ..studies import Study
from ..studies.common import StudyConfig

OPTION = {"model": "--model", "dataset": "--data", "loss": "--loss"}
USER_KEYS = ("model", "dataset", "loss", "model_args", "dataset_args")
PROBE_EXAMPLES = 4  # training examples put through the model and the loss


def check_accepts(study: Study, overrides: dict[str, Any]) -> None:
    """Refuse user code (a reference or factory arguments among the overrides) for a study that declares it
    cannot take it: its reason, one line (before its config is validated: its config may have no such keys)."""
    given = [k for k in USER_KEYS if k in overrides and (is_reference(overrides[k]) or k.endswith("_args"))]
    if given and study.accepts_user_model is not None:
        named = ", ".join(f"{OPTION[k]} {overrides[k]}" for k in given if k in OPTION) or ", ".join(given)
        raise UsageError(f"{study.name} does not take a user model or data ({named}): {study.accepts_user_model}")


def _named(option: str, e: UsageError) -> UsageError:
    """The option before the message (which names the reference already)."""
    return UsageError(f"{option}: {one_line(e)}")


def check_user_code(cfg: StudyConfig) -> int | None:
    """Import and call the user's code a config names (once, on the CPU); the number of training examples of a
    user dataset (None for a built-in one). Raises UsageError: one line naming the reference and the problem."""
    if not getattr(cfg, "user_code", None):  # a study config without the user-code keys (equivalence...) has none
        return None
    if is_reference(cfg.dataset) and not is_reference(cfg.model):
        raise UsageError(
            f"--data {cfg.dataset} needs a model given by reference too (--model package.module:factory): "
            f"the built-in {cfg.model} is made for the built-in datasets' images"
        )
    if is_reference(cfg.loss) and not is_reference(cfg.model):
        raise UsageError(f"--loss {cfg.loss} needs a model given by reference (--model package.module:factory)")
    data = None
    if is_reference(cfg.dataset):
        try:
            data = load_data(cfg.dataset, cfg.dataset_args)
        except UsageError as e:
            raise _named("--data", e) from None
    try:
        net = build_model(cfg.model, cfg.model_args, seed=0)
    except UsageError as e:
        raise _named("--model", e) from None
    loss_fn = None
    if is_reference(cfg.loss):
        try:
            loss_fn = load_loss(cfg.loss)
        except UsageError as e:
            raise _named("--loss", e) from None
    if data is None:
        return None
    x, y = data[0][:PROBE_EXAMPLES], data[1][:PROBE_EXAMPLES]
    try:
        out = net(x.float() if x.is_floating_point() else x)
    except USER_ERRORS as e:
        raise UsageError(
            f"--model {cfg.model}: its forward pass on {len(x)} examples of --data {cfg.dataset} "
            f"({list(x.shape)}) raised {error_text(e)}"
        ) from None
    try:
        check_fit(cfg.model, cfg.loss, out, y, loss_fn)
    except UsageError as e:
        raise _named("--loss" if loss_fn is not None else "--model", e) from None
    labels = torch.cat([data[1].flatten(), data[3].flatten()])
    if loss_fn is None and not labels.is_floating_point() and int(labels.max()) >= out.shape[-1]:
        raise UsageError(
            f"--model {cfg.model}: labels 0..{int(labels.max())} of --data {cfg.dataset} do not fit the "
            f"{out.shape[-1]} outputs per example (cross-entropy needs labels in 0..classes-1)"
        )
    return int(data[0].shape[0])

"""A study's configuration from what the user typed: `--set key=value` parsed, overrides coerced to the
config's field types, the config validated and its plan built, every problem one clear line (UsageError)."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Callable
from typing import Any

import pydantic

from ..engine.spec import RunSpec, TaskSpec, WorkSpec
from ..errors import UsageError, one_line
from ..report.overrides import overridden_values
from ..studies import Results, Study, get_study
from ..studies.common import StudyConfig, check_fits, is_reference, rounding_tasks
from ..tasks import validate_task
from .usercode import check_accepts, check_user_code


def parse_value(raw: str) -> Any:
    """A `--set` value: JSON if it parses (numbers, true, null, [1,2]), a comma list, else the string."""
    raw = raw.strip()
    if raw in ("None", "none"):
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if "," in raw:
            return [parse_value(part) for part in raw.split(",")]
        return raw


def shown(value: Any, limit: int = 40) -> str:
    """repr(value), cut to `limit` characters: a message never echoes a 5000-digit number whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}... ({len(text)} characters)"


def parse_sets(pairs: list[str], option: str = "--set") -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, eq, raw = pair.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"{option} {shown(pair)}: expected key=value, e.g. {option} lr=0.1")
        try:
            out[key.strip()] = parse_value(raw)
        except ValueError:  # an integer of more than 4300 digits (Python's int() limit)
            raise UsageError(f"invalid value for {key.strip()}: a number too long to be one ({shown(raw)})") from None
    return out


def _is_sequence_type(annotation: Any) -> bool:
    """Whether a field's annotation is a tuple/list (or an optional one)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence_type(a) for a in typing.get_args(annotation) if a is not type(None))
    return annotation in (tuple, list) or origin in (tuple, list)


def coerce_overrides(config_cls: type[StudyConfig], overrides: dict[str, Any]) -> dict[str, Any]:
    """A bare value for a tuple field becomes a 1-tuple: `--set widths=32` means widths=(32,); and an empty one
    the empty list, so that `--set widths=` is refused as empty rather than as a list holding ''."""
    out = dict(overrides)
    for key, value in overrides.items():
        field = config_cls.model_fields.get(key)
        if value == "" and field is not None and _is_sequence_type(field.annotation):
            out[key] = ()
        elif (
            field is not None
            and value is not None
            and not isinstance(value, (list, tuple, dict))
            and _is_sequence_type(field.annotation)
        ):
            out[key] = (value,)
    return out


def _validation_message(e: pydantic.ValidationError, where: str, given: dict[str, Any] | None = None) -> str:
    err = e.errors()[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    value = err.get("input")
    if given and len(err["loc"]) == 1 and err["loc"][0] in given:
        value = given[err["loc"][0]]  # what the user typed, not its coerced form
    got = f" (got {shown(value)})" if "input" in err and not isinstance(value, (dict, pydantic.BaseModel)) else ""
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    msg = one_line(err["msg"]).removeprefix("Value error, ")
    if where == "config":
        return f"invalid value for {loc}: {msg}{got}{more}" if loc else f"invalid config: {msg}{more}"
    # the study's config validated but a run it plans does not: name the run's field
    if not loc:
        return f"invalid config: {msg}{more}"
    return f"invalid config: a planned run has an invalid {loc}: {msg}{got}{more}"


def make_config(
    study: Study, profile: str, overrides: dict[str, Any], *, user_code: bool = False
) -> tuple[StudyConfig, list[WorkSpec]]:
    """The validated study config and its plan; any problem becomes one clear line (UsageError).

    A study that cannot take a user model refuses one; with `user_code` (at prepare) the user's model, data and
    loss are imported, called and checked, and the plan's batch sizes checked against the user's data."""
    if profile not in study.profiles:
        raise UsageError(f"unknown profile {profile!r} for {study.name}; choose one of {', '.join(study.profiles)}")
    check_accepts(study, overrides)
    fields = list(study.Config.model_fields)
    unknown = [k for k in overrides if k not in study.Config.model_fields]
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"unknown key {unknown[0]!r} for study {study.name}{hint}; valid keys: {', '.join(fields)}")
    if is_reference(overrides.get("dataset")):  # a profile's subsets are of MNIST: the user's data is used whole
        overrides = {k: None for k in ("train_subset", "test_subset") if k in study.profiles[profile]} | overrides
    try:
        cfg = study.config(profile, coerce_overrides(study.Config, overrides))
    except pydantic.ValidationError as e:
        raise UsageError(_validation_message(e, "config", overrides)) from None
    n_train = check_user_code(cfg) if user_code else None
    try:
        specs = study_units(study, cfg)
    except pydantic.ValidationError as e:
        raise UsageError(_validation_message(e, "plan")) from None
    except ValueError as e:
        raise UsageError(f"invalid config: {one_line(e)}") from None
    for spec in specs:
        if isinstance(spec, TaskSpec):
            try:
                validate_task(spec)
            except pydantic.ValidationError as e:
                raise UsageError(_validation_message(e, "plan")) from None
            except ValueError as e:
                raise UsageError(f"invalid config: {one_line(e)}") from None
    if n_train is not None:
        check_drawn(specs, n_train, cfg.dataset)
        try:
            cfg.check_size(cfg.train_subset or n_train, f"training examples of --data {cfg.dataset}")
        except ValueError as e:
            raise UsageError(f"invalid config: {e}") from None
    return cfg, specs


def check_drawn(specs: list[WorkSpec], n_train: int, dataset: str) -> None:
    """Batch sizes and subsets within a user dataset's training examples (known only once it is loaded)."""
    for spec in specs:
        run = spec.start.run if isinstance(spec, TaskSpec) and spec.start is not None else spec
        if not isinstance(run, RunSpec):
            continue
        sizes = {"batch size": [run.batch_size, *(b for _, b in run.batch_switch)], "train_subset": run.train_subset}
        try:
            check_fits(sizes, n_train, f"training examples of --data {dataset}")
        except ValueError as e:
            raise UsageError(f"invalid config: {e}") from None


def study_units(study: Study, cfg: StudyConfig) -> list[WorkSpec]:
    """The study's plan, and the rounding check's reruns when the config asks for them."""
    units = study.plan(cfg)
    if getattr(cfg, "rounding_check", False):
        units = [*units, *rounding_tasks(units)]
    return units


def staged_units(
    study: Study, cfg: StudyConfig, units: list[WorkSpec], read: Callable[[list[WorkSpec]], Results]
) -> list[WorkSpec]:
    """`units` and the follow-ups the study names from their stored results (`read(units)`), again and again
    until it names nothing new: the whole plan of a staged study once its stages are stored (see
    `Study.follow_up`). Unique by key, in the order they were named."""
    known = {u.key for u in units}
    while True:
        extra = [u for u in study.follow_up(cfg, read(units)) if u.key not in known]
        extra = list({u.key: u for u in extra}.values())
        if not extra:
            return units
        units = [*units, *extra]
        known |= {u.key for u in extra}


def lookup(name: str) -> Study:
    try:
        return get_study(name)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def config_overrides(study: Study, profile: str, cfg: StudyConfig) -> dict[str, Any]:
    """The keys of `cfg` whose values differ from the profile's (JSON values, sorted by key)."""
    return overridden_values(cfg.model_dump(mode="json"), study.config(profile).model_dump(mode="json"))

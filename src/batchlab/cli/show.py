"""`batchlab show STUDY`: a study's title, description, defining file, profiles, config keys and claims."""

from __future__ import annotations

import types
import typing
from pathlib import Path

from rich.text import Text

from ..report.overrides import format_set_value
from ..studies import study_file
from .display import out_console


def print_study(name: str) -> None:
    """A study's title, description, the file that defines it, profiles, a table of its config keys (type,
    default, quick value, help) and its claims.

    One line per key (key, type, default, quick-profile value; a quick value that differs from the default
    in bold) and its help text indented below it, so that the table stays readable in an 80-column terminal.
    """
    from rich.padding import Padding

    from ..driver import lookup

    study = lookup(name)
    quick = study.config("quick") if "quick" in study.profiles else None
    out_console.print(Text(f"{study.name}: {study.title}", style="bold"), highlight=False)
    out_console.print(study.description, highlight=False, markup=False)
    out_console.print(f"defined in {source_file(study)}", highlight=False, markup=False, soft_wrap=True)
    out_console.print(
        f"profiles: {'; '.join(_profile_summary(study, p) for p in study.profiles)}", highlight=False, markup=False
    )
    out_console.print(user_model_line(study), highlight=False, markup=False, soft_wrap=True)
    header = ("key", "type", "default", *(["quick"] if quick is not None else []))
    rows = []
    for key, field in study.Config.model_fields.items():
        cells = [key, _type_name(field.annotation), format_set_value(field.get_default(call_default_factory=True))]
        if quick is not None:
            cells.append(format_set_value(getattr(quick, key)))
        rows.append((cells, field.description or ""))
    widths = [max(len(c[i]) for c in [header, *(cells for cells, _ in rows)]) for i in range(len(header))]

    def line(cells, styles) -> Text:
        text = Text()
        for i, (cell, width, style) in enumerate(zip(cells, widths, styles)):
            text.append(cell if i == len(cells) - 1 else cell.ljust(width + 2), style=style)
        return text

    out_console.print()
    out_console.print(line(header, ["bold"] * len(header)), highlight=False)
    for cells, help_text in rows:
        styles = ["bold", "", "", *(["bold" if cells[-1] != cells[2] else ""] if quick is not None else [])]
        out_console.print(line(cells, styles), highlight=False, overflow="ignore", crop=False)
        if help_text:
            out_console.print(Padding(Text(help_text, style="dim"), (0, 0, 0, 4), expand=False), highlight=False)
    out_console.print()
    out_console.print(Text("claims" if study.claims else "claims: none (a measurement)", style="bold"), highlight=False)
    for claim in study.claims:  # declared as data: nothing is analysed to list them
        out_console.print(f"  {claim.id}  {claim.statement}", highlight=False, markup=False, soft_wrap=True)
    out_console.print()
    out_console.print(
        f"change a key: batchlab run {study.name} --set key=value (a list: --set key=a,b)",
        highlight=False,
        markup=False,
    )


def user_model_line(study) -> str:
    """Whether the study runs on the user's own model and data, and if not, why."""
    if study.accepts_user_model is None:
        return (
            f"user model: accepted (batchlab run {study.name} --model package.module:factory "
            "--data package.module:factory; see docs/user-models.md)"
        )
    return f"user model: not accepted: {study.accepts_user_model}"


def source_file(study) -> str:
    """The file that defines a study, as a reader finds it: from the repository root in a checkout
    (`src/batchlab/studies/...`), else from the directory the package is installed in (`batchlab/studies/...`)."""
    path = study_file(study.name).resolve()
    root = Path(__file__).resolve().parents[2]  # the directory holding the batchlab package
    if root.name == "src":
        root = root.parent
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _profile_summary(study, profile: str) -> str:
    overrides = study.profiles[profile]
    if profile == "quick":
        return "quick (the default of `run`; its values are in the quick column)"
    if not overrides:
        return f"{profile} (the defaults)"
    return f"{profile} (the defaults, with {', '.join(f'{k}={format_set_value(v)}' for k, v in overrides.items())})"


def _type_name(annotation) -> str:
    """A field's type in words: 'int', 'int or none', 'list of int', 'mnist | fashion-mnist', 'float,float'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return ",".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))

"""The `batchlab` command: list, show, run, report, reproduce, export, bench, explore, noise-scale.

`run` and `reproduce` compute in this process (`--executor local`) or as Ray tasks (`--executor ray`,
batchlab.ray_executor): every GPU or CPU of this machine, or a Ray cluster.

Bad input (an unknown study, profile or key, an invalid value, an unwritable --out, a missing
device, a report with no results) prints one line on stderr and exits with code 2, before anything
is written. Interrupting (Ctrl-C) exits with 130; every finished run is already in the store, the runs
in training keep their finished epochs, and the same command resumes.
"""

from __future__ import annotations

import contextlib
import sys
import time
import types
import typing
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from .datasets import DataError
from .errors import UsageError
from .executor import LocalExecutor
from .ray_executor import UnitsFailed
from .report.variants import set_value
from .runner import Monitor
from .timing import clock

try:  # typer >= 0.2x vendors click; older typer uses click itself
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException, NoArgsIsHelpError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="batchlab: how batch size, learning rate and optimizer shape training.",
)
console = Console(stderr=True)  # progress and notes
out_console = Console()  # results

OUT = typer.Option(Path("batchlab-results"), "--out", help="Results directory (SQLite store, figures, reports).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N")
DATA_DIR = typer.Option(None, "--data-dir", help="Where to look first for dataset files (like $BATCHLAB_DATA).")
PROFILE = typer.Option("quick", "--profile", help="quick (CPU miniature) | full (the published protocol, for a GPU)")
EXECUTOR = typer.Option(
    "local",
    "--executor",
    help="local (this process, one device) | ray (one Ray task per work unit: every GPU or CPU of this machine, "
    "or a Ray cluster; needs Ray, the optional extra 'ray' of batchlab)",
)
RAY_ADDRESS = typer.Option(
    None,
    "--ray-address",
    help="With --executor ray: an existing cluster, auto or ray://HOST:10001 (default: start Ray here).",
)
GPUS_PER_UNIT = typer.Option(
    None,
    "--gpus-per-unit",
    min=0,
    help="With --executor ray: GPUs each work unit asks for (default: 1 when the cluster has GPUs, else 0; "
    "0.5: two units share one).",
)
CPUS_PER_UNIT = typer.Option(
    None,
    "--cpus-per-unit",
    min=1,
    help="With --executor ray: CPUs (and torch threads) each work unit asks for (default 1).",
)

DRY_RUN = typer.Option(
    False,
    "--dry-run",
    help="Validate, then print what would be computed (runs and tasks, what the store has, an estimated time); "
    "write nothing.",
)

VERDICT_STYLE = {"supported": "green", "not supported": "red", "inconclusive": "yellow"}


def error(message: str) -> None:
    """One line on stderr, never wrapped, no markup interpretation."""
    text = " ".join(str(message).split())
    label = "\x1b[1;31merror:\x1b[0m" if sys.stderr.isatty() else "error:"
    sys.stderr.write(f"{label} {text}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    console.print(message, highlight=False, markup=False, soft_wrap=True)


def live_bar(extra, unit: str) -> Progress:
    """A started rich bar: description, bar, [extra column], done/total `unit`; below it, the status line."""
    columns = [TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), *([extra] if extra else [])]
    bar = StatusProgress(*columns, MofNCompleteColumn(), TextColumn(unit), console=console, transient=False)
    bar.start()
    return bar


class StatusProgress(Progress):
    """A rich bar with a status line under each task: 'elapsed 0:01:02 · left ~0:03:10' (each time labelled
    before it, so neither reads as the other), then the task's `status` field (the metrics in training).
    Two lines, so that the bar still fits an 80-column terminal."""

    def get_renderables(self):
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            elapsed = task.finished_time if task.finished else task.elapsed
            status = task.fields.get("status", "")
            line = f"  {clocks(elapsed, task.time_remaining)}" + (f" · {status}" if status else "")
            yield Text(line, "progress.elapsed")


def clocks(elapsed: float | None, left: float | None) -> str:
    """'elapsed 0:01:02 · left ~0:03:10' ('left ?' until a rate is known)."""
    return f"elapsed {clock(elapsed or 0)} · left " + ("?" if left is None else f"~{clock(left)}")


def describe_metrics(values: dict[str, dict]) -> str:
    """The latest evaluation of the runs in training, as their mean: 'mean of 4 runs: train loss 0.312 · test
    acc 97.2%' (test loss where there is no accuracy; runs whose values are not finite are left out)."""
    accuracy = any("test_acc" in v for v in values.values())
    names = [("train_loss", "train loss"), ("test_acc", "test acc") if accuracy else ("test_loss", "test loss")]
    parts, counted = [], 0
    for name, label in names:
        xs = [v[name] for v in values.values() if isinstance(v.get(name), (int, float))]
        if xs:
            mean = sum(xs) / len(xs)
            parts.append(f"{label} {100 * mean:.1f}%" if name.endswith("acc") else f"{label} {mean:.3g}")
            counted = max(counted, len(xs))
    if not parts:
        return ""
    runs = f"{counted} runs" if counted == len(values) else f"{counted} of {len(values)} runs"
    return f"mean of {runs}: " + " · ".join(parts)


class TrainingProgress(Monitor):
    """Progress of one study's training: runs saved, run-epochs done (advancing inside an epoch, a few
    times a second), elapsed and time left, and the mean metrics of the runs in training at their latest
    evaluation.

    On a terminal, a live rich progress bar. Elsewhere (CI logs, pipes) a live bar would either
    spam or print nothing until the end, so it writes a plain line at the start, at each quarter of
    the run-epochs, and at the end.
    """

    def __init__(self, live: bool | None = None):
        self.live = console.is_terminal and not console.is_dumb_terminal if live is None else live
        self.bar: Progress | None = None
        self.task = None
        self.study, self.total, self.done, self.runs, self.saved_runs, self.planned_runs = "", 0, 0, 0, 0, 0
        self.current = 0.0  # run-epochs done inside the epoch in progress
        self.metrics_text = ""
        self.kept_state: tuple[int, int, int] | None = None  # (runs, epoch, epochs) kept at an interrupt
        self.t0 = time.perf_counter()
        self.next_quarter = 1

    def start(self, study: str, runs: int, pending: int, run_epochs: int) -> None:
        self.study, self.total, self.runs, self.planned_runs = study, run_epochs, pending, runs
        self.t0 = time.perf_counter()
        if pending == 0:
            note(
                f"{study}: all {runs} runs are in the store, nothing to train"
                if runs
                else f"{study}: no training runs in its plan, nothing to train"
            )
            return
        reused = f", {runs - pending} already in the store" if runs > pending else ""
        if not self.live:
            note(f"{study}: training {pending} runs ({run_epochs} run-epochs){reused}")
            return
        self.bar = live_bar(TextColumn("{task.fields[saved]}/{task.fields[runs]} runs"), "run-epochs")
        self.task = self.bar.add_task(study, total=max(run_epochs, 1), saved=0, runs=pending, status="")

    def resumed(self, runs: int, epoch: int, epochs: int) -> None:
        note(f"  {runs} runs continue after epoch {epoch} of {epochs}, kept when they were interrupted")

    def epoch(self, runs: int, epochs: int) -> None:
        self.done += runs * epochs
        self.current = 0.0
        self._update()

    def progress(self, runs: int, fraction: float) -> None:
        self.current = runs * fraction
        self._update()

    def metrics(self, epoch: float, step: int, values: dict[str, dict]) -> None:
        self.metrics_text = describe_metrics(values)
        if self.bar is not None:
            self.bar.update(self.task, status=self.metrics_text)

    def _update(self) -> None:
        completed = min(self.done + self.current, self.total)
        if self.bar is not None:
            self.bar.update(self.task, completed=completed)
        elif not self.live and self.total:
            quarter = int(4 * completed // self.total)
            if quarter >= self.next_quarter and quarter < 4:
                self.next_quarter = quarter + 1
                elapsed = time.perf_counter() - self.t0
                left = elapsed * (self.total - completed) / max(completed, 1e-9)
                note(
                    f"  {25 * quarter}% ({int(completed)}/{self.total} run-epochs, {self.saved_runs}/{self.runs} runs "
                    f"saved), {clocks(elapsed, left)}" + (f"; {self.metrics_text}" if self.metrics_text else "")
                )

    def saved(self, runs: int) -> None:
        self.saved_runs += runs
        if self.bar is not None:
            self.bar.update(self.task, saved=self.saved_runs)

    def kept(self, runs: int, epoch: int, epochs: int) -> None:
        self.kept_state = (runs, epoch, epochs)

    def tasks(self, pending: int) -> None:
        self.tasks_total, self.tasks_done = pending, 0
        self.t_tasks = time.perf_counter()
        if not self.live:
            note(f"{self.study}: computing {pending} tasks")
            return
        self.bar = live_bar(None, "tasks")
        self.task = self.bar.add_task(self.study, total=pending)

    def task_done(self) -> None:
        self.tasks_done += 1
        if self.bar is not None:
            self.bar.advance(self.task, 1)
            if self.tasks_done == self.tasks_total:
                self.close()
        elif self.tasks_done == self.tasks_total:
            note(f"  {self.tasks_done}/{self.tasks_total} tasks in {clock(time.perf_counter() - self.t_tasks)}")

    def finish(self) -> None:
        self.close()
        if not self.live and self.runs:
            note(
                f"  100% ({self.done}/{self.total} run-epochs, {self.saved_runs}/{self.runs} runs saved) "
                f"in {clock(time.perf_counter() - self.t0)}" + (f"; {self.metrics_text}" if self.metrics_text else "")
            )

    def summary(self, out) -> str:
        """What an interruption leaves in the store, in words."""
        planned = self.planned_runs
        stored = planned - self.runs + self.saved_runs
        text = f"{self.study or 'the study'}: {stored} of {planned} runs"
        if getattr(self, "tasks_total", 0):
            text += f" and {self.tasks_done} of {self.tasks_total} pending tasks"
        text += f" are in the store in {out}"
        if self.kept_state is not None:
            runs, epoch, epochs = self.kept_state
            text += f", and {runs} more runs keep {epoch} of their {epochs} epochs"
        return text

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_claims(claims) -> None:
    for claim in claims:
        line = Text("  ")
        line.append(claim.id, style="bold")
        line.append(" ")
        line.append(f"[{claim.verdict}]", style=VERDICT_STYLE.get(claim.verdict, ""))
        line.append(f" {claim.statement}")
        out_console.print(line, soft_wrap=True, highlight=False)


# what an interruption left in the store, in words; typer turns Ctrl-C into a bare exit code 130, so
# `_train` leaves it here for `run_cli` to print
interrupted: list[str] = []


def _train(prep, executor=None):
    from .runner import execute

    bar = TrainingProgress()
    try:
        return execute(prep, bar, executor)
    except KeyboardInterrupt:
        interrupted.append(bar.summary(prep.out))
        raise
    finally:
        bar.close()


def make_executor(
    executor: str, ray_address: Optional[str], gpus_per_unit: Optional[float], cpus_per_unit: Optional[int], device: str
):
    """The executor the options ask for; Ray is imported (and its absence reported) here, started later."""
    if executor == "local":
        given = {"--ray-address": ray_address, "--gpus-per-unit": gpus_per_unit, "--cpus-per-unit": cpus_per_unit}
        for option, value in given.items():
            if value is not None:
                raise UsageError(f"{option} needs --executor ray")
        return LocalExecutor()
    if executor != "ray":
        raise UsageError(f"--executor {executor}: choose local or ray")
    from .ray_executor import RayExecutor

    return RayExecutor(ray_address, gpus_per_unit=gpus_per_unit, cpus_per_unit=cpus_per_unit or 1, device=device)


def started(executor):
    """A with-block in which the executor is ready (Ray started or joined), and closed after it."""
    return executor if hasattr(executor, "start") else contextlib.nullcontext(executor)


def print_dry_run(preps) -> None:
    """What `run`/`reproduce` would compute, per study and (several studies) in all; nothing is written."""
    from .preview import describe as describe_plan
    from .preview import dry_run, summary

    plans = []
    for prep in preps:
        plans.append(dry_run(prep))
        for line in describe_plan(plans[-1], prep.out):
            out_console.print(line, highlight=False, markup=False, soft_wrap=True)
    for line in summary(plans, preps[0].out):
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)


def use_data_dir(data_dir: Optional[Path]) -> Optional[str]:
    """--data-dir is searched first (before $BATCHLAB_DATA); it is passed explicitly to every work unit."""
    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir}: not a directory")
    return None if data_dir is None else str(data_dir)


def print_version(value: bool) -> None:
    if value:
        import torch

        from . import __version__

        out_console.print(f"batchlab {__version__} (torch {torch.__version__})", highlight=False, markup=False)
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=print_version, is_eager=True, help="Print the versions of batchlab and torch."
    ),
) -> None:
    """batchlab: how batch size, learning rate and optimizer shape training."""


@app.command()
def show(study: str = typer.Argument(..., help="Study name (see `batchlab list`).")) -> None:
    """Describe a study: its claims, profiles and config keys (type, default, quick value, help)."""
    describe_study(study)


@app.command("list")
def list_studies(
    study: Optional[str] = typer.Argument(None, help="A study: the same as `batchlab show STUDY`."),
) -> None:
    """List the studies and their profiles; with a study name, describe it (as `batchlab show STUDY`)."""
    from .studies import REGISTRY

    if study is not None:
        describe_study(study)
        return
    table = Table("study", "title", "profiles", title="batchlab studies")
    for name, entry in REGISTRY.items():
        table.add_row(name, entry.title, ", ".join(entry.profiles))
    out_console.print(table)


def describe_study(name: str) -> None:
    """A study's title, description, profiles, and a table of its config keys: type, default, quick value, help.

    One line per key (key, type, default, quick-profile value; a quick value that differs from the default
    in bold) and its help text indented below it, so that the table stays readable in an 80-column terminal.
    """
    from rich.padding import Padding

    from .runner import lookup

    study = lookup(name)
    quick = study.config("quick") if "quick" in study.profiles else None
    out_console.print(Text(f"{study.name}: {study.title}", style="bold"), highlight=False)
    out_console.print(study.description, highlight=False, markup=False)
    out_console.print(
        f"profiles: {'; '.join(_profile_summary(study, p) for p in study.profiles)}", highlight=False, markup=False
    )
    header = ("key", "type", "default", *(["quick"] if quick is not None else []))
    rows = []
    for key, field in study.Config.model_fields.items():
        cells = [key, _type_name(field.annotation), set_value(field.get_default(call_default_factory=True))]
        if quick is not None:
            cells.append(set_value(getattr(quick, key)))
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


def _profile_summary(study, profile: str) -> str:
    overrides = study.profiles[profile]
    if profile == "quick":
        return "quick (the default of `run`; its values are in the quick column)"
    if not overrides:
        return f"{profile} (the defaults)"
    return f"{profile} (the defaults, with {', '.join(f'{k}={set_value(v)}' for k, v in overrides.items())})"


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


@app.command()
def run(
    study: str = typer.Argument(..., help="Study name (see `batchlab list`)."),
    profile: str = PROFILE,
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set batch_sizes=64,256 --set lr=0.1"),
    device: str = DEVICE,
    out: Path = OUT,
    data_dir: Optional[Path] = DATA_DIR,
    executor: str = EXECUTOR,
    ray_address: Optional[str] = RAY_ADDRESS,
    gpus_per_unit: Optional[float] = GPUS_PER_UNIT,
    cpus_per_unit: Optional[int] = CPUS_PER_UNIT,
    dry_run: bool = DRY_RUN,
) -> None:
    """Run a study (skipping runs already in the store) and write its report."""
    from .runner import parse_sets, prepare

    ex = make_executor(executor, ray_address, gpus_per_unit, cpus_per_unit, device)
    prep = prepare(
        study, profile=profile, overrides=parse_sets(set_), device=device, out=out, data_dir=use_data_dir(data_dir)
    )
    if dry_run:
        return print_dry_run([prep])
    with started(ex):
        result = _train(prep, ex)
    out_console.print(
        f"{study}: trained {result.trained - result.tasks} runs, "
        + (f"computed {result.tasks} tasks, " if result.tasks else "")
        + f"reused {result.reused} from the store, {result.wall_s:.1f} s",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    print_claims(result.output.claims)
    out_console.print(f"report: {result.report}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def report(
    study: str = typer.Argument(..., help="Study name."),
    out: Path = OUT,
    profile: Optional[str] = typer.Option(None, "--profile", help="Which recorded profile (default: latest)."),
    set_: list[str] = typer.Option(
        [], "--set", help="Which variant: the --set values it was run with (default: none, the plain profile)."
    ),
) -> None:
    """Recompute a study's figures, tables and claims from the store (no training)."""
    from .runner import parse_sets, write_report

    path, output = write_report(study, out, profile=profile, sets=parse_sets(set_))
    print_claims(output.claims)
    out_console.print(f"report: {path}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def reproduce(
    profile: Optional[str] = typer.Option(
        None, "--profile", help="quick | full (default: full on a GPU, quick on a CPU)"
    ),
    device: str = DEVICE,
    out: Path = OUT,
    data_dir: Optional[Path] = DATA_DIR,
    executor: str = EXECUTOR,
    ray_address: Optional[str] = RAY_ADDRESS,
    gpus_per_unit: Optional[float] = GPUS_PER_UNIT,
    cpus_per_unit: Optional[int] = CPUS_PER_UNIT,
    dry_run: bool = DRY_RUN,
) -> None:
    """Run every study of a profile and write index.html with the whole claims table."""
    data_dir = use_data_dir(data_dir)
    from .runner import check_device, prepare, write_reproduction_index
    from .studies import REGISTRY

    ex = make_executor(executor, ray_address, gpus_per_unit, cpus_per_unit, device)
    if dry_run:  # without starting an executor: what this device would compute
        profile = profile or ("full" if check_device(device).type == "cuda" else "quick")
        return print_dry_run([prepare(n, profile=profile, device=device, out=out, data_dir=data_dir) for n in REGISTRY])
    with started(ex):
        if profile is None:  # with Ray: whether the workers' units get GPUs
            gpu = ex.gpus_per_unit > 0 if ex.name == "ray" else check_device(device).type == "cuda"
            profile = "full" if gpu else "quick"
        # validate every study before training any, so bad input stops us before anything is written
        preps = [prepare(name, profile=profile, device=device, out=out, data_dir=data_dir) for name in REGISTRY]
        t0 = time.perf_counter()
        done = []
        for prep in preps:
            began = time.perf_counter()
            result = _train(prep, ex)
            done.append((prep, result, time.perf_counter() - began))  # with the report: what the user waited
        total = time.perf_counter() - t0
    index = write_reproduction_index(out, profile=profile, device=check_device(device), done=done, total_wall_s=total)
    print_claims([c for _, result, _ in done for c in result.output.claims])
    out_console.print(
        f"reproduced {len(done)} studies in {total:.1f} s: {index}", highlight=False, markup=False, soft_wrap=True
    )


@app.command()
def bench(
    device: str = DEVICE,
    quick: bool = typer.Option(False, "--quick", help="A smaller model and data subset (minutes on a CPU)."),
    out: Path = typer.Option(Path("benchmarks") / "results", "--out", help="Where the JSON result goes."),
    studies: Optional[Path] = typer.Option(
        None, "--studies", help="A results directory of full-profile studies: also time P6 against them."
    ),
    table: bool = typer.Option(
        False,
        "--table",
        help="Do not time anything: regenerate the README's performance table from the results in --out.",
    ),
    readme: Path = typer.Option(Path("README.md"), "--readme", help="The README whose table --table updates."),
) -> None:
    """Time the engine against a naive PyTorch loop and the device's floor. Writes a JSON result into --out
    and never edits a README unless asked with --table."""
    from .bench import run_bench, save, update_readme
    from .runner import check_device, check_writable

    if not table:
        dev = check_device(device)
        check_writable(out)
        if studies is not None and not (studies / "batchlab.sqlite").exists():
            raise UsageError(f"--studies {studies}: no batchlab.sqlite there")
        result = run_bench(dev, quick=quick, progress=note, studies_dir=studies)
        out_console.print(f"bench: {save(result, out)}", highlight=False, markup=False, soft_wrap=True)
        return
    if not readme.is_file():
        raise UsageError(f"--readme {readme}: no such file")
    changed = update_readme(readme, out)
    message = f"updated the performance table in {readme}" if changed else f"{readme}: the table is up to date"
    out_console.print(message, highlight=False, markup=False, soft_wrap=True)


@app.command("noise-scale")
def noise_scale_command(
    model: str = typer.Option(
        ...,
        "--model",
        help="package.module:factory (or path/to/file.py:factory): a function returning (model, loss_fn, data), "
        "data being (x, y) tensors or a DataLoader; loss_fn(output, target) with mean reduction.",
    ),
    samples: int = typer.Option(1024, "--samples", min=2, help="Examples the estimate uses."),
    estimator: str = typer.Option("auto", "--estimator", help="auto | per-example | two-batch"),
    device: str = DEVICE,
    seed: int = typer.Option(0, "--seed", help="Seed of the example draw and the bootstrap."),
) -> None:
    """Which batch size for your own model? Its gradient noise scale B_simple (McCandlish et al. 2018)."""
    from .noise import describe, load_factory, noise_scale
    from .runner import check_device

    dev = check_device(device)
    try:
        net, loss_fn, data = load_factory(model)
        result = noise_scale(net, loss_fn, data, samples=samples, estimator=estimator, device=dev, seed=seed)
    except (ValueError, TypeError, ImportError) as e:
        raise UsageError(f"--model {model}: {' '.join(str(e).split())}") from None
    out_console.print(describe(result), highlight=False, markup=False, soft_wrap=True)


@app.command()
def explore(
    out: Path = OUT,
    serve: bool = typer.Option(False, "--serve", help="Then serve the page on 127.0.0.1 until Ctrl-C."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port of --serve (0: any free port)."),
) -> None:
    """Write an interactive explorer page, OUT/explorer/index.html (no network needed); --serve serves it."""
    from .explorer import explore as write_and_serve

    write_and_serve(out, serve=serve, port=port, say=lambda line: print(line, flush=True))


@app.command("export")
def export_command(
    out: Path = OUT,
    study: Optional[str] = typer.Option(None, "--study", help="Only the runs of this study's latest execution."),
    to: Optional[Path] = typer.Option(None, "--to", help="Write the CSV to this file (default: standard output)."),
    tasks: bool = typer.Option(False, "--tasks", help="Also the tasks' scalar results (as metrics at step 0)."),
) -> None:
    """Every stored metric as CSV, one row per run and evaluation (the columns of batchlab.load_metrics)."""
    import sqlite3

    from .files import atomic_write_text
    from .runner import lookup
    from .store import StoreCorruptError, StoreVersionError, load_metrics, metrics_csv

    if study is not None:
        lookup(study)
    if to is not None and to.is_dir():
        raise UsageError(f"--to {to}: is a directory; give a file name, e.g. {to / 'metrics.csv'}")
    try:
        text = metrics_csv(load_metrics(out, study=study, tasks=tasks))
    except (FileNotFoundError, KeyError) as e:
        raise UsageError(e.args[0]) from None
    except (StoreVersionError, StoreCorruptError, sqlite3.Error) as e:
        raise UsageError(f"cannot read the store in {out}: {e}") from None
    if to is None:
        sys.stdout.write(text)
        return
    try:
        atomic_write_text(to, text)
    except OSError as e:
        raise UsageError(f"--to {to}: cannot write it ({e.strerror or e})") from None
    note(f"wrote {text.count(chr(10)) - 1} rows to {to}")


def run_cli(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` (default: sys.argv[1:]) and return the exit code; never exits."""
    interrupted.clear()
    try:
        rv = app(args=argv, standalone_mode=False, prog_name="batchlab")
    except (UsageError, DataError) as e:
        error(str(e))
        return 2
    except UnitsFailed as e:  # some work units failed on Ray workers; the rest is stored
        error(str(e))
        return 1
    except NoArgsIsHelpError as e:
        e.show()
        return 2
    except ClickException as e:  # the parser's own errors: missing argument, unknown option...
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        error(f"{e.format_message()}{hint}")
        return getattr(e, "exit_code", 2) or 2
    except typer.Abort:
        error("aborted")
        return 1
    except typer.Exit as e:
        rv = e.exit_code
    except KeyboardInterrupt:
        rv = 130
    if rv == 130:  # typer turns Ctrl-C into Exit(130)
        saved = interrupted.pop() if interrupted else "every finished run is in the store"
        error(f"interrupted; {saved}: run the same command again to resume")
    return rv if isinstance(rv, int) else 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_cli(argv))


if __name__ == "__main__":
    main()

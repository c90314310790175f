"""The commands of `batchlab` (a typer app) and `run_cli`, which turns every error into one line and an exit code."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..datasets import DataError
from ..driver.checks import store_hint
from ..errors import UsageError, one_line, os_error_line
from ..executors import LocalExecutor, UnitsFailed
from ..interrupts import exit_with, stop_once_on_ctrl_c
from .display import TrainingProgress, error, note, out_console, print_claims, print_dry_run
from .show import print_study

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

# said by every option that names the user's code: a reference is a program, not data
RUNS_CODE = "The module is imported and its code runs, as a script's would: use only code you trust."

DRY_RUN = typer.Option(
    False,
    "--dry-run",
    help="Validate, then print what would be computed (runs and tasks, what the store has, an estimated time); "
    "write nothing.",
)


# what an interruption left in the store, in words; typer turns Ctrl-C into a bare exit code 130, so
# `_train` leaves it here for `run_cli` to print
interrupted: list[str] = []


def _train(prep, executor=None):
    from ..driver import execute

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
    """The executor the options ask for; Ray is imported (and its absence reported) here, started by `with`."""
    if executor == "local":
        given = {"--ray-address": ray_address, "--gpus-per-unit": gpus_per_unit, "--cpus-per-unit": cpus_per_unit}
        for option, value in given.items():
            if value is not None:
                raise UsageError(f"{option} needs --executor ray")
        return LocalExecutor()
    if executor != "ray":
        raise UsageError(f"--executor {executor}: choose local or ray")
    from ..executors.ray import RayExecutor

    return RayExecutor(ray_address, gpus_per_unit=gpus_per_unit, cpus_per_unit=cpus_per_unit or 1, device=device)


def user_code_overrides(
    sets: dict,
    model: Optional[str],
    model_arg: list[str],
    data: Optional[str],
    data_arg: list[str],
    loss: Optional[str],
) -> dict:
    """--model/--model-arg/--data/--data-arg/--loss as config overrides (model, model_args, dataset, ...), which
    --set must not give too."""
    from ..driver import parse_sets

    given = {
        "model": (model, "--model"),
        "model_args": (parse_sets(model_arg, "--model-arg") if model_arg else None, "--model-arg"),
        "dataset": (data, "--data"),
        "dataset_args": (parse_sets(data_arg, "--data-arg") if data_arg else None, "--data-arg"),
        "loss": (loss, "--loss"),
    }
    out = dict(sets)
    for key, (value, option) in given.items():
        if value is None:
            continue
        if key in sets:
            raise UsageError(f"{option} and --set {key}=... both give {key}: use one")
        out[key] = value
    return out


def use_data_dir(data_dir: Optional[Path]) -> Optional[str]:
    """--data-dir is searched first (before $BATCHLAB_DATA); it is passed explicitly to every work unit."""
    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir}: not a directory")
    return None if data_dir is None else str(data_dir)


def print_version(value: bool) -> None:
    if value:
        import torch

        from .. import __version__

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
    print_study(study)


@app.command("list")
def list_studies(
    study: Optional[str] = typer.Argument(None, help="A study: the same as `batchlab show STUDY`."),
) -> None:
    """List the studies and their profiles; with a study name, describe it (as `batchlab show STUDY`)."""
    from ..studies import REGISTRY

    if study is not None:
        print_study(study)
        return
    table = Table("study", "title", "profiles", title="batchlab studies")
    for name, entry in REGISTRY.items():
        table.add_row(name, entry.title, ", ".join(entry.profiles))
    out_console.print(table)


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
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="Your own model: package.module:factory (or path/to/file.py:factory), a function returning a "
        f"torch.nn.Module; the current folder is searched first. {RUNS_CODE} Only studies that accept one (see "
        "`batchlab show STUDY`).",
    ),
    model_arg: list[str] = typer.Option([], "--model-arg", help="A keyword argument of the model factory: k=v."),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        help="Your own data: package.module:factory returning (x_train, y_train, x_test, y_test) tensors or "
        f"(train, test) Datasets. {RUNS_CODE}",
    ),
    data_arg: list[str] = typer.Option([], "--data-arg", help="A keyword argument of the data factory: k=v."),
    loss: Optional[str] = typer.Option(
        None,
        "--loss",
        help="package.module:fn(output, target) -> mean loss (default: cross-entropy for integer targets, mean "
        f"squared error for float targets). {RUNS_CODE}",
    ),
) -> None:
    """Run a study (skipping runs already in the store) and write its report."""
    from ..driver import parse_sets, prepare

    ex = make_executor(executor, ray_address, gpus_per_unit, cpus_per_unit, device)
    overrides = user_code_overrides(parse_sets(set_), model, model_arg, data, data_arg, loss)
    prep = prepare(study, profile=profile, overrides=overrides, device=device, out=out, data_dir=use_data_dir(data_dir))
    if dry_run:
        return print_dry_run([prep])
    with ex:
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
    from ..driver import parse_sets, write_report

    path, output = write_report(study, out, profile=profile, sets=parse_sets(set_), say=note)
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
    studies: Optional[str] = typer.Option(
        None, "--studies", help="Only these studies, comma-separated, in catalogue order (default: every study)."
    ),
) -> None:
    """Run every study of a profile and write index.html (and claims.json) with the whole claims table."""
    data_dir = use_data_dir(data_dir)
    from ..driver import check_device, prepare, select_studies, write_reproduction_index

    names = select_studies(studies)
    ex = make_executor(executor, ray_address, gpus_per_unit, cpus_per_unit, device)
    if dry_run:  # without starting an executor: what this device would compute
        profile = profile or ("full" if check_device(device).type == "cuda" else "quick")
        return print_dry_run([prepare(n, profile=profile, device=device, out=out, data_dir=data_dir) for n in names])
    with ex:
        if profile is None:  # where the units run (with Ray: whether the workers' units get GPUs)
            profile = "full" if ex.device_type(check_device(device)) == "cuda" else "quick"
        # validate every study before training any, so bad input stops us before anything is written
        preps = [prepare(name, profile=profile, device=device, out=out, data_dir=data_dir) for name in names]
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
    from ..bench import run_bench, save, update_readme
    from ..driver import check_device, check_writable

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


@app.command()
def explore(
    out: Path = OUT,
    serve: bool = typer.Option(False, "--serve", help="Then serve the page on 127.0.0.1 until Ctrl-C."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port of --serve (0: any free port)."),
) -> None:
    """Write an interactive explorer page, OUT/explorer/index.html (no network needed); --serve serves it."""
    from ..explorer import explore as write_and_serve

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

    from ..driver import lookup
    from ..files import atomic_write_text
    from ..store import StoreCorruptError, StoreVersionError, load_metrics, metrics_csv

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
    except typer.Abort as e:  # typer's answer to an EOFError: a file read ended too soon
        error(f"a file is empty or cut short (EOFError: {one_line(e.__cause__)})" if e.__cause__ else "aborted")
        return 2
    except OSError as e:  # a full disk, a read-only folder: every finished unit is already stored whole
        error(os_error_line(e))
        return 2
    except sqlite3.Error as e:  # the same for the store's own file (e.g. "database or disk is full")
        error(f"the store: {one_line(e)}{store_hint(e)}")
        return 2
    except typer.Exit as e:
        rv = e.exit_code
    except KeyboardInterrupt:
        rv = 130
    if rv == 130:  # typer turns Ctrl-C into Exit(130)
        saved = interrupted.pop() if interrupted else "every finished run is in the store"
        error(f"interrupted; {saved}: run the same command again to resume")
    return rv if isinstance(rv, int) else 0


def main(argv: list[str] | None = None) -> None:
    """The `batchlab` process (`batchlab.__main__:main` is the light entry point that imports this module)."""
    stop_once_on_ctrl_c()
    exit_with(run_cli(argv))


if __name__ == "__main__":
    main()

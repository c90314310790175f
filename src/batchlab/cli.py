"""The `batchlab` command: list, run, report, reproduce.

Bad input (an unknown study or key, an invalid value, an unwritable --out) prints one line on
stderr and exits with code 2, before anything is written.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .datasets import DataError
from .errors import UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="batchlab: how batch size, learning rate and optimizer shape training.")
console = Console(stderr=True)
out_console = Console()

OUT = typer.Option(Path("batchlab-results"), "--out", help="Results directory (SQLite store, figures, reports).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda")
PROFILE = typer.Option("quick", "--profile", help="quick (CPU miniature) | full (the spec's protocol, for a GPU)")


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class TrainingProgress:
    """A rich progress bar over run-epochs of one study: runs, epochs and time left."""

    def __init__(self):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("run-epochs"), TimeElapsedColumn(), TextColumn("left"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def start(self, study: str, n_runs: int, run_epochs: int) -> None:
        self.task = self.progress.add_task(f"{study} ({n_runs} runs)", total=max(run_epochs, 1))
        if run_epochs == 0:
            self.progress.update(self.task, completed=1, description=f"{study} ({n_runs} runs, all in the store)")

    def epoch(self, runs: int, epochs: int) -> None:
        self.progress.advance(self.task, runs * epochs)


def _run_one(name: str, profile: str, sets: list[str], device: str, out: Path):
    from .runner import parse_sets, run_study

    bar = TrainingProgress()
    with bar.progress:
        return run_study(name, profile=profile, overrides=parse_sets(sets), device=device, out=out,
                         progress=bar.start, on_epoch=bar.epoch)


@app.command("list")
def list_studies() -> None:
    """List the studies and their profiles."""
    from .studies import REGISTRY

    table = Table("study", "title", "profiles", title="batchlab studies")
    for name, study in REGISTRY.items():
        table.add_row(name, study.title, ", ".join(study.profiles))
    out_console.print(table)


@app.command()
def run(study: str = typer.Argument(..., help="Study name (see `batchlab list`)."),
        profile: str = PROFILE,
        set_: list[str] = typer.Option([], "--set", help="Override a config key: --set batch_sizes=64,256 --set lr=0.1"),
        device: str = DEVICE, out: Path = OUT) -> None:
    """Run a study (skipping runs already in the store) and write its report."""
    result = _run_one(study, profile, set_, device, out)
    out_console.print(f"{study}: trained {result.trained} runs, reused {result.reused} from the store, "
                      f"{result.wall_s:.1f} s")
    for claim in result.output.claims:
        out_console.print(f"  {claim.id} [{claim.verdict}] {claim.statement}", highlight=False, markup=False)
    out_console.print(f"report: {result.report}")


@app.command()
def report(study: str = typer.Argument(..., help="Study name."), out: Path = OUT,
           profile: Optional[str] = typer.Option(None, "--profile", help="Which recorded profile (default: latest).")) -> None:
    """Recompute a study's figures, tables and claims from the store (no training)."""
    from .runner import write_report

    path, output = write_report(study, out, profile=profile)
    for claim in output.claims:
        out_console.print(f"  {claim.id} [{claim.verdict}] {claim.statement}", highlight=False, markup=False)
    out_console.print(f"report: {path}")


@app.command()
def reproduce(profile: str = PROFILE, device: str = DEVICE, out: Path = OUT) -> None:
    """Run every study of a profile and write index.html with the whole claims table."""
    from .report.html import write_index
    from .runner import check_writable
    from .studies import REGISTRY

    check_writable(out)
    t0 = time.perf_counter()
    studies, claims = [], []
    for name in REGISTRY:
        result = _run_one(name, profile, [], device, out)
        studies.append({"name": name, "title": REGISTRY[name].title, "href": f"{name}/report.html",
                        "wall_s": result.wall_s, "n_runs": result.trained + result.reused})
        claims += result.output.claims
    total = time.perf_counter() - t0
    from .engine import resolve_device
    from .env import environment

    env = environment(resolve_device(device))
    index = write_index(out / "index.html", title=f"batchlab reproduction ({profile})",
                        meta={"profile": profile, "device": env["device"], "torch": env["torch"],
                              "git_commit": env["git_commit"]},
                        studies=studies, claims=claims, total_wall_s=total)
    for claim in claims:
        out_console.print(f"  {claim.id} [{claim.verdict}] {claim.statement}", highlight=False, markup=False)
    out_console.print(f"reproduced {len(studies)} studies in {total:.1f} s: {index}")


def main() -> None:
    try:
        app(standalone_mode=False)
    except (UsageError, DataError) as e:
        fail(str(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        console.print("aborted")
        sys.exit(130)
    except Exception as e:  # click's own usage errors (missing argument, bad option)
        import click

        if isinstance(e, click.ClickException):
            console.print(f"[bold red]error:[/] {e.format_message()}", highlight=False, markup=False)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()

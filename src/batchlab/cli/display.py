"""What the CLI shows while it works: one-line errors and notes, the progress of a study's training, the claims,
a dry run's plan. Results go to standard output (`out_console`), everything else to standard error (`console`)."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.text import Text

from ..driver import Monitor
from ..timing import clock

console = Console(stderr=True)  # progress and notes
out_console = Console()  # results


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
        self.done, self.saved_runs, self.current, self.next_quarter = 0, 0, 0.0, 1  # a staged study starts again
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

    def damaged(self, line: str) -> None:
        note(line)

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


def print_dry_run(preps) -> None:
    """What `run`/`reproduce` would compute, per study and (several studies) in all; nothing is written."""
    from ..preview import dry_run, dry_run_lines, summary

    plans = []
    for prep in preps:
        plans.append(dry_run(prep))
        for line in dry_run_lines(plans[-1], prep.out):
            out_console.print(line, highlight=False, markup=False, soft_wrap=True)
    for line in summary(plans, preps[0].out):
        out_console.print(line, highlight=False, markup=False, soft_wrap=True)

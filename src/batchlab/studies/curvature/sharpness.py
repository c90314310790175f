"""sharpness: do large batches find sharper minima, and do sharper minima generalise worse? (K1-K3)

Runs at several batch sizes, one lr, seeds paired (seed s fixes the init and the data order of every batch size),
each trained until its training accuracy reaches a target (Keskar et al. compare solutions that fit the training set;
at a fixed number of epochs a large batch takes fewer steps and is compared half-trained). At each run's final
weights: lambda_max on a seeded abridged training subset (`hessian-spectrum`, Lanczos; NaN unless converged). Per
seed, the loss on the line through the smallest- and the largest-batch solution (`loss-between`, Keskar et al.
2017, fig. 3), and for seed 0 the loss over a filter-normalised random plane around each (`loss-plane`, Li et al.
2018). And Dinh et al. 2017's point made with numbers: the smallest-batch solution of seed 0 rescaled (ReLU layer 1
x c, layer 2 / c) is the same function with another lambda_max.
"""

from __future__ import annotations

import math
from typing import Annotated

import numpy as np
from pydantic import Field
from scipy import stats

from ...analysis.stats import mean_std
from ...engine import RunSpec
from ...engine.spec import Checkpoint, TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import DINH, K1, K2, K3, curvature_along, rule_k1, rule_k2, rule_k3
from .figures import landscape_figure, line_figure

LINE = tuple(round(-1.0 + 0.05 * i, 10) for i in range(61))  # Keskar et al. plot alpha from -1 to 2


class SharpnessConfig(StudyConfig):
    batch_sizes: tuple[Annotated[int, Field(ge=1, le=1_000_000)], ...] = Field(
        (64, 128, 256, 512, 1024), min_length=3, description="Batch sizes B, smallest first (the line joins the ends)."
    )
    lr: float = Field(0.1, gt=0, le=100, description="The SGD learning rate of every run.")
    epochs: int = Field(200, ge=1, le=100_000, description="At most this many epochs; a run stops at its target.")
    target_train_acc: float = Field(
        0.99, gt=0, le=1, description="A run stops at the first epoch whose training accuracy reaches this."
    )
    examples: int = Field(2048, ge=2, le=1_000_000, description="The seeded abridged training subset of the measures.")
    max_iter: int = Field(100, ge=1, le=10_000, description="Hessian-vector products of the eigensolver at most.")
    tol: float = Field(1e-3, gt=0, lt=1, description="Relative residual at which lambda_max has converged.")
    step: float = Field(0.25, gt=0, le=1, description="K3: distance from each end of the line, in segment lengths.")
    plane_extent: float = Field(1.0, gt=0, le=100, description="The loss planes span [-extent, extent] both ways.")
    plane_points: int = Field(21, ge=3, le=201, description="Points per axis of each loss plane.")
    rescale: float = Field(
        5.0, gt=0, le=1e6, description="Dinh et al.'s rescaling c of the smallest-batch solution (1: not measured)."
    )


class Sharpness(Study):
    name = "sharpness"
    title = "Sharp minima: lambda_max of the solutions found at each batch size, and their loss landscape"
    description = (
        "Runs at several batch sizes (one lr, paired seeds) trained to a training-accuracy target; lambda_max of each "
        "solution, its test accuracy, the loss on the line between the smallest- and largest-batch solutions of a "
        "seed and on random planes around them, and the same solution rescaled (Dinh et al. 2017)."
    )
    Config = SharpnessConfig
    claims = (K1, K2, K3)
    accepts_user_model = "its rescaling and landscapes are built for the built-in MLP"
    profiles = {
        # 2048 MNIST examples, a 784-128-128-10 ReLU MLP: every run reaches 99 % training accuracy in 150-260 steps
        "quick": {"train_subset": 2048, "test_subset": 2000, "widths": (128, 128), "epochs": 150, "plane_points": 11},
        "full": {
            "batch_sizes": (32, 64, 128, 256, 512, 1024, 2048, 4096),
            "seeds": 5,
            "epochs": 400,
            "examples": 5000,
            "plane_points": 41,
        },
    }

    # --- the plan ----------------------------------------------------------------------------------------------
    def runs(self, cfg: SharpnessConfig) -> dict[int, list[RunSpec]]:
        """B -> its seeds."""
        return {
            b: cfg.seeded(
                batch_size=b,
                lr=cfg.lr,
                epochs=cfg.epochs,
                probes=("metrics",),
                stop_metric="train_acc",
                stop_at=cfg.target_train_acc,
            )
            for b in cfg.batch_sizes
        }

    def end(self, cfg: SharpnessConfig, run: RunSpec) -> Checkpoint:
        return Checkpoint(run=run, epoch=cfg.epochs)  # a run that stopped keeps its weights to the last epoch

    def spectrum(self, cfg: SharpnessConfig, run: RunSpec, rescale: float = 1.0) -> TaskSpec:
        args = {"examples": cfg.examples, "top_k": 1, "max_iter": cfg.max_iter, "tol": cfg.tol, "trace_samples": 0}
        if rescale != 1.0:
            args["rescale"] = rescale
        return TaskSpec(kind="hessian-spectrum", args=args, start=self.end(cfg, run))

    def lines(self, cfg: SharpnessConfig) -> list[TaskSpec]:
        """Per seed: the loss from the smallest-batch (alpha 0) to the largest-batch solution (alpha 1)."""
        runs = self.runs(cfg)
        s = cfg.step
        alphas = tuple(sorted({*LINE, -s, s, round(1 - s, 10), round(1 + s, 10)}))
        args = {"alphas": alphas, "examples": cfg.examples, "test_examples": cfg.examples}
        small, large = runs[cfg.batch_sizes[0]], runs[cfg.batch_sizes[-1]]
        return [
            TaskSpec(kind="loss-between", args=args, start=self.end(cfg, a), others=(self.end(cfg, b),))
            for a, b in zip(small, large)
        ]

    def planes(self, cfg: SharpnessConfig) -> dict[int, TaskSpec]:
        runs = self.runs(cfg)
        args = {"extent": cfg.plane_extent, "points": cfg.plane_points, "examples": cfg.examples}
        return {
            b: TaskSpec(kind="loss-plane", args=args, start=self.end(cfg, runs[b][0]))
            for b in (cfg.batch_sizes[0], cfg.batch_sizes[-1])
        }

    def rescaled(self, cfg: SharpnessConfig) -> TaskSpec | None:
        if cfg.rescale == 1.0 or cfg.model != "mlp" or cfg.activation != "relu":
            return None
        return self.spectrum(cfg, self.runs(cfg)[cfg.batch_sizes[0]][0], cfg.rescale)

    def plan(self, cfg: SharpnessConfig) -> list[RunSpec | TaskSpec]:
        runs = self.runs(cfg)
        units: list = [r for b in cfg.batch_sizes for r in runs[b]]
        units += [self.spectrum(cfg, r) for b in cfg.batch_sizes for r in runs[b]]
        units += [*self.lines(cfg), *self.planes(cfg).values()]
        if (extra := self.rescaled(cfg)) is not None:
            units.append(extra)
        return units

    # --- the analysis ------------------------------------------------------------------------------------------
    def reached(self, cfg: SharpnessConfig, results: Results, run: RunSpec) -> int | None:
        """The step at which the run's training accuracy first reached the target (None: never, or missing)."""
        if not results.has(run):
            return None
        acc = results.series(run, "train_acc")
        hit = np.flatnonzero(np.nan_to_num(acc, nan=-1.0) >= cfg.target_train_acc)
        return int(results.steps(run)[hit[0]]) if hit.size else None

    def measured(self, cfg: SharpnessConfig, results: Results) -> dict:
        """Per (B, seed): the run's row; lam and acc [B, seeds] (NaN where left out) and the counts left out."""
        runs = self.runs(cfg)
        lam = np.full((len(cfg.batch_sizes), cfg.seeds), np.nan)
        acc = lam.copy()
        rows, left = [], {"not converged": 0, "diverged": 0, "below the training-accuracy target": 0, "missing": 0}
        for i, b in enumerate(cfg.batch_sizes):
            for s, run in enumerate(runs[b]):
                task = self.spectrum(cfg, run)
                if not (results.has(run) and results.has(task)) or results.error(task):
                    left["missing"] += 1
                    continue
                at = self.reached(cfg, results, run)
                value = results.scalar(task, "lambda_max")
                row = {
                    "batch size": b,
                    "seed": s,
                    "status": results.status(run),
                    "steps to target": at,
                    "train acc": results.final(run, "train_acc"),
                    "train loss": results.final(run, "train_loss"),
                    "test acc": results.final(run, "test_acc"),
                    "lambda_max": value,
                    "lambda_max estimate": results.scalar(task, "lambda_max_estimate"),
                    "iterations": results.scalar(task, "iterations"),
                    "converged": bool(results.scalar(task, "converged") == 1),
                }
                rows.append(row)
                if results.status(run) == "diverged":
                    left["diverged"] += 1
                elif at is None:
                    left["below the training-accuracy target"] += 1
                elif not math.isfinite(value):
                    left["not converged"] += 1
                else:
                    lam[i, s], acc[i, s] = value, row["test acc"]
        return {"lam": lam, "acc": acc, "rows": rows, "left": left}

    def line_curvatures(self, cfg: SharpnessConfig, results: Results, lam: np.ndarray) -> tuple[list, list, list]:
        """Per seed: the mean increase around each end (NaN where an end run was left out), and the line data."""
        small, large, data = [], [], []
        for s, task in enumerate(self.lines(cfg)):
            if not results.has(task) or results.error(task) or not np.isfinite(lam[[0, -1], s]).all():
                small.append(math.nan), large.append(math.nan)
                continue
            al, loss = results.array(task, "alphas"), results.array(task, "losses")
            small.append(curvature_along(al, loss, 0.0, cfg.step))
            large.append(curvature_along(al, loss, 1.0, cfg.step))
            test = results.array(task, "test_losses") if "test_losses" in results.array_names(task) else None
            data.append((s, al, loss, test, results.scalar(task, "distance")))
        return small, large, data

    def analyze(self, cfg: SharpnessConfig, results: Results) -> StudyOutput:
        m = self.measured(cfg, results)
        lam, acc = m["lam"], m["acc"]
        within = {}
        for b, la, ac in zip(cfg.batch_sizes, lam, acc):
            keep = np.isfinite(la) & np.isfinite(ac)
            if keep.sum() >= 3 and np.ptp(la[keep]) > 0 and np.ptp(ac[keep]) > 0:
                within[f"B={b}"] = float(stats.spearmanr(la[keep], ac[keep]).statistic)
        small, large, line_data = self.line_curvatures(cfg, results, lam)
        ends = (cfg.batch_sizes[0], cfg.batch_sizes[-1])
        out = [s for s in range(cfg.seeds) if not np.isfinite(lam[[0, -1], s]).all()]
        missing = (f"seed {', '.join(map(str, out))}: an end run was left out (not at the training-accuracy target, "
                   "diverged, not converged or missing)") if out else ""  # fmt: skip
        claims = [
            rule_k1(cfg.batch_sizes, lam, m["left"]),
            rule_k2(lam.ravel(), acc.ravel(), within),
            rule_k3(small, large, cfg.step, ends, missing),
        ]
        tables = [
            Table(
                "runs",
                m["rows"],
                "Every run: steps to the training-accuracy target, final accuracies and loss, and "
                "lambda_max of its final weights (NaN unless the eigensolver converged; its last estimate beside).",
            ),
            Table(
                "line",
                [
                    {
                        "seed": s,
                        "distance |theta_large - theta_small|": dist,
                        f"increase around B={ends[0]}": a,
                        f"increase around B={ends[1]}": b,
                    }
                    for (s, *_, dist), a, b in zip(line_data, small, large)
                ],
                f"K3: the mean loss increase at {cfg.step:g} segment lengths on both sides of each end.",
            ),
        ]
        if (row := self.dinh_row(cfg, results)) is not None:
            tables.append(Table("reparametrisation", [row], f"The same function, another sharpness ({DINH})."))
        planes = {b: t for b, t in self.planes(cfg).items() if results.has(t) and not results.error(t)}
        figures = [self.lambda_figure(cfg, lam, m["rows"]), self.accuracy_figure(cfg, lam, acc)]
        if line_data:
            figures.append(line_figure(line_data, ends, cfg.step))
        if len(planes) == 2:
            figures.append(
                landscape_figure({b: (results.array(t, "grid"), results.array(t, "losses")) for b, t in planes.items()})
            )
        return StudyOutput(figures=figures, tables=tables, claims=claims)

    def dinh_row(self, cfg: SharpnessConfig, results: Results) -> dict | None:
        task = self.rescaled(cfg)
        plain = self.spectrum(cfg, self.runs(cfg)[cfg.batch_sizes[0]][0])
        if task is None or not all(results.has(t) and not results.error(t) for t in (task, plain)):
            return None
        return {
            "solution": f"B={cfg.batch_sizes[0]}, seed 0",
            "c": cfg.rescale,
            "loss": results.scalar(plain, "loss"),
            "loss rescaled": results.scalar(task, "loss"),
            "lambda_max": results.scalar(plain, "lambda_max"),
            "lambda_max rescaled": results.scalar(task, "lambda_max"),
        }

    def lambda_figure(self, cfg: SharpnessConfig, lam: np.ndarray, rows: list[dict]) -> FigureSpec:
        """Final lambda_max against B: every seed, the mean; runs left out drawn as hollow estimates."""
        fig, ax = new_figure()
        b = np.array(cfg.batch_sizes, dtype=float)
        for s in range(cfg.seeds):
            ax.plot(b, lam[:, s], "o", color=PALETTE[0], alpha=0.5, markersize=4, label="a seed's run")
        mean, _ = mean_std(lam, axis=1)
        ax.plot(b, mean, "-", color=PALETTE[0], linewidth=1.5, label="mean over seeds")
        out = [(r["batch size"], r["lambda_max estimate"]) for r in rows if not r["converged"]]
        if out:
            ax.plot(*zip(*out), "o", mfc="none", color=PALETTE[3], label="not converged (last estimate)")
        ax.set(
            xscale="log",
            xlabel="batch size (log)",
            ylabel="lambda_max of the final weights",
            title=f"Sharpness at {100 * cfg.target_train_acc:g} % training accuracy",
        )
        legend_below(fig)
        caption = (
            f"lambda_max of each run's weights when it reached {100 * cfg.target_train_acc:g} % training "
            f"accuracy (lr {cfg.lr:g}), on {cfg.examples} training examples. K1 tests the trend."
        )
        return FigureSpec("lambda_vs_batch", fig, caption)

    def accuracy_figure(self, cfg: SharpnessConfig, lam: np.ndarray, acc: np.ndarray) -> FigureSpec:
        fig, ax = new_figure()
        for i, b in enumerate(cfg.batch_sizes):
            ax.plot(lam[i], 100 * acc[i], "o", color=PALETTE[i % len(PALETTE)], markersize=4, label=f"B={b}")
        ax.set(xlabel="lambda_max of the final weights", ylabel="test accuracy (%)", title="Sharpness and accuracy")
        legend_below(fig)
        return FigureSpec("lambda_vs_accuracy", fig, "Each run's final lambda_max and test accuracy (K2).")

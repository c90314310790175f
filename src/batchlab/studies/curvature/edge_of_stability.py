"""edge-of-stability: where the sharpness settles, against the optimizer's stability threshold (ES1-ES3).

On a fixed subset of the training set (Cohen et al. 2021 use 5000 CIFAR-10 examples), a tanh MLP with the square loss
(as theirs: with cross-entropy the sharpness of these MLPs on MNIST falls as the margins grow and never reaches the
edge; a 784-64-64-10 tanh MLP on 1000 examples: lambda_max fell from 19 to 9 over 200 full-batch steps at lr 0.05):
- full-batch gradient descent at several lrs, lambda_max of the whole subset every `every` steps (the `sharpness`
  probe, Lanczos warm-started from the previous eigenvector), against 2/lr (ES1);
- SGD at one lr and several batch sizes, lambda_max and the batch sharpness E_B[g_B^T H_B g_B / |g_B|^2] at the
  run's own batch size (the `batch_sharpness` probe), against 2/lr (ES2);
- full-batch Adam at several lrs, lambda_max(P^-1 H) with Adam's own preconditioner (the `adam_sharpness` probe),
  against (2 + 2 beta1) / ((1 - beta1) lr) (ES3).
A value whose eigensolver did not converge is NaN (its last estimate is drawn hollow); a run with fewer than half of
its last-half values converged is left out and counted; a diverged run is an outcome (its arm is not at the edge).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ...engine import RunSpec
from ...engine.spec import DATASET_SIZES
from ...outputs import Table
from ...report.figures import PALETTE
from ..common import Results, Study, StudyConfig, StudyOutput
from .claims import ES1, ES2, ES3, rule_edge, rule_es2
from .figures import loss_panels, sharpness_panels

Floats = tuple[Annotated[float, Field(gt=0, le=100)], ...]


class EdgeConfig(StudyConfig):
    train_subset: int | None = Field(
        5000, ge=1, le=60_000, description="The fixed training subset (full-batch: every step sees all of it)."
    )
    test_subset: int | None = Field(1000, ge=1, le=10_000, description="Test examples of the accuracy.")
    widths: tuple[Annotated[int, Field(ge=1, le=100_000)], ...] = Field(
        (200, 200), min_length=1, description="Hidden layer widths (Cohen et al.'s fc-tanh: 200, 200)."
    )
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] = Field("tanh", description="Hidden nonlinearity.")
    init: Literal["glorot", "torch", "kaiming"] = Field("torch", description="Initialisation (PyTorch's default).")
    loss: str = Field("square", description="square: ½|output - one-hot label|² (Cohen et al.'s); or auto.")
    lrs: Floats = Field((0.02, 0.04, 0.08), min_length=1, description="Full-batch gradient descent lrs (ES1).")
    steps: int = Field(5000, ge=10, le=10_000_000, description="Steps of every run.")
    every: int = Field(50, ge=1, le=1_000_000, description="Steps between evaluations and sharpness measurements.")
    examples: int = Field(5000, ge=2, le=60_000, description="Examples of lambda_max (the subset's first, seeded).")
    max_iter: int = Field(50, ge=4, le=10_000, description="Hessian-vector products per eigensolve at most.")
    sgd_lr: float = Field(0.04, gt=0, le=100, description="The lr of the mini-batch runs (ES2).")
    batch_sizes: tuple[Annotated[int, Field(ge=1, le=60_000)], ...] = Field(
        (50, 100, 250, 500), min_length=2, description="Mini-batch sizes (ES2), smallest first."
    )
    draws: int = Field(16, ge=2, le=100_000, description="Mini-batches per batch-sharpness measurement.")
    adam_lrs: Floats = Field((0.005, 0.01, 0.02), min_length=1, description="Full-batch Adam lrs (ES3).")
    beta1: float = Field(
        0.9, ge=0, lt=1, description="Adam's beta1 (beta2 0.999); the threshold is (2+2b1)/((1-b1)lr)."
    )
    band: float = Field(0.1, gt=0, lt=1, description="'At the threshold': within this fraction of it.")
    seeds: int = Field(3, ge=1, le=100, description="Independent runs (seeds 0..N-1) per configuration.")

    @model_validator(mode="after")
    def _square_or_auto(self) -> "EdgeConfig":
        if self.loss not in ("square", "auto"):
            raise ValueError("loss must be square or auto (the thresholds are the optimizer's, for any loss)")
        return self

    @property
    def n(self) -> int:
        return self.train_subset or DATASET_SIZES[self.dataset][0]


class EdgeOfStability(Study):
    name = "edge-of-stability"
    title = "The edge of stability: lambda_max, batch sharpness and Adam's sharpness against their thresholds"
    description = (
        "Full-batch gradient descent at several lrs, SGD at several batch sizes and full-batch Adam on a fixed "
        "training subset (tanh MLP, square loss, as Cohen et al. 2021); the sharpness every few steps against 2/lr, "
        "the batch sharpness against 2/lr, and Adam's preconditioned sharpness against 38/lr."
    )
    Config = EdgeConfig
    claims = (ES1, ES2, ES3)
    accepts_user_model = "its thresholds and probes are set for the built-in MLP on a fixed image subset"
    profiles = {
        # 500 MNIST examples, a 784-32-32-10 tanh MLP: lambda_max reaches 2/lr within ~150 steps at these lrs
        "quick": {
            "train_subset": 500,
            "test_subset": 500,
            "widths": (32, 32),
            "lrs": (0.08, 0.12, 0.16),
            "steps": 400,
            "every": 20,
            "examples": 500,
            "sgd_lr": 0.08,
            "batch_sizes": (25, 50, 125),
            "adam_lrs": (0.02, 0.04),
        },
        "full": {"seeds": 5},
    }

    # --- the plan ----------------------------------------------------------------------------------------------
    def sharp(self, cfg: EdgeConfig, name: str = "sharpness") -> str:
        return f"{name}:examples={min(cfg.examples, cfg.n)}:max_iter={cfg.max_iter}"

    def gd_runs(self, cfg: EdgeConfig) -> dict[float, list[RunSpec]]:
        return {
            lr: cfg.seeded(
                batch_size=cfg.n, lr=lr, epochs=cfg.steps, eval_every=cfg.every, probes=("metrics", self.sharp(cfg))
            )
            for lr in cfg.lrs
        }

    def sgd_runs(self, cfg: EdgeConfig) -> dict[int, list[RunSpec]]:
        out = {}
        for b in cfg.batch_sizes:
            epochs = math.ceil(cfg.steps / math.ceil(cfg.n / b))
            probes = ("metrics", self.sharp(cfg), f"batch_sharpness:draws={cfg.draws}")
            out[b] = cfg.seeded(batch_size=b, lr=cfg.sgd_lr, epochs=epochs, eval_every=cfg.every, probes=probes)
        return out

    def adam_runs(self, cfg: EdgeConfig) -> dict[float, list[RunSpec]]:
        probes = ("metrics", self.sharp(cfg, "adam_sharpness"))
        return {
            lr: cfg.seeded(
                batch_size=cfg.n,
                lr=lr,
                optimizer="adam",
                betas=(cfg.beta1, 0.999),
                epochs=cfg.steps,
                eval_every=cfg.every,
                probes=probes,
            )
            for lr in cfg.adam_lrs
        }

    def plan(self, cfg: EdgeConfig) -> list[RunSpec]:
        arms = (self.gd_runs(cfg), self.sgd_runs(cfg), self.adam_runs(cfg))
        return [r for arm in arms for runs in arm.values() for r in runs]

    # --- the analysis ------------------------------------------------------------------------------------------
    @staticmethod
    def summary(results: Results, run: RunSpec, key: str, threshold: float, total: int) -> dict:
        """One run against a threshold: ratio (last-half mean / threshold; NaN when fewer than half of the last-half
        values converged), low (the first-half minimum / threshold), loss_mid, loss_end, ups (loss rises between
        evaluations in the last half), and whether it diverged or did not converge."""
        nan = {"ratio": math.nan, "low": math.nan, "loss_mid": math.nan, "loss_end": math.nan, "ups": math.nan}
        if not results.has(run):
            return nan | {"diverged": False, "unconverged": False, "missing": True}
        steps, values = results.steps(run), results.series(run, key)
        loss = results.series(run, "train_loss")
        last, first = steps >= total / 2, steps < total / 2
        diverged = results.status(run) == "diverged"
        settled = int(np.isfinite(values[last]).sum())
        unconverged = not diverged and settled < max(1, last.sum() / 2)
        with np.errstate(all="ignore"):
            ratio = float(np.nanmean(values[last])) / threshold if settled and not unconverged else math.nan
            low = float(np.nanmin(values[first])) / threshold if np.isfinite(values[first]).any() else math.nan
        mid = int(np.argmin(np.abs(steps - total / 2)))
        return {
            "ratio": math.nan if diverged else ratio,
            "low": low,
            "loss_mid": float(loss[mid]),
            "loss_end": float(loss[-1]),
            "ups": float(np.sum(np.diff(loss[last]) > 0)),
            "diverged": diverged,
            "unconverged": unconverged,
            "missing": False,
        }

    def arm(self, cfg, results, runs: dict, key: str, threshold) -> dict[str, dict]:
        """label -> the per-seed arrays of `summary` (threshold: a function of the lr)."""
        out = {}
        for label, seeds in runs.items():
            rows = [self.summary(results, r, key, threshold(r.lr), cfg.steps) for r in seeds]
            out[label] = {
                k: np.array([row[k] for row in rows], dtype=float)
                for k in ("ratio", "low", "loss_mid", "loss_end", "ups")
            }
            out[label] |= {
                "not_converged": sum(r["unconverged"] for r in rows),
                "diverged": sum(r["diverged"] for r in rows),
                "missing": sum(r["missing"] for r in rows),
            }
        return out

    def analyze(self, cfg: EdgeConfig, results: Results) -> StudyOutput:
        gd_thr = lambda lr: 2 / lr  # noqa: E731
        adam_thr = lambda lr: (2 + 2 * cfg.beta1) / ((1 - cfg.beta1) * lr)  # noqa: E731
        gd = self.arm(cfg, results, {f"lr {lr:g}": r for lr, r in self.gd_runs(cfg).items()}, "lambda_max", gd_thr)
        adam_runs = {f"lr {lr:g}": r for lr, r in self.adam_runs(cfg).items()}
        adam = self.arm(cfg, results, adam_runs, "adam_lambda_max", adam_thr)
        sgd_runs = self.sgd_runs(cfg)
        sgd_lam = self.arm(cfg, results, sgd_runs, "lambda_max", gd_thr)
        sgd_batch = self.arm(cfg, results, sgd_runs, "batch_sharpness", gd_thr)
        k = (2 + 2 * cfg.beta1) / (1 - cfg.beta1)
        claims = [
            rule_edge(ES1, gd, cfg.band, "lambda_max", "(2/lr)"),
            rule_es2(
                cfg.batch_sizes,
                np.array([sgd_batch[b]["ratio"] for b in cfg.batch_sizes]),
                np.array([sgd_lam[b]["ratio"] for b in cfg.batch_sizes]),
                cfg.band,
                sum(sgd_lam[b]["diverged"] for b in cfg.batch_sizes),
            ),
            rule_edge(ES3, adam, cfg.band, "lambda_max(P^-1 H)", f"({k:g}/lr)", monotone_loss=False),
        ]
        rows = []
        for arm, label, data in [
            ("GD", "lambda_max", gd),
            ("SGD", "lambda_max", sgd_lam),
            ("SGD", "batch sharpness", sgd_batch),
            ("Adam", "lambda_max(P^-1 H)", adam),
        ]:
            for config, a in data.items():
                with np.errstate(all="ignore"):
                    rows.append(
                        {
                            "optimizer": arm,
                            "configuration": f"B={config}" if arm == "SGD" else config,
                            "measure": label,
                            "last-half mean / threshold (mean over seeds)": np.nanmean(a["ratio"]),
                            "per seed": ", ".join(f"{v:.3f}" for v in a["ratio"]),
                            "first-half min / threshold": np.nanmean(a["low"]),
                            "loss at the middle": np.nanmean(a["loss_mid"]),
                            "loss at the end": np.nanmean(a["loss_end"]),
                            "loss rises (last half)": np.nansum(a["ups"]),
                            "not converged": a["not_converged"],
                            "diverged": a["diverged"],
                        }
                    )
        tables = [
            Table(
                "edge",
                rows,
                "Each configuration's sharpness over the last half of training against its "
                "threshold (2/lr; Adam: (2 + 2 beta1)/((1 - beta1) lr)), per seed and on average.",
            )
        ]
        return StudyOutput(figures=self.figures(cfg, results), tables=tables, claims=claims)

    # --- the figures -------------------------------------------------------------------------------------------
    def curves(self, results: Results, runs: list[RunSpec], key: str, label: str, color: str) -> list:
        series = []
        for s, run in enumerate(runs):
            if results.has(run):
                est = results.series(run, f"{key}_estimate") if key != "batch_sharpness" else None
                series.append((results.steps(run), results.series(run, key), est, f"{label}" if s else label, color))
        return series

    def figures(self, cfg: EdgeConfig, results: Results) -> list:
        gd_panels, loss, sgd_panels, adam_panels = [], [], [], []
        for lr, runs in self.gd_runs(cfg).items():
            gd_panels.append(
                {
                    "title": f"GD, lr {lr:g}",
                    "threshold": 2 / lr,
                    "threshold_label": "2/lr",
                    "series": self.curves(results, runs, "lambda_max", "lambda_max (each seed)", PALETTE[0]),
                }
            )
            loss.append(
                {
                    "title": f"GD, lr {lr:g}",
                    "series": [
                        (results.steps(r), results.series(r, "train_loss"), "training loss (each seed)", PALETTE[0])
                        for r in runs
                        if results.has(r)
                    ],
                }
            )
        for b, runs in self.sgd_runs(cfg).items():
            series = self.curves(results, runs, "lambda_max", "lambda_max", PALETTE[0])
            series += self.curves(results, runs, "batch_sharpness", "batch sharpness", PALETTE[1])
            sgd_panels.append(
                {
                    "title": f"SGD, B={b}, lr {cfg.sgd_lr:g}",
                    "threshold": 2 / cfg.sgd_lr,
                    "threshold_label": "2/lr",
                    "series": series,
                }
            )
        k = (2 + 2 * cfg.beta1) / (1 - cfg.beta1)
        for lr, runs in self.adam_runs(cfg).items():
            adam_panels.append(
                {
                    "title": f"Adam, lr {lr:g}",
                    "threshold": k / lr,
                    "threshold_label": f"{k:g}/lr",
                    "series": self.curves(results, runs, "adam_lambda_max", "lambda_max(P^-1 H)", PALETTE[2]),
                }
            )
        n = f"{cfg.n} examples, {'-'.join(map(str, cfg.widths))} {cfg.activation} MLP, {cfg.loss} loss"
        return [
            sharpness_panels(
                gd_panels,
                "gd_sharpness",
                "Full-batch GD: lambda_max against 2/lr",
                "lambda_max",
                f"lambda_max of the {n} every {cfg.every} steps of full-batch gradient descent (ES1).",
            ),
            loss_panels(
                loss,
                "gd_loss",
                "Full-batch GD: training loss",
                "The training loss of the same runs: falling over the long run, not step by step (ES1).",
            ),
            sharpness_panels(
                sgd_panels,
                "sgd_sharpness",
                "SGD: lambda_max and batch sharpness against 2/lr",
                "sharpness",
                f"lambda_max and the batch sharpness at the run's batch size ({n}; ES2).",
            ),
            sharpness_panels(
                adam_panels,
                "adam_sharpness",
                "Adam: preconditioned sharpness against 38/lr",
                "lambda_max(P^-1 H)",
                f"Adam's preconditioned sharpness, beta1 {cfg.beta1:g} ({n}; ES3).",
            ),
        ]

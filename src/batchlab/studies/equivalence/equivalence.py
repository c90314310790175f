"""equivalence: is one step on a batch of B examples the same as averaging B single-example steps?

From the same weights theta0 and one fixed, seeded batch of MNIST images (pixels in [0, 1]):
  A  one optimizer step on the whole batch (mean loss, model in train mode);
  B  for each example, one step from theta0 on that example alone (a fresh optimizer each time),
     giving theta_i, then the average of the theta_i;
  C  the mean of the per-example gradients at theta0, applied as one step (what gradient
     accumulation does).
For plain SGD the average of the steps is the step of the average gradient, so A = B = C exactly
in exact arithmetic; the study measures, for each optimizer, model and precision, how far they
are apart, per parameter tensor and overall, relative to the size of the update.

Claims tested:
  E1  plain SGD without BatchNorm: A = B up to rounding (float64 relative difference below 1e-9;
      float32 judged by the cosine of the two updates, its relative difference only shown);
  E2  momentum does not matter for one step from a fresh state (a new buffer's first step is lr g);
  E3  Adam breaks the equivalence at once (relative difference above 0.1): its first step is about
      lr sign(g), so the average of B sign vectors is not the sign vector of the mean gradient;
  E4  BatchNorm breaks it (float64 relative difference above 1e-3 with single-example passes in
      eval mode): a batch normalises each example by the batch's statistics, one example cannot.
      Judged with running statistics estimated from training data at theta0: the initial ones (mean
      0, variance 1) leave the single-example network un-normalised, a different function, so that
      difference is shown beside it, not judged;
  E5  weight decay keeps it (the decay term is linear in the weights).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ...bounds import BatchSize, Count, Examples, Seed
from ...claims import Claim
from ...engine.spec import TaskSpec
from ...outputs import Table
from ...report.figures import new_figure
from ...tasks.equivalence import OPTIMIZER_SETTINGS, ImageDataset, OneStepArgs, OptimizerName, Precision, task_args
from ..common import FigureSpec, Results, Study, StudyOutput, check_fits, check_subsets
from .claims import BN_BREAKS, E1, E2, E3, E4, E5, EXACT_F64, rule_e1, rule_e2, rule_e3, rule_e4, rule_e5
from .common import LOG_FLOOR, layer_label, log_bars, outcome, scalars, tensor_names, value

OPTIMIZER_LABELS = {"sgd": "SGD", "momentum": "momentum", "adam": "Adam", "weight_decay": "SGD + wd"}
# a cell's BatchNorm variant beside bn_single's "eval" and "train": eval with running statistics estimated from
# training data at theta0 (cnn-bn, float64 only: where E4 is judged)
BN_DATA = "eval-data"


def variant_label(model: str, bn: str, cfg: "EquivalenceConfig | None" = None) -> str:
    """A figure's name for a (model, bn) row: short (a tick label), or long (a title) when `cfg` is given."""
    if model != "cnn-bn":
        return model
    if cfg is None:
        return {"eval": "cnn-bn (0,1)", BN_DATA: "cnn-bn data", "train": "cnn-bn own"}[bn]
    return {
        "eval": "cnn-bn, single examples by the initial running statistics (0, 1)",
        BN_DATA: f"cnn-bn, single examples by running statistics from {cfg.bn_stats_batches * cfg.batch_size} "
        "training images",
        "train": "cnn-bn, single examples by their own statistics",
    }[bn]


def bn_columns(model: str, bn: str, cfg: "EquivalenceConfig") -> dict[str, str]:
    """A table row's BatchNorm columns: how single examples were normalised, and by which running statistics."""
    if model != "cnn-bn":
        return {"bn_single": "", "running statistics": ""}
    stats = {"eval": "initial (0, 1)", BN_DATA: f"from {cfg.bn_stats_batches * cfg.batch_size} training images"}
    return {"bn_single": "train" if bn == "train" else "eval", "running statistics": stats.get(bn, "")}


class EquivalenceConfig(BaseModel):
    """One fixed batch, every model x optimizer x precision; each cell a one-step-equivalence task."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: ImageDataset = Field("mnist", description="The images: mnist or fashion-mnist.")
    batch_size: BatchSize = Field(256, ge=2, description="Examples in the fixed batch (B).")
    models: tuple[Literal["cnn", "cnn-bn"], ...] = Field(
        ("cnn", "cnn-bn"), min_length=1, description="The CNN without and with BatchNorm."
    )
    optimizers: tuple[OptimizerName, ...] = Field(
        ("sgd", "momentum", "adam", "weight_decay"),
        min_length=1,
        description="sgd (lr 0.1), momentum (0.9, lr 0.1), adam (lr 1e-3), weight_decay (SGD lr 0.1, decay 5e-4).",
    )
    precision: tuple[Precision, ...] = Field(
        ("float32", "float64"), min_length=1, description="Compute precisions to compare (float32 and/or float64)."
    )
    bn_single: Literal["eval", "train"] = Field(
        "eval",
        description="BatchNorm in the single-example passes of cnn-bn: running statistics (eval) or the "
        "example's own (train: impossible for BatchNorm1d, a named error).",
    )
    bn_stats_batches: Count = Field(
        8,
        ge=0,
        description="Also run cnn-bn in float64 with bn_single=eval and running statistics estimated at theta0 from "
        "this many further training batches of batch_size (0: not run; E4 is then inconclusive).",
    )
    show_bn_train: bool = Field(
        True, description="Also plan one cnn-bn task (SGD, float64) with bn_single=train, to show its named outcome."
    )
    train_subset: Examples | None = Field(
        None, ge=1, description="The batch is drawn from the first N training images (None: all 60k)."
    )
    test_subset: Examples | None = Field(
        None, ge=1, description="Evaluate A, B and C on the first N test images (None: all 10k)."
    )
    seed: Seed = Field(0, ge=0, description="Seed of the initialisation (PyTorch default init) and of the batch draw.")
    chunk_size: Count = Field(32, ge=1, description="Single-example steps computed together (bounds memory).")

    @model_validator(mode="after")
    def _fits(self):
        for name in ("models", "optimizers", "precision"):
            if not getattr(self, name):
                raise ValueError(f"{name} must name at least one value")
        n_train = check_subsets(self.dataset, self.train_subset, self.test_subset)
        check_fits({"batch_size": self.batch_size}, n_train, "training images the batch is drawn from")
        if self.plans_data_statistics:
            need = {"batch_size x (1 + bn_stats_batches)": self.batch_size * (1 + self.bn_stats_batches)}
            check_fits(need, n_train, "training images the batch and the statistics' batches are drawn from")
        return self

    @property
    def plans_data_statistics(self) -> bool:
        """Whether the cnn-bn cells with running statistics estimated from data are planned (float64 only)."""
        on = self.bn_single == "eval" and self.bn_stats_batches > 0
        return on and "cnn-bn" in self.models and "float64" in self.precision


Cell = tuple[str, str, str, str]  # (model, optimizer, precision, bn: bn_single or BN_DATA)


class Equivalence(Study):
    name = "equivalence"
    accepts_user_model = (
        "its tasks compare one step of the built-in models (mlp, cnn, cnn-bn), taken per example and as a batch"
    )
    title = "One batch step vs the average of single-example steps"
    description = (
        "From the same weights and one fixed batch of MNIST images: A = one step on the whole batch, B = the "
        "average of one fresh step per example, C = one step with the mean per-example gradient. Plain SGD "
        "matches exactly because its step is linear in the gradient: the average of theta0 - lr g_i is "
        "theta0 - lr times the average g_i, which is the batch gradient when nothing couples the examples. "
        "Momentum does not matter for one step from a fresh state, because a new momentum buffer's first step "
        "is exactly lr g; weight decay adds lr wd theta0 to every step, the same for all, so it stays linear. "
        "Adam's first step is lr g / (|g| + eps), about lr sign(g): each single-example step has the same size "
        "in every coordinate, and the average of B sign vectors is shorter than, and points elsewhere than, the "
        "sign of the mean gradient. BatchNorm normalises each example of a batch by the batch's mean and "
        "variance (and the gradient flows through them); one example alone is normalised by the running "
        "statistics instead (bn_single=eval), so the examples see a different function; BatchNorm1d cannot "
        "normalise one example by its own statistics at all (bn_single=train is a named error). In float32 "
        "the average of B weight copies is itself rounded by about 1e-7 of each weight's size, large next to "
        "one small update: that is why float32 is judged by the cosine of the two updates, with float64 beside it."
    )
    Config = EquivalenceConfig
    claims = (E1, E2, E3, E4, E5)
    # quick: a smaller batch and test set on a 10k training pool; full: the protocol (B = 256, all of MNIST)
    profiles = {"quick": {"batch_size": 32, "train_subset": 10_000, "test_subset": 500}, "full": {}}

    # --- plan -------------------------------------------------------------------------------------
    @staticmethod
    def variants(cfg: EquivalenceConfig) -> list[tuple[str, str]]:
        """(model, bn) of the figures' rows: cnn (its bn is always eval: it has no BatchNorm), cnn-bn with
        bn_single, and cnn-bn with data statistics when planned."""
        out = [(m, cfg.bn_single if m == "cnn-bn" else "eval") for m in cfg.models]
        return [*out, ("cnn-bn", BN_DATA)] if cfg.plans_data_statistics else out

    def cells(self, cfg: EquivalenceConfig) -> dict[Cell, TaskSpec]:
        """Every (model, optimizer, precision, bn) -> its task; the data-statistics cells in float64 only."""
        out: dict[Cell, TaskSpec] = {}
        for model, bn in self.variants(cfg):
            for optimizer in cfg.optimizers:
                for precision in cfg.precision if bn != BN_DATA else ("float64",):
                    out[(model, optimizer, precision, bn)] = self.task(cfg, model, optimizer, precision, bn)
        if cfg.show_bn_train and cfg.bn_single == "eval" and "cnn-bn" in cfg.models:
            out[("cnn-bn", "sgd", "float64", "train")] = self.task(cfg, "cnn-bn", "sgd", "float64", "train")
        return out

    @staticmethod
    def task(cfg: EquivalenceConfig, model: str, optimizer: str, precision: str, bn: str) -> TaskSpec:
        args = OneStepArgs(
            dataset=cfg.dataset,
            model=model,
            optimizer=optimizer,
            precision=precision,
            batch_size=cfg.batch_size,
            bn_single="eval" if bn == BN_DATA else bn,
            bn_stats_batches=cfg.bn_stats_batches if bn == BN_DATA else 0,
            train_subset=cfg.train_subset,
            test_subset=cfg.test_subset,
            chunk_size=cfg.chunk_size,
        )
        return TaskSpec(kind="one-step-equivalence", args=task_args(args), seed=cfg.seed)

    def plan(self, cfg: EquivalenceConfig) -> list[TaskSpec]:
        return list(self.cells(cfg).values())

    # --- figures ----------------------------------------------------------------------------------
    def difference_figure(self, cfg: EquivalenceConfig, results: Results, cells: dict[Cell, TaskSpec]):
        combos = [(m, o, bn) for m, bn in self.variants(cfg) for o in cfg.optimizers]
        labels = [f"{variant_label(m, bn)}\n{OPTIMIZER_LABELS[o]}" for m, o, bn in combos]
        fig, axes = new_figure(nrows=2, width=7, height=6.4)  # one above the other: the page is 7 in wide
        for ax, pair, title in (
            (axes[0], "AB", "A (batch step) vs B (average of single-example steps)"),
            (axes[1], "AC", "A (batch step) vs C (mean per-example gradient, one step)"),
        ):
            groups = {
                p: [value(results, cells.get((m, o, p, bn)), f"{pair}_rel") for m, o, bn in combos]
                for p in cfg.precision
            }
            log_bars(
                ax,
                groups,
                labels,
                xlabel="model and optimizer",
                thresholds={
                    f"E1/E2/E5 float64 threshold {EXACT_F64:g}": EXACT_F64,
                    f"E4 threshold {BN_BREAKS:g}": BN_BREAKS,
                },
            )
            ax.set_title(title, fontsize=9)
        fig.suptitle(
            f"Relative difference ‖A − X‖ / ‖A − θ0‖ after one step (batch {cfg.batch_size}, "
            f"cnn-bn single-example BatchNorm: {cfg.bn_single})"
        )
        return fig

    def per_layer_figure(self, cfg: EquivalenceConfig, results: Results, cells: dict[Cell, TaskSpec]):
        precision = "float64" if "float64" in cfg.precision else cfg.precision[0]
        rows = self.variants(cfg)
        fig, axes = new_figure(nrows=len(rows), width=7, height=3.4 * len(rows))
        axes = np.atleast_1d(axes)
        for ax, (model, bn) in zip(axes, rows):
            per_opt = {
                OPTIMIZER_LABELS[o]: scalars(results, cells.get((model, o, precision, bn))) for o in cfg.optimizers
            }
            names = next((tensor_names(v, "AB_rel", model) for v in per_opt.values() if v), [])
            groups = {label: [v.get(f"AB_rel:{n}") for n in names] for label, v in per_opt.items()}
            if names:
                log_bars(
                    ax,
                    groups,
                    [layer_label(model, n) for n in names],
                    eps_lines=(precision,),
                    ylabel="‖A_p − B_p‖ / ‖A_p − θ0_p‖ (ratio, log scale)",
                    xlabel="parameter tensor p",
                )
            ax.set_title(f"{variant_label(model, bn, cfg)}, {precision}: A vs B per parameter tensor", fontsize=9)
        fig.suptitle(
            f"Batch step A vs averaged single-example steps B, tensor by tensor ({precision}, batch {cfg.batch_size})"
        )
        return fig

    # --- analysis ---------------------------------------------------------------------------------
    def summary_table(self, cfg: EquivalenceConfig, results: Results, cells: dict[Cell, TaskSpec]) -> Table:
        rows = []
        for (model, optimizer, precision, bn), spec in cells.items():
            v = scalars(results, spec)
            row = {
                "model": model,
                "optimizer": optimizer,
                "precision": precision,
                **bn_columns(model, bn, cfg),
                "outcome": outcome(results, spec),
            }
            for pair in ("AB", "AC"):
                for stat in ("max", "mean", "rel", "cos"):
                    row[f"{pair}_{stat}"] = v.get(f"{pair}_{stat}")
            row["AB_rel (B averaged as updates)"] = v.get("AB_rel_updates")
            row["BC_rel"] = v.get("BC_rel")
            row["buffers AB_rel"] = v.get("buf_AB_rel")
            for name in (
                "theta0_norm",
                "update_norm_A",
                "update_norm_B",
                "update_norm_C",
                "signlike_A",
                "signlike_single",
            ):
                row[name] = v.get(name)
            for w in ("theta0", "A", "B", "C"):
                row[f"{w} test_acc"] = v.get(f"{w}_test_acc")
                row[f"{w} test_loss"] = v.get(f"{w}_test_loss")
            rows.append(row)
        return Table(
            "one_step",
            rows,
            "One row per configuration. X_max / X_mean: max and mean |A-X| over all weights; X_rel: ||A-X|| "
            "/ ||A-theta0||; X_cos: cos(A-theta0, X-theta0); 'B averaged as updates': B formed as theta0 + "
            "mean(theta_i - theta0), which avoids the rounding of averaging whole weights; buffers: "
            "BatchNorm's running statistics (those single examples were normalised by: the initial mean 0 and "
            "variance 1, or estimated at theta0 from training images); signlike: fraction of coordinates moved "
            "by exactly lr (Adam); "
            "test metrics in eval mode. An 'error' outcome is a named limit, not a crash.",
        )

    def tensor_table(self, cfg: EquivalenceConfig, results: Results, cells: dict[Cell, TaskSpec]) -> Table:
        rows = []
        for (model, optimizer, precision, bn), spec in cells.items():
            v = scalars(results, spec)
            for prefix, kind in (("AB", "param"), ("buf_AB", "buffer")):
                for name in tensor_names(v, f"{prefix}_rel", model):
                    row = {
                        "model": model,
                        "optimizer": optimizer,
                        "precision": precision,
                        **bn_columns(model, bn, cfg),
                        "kind": kind,
                        "tensor": name,
                        "layer": layer_label(model, name),
                    }
                    for pair in (prefix, prefix.replace("AB", "AC")):
                        for stat in ("max", "mean", "rel", "cos"):
                            row[f"{pair.removeprefix('buf_')}_{stat}"] = v.get(f"{pair}_{stat}:{name}")
                    rows.append(row)
        return Table(
            "per_tensor",
            rows,
            "Per parameter tensor (kind=param) and per BatchNorm running buffer "
            "(kind=buffer): the same statistics as the summary, for that tensor alone.",
        )

    def verdicts(self, cfg: EquivalenceConfig, results: Results, cells: dict[Cell, TaskSpec]) -> list[Claim]:
        def get(model, optimizer, precision, name, bn="eval"):
            return value(results, cells.get((model, optimizer, precision, bn)), name)

        def exact(optimizer):
            return dict(
                rel64=get("cnn", optimizer, "float64", "AB_rel"),
                cos32=get("cnn", optimizer, "float32", "AB_cos"),
                rel32=get("cnn", optimizer, "float32", "AB_rel"),
                rel32_updates=get("cnn", optimizer, "float32", "AB_rel_updates"),
            )

        adam_precision = "float64" if ("cnn", "adam", "float64", "eval") in cells else "float32"
        a = lambda name: get("cnn", "adam", adam_precision, name)  # noqa: E731
        e3 = rule_e3(
            a("AB_rel"),
            a("AB_cos"),
            a("signlike_A"),
            a("signlike_single"),
            a("update_norm_B") / a("update_norm_A"),
            adam_precision,
        )
        errors = [
            results.error(spec)
            for spec in (cells.get(("cnn-bn", "sgd", "float64", bn)) for bn in (cfg.bn_single, BN_DATA))
            if spec is not None and outcome(results, spec).startswith("error")
        ]
        data = lambda name: get("cnn-bn", "sgd", "float64", name, BN_DATA)  # noqa: E731
        init = lambda name: get("cnn-bn", "sgd", "float64", name, cfg.bn_single)  # noqa: E731
        e4 = rule_e4(
            data("AB_rel"),
            init("AB_rel"),
            cos=data("AB_cos"),
            length=data("update_norm_B") / data("update_norm_A"),
            init_cos=init("AB_cos"),
            init_length=init("update_norm_B") / init("update_norm_A"),
            stats_examples=data("bn_stats_examples"),
            buffers_rel=data("buf_AB_rel"),
            error=errors[0] if errors else None,
            others={
                OPTIMIZER_LABELS[o]: get("cnn-bn", o, "float64", "AB_rel", BN_DATA)
                for o in cfg.optimizers
                if o != "sgd"
            },
        )
        return [rule_e1(**exact("sgd")), rule_e2(**exact("momentum")), e3, e4, rule_e5(**exact("weight_decay"))]

    def analyze(self, cfg: EquivalenceConfig, results: Results) -> StudyOutput:
        cells = self.cells(cfg)
        lr = ", ".join(f"{OPTIMIZER_LABELS[o]} lr {OPTIMIZER_SETTINGS[o]['lr']:g}" for o in cfg.optimizers)
        return StudyOutput(
            figures=[
                FigureSpec(
                    "relative_difference",
                    self.difference_figure(cfg, results, cells),
                    "Look at each bar against the dashed epsilon line of its precision: at that level the two "
                    "approaches agree up to rounding (claims E1, E2, E5 for cnn with SGD, momentum, SGD + wd); "
                    "far above it they really differ (E3 Adam, E4 BatchNorm). cnn-bn (0,1): single examples "
                    "normalised by the initial running statistics (mean 0, variance 1); cnn-bn data: by running "
                    "statistics estimated at θ0 from training images (float64 only), the setting E4 judges. "
                    f"‖A − X‖ / ‖A − θ0‖ for every model and optimizer ({lr}), float32 and float64 side "
                    "by side, log scale. Dashed: machine epsilon of each precision (the rounding of one "
                    "operation); dotted: the claims' thresholds. Bars near epsilon are rounding; bars near 1 "
                    f"mean the approaches disagree as much as the update is large. Exactly 0 is drawn at "
                    f"{LOG_FLOOR:g}; a missing bar is a configuration that was not run or ended with an error.",
                ),
                FigureSpec(
                    "per_layer",
                    self.per_layer_figure(cfg, results, cells),
                    "Where does the difference come from? Top (no BatchNorm): only Adam's bars rise above the "
                    "epsilon line, in every tensor alike. Below (BatchNorm, single examples normalised by the "
                    "initial running statistics, then by statistics estimated from training data): every tensor "
                    "differs. "
                    "A vs B per parameter tensor (log scale): ‖A_p − B_p‖ / ‖A_p − θ0_p‖ for each tensor p, "
                    "one colour per optimizer; the dashed line is the machine epsilon. With BatchNorm, the bias "
                    "of a layer followed by BatchNorm gets no gradient in the batch step (subtracting the batch "
                    "mean removes it), so A barely moves it and its ratio divides by almost 0: those huge bars "
                    "say that B moves a bias the batch step cannot move, not that something failed.",
                ),
            ],
            tables=[self.summary_table(cfg, results, cells), self.tensor_table(cfg, results, cells)],
            claims=self.verdicts(cfg, results, cells),
        )

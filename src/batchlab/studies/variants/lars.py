"""lars: at very large batches, do layer-wise trust ratios (LARS, LAMB) beat linearly scaled SGD?

LARS (You, Gitman & Ginsburg 2017) gives every layer its own learning rate, trust_coefficient
||w|| / (||g|| + wd ||w||), so that no layer's update is large next to its weights; LAMB (You et al.
2019) puts the same per-layer ratio on Adam's update. Against them, SGD with momentum 0.9 and the
linear scaling rule with Goyal et al.'s warmup. Each optimizer gets the same warmup ramp and epochs.
LARS and LAMB take the best learning rate of a small grid, chosen on tuning seeds (a diverged run
scores 0 %); the comparison runs on other seeds, at the chosen lr (SGD's is set by the rule), so the
choice does not flatter the challengers on the very seeds that judge them. The trust ratio of every
layer is recorded after every epoch (the `trust` probe) and plotted.

Claim tested:
  S2  at the largest batch, on the test seeds, each of LARS and LAMB reaches a higher final test
      accuracy than linearly scaled SGD (one-sided paired t, Holm over the two; a diverged run counts
      0 %, the worst outcome, not a missing seed).
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import Field

from ...analysis.stats import mean_std
from ...bounds import BatchSize, Epochs, EpochTime, Real
from ...engine import RunSpec
from ...outputs import Table
from ...report.figures import PALETTE, band, legend_below, new_figure, zoom_accuracy
from ..common import FigureSpec, Results, Study, StudyConfig, StudyOutput
from .claims import S2, rule_s2
from .common import QUICK_SETUP, scaled_lr, scored_accuracy, warmup

CHALLENGERS = ("lars", "lamb")


class LarsConfig(StudyConfig):
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (4096, 8192), min_length=1, description="Batch sizes."
    )
    batch_base: BatchSize = Field(64, ge=1, description="SGD's reference batch for linear scaling.")
    lr_base: Real = Field(0.01, gt=0, description="SGD's learning rate at batch_base.")
    lars_lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field((5.0, 10.0, 20.0), min_length=1, description="LARS lrs.")
    lamb_lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        (0.005, 0.01, 0.02), min_length=1, description="LAMB lrs."
    )
    trust_coefficient: Real = Field(0.001, gt=0, description="LARS's trust coefficient eta.")
    epochs: Epochs = Field(30, ge=1, description="Epochs of every run.")
    warmup_epochs: EpochTime = Field(5, ge=0, description="Warmup of every optimizer, from batch_base/B of its lr.")
    tuning_seeds: int = Field(2, ge=1, le=100, description="Seeds 0.. that choose LARS's and LAMB's lr.")
    seeds: int = Field(4, ge=2, le=100, description="Test seeds (after the tuning seeds) that decide S2.")


class Lars(Study):
    name = "lars"
    accepts_user_model = None
    title = "LARS and LAMB against linearly scaled SGD at very large batches"
    description = (
        "Large-batch MNIST: SGD with momentum and the linear scaling rule with warmup, against the layer-wise "
        "optimizers LARS and LAMB (the best learning rate of a small grid on tuning seeds, compared on other "
        "seeds), with every layer's trust ratio recorded during training."
    )
    Config = LarsConfig
    claims = (S2,)
    # quick: 10k examples, a 128-wide MLP, batches 2048 and 4096 (5 and 3 steps an epoch), 12 epochs, warmup 2,
    # 3 test seeds
    profiles = {
        "quick": {
            **QUICK_SETUP,
            "widths": (128, 128),
            "batch_sizes": (2048, 4096),
            "lars_lrs": (10.0, 20.0),
            "lamb_lrs": (0.01, 0.03),
            "epochs": 12,
            "warmup_epochs": 2,
            "seeds": 3,
        },
        "full": {},
    }

    @staticmethod
    def seeds(cfg: LarsConfig, test: bool) -> range:
        return range(cfg.tuning_seeds, cfg.tuning_seeds + cfg.seeds) if test else range(cfg.tuning_seeds)

    def runs_of(self, cfg: LarsConfig, opt: str, lr: float, b: int, *, test: bool) -> list[RunSpec]:
        """One optimizer at one lr and batch, on the test or the tuning seeds; every optimizer warms up from
        batch_base/B of its lr."""
        common = dict(batch_size=b, epochs=cfg.epochs, probes=("metrics", "trust"), lr=lr)
        common["lr_schedule"] = warmup(lr * min(1.0, cfg.batch_base / b), lr, cfg.warmup_epochs)
        if opt == "sgd":
            common |= dict(momentum=0.9)
        elif opt == "lars":
            common |= dict(optimizer="lars", momentum=0.9, trust_coefficient=cfg.trust_coefficient)
        else:
            common |= dict(optimizer="lamb")
        return [cfg.run(s, **common) for s in self.seeds(cfg, test)]

    def sgd_lr(self, cfg: LarsConfig, b: int) -> float:
        return scaled_lr("linear", cfg.lr_base, b, cfg.batch_base)

    def tuning(self, cfg: LarsConfig) -> dict[tuple[str, float, int], list[RunSpec]]:
        """(optimizer, lr, B) -> the tuning seeds' runs of LARS's and LAMB's grids."""
        grids = {"lars": cfg.lars_lrs, "lamb": cfg.lamb_lrs}
        return {
            (o, lr, b): self.runs_of(cfg, o, lr, b, test=False)
            for b in cfg.batch_sizes
            for o in CHALLENGERS
            for lr in grids[o]
        }

    def chosen(self, cfg: LarsConfig, results: Results) -> dict[int, dict[str, float]]:
        """B -> optimizer -> its lr: SGD's by the rule; LARS's and LAMB's the best mean final test accuracy of
        the grid on the tuning seeds (a diverged run at 0 %; the first of a tie), once all of them are stored."""
        grid = self.tuning(cfg)
        out = {}
        for b in cfg.batch_sizes:
            out[b] = {"sgd": self.sgd_lr(cfg, b)}
            for o in CHALLENGERS:
                options = {lr: specs for (oo, lr, bb), specs in grid.items() if oo == o and bb == b}
                if all(results.all_present(specs) for specs in options.values()):
                    scores = {lr: float(np.mean(scored_accuracy(results, specs))) for lr, specs in options.items()}
                    out[b][o] = max(scores, key=scores.get)
        return out

    def tested(self, cfg: LarsConfig, lrs: dict[int, dict[str, float]]) -> dict[tuple[str, int], list[RunSpec]]:
        """(optimizer, B) -> the test seeds' runs at the chosen lr."""
        return {(o, b): self.runs_of(cfg, o, lr, b, test=True) for b, per in lrs.items() for o, lr in per.items()}

    def plan(self, cfg: LarsConfig) -> list[RunSpec]:
        sgd = self.tested(cfg, {b: {"sgd": self.sgd_lr(cfg, b)} for b in cfg.batch_sizes})
        return [r for runs in (*self.tuning(cfg).values(), *sgd.values()) for r in runs]

    def follow_up(self, cfg: LarsConfig, results: Results) -> list[RunSpec]:
        """The test seeds of LARS and LAMB at the lr their tuning seeds chose (once those are stored)."""
        return [r for (o, _), runs in self.tested(cfg, self.chosen(cfg, results)).items() if o != "sgd" for r in runs]

    def analyze(self, cfg: LarsConfig, results: Results) -> StudyOutput:
        lrs = self.chosen(cfg, results)
        tested = self.tested(cfg, lrs)
        largest = max(cfg.batch_sizes)
        acc = {k: scored_accuracy(results, specs) for k, specs in tested.items()}
        fig, axes = new_figure(ncols=3, width=14, height=4)
        for i, opt in enumerate(("sgd", *CHALLENGERS)):
            ys = [100 * np.nanmean(acc[(opt, b)]) if (opt, b) in acc else np.nan for b in cfg.batch_sizes]
            axes[0].plot(cfg.batch_sizes, ys, "o-", color=PALETTE[i], label=opt)
            specs = tested.get((opt, largest), [])
            curves = results.curves(specs, "test_acc")
            if curves.size:
                m, s = mean_std(curves)
                band(
                    axes[1],
                    results.epochs(specs[0]),
                    100 * m,
                    100 * s,
                    color=PALETTE[i],
                    label=f"{opt}, lr {lrs[largest][opt]:g}",
                )
        axes[0].set(
            xscale="log",
            xlabel="batch size B (log)",
            ylabel="final test accuracy (%), test seeds",
            title="accuracy vs B (diverged: 0 %)",
        )
        axes[0].set_xticks(list(cfg.batch_sizes), [str(b) for b in cfg.batch_sizes])  # the batch sizes run
        axes[0].minorticks_off()
        axes[1].set(xlabel="epoch", ylabel="test accuracy (%)", title=f"B = {largest}, test seeds")
        for j, opt in enumerate(CHALLENGERS):
            spec = next((s for s in tested.get((opt, largest), []) if results.has(s)), None)
            if spec is None:
                continue
            layers = [k for k in results.records[spec.key].metrics[-1] if k.startswith("trust:")]
            for k, layer in enumerate(layers):
                axes[2].plot(
                    results.epochs(spec),
                    results.series(spec, layer),
                    color=PALETTE[1 + j],
                    linestyle=("-", "--", ":", "-.")[k % 4],
                    label=f"{opt} {layer.removeprefix('trust:')}",
                )
        axes[2].set(
            yscale="log",
            xlabel="epoch",
            ylabel="trust ratio (ratio, log; LARS: local lr factor)",
            title=f"per-layer trust ratios, B = {largest}, first test seed",
        )
        zoom_accuracy(axes[1], top=100)  # where the runs end, not 0-100 %
        legend_below(fig)
        fig.suptitle("Layer-wise adaptive optimizers (LARS, LAMB) against linearly scaled SGD at large batches")
        rows = [
            self.row(results, o, lr, b, specs, "tuning", lrs.get(b, {}).get(o) == lr)
            for (o, lr, b), specs in self.tuning(cfg).items()
        ]
        rows += [self.row(results, o, lrs[b][o], b, specs, "test", True) for (o, b), specs in tested.items()]
        claim = rule_s2({o: acc[(o, b)] for o, b in acc if b == largest}, lrs.get(largest, {}), largest)
        return StudyOutput(
            figures=[
                FigureSpec(
                    "lars_lamb",
                    fig,
                    "Look at the right end of the left panel: claim S2 expects LARS and LAMB above SGD at the largest "
                    "batch. "
                    "Left: final test accuracy against the batch size on the test seeds, LARS and LAMB at the lr "
                    "their tuning seeds chose, SGD at the linear rule's (a diverged run counts 0 %). Middle: test "
                    "accuracy during training at the largest batch (mean +- std over the test seeds). Right: every "
                    "layer's trust ratio during training (LARS: eta ||w|| / (||g|| + wd ||w||); LAMB: ||w|| / "
                    "||update||).",
                )
            ],
            tables=[
                Table(
                    "lars",
                    rows,
                    "Mean final test accuracy per optimizer, learning rate, batch size and seeds (tuning: the grid; "
                    "test: the chosen lr), a diverged run counted 0 %.",
                )
            ],
            claims=[claim],
        )

    @staticmethod
    def row(results: Results, opt: str, lr: float, b: int, specs: list[RunSpec], seeds: str, chosen: bool) -> dict:
        acc = scored_accuracy(results, specs)
        done = np.isfinite(acc)
        return {
            "optimizer": opt,
            "lr": lr,
            "B": b,
            "seeds": seeds,
            "chosen": chosen,
            "mean final test acc (%)": 100 * float(acc[done].mean()) if done.any() else None,
            "runs": int(done.sum()),
            "diverged": sum(results.status(x) == "diverged" for x in specs if results.has(x)),
        }

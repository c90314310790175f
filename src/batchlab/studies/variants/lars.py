"""lars: at very large batches, do layer-wise trust ratios (LARS, LAMB) beat linearly scaled SGD?

LARS (You, Gitman & Ginsburg 2017) gives every layer its own learning rate, trust_coefficient
||w|| / (||g|| + wd ||w||), so that no layer's update is large next to its weights; LAMB (You et al.
2019) puts the same per-layer ratio on Adam's update. Against them, SGD with momentum 0.9 and the
linear scaling rule with Goyal et al.'s warmup. Each optimizer gets the same warmup ramp and epochs;
LARS and LAMB take the best learning rate of a small grid (SGD's is set by the rule). The trust ratio
of every layer is recorded after every epoch (the `trust` probe) and plotted.

Claim tested:
  S2  at the largest batch, LARS or LAMB (the better of the two) reaches a higher final test accuracy
      than linearly scaled SGD (one-sided paired t over seeds).
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
from .common import QUICK_SETUP, scaled_lr, warmup


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
    seeds: int = Field(2, ge=1, le=100, description="Seeds per configuration.")


def _mean_pp(values: np.ndarray) -> float | None:
    """The mean of the finite values in percent; None when there is none (every seed diverged)."""
    finite = values[np.isfinite(values)]
    return 100 * float(finite.mean()) if finite.size else None


class Lars(Study):
    name = "lars"
    accepts_user_model = None
    title = "LARS and LAMB against linearly scaled SGD at very large batches"
    description = (
        "Large-batch MNIST: SGD with momentum and the linear scaling rule with warmup, against the layer-wise "
        "optimizers LARS and LAMB (best learning rate of a small grid), with every layer's trust ratio recorded "
        "during training."
    )
    Config = LarsConfig
    claims = (S2,)
    # quick: 10k examples, a 128-wide MLP, batches 2048 and 4096 (5 and 3 steps an epoch), 12 epochs, warmup 2
    profiles = {
        "quick": {
            **QUICK_SETUP,
            "widths": (128, 128),
            "batch_sizes": (2048, 4096),
            "lars_lrs": (10.0, 20.0),
            "lamb_lrs": (0.01, 0.03),
            "epochs": 12,
            "warmup_epochs": 2,
        },
        "full": {},
    }

    def runs(self, cfg: LarsConfig) -> dict[tuple[str, float, int], list[RunSpec]]:
        out = {}
        for b in cfg.batch_sizes:
            ramp = min(1.0, cfg.batch_base / b)

            def schedule(lr: float):
                return warmup(lr * ramp, lr, cfg.warmup_epochs)

            sgd_lr = scaled_lr("linear", cfg.lr_base, b, cfg.batch_base)
            common = dict(batch_size=b, epochs=cfg.epochs, probes=("metrics", "trust"))
            out[("sgd", sgd_lr, b)] = cfg.seeded(**common, lr=sgd_lr, momentum=0.9, lr_schedule=schedule(sgd_lr))
            for lr in cfg.lars_lrs:
                out[("lars", lr, b)] = cfg.seeded(
                    **common,
                    optimizer="lars",
                    lr=lr,
                    momentum=0.9,
                    trust_coefficient=cfg.trust_coefficient,
                    lr_schedule=schedule(lr),
                )
            for lr in cfg.lamb_lrs:
                out[("lamb", lr, b)] = cfg.seeded(**common, optimizer="lamb", lr=lr, lr_schedule=schedule(lr))
        return out

    def plan(self, cfg: LarsConfig) -> list[RunSpec]:
        return [r for runs in self.runs(cfg).values() for r in runs]

    def best(self, cfg, results, runs, b) -> dict[str, tuple[float, np.ndarray]]:
        """optimizer -> (its best lr at batch b, that lr's final test accuracies over seeds)."""
        out = {}
        for opt in ("sgd", "lars", "lamb"):
            options = {
                lr: results.finals(specs, "test_acc") for (o, lr, bb), specs in runs.items() if o == opt and bb == b
            }
            scored = {lr: float(np.nanmean(a)) for lr, a in options.items() if np.isfinite(a).any()}
            if scored:
                lr = max(scored, key=scored.get)
                out[opt] = (lr, options[lr])
        return out

    def analyze(self, cfg: LarsConfig, results: Results) -> StudyOutput:
        runs = self.runs(cfg)
        largest = max(cfg.batch_sizes)
        best = {b: self.best(cfg, results, runs, b) for b in cfg.batch_sizes}
        fig, axes = new_figure(ncols=3, width=14, height=4)
        for i, opt in enumerate(("sgd", "lars", "lamb")):
            ys = [100 * np.nanmean(best[b][opt][1]) if opt in best[b] else np.nan for b in cfg.batch_sizes]
            axes[0].plot(cfg.batch_sizes, ys, "o-", color=PALETTE[i], label=opt)
            if opt in best[largest]:
                specs = runs[(opt, best[largest][opt][0], largest)]
                curves = results.curves(specs, "test_acc")
                if curves.size:
                    m, s = mean_std(curves)
                    band(
                        axes[1],
                        results.epochs(specs[0]),
                        100 * m,
                        100 * s,
                        color=PALETTE[i],
                        label=f"{opt}, lr {best[largest][opt][0]:g}",
                    )
        axes[0].set(
            xscale="log", xlabel="batch size B (log)", ylabel="final test accuracy (%), best lr", title="accuracy vs B"
        )
        axes[0].set_xticks(list(cfg.batch_sizes), [str(b) for b in cfg.batch_sizes])  # the batch sizes run
        axes[0].minorticks_off()
        axes[1].set(xlabel="epoch", ylabel="test accuracy (%)", title=f"B = {largest}")
        for j, opt in enumerate(("lars", "lamb")):
            if opt not in best[largest]:
                continue
            spec = runs[(opt, best[largest][opt][0], largest)][0]
            if not results.has(spec):
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
            title=f"per-layer trust ratios, B = {largest}, seed 0",
        )
        zoom_accuracy(axes[1], top=100)  # where the runs end, not 0-100 %
        legend_below(fig)
        fig.suptitle("Layer-wise adaptive optimizers (LARS, LAMB) against linearly scaled SGD at large batches")
        rows = [
            {
                "optimizer": o,
                "lr": lr,
                "B": b,
                "mean final test acc (%)": _mean_pp(results.finals(s, "test_acc")),
                "diverged": sum(results.status(x) == "diverged" for x in s if results.has(x)),
            }
            for (o, lr, b), s in runs.items()
        ]
        return StudyOutput(
            figures=[
                FigureSpec(
                    "lars_lamb",
                    fig,
                    "Look at the right end of the left panel: claim S2 expects LARS and LAMB above SGD at the largest "
                    "batch. "
                    "Left: final test accuracy against the batch size, each optimizer at its best lr of the grid "
                    "(SGD: linear scaling). Middle: test accuracy during training at the largest batch (mean +- std "
                    "over seeds). Right: every layer's trust ratio during training (LARS: eta ||w|| / (||g|| + wd "
                    "||w||); LAMB: ||w|| / ||update||). A missing point or curve diverged in every seed (see the "
                    "table's diverged column).",
                )
            ],
            tables=[Table("lars", rows, "Mean final test accuracy per optimizer, learning rate and batch size.")],
            claims=[rule_s2(best[largest], largest, self.diverged(results, runs, largest))],
        )

    @staticmethod
    def diverged(results: Results, runs, b: int) -> dict[str, str]:
        """optimizer -> "k of n runs diverged" at batch b, where any did."""
        out = {}
        for opt in ("sgd", "lars", "lamb"):
            specs = [s for (o, _, bb), ss in runs.items() if o == opt and bb == b for s in ss if results.has(s)]
            k = sum(results.status(s) == "diverged" for s in specs)
            if k:
                out[opt] = f"{k} of {len(specs)} runs diverged"
        return out

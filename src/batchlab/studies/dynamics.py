"""Study family 2: batch size and training dynamics on the MNIST MLP (spec 02).

Every study here trains the reference setup (784-1024-1024-10 ReLU MLP, Glorot init, SGD, mean
cross-entropy) and differs only in which runs it plans. Runs that two studies share have equal
RunSpecs, hence equal keys, and are trained once.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field
from scipy import stats

from ..claims import Claim, inconclusive
from ..report.figures import PALETTE, band, new_figure
from ..report.html import Table
from .common import FigureSpec, Results, Study, StudyConfig, StudyOutput, mean_std

# `quick`: a faithful miniature for a 2-core CPU: a 10k/2k MNIST subset, a 256-wide MLP, 2 seeds.
QUICK_SETUP = {"train_subset": 10_000, "test_subset": 2_000, "widths": (256, 256), "seeds": 2}


def accuracy_curves(results: Results, groups: dict[str, list], title: str):
    """Train and test accuracy vs epoch, mean and ±1 std band over seeds, one colour per label."""
    fig, (ax_tr, ax_te) = new_figure(ncols=2)
    for i, (label, specs) in enumerate(groups.items()):
        present = [s for s in specs if results.has(s)]
        if not present:
            continue
        epochs = results.epochs(present[0])
        for ax, metric in ((ax_tr, "train_acc"), (ax_te, "test_acc")):
            mean, std = mean_std(100 * results.curves(present, metric))
            band(ax, epochs, mean, std, label=label, color=PALETTE[i % len(PALETTE)])
    for ax, split in ((ax_tr, "train"), (ax_te, "test")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{split} accuracy (%)")
        ax.set_title(f"{split} accuracy")
    ax_te.legend(frameon=False)
    fig.suptitle(title)
    return fig


def final_table(results: Results, groups: dict[str, list], name: str, caption: str) -> Table:
    """One row per configuration: final accuracies and losses as mean ± std over seeds."""
    rows = []
    for label, specs in groups.items():
        present = [s for s in specs if results.has(s)]
        row: dict = {"configuration": label, "seeds": len(present)}
        for metric in ("train_acc", "test_acc", "train_loss", "test_loss", "dist_init_w", "dist_init_b"):
            mean, std = mean_std(results.finals(present, metric)) if present else (np.nan, np.nan)
            row[f"{metric} mean"], row[f"{metric} std"] = float(mean), float(std)
        row["steps"] = int(results.steps(present[0])[-1]) if present else 0
        row["diverged"] = sum(results.status(s) == "diverged" for s in present)
        rows.append(row)
    return Table(name, rows, caption)


def monotone_decrease_claim(id: str, statement: str, source: str, labels: list, samples: list[np.ndarray],
                            what: str) -> Claim:
    """Mean decreases along `labels`, each step larger than 2 seed standard deviations (spec 02 D1)."""
    rule = (f"mean final {what} decreases monotonically over {' < '.join(map(str, labels))}, and each "
            "decrease exceeds 2 standard deviations (ddof=1) of the seeds of either neighbour")
    if any(len(s) < 2 for s in samples):
        return inconclusive(id, statement, source, rule, "needs at least 2 seeds per configuration")
    evidence: dict = {}
    ok = True
    for (a, sa), (b, sb) in zip(zip(labels, samples), zip(labels[1:], samples[1:])):
        drop = float(np.mean(sa) - np.mean(sb))
        two_sd = 2 * max(float(np.std(sa, ddof=1)), float(np.std(sb, ddof=1)))
        evidence[f"drop {a}->{b} (pp)"] = 100 * drop
        evidence[f"2 sd {a}/{b} (pp)"] = 100 * two_sd
        evidence[f"Welch p {a} vs {b}"] = float(stats.ttest_ind(sa, sb, equal_var=False).pvalue)
        ok &= drop > two_sd
    for label, s in zip(labels, samples):
        evidence[f"{what} {label} (%)"] = 100 * float(np.mean(s))
    why = ("every step is a decrease larger than 2 sd" if ok else
           "at least one step is not a decrease larger than 2 sd of the seeds")
    return Claim(id, statement, source, rule, "supported" if ok else "not supported", evidence, why)


class BatchSizeSweepConfig(StudyConfig):
    batch_sizes: tuple[int, ...] = Field((64, 256, 1024), min_length=2)
    lr: float = Field(0.01, gt=0)
    epochs: int = Field(30, ge=1)


class BatchSizeSweep(Study):
    name = "batch-size-sweep"
    title = "Accuracy curves vs batch size"
    description = ("SGD at a fixed learning rate and number of epochs, for several batch sizes. A larger batch "
                   "takes fewer steps per epoch; at fixed lr and epochs it is expected to reach a lower accuracy "
                   "(Keskar et al. 2017; Hoffer et al. 2017).")
    Config = BatchSizeSweepConfig
    profiles = {
        "quick": QUICK_SETUP | {"epochs": 8},
        "full": {"batch_sizes": (2, 64, 256, 1024)},
    }

    def groups(self, cfg: BatchSizeSweepConfig) -> dict[str, list]:
        return {f"batch {b}": cfg.seeded(batch_size=b, lr=cfg.lr, epochs=cfg.epochs) for b in cfg.batch_sizes}

    def plan(self, cfg: BatchSizeSweepConfig) -> list:
        return [s for specs in self.groups(cfg).values() for s in specs]

    def analyze(self, cfg: BatchSizeSweepConfig, results: Results) -> StudyOutput:
        groups = self.groups(cfg)
        fig = accuracy_curves(results, groups, f"SGD, lr {cfg.lr}: accuracy vs epoch by batch size")
        table = final_table(results, groups, "final", "Final values after the last epoch (mean and std over seeds)")
        return StudyOutput(
            figures=[FigureSpec("accuracy_vs_epoch", fig,
                                "Train (left) and test (right) accuracy vs epoch; line = mean over seeds, band = ±1 std.")],
            tables=[table],
            claims=[self.claim_d1(cfg, results)],
        )

    def claim_d1(self, cfg: BatchSizeSweepConfig, results: Results) -> Claim:
        statement = "At fixed lr and epochs, a larger batch gives lower final test accuracy."
        source = "Keskar et al. 2017 (large-batch training); Hoffer et al. 2017"
        sizes = [b for b in (64, 256, 1024) if b in cfg.batch_sizes] or sorted(cfg.batch_sizes)[:3]
        samples = [results.finals(cfg.seeded(batch_size=b, lr=cfg.lr, epochs=cfg.epochs), "test_acc") for b in sizes]
        return monotone_decrease_claim("D1", statement, source, sizes, samples, "test accuracy")


STUDIES: list[Study] = [BatchSizeSweep()]

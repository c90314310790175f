"""lr-surge: the optimal learning rate at each batch size for SGD, Adam and sign-Adam, against the two fitted forms.

Li et al. 2024 (arXiv 2405.14578) take the optimal lr at batch size B to be the lr of the largest further loss decrease
from a point of training where the loss has reached a target. Here: stage 1 trains a reference run whose first
per-epoch checkpoint at or below `target_loss` is the common start; stage 2, from that start, every (optimizer, B)
is one `branch-loss` task that trains its lr grid x seeds for `window_steps` steps (seed s of every B sees one data
order) and measures the loss on a fixed draw of training examples before and after. The window is in steps, not
examples: the theory (McCandlish et al. 2018 for SGD, Li et al. for sign-like updates) is for the decrease per
step. The optimizer's state starts afresh at the start (as in every branch): Adam's first step is then a sign step, the
case Li et al. analyse. At the same checkpoint the `hessian-noise-scale` task measures B_simple = tr(Sigma)/|G|^2
and B_noise = tr(H Sigma)/(G^T H G), which B_peak is set beside. Fits and comparison: analysis/surge.py.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ...analysis.surge import compare_forms, optimal_lrs, predict, weights
from ...bounds import BatchSize, Count, Epochs, Examples, Real, Steps
from ...engine import RunSpec
from ...engine.spec import Checkpoint, TaskSpec
from ...outputs import Table
from ...tasks.branches import BranchArgs
from ..common import Results, Study, StudyConfig, StudyOutput
from .claims import AS1, AS2, rule_surge
from .figures import surge_figure

Optimizer = Literal["sgd", "adam", "sign-adam"]
LABELS = {"sgd": "SGD", "adam": "Adam", "sign-adam": "sign-Adam"}


def pow2(lo: int, hi: int) -> tuple[float, ...]:
    """The lr grid 2^lo .. 2^(hi - 1): factor-2 steps."""
    return tuple(2.0**k for k in range(lo, hi))


class SurgeConfig(StudyConfig):
    dataset: str = Field("fashion-mnist", description="Dataset (the paper's first workload is Fashion-MNIST).")
    optimizers: tuple[Optimizer, ...] = Field(
        ("sgd", "adam", "sign-adam"),
        min_length=1,
        description="sgd (plain), adam (betas as `betas`), sign-adam (Adam with betas (0, 0): the gradient's sign).",
    )
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999), description="Adam's (beta1, beta2) (Li et al.: 0.9, 0.999)."
    )
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (4, 8, 16, 32, 64, 128, 256, 512, 1024), min_length=4, description="The batch sizes B of the branches."
    )
    sgd_lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        pow2(-11, 0), min_length=3, description="SGD's lr grid (every B): log-spaced, the optimum inside it."
    )
    adam_lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        pow2(-16, -5), min_length=3, description="Adam's lr grid (every B)."
    )
    sign_adam_lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        pow2(-16, -5), min_length=3, description="sign-Adam's lr grid (every B)."
    )
    window_steps: Steps = Field(10, ge=1, description="Steps of every branch from the start (the further decrease).")
    evals: Count = Field(1, ge=1, description="Loss evaluations along the window (the last decides).")
    eval_examples: Examples = Field(2048, ge=1, description="Training examples (one fixed draw) the loss is taken on.")
    ref_optimizer: Literal["sgd", "adam"] = Field("adam", description="The reference run's optimizer.")
    ref_lr: Real = Field(1e-3, gt=0, description="The reference run's lr.")
    ref_batch: BatchSize = Field(64, ge=1, description="The reference run's batch size.")
    ref_epochs: Epochs = Field(10, ge=1, description="The reference run's length: the target must come within it.")
    target_loss: Real = Field(0.6, gt=0, description="The start: the first epoch whose training loss is this or lower.")
    margin: float = Field(
        0.25, gt=0, lt=1, description="The surge form counts as better when r = E_surge / E_sgd < 1 - margin."
    )
    level: float = Field(0.90, gt=0.5, lt=1, description="Two-sided bootstrap level of r's interval (each end 5 %).")
    bootstrap: Count = Field(200, ge=10, description="Bootstrap resamples of the seeds.")
    noise_examples: Examples = Field(256, ge=2, description="Examples of the B_simple / B_noise measurement.")

    @model_validator(mode="after")
    def _sorted(self) -> "SurgeConfig":
        for name in ("batch_sizes", "sgd_lrs", "adam_lrs", "sign_adam_lrs"):
            values = getattr(self, name)
            if list(values) != sorted(set(values)):
                raise ValueError(f"{name} must be increasing")
        return self

    def lrs(self, optimizer: str) -> tuple[float, ...]:
        return {"sgd": self.sgd_lrs, "adam": self.adam_lrs, "sign-adam": self.sign_adam_lrs}[optimizer]


class LrSurge(Study):
    name = "lr-surge"
    title = "The surge of Adam's optimal learning rate with the batch size"
    description = (
        "From a checkpoint at a target loss, branches at every batch size train an lr grid x seeds for a few steps; "
        "the lr of the largest further loss decrease is the optimal lr. Fitted per optimizer with SGD's monotone form "
        "and the surge form (Li et al. 2024), compared on held-out batch sizes, the peak set beside B_noise."
    )
    Config = SurgeConfig
    claims = (AS1, AS2)
    accepts_user_model = "its plan and analysis have not been checked on a user model yet"
    profiles = {
        # a 784-64-10 MLP on 10k Fashion-MNIST images: the regime (B from well below to well above B_noise at the
        # start, Adam's first steps sign-like) is the paper's; the CNN only costs time on two CPU cores
        "quick": {
            "train_subset": 10_000,
            "test_subset": 1_000,
            "widths": (64,),
            "seeds": 12,
            "ref_epochs": 2,
            "target_loss": 0.5,
        },
        # the paper's grid: its CNN (here the lab's 2-conv CNN), B from 1 to 1024, many seeds, a longer window
        "full": {
            "model": "cnn",
            "batch_sizes": tuple(2**k for k in range(11)),
            "sgd_lrs": pow2(-13, 1),
            "adam_lrs": pow2(-18, -4),
            "sign_adam_lrs": pow2(-18, -4),
            "seeds": 100,
            "window_steps": 20,
            "evals": 5,
            "target_loss": 0.5,
            "ref_epochs": 20,
            "noise_examples": 1024,
            "bootstrap": 1000,
        },
    }

    # --- the plan ---------------------------------------------------------------------------------------------
    def reference(self, cfg: SurgeConfig) -> RunSpec:
        return cfg.run(
            0, batch_size=cfg.ref_batch, lr=cfg.ref_lr, optimizer=cfg.ref_optimizer, epochs=cfg.ref_epochs,
            probes=("metrics",),
        )  # fmt: skip

    def plan(self, cfg: SurgeConfig) -> list[RunSpec | TaskSpec]:
        return [self.reference(cfg)]

    def start_epoch(self, cfg: SurgeConfig, results: Results) -> int | None:
        """The first epoch (1 on) whose training loss is at or below the target; None: missing, or never."""
        ref = self.reference(cfg)
        if not results.has(ref):
            return None
        loss = results.series(ref, "train_loss")
        hit = [int(e) for e, v in zip(results.epochs(ref), loss) if e >= 1 and np.isfinite(v) and v <= cfg.target_loss]
        return hit[0] if hit else None

    def branches(self, cfg: SurgeConfig, epoch: int) -> dict[tuple[str, int], TaskSpec]:
        start = Checkpoint(run=self.reference(cfg), epoch=epoch)
        out = {}
        for opt in cfg.optimizers:
            fields = {"optimizer": "sgd"} if opt == "sgd" else {"optimizer": "adam", "betas": cfg.betas}
            if opt == "sign-adam":
                fields["betas"] = (0.0, 0.0)
            for b in cfg.batch_sizes:
                run = cfg.run(0, batch_size=b, lr=cfg.lrs(opt)[0], epochs=1, probes=("metrics",), **fields)
                args = BranchArgs(
                    run=run.as_dict(), lrs=list(cfg.lrs(opt)), seeds=list(range(cfg.seeds)),
                    examples=cfg.window_steps * b, evals=cfg.evals, eval_examples=cfg.eval_examples,
                )  # fmt: skip
                out[(opt, b)] = TaskSpec(kind="branch-loss", args=args.model_dump(mode="json"), start=start)
        return out

    def noise_task(self, cfg: SurgeConfig, epoch: int) -> TaskSpec:
        return TaskSpec(
            kind="hessian-noise-scale",
            args={"examples": cfg.noise_examples},
            start=Checkpoint(run=self.reference(cfg), epoch=epoch),
        )

    def follow_up(self, cfg: SurgeConfig, results: Results) -> list[RunSpec | TaskSpec]:
        epoch = self.start_epoch(cfg, results)
        if epoch is None:
            return []
        return [*self.branches(cfg, epoch).values(), self.noise_task(cfg, epoch)]

    # --- the analysis ----------------------------------------------------------------------------------------
    def decreases(self, cfg: SurgeConfig, results: Results, task: TaskSpec) -> tuple[np.ndarray, float]:
        """[lrs, seeds] further loss decrease of each branch (-inf where it diverged), and the start loss."""
        loss = results.array(task, "train_loss")
        start, end = loss[0], loss[-1]
        d = np.where(np.isfinite(end), start - end, -np.inf)
        return d.reshape(len(task.args["lrs"]), cfg.seeds), float(np.nanmean(start))

    def optimizer_fit(self, cfg: SurgeConfig, results: Results, opt: str, tasks: dict) -> dict | None:
        """The optimal lr per B with its bootstrap, and both fits on the uncensored B (None: a task missing)."""
        mine = [tasks[(opt, b)] for b in cfg.batch_sizes]
        if not all(results.has(t) and results.error(t) is None for t in mine):
            return None
        decs = [self.decreases(cfg, results, t)[0] for t in mine]
        log_lrs = [np.log(np.asarray(cfg.lrs(opt)))] * len(mine)
        opt_lr = optimal_lrs(decs, log_lrs, cfg.bootstrap, seed=0)
        w = weights(opt_lr["replicates"], log_lrs)
        keep = ~opt_lr["edge"] & np.isfinite(opt_lr["point"])
        b = np.asarray(cfg.batch_sizes)
        cmp = None
        if keep.sum() >= 4:
            cmp = compare_forms(b[keep], opt_lr["point"][keep], opt_lr["replicates"][:, keep], w[keep], cfg.level)
        return {"opt_lr": opt_lr, "weights": w, "keep": keep, "cmp": cmp, "decreases": decs}

    def noise(self, cfg: SurgeConfig, results: Results, epoch: int) -> dict:
        task = self.noise_task(cfg, epoch)
        if not results.has(task) or results.error(task):
            return {}
        names = {"B_simple": "b_simple", "B_noise (Hessian)": "b_noise"}
        out = {}
        for label, key in names.items():
            out |= {label: results.scalar(task, key), f"{label} 95% lo": results.scalar(task, f"{key}_lo"),
                    f"{label} 95% hi": results.scalar(task, f"{key}_hi")}  # fmt: skip
        return out

    def measured(self, cfg: SurgeConfig, results: Results) -> dict | None:
        """Everything the analysis and the explorer show, or None before the start checkpoint is known."""
        epoch = self.start_epoch(cfg, results)
        if epoch is None:
            return None
        tasks = self.branches(cfg, epoch)
        fits = {opt: self.optimizer_fit(cfg, results, opt, tasks) for opt in cfg.optimizers}
        start_loss = next(
            (self.decreases(cfg, results, t)[1] for t in tasks.values() if results.has(t) and not results.error(t)),
            math.nan,
        )
        return {"epoch": epoch, "fits": fits, "noise": self.noise(cfg, results, epoch), "start_loss": start_loss}

    def rows(self, cfg: SurgeConfig, measured: dict) -> list[dict]:
        """One row per (optimizer, B): the optimal lr, its bootstrap interval, censoring, and both fits there."""
        rows = []
        for opt, f in measured["fits"].items():
            if f is None:
                continue
            reps = f["opt_lr"]["replicates"]
            for i, b in enumerate(cfg.batch_sizes):
                lo, hi = np.exp(np.nanpercentile(reps[:, i], [2.5, 97.5])) if np.isfinite(reps[:, i]).any() else (
                    math.nan, math.nan)  # fmt: skip
                row = {"optimizer": LABELS[opt], "batch size": b, "optimal lr": math.exp(f["opt_lr"]["point"][i]),
                       "optimal lr 95% lo": lo, "optimal lr 95% hi": hi, "censored": bool(f["opt_lr"]["edge"][i]),
                       "best mean decrease": float(np.max(f["decreases"][i].mean(1)))}  # fmt: skip
                if f["cmp"] is not None:
                    for form, (log_eps, log_bn, _) in f["cmp"]["fits"].items():
                        row[f"{form} form lr"] = float(np.exp(predict(form, [b], log_eps, log_bn)[0]))
                rows.append(row)
        return rows

    def analyze(self, cfg: SurgeConfig, results: Results) -> StudyOutput:
        m = self.measured(cfg, results)
        if m is None:
            why = f"the reference run is missing or never reached the target loss {cfg.target_loss:g}"
            return StudyOutput(claims=[c.inconclusive("", why) for c in self.claims])
        claims, verdicts = [], []
        b = np.asarray(cfg.batch_sizes)
        for spec, opt, expect in ((AS1, "sgd", "sgd"), (AS2, "adam", "surge"), (AS2, "sign-adam", "surge")):
            f = m["fits"].get(opt)
            if f is None:
                if opt in cfg.optimizers:
                    verdicts.append((opt, spec.inconclusive("", f"the {LABELS[opt]} branches are missing")))
                continue
            claim = rule_surge(spec, f["cmp"], list(b[f["keep"]]), list(b[~f["keep"]]), m["noise"], cfg.margin,
                               cfg.level, cfg.seeds, expect)  # fmt: skip
            verdicts.append((opt, claim))
        by_opt = dict(verdicts)
        if "sgd" in by_opt:
            claims.append(by_opt["sgd"])
        if "adam" in by_opt:
            claim = by_opt["adam"]
            if "sign-adam" in by_opt:  # sign-Adam, judged by the same rule, reported beside Adam
                s = by_opt["sign-adam"]
                extra = {"sign-Adam verdict (same rule)": s.verdict} | {
                    f"sign-Adam {k}": v for k, v in s.evidence.items() if k.startswith(("r ", "r =", "B_peak"))
                }
                claim = AS2.claim(claim.rule, claim.verdict, claim.evidence | extra, claim.why)
            claims.append(claim)
        summary = [{"optimizer": LABELS[o], "verdict": c.verdict, "why": c.why} | c.evidence for o, c in verdicts]
        start = {"start epoch": m["epoch"], "start loss (eval draw)": m["start_loss"]} | m["noise"]
        tables = [
            Table("optimal_lr", self.rows(cfg, m), "The optimal lr per optimizer and batch size, with both fits."),
            Table("fits", summary, "Per optimizer: the held-out comparison of the two forms and the peak."),
            Table("start", [start], "The start checkpoint: its loss and the noise scales measured there."),
        ]
        return StudyOutput(figures=[surge_figure(cfg, m, LABELS)], tables=tables, claims=claims)

    def panel(self, cfg: SurgeConfig, results: Results) -> dict | None:
        """The explorer's optimal lr against B per optimizer (null where censored or missing), and the fits."""
        m = self.measured(cfg, results)
        if m is None:
            return None
        curves = []
        for opt, f in m["fits"].items():
            if f is None:
                continue
            point = np.exp(f["opt_lr"]["point"])
            curve = {"label": LABELS[opt], "lr": [float(v) if math.isfinite(v) else None for v in point],
                     "censored": [bool(e) for e in f["opt_lr"]["edge"]]}  # fmt: skip
            if f["cmp"] is not None:
                curve["b_peak"] = f["cmp"]["b_peak"]
                curve["fits"] = {form: [float(np.exp(predict(form, [b], e, n)[0])) for b in cfg.batch_sizes]
                                 for form, (e, n, _) in f["cmp"]["fits"].items()}  # fmt: skip
            curves.append(curve)
        return {"batch_sizes": list(cfg.batch_sizes), "curves": curves, "b_simple": m["noise"].get("B_simple"),
                "start_loss": m["start_loss"]}  # fmt: skip

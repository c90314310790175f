"""critical-batch: the critical batch size measured by branched training, with the proxies beside it.

Stage 1: reference runs at batch B0 over a small lr grid (seeds paired); the best lr (lowest mean final training
loss, fewest diverged) makes the reference, whose seed 0 keeps checkpoints at fixed fractions of training.
Stage 2: from each checkpoint, branches at k B0 for every multiplier k, the lr by the rule (SGD: k, Adam:
sqrt(k), Malladi et al. 2022) times a small grid (the best of the grid counts), every seed, each for the same
number of examples (the window); at the same checkpoints B_simple and the Hessian-weighted B_noise (McCandlish
et al. 2018). Stage 3: a batch-size warmup driven by the measurement, against B0 throughout (C5).
The critical batch size per checkpoint: analysis/critical.py. The figures: studies/critical/figures.py.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from ...analysis.critical import best_of_grid, critical_batch, smoothed, warmup_schedule
from ...analysis.noise import log_centred_two_batch_ci, two_batch_estimates
from ...bounds import BatchSize, Count, Epochs, Examples, Real
from ...engine import RunSpec
from ...engine.spec import Checkpoint, LRSchedule, TaskSpec
from ...outputs import Table
from ...references import is_reference
from ...tasks.branches import BranchArgs
from ...tasks.gradients import NoiseScaleArgs
from ..common import Results, Study, StudyConfig, StudyOutput
from ..gradients.steps_to_target import StepsToTarget, fit_steps
from .claims import C1, C2, C3, C4, C5, rule_c1, rule_c2, rule_c3, rule_c4, rule_c5
from .figures import critical_figure, window_figure

ADAM_LRS = (3e-4, 1e-3, 3e-3)  # the reference grid with --optimizer adam (SGD's default is the field's)


class CriticalConfig(StudyConfig):
    optimizer: Literal["sgd", "adam"] = Field("sgd", description="The optimizer of every run and branch.")
    batch_size: BatchSize = Field(16, ge=1, description="B0: the reference run's batch, the branches' k = 1.")
    lrs: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        (0.03, 0.1, 0.3), min_length=1, description="The reference's lr grid at B0 (the best mean final loss counts)."
    )
    epochs: Epochs = Field(20, ge=1, description="Length of the reference run in epochs.")
    checkpoints: tuple[Annotated[float, Field(ge=0, lt=1)], ...] = Field(
        (0.0, 0.05, 0.1, 0.3, 0.6), min_length=1, description="Branch points, as fractions of the reference run."
    )
    multipliers: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (1, 2, 3, 4, 6, 8, 16, 32, 64), min_length=2, description="Branch batch sizes k B0 (1 and at least one more)."
    )
    lr_rule: Literal["auto", "linear", "sqrt"] = Field(
        "auto",
        description="Branch lr = the reference lr x k (linear) or x sqrt(k); auto: linear for SGD, sqrt for Adam.",
    )
    lr_grid: tuple[Annotated[Real, Field(gt=0)], ...] = Field(
        (0.5, 1.0), min_length=1, description="Multipliers of the rule's lr tried at every k (the best counts)."
    )
    window: Examples = Field(10_000, ge=1, description="Training examples each branch sees (the longer window).")
    windows: tuple[Annotated[float, Field(gt=0, le=1)], ...] = Field(
        (0.5, 1.0),
        min_length=1,
        description="Windows as fractions of `window`, for the sensitivity (the last decides).",
    )
    evals: Count = Field(10, ge=2, description="Training-loss evaluations along each branch's window.")
    margin: float = Field(0.02, gt=0, lt=1, description="Non-inferiority margin: a branch may be this much worse.")
    margins: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = Field(
        (0.01, 0.05), min_length=1, description="Other margins, shown for the sensitivity (never the verdict)."
    )
    noise_examples: Examples = Field(256, ge=2, description="Examples of the B_simple and B_noise measurement.")
    noise_draws: Count = Field(64, ge=2, description="Batch pairs of the two-batch B_simple (batches of 64 and 1024).")
    proxies: bool = Field(True, description="Measure B_simple and B_noise at the checkpoints (n HVPs each).")
    warmup: bool = Field(True, description="Train the batch-size warmup the measurement implies (C5).")
    steps_profile: Literal["quick", "full", "off"] = Field(
        "quick", description="The steps-to-target profile whose fitted B_noise C4 compares (off: skip it)."
    )

    @model_validator(mode="before")
    @classmethod
    def _lrs_of_the_optimizer(cls, data):
        """Without `lrs`, Adam's reference grid is Adam's (SGD's lrs would diverge)."""
        if isinstance(data, dict) and "lrs" not in data and data.get("optimizer") == "adam":
            data = {**data, "lrs": ADAM_LRS}
        return data

    @model_validator(mode="after")
    def _branches(self) -> "CriticalConfig":
        if 1 not in self.multipliers or max(self.multipliers) <= 1:
            raise ValueError("multipliers need 1 (the reference batch) and at least one larger")
        if self.window < self.batch_size * max(self.multipliers):
            raise ValueError(
                f"window {self.window} is shorter than one batch of {self.batch_size * max(self.multipliers)}"
            )
        return self

    def check_size(self, n_train: int, what: str) -> None:
        """The largest branch batch within the data, and the window within the reference run's examples."""
        super().check_size(n_train, what)
        largest = self.batch_size * max(self.multipliers)
        if largest > n_train:
            raise ValueError(
                f"the largest branch batch {largest} (B0 x {max(self.multipliers)}) exceeds the {n_train} {what}"
            )
        if self.window > self.epochs * n_train:
            raise ValueError(
                f"window {self.window} examples is longer than the reference run "
                f"({self.epochs} epochs x {n_train} {what})"
            )

    def rule_factor(self, k: float) -> float:
        rule = self.lr_rule if self.lr_rule != "auto" else ("linear" if self.optimizer == "sgd" else "sqrt")
        return float(k) if rule == "linear" else math.sqrt(k)

    def checkpoint_epochs(self) -> list[int]:
        return sorted({round(f * self.epochs) for f in self.checkpoints})


class CriticalBatch(Study):
    name = "critical-batch"
    title = "The critical batch size, measured by branched training, against its proxies"
    description = (
        "From checkpoints of a reference run at batch B0, branches at k B0 (lr by the scaling rule, best of a small "
        "grid) train for the same number of examples; the critical batch size is the largest k B0 whose loss is not "
        "worse than B0's by more than a margin (non-inferiority paired by seed). Beside it: B_simple, the "
        "Hessian-weighted B_noise, steps-to-target's fitted B_noise, and a batch-size warmup built from it."
    )
    Config = CriticalConfig
    claims = (C1, C2, C3, C4, C5)
    accepts_user_model = None
    profiles = {
        # the gradient family's miniature data (10k training examples, 256-wide MLP): B0 = 16 takes 625 steps an
        # epoch; 20 epochs put the checkpoints at epochs 0, 1, 2, 6, 12
        "quick": {"train_subset": 10_000, "test_subset": 2_000, "widths": (256, 256), "seeds": 5},
        "full": {"epochs": 30, "window": 60_000, "seeds": 5, "steps_profile": "full", "noise_examples": 1024},
    }

    # --- the plan ---------------------------------------------------------------------------------------------
    def grid_runs(self, cfg: CriticalConfig) -> dict[float, list[RunSpec]]:
        return {
            lr: cfg.seeded(
                batch_size=cfg.batch_size, lr=lr, epochs=cfg.epochs, optimizer=cfg.optimizer, probes=("metrics",)
            )
            for lr in cfg.lrs
        }

    def steps_study(self, cfg: CriticalConfig):
        if cfg.steps_profile == "off" or is_reference(cfg.model) or cfg.optimizer != "sgd":
            return None
        from .. import get_study  # the registered study (its profiles as configured), not a fresh instance

        study = get_study("steps-to-target")
        return study, study.config(cfg.steps_profile, {"dataset": cfg.dataset})

    def plan(self, cfg: CriticalConfig) -> list[RunSpec | TaskSpec]:
        units: list = [r for runs in self.grid_runs(cfg).values() for r in runs]
        if steps := self.steps_study(cfg):
            units += [u for u in steps[0].plan(steps[1]) if isinstance(u, RunSpec)]
        return units

    def best_lr(self, cfg: CriticalConfig, results: Results) -> float | None:
        grid = self.grid_runs(cfg)
        if not all(results.all_present(runs) for runs in grid.values()):
            return None
        finals = np.array([[results.final(r, "train_loss") for r in runs] for runs in grid.values()])
        finals = np.where(np.isnan(finals), np.inf, finals)
        return list(grid)[best_of_grid(finals)]

    def reference(self, cfg: CriticalConfig, lr: float) -> RunSpec:
        return self.grid_runs(cfg)[lr][0]

    def branch_tasks(self, cfg: CriticalConfig, lr: float) -> dict[tuple[int, int], TaskSpec]:
        ref = self.reference(cfg, lr)
        out = {}
        for e in cfg.checkpoint_epochs():
            for k in cfg.multipliers:
                run = cfg.run(
                    0, batch_size=cfg.batch_size * k, lr=lr, epochs=1, optimizer=cfg.optimizer, probes=("metrics",)
                )
                args = BranchArgs(
                    run=run.as_dict(),
                    lrs=[lr * cfg.rule_factor(k) * g for g in cfg.lr_grid],
                    seeds=list(range(cfg.seeds)),
                    examples=cfg.window,
                    evals=cfg.evals,
                )
                out[(e, k)] = TaskSpec(
                    kind="branch", args=args.model_dump(mode="json"), start=Checkpoint(run=ref, epoch=e)
                )
        return out

    def proxy_tasks(self, cfg: CriticalConfig, lr: float) -> dict[int, TaskSpec]:
        ref = self.reference(cfg, lr)
        return {
            e: TaskSpec(
                kind="hessian-noise-scale", args={"examples": cfg.noise_examples}, start=Checkpoint(run=ref, epoch=e)
            )
            for e in cfg.checkpoint_epochs()
        }

    def two_batch_tasks(self, cfg: CriticalConfig, lr: float) -> dict[int, TaskSpec]:
        """B_simple by the second estimator (two batch sizes, McCandlish et al. 2018 app. A.1) and per-example on
        more examples: the `noise-scale` task of the gradient family, at the same checkpoints."""
        ref = self.reference(cfg, lr)
        args = NoiseScaleArgs(examples=2048, small_batch=64, big_batch=1024, draws=cfg.noise_draws)
        args = args.model_dump(mode="json")
        return {
            e: TaskSpec(kind="noise-scale", args=args, start=Checkpoint(run=ref, epoch=e))
            for e in cfg.checkpoint_epochs()
        }

    def two_batch(self, results: Results, task: TaskSpec) -> tuple[float, tuple[float, float]]:
        """The two-batch B_simple and its 95 % bootstrap interval from the task's stored norms (NaN: missing)."""
        if not results.has(task) or results.error(task) is not None:
            return math.nan, (math.nan, math.nan)
        small, big = results.array(task, "small_sq_norms"), results.array(task, "big_sq_norms")
        est = two_batch_estimates(small, big, 64, 1024)
        ci = log_centred_two_batch_ci(small, big, 64, 1024, 200, 0)
        return (est.b_simple if np.isfinite(est.b_simple) else math.inf), ci

    def warmup_runs(self, cfg: CriticalConfig, lr: float, schedule: list[tuple[int, int]]) -> list[RunSpec]:
        """The warmup of C5: the batch from `schedule`, the lr raised by the rule at each doubling."""
        start = schedule[0][1] if schedule[0][0] == 0 else cfg.batch_size
        switches = tuple((e, b) for e, b in schedule if e > 0)
        if start == cfg.batch_size and not switches:
            return []
        doublings, prev = [], start
        for e, b in switches:
            doublings += [float(e)] * round(math.log2(b / prev))
            prev = b
        return cfg.seeded(
            batch_size=start,
            batch_switch=switches,
            lr=lr * cfg.rule_factor(start / cfg.batch_size),
            lr_schedule=LRSchedule(kind="step", milestones=tuple(doublings), gamma=cfg.rule_factor(2)),
            epochs=cfg.epochs,
            optimizer=cfg.optimizer,
            probes=("metrics",),
        )

    def follow_up(self, cfg: CriticalConfig, results: Results) -> list[RunSpec | TaskSpec]:
        lr = self.best_lr(cfg, results)
        if lr is None:
            return []
        branches = self.branch_tasks(cfg, lr)
        proxies = [*self.proxy_tasks(cfg, lr).values(), *self.two_batch_tasks(cfg, lr).values()] if cfg.proxies else []
        units: list = [*branches.values(), *proxies]
        if cfg.warmup and all(results.has(t) for t in branches.values()):
            units += self.warmup_runs(cfg, lr, self.schedule(cfg, results, branches))
        return units

    # --- the analysis ----------------------------------------------------------------------------------------
    def window_losses(self, cfg, results, task: TaskSpec, window: float) -> tuple[np.ndarray, float]:
        """Per-seed smoothed training loss at `window` (a fraction) of the branch's examples, for the best lr of
        the grid, and that lr."""
        loss = smoothed(results.array(task, "train_loss")[1:])  # the evaluations inside the window
        at = min(len(loss) - 1, max(0, math.ceil(window * len(loss)) - 1))
        per_run = loss[at].reshape(len(cfg.lr_grid), cfg.seeds)
        best = best_of_grid(per_run)
        return per_run[best], float(task.args["lrs"][best])

    def measured(self, cfg, results, branches, window: float, margin: float) -> dict[int, dict]:
        """The critical batch size at each checkpoint for one window and margin."""
        out = {}
        for e in cfg.checkpoint_epochs():
            tasks = {k: branches[(e, k)] for k in cfg.multipliers}
            if not all(results.has(t) and results.error(t) is None for t in tasks.values()):
                continue
            losses = {k: self.window_losses(cfg, results, t, window)[0] for k, t in tasks.items()}
            out[e] = critical_batch(cfg.multipliers, cfg.batch_size, losses, margin) | {"losses": losses}
        return out

    def schedule(self, cfg, results, branches) -> list[tuple[int, int]]:
        main = self.measured(cfg, results, branches, cfg.windows[-1], cfg.margin)
        return warmup_schedule(list(main), [m["lower"] for m in main.values()], cfg.batch_size)

    def analyze(self, cfg: CriticalConfig, results: Results) -> StudyOutput:
        lr = self.best_lr(cfg, results)
        if lr is None:
            return StudyOutput(claims=[c.inconclusive("", "the reference runs are missing") for c in self.claims])
        branches, proxies = self.branch_tasks(cfg, lr), self.proxy_tasks(cfg, lr)
        main = self.measured(cfg, results, branches, cfg.windows[-1], cfg.margin)
        epochs = list(main)
        fractions = [e / cfg.epochs for e in epochs]
        crit = [(main[e]["lower"], main[e]["upper"]) for e in epochs]

        def proxy(e: int, name: str) -> tuple[float, tuple[float, float]]:
            t = proxies[e]
            if not results.has(t) or results.error(t) is not None:
                return math.nan, (math.nan, math.nan)
            value, lo, hi = (results.scalar(t, f"{name}{end}") for end in ("", "_lo", "_hi"))
            # a stored +inf reads back as NaN: an open upper end (|G|^2 or G^T H G <= 0 in some resamples, or in
            # the sample itself) once the lower end is measured
            return (math.inf if math.isnan(value) and math.isfinite(lo) else value), (
                lo,
                math.inf if math.isnan(hi) and math.isfinite(lo) else hi,
            )

        simple = [proxy(e, "b_simple") for e in epochs]
        two = self.two_batch_tasks(cfg, lr)
        two_batch = [self.two_batch(results, two[e]) for e in epochs]
        noise = [proxy(e, "b_noise") for e in epochs]
        fit = None
        if steps := self.steps_study(cfg):
            fit = steps_fit(*steps, results)
        schedule = warmup_schedule(epochs, [c[0] for c in crit], cfg.batch_size) if epochs else [(0, cfg.batch_size)]
        warm = self.warmup_runs(cfg, lr, schedule) if cfg.warmup else []
        b0_runs = self.grid_runs(cfg)[lr]
        c5 = self.c5(cfg, results, b0_runs, warm, schedule)
        claims = [
            rule_c1(fractions, [c[0] for c in crit], [c[1] for c in crit]),
            rule_c2(fractions, [s[1] for s in simple], crit),
            rule_c3(
                fractions,
                [s[0] for s in simple],
                [n[0] for n in noise],
                [main[e]["point"] if math.isfinite(main[e]["upper"]) else math.nan for e in epochs],
            ),
            rule_c4(fit, crit[-1] if crit else (math.nan, math.nan), fractions[-1] if fractions else math.nan),
            c5,
        ]
        rows = []
        for e, f, (s, s_ci), (n, n_ci), (t, t_ci) in zip(epochs, fractions, simple, noise, two_batch):
            m = main[e]
            rows.append(
                {
                    "checkpoint (% of training)": 100 * f,
                    "epoch": e,
                    "critical batch, lower": m["lower"],
                    "critical batch, upper": m["upper"],
                    "status": m["status"],
                    "B_simple": s,
                    "B_simple 95% lo": s_ci[0],
                    "B_simple 95% hi": s_ci[1],
                    "B_simple / critical": s / m["point"],
                    "B_simple two-batch": t,
                    "B_simple two-batch 95% lo": t_ci[0],
                    "B_simple two-batch 95% hi": t_ci[1],
                    "B_noise": n,
                    "B_noise 95% lo": n_ci[0],
                    "B_noise 95% hi": n_ci[1],
                    "B_noise / critical": n / m["point"],
                    "undecided k": ", ".join(map(str, m["inconclusive_k"])),
                }
            )
        sens = []
        for w in cfg.windows:
            for margin in (cfg.margin, *cfg.margins):
                other = self.measured(cfg, results, branches, w, margin)
                sens += [
                    {
                        "window (examples)": w * cfg.window,
                        "margin": margin,
                        "epoch": e,
                        "lower": o["lower"],
                        "upper": o["upper"],
                        "status": o["status"],
                    }
                    for e, o in other.items()
                ]
        per_k = [
            {
                "epoch": e,
                "k": k,
                "batch": k * cfg.batch_size,
                "verdict": d.verdict,
                "loss ratio - 1": d.estimate,
                "why": d.why,
            }
            for e in epochs
            for k, d in main[e]["decisions"].items()
        ]
        figures = [window_figure(cfg, main), critical_figure(cfg, fractions, crit, simple, noise, fit)]
        tables = [
            Table(
                "critical_batch",
                rows,
                "The critical batch size per checkpoint (window and margin of the rule) and the proxies beside it.",
            ),
            Table(
                "sensitivity",
                sens,
                "The interval under each window and margin (the rule uses the longest window and the first margin).",
            ),
            Table("per_k", per_k, "Every multiplier's non-inferiority decision against k = 1."),
        ]
        return StudyOutput(figures=figures, tables=tables, claims=claims)

    def c5(self, cfg, results, b0_runs, warm, schedule):
        target_runs = [r for r in b0_runs if results.has(r)]
        if not warm or not results.all_present(warm) or not target_runs:
            return rule_c5([], [], [], [], cfg.margin, schedule)
        final_b0 = np.array([results.final(r, "train_loss") for r in b0_runs])
        target = float(np.nanmax(final_b0)) * (1 + cfg.margin)  # every B0 seed reaches it by its end

        def steps_to(run):
            loss, steps = results.series(run, "train_loss"), results.steps(run)
            hit = np.flatnonzero(loss <= target)
            return float(steps[hit[0]]) if hit.size else math.inf

        final_warm = np.array([results.final(r, "train_loss") for r in warm])
        return rule_c5(
            [steps_to(r) for r in b0_runs], [steps_to(r) for r in warm], final_b0, final_warm, cfg.margin, schedule
        )


def steps_fit(study: StepsToTarget, cfg, results: Results) -> dict | None:
    """steps-to-target's fit from its stored runs (best lr of its grid per batch size), or None when missing."""
    runs = study.runs(cfg)
    if not all(results.all_present(r) for r in runs.values()):
        return None
    best = []
    for b in cfg.batch_sizes:
        steps = [np.mean([study.steps_to(results, s, cfg.target) for s in runs[(b, lr)]]) for lr in cfg.lrs]
        finite = [s for s in steps if np.isfinite(s)]
        best.append(min(finite) if finite else math.nan)
    return fit_steps(cfg.batch_sizes, best) | {"b_20": overhead_batch(cfg.batch_sizes, best)}


def overhead_batch(batch_sizes, steps, overhead: float = 0.2) -> float:
    """The largest measured batch size whose examples to the target (steps x B) exceed the smallest batch's by at
    most `overhead` (Zhang et al. 2024, "How Does Critical Batch Size Scale in Pre-training?": steps beyond perfect
    scaling by 20 %); NaN when the smallest batch never reached the target."""
    b, s = np.asarray(batch_sizes, dtype=float), np.asarray(steps, dtype=float)
    if not (b.size and np.isfinite(s[0])):
        return math.nan
    ok = np.isfinite(s) & (s * b <= (1 + overhead) * s[0] * b[0])
    return float(b[ok].max())

"""gradient-variance: does the mini-batch gradient's variance fall as 1/B, measured rather than assumed?

On a sample of N examples (the population), with G their mean gradient and tr(Sigma) the summed
variance of one example's gradient: with replacement E||g_B - G||^2 = tr(Sigma)/B; without
replacement tr(Sigma)/B (N - B)/(N - 1). Measured over many drawn mini-batches at a checkpoint of
the reference MLP and on a linear regression problem (seed 2, at w = 0), against the prediction.

Claim tested:
  V1  B E||g_B - G||^2 is constant, within 10 % of tr(Sigma) for every B (with replacement).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ...bounds import BatchSize, Count, Examples, Real, Seed, Width
from ...engine.spec import TaskSpec
from ...outputs import Table
from ...report.figures import PALETTE, legend_below, new_figure
from ...tasks.gradients import VarianceArgs
from ..common import FigureSpec, Results, Study, StudyOutput
from .claims import V1, rule_v1
from .common import QUICK_REFERENCE, GradientConfig

PROBLEMS = ("mlp (early checkpoint)", "linear regression")


class VarianceConfig(GradientConfig):
    batch_sizes: tuple[Annotated[BatchSize, Field(ge=1)], ...] = Field(
        (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), min_length=2, description="Mini-batch sizes B."
    )
    examples: Examples = Field(4096, ge=2, description="N: the sample of the MLP checkpoint whose mean gradient is G.")
    draws: Count = Field(8000, ge=2, description="Mini-batches drawn per B and sampling scheme.")
    regression_n: Examples = Field(4096, ge=2, description="Examples of the linear regression problem.")
    regression_d: Width = Field(10, ge=1, description="Input dimension of the linear regression problem.")
    regression_noise: Real = Field(0.5, ge=0, description="Noise std of the linear regression targets.")
    regression_seed: Seed = Field(2, ge=0, description="Seed of the linear regression problem.")


class GradientVariance(Study):
    name = "gradient-variance"
    accepts_user_model = "it measures gradient variance on the built-in MLP and a linear regression problem"
    title = "Mini-batch gradient variance against 1/B"
    description = (
        "The textbook claim Var(g_B) = tr(Sigma)/B, measured: per-example gradients of a sample (at the early "
        "checkpoint of the reference MLP, and on a linear regression problem) give the full gradient G and "
        "tr(Sigma) exactly; many mini-batches drawn with and without replacement give E||g_B - G||^2, compared "
        "with tr(Sigma)/B and tr(Sigma)/B (N-B)/(N-1)."
    )
    Config = VarianceConfig
    claims = (V1,)
    profiles = {"quick": {**QUICK_REFERENCE, "examples": 1024, "regression_n": 2048}, "full": {}}

    def tasks(self, cfg: VarianceConfig) -> dict[str, TaskSpec]:
        common = {"batch_sizes": cfg.batch_sizes, "draws": cfg.draws}
        mlp = VarianceArgs(problem="checkpoint", examples=cfg.examples, **common)
        reg = VarianceArgs(
            problem="regression",
            regression=(cfg.regression_n, cfg.regression_d, cfg.regression_noise),
            **common,
        )
        return {
            PROBLEMS[0]: TaskSpec(
                kind="gradient-variance", args=mlp.model_dump(mode="json"), seed=cfg.seed, start=cfg.checkpoint("early")
            ),
            PROBLEMS[1]: TaskSpec(kind="gradient-variance", args=reg.model_dump(mode="json"), seed=cfg.regression_seed),
        }

    def plan(self, cfg: VarianceConfig) -> list[TaskSpec]:
        return list(self.tasks(cfg).values())

    def analyze(self, cfg: VarianceConfig, results: Results) -> StudyOutput:
        tasks = {k: v for k, v in self.tasks(cfg).items() if results.has(v) and not results.error(v)}
        data = {name: {n: results.array(spec, n) for n in results.array_names(spec)} for name, spec in tasks.items()}
        trace = {name: results.scalar(spec, "trace_sigma") for name, spec in tasks.items()}
        fig, axes = new_figure(ncols=2, width=11, height=4.2)
        rows = []
        for i, (name, d) in enumerate(data.items()):
            bs = d["batch_sizes"]
            for scheme, marker in (("with_replacement", "o"), ("without_replacement", "s")):
                words = scheme.replace("_", " ")
                axes[0].plot(
                    d[f"predicted_{scheme}"],
                    d[f"measured_{scheme}"],
                    marker,
                    color=PALETTE[i],
                    fillstyle="full" if marker == "o" else "none",
                    label=f"{name}, {words}",
                )
            axes[1].plot(bs, bs * d["measured_with_replacement"] / trace[name], "o-", color=PALETTE[i], label=name)
            for j, b in enumerate(bs):
                rows.append(
                    {
                        "problem": name,
                        "B": int(b),
                        "measured, with replacement": float(d["measured_with_replacement"][j]),
                        "predicted tr(Sigma)/B": float(d["predicted_with_replacement"][j]),
                        "measured, without replacement": float(d["measured_without_replacement"][j]),
                        "predicted, without": float(d["predicted_without_replacement"][j]),
                        "B E||g_B - G||^2 / tr(Sigma)": float(b * d["measured_with_replacement"][j] / trace[name]),
                    }
                )
        lims = [
            v
            for d in data.values()
            for k, a in d.items()
            if k.startswith(("predicted", "measured"))
            for v in a
            if v > 0
        ]
        if lims:
            lo, hi = min(lims) / 2, max(lims) * 2
            axes[0].plot([lo, hi], [lo, hi], color="#555555", linestyle=":", linewidth=1, label="measured = predicted")
        axes[0].set(
            xscale="log",
            yscale="log",
            xlabel="predicted E‖g_B − G‖² (squared gradient units, log)",
            ylabel="measured E‖g_B − G‖² (log)",
            title="measured against predicted (each point a B)",
        )
        axes[1].axhspan(0.9, 1.1, color="#eeeeee", label="V1: within 10 %")
        axes[1].axhline(1.0, color="#555555", linewidth=1)
        axes[1].set(
            xscale="log",
            xlabel="batch size B",
            ylabel="B · E‖g_B − G‖² / tr(Σ) (ratio)",
            title="with replacement: constant if variance ~ 1/B",
        )
        legend_below(fig)
        fig.suptitle("Mini-batch gradient variance against the batch size B: measured vs the 1/B prediction")
        problems = {
            name: (
                d["batch_sizes"],
                d["measured_with_replacement"],
                trace[name],
                d["sd_with_replacement"] / cfg.draws**0.5 if "sd_with_replacement" in d else None,
            )
            for name, d in data.items()
        }
        return StudyOutput(
            figures=[
                FigureSpec(
                    "variance_vs_batch",
                    fig,
                    "Look for points on the diagonal (left) and a flat line inside the grey band (right): then "
                    "the variance falls as 1/B (claim V1). "
                    f"Left: measured E||g_B - G||^2 over {cfg.draws} mini-batches against the prediction, log-log; "
                    "points on the dotted diagonal agree. Right: B times the measured variance over tr(Sigma), which "
                    "1/B scaling keeps at 1 (the grey band is V1's 10 %).",
                )
            ],
            tables=[Table("variance", rows, "Measured and predicted mini-batch gradient variance per problem and B.")],
            claims=[rule_v1(problems)],
        )

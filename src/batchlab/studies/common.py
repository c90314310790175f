"""What every study shares: the reference setup as a config, profiles, and reading results.

A study declares (config -> RunSpecs), the engine executes, and the analysis reads only stored
results through `Results` (studies know nothing about SQL).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..analysis.stats import mean_std  # noqa: F401  (re-exported: studies import it from here)
from ..bounds import Examples, Width
from ..claims import ClaimSpec
from ..engine import RunSpec
from ..engine.spec import DATASET_SIZES, LOSSES, TaskSpec
from ..errors import UsageError
from ..outputs import FigureSpec, StudyOutput, Table  # noqa: F401
from ..references import check_syntax, is_reference


def check_fits(sizes: Mapping[str, Any], n: int | None, what: str) -> None:
    """Refuse the first of ``sizes`` (a batch size, an example count, or a list of them; None is skipped) that is
    larger than ``n``, the examples a config draws them from; ``what`` names those examples in the message."""
    if n is None:
        return
    for name, value in sizes.items():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if v is not None and v > n:
                raise ValueError(f"{name} {v} exceeds the {n} {what}")


def check_subsets(dataset: str, train_subset: int | None, test_subset: int | None) -> int | None:
    """Refuse a subset larger than its split of ``dataset``; return the training examples used (None: unknown)."""
    n_train, n_test = DATASET_SIZES.get(dataset, (None, None))
    check_fits({"train_subset": train_subset}, n_train, f"examples of {dataset}")
    check_fits({"test_subset": test_subset}, n_test, f"examples of {dataset}")
    return train_subset or n_train


BUILTIN_MODELS = ("mlp", "cnn", "cnn-bn")
BUILTIN_DATASETS = ("mnist", "fashion-mnist")
MLP_FIELDS = ("widths", "activation", "init")  # what a user model leaves out of its runs


# config fields that are drawn from the training set (batch sizes, example counts): each must fit in it
DRAWN_FROM_TRAIN = re.compile(r"batch_sizes?|\w+_batch|examples")


class StudyConfig(BaseModel):
    """The reference MLP setup (784-1024-1024-10, Glorot init, MNIST); each study adds its own fields.

    Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dataset: str = Field(
        "mnist",
        description="Dataset: mnist, fashion-mnist, or your own as package.module:factory returning "
        "(x_train, y_train, x_test, y_test) tensors or (train, test) Datasets.",
    )
    dataset_args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of a dataset factory (batchlab run --data-arg k=v)."
    )
    train_subset: Examples | None = Field(
        None, ge=1, description="Train on the first N training examples only (None: the whole training set)."
    )
    test_subset: Examples | None = Field(
        None, ge=1, description="Evaluate on the first N test examples only (None: the whole test set)."
    )
    normalize: bool = Field(
        True, description="Standardise the pixels: (x - mean) / std with the dataset's usual constants."
    )
    model: str = Field(
        "mlp",
        description="Network: mlp (fully connected), cnn, cnn-bn (that CNN with batch norm), or your own as "
        "package.module:factory returning a torch.nn.Module (widths, activation and init apply to the mlp only).",
    )
    model_args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of a model factory (batchlab run --model-arg k=v)."
    )
    loss: str = Field(
        "auto",
        description="auto: cross-entropy for integer class targets, mean squared error for float targets; square: "
        "half the squared distance of the outputs from the one-hot label (Cohen et al. 2021); or "
        "package.module:fn(output, target) returning the mean loss over the batch.",
    )
    widths: tuple[Annotated[Width, Field(ge=1)], ...] = Field(
        (1024, 1024), min_length=1, description="Hidden layer widths of the MLP, input to output (e.g. 1024,1024)."
    )
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] = Field(
        "relu", description="Nonlinearity after every hidden layer."
    )
    init: Literal["glorot", "torch", "kaiming"] = Field(
        "glorot", description="Weight initialisation: Glorot uniform, PyTorch's default, or Kaiming (He)."
    )
    loss_reduction: Literal["mean", "sum"] = Field(
        "mean", description="Cross-entropy over a batch: averaged, or summed (the gradient grows with the batch)."
    )
    drop_last: bool = Field(False, description="Drop the last, smaller batch of each epoch.")
    precision: Literal["float32", "tf32", "bf16", "float64"] = Field(
        "float32", description="float32; tf32 matmuls (on NVIDIA GPUs only); bf16 forward pass; or float64."
    )
    rounding_check: bool = Field(
        False,
        description="Train seed 0 of every float32 configuration again alone, to measure how much of the seed "
        "spread is rounding noise of its group (one extra run per configuration).",
    )
    seeds: int = Field(3, ge=1, le=100, description="Independent runs (seeds 0..N-1) per configuration.")

    SETUP_FIELDS: ClassVar[tuple[str, ...]] = (
        "dataset",
        "dataset_args",
        "train_subset",
        "test_subset",
        "normalize",
        "model",
        "model_args",
        "loss",
        "widths",
        "activation",
        "init",
        "loss_reduction",
        "drop_last",
        "precision",
    )

    @model_validator(mode="after")
    def _names_or_references(self) -> "StudyConfig":
        """model, dataset and loss: a built-in name or a reference package.module:name (imported at prepare)."""
        for key, names in (("model", BUILTIN_MODELS), ("dataset", BUILTIN_DATASETS), ("loss", LOSSES)):
            value = getattr(self, key)
            if is_reference(value):
                try:
                    check_syntax(value, key)
                except UsageError as e:
                    raise ValueError(str(e)) from None
            elif value not in names:
                raise ValueError(
                    f"{key} {value!r} is neither {' nor '.join(names)} nor a reference package.module:name"
                )
        for key, ref in (("model_args", "model"), ("dataset_args", "dataset")):
            if getattr(self, key) and not is_reference(getattr(self, ref)):
                raise ValueError(f"{key} apply to a {ref} given as a reference package.module:factory")
        return self

    @property
    def user_code(self) -> list[str]:
        """The keys of this config that name the user's code (model, dataset, loss), in that order."""
        return [k for k in ("model", "dataset", "loss") if is_reference(getattr(self, k))]

    @model_validator(mode="after")
    def _fits_the_data(self) -> "StudyConfig":
        """Subsets, batch sizes and example counts within the data this config uses, each named when it is not."""
        n_train = check_subsets(self.dataset, self.train_subset, self.test_subset)
        if n_train is not None:
            source = f"train_subset={self.train_subset}" if self.train_subset else self.dataset
            self.check_size(n_train, f"training examples ({source})")
        return self

    def check_size(self, n_train: int, what: str) -> None:
        """Raise ValueError naming the first batch size or example count that the `n_train` training examples
        (`what`) cannot give; the driver calls it again for user data, whose size is known once it is loaded."""
        drawn = {k: getattr(self, k) for k in type(self).model_fields if DRAWN_FROM_TRAIN.fullmatch(k)}
        check_fits(drawn, n_train, what)

    def run(self, seed: int, **fields: Any) -> RunSpec:
        """A RunSpec of the reference setup with this config's choices and the given overrides.

        A user model leaves out the MLP's widths, activation and init, and user data the pixel normalisation
        (they do not apply, so they stay out of the run's key); the user-code fields are given only when set,
        so a built-in run's spec (and key) is what it was before they existed."""
        setup = {k: getattr(self, k) for k in self.SETUP_FIELDS}
        if is_reference(self.model):
            for k in MLP_FIELDS:
                setup.pop(k)
        if is_reference(self.dataset):
            setup.pop("normalize")
        for k, default in (("model_args", {}), ("dataset_args", {}), ("loss", "auto")):
            if setup[k] == default:
                setup.pop(k)
        return RunSpec(**(setup | {"seed": seed} | fields))

    def shown(self) -> dict[str, Any]:
        """The config as JSON for reports and claims.json, less the fields that do not apply to a user's model
        or data (the MLP's widths, activation and init; the pixel normalisation), as `run` leaves them out."""
        skip = (set(MLP_FIELDS) if is_reference(self.model) else set()) | (
            {"normalize"} if is_reference(self.dataset) else set()
        )
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in skip}

    def seeded(self, **fields: Any) -> list[RunSpec]:
        """One RunSpec per seed (0 .. seeds-1) of the same configuration."""
        return [self.run(seed, **fields) for seed in range(self.seeds)]


class Study:
    """A study declares its config, profiles, claims, plan and analysis; the driver does the rest.

    `claims` are declared as data, so that `batchlab show` lists them before anything is run; `analyze`
    decides these, in this order (a test checks it on every study's quick profile), less any its config
    switches off (gradient-competition without its lr = 0 control leaves G4 out)."""

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[StudyConfig]]
    profiles: ClassVar[dict[str, dict[str, Any]]]  # profile -> config overrides ("full" = the published protocol)
    claims: ClassVar[tuple[ClaimSpec, ...]] = ()  # none: a measurement
    # None: the study runs on a user model and data (--model/--data); else the one-line reason why it cannot
    accepts_user_model: ClassVar[str | None] = "its plan and analysis have not been checked on a user model"

    def config(self, profile: str = "quick", overrides: dict[str, Any] | None = None) -> StudyConfig:
        if profile not in self.profiles:
            raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(self.profiles)}")
        return self.Config(**(self.profiles[profile] | (overrides or {})))

    def plan(self, cfg: StudyConfig) -> list[RunSpec | TaskSpec]:
        """The work units: training runs and tasks (plain data; the driver computes what the store lacks)."""
        raise NotImplementedError

    def follow_up(self, cfg: StudyConfig, results: "Results") -> list[RunSpec | TaskSpec]:
        """Units decided by stored numbers (a staged plan: tune an lr, then branch from the best run's
        checkpoints): all of them that `results` (the plan so far, as stored) let it name, [] while their
        inputs are missing. The driver computes them and asks again until nothing new comes; `analyze` may call
        it to find them. A pure function of the config and the stored numbers, like `plan`."""
        return []

    def analyze(self, cfg: StudyConfig, results: "Results") -> StudyOutput:
        raise NotImplementedError


class Results:
    """Read-only view of stored units (runs and tasks), looked up by their spec; metrics as numpy arrays,
    a task's arrays and a run's checkpoints loaded from the store's files on demand."""

    def __init__(self, records: dict, load_array: Callable[[Any], np.ndarray] | None = None):
        self.records = records  # key -> store.RunRecord
        self._load = load_array

    # --- tasks ------------------------------------------------------------------------------------
    def error(self, spec) -> str | None:
        """A task's named error (status `error`), or None."""
        return self.records[spec.key].error

    def scalar(self, spec, name: str) -> float:
        """A task's scalar result (NaN if absent or non-finite)."""
        metrics = self.records[spec.key].metrics
        value = metrics[0].get(name) if metrics else None
        return float("nan") if value is None else float(value)

    def scalars(self, spec) -> dict[str, float]:
        metrics = self.records[spec.key].metrics
        return {
            k: (float("nan") if v is None else float(v))
            for k, v in (metrics[0] if metrics else {}).items()
            if k not in ("epoch", "step")
        }

    def array(self, spec, name: str, epoch: int = -1) -> np.ndarray:
        """A stored array of a unit (a task's result; with `epoch`, a run's checkpoint tensor)."""
        for ref in self.records[spec.key].artifacts:
            if ref.name == name and ref.epoch == epoch:
                if self._load is None:
                    raise RuntimeError("these results were read without access to the store's arrays")
                return self._load(ref)
        raise KeyError(f"{spec.key} has no array {name!r}" + ("" if epoch < 0 else f" at epoch {epoch}"))

    def array_names(self, spec) -> list[str]:
        return [ref.name for ref in self.records[spec.key].artifacts if ref.epoch < 0]

    def checkpoint(self, spec, epoch: int) -> dict[str, np.ndarray]:
        """A run's weights after `epoch` epochs: {"param:<name>": array, "buffer:<name>": array}."""
        return {
            ref.name: self.array(spec, ref.name, epoch)
            for ref in self.records[spec.key].artifacts
            if ref.epoch == epoch
        }

    # --- runs -------------------------------------------------------------------------------------

    def has(self, spec: RunSpec) -> bool:
        return spec.key in self.records

    def all_present(self, specs: list[RunSpec]) -> bool:
        return all(self.has(s) for s in specs)

    def status(self, spec: RunSpec) -> str:
        return self.records[spec.key].status

    def series(self, spec: RunSpec, name: str) -> np.ndarray:
        """The metric at every evaluation (epoch 0, 1, ...); NaN where missing or non-finite.

        One rule for every claim: a diverged run's evaluations from its divergence step on are NaN,
        whatever was measured (weights full of NaN still "classify" 10 % of MNIST correctly), so a
        diverged seed is left out of every sample, never counted as a poor result.
        """
        record = self.records[spec.key]
        values = [np.nan if m.get(name) is None else m[name] for m in record.metrics]
        if record.status == "diverged" and record.diverged_step is not None:
            values = [np.nan if m["step"] >= record.diverged_step else v for m, v in zip(record.metrics, values)]
        return np.array(values, dtype=float)

    def epochs(self, spec: RunSpec) -> np.ndarray:
        return np.array([m["epoch"] for m in self.records[spec.key].metrics])

    def steps(self, spec: RunSpec) -> np.ndarray:
        return np.array([m["step"] for m in self.records[spec.key].metrics])

    def final(self, spec: RunSpec, name: str) -> float:
        return float(self.series(spec, name)[-1])

    def finals(self, specs: list[RunSpec], name: str) -> np.ndarray:
        """The final value of a metric for each of `specs` (usually the seeds of one configuration)."""
        return np.array([self.final(s, name) for s in specs if self.has(s)])

    def curves(self, specs: list[RunSpec], name: str) -> np.ndarray:
        """[seeds, evaluations] matrix of a metric over the present runs among `specs`."""
        rows = [self.series(s, name) for s in specs if self.has(s)]
        return np.vstack(rows) if rows else np.zeros((0, 0))

    def wall_s(self, specs: list[RunSpec]) -> float:
        return float(sum(self.records[s.key].wall_s / self.records[s.key].group_size for s in specs if self.has(s)))


def rounding_tasks(units: list) -> list[TaskSpec]:
    """A `rerun-alone` task for seed 0 of every float32 (or tf32/bf16) training run among `units`."""
    return [
        TaskSpec(kind="rerun-alone", args={"run": u.as_dict()})
        for u in units
        if isinstance(u, RunSpec) and u.seed == 0 and u.precision != "float64"
    ]


ROUNDING_NOISE_RATIO = 0.5  # |alone - in group| at least half the seed sd: the spread is mostly rounding noise


def rounding_evidence(results: "Results", units: list, metric: str = "test_acc") -> dict:
    """Evidence on float32 rounding: for each configuration with a `rerun-alone` result, |alone - in group|
    of `metric` against the seed standard deviation of that configuration; the largest ratio decides."""
    runs = [u for u in units if isinstance(u, RunSpec)]
    ratios, worst = [], None
    for task in rounding_tasks(runs):
        run = RunSpec(**task.args["run"])
        if not (results.has(task) and results.has(run)) or results.error(task):
            continue
        seeds = [r for r in runs if r.model_copy(update={"seed": 0}) == run and results.has(r)]
        finals = np.array([results.final(r, metric) for r in seeds])
        noise = abs(results.scalar(task, metric) - results.final(run, metric))
        sd = float(np.nanstd(finals, ddof=1)) if np.isfinite(finals).sum() > 1 else float("nan")
        ratio = noise / sd if sd > 0 else (0.0 if noise == 0 else float("inf"))
        ratios.append(ratio)
        if worst is None or ratio > worst[0]:
            worst = (ratio, noise, sd)
    if worst is None:
        return {}
    ratio, noise, sd = worst
    scale, unit = (100.0, " (pp)") if metric.endswith("_acc") else (1.0, "")
    return {
        "float32 rounding check: configurations": len(ratios),
        f"float32 rounding check: largest |alone - in group| {metric}{unit}": scale * noise,
        f"float32 rounding check: seed sd of {metric} there{unit}": scale * sd,
        "seed spread mostly rounding noise": "yes" if ratio >= ROUNDING_NOISE_RATIO else "no",
    }

"""Work units as plain data: a RunSpec (one training run) and a TaskSpec (a computation at fixed weights).

Both are frozen, validated and serialisable: they can be hashed, stored and sent to another
process or machine, which is what makes caching, resuming and a distributed executor possible. A
`key` is a content hash of the fields that differ from their defaults, so adding a new option with
a default that keeps the old behaviour does not change the keys of units already in a store.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..bounds import BatchSize, Epochs, EpochTime, Examples, Real, Seed, Steps, Width, check_elements
from ..references import check_syntax, is_reference, source_hash

OPTIMIZERS = ("sgd", "adam", "adamw", "lars", "lamb")
# training and test examples of the image datasets: a batch or subset cannot ask for more
DATASET_SIZES = {"mnist": (60000, 10000), "fashion-mnist": (60000, 10000)}
PRECISIONS = ("float32", "tf32", "bf16", "float64")
# built-in losses: "auto" (cross-entropy for class labels, squared error for float targets) and "square", half the
# squared distance of the outputs from the one-hot label (the square loss of Cohen et al. 2021, arXiv 2103.00065)
LOSSES = ("auto", "square")


class LRSchedule(BaseModel):
    """Learning-rate multiplier as a function of the (fractional) epoch.

    - `constant`: 1.
    - `step`: gamma ** (number of milestones <= epoch); gamma > 1 raises the lr (schedule-switch e).
    - `warmup`: linear from `warmup_start` to 1 over `warmup_epochs`, then 1 (Goyal et al. 2017).
    - `cosine`: optional linear warmup, then 0.5 (1 + cos(pi t)) decay to `final_factor`
      (Loshchilov & Hutter 2017), t the fraction of post-warmup training done.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: Literal["constant", "step", "warmup", "cosine"] = "constant"
    milestones: tuple[Annotated[EpochTime, Field(ge=0)], ...] = ()
    gamma: Real = Field(0.1, gt=0)
    warmup_epochs: EpochTime = Field(0.0, ge=0)
    warmup_start: Real = Field(0.0, ge=0)
    final_factor: Real = Field(0.0, ge=0)


def _models() -> tuple[str, ...]:
    from ..models import MODELS  # the built-in architectures (read at each check: a test may add one)

    return MODELS


def _datasets() -> tuple[str, ...]:
    from ..datasets import DATASETS

    return DATASETS


def content_key(body: dict) -> str:
    """20 hex digits of the SHA-256 of canonical JSON: the name of a unit's results in a store."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


class PlainData(BaseModel):
    """A frozen, validated spec that serialises to JSON (what travels to a worker and into the store)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def as_dict(self) -> dict:
        """The fields that differ from their defaults, JSON-ready."""
        return json.loads(self.model_dump_json(exclude_defaults=True))

    def full_dict(self) -> dict:
        return json.loads(self.model_dump_json())


class RunSpec(PlainData):
    """One training trajectory: model, seeds, optimizer, schedules, precision, what to measure and when.

    Every hyperparameter is visible here; two studies that need the same run build equal specs,
    hence equal keys, and the run is trained once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # data: a built-in name (batchlab.datasets.DATASETS) or a reference "package.module:factory" to a function of
    # `dataset_args` returning (x_train, y_train, x_test, y_test) tensors or (train, test) torch Datasets
    dataset: str = "mnist"
    dataset_args: dict[str, Any] = Field(default_factory=dict)
    train_subset: Examples | None = Field(None, ge=1)
    test_subset: Examples | None = Field(None, ge=1)
    normalize: bool = True
    # the synthetic regression problem (dataset "regression"): examples, dimension, noise std, seed
    regression: tuple[
        Annotated[Examples, Field(ge=1)],
        Annotated[Width, Field(ge=1)],
        Annotated[Real, Field(ge=0)],
        Annotated[Seed, Field(ge=0)],
    ] = (1000, 10, 0.1, 0)
    # model: a built-in name (batchlab.models.MODELS) or a reference "package.module:factory" to a function of
    # `model_args` returning an nn.Module (built under torch.manual_seed(seed): its own init is the run's)
    model: str = "mlp"
    model_args: dict[str, Any] = Field(default_factory=dict)
    widths: tuple[Width, ...] = (1024, 1024)
    activation: Literal["relu", "tanh", "gelu", "sigmoid"] = "relu"
    init: Literal["glorot", "torch", "kaiming"] = "glorot"
    bias: bool = True  # the linear model's intercept (the MLP and CNN always have biases)
    # optimizer
    optimizer: Literal["sgd", "adam", "adamw", "lars", "lamb"] = "sgd"
    lr: Real = Field(0.01, gt=0, allow_inf_nan=False)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: Real = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: Real = Field(1e-8, gt=0)
    trust_coefficient: Real = Field(0.001, gt=0)  # LARS's eta (You et al. 2017)
    lr_schedule: LRSchedule = LRSchedule()
    # batches and epochs
    batch_size: BatchSize = Field(64, ge=1)
    batch_switch: tuple[tuple[Epochs, BatchSize], ...] = ()  # (epoch, batch_size): from that epoch on
    epochs: Epochs = Field(30, ge=0)
    drop_last: bool = False
    # gradient accumulation: each step's batch is computed as micro-batches of this size and their
    # gradients combined before one update (equal to the direct batch up to rounding, without BatchNorm)
    micro_batch: BatchSize | None = Field(None, ge=1)
    # Adam's second moment v: "batch" squares the step's gradient (Kingma & Ba 2015); "micro-batch" averages the
    # squares of the gradients of the step's micro-batches of `micro_batch` examples, so that v estimates the same
    # quantity at every batch size (batch-size-invariant Adam, Wang & Aitchison 2024, arXiv 2402.18824)
    adam_second_moment: Literal["batch", "micro-batch"] = "batch"
    loss_reduction: Literal["mean", "sum"] = "mean"
    # "auto": cross-entropy over the last dimension for integer targets, mean squared error for float targets;
    # "square": ½‖output − one-hot(label)‖² per example (class labels); or a reference "package.module:fn",
    # fn(output, target) -> the mean loss over the batch's examples
    loss: str = "auto"
    precision: Literal["float32", "tf32", "bf16", "float64"] = "float32"
    # randomness
    seed: Seed = Field(0, ge=0)
    data_seed: Seed | None = Field(None, ge=0)
    # measurement: which probes run (see batchlab.probes.PROBES) and how often: after every epoch
    # (eval_every=0), or every eval_every steps and at the end; probes=() measures nothing
    probes: tuple[str, ...] = ("metrics", "geometry")
    eval_every: Steps = Field(0, ge=0)
    # stop at a target: a run stops updating at the first evaluation where metric `stop_metric` reaches
    # `stop_at` (e.g. test_acc 0.97); the group ends as soon as every run has stopped, so it costs what
    # the slowest run needs (steps-to-target)
    stop_metric: str | None = None
    stop_at: Real | None = Field(None, ge=-1e6)
    # SHA-256 of the source files of the referenced modules (model, dataset, loss), filled in when empty, so that
    # an edited model never reuses stale results; "" when every one is built in
    code_version: str = ""

    @model_validator(mode="before")
    @classmethod
    def _code_version(cls, data):
        """Check the names, and fill `code_version` from the references' source files (kept when given: a stored
        spec keeps the version it was computed with)."""
        if not isinstance(data, dict):
            return data
        refs = {}
        for what, field, known in (
            ("model", "model", _models()),
            ("dataset", "dataset", _datasets()),
            ("loss", "loss", LOSSES),
        ):
            value = data.get(field)
            if value is None:
                continue
            if is_reference(value):
                check_syntax(value, what)
                refs[what] = value
            elif not isinstance(value, str) or value not in known:
                raise ValueError(
                    f"unknown {what} {value!r}: choose one of {', '.join(known)} "
                    "or give a reference 'package.module:factory'"
                )
        for what, field in (("model", "model_args"), ("dataset", "dataset_args")):
            if data.get(field) and what not in refs:
                raise ValueError(f"{field} apply to a {what} given by reference ('package.module:factory') only")
        if refs and not data.get("code_version"):
            data = {**data, "code_version": source_hash(refs)}
        return data

    @model_validator(mode="after")
    def _check(self) -> "RunSpec":
        if (self.stop_metric is None) != (self.stop_at is None):
            raise ValueError("stop_metric and stop_at go together")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        if any(w < 1 for w in self.widths):
            raise ValueError("widths must be positive")
        if self.dataset == "regression":
            check_elements(self.regression[0], self.regression[1], "regression")
        for b in self.betas:
            if not 0 <= b < 1:
                raise ValueError("betas must lie in [0, 1)")
        last = 0
        for epoch, bs in self.batch_switch:
            if epoch <= last or epoch >= max(self.epochs, 1) or bs < 1:
                raise ValueError("batch_switch must be increasing (epoch, batch_size) pairs inside 1..epochs-1")
            last = epoch
        if self.optimizer in ("sgd", "lars") and self.betas != (0.9, 0.999):
            raise ValueError("betas apply to adam, adamw and lamb only")
        n_train, n_test = DATASET_SIZES.get(self.dataset, (None, None))
        for name, subset, n in (
            ("train_subset", self.train_subset, n_train),
            ("test_subset", self.test_subset, n_test),
        ):
            if subset is not None and n is not None and subset > n:
                raise ValueError(f"{name} {subset} exceeds the {n} examples of {self.dataset}")
        n_train = self.train_subset or n_train
        largest = max([self.batch_size, *(b for _, b in self.batch_switch)])
        if n_train is not None and largest > n_train:
            raise ValueError(f"batch size {largest} exceeds the {n_train} training examples")
        if self.adam_second_moment == "micro-batch":
            if self.optimizer not in ("adam", "adamw") or self.micro_batch is None or self.loss_reduction != "mean":
                raise ValueError(
                    "adam_second_moment 'micro-batch' needs optimizer adam or adamw, a micro_batch and a mean loss"
                )
            if self.optimizer == "adam" and self.weight_decay > 0:
                raise ValueError("adam_second_moment 'micro-batch' takes decoupled weight decay only (adamw)")
        if self.micro_batch is not None:
            sizes = {self.batch_size} | {b for _, b in self.batch_switch}
            if any(b % self.micro_batch for b in sizes):
                raise ValueError(f"micro_batch {self.micro_batch} must divide every batch size ({sorted(sizes)})")
        return self

    # --- derived values -------------------------------------------------------------------------
    @property
    def order_seed(self) -> int:
        """Seed of the data order; the init seed unless set apart."""
        return self.seed if self.data_seed is None else self.data_seed

    def batch_size_at(self, epoch: int) -> int:
        bs = self.batch_size
        for start, b in self.batch_switch:
            if epoch >= start:
                bs = b
        return bs

    @property
    def key(self) -> str:
        return content_key(self.as_dict())

    def __hash__(self) -> int:  # the args dicts are not hashable; equal specs have equal keys
        return hash(self.key)

    @property
    def user_model(self) -> bool:
        """The model is the user's (a reference), trained on the generic stacked path."""
        return is_reference(self.model)


# Fields a group's runs must share so that they can step in lock-step: everything except seeds and
# the optimizer's hyperparameters, which live in per-run tensors.
PER_RUN_FIELDS = frozenset(
    {
        "seed",
        "data_seed",
        "optimizer",
        "lr",
        "momentum",
        "nesterov",
        "weight_decay",
        "betas",
        "eps",
        "trust_coefficient",
        "lr_schedule",
    }
)


def group_key(spec: RunSpec) -> str:
    shared = {k: v for k, v in spec.full_dict().items() if k not in PER_RUN_FIELDS}
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]


class Checkpoint(BaseModel):
    """The weights of `run` after `epoch` epochs (0: its initialisation), as a task's starting point."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    run: RunSpec
    epoch: Epochs = Field(ge=0)

    @model_validator(mode="after")
    def _inside(self) -> "Checkpoint":
        if self.epoch > self.run.epochs:
            raise ValueError(f"checkpoint epoch {self.epoch} is after the run's last epoch ({self.run.epochs})")
        return self


class TaskSpec(PlainData):
    """A computation at fixed weights: a registered `kind` (batchlab.tasks.TASKS), its arguments, a seed,
    and optionally the checkpoint it starts from, and any other checkpoints it reads (`others`: e.g. the far end
    of a line between two runs' weights). Vectorised over examples or trials, it returns named arrays and scalars.
    The driver trains the checkpoints' runs first when the store lacks them."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kind: str
    args: dict[str, Any] = Field(default_factory=dict)
    seed: Seed = Field(0, ge=0)
    start: Checkpoint | None = None
    others: tuple[Checkpoint, ...] = ()

    @model_validator(mode="after")
    def _others_after_a_start(self) -> "TaskSpec":
        if self.others and self.start is None:
            raise ValueError("a task that reads other checkpoints starts from one (start)")
        return self

    @property
    def checkpoints(self) -> list[Checkpoint]:
        """Every checkpoint the task reads: its start, then the others."""
        return ([] if self.start is None else [self.start]) + list(self.others)

    @property
    def key(self) -> str:
        # the start is named by its run's key, so a task's key follows the run's own key rules; `others` only when
        # given, so the keys of single-checkpoint tasks are what they were
        body = {"unit": "task", "kind": self.kind, "args": self.args, "seed": self.seed}
        if self.start is not None:
            body["start"] = {"run": self.start.run.key, "epoch": self.start.epoch}
        if self.others:
            body["others"] = [{"run": c.run.key, "epoch": c.epoch} for c in self.others]
        return content_key(body)


WorkSpec = RunSpec | TaskSpec

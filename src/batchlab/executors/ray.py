"""Run a study's work units as Ray tasks: every GPU (or CPU) of one machine, or a Ray cluster.

`RayExecutor` implements `contract.Executor`: units in, (unit, result) out as each finishes. Each unit
becomes one Ray task that asks for `cpus_per_unit` CPUs and `gpus_per_unit` GPUs and calls
`batchlab.executors.local.execute(unit, device, data_dir)` on the worker Ray gives it.
What travels is the plain unit data (specs; for a task the checkpoint arrays the driver read from
the store) and the result; not the store, not the data sets: a worker loads MNIST from the package
and Fashion-MNIST from `data_dir` (or its own $BATCHLAB_DATA), which must exist on the workers.

Progress is counted per finished unit: a training unit's run-epochs reach `on_epoch` when the unit
is done (a unit's epochs are not streamed back while it trains), then its results reach `on_chunk`
(the driver stores them there, one transaction per run, as the local executor does per chunk).

A worker that dies loses only its unit: Ray runs it again (`max_retries`). A unit that still fails
(or raises) comes back as a `UnitFailure` in place of its result; the driver stores everything else
and reports the failure, and running the same command again computes only what is missing.

`import ray` happens only here, when a RayExecutor is made: Ray is the optional extra `batchlab[ray]`.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Callable, Iterable, Iterator

import torch

from ..errors import UsageError, one_line
from .contract import Capabilities, Result, TrainUnit, Unit, UnitFailure
from .local import execute

INSTALL_HINT = "--executor ray needs Ray, which is not installed: pip install 'batchlab[ray]'"


def run_on_worker(fn: Callable, unit: Unit, device: str, data_dir: str | None, threads: int) -> Result:
    """What a Ray task runs: `fn` (batchlab.executors.local.execute) on one unit, with as many torch threads as
    the CPUs the unit asked for (two units on one machine then do not oversubscribe its cores)."""
    torch.set_num_threads(threads)
    return fn(unit, device, data_dir)


class RayExecutor:
    """Runs each unit as a Ray task with the resources it asks for; results come back to the driver.

    `address`: None starts Ray on this machine (every CPU and GPU it has); "auto" or "ray://HOST:10001"
    joins an existing cluster. When Ray is already initialised in this process, that instance is used.
    `gpus_per_unit`: None means 1 when the cluster has a GPU (and `device` is not cpu), else 0; a unit
    that asks for a GPU runs on "cuda" (the GPU Ray assigned it), one that asks for none on "cpu".
    `fn` is the function a worker calls (default `execute`; tests pass a wrapper).
    """

    name = "ray"
    where = "on the Ray workers"
    # a unit's steps happen on a worker: only finished units come back; a kept state travels inside its unit
    capabilities = Capabilities(live=False, partial=False, resume=True)

    def __init__(
        self,
        address: str | None = None,
        *,
        gpus_per_unit: float | None = None,
        cpus_per_unit: int = 1,
        device: str = "auto",
        max_retries: int = 3,
        fn: Callable = execute,
    ):
        try:
            import ray
        except ImportError:
            raise UsageError(INSTALL_HINT) from None
        self.ray = ray
        self.address = address
        self.device = str(device)
        kind = self.device.split(":")[0]
        if kind not in ("auto", "cpu", "cuda"):
            raise UsageError(f"--device {device}: with --executor ray, use auto, cpu or cuda")
        if gpus_per_unit is not None and gpus_per_unit < 0:
            raise UsageError(f"--gpus-per-unit {gpus_per_unit:g}: must be 0 or more")
        if kind == "cpu" and gpus_per_unit:
            raise UsageError(f"--device cpu with --gpus-per-unit {gpus_per_unit:g}: a unit on the CPU needs no GPU")
        if kind == "cuda" and gpus_per_unit == 0:
            raise UsageError(f"--device {device} with --gpus-per-unit 0: a unit on a GPU must ask for one")
        if cpus_per_unit < 1:
            raise UsageError(f"--cpus-per-unit {cpus_per_unit}: must be 1 or more")
        self.gpus_per_unit = {"cpu": 0, "cuda": 1}.get(kind) if gpus_per_unit is None else gpus_per_unit
        self.cpus_per_unit = int(cpus_per_unit)
        self.max_retries = max_retries
        self.fn = fn
        self.remote = None
        self.started_ray = False
        self.slots = 1

    # --- connecting ----------------------------------------------------------------------------------
    def start(self) -> RayExecutor:
        """Connect to (or start) Ray and check that a unit's resources fit on some node; bad input -> UsageError."""
        if self.remote is not None:
            return self
        ray = self.ray
        where = "a local Ray instance" if self.address is None else f"the Ray cluster at {self.address}"
        if not ray.is_initialized():
            kwargs = {"logging_level": logging.WARNING}
            if self.address is None:
                kwargs["include_dashboard"] = False
            try:
                ray.init(address=self.address, **kwargs)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
                hint = " (is the cluster up? `ray status` on its head node)" if self.address else ""
                raise UsageError(f"cannot start or reach {where}: {one_line(e)}{hint}") from None
            self.started_ray = True
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        most_gpus = max((n.get("GPU", 0) for n in nodes), default=0)
        most_cpus = max((n.get("CPU", 0) for n in nodes), default=0)
        if self.gpus_per_unit is None:
            self.gpus_per_unit = 1 if most_gpus >= 1 else 0
        if self.gpus_per_unit > most_gpus:
            self.close()
            raise UsageError(
                f"--gpus-per-unit {self.gpus_per_unit:g}: no node of {where} has that many GPUs "
                f"(at most {most_gpus:g}); use --gpus-per-unit 0 to train on CPUs"
            )
        if self.cpus_per_unit > most_cpus:
            self.close()
            raise UsageError(
                f"--cpus-per-unit {self.cpus_per_unit}: no node of {where} has that many CPUs (at most {most_cpus:g})"
            )
        total = sum(n.get("GPU", 0) if self.gpus_per_unit else n.get("CPU", 0) for n in nodes)
        self.slots = max(1, int(total // (self.gpus_per_unit or self.cpus_per_unit)))
        self.remote = ray.remote(run_on_worker).options(
            num_cpus=self.cpus_per_unit,
            num_gpus=self.gpus_per_unit,
            max_retries=self.max_retries,
            retry_exceptions=False,  # a unit that raises would raise again: only a lost worker is retried
        )
        return self

    def close(self) -> None:
        """Shut Ray down if this executor started it (an instance it joined is left running)."""
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False
        self.remote = None

    def __enter__(self) -> RayExecutor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def worker_device(self) -> str:
        return "cuda" if self.gpus_per_unit else "cpu"

    def device_type(self, device: torch.device) -> str:
        """Where units run is what they ask Ray for, whatever the driver's device (known once started)."""
        return self.start().worker_device

    # --- running -------------------------------------------------------------------------------------
    def map(
        self,
        units: Iterable[Unit],
        device=None,
        data_dir: str | None = None,
        *,
        on_epoch: Callable[[int, int], None] | None = None,
        on_chunk: Callable[[list], None] | None = None,
    ) -> Iterator[tuple[Unit, Result | UnitFailure]]:
        """Yield (unit, result) as units finish, in any order; a unit that could not be computed yields
        (unit, UnitFailure). `device` is not used: a unit runs on the GPU Ray assigns it, or on a CPU.

        Units are submitted as slots free up (twice as many in flight as the cluster runs at once), so a
        long list of tasks does not hold all its checkpoint arrays in Ray's object store at once.
        """
        self.start()
        ray = self.ray
        data_dir = None if data_dir is None else os.path.abspath(data_dir)  # a worker's working directory differs
        pending = iter(units)
        in_flight: dict = {}  # object ref -> unit
        window = 2 * self.slots

        def submit() -> None:
            while len(in_flight) < window:
                unit = next(pending, None)
                if unit is None:
                    return
                ref = self.remote.remote(self.fn, unit, self.worker_device, data_dir, self.cpus_per_unit)
                in_flight[ref] = unit

        try:
            submit()
            while in_flight:
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                unit = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:
                    result = UnitFailure(unit, describe_failure(e))
                submit()
                if isinstance(unit, TrainUnit) and not isinstance(result, UnitFailure):
                    if on_epoch is not None:
                        for epochs, runs in collections.Counter(s.epochs for s in unit.specs).items():
                            on_epoch(runs, epochs)
                    if on_chunk is not None:
                        on_chunk(result)
                yield unit, result
        finally:  # Ctrl-C, or the driver stopped reading: nothing left running for nobody
            for ref in in_flight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished, or the connection is gone: nothing to stop
                    pass


def describe_failure(e: Exception) -> str:
    """One line for a failed Ray task: the exception the unit raised, or how its worker was lost."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, Exception):
        return f"{type(cause).__name__}: {one_line(cause)}"
    text = one_line(e)
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"

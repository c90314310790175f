"""Timing on a device, shared by `batchlab bench` and the tasks that measure cost (`step-cost`); the baselines
`batchlab bench` times the engine against: the textbook loop, PyTorch's own ensembling recipe (the "peer"), and
the engine's generic path for the built-in MLP given by reference as a user's model.

A CUDA kernel returns before it has run: every timing synchronises the device before it starts and
after it ends, and takes the best of a few repeats (the least disturbed by other work).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from .engine import RunSpec
from .engine.data import load_for
from .engine.train import GroupTrainer
from .models import build_model, init_module


def clock(seconds: float) -> str:
    """Seconds as H:MM:SS, as progress lines and estimates print them."""
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeat: int = 1) -> float:
    """Best wall time of `repeat` calls of fn, synchronised."""
    best = math.inf
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def peak_memory(fn, device: torch.device) -> int | None:
    """Peak bytes the CUDA allocator held while fn ran; None on other devices (PyTorch keeps no peak of
    its CPU allocations)."""
    if device.type != "cuda":
        fn()
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return int(torch.cuda.max_memory_allocated(device))


def engine_steps_time(
    specs: list[RunSpec],
    device: torch.device,
    steps: int,
    path: str = "auto",
    data_dir: str | None = None,
    setup=None,
    repeat: int = 1,
) -> float:
    """Seconds per lock-step step of the engine for a group of runs (training only, no evaluation).

    `path`: the step path asked for (engine/paths, `choose_path`). `setup(trainer)`, if given, may switch one
    of the path's tricks off before the timing (an ablation); `repeat`: the best of that many timings of
    `steps` steps."""
    trainer = GroupTrainer(specs, load_for(specs[0], device, data_dir), device, path)
    if setup is not None:
        setup(trainer)
    bs = specs[0].batch_size
    per_epoch = trainer.data.n_train // bs
    state = trainer.state
    state.start_epoch(0)

    def loop(n):
        done = 0
        while done < n:
            k = min(n - done, per_epoch)
            state.offset.zero_()
            state.epoch_step.zero_()  # the epoch's lr table again
            for _ in range(k):
                trainer.step(bs)
            done += k

    loop(min(10, steps))  # warm-up, graph capture
    return timed(lambda: loop(steps), device, repeat) / steps


# --- the baselines: the textbook loop, PyTorch's own ensembling recipe, the engine's generic path --------------


def naive_steps_time(spec: RunSpec, device: torch.device, steps: int, repeat: int = 1) -> float:
    """Seconds per step of the textbook loop: nn.Module + torch.optim.SGD + DataLoader (CPU data); the best
    of `repeat` timings."""
    data = load_for(spec, torch.device("cpu"))
    model = build_model("mlp", widths=spec.widths)
    init_module(model, spec.init, torch.Generator().manual_seed(spec.seed))
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=spec.batch_size, shuffle=True)

    def loop(n):
        it = iter(loader)
        for _ in range(n):
            try:
                x, y = next(it)
            except StopIteration:
                it = iter(loader)
                x, y = next(it)
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()

    loop(min(20, steps))  # warm-up
    return timed(lambda: loop(steps), device, repeat) / steps


def naive_eval_time(spec: RunSpec, device: torch.device) -> float:
    """Seconds of the textbook per-epoch evaluation: full train and test sets through a DataLoader."""
    data = load_for(spec, torch.device("cpu"))
    model = build_model("mlp", widths=spec.widths).to(device)

    @torch.no_grad()
    def evaluate():
        for x_all, y_all in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
            correct = 0
            for x, y in DataLoader(TensorDataset(x_all, y_all), batch_size=1000):
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()

    evaluate()
    return timed(evaluate, device)


def reference_mlp(widths: tuple[int, ...] = (1024, 1024)) -> torch.nn.Module:
    """The built-in MLP as a user would bring it (`--model batchlab.timing:reference_mlp`): flattening its input,
    initialised by PyTorch's defaults under the run's seed. Given by reference, it takes the engine's generic
    path (any nn.Module), not the MLP's folded or compiled step."""
    return torch.nn.Sequential(torch.nn.Flatten(), build_model("mlp", widths=tuple(widths)))


def generic_spec(batch_size: int, widths: tuple[int, ...], **kw) -> RunSpec:
    """A run of `reference_mlp` by reference: the engine's generic stacked path."""
    return RunSpec(
        batch_size=batch_size,
        epochs=1,
        model="batchlab.timing:reference_mlp",
        model_args={"widths": list(widths)},
        **kw,
    )


def peer_steps_time(specs: list[RunSpec], device: torch.device, steps: int, repeat: int = 1) -> float:
    """Seconds per step of PyTorch's own ensembling recipe for `specs` (one model each, every run its own lr and
    data order): parameters stacked with `torch.func.stack_module_state`, the gradients of every run at once with
    `vmap(grad(loss))` over `functional_call`, and an in-place SGD update (the best of `repeat` timings)."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    spec = specs[0]
    data = load_for(spec, device)
    models = []
    for s in specs:
        m = build_model("mlp", widths=s.widths)
        init_module(m, s.init, torch.Generator().manual_seed(s.seed))
        models.append(m.to(device))
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}
    base = models[0]
    lrs = torch.tensor([s.lr for s in specs], device=device)

    def loss(p, b, x, y):
        return F.cross_entropy(functional_call(base, (p, b), (x,)), y)

    grads_of = vmap(grad(loss))
    x_train, y_train = data.x_train, data.y_train
    n, bs, runs = x_train.shape[0], spec.batch_size, len(specs)
    gen = torch.Generator(device="cpu").manual_seed(0)
    orders = torch.stack([torch.randperm(n, generator=gen) for _ in range(runs)]).to(device)  # a data order each
    per_epoch = n // bs

    def loop(k):
        for i in range(k):
            j = i % per_epoch
            idx = orders[:, j * bs : (j + 1) * bs]
            g = grads_of(params, buffers, x_train[idx], y_train[idx])
            for name, p in params.items():
                p.sub_(lrs.view(-1, *([1] * (p.dim() - 1))) * g[name])

    loop(min(10, steps))  # warm-up
    return timed(lambda: loop(steps), device, repeat) / steps


def generic_steps_time(
    specs: list[RunSpec], device: torch.device, steps: int, repeat: int = 1
) -> tuple[float | None, str]:
    """Seconds per step of the engine's generic path for user-model `specs`, and a note; (None, why) when the
    engine cannot train them here."""
    try:
        return engine_steps_time(specs, device, steps, repeat=repeat), ""
    except Exception as e:  # an engine without the generic path (or without it on this device): say so, go on
        return None, f"generic path not timed: {type(e).__name__}: {' '.join(str(e).split())}"

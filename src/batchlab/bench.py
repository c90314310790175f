"""`batchlab bench`: the engine against the textbook loop on the same work, and against the floor.

Everything runs in one process on one device: the device's float32 matmul rate and memory
bandwidth are measured first (not taken from a datasheet), then each workload is timed for the
naive baseline (an nn.Module, torch.optim.SGD, a DataLoader over a TensorDataset, one run after
another) and for the engine (stacked runs, whole step in a CUDA graph, fused update); 32 runs also for
PyTorch's own ensembling recipe (the "peer": `torch.func.stack_module_state` + `vmap(grad(loss))` + an in-place
SGD update), beside the built-in MLP's fast path and beside the engine's generic path, which the same MLP
takes when it is given by reference as a user's model (P3).

Floors: FLOP time = 6 x params x examples / measured rate (forward 2, backward 4 FLOPs per weight
per example); byte time = the weight traffic a step cannot avoid / measured bandwidth: forward
reads W, backward reads W and writes dW, the update reads W and dW and writes W: 6 x 4 bytes per
weight per run-step (float32), plus the batch itself.
"""

from __future__ import annotations

import json
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

import torch

from .engine import RunSpec
from .env import environment
from .models import build_model
from .timing import (  # noqa: F401  (sync: re-exported for callers)
    engine_steps_time,
    generic_spec,
    generic_steps_time,
    naive_eval_time,
    naive_steps_time,
    peer_steps_time,
    sync,
    timed,
)


def measure_ceilings(device: torch.device) -> dict:
    """Measured float32 matmul rate (TF32 off) and memory bandwidth (copy: bytes read + written)."""
    n = 8192 if device.type == "cuda" else 1024
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    reps = 10 if device.type == "cuda" else 3
    t = timed(lambda: [a @ b for _ in range(reps)], device, 3) / reps
    torch.backends.cuda.matmul.allow_tf32 = old
    flops = 2 * n**3 / t
    size = (1 << 28) if device.type == "cuda" else (1 << 24)  # floats: 1 GiB on the GPU
    src = torch.empty(size, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = timed(lambda: [dst.copy_(src) for _ in range(reps)], device, 3) / reps
    return {"fp32_flops_per_s": flops, "bandwidth_bytes_per_s": 2 * size * 4 / t}


def fold_tiny_batches(trainer) -> None:
    """Ablation: the folded step also for the tiny batches that the GPU gives to multiply-sum layers."""
    trainer.path.min_batch = 0


def no_deferral(trainer) -> None:
    """Ablation: every tiny-batch update added to the weights at once instead of deferred (engine/fold.py)."""
    trainer.path.fold.defer_rows = 0


def uncompiled(trainer) -> None:
    """Ablation: the compiled path's step (in CUDA graphs) with the eager loss and update, cuBLAS layers."""
    path = trainer.path
    path.losses, path.update = path.eager_losses, path.eager_update
    trainer.state.stack.matvec_max_batch = 0


def unpadded(trainer) -> None:
    """Ablation: the weights in contiguous storage instead of rows padded past 4 KiB (Stack.pad_rows)."""
    params = trainer.state.stack.params
    for name, w in params.items():
        params[name] = w.detach().contiguous().requires_grad_(w.requires_grad)


def reference_spec(batch_size: int, **kw) -> RunSpec:
    return RunSpec(batch_size=batch_size, epochs=1, **kw)


def p6_from_store(results_dir: Path, device: torch.device, progress=print) -> dict:
    """P6: the engine's recorded time for every run in a results store vs the naive loop's time
    for the same runs, extrapolated from measured naive step times at each batch size."""
    from .engine.schedules import epoch_plan
    from .store import Store

    with Store(results_dir, readonly=True) as store:
        records = store.runs(store.keys())
    specs = {k: RunSpec(**r.config) for k, r in records.items()}
    steps_by_bs: dict[int, int] = {}
    epochs = 0
    for spec in specs.values():
        for bs, steps in epoch_plan(spec, 60_000 if spec.train_subset is None else spec.train_subset):
            steps_by_bs[bs] = steps_by_bs.get(bs, 0) + steps
        epochs += spec.epochs + 1
    head = next(iter(specs.values()))
    per_step = {
        bs: naive_steps_time(head.model_copy(update={"batch_size": bs, "epochs": 1}), device, 1000 if bs < 16 else 200)
        for bs in sorted(steps_by_bs)
    }
    eval_s = naive_eval_time(head, device)
    naive = sum(per_step[bs] * n for bs, n in steps_by_bs.items()) + eval_s * epochs
    engine = sum(r.wall_s / r.group_size for r in records.values())
    progress(f"P6: {len(specs)} runs, naive {naive:.0f} s (extrapolated), engine {engine:.0f} s")
    return {
        "workload": f"P6 every run of the stored studies ({len(specs)} runs, 3 seeds)",
        "unit": "all runs",
        "naive_s": naive,
        "engine_s": engine,
        "speedup": naive / engine,
        "target_speedup": 30.0,
        "meets_target": bool(naive / engine >= 30),
        "naive_step_s": per_step,
        "naive_eval_s": eval_s,
        "steps_by_batch_size": steps_by_bs,
        "evaluations": epochs,
        "note": (
            "naive time extrapolated: measured seconds per step at each batch size (a sample of "
            "200-1000 steps) x the runs' steps, plus a measured full evaluation x evaluations; "
            "engine time = the recorded wall time of every group (evaluation and compilation included)"
        ),
    }


def floors(n_params: int, examples_per_run_step: int, runs: int, ceilings: dict) -> dict:
    """FLOP time and byte time of one lock-step step of `runs` runs."""
    flop = 6 * n_params * examples_per_run_step * runs / ceilings["fp32_flops_per_s"]
    byte = (6 * 4 * n_params + 4 * 785 * examples_per_run_step) * runs / ceilings["bandwidth_bytes_per_s"]
    return {"flop_s": flop, "byte_s": byte, "floor_s": max(flop, byte), "bound": "FLOPs" if flop > byte else "bytes"}


def workload(
    name: str,
    target_s: float | None,
    unit: str,
    naive_s: float,
    engine_s: float,
    floor: dict,
    scale: float,
    note: str = "",
    target_speedup: float | None = None,
    target_fraction: float | None = None,
    peer_s: float | None = None,
    target_peer: bool = False,
) -> dict:
    """One row: times per `unit` (scaled from measured per-step times by `scale` steps).

    Targets, each optional and all required when given: an absolute time (`target_s`), a speed-up over the
    textbook loop measured in the same run (`target_speedup`), a fraction of the floor (`target_fraction`), at
    least as fast as PyTorch's own ensembling recipe measured in the same run (`target_peer`, with `peer_s`)."""
    row = {
        "workload": name,
        "unit": unit,
        "naive_s": naive_s * scale,
        "peer_s": None if peer_s is None else peer_s * scale,
        "target_peer": target_peer,
        "engine_s": engine_s * scale,
        "speedup": naive_s / engine_s,
        "floor_s": floor["floor_s"] * scale,
        "flop_s": floor["flop_s"] * scale,
        "byte_s": floor["byte_s"] * scale,
        "bound": floor["bound"],
        "fraction_of_floor": floor["floor_s"] / engine_s,
        "target_s": target_s,
        "target_speedup": target_speedup,
        "target_fraction": target_fraction,
        "note": note,
    }
    checks = [
        *([row["engine_s"] <= target_s] if target_s is not None else []),
        *([row["speedup"] >= target_speedup] if target_speedup is not None else []),
        *([row["fraction_of_floor"] >= target_fraction] if target_fraction is not None else []),
        *([peer_s is not None and engine_s <= peer_s] if target_peer else []),
    ]
    row["meets_target"] = bool(all(checks)) if checks else None
    return row


def target_text(row: dict) -> str:
    """The row's targets in words, and whether they were met: '≥ 1x textbook, ≥ 75% of floor: met'."""
    parts = []
    if row.get("target_s") is not None:
        parts.append(f"≤ {_fmt_time(row['target_s'])}")
    if row.get("target_speedup") is not None:
        parts.append(f"≥ {row['target_speedup']:g}x textbook")
    if row.get("target_fraction") is not None:
        parts.append(f"≥ {row['target_fraction']:.0%} of floor")
    if row.get("target_peer"):
        parts.append("≤ peer")
    if not parts:
        return "—"
    return f"{', '.join(parts)} {'met' if row['meets_target'] else 'missed'}"


def run_bench(device: torch.device, quick: bool = False, progress=print, studies_dir: Path | None = None) -> dict:
    """P1 (32 runs, batch 64, one epoch), P2 (batch 2 per-step latency) and the 1-run reference."""
    ceilings = measure_ceilings(device)
    progress(
        f"ceilings: {ceilings['fp32_flops_per_s'] / 1e12:.1f} TFLOP/s float32, "
        f"{ceilings['bandwidth_bytes_per_s'] / 1e9:.0f} GB/s"
    )
    widths = (1024, 1024) if not quick else (256, 256)
    n_params = sum(p.numel() for p in build_model("mlp", widths=widths).parameters())
    steps = 300 if device.type == "cuda" else 20
    # the best of 3 timings on the CPU, for the textbook loop and the engine alike: one timing of this 2-core
    # machine varies by 10-30 % from the next
    repeat = 1 if device.type == "cuda" else 3
    rows = []
    n_train = 60_000
    extra = {} if not quick else {"widths": widths, "train_subset": 10_000}
    if quick:
        n_train = 10_000

    gpu_targets = device.type == "cuda" and not quick  # P1's 0.6 s and P2's 100 us are targets for a GPU
    # on the CPU, targets relative to the textbook loop and the floor, the same for both models: never slower
    # than the textbook loop; 32 runs within 1.35x of the floor; batch 2 at most half the textbook's time
    cpu = device.type == "cpu"
    base64 = reference_spec(64, **extra)
    naive64 = naive_steps_time(base64, device, steps, repeat)
    epoch_steps = math.ceil(n_train / 64)
    variants = [(1, None, "float32"), (32, 0.6, "float32")]
    if device.type == "cuda":
        variants.append((32, None, "tf32"))  # the same work with TF32 matmuls (an option, not the default)
    peer64 = None
    for runs, target, precision in variants:
        specs = [reference_spec(64, seed=s, lr=0.01 * (1 + s % 4), precision=precision, **extra) for s in range(runs)]
        eng = engine_steps_time(specs, device, steps, repeat=repeat)
        peer = None
        if runs == 32 and precision == "float32":
            peer = peer64 = peer_steps_time(specs, device, steps, repeat)
        name = f"P1 mlp batch 64, {runs} run{'s' if runs > 1 else ''}, one epoch" + (
            f" ({precision})" if precision != "float32" else ""
        )
        rows.append(
            workload(
                name,
                target if gpu_targets else None,
                "epoch",
                naive64 * runs,
                eng,
                floors(n_params, 64, runs, ceilings),
                epoch_steps,
                "naive = one run after another; times from a sample of steps x steps per epoch",
                target_speedup=1.0 if cpu else None,
                target_fraction=0.75 if cpu and runs == 32 else None,
                peer_s=peer,
            )
        )
        peer_text = "" if peer is None else f", peer {rows[-1]['peer_s']:.3f} s"
        progress(f"{name}: naive {rows[-1]['naive_s']:.3f} s{peer_text}, engine {rows[-1]['engine_s']:.3f} s")
    # a user model: the same MLP given by reference, so that it takes the generic path (any nn.Module), against
    # the textbook loop and PyTorch's own ensembling recipe (vmap over stack_module_state)
    subset = {"train_subset": extra["train_subset"]} if "train_subset" in extra else {}
    generic = [generic_spec(64, widths, seed=s, lr=0.01 * (1 + s % 4), **subset) for s in range(32)]
    eng_generic, why = generic_steps_time(generic, device, steps, repeat)
    if eng_generic is not None:
        name = "P3 user model (the mlp by reference, generic path), 32 runs, batch 64, one epoch"
        rows.append(
            workload(
                name,
                None,
                "epoch",
                naive64 * 32,
                eng_generic,
                floors(n_params, 64, 32, ceilings),
                epoch_steps,
                "peer = torch.func.stack_module_state + vmap(grad(loss)) + an in-place SGD update, 32 runs at once",
                target_speedup=1.0 if cpu else None,
                peer_s=peer64,
                target_peer=True,
            )
        )
        w = rows[-1]
        progress(f"{name}: naive {w['naive_s']:.3f} s, peer {w['peer_s']:.3f} s, engine {w['engine_s']:.3f} s")
    else:
        progress(why)
    base2 = reference_spec(2, **extra)
    naive2 = naive_steps_time(base2, device, steps * (3 if device.type == "cuda" else 10), repeat)
    eng2 = engine_steps_time([base2], device, steps * 10, repeat=repeat)
    rows.append(
        workload(
            "P2 mlp batch 2, 1 run, per step",
            100e-6 if gpu_targets else None,
            "step",
            naive2,
            eng2,
            floors(n_params, 2, 1, ceilings),
            1,
            target_speedup=2.0 if cpu else None,
        )
    )
    progress(f"P2: naive {naive2 * 1e6:.0f} us/step, engine {eng2 * 1e6:.0f} us/step")
    # the same step without CUDA graphs / fusion / the folded update: what each trick is worth
    ablation = {}
    specs32 = [reference_spec(64, seed=s, lr=0.01 * (1 + s % 4), **extra) for s in range(32)]
    if device.type == "cuda":
        ablation["32 runs batch 64, eager step, unfused update (s/step)"] = engine_steps_time(
            specs32, device, steps, "autograd"
        )
        ablation["32 runs batch 64, graph, unfused update (s/step)"] = engine_steps_time(
            specs32, device, steps, "compiled", setup=uncompiled
        )
        ablation["32 runs batch 64, graph, fused update (s/step)"] = engine_steps_time(
            specs32, device, steps, "compiled"
        )
        ablation["1 run batch 2, eager step (s/step)"] = engine_steps_time([base2], device, steps, "autograd")
    # the folded SGD step (on by default on the CPU, opt-in on CUDA) against the autograd step
    unfolded = "compiled" if device.type == "cuda" else "autograd"  # what "auto" takes without the fold
    ablation["32 runs batch 64, update folded into the matmul (s/step)"] = engine_steps_time(
        specs32, device, steps, "folded"
    )
    ablation["32 runs batch 64, autograd step and a separate update (s/step)"] = engine_steps_time(
        specs32, device, steps, unfolded
    )
    fold_b2 = 10 * steps if device.type == "cpu" else steps
    ablation["1 run batch 2, update folded into the matmul (s/step)"] = engine_steps_time(
        [base2], device, fold_b2, "folded", setup=fold_tiny_batches
    )
    ablation["1 run batch 2, autograd step and a separate update (s/step)"] = engine_steps_time(
        [base2], device, fold_b2, unfolded
    )
    if device.type == "cpu":  # the CPU's folded step: deferred tiny-batch updates, padded weight rows
        ablation["1 run batch 2, folded, updates not deferred (s/step)"] = engine_steps_time(
            [base2], device, fold_b2, setup=no_deferral, repeat=repeat
        )
        ablation["1 run batch 2, folded, updates deferred (s/step)"] = engine_steps_time(
            [base2], device, fold_b2, repeat=repeat
        )
        ablation["32 runs batch 64, folded, weight rows not padded (s/step)"] = engine_steps_time(
            specs32, device, steps, setup=unpadded
        )
    p6 = p6_from_store(studies_dir, device, progress) if studies_dir else None
    env = environment(device)
    return {
        "p6": p6,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": env["device"],
        "torch": env["torch"],
        "cuda": env["cuda"],
        "python": platform.python_version(),
        "git_commit": env["git_commit"],
        "quick": quick,
        "ceilings": ceilings,
        "n_params": n_params,
        "workloads": rows,
        "ablation": ablation,
    }


def save(result: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tag = "".join(c if c.isalnum() else "-" for c in result["device"].split("(")[0].strip().lower())
    tag += "-quick" if result.get("quick") else ""  # a quick result never replaces the full one of that day
    path = directory / f"bench-{tag}-{result['date'][:10]}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)
    return path


START, END = "<!-- perf-table:start -->", "<!-- perf-table:end -->"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def performance_table(directory: Path) -> str:
    """Markdown table of the latest recorded bench result per device and model (generated, never typed); a
    `--quick` result (784-256-256-10 on 10k examples) gets its own rows, labelled so."""
    latest: dict[str, dict] = {}
    for path in sorted(directory.glob("bench-*.json")):
        result = json.loads(path.read_text())
        label = result["device"] + (", quick model" if result.get("quick") else "")
        if label not in latest or result["date"] > latest[label]["date"]:
            latest[label] = result | {"file": path.name}
    lines = [
        "| device | workload | naive | peer | engine | speed-up | floor (bound) | fraction of floor | target |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for device, result in latest.items():
        for w in result["workloads"]:
            target = target_text(w)
            lines.append(
                f"| {device} | {w['workload']} | {_fmt_time(w['naive_s'])} | {_fmt_time(w.get('peer_s'))} "
                f"| {_fmt_time(w['engine_s'])} "
                f"| {w['speedup']:.1f}x | {_fmt_time(w['floor_s'])} ({w['bound']}) "
                f"| {w['fraction_of_floor']:.0%} | {target} |"
            )
        p6 = result.get("p6")
        if p6:
            lines.append(
                f"| {device} | {p6['workload']} | {_fmt_time(p6['naive_s'])} (extrapolated) | — "
                f"| {_fmt_time(p6['engine_s'])} | {p6['speedup']:.1f}x | — | — "
                f"| ≥ 30x {'met' if p6['meets_target'] else 'missed'} |"
            )
    sources = ", ".join(
        f"`benchmarks/results/{r['file']}` ({r['date'][:10]}, torch {r['torch']})" for r in latest.values()
    )
    return "\n".join(lines) + (f"\n\nFrom {sources}." if sources else "\n\nNo GPU result recorded yet.")


def update_readme(readme: Path, directory: Path) -> bool:
    """Replace the text between the perf-table markers of the README; True if it changed."""
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{performance_table(directory)}\n{END}{tail}"
    if new != text:
        readme.write_text(new)
    return new != text

"""Does a run's result depend on its group? Seed 0 of each configuration at place 1 of 3, 9 of 16, 37 of 40 (same
configuration, other seeds) and beside one run of every other optimizer, against seed 0 in a group of 2 (and
alone). '=' is bitwise (weights and every metric), else the relative L2 distance of the weights ('m': the metrics
differ too). README, "Float32 and chaos", quotes the tables of `python benchmarks/group_independence.py THREADS
[mlp|cnn-bn]` on the 2-core CPU.
"""

import sys

import torch

from batchlab.engine import RunSpec, train_group


def compare(a, b) -> str:
    if all(torch.equal(a.params[k], b.params[k]) for k in a.params) and a.metrics == b.metrics:
        return "="
    num = sum(float((a.params[k].double() - b.params[k].double()).pow(2).sum()) for k in a.params)
    den = sum(float(b.params[k].double().pow(2).sum()) for k in b.params)
    return f"{(num / den) ** 0.5:.0e}" + ("" if a.metrics == b.metrics else "m")


torch.set_num_threads(int(sys.argv[1]))
model = sys.argv[2] if len(sys.argv) > 2 else "mlp"
if model == "mlp":  # 64 steps
    base = dict(train_subset=1024, test_subset=512, batch_size=32, epochs=2, widths=(64,))
else:  # 16 steps
    base = dict(model=model, init="torch", train_subset=256, test_subset=128, batch_size=16, epochs=1)
configs = {
    "sgd": dict(optimizer="sgd", lr=0.1),
    "momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9),
    "nesterov+wd": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": dict(optimizer="adam", lr=1e-3),
    "adamw": dict(optimizer="adamw", lr=1e-3, weight_decay=0.1),
    "lars": dict(optimizer="lars", lr=1.0, momentum=0.9),
    "lamb": dict(optimizer="lamb", lr=0.01),
}
if model != "mlp":
    configs = {k: configs[k] for k in ("sgd", "adam")}
print(f"{torch.get_num_threads()} threads, {model}")
print("precision optimizer | step path | alone | 3 | 16 | 40 | mixed")
for precision in ("float32", "float64"):
    for name, kw in configs.items():
        specs = [RunSpec(**base, **kw, precision=precision, seed=s) for s in range(40)]
        (alone,) = train_group(specs[:1], device="cpu", keep_params=True)
        pair = train_group(specs[:2], device="cpu", keep_params=True)[0]
        row = [f"{precision} {name:12s}", pair.step_path, compare(alone, pair)]
        for size, place in ((3, 1), (16, 9), (40, 37)):
            group = specs[1:size]
            group.insert(place, specs[0])
            row.append(compare(train_group(group, device="cpu", keep_params=True)[place], pair))
        others = [RunSpec(**base, **o, precision=precision, seed=100 + i) for i, o in enumerate(configs.values())]
        mixed = [o for o, n in zip(others, configs) if n != name]
        row.append(compare(train_group([*mixed, specs[0]], device="cpu", keep_params=True)[-1], pair))
        print(" | ".join(row), flush=True)

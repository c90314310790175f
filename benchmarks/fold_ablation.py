"""What the folded SGD step is worth on this device: its layout, its masks, against the autograd step.

    python benchmarks/fold_ablation.py [--quick] [--out DIR]

Times one lock-step step (CUDA graphs where there is a GPU) of the reference MLP for each variant,
one timed pass after a warm-up, and writes fold-ablation-<device>.json. Variants:
  autograd   the autograd step and the optimizer's separate (compiled on CUDA) update
  fold       the update folded into the weight-gradient matmul, in the device's default layout
  fold-fm    the same with feature-major activations [R, features, b]
  fold-bm    the same with batch-major activations [R, b, features]
  fold-nomask  feature/batch layout as the default, without the masks that keep frozen runs exact
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from batchlab.bench import fold_tiny_batches, reference_spec
from batchlab.env import environment
from batchlab.timing import engine_steps_time


def layout(feature_major: bool):
    def setup(trainer):
        trainer.path.fold.feature_major = feature_major
        trainer.path.fold.f = 1 if feature_major else 2

    return setup


def no_masks(trainer):
    update = trainer.path.fold.backward_update
    trainer.path.fold.backward_update = lambda *args, mask=True: update(*args, mask=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="784-256-256-10 on 10k examples")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    extra = dict(widths=(256, 256), train_subset=10_000) if args.quick else {}
    steps = 300 if device.type == "cuda" else 20
    rows = {}
    for runs, bs, precision in [(32, 64, "float32"), (32, 64, "tf32"), (1, 64, "float32"), (1, 2, "float32")]:
        specs = [reference_spec(bs, seed=s, lr=0.01 * (1 + s % 4), precision=precision, **extra) for s in range(runs)]
        n = steps * (5 if bs == 2 else 1)
        tiny = fold_tiny_batches if bs == 2 else (lambda t: None)
        unfolded = "compiled" if device.type == "cuda" else "autograd"
        variants = {  # name: (step path, setup); the folded step is opt-in on CUDA, so it is asked for here
            "autograd": (unfolded, None),
            "fold": ("folded", tiny),
            "fold-fm": ("folded", lambda t: (tiny(t), layout(True)(t))),
            "fold-bm": ("folded", lambda t: (tiny(t), layout(False)(t))),
            "fold-nomask": ("folded", lambda t: (tiny(t), no_masks(t))),
        }
        for name, (path, setup) in variants.items():
            t = engine_steps_time(specs, device, n, path, setup=setup)
            key = f"{runs} runs batch {bs} {precision} {name}"
            rows[key] = t
            print(f"{key:45s} {t * 1e6:9.1f} us/step", flush=True)
    env = environment(device)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": env["device"],
        "torch": env["torch"],
        "quick": args.quick,
        "seconds_per_step": rows,
    }
    tag = "".join(c if c.isalnum() else "-" for c in env["device"].lower())
    path = Path(args.out) / f"fold-ablation-{tag}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Per-step time at batch 2 with and without the multiply-sum layers (see stacked_mlp_forward)."""

import os

import torch

from batchlab.bench import engine_steps_time, reference_spec

device = torch.device("cuda")
for limit in (0, 4):
    os.environ["BATCHLAB_MATVEC_MAX_BATCH"] = str(limit)  # read when the compiled path is made
    for runs in (1, 3):
        specs = [reference_spec(2, seed=s) for s in range(runs)]
        t = engine_steps_time(specs, device, 3000)
        print(f"matvec_max_batch={limit} runs={runs} batch 2: {t * 1e6:.1f} us/step", flush=True)
    torch._dynamo.reset()

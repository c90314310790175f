"""The fast path (batched-matmul MLP forward, compiled loss and update) computes what the plain path does.

The plain path is the step path "autograd": eager, uncompiled, no multiply-sum layers.
"""

from __future__ import annotations

import torch
from torch.func import functional_call, vmap

from batchlab.engine import RunSpec
from batchlab.engine.data import load_for
from batchlab.engine.train import GroupTrainer
from batchlab.models import Stack, build_model


def test_stacked_mlp_forward_equals_vmap_of_the_module():
    base = build_model("mlp", widths=(32, 16), activation="tanh").double()
    stack = Stack.from_seeds(base, "glorot", [0, 1, 2], "cpu", torch.float64)
    x = torch.randn(3, 5, 784, dtype=torch.float64)
    reference = vmap(lambda p, xb: functional_call(base, p, (xb,)))(stack.params, x)
    torch.testing.assert_close(stack.forward(x), reference, rtol=1e-13, atol=1e-13)
    shared = vmap(lambda p: functional_call(base, p, (x[0],)))(stack.params)
    torch.testing.assert_close(stack.forward(x[0], shared_input=True), shared, rtol=1e-13, atol=1e-13)


def test_matvec_layers_equal_the_matmul_layers():
    stack = Stack.from_seeds(build_model("mlp", widths=(32, 16)), "glorot", [0, 1], "cpu", torch.float64)
    x = torch.randn(2, 3, 784, dtype=torch.float64)
    plain = stack.forward(x)
    stack.matvec_max_batch = 4
    torch.testing.assert_close(stack.forward(x), plain, rtol=1e-12, atol=1e-12)


def test_compiled_step_matches_the_plain_step():
    specs = [
        RunSpec(
            train_subset=256,
            test_subset=64,
            widths=(16,),
            batch_size=32,
            epochs=1,
            seed=s,
            lr=0.05 * (s + 1),
            momentum=0.9,
        )
        for s in range(3)
    ]
    data = load_for(specs[0], torch.device("cpu"))
    plain_trainer = GroupTrainer(specs, data, torch.device("cpu"), "autograd")
    path = plain_trainer.path
    assert path.losses == path.eager_losses and plain_trainer.state.stack.matvec_max_batch == 0
    plain = plain_trainer.run(keep_params=True)
    fused = GroupTrainer(specs, data, torch.device("cpu"), "compiled").run(keep_params=True)
    for a, b in zip(fused, plain):
        for k in a.params:
            torch.testing.assert_close(a.params[k], b.params[k], rtol=1e-5, atol=1e-6)

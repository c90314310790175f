"""`batchlab sharpness`: how sharp is my model's loss? The Hessian's top eigenvalues, its trace, batch sharpness and
ε-sharpness at the current weights (`batchlab.curvature`), for a model given by reference or the built-in MLP."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ..errors import UsageError
from .commands import DEVICE, app
from .display import out_console


@app.command("sharpness")
def sharpness_command(
    model: Optional[str] = typer.Option(
        None,
        "--model",
        help="package.module:factory returning (model, loss_fn, data) as for noise-scale, or an nn.Module (then "
        "give --data); default: the built-in 784-256-256-10 MLP at its init, on MNIST.",
    ),
    model_arg: list[str] = typer.Option([], "--model-arg", help="A keyword argument of the model factory: k=v."),
    data: Optional[str] = typer.Option(
        None, "--data", help="package.module:factory returning (x_train, y_train, x_test, y_test) or (train, test)."
    ),
    data_arg: list[str] = typer.Option([], "--data-arg", help="A keyword argument of the data factory: k=v."),
    loss: Optional[str] = typer.Option(None, "--loss", help="package.module:fn(output, target) -> mean loss."),
    examples: int = typer.Option(2048, "--examples", min=2, help="Size of the fixed subset the Hessian is of."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many of the largest eigenvalues."),
    method: str = typer.Option("lanczos", "--method", help="lanczos | power (the top eigenvalue by magnitude)"),
    max_iter: int = typer.Option(100, "--max-iter", min=1, help="Hessian-vector products at most per eigensolve."),
    tol: float = typer.Option(1e-3, "--tol", help="Relative residual at which an eigenvalue has converged."),
    trace_samples: int = typer.Option(32, "--trace-samples", min=0, help="Hutchinson vectors for tr(H) (0: none)."),
    batch_size: list[int] = typer.Option([], "--batch-size", help="Batch sharpness at this batch size (repeatable)."),
    draws: int = typer.Option(32, "--draws", min=2, help="Mini-batches per batch size for batch sharpness."),
    epsilon: Optional[float] = typer.Option(None, "--epsilon", help="Keskar et al.'s ε-sharpness with this ε."),
    device: str = DEVICE,
    seed: int = typer.Option(0, "--seed", help="Seed of the subset, the start vector, the probes and the init."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
) -> None:
    """How sharp is my model? λ_max and the top Hessian eigenvalues (Lanczos), tr(H) with its standard error, and
    optionally batch sharpness and ε-sharpness, at the current weights."""
    from ..curvature import format_sharpness, load_setup, sharpness
    from ..driver import check_device, parse_sets

    dev = check_device(device)
    where = f"--model {model}" if model else "sharpness"
    try:
        net, loss_fn, examples_data, what = load_setup(
            model, parse_sets(model_arg, "--model-arg"), data, parse_sets(data_arg, "--data-arg"), loss, seed
        )
        result = sharpness(
            net, loss_fn, examples_data, examples=examples, top_k=top_k, method=method, max_iter=max_iter, tol=tol,
            trace_samples=trace_samples, batch_sizes=tuple(batch_size), draws=draws, epsilon=epsilon, device=dev,
            seed=seed,
        )  # fmt: skip
    except (ValueError, TypeError, ImportError) as e:
        raise UsageError(f"{where}: {' '.join(str(e).split())}") from None
    if as_json:
        print(json.dumps({"model": what, **result.to_json()}, indent=1, allow_nan=False))
        return
    out_console.print(f"{what}\n{format_sharpness(result)}", highlight=False, markup=False, soft_wrap=True)

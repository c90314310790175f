"""The commands that answer "which batch size?" for a model: `noise-scale` (the proxy B_simple, and B_noise) and
`critical-batch` (the critical batch size measured, the proxies beside it, and a recommendation)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UsageError
from .commands import DATA_DIR, DEVICE, OUT, PROFILE, RUNS_CODE, _train, app, use_data_dir, user_code_overrides
from .display import out_console, print_claims


@app.command("noise-scale")
def noise_scale_command(
    model: str = typer.Option(
        ...,
        "--model",
        help="package.module:factory (or path/to/file.py:factory): a function returning (model, loss_fn, data), "
        f"data being (x, y) tensors or a DataLoader; loss_fn(output, target) with mean reduction. {RUNS_CODE}",
    ),
    samples: int = typer.Option(1024, "--samples", min=2, help="Examples the estimate uses."),
    estimator: str = typer.Option("auto", "--estimator", help="auto | per-example | two-batch"),
    device: str = DEVICE,
    seed: int = typer.Option(0, "--seed", help="Seed of the example draw and the bootstrap."),
) -> None:
    """Which batch size for your own model? Its gradient noise scale B_simple (McCandlish et al. 2018)."""
    from ..driver import check_device
    from ..noise import format_noise_scale, load_factory, noise_scale

    dev = check_device(device)
    try:
        net, loss_fn, data = load_factory(model)
        result = noise_scale(net, loss_fn, data, samples=samples, estimator=estimator, device=dev, seed=seed)
    except (ValueError, TypeError, ImportError) as e:
        raise UsageError(f"--model {model}: {' '.join(str(e).split())}") from None
    out_console.print(format_noise_scale(result), highlight=False, markup=False, soft_wrap=True)


@app.command("critical-batch")
def critical_batch_command(
    model: Optional[str] = typer.Option(
        None, "--model", help=f"package.module:factory returning an nn.Module (default: the built-in MLP). {RUNS_CODE}"
    ),
    model_arg: list[str] = typer.Option([], "--model-arg", help="A keyword argument of the model factory: k=v."),
    data: Optional[str] = typer.Option(
        None,
        "--data",
        help=f"package.module:factory returning (x_train, y_train, x_test, y_test) or (train, test). {RUNS_CODE}",
    ),
    data_arg: list[str] = typer.Option([], "--data-arg", help="A keyword argument of the data factory: k=v."),
    loss: Optional[str] = typer.Option(
        None, "--loss", help=f"package.module:fn(output, target) -> mean loss. {RUNS_CODE}"
    ),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (branch lr x k) | adam (branch lr x sqrt(k))."),
    profile: str = PROFILE,
    set_: list[str] = typer.Option([], "--set", help="A critical-batch config key: --set multipliers=1,2,4,8"),
    device: str = DEVICE,
    out: Path = OUT,
    data_dir: Optional[Path] = DATA_DIR,
    as_json: bool = typer.Option(False, "--json", help="Print the answer as JSON (docs/results-format.md)."),
) -> None:
    """Which batch size? The critical batch size measured by branched training, the proxies beside it, the time
    per step on this device, and the batch size and warmup they recommend."""
    import json

    from ..driver import parse_sets
    from ..driver.critical import STUDY, answer_from, step_times

    if optimizer not in ("sgd", "adam"):
        raise UsageError(f"--optimizer must be sgd or adam (got {optimizer!r})")
    overrides = user_code_overrides(parse_sets(set_), model, model_arg, data, data_arg, loss)
    overrides.setdefault("optimizer", optimizer)
    if data is not None:  # the quick profile's subsets are the built-in data's
        overrides.setdefault("train_subset", None)
        overrides.setdefault("test_subset", None)
    from ..driver import prepare

    prep = prepare(STUDY, profile=profile, overrides=overrides, device=device, out=out, data_dir=use_data_dir(data_dir))
    result = _train(prep)
    answer = answer_from(result.output, prep.config, step_times(prep.config, prep.device, prep.data_dir))
    answer.report = str(result.report)
    if as_json:
        print(json.dumps(answer.to_json(), indent=1, allow_nan=False))
        return
    print_claims(result.output.claims)
    out_console.print(str(answer), highlight=False, markup=False, soft_wrap=True)
    out_console.print(f"report: {result.report}", highlight=False, markup=False, soft_wrap=True)

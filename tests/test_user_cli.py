"""The user's own model and data through the CLI: `batchlab run STUDY --model pkg.mod:factory --data
pkg.mod:factory [--loss pkg.mod:fn]`, a study that cannot take them, `batchlab show`, and every bad reference
refused in one line (exit 2) before anything is written: the --out directory is not even created.

The user modules are written into a temporary folder that the test makes the current one (references are
imported with the current folder on sys.path, as from a checkout's root); each test's module has its own name.
"""

from __future__ import annotations

import itertools
import json
import textwrap
from pathlib import Path

import pytest
from conftest import cli_run
from conftest import one_line_error as assert_refused

from batchlab.driver import make_config
from batchlab.engine import RunSpec
from batchlab.engine.spec import LOSSES
from batchlab.studies import REGISTRY, get_study

pytestmark = pytest.mark.usefixtures("one_thread")

ACCEPTING = {
    "batch-size-sweep",
    "critical-batch",
    "lr-compensation",
    "schedule-switch",
    "adam-vs-sgd",
    "distance-grid",
    "linear-scaling",
    "lars",
}
TINY = ["--set", "epochs=1", "--set", "seeds=1", "--set", "batch_sizes=16,32"]

GOOD = """
import torch
from torch import nn

def model(width=8, classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(4, width), nn.ReLU(), nn.Linear(width, classes))

def data(n=64, float_targets=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + 16, 4, generator=g)
    y = torch.randn(n + 16, 3, generator=g) if float_targets else torch.randint(0, 3, (n + 16,), generator=g)
    return x[:n], y[:n], x[n:], y[n:]
"""

_names = itertools.count()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """write(source) -> the module name of a new user module in the current folder."""
    monkeypatch.chdir(tmp_path)

    def write(source: str) -> str:
        name = f"user_module_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(GOOD) + textwrap.dedent(source))
        return name

    return write


def refused(capsys, out: Path, *args, fragments=()) -> str:
    line = assert_refused(*cli_run(capsys, "run", *args, "--out", out), *fragments)
    assert not out.exists(), f"{out} was created"
    return line


# --- which studies take a user model --------------------------------------------------------------------------


def test_every_study_declares_whether_it_takes_a_user_model():
    for name, study in REGISTRY.items():
        reason = study.accepts_user_model
        assert (reason is None) == (name in ACCEPTING), name
        assert reason is None or (reason and "\n" not in reason), name


@pytest.mark.parametrize("study", sorted(set(REGISTRY) - ACCEPTING))
def test_a_study_that_cannot_take_a_user_model_says_why_in_one_line(capsys, tmp_path, user_module, study):
    mod = user_module("")
    line = refused(
        capsys, tmp_path / "res", study, "--model", f"{mod}:model", fragments=(study, "does not take a user model")
    )
    assert get_study(study).accepts_user_model in line


def test_a_refusing_study_refuses_a_set_reference_and_data_alone(capsys, tmp_path, user_module):
    mod = user_module("")
    refused(capsys, tmp_path / "res", "gradient-variance", "--set", f"model={mod}:model", fragments=("--model",))
    refused(capsys, tmp_path / "res", "equivalence", "--data", f"{mod}:data", fragments=("--data",))


def test_show_says_whether_a_study_takes_a_user_model(capsys):
    code, out, _ = cli_run(capsys, "show", "batch-size-sweep")
    assert code == 0 and "user model: accepted" in out
    code, out, _ = cli_run(capsys, "show", "gd-variants")
    assert code == 0 and "user model: not accepted: it trains a linear regression" in " ".join(out.split())


# --- what goes into the runs ----------------------------------------------------------------------------------


def test_the_references_and_arguments_go_into_every_planned_run(user_module):
    mod = user_module("")
    study = get_study("batch-size-sweep")
    overrides = {
        "model": f"{mod}:model",
        "model_args": {"width": 5},
        "dataset": f"{mod}:data",
        "dataset_args": {"n": 48},
        "batch_sizes": [16, 32],
    }
    cfg, specs = make_config(study, "quick", overrides, user_code=True)
    assert cfg.train_subset is None and cfg.test_subset is None  # the profile's MNIST subsets do not apply
    assert specs and all(isinstance(s, RunSpec) for s in specs)
    for spec in specs:
        assert (spec.model, spec.model_args, spec.dataset, spec.dataset_args) == (
            f"{mod}:model",
            {"width": 5},
            f"{mod}:data",
            {"n": 48},
        )
        assert len(spec.code_version) == 64
        body = spec.as_dict()
        assert not {"widths", "activation", "init", "normalize"} & set(body)  # the MLP's fields stay out of the key


def test_built_in_runs_name_no_user_code_fields():
    """A built-in run's spec is what it was before references existed, so its key is too."""
    for name, study in REGISTRY.items():
        _, specs = make_config(study, "quick", {})
        for spec in specs:
            runs = [spec] if isinstance(spec, RunSpec) else [spec.start.run] if getattr(spec, "start", None) else []
            for run in runs:
                assert not {"model_args", "dataset_args", "code_version"} & set(run.as_dict()), name
                assert run.as_dict().get("loss", "auto") in LOSSES, name  # a built-in loss (square) may be named


# --- bad references: one line, exit 2, nothing written -------------------------------------------------------


def test_a_module_that_cannot_be_imported(capsys, tmp_path, user_module):
    mod = user_module("")
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        "no_such_package.net:model",
        "--data",
        f"{mod}:data",
        fragments=("--model", "no_such_package.net:model", "no module named 'no_such_package'"),
    )
    broken = user_module("raise RuntimeError('half-written file')\n")
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{broken}:model",
        "--data",
        f"{mod}:data",
        fragments=(f"{broken}:model", "RuntimeError", "half-written file"),
    )
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{mod}:nothing_here",
        "--data",
        f"{mod}:data",
        fragments=(f"{mod}:nothing_here", "no attribute"),
    )


def test_a_factory_that_raises(capsys, tmp_path, user_module):
    mod = user_module("def bad_model():\n    raise ValueError('no weights file')\n")
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{mod}:bad_model",
        "--data",
        f"{mod}:data",
        fragments=("--model", f"{mod}:bad_model", "ValueError", "no weights file"),
    )
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{mod}:model",
        "--model-arg",
        "depth=3",
        "--data",
        f"{mod}:data",
        fragments=("--model", "TypeError", "depth"),
    )


def test_a_factory_that_returns_the_wrong_type(capsys, tmp_path, user_module):
    mod = user_module("def not_a_module():\n    return 'a string'\n\ndef not_data():\n    return 3\n")
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{mod}:not_a_module",
        "--data",
        f"{mod}:data",
        fragments=(f"{mod}:not_a_module", "torch.nn.Module", "str"),
    )
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{mod}:model",
        "--data",
        f"{mod}:not_data",
        fragments=("--data", f"{mod}:not_data", "(x_train, y_train, x_test, y_test)", "int"),
    )


def test_user_code_that_calls_exit_is_one_line_not_a_silent_exit(capsys, tmp_path, user_module):
    """exit() raises SystemExit: in a factory, a loss or a module's code it must not end batchlab with its code."""
    mod = user_module("def leaves(**kw):\n    raise SystemExit(0)\n\ndef loss(out, y):\n    exit(3)\n")
    quits = user_module("import sys\nsys.exit()\n")  # at import
    cases = [
        (["--model", "builtins:exit"], ("--model", "builtins:exit")),  # on the built-in data
        (["--model", f"{mod}:leaves", "--data", f"{mod}:data"], ("--model", f"{mod}:leaves")),
        (["--model", f"{mod}:model", "--data", f"{mod}:leaves"], ("--data", f"{mod}:leaves")),
        (["--model", f"{mod}:model", "--data", f"{mod}:data", "--loss", f"{mod}:loss"], ("--loss", f"{mod}:loss")),
        (["--model", f"{quits}:model", "--data", f"{mod}:data"], ("--model", f"{quits}:model")),
    ]
    for args, named in cases:
        refused(capsys, tmp_path / "res", "batch-size-sweep", *args, fragments=(*named, "SystemExit", "called exit("))
    line = assert_refused(*cli_run(capsys, "noise-scale", "--model", "builtins:exit"), "SystemExit")
    assert "builtins:exit" in line


def test_the_help_says_that_user_code_runs(capsys):
    for command in ("run", "critical-batch", "noise-scale"):
        code, out, _ = cli_run(capsys, command, "--help")
        text = " ".join(out.replace("│", " ").split())
        assert code == 0 and "The module is imported and its code runs" in text, command
        assert "use only code you trust" in text, command


def test_data_with_mismatched_lengths(capsys, tmp_path, user_module):
    mod = user_module(
        "def short_labels():\n    x_tr, y_tr, x_te, y_te = data()\n    return x_tr, y_tr[:-1], x_te, y_te\n"
    )
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{mod}:model",
        "--data",
        f"{mod}:short_labels",
        fragments=("--data", f"{mod}:short_labels", "x_train has 64 examples but y_train has 63"),
    )


def test_a_model_whose_output_does_not_fit_the_loss(capsys, tmp_path, user_module):
    mod = user_module("def loss_raising(out, y):\n    raise KeyError('target')\n")
    out = tmp_path / "res"
    model, data = f"{mod}:model", f"{mod}:data"
    # 2 outputs, labels up to 2: cross-entropy does not fit
    refused(
        capsys,
        out,
        "batch-size-sweep",
        "--model",
        model,
        "--model-arg",
        "classes=2",
        "--data",
        data,
        fragments=("--model", model, "do not fit the 2 outputs"),
    )
    # float targets of 3 values against 5 outputs: mean squared error does not fit
    refused(
        capsys,
        out,
        "batch-size-sweep",
        "--model",
        model,
        "--model-arg",
        "classes=5",
        "--data",
        data,
        "--data-arg",
        "float_targets=true",
        fragments=("--model", "does not fit float targets"),
    )
    # a forward pass that fails on the data's examples
    refused(
        capsys,
        out,
        "batch-size-sweep",
        "--model",
        model,
        "--data",
        data,
        "--data-arg",
        "n=40",
        "--set",
        "batch_sizes=16,32",
        "--loss",
        f"{mod}:loss_raising",
        fragments=("--loss", "KeyError", "target"),
    )


def test_the_user_data_bounds_the_batch_sizes(capsys, tmp_path, user_module):
    mod = user_module("")
    refused(
        capsys,
        tmp_path / "res",
        "batch-size-sweep",
        "--model",
        f"{mod}:model",
        "--data",
        f"{mod}:data",
        "--set",
        "batch_sizes=16,128",
        fragments=("batch size 128 exceeds the 64 training examples", f"--data {mod}:data"),
    )


def test_options_that_do_not_go_together(capsys, tmp_path, user_module):
    mod = user_module("")
    out = tmp_path / "res"
    refused(
        capsys,
        out,
        "batch-size-sweep",
        "--model",
        f"{mod}:model",
        "--set",
        "model=cnn",
        fragments=("--model and --set model=... both give model",),
    )
    refused(capsys, out, "batch-size-sweep", "--data", f"{mod}:data", fragments=("needs a model given by reference",))
    refused(capsys, out, "batch-size-sweep", "--model-arg", "width=3", fragments=("model_args",))
    refused(capsys, out, "batch-size-sweep", "--model", "resnet", fragments=("model", "resnet"))
    refused(capsys, out, "batch-size-sweep", "--model-arg", "width", fragments=("--model-arg 'width'", "key=value"))


# --- end to end ---------------------------------------------------------------------------------------------


def test_the_example_runs_end_to_end(capsys, tmp_path, monkeypatch):
    """examples/digits_cnn.py through `batchlab run batch-size-sweep` from the repository root, tiny."""
    pytest.importorskip("sklearn")
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    args = ["--model", "examples.digits_cnn:model", "--data", "examples.digits_cnn:data", *TINY]
    code, out, err = cli_run(capsys, "run", "batch-size-sweep", *args, "--out", tmp_path / "res")
    assert code == 0, err
    assert "trained 2 runs" in out and "D1" in out
    claims = json.loads(next((tmp_path / "res").glob("batch-size-sweep*/claims.json")).read_text())
    config = claims["config"]
    assert config["model"] == "examples.digits_cnn:model" and not {"widths", "activation", "init", "normalize"} & set(
        config
    )
    code, out, err = cli_run(capsys, "run", "batch-size-sweep", *args, "--out", tmp_path / "res")
    assert code == 0 and "trained 0 runs" in out, err


def test_user_code_that_fails_during_training_is_one_line(capsys, tmp_path, user_module):
    """The start-up checks call the model once; one that raises or calls exit() later, while it trains, ends the
    command in one line naming where (exit 2), with the runs finished before it stored."""
    mod = user_module(
        "import itertools\n\n"
        "class Late(nn.Module):\n"
        "    def __init__(self, quit):\n"
        "        super().__init__()\n"
        "        self.net, self.quit, self.calls = model(), quit, itertools.count()\n\n"
        "    def forward(self, x):\n"
        "        if next(self.calls) >= 40:\n"
        "            exit(4) if self.quit else int('not a number')\n"
        "        return self.net(x)\n\n"
        "def quits():\n    return Late(True)\n\n"
        "def raises():\n    return Late(False)\n"
    )
    for factory, says in (("quits", "SystemExit: it called exit(4)"), ("raises", "ValueError: invalid literal")):
        out = tmp_path / factory
        code, stdout, err = cli_run(
            capsys,
            "run",
            "batch-size-sweep",
            "--model",
            f"{mod}:{factory}",
            "--data",
            f"{mod}:data",
            *TINY,
            "--set",
            "epochs=20",
            "--out",
            out,
        )
        assert code == 2 and "Traceback" not in err, err  # the progress header, then the one line
        line = err.strip().splitlines()[-1]
        for fragment in ("error: the user's code raised while training", says, f"{mod}.py:", "finished unit"):
            assert fragment in line, (fragment, line)
        assert (out / "batchlab.sqlite").exists()

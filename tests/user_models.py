"""A user's code, as the tests name it by reference ("user_models:bn_cnn", ...): model, data and loss factories.

Small on purpose (the equality tests train several optimizers in float64 on 2 CPU cores). The "bad_*" factories
fail in the ways the references' checks name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from batchlab.models import MLP

# --- models ---------------------------------------------------------------------------------------------------


class BNCNN(nn.Module):
    """Conv-BatchNorm-ReLU-pool twice, then a linear head, on [N, 1, size, size] images."""

    def __init__(self, channels: int = 4, classes: int = 3, size: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(channels * (size // 4) ** 2, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def bn_cnn(channels: int = 4, classes: int = 3, size: int = 8) -> nn.Module:
    return BNCNN(channels, classes, size)


class Block(nn.Module):
    """A pre-norm transformer block with causal self-attention written out, on token ids [N, T]."""

    def __init__(self, vocab: int = 11, dim: int = 16, heads: int = 2, length: int = 8):
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(length, dim) * 0.1)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab)

    def forward(self, tokens):
        n, t = tokens.shape
        h = self.embed(tokens) + self.position[:t]
        q, k, v = self.qkv(self.norm1(h)).chunk(3, dim=-1)
        split = lambda z: z.view(n, t, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).triu(1)
        att = scores.masked_fill(causal, float("-inf")).softmax(-1)
        h = h + self.proj((att @ v).transpose(1, 2).reshape(n, t, -1))
        h = h + self.mlp(self.norm2(h))
        return self.out(self.norm3(h))  # [N, T, vocab]


def transformer(vocab: int = 11, dim: int = 16, heads: int = 2, length: int = 8) -> nn.Module:
    return Block(vocab, dim, heads, length)


class Conv1d(nn.Module):
    """1-D convolutions over sequences [N, T, F] (nn.GRU has no vmap batching rule in torch 2.13)."""

    def __init__(self, features: int = 3, channels: int = 6, outputs: int = 2):
        super().__init__()
        self.conv1 = nn.Conv1d(features, channels, 3, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.head = nn.Linear(channels, outputs)

    def forward(self, x):
        h = torch.tanh(self.conv1(x.transpose(1, 2)))
        h = torch.tanh(self.conv2(h))
        return self.head(h.mean(-1))


def conv1d(features: int = 3, channels: int = 6, outputs: int = 2) -> nn.Module:
    return Conv1d(features, channels, outputs)


def dropout_mlp(p: float = 0.1) -> nn.Module:
    return nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Dropout(p), nn.Linear(8, 3))


class GRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def gru() -> nn.Module:
    return GRU()


def mlp(sizes: tuple[int, ...] = (20, 16, 16, 3), activation: str = "relu") -> nn.Module:
    """batchlab's own MLP, given by reference: the generic path, to compare with the built-in fast path."""
    return MLP(tuple(sizes), activation)


# --- data -----------------------------------------------------------------------------------------------------


def images(n_train: int = 48, n_test: int = 16, size: int = 8, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, 1, size, size, generator=g)
    y = torch.randint(classes, (n_train + n_test,), generator=g)
    x[:, 0, 0, :] += y.unsqueeze(1).float()  # a learnable signal
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def tokens(n_train: int = 40, n_test: int = 16, length: int = 8, vocab: int = 11, seed: int = 0):
    """Next-token prediction on noisy counting sequences: inputs [N, T] int64, targets the next tokens [N, T]."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    start = torch.randint(vocab, (n, 1), generator=g)
    seq = (start + torch.arange(length + 1)) % vocab
    noise = torch.rand(n, length + 1, generator=g) < 0.1
    seq = torch.where(noise, torch.randint(vocab, (n, length + 1), generator=g), seq)
    x, y = seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def sequences(n_train: int = 48, n_test: int = 16, length: int = 10, features: int = 3, seed: int = 0):
    """Regression on sequences [N, T, F]: float targets [N, 2]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, length, features, generator=g)
    y = torch.stack([x[:, :, 0].mean(1), x[:, 1:, 1].mul(x[:, :-1, 2]).mean(1)], 1)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def flat(n_train: int = 48, n_test: int = 16, features: int = 20, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, features, generator=g)
    y = torch.randint(classes, (n_train + n_test,), generator=g)
    x[:, 0] += y.float()
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def flat_datasets(**kw):
    """The same data as `flat`, as (train, test) torch Datasets."""
    x_train, y_train, x_test, y_test = flat(**kw)
    return Pairs(x_train, y_train), Pairs(x_test, y_test)


# --- losses ---------------------------------------------------------------------------------------------------


def smoothed_ce(output, target):
    """Cross-entropy with label smoothing 0.1, the mean over examples."""
    return F.cross_entropy(output, target, label_smoothing=0.1)


def huber(output, target):
    return F.smooth_l1_loss(output, target)


# --- bad references -------------------------------------------------------------------------------------------

NOT_CALLABLE = 3


def bad_raises(**kw):
    raise RuntimeError("out of coffee\nsecond line")


def bad_not_module():
    return "a string"


def bad_data_type():
    return [1, 2, 3]


def bad_lengths():
    x_train, y_train, x_test, y_test = flat()
    return x_train, y_train[:-1], x_test, y_test


def bad_output_size():
    return MLP((20, 8, 2))  # 2 outputs for 3 classes


def bad_seed_dependent():
    return MLP((20, int(torch.randint(4, 9, ())), 3))  # the width drawn from the global RNG (the run's seed)


def bad_loss(output, target):
    return output.sum(1)  # one value per example, not the mean

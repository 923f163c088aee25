"""The model families of the benchmark: offline data plus a tiny model per family.

Every dataset ships with the installed software (scikit-learn's bundled datasets, the
docstrings of Python's standard library), so generation needs no network. Models are tiny on
purpose: the whole benchmark trains in ~15-20 CPU minutes on one thread.

A task exposes ``batch(gen, bs)`` (a training batch drawn with a torch.Generator, so LR siblings
see the same batches in the same order), ``val()`` (a fixed held-out set), ``model()`` and
``loss(model, batch, input_scale, poison)``. ``input_scale`` multiplies the first-layer input
(a corrupted batch); ``poison`` adds a NaN to it (a NaN batch).
"""

from __future__ import annotations

import importlib
import inspect

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- data
def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(1234)  # fixed split, independent of the run seed
    perm = torch.randperm(len(y), generator=g)
    n_val = 360
    return x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]


def _diabetes():
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    x = torch.tensor(d.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(d.target, dtype=torch.float32)
    y = (y - y.mean()) / y.std()
    g = torch.Generator().manual_seed(1234)
    perm = torch.randperm(len(y), generator=g)
    n_val = 88
    return x[perm[n_val:]], y[perm[n_val:]], x[perm[:n_val]], y[perm[:n_val]]


# A fixed list, so the corpus does not depend on which modules happen to be importable.
_CORPUS_MODULES = (
    "argparse", "bisect", "calendar", "collections", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "difflib", "enum", "fractions", "functools", "heapq", "inspect", "ipaddress",
    "itertools", "json", "logging", "os", "pathlib", "pprint", "random", "re", "shutil",
    "statistics", "string", "subprocess", "tempfile", "textwrap", "threading", "typing", "uuid",
    "zipfile",
)


def stdlib_corpus(max_chars: int = 400_000) -> str:
    """The concatenated docstrings of a fixed list of standard-library modules (ASCII only)."""
    parts = []
    for name in _CORPUS_MODULES:
        mod = importlib.import_module(name)
        docs = [inspect.getdoc(mod) or ""]
        for attr in sorted(dir(mod)):
            if attr.startswith("_"):
                continue
            obj = getattr(mod, attr, None)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                if getattr(obj, "__module__", None) == name:
                    docs.append(inspect.getdoc(obj) or "")
        parts.extend(d for d in docs if d)
    text = "\n\n".join(parts)
    text = "".join(c for c in text if 32 <= ord(c) < 127 or c == "\n")
    return text[:max_chars]


_CORPUS_CACHE: dict[str, torch.Tensor] = {}


def _corpus_tokens():
    if "tok" not in _CORPUS_CACHE:
        text = stdlib_corpus()
        vocab = sorted(set(text))
        idx = {c: i for i, c in enumerate(vocab)}
        _CORPUS_CACHE["tok"] = torch.tensor([idx[c] for c in text], dtype=torch.long)
    return _CORPUS_CACHE["tok"]


# --------------------------------------------------------------------------- tasks
class ClassifyTask:
    """Digits classification (8x8 images, 10 classes) with cross-entropy."""

    def __init__(self, kind: str):
        self.kind = kind
        self.xtr, self.ytr, self.xva, self.yva = _digits()

    def batch(self, gen, bs=64):
        i = torch.randint(0, len(self.ytr), (bs,), generator=gen)
        return self.xtr[i], self.ytr[i]

    def val(self):
        return self.xva, self.yva

    def corrupt(self, batch):
        """A corrupted batch: inputs scaled x10 and every label wrong (a broken shard).

        Scaled inputs alone make a trained classifier *more* confident, which lowers the loss;
        with wrong labels the loss and the gradient jump."""
        x, y = batch
        g = torch.Generator().manual_seed(99)
        return x * 10.0, (y + torch.randint(1, 10, y.shape, generator=g)) % 10

    def model(self):
        if self.kind == "softmax":
            return nn.Linear(64, 10)
        if self.kind == "mlp":
            return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
        if self.kind == "cnn":
            return nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
            )
        raise ValueError(self.kind)

    def loss(self, model, batch, input_scale=1.0, poison=False):
        x, y = batch
        x = x * input_scale
        if poison:
            x = x.clone()
            x[0, 0] = float("nan")
        return F.cross_entropy(model(x), y)


class RegressTask:
    """Linear least squares on scikit-learn's diabetes data (standardised): convex, MSE."""

    def __init__(self):
        self.xtr, self.ytr, self.xva, self.yva = _diabetes()

    def batch(self, gen, bs=32):
        i = torch.randint(0, len(self.ytr), (bs,), generator=gen)
        return self.xtr[i], self.ytr[i]

    def val(self):
        return self.xva, self.yva

    def corrupt(self, batch):
        """A corrupted batch: inputs scaled x10."""
        x, y = batch
        return x * 10.0, y

    def model(self):
        return nn.Linear(10, 1)

    def loss(self, model, batch, input_scale=1.0, poison=False):
        x, y = batch
        x = x * input_scale
        if poison:
            x = x.clone()
            x[0, 0] = float("nan")
        return F.mse_loss(model(x).squeeze(-1), y)


class CharRNN(nn.Module):
    def __init__(self, vocab, emb=32, hidden=96):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.rnn = nn.RNN(emb, hidden, batch_first=True, nonlinearity="tanh")
        self.out = nn.Linear(hidden, vocab)

    def forward(self, idx, input_scale=1.0, poison=False):
        e = self.emb(idx) * input_scale
        if poison:
            e = e.clone()
            e[0, 0, 0] = float("nan")
        h, _ = self.rnn(e)
        return self.out(h)


class TinyGPT(nn.Module):
    def __init__(self, vocab, ctx=48, d=48, heads=2, layers=1):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(ctx, d))
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(ctx), persistent=False)

    def forward(self, idx, input_scale=1.0, poison=False):
        t = idx.shape[1]
        e = (self.emb(idx) + self.pos[:t]) * input_scale
        if poison:
            e = e.clone()
            e[0, 0, 0] = float("nan")
        h = self.blocks(e, mask=self.mask[:t, :t], is_causal=True)
        return self.out(self.norm(h))


class CharLMTask:
    """Next-character prediction on the standard library's docstrings (90/10 split)."""

    def __init__(self, kind: str, ctx: int = 48):
        self.kind = kind
        self.ctx = ctx
        tok = _corpus_tokens()
        self.vocab = int(tok.max()) + 1
        n = int(len(tok) * 0.9)
        self.tr, self.va = tok[:n], tok[n:]
        g = torch.Generator().manual_seed(1234)
        starts = torch.randint(0, len(self.va) - ctx - 1, (32,), generator=g)
        self._val = torch.stack([self.va[s : s + ctx + 1] for s in starts.tolist()])

    def batch(self, gen, bs=16):
        starts = torch.randint(0, len(self.tr) - self.ctx - 1, (bs,), generator=gen)
        return torch.stack([self.tr[s : s + self.ctx + 1] for s in starts.tolist()])

    def val(self):
        return self._val

    def corrupt(self, batch):
        """A corrupted batch: the targets replaced by random characters (a garbage shard).

        Uses its own generator so the training batch order after it is unchanged."""
        g = torch.Generator().manual_seed(99)
        out = batch.clone()
        out[:, 1:] = torch.randint(0, self.vocab, out[:, 1:].shape, generator=g)
        return out

    def model(self):
        if self.kind == "rnn":
            return CharRNN(self.vocab)
        return TinyGPT(self.vocab, ctx=self.ctx)

    def loss(self, model, batch, input_scale=1.0, poison=False):
        x, y = batch[:, :-1], batch[:, 1:]
        logits = model(x, input_scale=input_scale, poison=poison)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def make_task(family: str):
    if family in ("softmax", "mlp", "cnn"):
        return ClassifyTask(family)
    if family == "linreg":
        return RegressTask()
    if family in ("rnn", "gpt"):
        return CharLMTask(family)
    raise ValueError(f"unknown family {family!r}")
